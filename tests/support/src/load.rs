//! A lean load generator for the benchmarks: keep-alive HTTP/1.1 connections that place a
//! session (`POST /api/v1/sessions`, timed) and end it again (`DELETE`), in a loop. Minimal on
//! purpose: it shares the machine's two cores with the server it measures.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tokens of the servers the benchmarks start.
pub const ADMIN: &str = "bench-admin-token";
pub const AGENT: &str = "bench-agent-token";

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `zonebroker serve` (the binary `bin`) for a benchmark, with `args` (its data
/// directory, listeners, database): the tokens above, agents that never time out, only
/// warnings on stderr.
pub fn serve(bin: &str, args: &[String]) -> Child {
    Command::new(bin)
        .arg("serve")
        .args(args)
        .args(["--agent-timeout", "86400"])
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN)
        .env("ZONEBROKER_AGENT_TOKEN", AGENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// What a load run measured.
pub struct Run {
    /// Requests (placements, for [`run`]) answered as expected.
    pub placements: usize,
    pub seconds: f64,
    pub latencies_us: Vec<u64>,
    pub errors: usize,
}

impl Run {
    /// Placements per second.
    pub fn rate(&self) -> f64 {
        self.placements as f64 / self.seconds
    }
    /// The latency (milliseconds) at quantile `p` (0 to 1).
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// `concurrency` keep-alive connections, each: POST a session, DELETE it, repeat, for
/// `seconds`. A minimal HTTP/1.1 client, so that the load generator (which shares the two
/// cores with the server) costs as little as possible.
pub async fn run(
    addr: &str,
    admin_token: &str,
    image: &str,
    seconds: f64,
    concurrency: usize,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (addr, admin_token, image) = (addr.to_string(), admin_token.to_string(), image.to_string());
            tokio::spawn(async move {
                let mut connection = Connection::open(&addr).await;
                let (mut latencies, mut errors) = (Vec::new(), 0);
                let body = format!(r#"{{"image":"{image}","user":"user{worker}"}}"#);
                let post = format!(
                    "POST /api/v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin_token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (status, answer) = connection.exchange(post.as_bytes()).await;
                    if status != 201 {
                        errors += 1;
                        continue;
                    }
                    latencies.push(sent.elapsed().as_micros() as u64);
                    let id = session_id(&answer);
                    let delete = format!(
                        "DELETE /api/v1/sessions/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin_token}\r\n\r\n"
                    );
                    if connection.exchange(delete.as_bytes()).await.0 != 204 {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    gather(tasks, start).await
}

/// Send `requests` (complete HTTP/1.1 requests, each with the address to send it to) round
/// after round for `seconds`, over `workers` tasks that each keep one connection per address,
/// paced to `rate` per second in all (`f64::INFINITY`: as fast as the server answers). A
/// 2xx answer counts and is timed; anything else is an error. A worker that falls behind its
/// pace sends at once until it has caught up, so a rate the server cannot sustain shows as
/// a lower measured rate.
pub async fn paced(
    requests: Vec<(String, Vec<u8>)>,
    rate: f64,
    seconds: f64,
    workers: usize,
) -> Run {
    let requests = std::sync::Arc::new(requests);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let interval = Duration::from_secs_f64(workers as f64 / rate);
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut connections: std::collections::HashMap<String, Connection> =
                    Default::default();
                let (mut latencies, mut errors) = (Vec::new(), 0);
                let mut next = start;
                let mut index = worker;
                while Instant::now() < deadline && !requests.is_empty() {
                    if rate.is_finite() {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    let (addr, request) = &requests[index % requests.len()];
                    index += workers;
                    if !connections.contains_key(addr) {
                        connections.insert(addr.clone(), Connection::open(addr).await);
                    }
                    let connection = connections.get_mut(addr).expect("opened above");
                    let sent = Instant::now();
                    let (status, _) = connection.exchange(request).await;
                    if (200..300).contains(&status) {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    gather(tasks, start).await
}

/// One [`Run`] from the workers' latencies and error counts, timed from `start`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, usize)>>, start: Instant) -> Run {
    let mut run = Run {
        placements: 0,
        seconds: 0.0,
        latencies_us: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        run.placements += latencies.len();
        run.latencies_us.extend(latencies);
        run.errors += errors;
    }
    run.seconds = start.elapsed().as_secs_f64();
    run.latencies_us.sort_unstable();
    run
}

/// The `"id"` of a session answer.
fn session_id(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap();
    let start = text.find(r#""id":""#).expect("an id") + 6;
    text[start..start + 36].to_string()
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Connection {
            stream,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Send one request, read one response: its status and body.
    async fn exchange(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await.unwrap();
        self.buffer.clear();
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end])
                    .unwrap()
                    .to_ascii_lowercase();
                let status: u16 = head[9..12].parse().unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.read_more().await;
                }
                return (status, self.buffer[end + 4..total].to_vec());
            }
            self.read_more().await;
        }

        fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
            haystack.windows(needle.len()).position(|w| w == needle)
        }
    }

    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}

//! End-to-end placement throughput: `POST /sessions` (then `DELETE` of the same session, so
//! capacity stays) against the real `zonebroker` binary on loopback with 1,000 agents in the
//! zone, and the same load against a bare axum handler in the same run.
//!
//! `cargo bench -p zonebroker --bench placement_http [-- SECONDS CONCURRENCY]`
//! (defaults: 10 seconds, 32 concurrent clients). Results in BENCHMARKS.md.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const ADMIN: &str = "bench-admin-token";
const AGENT: &str = "bench-agent-token";
const AGENTS: usize = 1000;

struct Run {
    placements: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
    errors: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.placements as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// `concurrency` keep-alive connections, each: POST a session, DELETE it, repeat, for
/// `seconds`. A minimal HTTP/1.1 client, so that the load generator (which shares the two
/// cores with the server) costs as little as possible.
async fn load(addr: &str, seconds: f64, concurrency: usize) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let addr = addr.to_string();
            tokio::spawn(async move {
                let mut connection = Connection::open(&addr).await;
                let (mut latencies, mut errors) = (Vec::new(), 0);
                let body = format!(r#"{{"image":"desktop","user":"user{worker}"}}"#);
                let post = format!(
                    "POST /api/v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\
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
                        "DELETE /api/v1/sessions/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
                    );
                    if connection.exchange(delete.as_bytes()).await.0 != 204 {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
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

/// The baseline: an axum server whose handlers do nothing but answer like the real ones.
fn bare_axum() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = Router::new()
                .route(
                    "/api/v1/sessions",
                    post(|| async {
                        (
                            StatusCode::CREATED,
                            axum::Json(json!({ "id": "00000000-0000-0000-0000-000000000000" })),
                        )
                    }),
                )
                .route(
                    "/api/v1/sessions/{id}",
                    delete(|| async { StatusCode::NO_CONTENT }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr.to_string()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let concurrency: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}=bench"),
            "--agent-timeout",
            "86400",
        ])
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN)
        .env("ZONEBROKER_AGENT_TOKEN", AGENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..AGENTS {
            let agent = json!({
                "hostname": format!("agent-{i:04}"), "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                "port": 4902, "cores": 64, "memory": 256u64 << 30, "max_sessions": 500,
            });
            let response = client.post(format!("{base}/api/v1/agents/checkin")).bearer_auth(AGENT).json(&agent).send().await.unwrap();
            assert!(response.status().is_success());
        }
        let image = json!({ "name": "desktop", "cores": 1, "memory": 1u64 << 30 });
        let response = client.post(format!("{base}/api/v1/images")).bearer_auth(ADMIN).json(&image).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    });

    let baseline_addr = bare_axum();
    let addr = format!("127.0.0.1:{port}");
    let (zonebroker, baseline) = runtime.block_on(async {
        // Warm both up, then measure.
        load(&addr, 1.0, concurrency).await;
        load(&baseline_addr, 1.0, concurrency).await;
        let zonebroker = load(&addr, seconds, concurrency).await;
        let baseline = load(&baseline_addr, seconds, concurrency).await;
        (zonebroker, baseline)
    });
    let _ = server.kill();
    let _ = server.wait();

    println!(
        "placement over HTTP: {AGENTS} agents, {concurrency} clients, {seconds} s each, POST+DELETE per placement"
    );
    println!("| server | placements/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in [
        ("zonebroker (durable)", &zonebroker),
        ("bare axum handler", &baseline),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            run.rate(),
            run.percentile(0.50),
            run.percentile(0.99),
            run.errors
        );
    }
    println!(
        "ratio zonebroker / bare axum: {:.2}",
        zonebroker.rate() / baseline.rate()
    );
}

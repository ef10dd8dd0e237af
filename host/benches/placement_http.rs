//! End-to-end placement throughput as the fleet grows: `POST /sessions` (then `DELETE` of
//! the same session, so capacity stays) against the real `zonebroker` binary on loopback,
//! with 1,000 agents in each of `Z` zones (one listener per zone, every agent checked in
//! through its zone's), the placements all in the first zone, which does not search others.
//! For each fleet size, in one run: the placements alone; the placements while every agent
//! checks in every 30 s in the background (a fleet's real heartbeat load); the check-in rate
//! the server sustains flat out; and the same load against a bare axum handler, the
//! baseline every ratio is taken against.
//!
//! `cargo bench -p zonebroker --bench placement_http [-- SECONDS CLIENTS ZONES,ZONES,... [svg=PATH] [engines=sled,postgres,postgres-unix]]`
//! (defaults: 10 seconds, 32 concurrent clients, fleets of 1 zone, the embedded store; the
//! growth table in BENCHMARKS.md is `-- 10 32 1,10,50 svg=docs/placement-growth.svg`, the
//! path relative to the workspace root, the plot of the sled rows). `engines=sled,postgres`
//! measures every fleet on both engines in the same run, PostgreSQL being a throw-away
//! cluster of Debian's server on the same machine (`fsync` and `synchronous_commit` on);
//! `postgres-unix` is that cluster over its Unix socket rather than loopback TCP.

use std::process::Child;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use serde_json::json;
use zonebroker_test_support::load::{self, ADMIN, AGENT, Run, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const AGENTS_PER_ZONE: usize = 1000;
/// How often each agent checks in, in seconds (the agent's default).
const CHECKIN_PERIOD: f64 = 30.0;

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

/// A running server with one listener per zone.
struct Fleet {
    server: Child,
    /// The listener address of each zone (`zone-00` first).
    addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn start(zones: usize, engine: &str) -> Fleet {
    let dir = zonebroker_test_support::private_tempdir();
    let addrs: Vec<String> = (0..zones)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut args = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    if engine != "sled" {
        let cluster = zonebroker_test_support::postgres::cluster();
        let database = cluster.create_database();
        args.push("--database".into());
        args.push(match engine {
            "postgres-unix" => cluster.socket_url(&database),
            _ => cluster.url(&database),
        });
    }
    for (i, addr) in addrs.iter().enumerate() {
        args.push("--listen".into());
        args.push(format!("{addr}=zone-{i:02}"));
    }
    Fleet {
        server: load::serve(BIN, &args),
        addrs,
        _dir: dir,
    }
}

/// Check in every agent through its zone's listener, make the image, close the first zone
/// to other zones; answer each agent's next check-in (with its credential) as a request.
async fn populate(fleet: &Fleet) -> Vec<(String, Vec<u8>)> {
    let client = reqwest::Client::new();
    let base = format!("http://{}", fleet.addrs[0]);
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = fleet.addrs.len() * AGENTS_PER_ZONE;
    const WORKERS: usize = 16;
    let tasks: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (client, addrs) = (client.clone(), fleet.addrs.clone());
            tokio::spawn(async move {
                let mut next_checkins = Vec::new();
                for i in (worker..total).step_by(WORKERS) {
                    let addr = &addrs[i / AGENTS_PER_ZONE];
                    let body = json!({
                        "hostname": format!("agent-{i:05}"),
                        "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                        "port": 4902, "cores": 64, "memory": 256u64 << 30, "max_sessions": 500,
                    })
                    .to_string();
                    let answer: serde_json::Value = client
                        .post(format!("http://{addr}/api/v1/agents/checkin"))
                        .bearer_auth(AGENT)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap()
                        .error_for_status()
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let credential = answer["credential"].as_str().expect("a first credential");
                    let request = format!(
                        "POST /api/v1/agents/checkin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {AGENT}\r\n\
                         Zonebroker-Agent-Credential: {credential}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    next_checkins.push((addr.clone(), request.into_bytes()));
                }
                next_checkins
            })
        })
        .collect();
    let mut checkins = Vec::with_capacity(total);
    for task in tasks {
        checkins.extend(task.await.unwrap());
    }
    let image = json!({ "name": "desktop", "cores": 1, "memory": 1u64 << 30 });
    let response = client
        .post(format!("{base}/api/v1/images"))
        .bearer_auth(ADMIN)
        .json(&image)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = client
        .patch(format!("{base}/api/v1/zones/zone-00"))
        .bearer_auth(ADMIN)
        .json(&json!({ "search_alternate_zones": false }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    checkins
}

/// One fleet size's measurements.
struct Row {
    engine: &'static str,
    agents: usize,
    zones: usize,
    quiet: Run,
    busy: Run,
    background: Run,
    checkins_flat_out: Run,
    baseline: Run,
}

impl Row {
    /// What one placement costs in bare-handler requests (both measured in this row).
    fn cost(&self, run: &Run) -> f64 {
        self.baseline.rate() / run.rate()
    }
}

async fn measure(
    fleet: &Fleet,
    checkins: Vec<(String, Vec<u8>)>,
    baseline_addr: &str,
    seconds: f64,
    clients: usize,
) -> Row {
    let addr = &fleet.addrs[0];
    let agents = checkins.len();
    load::run(addr, ADMIN, "desktop", 1.0, clients).await;
    let quiet = load::run(addr, ADMIN, "desktop", seconds, clients).await;
    // Enough senders that the rate holds while each waits ~20 ms for an answer under load.
    let rate = agents as f64 / CHECKIN_PERIOD;
    let senders = ((rate / 50.0).ceil() as usize).max(4);
    let heartbeat = tokio::spawn(load::paced(checkins.clone(), rate, seconds, senders));
    let busy = load::run(addr, ADMIN, "desktop", seconds, clients).await;
    let background = heartbeat.await.unwrap();
    let checkins_flat_out = load::paced(checkins, f64::INFINITY, seconds / 2.0, clients).await;
    load::run(baseline_addr, ADMIN, "desktop", 1.0, clients).await;
    let baseline = load::run(baseline_addr, ADMIN, "desktop", seconds, clients).await;
    Row {
        engine: "sled",
        agents,
        zones: fleet.addrs.len(),
        quiet,
        busy,
        background,
        checkins_flat_out,
        baseline,
    }
}

/// A small SVG plot: the cost of a placement (in bare-handler requests) at each fleet size,
/// relative to the smallest fleet, with and without the check-ins, and the 1.3x target.
fn plot(rows: &[Row]) -> String {
    let (width, height, left, bottom, top, right) = (560.0, 300.0, 60.0, 250.0, 30.0, 420.0);
    let max_agents = rows.iter().map(|r| r.agents).max().unwrap_or(1) as f64;
    let min_agents = rows.iter().map(|r| r.agents).min().unwrap_or(1) as f64;
    let series: Vec<(&str, &str, Vec<f64>)> = [("alone", "#1f77b4"), ("with check-ins", "#d62728")]
        .iter()
        .map(|&(name, colour)| {
            let costs: Vec<f64> = rows
                .iter()
                .map(|r| r.cost(if name == "alone" { &r.quiet } else { &r.busy }))
                .collect();
            let first = costs[0];
            (name, colour, costs.iter().map(|c| c / first).collect())
        })
        .collect();
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(2.0_f64, f64::max)
        .ceil();
    let x = |agents: f64| {
        if max_agents > min_agents {
            left + (agents / min_agents).ln() / (max_agents / min_agents).ln() * (right - left)
        } else {
            left
        }
    };
    let y = |v: f64| bottom - v / y_max * (bottom - top);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="18" font-size="14">Cost of a placement against fleet size (relative to {min_agents} agents)</text>
<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{left}" y1="{bottom}" x2="{left}" y2="{top}" stroke="black"/>
<line x1="{left}" y1="{t}" x2="{right}" y2="{t}" stroke="grey" stroke-dasharray="4 3"/>
<text x="{tx}" y="{t}" fill="grey" dy="4">target 1.3x</text>
"#,
        t = y(1.3),
        tx = right + 5.0,
    );
    for step in 0..=(y_max as usize) {
        let v = step as f64;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" dy=\"4\">{v:.0}x</text>\n",
            left - 6.0,
            y(v)
        );
    }
    for row in rows {
        let label = format!("{}k agents / {} zone(s)", row.agents / 1000, row.zones);
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            x(row.agents as f64),
            bottom + 18.0
        );
    }
    for (i, (name, colour, values)) in series.iter().enumerate() {
        let points: Vec<String> = rows
            .iter()
            .zip(values)
            .map(|(r, v)| format!("{:.1},{:.1}", x(r.agents as f64), y(*v)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        );
        for (r, v) in rows.iter().zip(values) {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{v:.2}x</text>\n",
                x(r.agents as f64),
                y(*v),
                x(r.agents as f64) + 5.0,
                y(*v) - 6.0 - 12.0 * i as f64,
            );
        }
        // The legend, top left: the first fleet is 1.0x by definition, far below it.
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
            left + 10.0,
            top + 12.0 + 16.0 * i as f64
        );
    }
    svg + "</svg>\n"
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.contains('=')).collect();
    let seconds: f64 = positional
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let clients: usize = positional.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let fleets: Vec<usize> = positional
        .get(2)
        .map(|s| {
            s.split(',')
                .map(|z| z.parse().expect("zone counts"))
                .collect()
        })
        .unwrap_or_else(|| vec![1]);
    let svg_path = args.iter().find_map(|a| a.strip_prefix("svg="));
    let engines: Vec<&'static str> = args
        .iter()
        .find_map(|a| a.strip_prefix("engines="))
        .map(|list| {
            list.split(',')
                .map(|engine| match engine {
                    "sled" => "sled",
                    "postgres" => "postgres",
                    "postgres-unix" => "postgres-unix",
                    other => panic!("engine `{other}`: say sled, postgres or postgres-unix"),
                })
                .collect()
        })
        .unwrap_or_else(|| vec!["sled"]);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let baseline_addr = bare_axum();
    let mut rows = Vec::new();
    for zones in fleets {
        for &engine in &engines {
            let fleet = start(zones, engine);
            let mut row = runtime.block_on(async {
                let checkins = populate(&fleet).await;
                measure(&fleet, checkins, &baseline_addr, seconds, clients).await
            });
            drop(fleet);
            row.engine = engine;
            eprintln!(
                "{engine}, {} agents: {:.0} placements/s alone, {:.0} with check-ins",
                row.agents,
                row.quiet.rate(),
                row.busy.rate()
            );
            rows.push(row);
        }
    }

    println!(
        "placement over HTTP: {clients} clients, {seconds} s per measurement, POST+DELETE per placement, \
         all in zone-00 (search_alternate_zones: false); check-ins every {CHECKIN_PERIOD} s per agent"
    );
    println!(
        "| engine | agents / zones | placements/s | p50 ms | p99 ms | with check-ins: placements/s | p99 ms | check-ins/s done | check-ins/s flat out | bare axum req/s | ratio | cost growth | with check-ins |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        // Growth against the same engine's smallest fleet.
        let first = rows.iter().find(|r| r.engine == row.engine).unwrap();
        let (first_quiet, first_busy) = (first.cost(&first.quiet), first.cost(&first.busy));
        println!(
            "| {} | {} / {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.3} | {:.2}x | {:.2}x |",
            row.engine,
            row.agents,
            row.zones,
            row.quiet.rate(),
            row.quiet.percentile(0.50),
            row.quiet.percentile(0.99),
            row.busy.rate(),
            row.busy.percentile(0.99),
            row.background.rate(),
            row.checkins_flat_out.rate(),
            row.baseline.rate(),
            row.quiet.rate() / row.baseline.rate(),
            row.cost(&row.quiet) / first_quiet,
            row.cost(&row.busy) / first_busy,
        );
        let errors = row.quiet.errors
            + row.busy.errors
            + row.background.errors
            + row.checkins_flat_out.errors
            + row.baseline.errors;
        if errors > 0 {
            println!("  ({errors} errors in this row)");
        }
    }
    if let Some(path) = svg_path {
        // Relative to the workspace root (cargo runs benchmarks from the package's directory).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        let sled: Vec<Row> = rows.into_iter().filter(|r| r.engine == "sled").collect();
        std::fs::write(&path, plot(&sled)).unwrap();
        println!("plot written to {}", path.display());
    }
}

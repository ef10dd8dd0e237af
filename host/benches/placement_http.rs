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
use zonebroker_test_support::load;

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const ADMIN: &str = "bench-admin-token";
const AGENT: &str = "bench-agent-token";
const AGENTS: usize = 1000;

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

    let dir = zonebroker_test_support::private_tempdir();
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
        load::run(&addr, ADMIN, "desktop", 1.0, concurrency).await;
        load::run(&baseline_addr, ADMIN, "desktop", 1.0, concurrency).await;
        let zonebroker = load::run(&addr, ADMIN, "desktop", seconds, concurrency).await;
        let baseline = load::run(&baseline_addr, ADMIN, "desktop", seconds, concurrency).await;
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

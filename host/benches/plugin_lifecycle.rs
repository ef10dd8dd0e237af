//! The plugin lifecycle, measured in one run against the real binary:
//! - upload-to-active latency of the example strategy (validation, compile, smoke call,
//!   storage, activation; each upload a new version, so each compiles);
//! - restart time with a dozen uploaded plugins, with compiled artifacts cached and without;
//! - session throughput while the zone's strategy is swapped every 100 ms, against none.
//!
//! `cargo bench -p zonebroker --bench plugin_lifecycle`. Results in BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, example_strategy, load};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const PLUGINS: usize = 12;
const SECONDS: f64 = 10.0;
const CLIENTS: usize = 32;

/// The component with a custom section appended: the same program, a new version.
fn variant(component: &[u8], tag: u32) -> Vec<u8> {
    let name = b"zonebroker-bench";
    let payload = tag.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

fn upload(server: &Server, name: &str, bytes: Vec<u8>, activate: bool) -> String {
    let response = server
        .http()
        .post(server.url(
            "default",
            &format!("/api/v1/plugins/{name}/versions?activate={activate}"),
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    response.json::<serde_json::Value>().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn start(data_dir: Option<Arc<tempfile::TempDir>>) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::start(
        BIN,
        ServerOptions {
            data_dir,
            ..ServerOptions::default()
        },
    );
    (server, started.elapsed())
}

fn main() {
    let example = example_strategy();
    let (server, _) = start(None);

    // Upload to active, compile included.
    let uploads: Vec<Duration> = (0..10)
        .map(|i| {
            let bytes = variant(&example, 1000 + i);
            let started = Instant::now();
            upload(&server, "latency", bytes, true);
            started.elapsed()
        })
        .collect();

    // A dozen plugins, and a second version of the first to swap to.
    for i in 0..PLUGINS {
        upload(
            &server,
            &format!("strategy-{i:02}"),
            variant(&example, i as u32),
            true,
        );
    }
    let v1 = upload(&server, "strategy-00", variant(&example, 0), false);
    let v2 = upload(&server, "strategy-00", variant(&example, 99), false);
    let zone = json!({ "load_balance_strategy": "strategy-00" });
    assert_eq!(
        server
            .call("default", "PATCH", "/api/v1/zones/default", Some(&zone))
            .0,
        200
    );
    for i in 0..100 {
        server.check_in(
            "default",
            json!({ "hostname": format!("agent-{i:03}"), "address": "10.0.0.1", "port": 4902,
                    "cores": 64, "memory": 256u64 << 30, "max_sessions": 500 }),
        );
    }
    let image = json!({ "name": "desktop", "cores": 1, "memory": 1u64 << 30 });
    assert_eq!(
        server
            .call("default", "POST", "/api/v1/images", Some(&image))
            .0,
        201
    );

    // Throughput without and with swaps.
    let addr = server.zones["default"].clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let steady = runtime.block_on(load::run(&addr, ADMIN_TOKEN, "desktop", SECONDS, CLIENTS));
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let server = Arc::new(server);
    let swapper = std::thread::spawn({
        let (server, stop, swaps) = (server.clone(), stop.clone(), swaps.clone());
        move || {
            let mut next = [&v2, &v1].into_iter().cycle();
            while !stop.load(Ordering::Relaxed) {
                let body = json!({ "version": next.next().unwrap() });
                let (status, _) = server.call(
                    "default",
                    "POST",
                    "/api/v1/plugins/strategy-00/activate",
                    Some(&body),
                );
                assert_eq!(status, 200);
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let swapping = runtime.block_on(load::run(&addr, ADMIN_TOKEN, "desktop", SECONDS, CLIENTS));
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();

    // Restarts: cached artifacts, then none.
    let data_dir = server.data_dir();
    Arc::into_inner(server)
        .expect("the swapper has stopped")
        .stop();
    let (server, cached) = start(Some(data_dir.clone()));
    server.stop();
    {
        let db = sled::open(data_dir.path().join("db")).unwrap();
        db.drop_tree("plugin_artifacts").unwrap();
        db.flush().unwrap();
    }
    let (server, uncached) = start(Some(data_dir.clone()));
    server.stop();
    let (_server, cached_again) = start(Some(data_dir));

    println!("plugin lifecycle ({PLUGINS} uploaded plugins + 4 built-in)");
    println!("| measure | result |");
    println!("|---|---:|");
    println!(
        "| upload to active, example strategy (median of 10, compile included) | {:.1} ms |",
        median_ms(uploads)
    );
    println!(
        "| restart, compiled artifacts cached | {:.0} ms |",
        cached.as_secs_f64() * 1000.0
    );
    println!(
        "| restart, no artifacts (compiles 16 components) | {:.0} ms |",
        uncached.as_secs_f64() * 1000.0
    );
    println!(
        "| restart, cached again | {:.0} ms |",
        cached_again.as_secs_f64() * 1000.0
    );
    println!(
        "| placements/s, no swaps | {:.0} (p99 {:.2} ms, {} errors) |",
        steady.rate(),
        steady.percentile(0.99),
        steady.errors
    );
    println!(
        "| placements/s, strategy swapped every 100 ms ({} swaps) | {:.0} (p99 {:.2} ms, {} errors) |",
        swaps.load(Ordering::Relaxed),
        swapping.rate(),
        swapping.percentile(0.99),
        swapping.errors
    );
    println!(
        "ratio with swaps / without: {:.2}",
        swapping.rate() / steady.rate()
    );
}

//! Placement throughput of several managers on one PostgreSQL against one manager: the
//! real `zonebroker` binary on loopback, a throw-away cluster of Debian's PostgreSQL on the
//! same machine (`fsync` and `synchronous_commit` on), `AGENTS` agents in one zone checked
//! in through the first manager, and `CLIENTS` keep-alive clients placing a session and
//! ending it again, spread evenly over the managers. Every run measures both setups on a
//! fresh database each, alternating which goes first, and answers the ratio of the two in
//! that run (the baseline is one manager, measured on the same machine in the same run).
//!
//! `cargo bench -p zonebroker --bench managers [-- SECONDS CLIENTS AGENTS RUNS]`
//! (defaults: 10 seconds, 32 clients, 1,000 agents, 3 runs).

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use zonebroker_test_support::load::{self, ADMIN, AGENT, Run, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");

/// Managers on one database, each with one listener for zone `default`.
struct Managers {
    processes: Vec<Child>,
    addrs: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Managers {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn start(count: usize) -> Managers {
    let cluster = zonebroker_test_support::postgres::cluster();
    let database = cluster.url(&cluster.create_database());
    let mut managers = Managers {
        processes: Vec::new(),
        addrs: Vec::new(),
        _dirs: Vec::new(),
    };
    for _ in 0..count {
        let dir = zonebroker_test_support::private_tempdir();
        let addr = format!("127.0.0.1:{}", free_port());
        let process = load::serve(
            BIN,
            &[
                "--data-dir".into(),
                dir.path().display().to_string(),
                "--database".into(),
                database.clone(),
                "--listen".into(),
                format!("{addr}=default"),
            ],
        );
        managers.processes.push(process);
        managers.addrs.push(addr);
        managers._dirs.push(dir);
    }
    managers
}

/// Wait for every manager, check `agents` agents in through the first, add the image, and
/// wait until every manager places on them.
async fn populate(managers: &Managers, agents: usize) {
    let client = reqwest::Client::new();
    for addr in &managers.addrs {
        let started = Instant::now();
        while client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "a manager did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let first = &managers.addrs[0];
    const WORKERS: usize = 16;
    let tasks: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (client, first) = (client.clone(), first.clone());
            tokio::spawn(async move {
                for i in (worker..agents).step_by(WORKERS) {
                    let body = json!({
                        "hostname": format!("agent-{i:05}"),
                        "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                        "port": 4902, "cores": 64, "memory": 256u64 << 30, "max_sessions": 500,
                    });
                    client
                        .post(format!("http://{first}/api/v1/agents/checkin"))
                        .bearer_auth(AGENT)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .error_for_status()
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let image = json!({ "name": "desktop", "cores": 1, "memory": 1u64 << 30 });
    let response = client
        .post(format!("http://{first}/api/v1/images"))
        .bearer_auth(ADMIN)
        .json(&image)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    // Every manager follows the others' changes: wait until each places.
    for addr in &managers.addrs {
        let started = Instant::now();
        while load::run(addr, ADMIN, "desktop", 0.1, 1).await.placements == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a manager never placed"
            );
        }
    }
}

/// `clients` spread over `managers`, for `seconds`: one run's figures, merged.
async fn measure(managers: &Managers, seconds: f64, clients: usize) -> Run {
    let count = managers.addrs.len();
    // A second to warm up.
    for addr in &managers.addrs {
        load::run(addr, ADMIN, "desktop", 1.0 / count as f64, clients / count).await;
    }
    let tasks: Vec<_> = managers
        .addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let (addr, clients) = (addr.clone(), share(clients, count, i));
            tokio::spawn(async move { load::run(&addr, ADMIN, "desktop", seconds, clients).await })
        })
        .collect();
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(task.await.unwrap());
    }
    let mut merged = Run {
        placements: 0,
        seconds: 0.0,
        latencies_us: Vec::new(),
        errors: 0,
    };
    for run in runs {
        merged.placements += run.placements;
        merged.seconds = merged.seconds.max(run.seconds);
        merged.latencies_us.extend(run.latencies_us);
        merged.errors += run.errors;
    }
    merged.latencies_us.sort_unstable();
    merged
}

/// Manager `i`'s share of `clients` over `count` managers.
fn share(clients: usize, count: usize, i: usize) -> usize {
    clients / count + usize::from(i < clients % count)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let seconds: f64 = args.first().map_or(10.0, |a| a.parse().expect("SECONDS"));
    let clients: usize = args.get(1).map_or(32, |a| a.parse().expect("CLIENTS"));
    let agents: usize = args.get(2).map_or(1000, |a| a.parse().expect("AGENTS"));
    let rounds: usize = args.get(3).map_or(3, |a| a.parse().expect("RUNS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| run | managers | placements/s | p50 ms | p99 ms | errors | two ÷ one |\n|---|---|---|---|---|---|---|"
    );
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [1, 2] } else { [2, 1] };
        let mut rates = [0.0; 3];
        let mut lines = Vec::new();
        for count in order {
            let managers = start(count);
            let run = runtime.block_on(async {
                populate(&managers, agents).await;
                measure(&managers, seconds, clients).await
            });
            drop(managers);
            rates[count] = run.rate();
            lines.push((count, run));
        }
        lines.sort_by_key(|(count, _)| *count);
        for (count, run) in lines {
            let ratio = if count == 2 {
                format!("{:.2}", rates[2] / rates[1])
            } else {
                String::new()
            };
            println!(
                "| {} | {count} | {:.0} | {:.1} | {:.1} | {} | {ratio} |",
                round + 1,
                run.rate(),
                run.percentile(0.5),
                run.percentile(0.99),
                run.errors
            );
        }
    }
}

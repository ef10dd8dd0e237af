//! Several managers on one PostgreSQL, as real processes on loopback: what they share (the
//! change feed, placements judged in the database), who reconciles an AutoScale config
//! (its lease, and the fence on every write of a pass), and what a crash of one of them, or
//! of the database, leaves.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zonebroker_test_support::api::{agent, image, metric, request_session, until, upload_plugin};
use zonebroker_test_support::autoscale::{
    autoscale_config, call, instances_of, setup, token_in, wait_for,
};
use zonebroker_test_support::moto::Moto;
use zonebroker_test_support::postgres::{Cluster, cluster};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, Storage};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");

/// How long a wait for the reconcile loop's work may take (moto answers slowly on a busy
/// machine; a wait ends as soon as its condition holds).
const PASSES_DONE: Duration = Duration::from_secs(90);

/// A manager on `database` serving `zones`, started with `args` as well.
fn manager(cluster: &Cluster, database: &str, zones: &[&str], args: &[&str]) -> Server {
    Server::start(
        BIN,
        ServerOptions {
            zones: zones.iter().map(|z| z.to_string()).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            storage: Storage::Database(cluster.url(database)),
            ..ServerOptions::default()
        },
    )
}

/// Whether `server` holds the lease of AutoScale config `config` (its metric says so).
fn holds_lease(server: &Server, config: &str) -> bool {
    metric(
        server,
        &format!("zonebroker_autoscale_config_lease_held{{config=\"{config}\"}}"),
    ) == Some(1.0)
}

/// `POST path` with a check-in token.
fn with_token(server: &Server, path: &str, token: &str, body: Option<&Value>) -> u16 {
    server
        .call_as("default", "POST", path, body, Some(token), None)
        .0
}

/// A VM's check-in token is taken once, whichever manager it reaches: its bootstrap and its
/// check-in each succeed through one manager and are refused by every manager afterwards.
#[test]
fn a_check_in_token_issued_by_one_manager_is_taken_once_across_managers() {
    let cluster = cluster();
    let database = cluster.create_database();
    let moto = Moto::start();
    let args = ["--autoscale-interval", "300ms"];
    let a = manager(cluster, &database, &["default"], &args);
    let b = manager(cluster, &database, &["default"], &args);
    setup(&a, &moto);
    call(
        &a,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 1, 1)),
    );
    let (instance, server_id) = wait_for("the config's VM", PASSES_DONE, || {
        instances_of(&moto, "linux").pop()
    });
    let token = token_in(&moto.user_data(&instance));
    let path = format!("/api/v1/servers/{server_id}");
    for manager in [&a, &b] {
        until("the server with its VM on both managers", || {
            manager.call("default", "GET", &path, None).1["instance_id"] == instance.as_str()
        });
    }

    // The VM's bootstrap, and a replay of it, reach the two managers at the same moment:
    // one is answered, the other refused. Then the same for its check-in.
    let both = |path: &str, body: Option<&Value>| -> Vec<u16> {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            let sent: Vec<_> = [&a, &b]
                .map(|manager| {
                    let (start, token) = (&start, &token);
                    scope.spawn(move || {
                        start.wait();
                        with_token(manager, path, token, body)
                    })
                })
                .into_iter()
                .collect();
            let mut answers: Vec<u16> = sent.into_iter().map(|s| s.join().unwrap()).collect();
            answers.sort();
            answers
        })
    };
    assert_eq!(both("/api/v1/servers/bootstrap", None), [200, 401]);
    let checkin = json!({ "address": "10.9.0.1" });
    assert_eq!(both("/api/v1/servers/checkin", Some(&checkin)), [200, 401]);
    for manager in [&a, &b] {
        for path in ["/api/v1/servers/bootstrap", "/api/v1/servers/checkin"] {
            assert_eq!(
                with_token(manager, path, &token, Some(&checkin)),
                401,
                "{path} again with the token"
            );
        }
    }
    for manager in [&a, &b] {
        until("the server running on both managers", || {
            manager.call("default", "GET", &path, None).1["status"] == "running"
        });
    }
}

/// A manager that still counts a config's lease as held, but whose lease another manager
/// took over (it stalled past it, say), has the writes of its next pass refused by the
/// database: it records no server and creates no VM, stops the pass, and steps down.
#[test]
fn a_manager_whose_lease_was_taken_over_has_its_writes_refused_and_steps_down() {
    let cluster = cluster();
    let database = cluster.create_database();
    let moto = Moto::start();
    // A long lease, renewed every 8 s: this process counts it as held well after another
    // took it over.
    let server = manager(
        cluster,
        &database,
        &["default"],
        &["--autoscale-interval", "300ms", "--config-lease", "24s"],
    );
    setup(&server, &moto);
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 1, 1)),
    );
    wait_for("the config's VM, recorded", PASSES_DONE, || {
        let all = call(&server, "GET", "/api/v1/servers", None);
        let recorded = all
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["instance_id"].is_string());
        (recorded && instances_of(&moto, "linux").len() == 1).then_some(())
    });
    assert!(holds_lease(&server, "linux"));
    let lease = || {
        cluster.psql(
            &database,
            "SELECT epoch, expires_at FROM config_leases WHERE config = 'linux'",
        )
    };
    // Right after a renewal, so that the next is 8 s away: another manager takes the lease
    // over (as one would once this one's lapsed).
    let seen = lease();
    wait_for("a renewal", Duration::from_secs(20), || {
        (lease() != seen).then_some(())
    });
    let epoch: i64 = cluster
        .psql(
            &database,
            "UPDATE config_leases SET holder = gen_random_uuid(), epoch = epoch + 1, \
         expires_at = now() + interval '1 hour' WHERE config = 'linux' RETURNING epoch",
        )
        .parse()
        .unwrap();

    // More demand: this process's next pass wants two more servers.
    call(
        &server,
        "PATCH",
        "/api/v1/autoscale-configs/linux",
        Some(json!({ "minimum_available_sessions": 3 })),
    );
    server.wait_for_log(Duration::from_secs(20), |line| {
        line.contains("a write of this pass was refused")
    });
    assert!(!holds_lease(&server, "linux"), "it stepped down");
    let (_, config) = server.call("default", "GET", "/api/v1/autoscale-configs/linux", None);
    assert_eq!(config["status"]["reconciled_elsewhere"], true, "{config}");
    // Nothing was written or created for it, then or in the passes since.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster.psql(
            &database,
            "SELECT count(*) FROM servers WHERE record->>'config' = 'linux'"
        ),
        "1"
    );
    assert_eq!(instances_of(&moto, "linux").len(), 1);
    assert_eq!(
        cluster.psql(
            &database,
            "SELECT epoch FROM config_leases WHERE config = 'linux'"
        ),
        epoch.to_string(),
        "the new holder's lease is left alone"
    );
}

/// How the leader of a config stops serving in [`takeover`].
#[derive(Clone, Copy, PartialEq)]
enum LeaderLost {
    /// `kill -9`.
    Killed,
    /// `SIGSTOP` until another manager has taken the config over, then `SIGCONT`.
    Stalled,
}

/// The manager reconciling a config stops in the middle of a scale-up (`how`): another
/// takes the config over once the lease runs out, and after its passes there are exactly
/// the VMs wanted, each with its own record, and no record with two VMs. A stalled leader
/// that resumes steps down (any write of the pass it was in is refused).
fn takeover(how: LeaderLost) {
    let cluster = cluster();
    let database = cluster.create_database();
    let moto = Moto::start();
    let args = ["--autoscale-interval", "300ms", "--config-lease", "2s"];
    let mut managers = [
        manager(cluster, &database, &["default"], &args),
        manager(cluster, &database, &["default"], &args),
    ];
    setup(&managers[0], &moto);
    // Eight sessions, one per server: eight VMs.
    call(
        &managers[0],
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("big", 8, 1)),
    );
    wait_for("the scale-up to start", PASSES_DONE, || {
        (instances_of(&moto, "big").len() >= 2).then_some(())
    });
    let leader = wait_for("a leader", Duration::from_secs(10), || {
        managers.iter().position(|m| holds_lease(m, "big"))
    });
    match how {
        LeaderLost::Killed => managers[leader].kill9(),
        LeaderLost::Stalled => managers[leader].signal("STOP"),
    }
    let lost = Instant::now();
    eprintln!(
        "live instances when the leader stopped: {}",
        instances_of(&moto, "big").len()
    );
    let survivor = &managers[1 - leader];
    wait_for(
        "the survivor to take the config over",
        Duration::from_secs(10),
        || holds_lease(survivor, "big").then_some(()),
    );
    let took = lost.elapsed();
    eprintln!("taken over {took:?} after the leader stopped (lease 2 s)");
    assert!(took < Duration::from_secs(5), "taken over after {took:?}");
    if how == LeaderLost::Stalled {
        let resumed = &managers[leader];
        resumed.signal("CONT");
        wait_for(
            "the resumed leader to step down",
            Duration::from_secs(10),
            || (!holds_lease(resumed, "big")).then_some(()),
        );
        let refused = resumed
            .logs()
            .iter()
            .any(|line| line.contains("a write of this pass was refused"));
        eprintln!("the resumed leader's pass had a write refused: {refused}");
        // (A pass that was under way when it stopped may finish first: its status is not
        // stored, and the config is shown as reconciled elsewhere once it has.)
        wait_for(
            "the resumed leader's status",
            Duration::from_secs(10),
            || {
                let (_, config) =
                    resumed.call("default", "GET", "/api/v1/autoscale-configs/big", None);
                (config["status"]["reconciled_elsewhere"] == true).then_some(())
            },
        );
    }

    let records_of = |all: &Value| -> Vec<(String, Option<String>)> {
        all.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["config"] == "big")
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["instance_id"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    wait_for("exactly eight VMs, each recorded", PASSES_DONE, || {
        let records = records_of(&call(survivor, "GET", "/api/v1/servers", None));
        let with_vm = records.iter().filter(|(_, vm)| vm.is_some()).count();
        (instances_of(&moto, "big").len() == 8 && records.len() == 8 && with_vm == 8).then_some(())
    });
    // A few more passes change nothing.
    std::thread::sleep(Duration::from_secs(2));
    let vms = instances_of(&moto, "big");
    let records = records_of(&call(survivor, "GET", "/api/v1/servers", None));
    assert_eq!(vms.len(), 8);
    assert_eq!(records.len(), 8);
    let recorded: HashMap<String, String> = records
        .into_iter()
        .map(|(id, vm)| (id, vm.unwrap()))
        .collect();
    let mut servers_with_a_vm = HashSet::new();
    for (instance, server) in &vms {
        assert_eq!(
            recorded.get(server),
            Some(instance),
            "VM {instance} is its server's recorded one"
        );
        assert!(
            servers_with_a_vm.insert(server.clone()),
            "server {server} has two VMs"
        );
    }
}

#[test]
fn a_killed_leaders_config_is_taken_over_and_ends_with_exactly_the_wanted_vms() {
    takeover(LeaderLost::Killed);
}

#[test]
fn a_leader_stalled_past_its_lease_steps_down_and_the_config_ends_with_the_wanted_vms() {
    takeover(LeaderLost::Stalled);
}

const IDLE: &str = "idle";
const BUSY: &str = "busy";

/// A plugin version uploaded and activated on one manager is what another manager calls
/// within a second, while 16 clients keep placing and ending sessions there, none of which
/// fails. (Which version placed a session cannot be told from its agent while placements
/// contend: one that finds its first choice's row locked takes the next. So the swap is
/// read from the manager's `zonebroker_plugin_active_version`, and a placement made once
/// the clients are done shows the new version's choice.)
#[test]
fn an_activation_on_one_manager_is_called_on_another_within_a_second_under_load() {
    let cluster = cluster();
    let database = cluster.create_database();
    let a = manager(cluster, &database, &["default"], &[]);
    let b = manager(cluster, &database, &["default"], &[]);
    let builtin = |name: &str| {
        zonebroker::plugins::BUILTIN_STRATEGIES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    // A version as the metrics name it: the first 12 hex digits.
    let upload =
        |bytes: &[u8]| upload_plugin(&a, "default", "swappy", bytes, true)[..12].to_string();
    // The version of `swappy` B calls now, from its metrics.
    let active_on_b = || {
        let text = b.admin_get("default", "/metrics").text().unwrap();
        text.lines().find_map(|line| {
            let rest =
                line.strip_prefix("zonebroker_plugin_active_version{plugin=\"swappy\",version=\"")?;
            let (version, value) = rest.split_once("\"}")?;
            (value.trim() == "1").then(|| version.to_string())
        })
    };
    // Two agents of 64 cores, one running 40 one-core sessions: least-load picks the idle
    // one, most-load the busy one.
    let least_load = upload(builtin("least-load"));
    call(
        &a,
        "PATCH",
        "/api/v1/zones/default",
        Some(json!({ "load_balance_strategy": "swappy" })),
    );
    image(&a, ADMIN_TOKEN, "desktop");
    let busy = agent(&a, "default", BUSY, 100);
    for n in 0..40 {
        let (status, answer) = request_session(&a, "default", "desktop", &format!("resident-{n}"));
        assert_eq!(status, 201, "{answer}");
    }
    let idle = agent(&a, "default", IDLE, 100);
    // B ranks with the usage it has read (every second) of the sessions A placed.
    until("A's sessions in B's view", || {
        b.call("default", "GET", &format!("/api/v1/agents/{busy}"), None)
            .1["sessions"]
            == 40
    });
    assert_eq!(active_on_b(), Some(least_load.clone()));
    let placed_on = |server: &Server| {
        let (status, session) = request_session(server, "default", "desktop", "probe");
        assert_eq!(status, 201, "{session}");
        let id = session["id"].as_str().unwrap();
        call(server, "DELETE", &format!("/api/v1/sessions/{id}"), None);
        session["agent"].as_str().unwrap().to_string()
    };
    assert_eq!(placed_on(&b), idle, "least-load");

    let placements = std::sync::atomic::AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (activated, swapped) = std::thread::scope(|scope| {
        for client in 0..16 {
            let (b, placements, failures, stop) = (&b, &placements, &failures, &stop);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let user = format!("c{client}-{n}");
                    let (status, session) = request_session(b, "default", "desktop", &user);
                    if status != 201 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("place: {status} {session}"));
                        continue;
                    }
                    placements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let id = session["id"].as_str().unwrap();
                    let (status, answer) =
                        b.call("default", "DELETE", &format!("/api/v1/sessions/{id}"), None);
                    if status != 204 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("end: {status} {answer}"));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let most_load = scope.spawn(|| upload(builtin("most-load")));
        // B's active version, watched from the moment the upload is sent.
        let swapped = loop {
            if active_on_b().is_some_and(|version| version != least_load) {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never swapped on B"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let activated = most_load.join().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (activated, swapped)
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    eprintln!(
        "{} placements under load; most-load ({activated}) active on B {swapped:?} after its upload was sent",
        placements.into_inner()
    );
    assert!(
        swapped < Duration::from_secs(1),
        "swapped on B after {swapped:?}"
    );
    assert_eq!(active_on_b(), Some(activated));
    assert_eq!(placed_on(&b), busy, "most-load");
}

/// What one request of the history test did.
#[derive(Clone, Debug)]
struct Request {
    kind: &'static str,
    /// The zone of the manager it was sent to.
    zone: &'static str,
    sent: Instant,
    answered: Instant,
    /// 0: no HTTP answer (the manager was down, the connection broke).
    status: u16,
    session: String,
    agent: String,
}

/// What can go wrong mid-run in the history test.
#[derive(Clone, Copy, PartialEq)]
enum Trouble {
    None,
    /// The second manager is killed (`kill -9`).
    ManagerKilled,
    /// PostgreSQL crashes (`pg_ctl -m immediate`) and starts again.
    DatabaseRestarted,
}

const ZONES: [&str; 3] = ["east", "west", "north"];
const SLOTS_PER_AGENT: u32 = 2;

/// Three managers (one zone each) on one database, agents with two slots each, and 32
/// clients placing sessions through them and ending them through another manager, with
/// `trouble` three seconds in. Every request is recorded, and the history is checked
/// afterwards against the database.
fn history(trouble: Trouble) {
    let own_cluster;
    let cluster = if trouble == Trouble::DatabaseRestarted {
        own_cluster = Cluster::start();
        &own_cluster
    } else {
        cluster()
    };
    let database = cluster.create_database();
    let managers: Vec<Server> = ZONES
        .iter()
        .map(|zone| manager(cluster, &database, &[zone], &[]))
        .collect();
    image_in(&managers[0], "desktop");
    let mut capacity: HashMap<String, u32> = HashMap::new();
    let mut zone_of: HashMap<String, &str> = HashMap::new();
    for (m, zone) in ZONES.iter().enumerate() {
        for n in 0..2 {
            let id = agent(&managers[m], zone, &format!("{zone}-{n}"), SLOTS_PER_AGENT);
            capacity.insert(id.clone(), SLOTS_PER_AGENT);
            zone_of.insert(id, zone);
        }
    }
    // Every manager knows every agent and the image before the run.
    for manager in &managers {
        let zone = manager.zones.keys().next().unwrap().clone();
        until("every agent on every manager", || {
            manager
                .call(&zone, "GET", "/api/v1/agents", None)
                .1
                .as_array()
                .unwrap()
                .len()
                == 6
        });
    }

    let started = Instant::now();
    let run_for = Duration::from_secs(8);
    let trouble_at = Duration::from_secs(3);
    let log: Mutex<Vec<Request>> = Mutex::default();
    let killed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for client in 0..32usize {
            let (managers, log, killed) = (&managers, &log, &killed);
            scope.spawn(move || {
                let mut n = 0usize;
                while started.elapsed() < run_for {
                    n += 1;
                    let placing = (client + n) % 3;
                    let ending = (placing + 1 + n % 2) % 3;
                    let down =
                        |m: usize| m == 1 && killed.load(std::sync::atomic::Ordering::SeqCst);
                    if down(placing) {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let zone = ZONES[placing];
                    let sent = Instant::now();
                    let (status, session) = request(
                        &managers[placing],
                        zone,
                        "POST",
                        "/api/v1/sessions",
                        Some(json!({ "image": "desktop", "user": format!("u{client}-{n}") })),
                    );
                    let placed = Request {
                        kind: "place",
                        zone,
                        sent,
                        answered: Instant::now(),
                        status,
                        session: session["id"].as_str().unwrap_or_default().to_string(),
                        agent: session["agent"].as_str().unwrap_or_default().to_string(),
                    };
                    log.lock().unwrap().push(placed.clone());
                    if status != 201 {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis((n % 7) as u64 * 3));
                    let ending = if down(ending) { placing } else { ending };
                    let sent = Instant::now();
                    let (status, _) = request(
                        &managers[ending],
                        ZONES[ending],
                        "DELETE",
                        &format!("/api/v1/sessions/{}", placed.session),
                        None,
                    );
                    log.lock().unwrap().push(Request {
                        kind: "end",
                        zone: ZONES[ending],
                        sent,
                        answered: Instant::now(),
                        status,
                        ..placed
                    });
                }
            });
        }
        std::thread::sleep(trouble_at);
        match trouble {
            Trouble::None => {}
            Trouble::ManagerKilled => {
                killed.store(true, std::sync::atomic::Ordering::SeqCst);
                managers[1].signal("KILL");
            }
            Trouble::DatabaseRestarted => {
                cluster.crash_server();
                std::thread::sleep(Duration::from_millis(1000));
                cluster.start_server();
            }
        }
    });
    let ended = Instant::now();
    let log = log.into_inner().unwrap();
    check_history(&log, &capacity, cluster, &database, ended);

    // The survivors served after the trouble.
    let placed = log.iter().filter(|r| r.kind == "place" && r.status == 201);
    let placed_after = placed
        .clone()
        .filter(|r| r.sent > started + trouble_at + Duration::from_secs(2))
        .count();
    // A request through one manager is placed on an agent that checked in to another when
    // its own zone is full.
    let elsewhere = placed.filter(|r| zone_of[&r.agent] != r.zone).count();
    let count = |kind: &str, status: u16| {
        log.iter()
            .filter(|r| r.kind == kind && r.status == status)
            .count()
    };
    eprintln!(
        "{} requests: {} placed ({elsewhere} in another zone), {} full (503), {} ended; {placed_after} placed in the last 3 s",
        log.len(),
        count("place", 201),
        count("place", 503),
        count("end", 204),
    );
    let mut other: HashMap<(&str, u16), usize> = HashMap::new();
    for r in log.iter().filter(|r| ![201, 204, 503].contains(&r.status)) {
        *other.entry((r.kind, r.status)).or_default() += 1;
    }
    eprintln!("other answers (kind, status): {other:?}");
    if trouble == Trouble::DatabaseRestarted {
        // Every request waits for the database to come back.
        assert!(other.is_empty(), "{other:?}");
    }
    assert!(placed_after > 0, "the survivors serve after the trouble");
    assert!(elsewhere > 0, "placed across zones");
}

/// `method path` through `zone`'s listener of `server`; status 0 when no answer came.
fn request(
    server: &Server,
    zone: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .http()
        .request(method.parse().unwrap(), server.url(zone, path))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(30));
    if let Some(body) = &body {
        request = request.json(body);
    }
    match request.send() {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn image_in(server: &Server, name: &str) {
    let zone = server.zones.keys().next().unwrap().clone();
    let (status, answer) = server.call(
        &zone,
        "POST",
        "/api/v1/images",
        Some(&json!({ "name": name, "cores": 1.0, "memory": 1u64 << 30 })),
    );
    assert_eq!(status, 201, "{answer}");
}

/// Whether a request's outcome is unknown: no answer, or a server error (it may have been
/// carried out before the failure).
fn unknown(request: &Request) -> bool {
    request.status == 0 || request.status >= 500
}

/// Check the recorded history against the database, after the run:
/// - no agent ever held more sessions known to be live at once than its slots (a session
///   is known live from the answer to its placement until its end was sent, or until the
///   run's end if it is still in the database);
/// - every acknowledged session is in the database unless its end was acknowledged (or
///   its end's outcome is unknown), and none whose end was acknowledged is; the database
///   holds no other session than those, and at most one per placement whose outcome is
///   unknown;
/// - the usage in the database is the count of the sessions, host by host.
fn check_history(
    log: &[Request],
    capacity: &HashMap<String, u32>,
    cluster: &Cluster,
    database: &str,
    ended: Instant,
) {
    let stored: HashSet<String> = cluster
        .psql(database, "SELECT id FROM sessions")
        .lines()
        .map(str::to_string)
        .collect();
    let ends: HashMap<&str, &Request> = log
        .iter()
        .filter(|r| r.kind == "end")
        .map(|r| (r.session.as_str(), r))
        .collect();
    let mut live: HashMap<&str, Vec<(Instant, i32)>> = HashMap::new();
    let mut explained = 0;
    for placed in log.iter().filter(|r| r.kind == "place" && r.status == 201) {
        let end = ends.get(placed.session.as_str());
        let is_stored = stored.contains(&placed.session);
        explained += is_stored as usize;
        match end {
            Some(end) if unknown(end) => {}
            Some(end) => assert!(
                !is_stored && end.status == 204,
                "session {}: ended with {}, in the database: {is_stored}",
                placed.session,
                end.status
            ),
            None => assert!(is_stored, "acknowledged session {} is lost", placed.session),
        }
        let until = match end {
            Some(end) if !stored.contains(&placed.session) => end.sent,
            _ => ended,
        };
        let events = live.entry(placed.agent.as_str()).or_default();
        events.push((placed.answered, 1));
        events.push((until, -1));
    }
    let unknown_placements = log
        .iter()
        .filter(|r| r.kind == "place" && unknown(r))
        .count();
    assert!(
        stored.len() - explained <= unknown_placements,
        "{} sessions in the database that no acknowledged placement made ({unknown_placements} placements unanswered)",
        stored.len() - explained
    );
    for (agent, mut events) in live {
        // Ends before starts at the same instant.
        events.sort();
        let mut held = 0;
        for (_, change) in events {
            held += change;
            assert!(
                held <= capacity[agent] as i32,
                "agent {agent} held {held} live sessions, {} slots",
                capacity[agent]
            );
        }
    }
    assert_eq!(
        cluster.psql(
            database,
            "SELECT count(*) FROM usage u WHERE u.sessions <> \
             (SELECT count(*) FROM sessions s WHERE (s.record->>'agent')::uuid = u.host)",
        ),
        "0",
        "usage is the count of sessions, host by host"
    );
    assert_eq!(
        cluster.psql(database, "SELECT coalesce(sum(sessions), 0) FROM usage"),
        stored.len().to_string()
    );
}

#[test]
fn three_managers_never_over_commit_nor_lose_an_acknowledged_session() {
    history(Trouble::None);
}

#[test]
fn three_managers_lose_nothing_acknowledged_when_one_is_killed_mid_run() {
    history(Trouble::ManagerKilled);
}

#[test]
fn three_managers_lose_nothing_acknowledged_when_the_database_restarts_mid_run() {
    history(Trouble::DatabaseRestarted);
}

use std::sync::Arc;

use super::*;
use crate::domain::zone::{Connection, Zone};

fn sled(store: &Store) -> &SledEngine {
    match &store.engine {
        Engine::Sled(sled) => sled,
        Engine::Postgres(_) => unreachable!("these tests open sled"),
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const CAP: Capacity = Capacity {
    millicores: 4000,
    memory: 1 << 40,
    gpus: 0,
    max_sessions: 100,
};
const ONE: Demand = Demand {
    millicores: 1000,
    memory: 1,
    gpus: 0,
};

fn session(agent: Uuid) -> Session {
    Session {
        id: Uuid::new_v4(),
        user: "ada".into(),
        image: Some("desktop".into()),
        workspace: None,
        host_kind: Default::default(),
        zone: "default".into(),
        agent,
        agent_hostname: "a".into(),
        connection: Connection {
            url: "https://x/".into(),
            allow_origin_domain: "x".into(),
            upstream_auth_address: "proxy".into(),
        },
        demand: ONE,
        created_at_ms: 1,
        rdp: None,
    }
}

#[test]
fn records_carry_their_version_and_read_what_older_and_newer_builds_wrote() {
    use crate::domain::autoscale::{Pool, PoolType};
    let dir = tempdir();
    let store = Store::open(dir.path()).unwrap();
    let pool = |name: &str| Pool {
        name: name.into(),
        pool_type: PoolType::Server,
    };
    store.put_pool(&pool("written")).unwrap();
    let raw = sled(&store)
        .tree(Table::Pools)
        .get("written")
        .unwrap()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&raw).unwrap(),
        r#"{"schema":1,"record":{"name":"written","type":"server"}}"#
    );
    // A record from before records carried their version.
    sled(&store)
        .tree(Table::Pools)
        .insert("bare", r#"{"name":"bare","type":"server"}"#.as_bytes())
        .unwrap();
    // A newer build added a field: this one reads the rest (a rollback keeps working).
    sled(&store)
        .tree(Table::Pools)
        .insert(
            "added",
            r#"{"schema":1,"record":{"name":"added","type":"server","colour":"red"}}"#.as_bytes(),
        )
        .unwrap();
    let mut names: Vec<String> = store.pools().unwrap().into_iter().map(|p| p.name).collect();
    names.sort();
    assert_eq!(names, ["added", "bare", "written"]);
    // A record of a layout this build does not know is refused, readable or not.
    for raw in [
        r#"{"schema":2,"record":{"name":"next","type":"server"}}"#,
        r#"{"schema":2,"record":{"title":"next"}}"#,
    ] {
        sled(&store)
            .tree(Table::Pools)
            .insert("next", raw.as_bytes())
            .unwrap();
        assert!(
            matches!(
                store.pools(),
                Err(StoreError::NewerSchema { found: 2, known: 1 })
            ),
            "{raw}"
        );
    }
    sled(&store)
        .tree(Table::Pools)
        .insert("next", r#"{"schema":1,"record":{"title":"x"}}"#.as_bytes())
        .unwrap();
    assert!(matches!(
        store.pools(),
        Err(StoreError::Corrupt { tree: "pools", .. })
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempdir();
    {
        let store = Store::open(dir.path()).unwrap();
        sled(&store)
            .db
            .open_tree("meta")
            .unwrap()
            .insert(
                sled_engine::SCHEMA_KEY_FOR_TESTS,
                &(SCHEMA_VERSION + 1).to_be_bytes(),
            )
            .unwrap();
        sled(&store).db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::NewerSchema { .. })
    ));
}

/// `host` offered alone, with a new session of one unit.
fn offer(host: Uuid) -> Offer {
    Offer {
        host,
        capacity: CAP,
        session: session(host),
    }
}

/// Place a new session on `host` if it has room: the session placed.
async fn place_on(store: &Store, host: Uuid) -> Option<Session> {
    let offers = [offer(host)];
    let reserved = store.place(&ONE, &offers).await.unwrap()?;
    Some(offers[reserved.offer].session.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_placements_never_overcommit() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let agent = Uuid::new_v4();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for _ in 0..50 {
                    placed.extend(place_on(&store, agent).await);
                }
                placed
            })
        })
        .collect();
    let mut placed = Vec::new();
    for task in tasks {
        placed.extend(task.await.unwrap());
    }
    assert_eq!(placed.len(), 4);
    assert_eq!(store.sessions().unwrap().len(), 4, "each with its record");
    assert_eq!(store.usage().unwrap()[&agent].millicores, 4000);
    let ended = store.end_session(&placed[0], false, 5).await.unwrap();
    assert_eq!((ended.existed, ended.usage.millicores), (true, 3000));
    let again = store.end_session(&placed[0], false, 5).await.unwrap();
    assert_eq!(
        (again.existed, again.usage.millicores),
        (false, 3000),
        "ending twice releases once"
    );
}

#[tokio::test]
async fn the_first_ranked_offer_with_room_is_taken() {
    let dir = tempdir();
    let store = Store::open(dir.path()).unwrap();
    let (full, free) = (Uuid::new_v4(), Uuid::new_v4());
    for _ in 0..4 {
        place_on(&store, full).await.unwrap();
    }
    let offers = [offer(full), offer(free)];
    let reserved = store.place(&ONE, &offers).await.unwrap().unwrap();
    assert_eq!(reserved.offer, 1);
    assert_eq!(reserved.usage.sessions, 1);
    let recorded: Vec<Uuid> = store.sessions().unwrap().iter().map(|s| s.id).collect();
    assert!(recorded.contains(&offers[1].session.id));
    assert!(!recorded.contains(&offers[0].session.id));
}

#[tokio::test]
async fn records_survive_a_reopen_and_usage_is_rebuilt_from_sessions() {
    let dir = tempdir();
    let (agent, kept, lost) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let user_key;
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_zone(&Zone::with_defaults("east")).unwrap();
        place_on(&store, agent).await.unwrap();
        place_on(&store, kept).await.unwrap();
        // A crash between a reservation and its session record:
        let reserve = |usage: Usage| Some(usage.plus(&ONE));
        sled(&store).update_usage(lost, reserve).unwrap();
        sled(&store).update_usage(kept, reserve).unwrap();
        user_key = store.user_key("ada");
        sled(&store).db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.zones().unwrap(), [Zone::with_defaults("east")]);
    assert_eq!(store.sessions().unwrap().len(), 2);
    let usage = store.usage().unwrap();
    assert_eq!(usage[&agent].sessions, 1);
    assert_eq!(
        usage[&kept].sessions, 1,
        "the unrecorded reservation is given back"
    );
    assert!(!usage.contains_key(&lost));
    assert_eq!(store.user_key("ada"), user_key, "user keys are stable");
    assert_ne!(store.user_key("bob"), user_key);
}

#[test]
fn the_installation_id_is_made_once_and_kept() {
    let (dir, other) = (tempdir(), tempdir());
    let id = Store::open(dir.path()).unwrap().installation_id();
    assert_eq!(Store::open(dir.path()).unwrap().installation_id(), id);
    assert_ne!(Store::open(other.path()).unwrap().installation_id(), id);
}

#[tokio::test]
async fn a_closed_host_takes_no_session_and_stays_closed_across_a_reopen() {
    let dir = tempdir();
    let (busy, idle) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let store = Store::open(dir.path()).unwrap();
        let first = place_on(&store, busy).await.unwrap();
        place_on(&store, busy).await.unwrap();
        assert!(
            !store.close_if_idle(busy).await.unwrap(),
            "it runs sessions"
        );
        assert_eq!(store.close(busy).await.unwrap().sessions, 2);
        assert!(place_on(&store, busy).await.is_none());
        let after = store.end_session(&first, true, 5).await.unwrap().usage;
        assert_eq!((after.sessions, after.closed), (1, true));
        assert!(store.close_if_idle(idle).await.unwrap());
        assert!(place_on(&store, idle).await.is_none());
        sled(&store).db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let usage = store.usage().unwrap();
    assert!(usage[&busy].closed && usage[&idle].closed, "{usage:?}");
    assert_eq!(
        usage[&busy].sessions, 1,
        "rebuilt from the session record left"
    );
    assert!(place_on(&store, busy).await.is_none());
    assert!(place_on(&store, idle).await.is_none());
    assert_eq!(store.end_sessions_on(busy).await.unwrap().len(), 1);
    assert_eq!(store.usage().unwrap()[&busy], Usage::default().closed());
    assert!(store.sessions().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_complete_and_are_shared() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_zone(&Zone::with_defaults(&format!("z{i}")))
                    .unwrap();
                store.commit().await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.zones().unwrap().len(), 64);
}

#[test]
fn usage_is_rebuilt_as_the_sessions_say_and_closed_hosts_stay_closed() {
    let (busy, leaked, closed_idle) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let sessions = [session(busy), session(busy)];
    let stored = HashMap::from([
        (busy, Usage::default().plus(&ONE)),
        (leaked, Usage::default().plus(&ONE)),
        (closed_idle, Usage::default().closed()),
    ]);
    let rebuilt = usage_from_sessions(&sessions, &stored);
    assert_eq!(rebuilt.forgotten, [leaked]);
    assert_eq!(
        rebuilt.changed,
        [(busy, Usage::default().plus(&ONE).plus(&ONE))],
        "the closed idle host is kept as it is"
    );
    assert_eq!(
        usage_from_sessions(&sessions, &HashMap::from([(busy, rebuilt.changed[0].1)])),
        RebuiltUsage::default(),
        "nothing to mend the second time"
    );
}

#[test]
fn every_table_is_listed_once_in_declaration_order() {
    for (index, table) in Table::ALL.iter().enumerate() {
        assert_eq!(*table as usize, index, "{table:?}");
    }
}

/// A record kept at a version, for the tests of [`Store::swap`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counted {
    version: u64,
    writer: usize,
}

async fn swap_counted(
    store: &Store,
    expected: Option<u64>,
    next: Option<&Counted>,
) -> Swapped<Counted> {
    store
        .swap(
            Table::Zones,
            Key::Name("counted"),
            expected,
            next,
            |c| c.version,
            None,
            false,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_a_version_lose_no_update_and_refuse_stale_ones() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let first = Counted {
        version: 1,
        writer: 0,
    };
    assert!(matches!(
        swap_counted(&store, None, Some(&first)).await,
        Swapped::Done
    ));
    assert!(
        matches!(swap_counted(&store, None, Some(&first)).await, Swapped::Stale(Some(ref now)) if *now == first),
        "a create finds the record there"
    );
    // Eight writers each add ten versions, each reading the version it replaces first and
    // trying again when another got there before: every write lands exactly once.
    let writers: Vec<_> = (1..=8)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seen = 1;
                let mut written = 0;
                while written < 10 {
                    let next = Counted {
                        version: seen + 1,
                        writer,
                    };
                    match swap_counted(&store, Some(seen), Some(&next)).await {
                        Swapped::Done => {
                            written += 1;
                            seen += 1;
                        }
                        Swapped::Stale(now) => seen = now.expect("never deleted").version,
                        Swapped::Busy => unreachable!("no host is closed"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let stale = Counted {
        version: 2,
        writer: 9,
    };
    match swap_counted(&store, Some(1), Some(&stale)).await {
        Swapped::Stale(Some(now)) => assert_eq!(now.version, 81, "1 + 8 writers x 10"),
        other => panic!("a write at an old version was taken: {other:?}"),
    }
    assert!(matches!(
        swap_counted(&store, Some(80), None).await,
        Swapped::Stale(Some(_))
    ));
    assert!(matches!(
        swap_counted(&store, Some(81), None).await,
        Swapped::Done
    ));
    assert!(matches!(
        swap_counted(&store, Some(81), None).await,
        Swapped::Stale(None)
    ));
}

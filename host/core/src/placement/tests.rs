use std::collections::{HashMap, HashSet};

use super::*;
use crate::domain::agent::AgentCheckin;
use crate::domain::autoscale::ServerStatus;

const GIB: u64 = 1 << 30;
const NOW: u64 = 1_000_000;
const TIMEOUT: u64 = 60_000;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn agent(n: u128, zone: &str, cores: f64, max_sessions: u32) -> Agent {
    let checkin = AgentCheckin {
        hostname: format!("agent-{n}"),
        address: format!("10.0.0.{n}"),
        port: 443,
        cores,
        memory: 16 * GIB,
        max_sessions,
        gpus: None,
        cpu_load: None,
        memory_load: None,
    };
    Agent::register(id(n), checkin, zone, NOW, false)
}

fn image(zone: Option<&str>) -> Image {
    Image {
        name: "desktop".into(),
        cores: 1.0,
        memory: 2 * GIB,
        gpus: 0,
        enabled: true,
        zone: zone.map(str::to_string),
    }
}

/// Each agent's zone and slot.
fn snapshot(agents: &[(Agent, Usage)]) -> Vec<(&str, AgentSlot)> {
    agents
        .iter()
        .map(|(agent, usage)| (agent.zone.as_str(), AgentSlot::new(agent, *usage)))
        .collect()
}

fn used(sessions: u32, cores: u64) -> Usage {
    Usage {
        sessions,
        millicores: cores * 1000,
        memory: 0,
        gpus: 0,
        closed: false,
    }
}

/// Ranks by a fixed rule or fails; records what it was asked.
struct FakeRanker {
    fail: bool,
    /// Keep only the first `keep` of the ascending-by-sessions order.
    keep: Option<usize>,
    calls: Vec<(String, bool, usize, f64)>,
    shadowed: Vec<ShadowCase>,
}

impl FakeRanker {
    fn fewest_sessions() -> Self {
        FakeRanker {
            fail: false,
            keep: None,
            calls: Vec::new(),
            shadowed: Vec::new(),
        }
    }
    fn failing() -> Self {
        FakeRanker {
            fail: true,
            ..FakeRanker::fewest_sessions()
        }
    }
}

impl Ranker for FakeRanker {
    fn shadow(&mut self, case: ShadowCase) {
        self.shadowed.push(case);
    }

    fn rank(
        &mut self,
        strategy: &str,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, StrategyFault> {
        self.calls.push((
            strategy.to_string(),
            request.same_zone,
            candidates.len(),
            request.cores,
        ));
        if self.fail {
            return Err(StrategyFault {
                code: "trap",
                message: "boom".into(),
            });
        }
        let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
        order.sort_by_key(|&i| (candidates.row(i as usize).sessions, i));
        order.truncate(self.keep.unwrap_or(usize::MAX));
        Ok(Ranking::validate(order, candidates.len()).unwrap())
    }
}

/// Reserves against its own usage table; `taken` agents always refuse (another request won).
#[derive(Default)]
struct FakeReserver {
    usage: HashMap<Uuid, Usage>,
    taken: HashSet<Uuid>,
    tried: Vec<Uuid>,
}

impl FakeReserver {
    fn try_reserve(&mut self, candidate: &Candidate, demand: &Demand) -> bool {
        self.tried.push(candidate.agent);
        if self.taken.contains(&candidate.agent) {
            return false;
        }
        let usage = self.usage.entry(candidate.agent).or_insert(candidate.usage);
        if !usage.has_room(&candidate.capacity, demand) {
            return false;
        }
        *usage = usage.plus(demand);
        true
    }
}

impl Reserver for FakeReserver {
    type Error = std::convert::Infallible;
    async fn reserve_first(
        &mut self,
        ranked: &[&Candidate],
        demand: &Demand,
    ) -> Result<Option<usize>, Self::Error> {
        Ok(ranked.iter().position(|c| self.try_reserve(c, demand)))
    }
}

/// [`super::place`], run to completion: the fake reserver never waits.
fn place(
    zone: &Zone,
    demand: &Demand,
    user_key: u64,
    candidates: &mut impl CandidateSource,
    ranker: &mut impl Ranker,
    reserver: &mut FakeReserver,
) -> Result<Report, std::convert::Infallible> {
    let future = std::pin::pin!(super::place(
        zone, demand, user_key, candidates, ranker, reserver
    ));
    match future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(report) => report,
        std::task::Poll::Pending => unreachable!("nothing to wait for"),
    }
}

fn zone(name: &str) -> Zone {
    Zone::with_defaults(name)
}

/// Rule 1 over every agent, split as the broker's zone index splits it.
fn candidates(
    agents: Vec<(&str, AgentSlot)>,
    user_zone: &str,
    image: &Image,
    now_ms: u64,
    timeout_ms: u64,
) -> Candidates {
    let (same, elsewhere) = image_zones(image, user_zone);
    let (mut in_zone, mut outside): (Vec<_>, Vec<_>) =
        agents.into_iter().partition(|(zone, _)| *zone == user_zone);
    if !same {
        in_zone.clear();
    }
    match elsewhere {
        Elsewhere::Nowhere => outside.clear(),
        Elsewhere::Only(only) => outside.retain(|(zone, _)| *zone == only),
        Elsewhere::AnyZone => {}
    }
    let demand = image.demand();
    let of = |group: Vec<(&str, AgentSlot)>| {
        let slots: Vec<AgentSlot> = group.into_iter().map(|(_, slot)| slot).collect();
        super::candidates(&slots, &demand, now_ms, timeout_ms)
    };
    Candidates {
        same_zone: of(in_zone),
        other_zones: of(outside),
    }
}

/// Pool rule 1 over every server, split by zone.
fn server_candidates<'a>(
    servers: impl IntoIterator<Item = ServerSnapshot<'a>>,
    pool: &str,
    user_zone: &str,
) -> Candidates {
    let (in_zone, outside): (Vec<_>, Vec<_>) = servers
        .into_iter()
        .partition(|s| s.server.zone == user_zone);
    Candidates {
        same_zone: super::server_candidates(in_zone, pool),
        other_zones: super::server_candidates(outside, pool),
    }
}

#[test]
fn candidates_need_enabled_fresh_agents_with_room() {
    let mut disabled = agent(1, "east", 8.0, 10);
    disabled.enabled = false;
    let mut stale = agent(2, "east", 8.0, 10);
    stale.last_heartbeat_ms = NOW - TIMEOUT - 1;
    let full_slots = agent(3, "east", 8.0, 2);
    let full_cores = agent(4, "east", 2.0, 10);
    let mut overridden = agent(5, "east", 1.0, 10);
    overridden.cores_override = Some(4.0);
    let fine = agent(6, "east", 8.0, 10);
    let agents = vec![
        (disabled, Usage::default()),
        (stale, Usage::default()),
        (full_slots, used(2, 0)),
        (full_cores, used(1, 2)),
        (overridden, used(1, 2)),
        (fine, used(0, 0)),
    ];
    let found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let ids: Vec<Uuid> = found.same_zone.iter().map(|c| c.agent).collect();
    assert_eq!(ids, [id(5), id(6)]);
    assert_eq!(
        found.same_zone[0].capacity.millicores, 4000,
        "the override replaces the report"
    );
    assert!(found.other_zones.is_empty());
}

#[test]
fn candidates_split_by_zone_sorted_by_id_and_obey_image_zones() {
    let agents = vec![
        (agent(9, "west", 8.0, 10), Usage::default()),
        (agent(3, "east", 8.0, 10), Usage::default()),
        (agent(1, "east", 8.0, 10), Usage::default()),
        (agent(2, "west", 8.0, 10), Usage::default()),
    ];
    let found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    assert_eq!(
        found.same_zone.iter().map(|c| c.agent).collect::<Vec<_>>(),
        [id(1), id(3)]
    );
    assert_eq!(
        found
            .other_zones
            .iter()
            .map(|c| c.agent)
            .collect::<Vec<_>>(),
        [id(2), id(9)]
    );

    let found = candidates(
        snapshot(&agents),
        "east",
        &image(Some("west")),
        NOW,
        TIMEOUT,
    );
    assert!(
        found.same_zone.is_empty(),
        "a west-only image never runs in east"
    );
    assert_eq!(found.other_zones.len(), 2);
    let found = candidates(
        snapshot(&agents),
        "east",
        &image(Some("east")),
        NOW,
        TIMEOUT,
    );
    assert!(
        found.other_zones.is_empty(),
        "an east-only image never runs elsewhere"
    );
}

fn two_zones() -> Vec<(Agent, Usage)> {
    vec![
        (agent(1, "east", 8.0, 4), used(3, 3)),
        (agent(2, "east", 8.0, 4), used(2, 2)),
        (agent(3, "west", 8.0, 4), used(0, 0)),
    ]
}

/// A zone with a shadow strategy hands each ranked placement's input to it, and places
/// exactly as without one; a placement whose strategy failed has nothing to compare.
#[test]
fn a_shadow_sees_the_same_input_and_changes_nothing() {
    let agents = two_zones();
    let demand = image(None).demand();
    let mut plain = zone("east");
    plain.search_alternate_zones = false;
    let shadowed = Zone {
        shadow_strategy: Some("most-load".into()),
        ..plain.clone()
    };
    let mut reports = Vec::new();
    for zone in [&plain, &shadowed] {
        let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
        let (mut ranker, mut reserver) = (FakeRanker::fewest_sessions(), FakeReserver::default());
        reports.push(place(zone, &demand, 7, &mut found, &mut ranker, &mut reserver).unwrap());
        if zone.shadow_strategy.is_none() {
            assert!(ranker.shadowed.is_empty());
            continue;
        }
        let [case] = ranker.shadowed.as_slice() else {
            panic!("one case per ranked group: {:?}", ranker.shadowed)
        };
        assert_eq!(
            (case.zone.as_str(), case.shadow.as_str()),
            ("east", "most-load")
        );
        assert_eq!(case.strategy, "least-load");
        assert_eq!(case.agents, [id(1), id(2)]);
        assert_eq!(case.candidates.len(), 2);
        assert!(case.request.same_zone);
        assert_eq!(case.first_agents(&case.ranking, 1), [id(2)]);
    }
    assert_eq!(reports[0], reports[1]);

    let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let (mut ranker, mut reserver) = (FakeRanker::failing(), FakeReserver::default());
    place(
        &shadowed,
        &demand,
        7,
        &mut found,
        &mut ranker,
        &mut reserver,
    )
    .unwrap();
    assert!(ranker.shadowed.is_empty());
}

#[test]
fn the_users_zone_wins_even_when_another_is_emptier() {
    let agents = two_zones();
    let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let (mut ranker, mut reserver) = (FakeRanker::fewest_sessions(), FakeReserver::default());
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut found,
        &mut ranker,
        &mut reserver,
    )
    .unwrap();
    assert_eq!(report.placed, Some((id(2), Scope::SameZone)));
    assert!(report.faults.is_empty());
    assert_eq!(ranker.calls, [("least-load".to_string(), true, 2, 1.0)]);
}

#[test]
fn alternate_zones_are_searched_only_when_the_users_zone_cannot_take_it() {
    let agents = two_zones();
    // Both east agents lose their last room to concurrent requests.
    let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let mut reserver = FakeReserver {
        taken: [id(1), id(2)].into(),
        ..Default::default()
    };
    let mut ranker = FakeRanker::fewest_sessions();
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut found.clone(),
        &mut ranker,
        &mut reserver,
    )
    .unwrap();
    assert_eq!(report.placed, Some((id(3), Scope::AlternateZone)));
    assert_eq!(reserver.tried, [id(2), id(1), id(3)]);
    assert_eq!(
        ranker.calls.iter().map(|c| c.1).collect::<Vec<_>>(),
        [true, false]
    );

    let closed = Zone {
        search_alternate_zones: false,
        ..zone("east")
    };
    let mut reserver = FakeReserver {
        taken: [id(1), id(2)].into(),
        ..Default::default()
    };
    let report = place(
        &closed,
        &image(None).demand(),
        7,
        &mut found,
        &mut FakeRanker::fewest_sessions(),
        &mut reserver,
    )
    .unwrap();
    assert_eq!(report.placed, None);
    assert_eq!(reserver.tried, [id(2), id(1)], "west is never tried");
}

#[test]
fn a_failing_strategy_falls_back_to_least_load_and_is_reported() {
    let agents = vec![
        (agent(1, "east", 8.0, 4), used(1, 6)), // load 0.75
        (agent(2, "east", 8.0, 4), used(3, 2)), // load 0.25
    ];
    let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let mut reserver = FakeReserver::default();
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut found,
        &mut FakeRanker::failing(),
        &mut reserver,
    )
    .unwrap();
    assert_eq!(report.placed, Some((id(2), Scope::SameZone)));
    assert_eq!(
        report.faults,
        [StrategyFault {
            code: "trap",
            message: "boom".into()
        }]
    );
}

#[test]
fn candidates_a_strategy_leaves_out_are_never_tried() {
    let agents = two_zones();
    let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
    let zone = Zone {
        search_alternate_zones: false,
        ..zone("east")
    };
    let mut ranker = FakeRanker {
        keep: Some(1),
        ..FakeRanker::fewest_sessions()
    };
    let mut reserver = FakeReserver {
        taken: [id(2)].into(),
        ..Default::default()
    };
    let report = place(
        &zone,
        &image(None).demand(),
        7,
        &mut found,
        &mut ranker,
        &mut reserver,
    )
    .unwrap();
    assert_eq!(report.placed, None);
    assert_eq!(reserver.tried, [id(2)]);
}

#[test]
fn nothing_to_rank_means_no_strategy_call() {
    let mut ranker = FakeRanker::fewest_sessions();
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut Candidates::default(),
        &mut ranker,
        &mut FakeReserver::default(),
    )
    .unwrap();
    assert_eq!(report.placed, None);
    assert!(ranker.calls.is_empty());
}

#[test]
fn reservations_never_overcommit_across_many_requests() {
    let agents = vec![
        (agent(1, "east", 4.0, 10), Usage::default()),
        (agent(2, "west", 2.0, 10), Usage::default()),
    ];
    let mut reserver = FakeReserver::default();
    let mut placed = 0;
    for _ in 0..20 {
        // Candidates come from a stale snapshot (usage zero): the reserver must still refuse.
        let mut found = candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT);
        let report = place(
            &zone("east"),
            &image(None).demand(),
            7,
            &mut found,
            &mut FakeRanker::fewest_sessions(),
            &mut reserver,
        )
        .unwrap();
        placed += usize::from(report.placed.is_some());
    }
    assert_eq!(placed, 6, "4 cores in east, 2 in west, 1 core each");
    assert_eq!(reserver.usage[&id(1)].millicores, 4000);
    assert_eq!(reserver.usage[&id(2)].millicores, 2000);
}

fn pool_server(n: u128, pool: &str, zone: &str) -> Server {
    Server {
        id: id(n),
        pool: pool.into(),
        zone: zone.into(),
        address: Some(format!("10.1.0.{n}")),
        status: ServerStatus::Running,
        max_sessions: 2,
        ..crate::domain::autoscale::fixtures::a_server()
    }
}

fn server_snapshot(servers: &[(Server, Usage)]) -> Vec<ServerSnapshot<'_>> {
    servers
        .iter()
        .map(|(server, usage)| ServerSnapshot {
            server,
            usage: *usage,
            user_sessions: u32::try_from(server.id.as_u128()).unwrap(),
        })
        .collect()
}

fn slots(sessions: u32) -> Usage {
    Usage {
        sessions,
        millicores: u64::from(sessions) * SERVER_SESSION.millicores,
        memory: u64::from(sessions) * SERVER_SESSION.memory,
        gpus: 0,
        closed: false,
    }
}

#[test]
fn pool_candidates_are_running_unspent_addressed_servers_of_the_pool_with_a_free_slot() {
    let servers = vec![
        (pool_server(1, "pool", "east"), slots(0)),
        (pool_server(2, "other-pool", "east"), slots(0)),
        (
            Server {
                status: ServerStatus::Provisioning,
                ..pool_server(3, "pool", "east")
            },
            slots(0),
        ),
        (
            Server {
                spent: true,
                ..pool_server(4, "pool", "east")
            },
            slots(0),
        ),
        (
            Server {
                address: None,
                ..pool_server(5, "pool", "east")
            },
            slots(0),
        ),
        (pool_server(6, "pool", "east"), slots(2)),
        (pool_server(8, "pool", "west"), slots(1)),
        (pool_server(7, "pool", "east"), slots(1)),
    ];
    let found = server_candidates(server_snapshot(&servers), "pool", "east");
    let ids = |group: &[Candidate]| group.iter().map(|c| c.agent).collect::<Vec<_>>();
    assert_eq!(ids(&found.same_zone), [id(1), id(7)], "sorted by id");
    assert_eq!(ids(&found.other_zones), [id(8)]);
    let seven = &found.same_zone[1];
    assert_eq!(seven.capacity, server_capacity(2));
    assert_eq!(seven.usage, slots(1));
    assert_eq!(seven.user_sessions, 7);
    assert_eq!((seven.cpu_load, seven.memory_load), (0.0, 0.0));
}

#[test]
fn a_pool_server_slot_is_a_core_and_a_gib() {
    assert_eq!(
        server_capacity(3),
        Capacity {
            millicores: 3000,
            memory: 3 * GIB,
            gpus: 0,
            max_sessions: 3,
        }
    );
    assert!(slots(2).has_room(&server_capacity(3), &SERVER_SESSION));
    assert!(!slots(3).has_room(&server_capacity(3), &SERVER_SESSION));
}

/// Counts how often the other zones' candidates are asked for.
struct CountingSource {
    candidates: Candidates,
    asked_elsewhere: u32,
}

impl CandidateSource for CountingSource {
    fn same_zone(&mut self) -> Vec<Candidate> {
        self.candidates.same_zone()
    }
    fn other_zones(&mut self) -> Vec<Candidate> {
        self.asked_elsewhere += 1;
        self.candidates.other_zones()
    }
}

#[test]
fn other_zones_are_gathered_only_when_the_users_zone_cannot_take_the_session() {
    let agents = two_zones();
    let gather = || CountingSource {
        candidates: candidates(snapshot(&agents), "east", &image(None), NOW, TIMEOUT),
        asked_elsewhere: 0,
    };
    let mut source = gather();
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut source,
        &mut FakeRanker::fewest_sessions(),
        &mut FakeReserver::default(),
    )
    .unwrap();
    assert_eq!(report.placed, Some((id(2), Scope::SameZone)));
    assert_eq!(
        source.asked_elsewhere, 0,
        "east had room: west is never read"
    );

    let mut source = gather();
    let mut reserver = FakeReserver {
        taken: [id(1), id(2)].into(),
        ..Default::default()
    };
    let closed = Zone {
        search_alternate_zones: false,
        ..zone("east")
    };
    let closed_report = place(
        &closed,
        &image(None).demand(),
        7,
        &mut source,
        &mut FakeRanker::fewest_sessions(),
        &mut reserver,
    )
    .unwrap();
    assert_eq!(closed_report.placed, None);
    assert_eq!(
        source.asked_elsewhere, 0,
        "a closed zone never reads the others"
    );

    let mut source = gather();
    let report = place(
        &zone("east"),
        &image(None).demand(),
        7,
        &mut source,
        &mut FakeRanker::fewest_sessions(),
        &mut FakeReserver {
            taken: [id(1), id(2)].into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.placed, Some((id(3), Scope::AlternateZone)));
    assert_eq!(source.asked_elsewhere, 1);
}

#[test]
fn an_images_zone_decides_which_zones_are_read() {
    assert_eq!(
        image_zones(&image(None), "east"),
        (true, Elsewhere::AnyZone)
    );
    assert_eq!(
        image_zones(&image(Some("east")), "east"),
        (true, Elsewhere::Nowhere)
    );
    assert_eq!(
        image_zones(&image(Some("west")), "east"),
        (false, Elsewhere::Only("west"))
    );
}

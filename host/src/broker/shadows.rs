//! Shadow strategies: a zone's `shadow_strategy` ranks every placement's input beside the
//! zone's strategy, on a thread of its own, and its first choice is compared with the zone
//! strategy's. Placements never wait for it: a full queue drops the case (and counts it).
//!
//! The report is this process's (several managers each count their own placements).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::now_ms;
use crate::domain::timestamp::rfc3339;
use crate::metrics::Metrics;
use crate::placement::ShadowCase;
use crate::plugins::Registry;

/// Cases waiting for the shadow thread; one more is dropped.
const QUEUE: usize = 256;
/// Call times kept for the percentiles.
const TIMES_KEPT: usize = 1_000;
/// Disagreements kept, newest last.
const DISAGREEMENTS_KEPT: usize = 100;
/// Candidates of each ranking kept with a disagreement.
const RANKING_SHOWN: usize = 10;
/// Pairs of (strategy, shadow) a zone keeps tallies of; the least recently counted goes.
const PAIRS_KEPT: usize = 4;

/// A zone, its strategy and its shadow: what a tally counts.
type Pair = (String, String, String);

/// The shadow queue and what its thread found, by zone and pair of strategies.
pub(super) struct Shadows {
    queue: SyncSender<ShadowCase>,
    reports: Arc<Mutex<HashMap<Pair, Tally>>>,
    metrics: Arc<Metrics>,
}

/// What one zone's shadow did beside one strategy, since this process first saw the pair.
/// A case of a placement that read the zone before it changed counts in its own pair's
/// tally, never in the new one's.
#[derive(Debug)]
struct Tally {
    counted: Instant,
    calls: u64,
    agreed: u64,
    faults: u64,
    dropped: u64,
    last_fault: Option<String>,
    times: VecDeque<Duration>,
    disagreements: VecDeque<DisagreementView>,
}

impl Tally {
    /// The tally of `case`'s zone and strategies, made if new (then the zone's least recently
    /// counted pair beyond [`PAIRS_KEPT`] is forgotten).
    fn of<'a>(reports: &'a mut HashMap<Pair, Tally>, case: &ShadowCase) -> &'a mut Tally {
        let key = (
            case.zone.clone(),
            case.strategy.clone(),
            case.shadow.clone(),
        );
        if !reports.contains_key(&key) {
            let zone_pairs = reports.iter().filter(|(pair, _)| pair.0 == case.zone);
            if zone_pairs.clone().count() >= PAIRS_KEPT
                && let Some(oldest) = zone_pairs
                    .min_by_key(|(_, tally)| tally.counted)
                    .map(|(pair, _)| pair.clone())
            {
                reports.remove(&oldest);
            }
        }
        let tally = reports.entry(key).or_insert_with(|| Tally {
            counted: Instant::now(),
            calls: 0,
            agreed: 0,
            faults: 0,
            dropped: 0,
            last_fault: None,
            times: VecDeque::new(),
            disagreements: VecDeque::new(),
        });
        tally.counted = Instant::now();
        tally
    }
}

/// One placement on which the shadow chose another first candidate.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DisagreementView {
    pub at: String,
    /// What was placed: cores, memory (bytes), GPUs, and whether the candidates were in the
    /// user's zone.
    pub cores: f64,
    pub memory: u64,
    pub gpus: u32,
    pub same_zone: bool,
    /// How many candidates were ranked.
    pub candidates: usize,
    /// The zone strategy's first candidates (agent or server ids), best first.
    pub strategy_ranking: Vec<Uuid>,
    /// The shadow's first candidates, best first.
    pub shadow_ranking: Vec<Uuid>,
}

/// `GET /zones/{name}/shadow`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ShadowView {
    pub zone: String,
    /// The zone's strategy.
    pub strategy: String,
    /// The shadow strategy; `null` when the zone has none.
    pub shadow_strategy: Option<String>,
    /// Shadow calls made (each on one placement's input).
    pub calls: u64,
    /// Calls whose first choice was the zone strategy's.
    pub agreed: u64,
    /// `agreed / (calls - faults)`; `null` before the first answer.
    pub agreement_rate: Option<f64>,
    /// Calls that failed (trap, deadline, invalid ranking, ...).
    pub faults: u64,
    pub last_fault: Option<String>,
    /// Cases dropped because the shadow fell behind (placements never wait for it).
    pub dropped: u64,
    /// Call time percentiles over the last 1,000 calls, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The last 100 disagreements, oldest first.
    pub disagreements: Vec<DisagreementView>,
}

impl Shadows {
    pub fn start(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Shadows {
        let (queue, cases) = std::sync::mpsc::sync_channel(QUEUE);
        let reports = Arc::new(Mutex::new(HashMap::new()));
        let worker = Worker {
            registry,
            metrics: metrics.clone(),
            reports: reports.clone(),
        };
        // Ends when the broker (the queue's sender) is dropped.
        std::thread::Builder::new()
            .name("shadow-strategies".into())
            .spawn(move || worker.run(cases))
            .expect("spawn the shadow strategy thread");
        Shadows {
            queue,
            reports,
            metrics,
        }
    }

    /// Queue `case` for its shadow; never waits.
    pub fn offer(&self, case: ShadowCase) {
        match self.queue.try_send(case) {
            Ok(()) => {}
            Err(TrySendError::Full(case) | TrySendError::Disconnected(case)) => {
                self.metrics
                    .shadow_call(&case.zone, &case.shadow, "dropped", None);
                Tally::of(&mut lock(&self.reports), &case).dropped += 1;
            }
        }
    }

    /// The report of `zone`, whose strategy and shadow are as given.
    pub fn report(&self, zone: &str, strategy: &str, shadow: Option<&str>) -> ShadowView {
        let reports = lock(&self.reports);
        let tally = shadow.and_then(|shadow| {
            reports.get(&(zone.to_string(), strategy.to_string(), shadow.to_string()))
        });
        let mut view = ShadowView {
            zone: zone.to_string(),
            strategy: strategy.to_string(),
            shadow_strategy: shadow.map(str::to_string),
            calls: 0,
            agreed: 0,
            agreement_rate: None,
            faults: 0,
            last_fault: None,
            dropped: 0,
            p50_ms: None,
            p99_ms: None,
            disagreements: Vec::new(),
        };
        if let Some(tally) = tally {
            let answered = tally.calls - tally.faults;
            let mut times: Vec<Duration> = tally.times.iter().copied().collect();
            times.sort_unstable();
            view.calls = tally.calls;
            view.agreed = tally.agreed;
            view.agreement_rate = (answered > 0).then(|| tally.agreed as f64 / answered as f64);
            view.faults = tally.faults;
            view.last_fault = tally.last_fault.clone();
            view.dropped = tally.dropped;
            view.p50_ms = percentile(&times, 0.50).map(millis);
            view.p99_ms = percentile(&times, 0.99).map(millis);
            view.disagreements = tally.disagreements.iter().cloned().collect();
        }
        view
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of `sorted` (nearest rank), if any.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
    Some(sorted[rank.min(last)])
}

/// The shadow thread: ranks each case with its shadow and tallies the outcome.
struct Worker {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    reports: Arc<Mutex<HashMap<Pair, Tally>>>,
}

impl Worker {
    fn run(self, cases: Receiver<ShadowCase>) {
        for mut case in cases {
            let _span =
                tracing::info_span!("shadow", zone = case.zone, strategy = case.shadow).entered();
            let mut candidates = std::mem::take(&mut case.candidates);
            let started = Instant::now();
            let result = self
                .registry
                .rank(&case.shadow, &case.request, &mut candidates);
            let took = started.elapsed();
            let outcome = match &result {
                Ok(ranking) if case.agrees_with(ranking) => "agreed",
                Ok(_) => "disagreed",
                Err(_) => "fault",
            };
            self.metrics
                .shadow_call(&case.zone, &case.shadow, outcome, Some(took));
            let mut reports = lock(&self.reports);
            let tally = Tally::of(&mut reports, &case);
            tally.calls += 1;
            if tally.times.len() == TIMES_KEPT {
                tally.times.pop_front();
            }
            tally.times.push_back(took);
            match result {
                Ok(_) if outcome == "agreed" => tally.agreed += 1,
                Ok(ranking) => {
                    if tally.disagreements.len() == DISAGREEMENTS_KEPT {
                        tally.disagreements.pop_front();
                    }
                    tally.disagreements.push_back(DisagreementView {
                        at: rfc3339(now_ms()),
                        cores: case.request.cores,
                        memory: case.request.memory,
                        gpus: case.request.gpus,
                        same_zone: case.request.same_zone,
                        candidates: candidates.len(),
                        strategy_ranking: case.first_agents(&case.ranking, RANKING_SHOWN),
                        shadow_ranking: case.first_agents(&ranking, RANKING_SHOWN),
                    });
                }
                Err(error) => {
                    tally.faults += 1;
                    tally.last_fault = Some(error.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let times: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&times, 0.5), Some(ms(50)));
        assert_eq!(percentile(&times, 0.99), Some(ms(99)));
        assert_eq!(percentile(&[ms(7)], 0.99), Some(ms(7)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}

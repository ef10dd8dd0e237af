//! Prometheus metrics of placement and plugins, served as text at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the broker keeps.
pub struct Metrics {
    registry: Registry,
    placements: Family<Labels, Counter>,
    no_capacity: Family<Labels, Counter>,
    fallbacks: Family<Labels, Counter>,
    strategy_faults: Family<Labels, Counter>,
    placement_seconds: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("zonebroker");
        let placements = Family::default();
        let no_capacity = Family::default();
        let fallbacks = Family::default();
        let strategy_faults = Family::default();
        // 50 µs to about 1.6 s.
        let placement_seconds =
            Family::new_with_constructor(placement_histogram as fn() -> Histogram);
        registry.register(
            "placements",
            "Sessions placed, by the user's zone, the strategy and whether the agent was in that zone",
            placements.clone(),
        );
        registry.register(
            "placement_no_capacity",
            "Session requests refused because no agent had room, by the user's zone",
            no_capacity.clone(),
        );
        registry.register(
            "placement_fallbacks",
            "Placements ranked by the built-in least-load because the zone's strategy failed",
            fallbacks.clone(),
        );
        registry.register(
            "strategy_faults",
            "Strategy plugin calls that failed, by strategy and failure code",
            strategy_faults.clone(),
        );
        registry.register(
            "placement_duration_seconds",
            "Time to place a session (ranking and reserving, before the durable commit), by zone",
            placement_seconds.clone(),
        );
        Metrics {
            registry,
            placements,
            no_capacity,
            fallbacks,
            strategy_faults,
            placement_seconds,
        }
    }
}

fn placement_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    pub fn placed(&self, zone: &str, strategy: &str, scope: &str) {
        self.placements
            .get_or_create(&vec![
                ("zone", zone.to_string()),
                ("strategy", strategy.to_string()),
                ("scope", scope.to_string()),
            ])
            .inc();
    }

    pub fn no_capacity(&self, zone: &str) {
        self.no_capacity
            .get_or_create(&vec![("zone", zone.to_string())])
            .inc();
    }

    pub fn fell_back(&self, zone: &str, strategy: &str, code: &str) {
        self.fallbacks
            .get_or_create(&vec![
                ("zone", zone.to_string()),
                ("strategy", strategy.to_string()),
            ])
            .inc();
        self.strategy_faults
            .get_or_create(&vec![
                ("strategy", strategy.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }

    pub fn placement_took(&self, zone: &str, seconds: f64) {
        self.placement_seconds
            .get_or_create(&vec![("zone", zone.to_string())])
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

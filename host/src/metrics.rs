//! Prometheus metrics of placement and plugins, served as text at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    vms_created: Family<Labels, Counter>,
    vms_destroyed: Family<Labels, Counter>,
    provider_errors: Family<Labels, Counter>,
    available_sessions: Family<Labels, Gauge>,
    config_failing: Family<Labels, Gauge>,
    unmanaged_vms: Family<Labels, Gauge>,
    autoscale_passes: Family<Labels, Counter>,
    feed_revision: Gauge,
    feed_applied: Counter,
    feed_read_errors: Counter,
    config_leases_held: Family<Labels, Gauge>,
    plugin_active: Family<Labels, Gauge>,
    shadow_calls: Family<Labels, Counter>,
    shadow_seconds: Family<Labels, Histogram>,
    /// The version each uploaded plugin's `plugin_active` series names now.
    active_versions: std::sync::Mutex<std::collections::HashMap<String, String>>,
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
        let vms_created = Family::default();
        let vms_destroyed = Family::default();
        let provider_errors = Family::default();
        let available_sessions = Family::default();
        let config_failing = Family::default();
        let unmanaged_vms = Family::default();
        let autoscale_passes = Family::default();
        registry.register(
            "autoscale_vms_created",
            "VMs created through a provider, by AutoScale config",
            vms_created.clone(),
        );
        registry.register(
            "autoscale_vms_destroyed",
            "VMs destroyed, by AutoScale config and reason (surplus, spent, drained, provision_timeout, lost, orphan, duplicate)",
            vms_destroyed.clone(),
        );
        registry.register(
            "autoscale_provider_errors",
            "Failed provider or script-generator calls, by AutoScale config and call",
            provider_errors.clone(),
        );
        registry.register(
            "autoscale_available_sessions",
            "Free session slots over an AutoScale config's live servers at its last pass",
            available_sessions.clone(),
        );
        registry.register(
            "autoscale_config_failing",
            "1 while an AutoScale config's last pass failed (see its `last_error`), else 0",
            config_failing.clone(),
        );
        registry.register(
            "autoscale_unmanaged_vms",
            "VMs an AutoScale config's last pass left alone (not this installation's) or could not destroy",
            unmanaged_vms.clone(),
        );
        registry.register(
            "autoscale_passes",
            "Reconcile passes run, by AutoScale config and kind (full: on the tick, with the cloud's listing; demand: after a session, check-in or save)",
            autoscale_passes.clone(),
        );
        let feed_revision = Gauge::default();
        let feed_applied = Counter::default();
        let feed_read_errors = Counter::default();
        let config_leases_held = Family::default();
        registry.register(
            "change_feed_revision",
            "The last revision of the shared database's change feed this process has applied",
            feed_revision.clone(),
        );
        registry.register(
            "change_feed_applied",
            "Records other processes changed that this process applied to its view",
            feed_applied.clone(),
        );
        registry.register(
            "change_feed_read_errors",
            "Reads of the change feed that failed (the view falls behind until one succeeds)",
            feed_read_errors.clone(),
        );
        registry.register(
            "autoscale_config_lease_held",
            "1 while this process holds an AutoScale config's lease (it reconciles the config), else 0",
            config_leases_held.clone(),
        );
        let plugin_active = Family::default();
        registry.register(
            "plugin_active_version",
            "1 for the version of each uploaded plugin this process calls now (the first 12 hex digits of its sha256)",
            plugin_active.clone(),
        );
        let shadow_calls = Family::default();
        let shadow_seconds = Family::new_with_constructor(placement_histogram as fn() -> Histogram);
        registry.register(
            "shadow_calls",
            "Shadow strategy calls, by zone, shadow strategy and outcome (agreed, disagreed: first choice against the zone's strategy; fault; dropped: the shadow queue was full)",
            shadow_calls.clone(),
        );
        registry.register(
            "shadow_call_duration_seconds",
            "Time of one shadow strategy call, by zone",
            shadow_seconds.clone(),
        );
        Metrics {
            shadow_calls,
            shadow_seconds,
            plugin_active,
            active_versions: Default::default(),
            feed_revision,
            feed_applied,
            feed_read_errors,
            config_leases_held,
            unmanaged_vms,
            autoscale_passes,
            vms_created,
            vms_destroyed,
            provider_errors,
            available_sessions,
            config_failing,
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

    /// One shadow call of `shadow` in `zone` with its `outcome` (and time, if it ran).
    pub fn shadow_call(&self, zone: &str, shadow: &str, outcome: &str, took: Option<Duration>) {
        self.shadow_calls
            .get_or_create(&vec![
                ("zone", zone.to_string()),
                ("strategy", shadow.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        if let Some(took) = took {
            self.shadow_seconds
                .get_or_create(&vec![("zone", zone.to_string())])
                .observe(took.as_secs_f64());
        }
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

    pub fn vm_created(&self, config: &str) {
        self.vms_created
            .get_or_create(&vec![("config", config.to_string())])
            .inc();
    }

    pub fn vm_destroyed(&self, config: &str, reason: &str) {
        self.vms_destroyed
            .get_or_create(&vec![
                ("config", config.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    pub fn provider_error(&self, config: &str, call: &str) {
        self.provider_errors
            .get_or_create(&vec![
                ("config", config.to_string()),
                ("call", call.to_string()),
            ])
            .inc();
    }

    /// What one reconcile pass of `config` found.
    pub fn autoscale_pass(
        &self,
        config: &str,
        kind: &str,
        available: u32,
        failing: bool,
        unmanaged: usize,
    ) {
        self.autoscale_passes
            .get_or_create(&vec![
                ("config", config.to_string()),
                ("kind", kind.to_string()),
            ])
            .inc();
        let labels = vec![("config", config.to_string())];
        self.available_sessions
            .get_or_create(&labels)
            .set(i64::from(available));
        self.config_failing
            .get_or_create(&labels)
            .set(i64::from(failing));
        self.unmanaged_vms
            .get_or_create(&labels)
            .set(unmanaged as i64);
    }

    /// The change feed was read up to `revision`, and `applied` records applied.
    pub fn feed_read(&self, revision: i64, applied: usize) {
        self.feed_revision.set(revision);
        self.feed_applied.inc_by(applied as u64);
    }

    pub fn feed_read_failed(&self) {
        self.feed_read_errors.inc();
    }

    /// Whether this process holds `config`'s lease.
    pub fn config_lease(&self, config: &str, held: bool) {
        self.config_leases_held
            .get_or_create(&vec![("config", config.to_string())])
            .set(i64::from(held));
    }

    /// Uploaded plugin `plugin` runs `version` in this process from now on.
    pub fn plugin_active(&self, plugin: &str, version: &str) {
        let labels = |version: String| vec![("plugin", plugin.to_string()), ("version", version)];
        let mut active = self
            .active_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = active.insert(plugin.to_string(), version.to_string()) {
            self.plugin_active.remove(&labels(previous));
        }
        self.plugin_active
            .get_or_create(&labels(version.to_string()))
            .set(1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

//! Calling a load-balancing strategy: synchronous, on the placement hot path, with the
//! candidates lent to the guest and the ranking checked.

use zonebroker_core::domain::ranking::{CandidateColumns, PlacementRequest, Ranking};
use zonebroker_core::domain::text::cap as cap_text;

use super::call::classify;
use super::error::CallError;
use super::kind::PluginKind;
use super::load::{Instantiator, LoadedPlugin};
use super::runtime::PluginRuntime;
use super::sandbox::CallOutput;
use super::wit::{self, with_wit_candidates};

impl PluginRuntime {
    /// Rank `candidates` for `request` with a strategy plugin, and check the answer.
    ///
    /// The columns are lent to the call and returned intact, so a caller can fall back to
    /// another strategy on failure without rebuilding them.
    pub fn rank(
        &self,
        plugin: &LoadedPlugin,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, CallError> {
        let (result, output) = self.rank_with_output(plugin, request, candidates);
        output.emit();
        result
    }

    /// [`rank`](Self::rank), also answering what the plugin printed and logged (for
    /// `zonebroker plugin check`). Emits nothing to `tracing`.
    pub fn rank_with_output(
        &self,
        plugin: &LoadedPlugin,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> (Result<Ranking, CallError>, CallOutput) {
        let Instantiator::Strategy(pre) = &plugin.instance else {
            let error = CallError::WrongKind {
                expected: PluginKind::Strategy,
                actual: plugin.kind,
            };
            return (Err(error), CallOutput::default());
        };
        let limits = &self.limits_of(plugin);
        let mut store = self.new_store(limits);
        let n = candidates.len();
        let request: wit::strategy::zonebroker::plugin::placement_types::PlacementRequest =
            request.into();
        let result = with_wit_candidates(candidates, |candidates| {
            let instance = pre.instantiate(&mut store)?;
            instance
                .zonebroker_plugin_balancer()
                .call_rank(&mut store, request, candidates)
        });
        let output = store.data_mut().take_output();
        let result = match result {
            Ok(Ok(indices)) => Ranking::validate(indices, n).map_err(CallError::from),
            Ok(Err(message)) => Err(CallError::Guest(cap_text(message))),
            Err(error) => Err(classify(error, limits, &output)),
        };
        (result, output)
    }
}

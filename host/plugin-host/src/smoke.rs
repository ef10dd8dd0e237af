//! The smoke call every upload must pass before it is stored (and `zonebroker plugin check`
//! shows): one call per kind with synthetic inputs.

use zonebroker_core::domain::provider::ProviderInfo;
use zonebroker_core::domain::ranking::{CandidateColumns, Ranking};
use zonebroker_core::domain::script::Os;

use super::error::CallError;
use super::http::Endpoints;
use super::kind::PluginKind;
use super::load::LoadedPlugin;
use super::runtime::PluginRuntime;
use super::sandbox::CallOutput;

/// What a smoke call produced.
#[derive(Debug)]
pub enum SmokeReport {
    /// A strategy's ranking of the synthetic candidates.
    Ranking {
        candidates: CandidateColumns,
        ranking: Ranking,
        output: CallOutput,
    },
    /// A generator's rendering of the smoke template.
    Script(String),
    /// A provider's description of itself.
    Provider(ProviderInfo),
}

impl PluginRuntime {
    /// The call every upload must pass before it is stored: a strategy ranks a synthetic
    /// candidate list validly; a generator renders a template that uses every variable.
    /// Answers what the plugin produced, for `zonebroker plugin check`.
    pub fn smoke_test(&self, plugin: &LoadedPlugin) -> Result<SmokeReport, CallError> {
        match plugin.kind {
            PluginKind::Strategy => {
                let mut candidates = synthetic::candidates();
                let (result, output) =
                    self.rank_with_output(plugin, &synthetic::request(), &mut candidates);
                Ok(SmokeReport::Ranking {
                    candidates,
                    ranking: result?,
                    output,
                })
            }
            PluginKind::ScriptGenerator => {
                let rendered = self.render(
                    plugin,
                    Os::Linux,
                    synthetic::TEMPLATE,
                    &synthetic::variables(),
                )?;
                match rendered {
                    Ok(script) => Ok(SmokeReport::Script(script)),
                    Err(error) => Err(CallError::Guest(format!(
                        "the smoke template did not render: {error}"
                    ))),
                }
            }
            PluginKind::VmProvider => {
                // Providers are async: their smoke call (`describe`, no network) runs on a
                // small runtime of its own, as this is called off the async workers.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CallError::Host(e.to_string()))?;
                let endpoints = Endpoints::none();
                let provider = self.provider(plugin, &endpoints)?;
                let info = runtime.block_on(provider.describe())?;
                Ok(SmokeReport::Provider(info))
            }
        }
    }
}

/// The synthetic inputs of [`PluginRuntime::smoke_test`].
mod synthetic {
    use zonebroker_core::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};

    pub fn request() -> PlacementRequest {
        PlacementRequest {
            cores: 1.0,
            memory: 2 << 30,
            gpus: 0,
            user_key: 0x5eed,
            same_zone: true,
        }
    }

    /// Eight agents with varied sizes, loads and sessions (one with nothing known).
    pub fn candidates() -> CandidateColumns {
        (0..8u32)
            .map(|i| CandidateRow {
                cores_total: if i == 7 { 0.0 } else { f64::from(4 << (i % 3)) },
                cores_reserved: f64::from(i % 4),
                memory_total: if i == 7 {
                    0
                } else {
                    (16u64 << 30) * u64::from(1 + i % 2)
                },
                memory_reserved: u64::from(i) << 30,
                gpus_total: i % 2,
                gpus_reserved: 0,
                sessions: i % 5,
                max_sessions: 10,
                user_sessions: i % 2,
                cpu_load: (i as f32) / 10.0,
                memory_load: ((7 - i) as f32) / 10.0,
            })
            .collect()
    }

    /// Every variable, and both kinds of literal brace.
    pub const TEMPLATE: &str = "#!/bin/sh\n# {{smoke}}\n\
        echo {ad_join_credential} {checkin_jwt} {connection_username} {connection_password} \
        {domain} {upstream_auth_address}\n";

    pub fn variables() -> Vec<(String, String)> {
        [
            ("ad_join_credential", "Pa55word"),
            ("checkin_jwt", "eyJ0eXAiOiJKV1QifQ.e30.c2ln"),
            ("connection_username", "kasm"),
            ("connection_password", "secret"),
            ("domain", "example.test"),
            ("upstream_auth_address", "broker.example.test"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
    }
}

//! Host bindings of the WIT worlds, generated in one place, and the host side of our own
//! imports (`log`, the types-only interfaces).

use super::sandbox::{CallState, LogLevel};
use zonebroker_core::domain::ranking::{CandidateColumns, Columns, PlacementRequest};
use zonebroker_core::domain::script::{Os, TemplateError, TemplateErrorKind};

pub(crate) mod strategy {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "zonebroker:plugin/strategy",
    });
}

pub(crate) mod generator {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "zonebroker:plugin/script-generator",
    });
}

use strategy::zonebroker::plugin::placement_types as wit_placement;

macro_rules! impl_log_host {
    ($world:ident) => {
        impl $world::zonebroker::plugin::log::Host for CallState {
            fn log(&mut self, level: $world::zonebroker::plugin::log::Level, message: String) {
                use $world::zonebroker::plugin::log::Level;
                let level = match level {
                    Level::Trace => LogLevel::Trace,
                    Level::Debug => LogLevel::Debug,
                    Level::Info => LogLevel::Info,
                    Level::Warn => LogLevel::Warn,
                    Level::Error => LogLevel::Error,
                };
                self.record_log(level, message);
            }
        }
    };
}
impl_log_host!(strategy);
impl_log_host!(generator);

impl strategy::zonebroker::plugin::placement_types::Host for CallState {}
impl generator::zonebroker::plugin::types::Host for CallState {}
impl generator::zonebroker::plugin::script_types::Host for CallState {}

impl From<&PlacementRequest> for wit_placement::PlacementRequest {
    fn from(r: &PlacementRequest) -> Self {
        wit_placement::PlacementRequest {
            cores: r.cores,
            memory: r.memory,
            gpus: r.gpus,
            user_key: r.user_key,
            same_zone: r.same_zone,
        }
    }
}

/// Run `f` with `columns` lent as the WIT record, moving the vectors in and back out rather
/// than copying them: the columns are the bulk of a strategy call's input.
pub(crate) fn with_wit_candidates<R>(
    columns: &mut CandidateColumns,
    f: impl FnOnce(&wit_placement::Candidates) -> R,
) -> R {
    columns.lend(|c| {
        let wit = wit_placement::Candidates {
            cores_total: c.cores_total,
            cores_reserved: c.cores_reserved,
            memory_total: c.memory_total,
            memory_reserved: c.memory_reserved,
            gpus_total: c.gpus_total,
            gpus_reserved: c.gpus_reserved,
            sessions: c.sessions,
            max_sessions: c.max_sessions,
            user_sessions: c.user_sessions,
            cpu_load: c.cpu_load,
            memory_load: c.memory_load,
        };
        let result = f(&wit);
        let back = Columns {
            cores_total: wit.cores_total,
            cores_reserved: wit.cores_reserved,
            memory_total: wit.memory_total,
            memory_reserved: wit.memory_reserved,
            gpus_total: wit.gpus_total,
            gpus_reserved: wit.gpus_reserved,
            sessions: wit.sessions,
            max_sessions: wit.max_sessions,
            user_sessions: wit.user_sessions,
            cpu_load: wit.cpu_load,
            memory_load: wit.memory_load,
        };
        (back, result)
    })
}

impl From<Os> for generator::zonebroker::plugin::types::Os {
    fn from(os: Os) -> Self {
        match os {
            Os::Linux => Self::Linux,
            Os::Windows => Self::Windows,
        }
    }
}

impl From<generator::zonebroker::plugin::script_types::RenderError> for TemplateError {
    fn from(e: generator::zonebroker::plugin::script_types::RenderError) -> Self {
        use generator::zonebroker::plugin::script_types::RenderErrorKind as Kind;
        TemplateError {
            kind: match e.kind {
                Kind::UnknownVariable => TemplateErrorKind::UnknownVariable,
                Kind::UnbalancedBrace => TemplateErrorKind::UnbalancedBrace,
                Kind::UnknownFilter => TemplateErrorKind::UnknownFilter,
                Kind::UnsafeValue => TemplateErrorKind::UnsafeValue,
            },
            offset: e.offset,
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }
}

pub(crate) mod provider {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "zonebroker:plugin/vm-provider",
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
    });
}

impl_log_host!(provider);
impl provider::zonebroker::plugin::types::Host for CallState {}
impl provider::zonebroker::plugin::provider_types::Host for CallState {}

/// Conversions between the provider world's records and the domain's.
pub(crate) mod provider_convert {
    use super::provider::zonebroker::plugin::{provider_types as wit, types::Pair};
    use zonebroker_core::domain::provider as domain;
    use zonebroker_core::domain::script::Os;

    pub fn pairs(pairs: &[(String, String)]) -> Vec<Pair> {
        pairs
            .iter()
            .map(|(name, value)| Pair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn unpairs(pairs: Vec<Pair>) -> Vec<(String, String)> {
        pairs.into_iter().map(|p| (p.name, p.value)).collect()
    }

    pub fn info(info: wit::ProviderInfo) -> domain::ProviderInfo {
        domain::ProviderInfo {
            name: info.name,
            description: info.description,
            settings: info
                .settings
                .into_iter()
                .map(|s| domain::SettingSpec {
                    name: s.name,
                    description: s.description,
                    required: s.required,
                    secret: s.secret,
                    default_value: s.default_value,
                })
                .collect(),
        }
    }

    pub fn validated(v: wit::ValidatedSettings) -> domain::ValidatedSettings {
        domain::ValidatedSettings {
            endpoints: v.endpoints,
            max_instances: v.max_instances,
        }
    }

    pub fn spec(spec: &domain::VmSpec) -> wit::VmSpec {
        wit::VmSpec {
            server_id: spec.server_id.clone(),
            hostname: spec.hostname.clone(),
            idempotency_key: spec.idempotency_key.clone(),
            os: match spec.os {
                Os::Linux => super::provider::zonebroker::plugin::types::Os::Linux,
                Os::Windows => super::provider::zonebroker::plugin::types::Os::Windows,
            },
            startup_script: spec.startup_script.clone(),
            tags: pairs(&spec.tags),
        }
    }

    pub fn vm(vm: wit::Vm) -> domain::Vm {
        domain::Vm {
            instance_id: vm.instance_id,
            state: match vm.state {
                wit::VmState::Pending => domain::VmState::Pending,
                wit::VmState::Running => domain::VmState::Running,
                wit::VmState::Stopping => domain::VmState::Stopping,
                wit::VmState::Stopped => domain::VmState::Stopped,
                wit::VmState::Terminating => domain::VmState::Terminating,
                wit::VmState::Terminated => domain::VmState::Terminated,
                wit::VmState::Unknown => domain::VmState::Unknown,
            },
            private_address: vm.private_address,
            public_address: vm.public_address,
            tags: unpairs(vm.tags),
        }
    }

    /// A provider's error, its texts capped (a plugin's message can be any size).
    pub fn error(e: wit::ProviderError) -> domain::ProviderError {
        use zonebroker_core::domain::text::cap;
        match e {
            wit::ProviderError::InvalidConfig(s) => domain::ProviderError::InvalidConfig {
                setting: cap(s.setting),
                message: cap(s.message),
            },
            wit::ProviderError::Auth(m) => domain::ProviderError::Auth(cap(m)),
            wit::ProviderError::Quota(m) => domain::ProviderError::Quota(cap(m)),
            wit::ProviderError::Transient(m) => domain::ProviderError::Transient(cap(m)),
            wit::ProviderError::NotFound(m) => domain::ProviderError::NotFound(cap(m)),
            wit::ProviderError::Other(m) => domain::ProviderError::Other(cap(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::provider::zonebroker::plugin::provider_types as wit;
    use super::provider_convert;
    use zonebroker_core::domain::provider::ProviderError;
    use zonebroker_core::domain::text::TEXT_CAP;

    #[test]
    fn a_providers_error_text_is_capped_at_the_plugin_boundary() {
        let huge = "e".repeat(100 * TEXT_CAP);
        let limit = TEXT_CAP + "… (truncated)".len();
        let ProviderError::Other(message) =
            provider_convert::error(wit::ProviderError::Other(huge.clone()))
        else {
            panic!("the kind is kept");
        };
        assert!(message.len() <= limit, "{} bytes", message.len());
        let ProviderError::InvalidConfig { setting, message } =
            provider_convert::error(wit::ProviderError::InvalidConfig(wit::SettingError {
                setting: huge.clone(),
                message: huge,
            }))
        else {
            panic!("the kind is kept");
        };
        assert!(setting.len() <= limit && message.len() <= limit);
    }
}

//! Every way loading or calling a plugin can fail, as typed errors.

use std::time::Duration;

use super::PluginKind;
use zonebroker_core::domain::ranking::RankingError;

/// Why bytes could not become a loaded plugin. Each is the uploader's problem (a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not WebAssembly: the bytes do not start with the wasm magic number")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build for `wasm32-wasip2` (or run `wasm-tools component new`)"
    )]
    NotAComponent,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "the component did not compile within {limit:?} (the server's --max-compile-time); it was not stored"
    )]
    CompileTimeout { limit: Duration },
    #[error(
        "the component implements no zonebroker world: it exports {exports:?}, but a plugin exports one of `zonebroker:plugin/balancer`, `zonebroker:plugin/provider` or `zonebroker:plugin/generator`"
    )]
    UnknownWorld { exports: Vec<String> },
    #[error("the component exports more than one plugin interface: {exports:?}")]
    AmbiguousWorld { exports: Vec<String> },
    #[error("the component is a {actual} plugin, expected a {expected} plugin")]
    WrongKind {
        expected: PluginKind,
        actual: PluginKind,
    },
    #[error("the component imports `{import}`, which a {kind} plugin may not use")]
    ForbiddenImport { kind: PluginKind, import: String },
    #[error("the component cannot be linked: {0}")]
    Link(String),
    #[error("{0}")]
    Unsupported(String),
}

impl LoadError {
    /// A stable machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::NotWasm => "not_wasm",
            LoadError::NotAComponent => "not_a_component",
            LoadError::Compile(_) => "compile_failed",
            LoadError::CompileTimeout { .. } => "compile_timeout",
            LoadError::UnknownWorld { .. } => "unknown_world",
            LoadError::AmbiguousWorld { .. } => "ambiguous_world",
            LoadError::WrongKind { .. } => "wrong_kind",
            LoadError::ForbiddenImport { .. } => "forbidden_import",
            LoadError::Link(_) => "link_failed",
            LoadError::Unsupported(_) => "unsupported_kind",
        }
    }
}

/// Why a call into a plugin produced no usable answer. The host stays healthy after each.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("used up its CPU budget of {fuel} fuel units")]
    CpuBudgetExhausted { fuel: u64 },
    #[error("ran past its deadline of {deadline:?}")]
    DeadlineExceeded { deadline: Duration },
    #[error("tried to grow its memory to {requested} bytes, over the cap of {cap} bytes")]
    MemoryLimitExceeded { requested: usize, cap: usize },
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("trapped: {trap}{}", stderr_suffix(.stderr))]
    Trap { trap: String, stderr: String },
    #[error("answered with an error: {0}")]
    Guest(String),
    #[error("answered with an invalid ranking: {0}")]
    InvalidRanking(#[from] RankingError),
    #[error("is a {actual} plugin, not a {expected} plugin")]
    WrongKind {
        expected: PluginKind,
        actual: PluginKind,
    },
    #[error("could not start: every sandbox slot is in use")]
    Busy,
    #[error("failed in the host: {0}")]
    Host(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {stderr})")
    }
}

impl CallError {
    /// A stable machine-readable code for logs, metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::CpuBudgetExhausted { .. } => "cpu_budget_exhausted",
            CallError::DeadlineExceeded { .. } => "deadline_exceeded",
            CallError::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            CallError::StackOverflow => "stack_overflow",
            CallError::Trap { .. } => "trap",
            CallError::Guest(_) => "guest_error",
            CallError::InvalidRanking(_) => "invalid_ranking",
            CallError::WrongKind { .. } => "wrong_kind",
            CallError::Busy => "busy",
            CallError::Host(_) => "host_error",
        }
    }
}

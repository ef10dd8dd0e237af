//! Log lines to the host.
//!
//! Inside a component, lines go through the `zonebroker:plugin/log` import to the host's
//! `tracing` logs (size-capped per call). In a native `cargo test`, they go to stderr.
//! Never log secret settings.

#[cfg(target_arch = "wasm32")]
macro_rules! import_level {
    ($import:ident, $level:expr) => {
        match $level {
            Level::Trace => $import::Level::Trace,
            Level::Debug => $import::Level::Debug,
            Level::Info => $import::Level::Info,
            Level::Warn => $import::Level::Warn,
            Level::Error => $import::Level::Error,
        }
    };
}

/// How important a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Record one line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(all(target_arch = "wasm32", feature = "strategy"))]
    {
        use crate::__bindings::strategy::zonebroker::plugin::log as import;
        import::log(import_level!(import, level), message);
    }
    #[cfg(all(
        target_arch = "wasm32",
        not(feature = "strategy"),
        feature = "provider"
    ))]
    {
        use crate::__bindings::provider::zonebroker::plugin::log as import;
        import::log(import_level!(import, level), message);
    }
    #[cfg(all(
        target_arch = "wasm32",
        not(feature = "strategy"),
        not(feature = "provider"),
        feature = "generator"
    ))]
    {
        use crate::__bindings::generator::zonebroker::plugin::log as import;
        import::log(import_level!(import, level), message);
    }
    #[cfg(not(all(
        target_arch = "wasm32",
        any(feature = "strategy", feature = "provider", feature = "generator")
    )))]
    {
        eprintln!("[{level:?}] {message}");
    }
}

/// Record a debug line.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Record an informational line.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Record a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Record an error.
pub fn error(message: &str) {
    log(Level::Error, message)
}

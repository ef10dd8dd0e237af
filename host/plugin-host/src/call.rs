//! What every call shares: a fresh store with its limits armed, the classification of a
//! failed call, and forwarding what the plugin printed to `tracing`.

use wasmtime::{Store, Trap};
use zonebroker_core::domain::text::cap as cap_text;

use super::engine::deadline_ticks;
use super::error::CallError;
use super::runtime::PluginRuntime;
use super::sandbox::{CallLimits, CallOutput, CallState, LogLevel};

impl PluginRuntime {
    /// A store for one call, its limits armed.
    pub(crate) fn new_store(&self, limits: &CallLimits) -> Store<CallState> {
        let mut store = Store::new(&self.engine, CallState::new(limits));
        store.limiter(|state| state.limiter());
        store
            .set_fuel(limits.fuel)
            .expect("the engine is configured with fuel");
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        store
    }
}

/// Turn a failed call into the typed error that says what the plugin did.
pub(crate) fn classify(
    error: wasmtime::Error,
    limits: &CallLimits,
    output: &CallOutput,
) -> CallError {
    if let Some(cap) = error.downcast_ref::<super::sandbox::MemoryCapExceeded>() {
        return CallError::MemoryLimitExceeded {
            requested: cap.requested,
            cap: cap.cap,
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return CallError::Busy;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::CpuBudgetExhausted { fuel: limits.fuel },
        Some(Trap::Interrupt) => CallError::DeadlineExceeded {
            deadline: limits.deadline,
        },
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        // Rust guests keep a shadow stack at the bottom of linear memory: overflowing it
        // wraps below address 0 and surfaces as an out-of-bounds access.
        Some(Trap::MemoryOutOfBounds) => CallError::Trap {
            trap: format!(
                "{} (a wild pointer, or a shadow-stack overflow)",
                Trap::MemoryOutOfBounds
            ),
            stderr: cap_text(output.stderr.trim().to_string()),
        },
        Some(trap) => CallError::Trap {
            trap: trap.to_string(),
            stderr: cap_text(output.stderr.trim().to_string()),
        },
        None => CallError::Host(cap_text(format!("{error:#}"))),
    }
}

impl CallOutput {
    /// Forward what the plugin printed and logged to `tracing`, in the caller's span.
    pub fn emit(&self) {
        for line in &self.log {
            let message = line.message.as_str();
            match line.level {
                LogLevel::Trace => tracing::trace!(target: "plugin", "{message}"),
                LogLevel::Debug => tracing::debug!(target: "plugin", "{message}"),
                LogLevel::Info => tracing::info!(target: "plugin", "{message}"),
                LogLevel::Warn => tracing::warn!(target: "plugin", "{message}"),
                LogLevel::Error => tracing::error!(target: "plugin", "{message}"),
            }
        }
        for line in self.stdout.lines() {
            tracing::info!(target: "plugin", stream = "stdout", "{line}");
        }
        for line in self.stderr.lines() {
            tracing::warn!(target: "plugin", stream = "stderr", "{line}");
        }
        if self.truncated {
            tracing::warn!(target: "plugin", "plugin output over the per-call cap was dropped");
        }
    }
}

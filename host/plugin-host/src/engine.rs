//! The one wasmtime `Engine`, and the ticker that drives its wall-clock deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick: the resolution of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How much of each linear memory stays resident between calls.
const KEEP_RESIDENT_BYTES: usize = 16 << 20;

/// Tables are small; keeping them resident saves an `madvise` per call.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Deadline `d` in epoch ticks (at least one).
pub(crate) fn deadline_ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

/// Build the engine every plugin is compiled for and run in.
///
/// Fuel meters the CPU budget; epochs enforce the wall-clock deadline; the pooling allocator
/// pre-reserves `max_instances` sandboxes so that a call's instantiation is a few
/// microseconds and a burst of calls cannot allocate without bound.
pub(crate) fn build_engine(
    max_instances: u32,
    max_memory_bytes: usize,
) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        // A Rust component holds its program and a few small adapter modules; a CPython or
        // StarlingMonkey one links a dozen core modules (libc, the interpreter, adapters).
        .total_core_instances(max_instances * 16)
        .total_memories(max_instances)
        .total_tables(max_instances * 4)
        .max_memory_size(max_memory_bytes)
        // Reset the first bytes of a memory by `memset` and keep them resident rather than
        // decommitting them: the next call into that slot then takes no page faults. Half of
        // a fresh strategy call's cost was page faults before this (see BENCHMARKS.md); it
        // pays off fully for guests linked with a small stack (`.cargo/config.toml`).
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until dropped.
///
/// A thread rather than a tokio task: deadlines must hold even when every runtime worker is
/// busy running plugins.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn({
                let engine = engine.weak();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

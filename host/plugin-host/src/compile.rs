//! Compiling a component: on a thread of its own, at most so many at once, and (for an
//! upload) within a deadline that wasmtime itself cannot enforce.

use wasmtime::component::Component;

use super::error::LoadError;
use super::runtime::PluginRuntime;

/// At most `capacity` compilations at once. A slot is held by the compiling thread until it
/// really ends, even when its caller stopped waiting.
pub(crate) struct CompileSlots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One held compile slot, given back on drop.
struct CompileSlot(std::sync::Arc<CompileSlots>);

impl CompileSlots {
    pub fn new(capacity: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(CompileSlots {
            free: std::sync::Mutex::new(capacity.max(1)),
            freed: std::sync::Condvar::new(),
        })
    }

    /// A slot, waiting for one until `deadline` (forever without one).
    fn acquire(
        self: &std::sync::Arc<Self>,
        deadline: Option<std::time::Instant>,
    ) -> Option<CompileSlot> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = match deadline {
                None => self.freed.wait(free).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(std::time::Instant::now())?;
                    self.freed
                        .wait_timeout(free, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        *free -= 1;
        Some(CompileSlot(self.clone()))
    }
}

impl Drop for CompileSlot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

impl PluginRuntime {
    /// How many compilations are running now, those whose caller stopped waiting included.
    pub fn compiles_running(&self) -> usize {
        let free = *self
            .compile_slots
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.config.max_concurrent_compiles.max(1) - free
    }

    /// Compile on a thread of its own, holding a compile slot until that thread ends, and
    /// stop waiting for it after `max_compile_time` (wasmtime cannot interrupt a
    /// compilation).
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        max_compile_time: Option<std::time::Duration>,
    ) -> Result<Component, LoadError> {
        let deadline = max_compile_time.map(|limit| (limit, std::time::Instant::now() + limit));
        let timeout = |limit| LoadError::CompileTimeout { limit };
        let slot = self
            .compile_slots
            .acquire(deadline.map(|(_, at)| at))
            .ok_or_else(|| timeout(deadline.expect("only a deadline gives up").0))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                let result = Component::new(&engine, &bytes);
                // Nobody may be waiting any more: then the component is dropped here.
                let _ = sender.send(result);
                drop(slot);
            })
            .map_err(|e| LoadError::Compile(format!("cannot start a compile thread: {e}")))?;
        let result = match deadline {
            None => receiver
                .recv()
                .map_err(|_| LoadError::Compile("the compile thread died".into()))?,
            Some((limit, at)) => {
                let left = at.saturating_duration_since(std::time::Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(result) => result,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err(timeout(limit)),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(LoadError::Compile("the compile thread died".into()));
                    }
                }
            }
        };
        result.map_err(|e| LoadError::Compile(format!("{e:#}")))
    }
}

//! The state of one plugin call: its resource limits, its (empty, deterministic) WASI
//! context and the capture of what it prints or logs.
//!
//! A fresh [`CallState`] lives in a fresh `Store` for exactly one call, so nothing a plugin
//! does survives into the next call.

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxView, WasiView,
};

use super::capped_output::CappedOutput;
use zonebroker_core::domain::plugin::PluginLimits;

/// Limits of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// The most linear memory the plugin may have, in bytes.
    pub memory_bytes: usize,
    /// The CPU budget, in wasmtime fuel units (about one per wasm instruction).
    pub fuel: u64,
    /// The wall-clock deadline of the call, instantiation included.
    pub deadline: Duration,
    /// The most bytes of stdout, stderr and `log` lines kept from one call.
    pub output_bytes: usize,
}

impl CallLimits {
    /// Limits for a load-balancing strategy: milliseconds on the placement hot path.
    pub const STRATEGY: CallLimits = CallLimits {
        memory_bytes: 64 << 20,
        fuel: 1_000_000_000,
        deadline: Duration::from_millis(100),
        output_bytes: 16 << 10,
    };

    /// The greatest limits any plugin may be given (`--max-plugin-memory`, ...).
    pub const MAXIMA: CallLimits = CallLimits {
        memory_bytes: 256 << 20,
        fuel: 100_000_000_000,
        deadline: Duration::from_secs(60),
        output_bytes: 64 << 10,
    };

    /// These limits with a plugin's own where it sets them.
    pub fn with_overrides(self, overrides: &PluginLimits) -> CallLimits {
        CallLimits {
            memory_bytes: overrides.memory_bytes.map_or(self.memory_bytes, |m| {
                usize::try_from(m).unwrap_or(usize::MAX)
            }),
            fuel: overrides.fuel.unwrap_or(self.fuel),
            deadline: overrides
                .deadline_ms
                .map_or(self.deadline, Duration::from_millis),
            output_bytes: self.output_bytes,
        }
    }

    /// `limits`, each no greater than these maxima (a version stored under larger maxima,
    /// or by a manager with larger ones, gets this process's).
    pub fn cap(&self, limits: &PluginLimits) -> PluginLimits {
        PluginLimits {
            memory_bytes: limits.memory_bytes.map(|m| m.min(self.memory_bytes as u64)),
            fuel: limits.fuel.map(|f| f.min(self.fuel)),
            deadline_ms: limits
                .deadline_ms
                .map(|d| d.min(self.deadline.as_millis() as u64)),
        }
    }

    /// The first of `limits` these maxima refuse: its field and why.
    pub fn refusal(&self, limits: &PluginLimits) -> Option<(&'static str, String)> {
        let fields = [
            (
                "memory_bytes",
                limits.memory_bytes,
                self.memory_bytes as u64,
            ),
            ("fuel", limits.fuel, self.fuel),
            (
                "deadline_ms",
                limits.deadline_ms,
                self.deadline.as_millis() as u64,
            ),
        ];
        fields
            .into_iter()
            .find_map(|(field, value, max)| match value {
                Some(0) => Some((field, "must be positive".to_string())),
                Some(v) if v > max => {
                    Some((field, format!("{v} is over the server's maximum of {max}")))
                }
                _ => None,
            })
    }

    /// Limits for a VM-provider call: seconds, network round trips to the cloud included.
    pub const PROVIDER: CallLimits = CallLimits {
        memory_bytes: 96 << 20,
        fuel: 20_000_000_000,
        deadline: Duration::from_secs(60),
        output_bytes: 64 << 10,
    };
}

/// A memory or table growth over the call's cap; carried through wasmtime's error so the
/// call's result can say exactly what happened.
#[derive(Debug, thiserror::Error)]
#[error("memory growth to {requested} bytes refused: the cap is {cap} bytes")]
pub(crate) struct MemoryCapExceeded {
    pub requested: usize,
    pub cap: usize,
}

/// Enforces [`CallLimits::memory_bytes`]: growth past the cap traps the call with a
/// [`MemoryCapExceeded`] rather than letting the guest see a failed allocation.
struct CallLimiter {
    memory_cap: usize,
}

/// Tables hold function references; no honest plugin needs more than this many.
const TABLE_ELEMENTS_CAP: usize = 100_000;

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                requested: desired,
                cap: self.memory_cap,
            }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_CAP && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        // A component holds a handful of core instances (the program and its adapters).
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }
}

/// A wall clock stopped at the Unix epoch: strategies must not depend on time.
struct StoppedWallClock;

impl HostWallClock for StoppedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that never advances. (Strategies and generators read it through
/// [`crate::fixed_clock`], whose timers are ready at once; providers get the real one.)
struct StoppedMonotonicClock;

impl HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The WASI context of a call, built only if the plugin touches WASI (a plain `rank` that
/// prints nothing never does, and then pays nothing for it).
struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: CappedOutput,
    stderr: CappedOutput,
}

/// The most bytes one `get-random-bytes` call may ask for (wasmtime's default is 64 MiB:
/// one call could make the host allocate that much). Interpreters seed with a few dozen.
const RANDOM_BYTES_CAP: u64 = 64 << 10;

impl WasiState {
    /// No arguments, no environment, no preopened directories (so no file can be opened),
    /// sockets that refuse to be created, closed stdin; stdout and stderr captured up to
    /// `capacity` bytes each. Deterministic: stopped clocks and a fixed random seed.
    /// Otherwise (providers, which sign requests with the time): the real clocks and
    /// randomness.
    fn build(capacity: usize, deterministic: bool) -> Self {
        let stdout = CappedOutput::new(capacity);
        let stderr = CappedOutput::new(capacity);
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(RANDOM_BYTES_CAP);
        if deterministic {
            builder
                .wall_clock(StoppedWallClock)
                .monotonic_clock(StoppedMonotonicClock)
                .secure_random(wasmtime_wasi::Deterministic::new(vec![
                    0x5a, 0x42, 0x17, 0x99,
                ]))
                .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x42, 0x17]))
                .insecure_random_seed(0x7a6f_6e65_6272_6f6b_6572);
        }
        let ctx = builder.build();
        WasiState {
            ctx,
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }
}

/// One line a plugin logged through the `log` import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// Severity of a [`LogLine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Everything a call left behind besides its result: log lines, stdout, stderr (each
/// size-capped), and whether anything was dropped for going over the cap.
#[derive(Debug, Default)]
pub struct CallOutput {
    pub log: Vec<LogLine>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// The host state of one call's `Store`.
pub(crate) struct CallState {
    limiter: CallLimiter,
    output_cap: usize,
    /// Stopped clocks and seeded randomness (strategies, generators), or real ones (providers).
    deterministic: bool,
    wasi: Option<WasiState>,
    /// Outgoing HTTP, for providers only.
    http: Option<super::http::HttpState>,
    log: Vec<LogLine>,
    log_bytes: usize,
    log_truncated: bool,
}

impl CallState {
    pub fn new(limits: &CallLimits) -> Self {
        CallState {
            limiter: CallLimiter {
                memory_cap: limits.memory_bytes,
            },
            output_cap: limits.output_bytes,
            deterministic: true,
            wasi: None,
            http: None,
            log: Vec::new(),
            log_bytes: 0,
            log_truncated: false,
        }
    }

    /// The state of a provider call: real clocks, and outgoing HTTP to `endpoints` only.
    pub fn provider(limits: &CallLimits, endpoints: &super::http::Endpoints) -> Self {
        CallState {
            deterministic: false,
            http: Some(super::http::HttpState::new(endpoints)),
            ..CallState::new(limits)
        }
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Keep one `log` line, if it fits under the cap.
    pub fn record_log(&mut self, level: LogLevel, message: String) {
        let size = message.len().max(1);
        if self.log_bytes + size > self.output_cap {
            self.log_truncated = true;
            return;
        }
        self.log_bytes += size;
        self.log.push(LogLine { level, message });
    }

    /// What the call printed and logged.
    pub fn take_output(&mut self) -> CallOutput {
        let (stdout, stderr, pipes_full) = match &self.wasi {
            Some(wasi) => {
                let (out, out_dropped) = wasi.stdout.contents();
                let (err, err_dropped) = wasi.stderr.contents();
                (
                    String::from_utf8_lossy(&out).into_owned(),
                    String::from_utf8_lossy(&err).into_owned(),
                    out_dropped || err_dropped,
                )
            }
            None => (String::new(), String::new(), false),
        };
        CallOutput {
            log: std::mem::take(&mut self.log),
            stdout,
            stderr,
            truncated: self.log_truncated || pipes_full,
        }
    }
}

impl CallState {
    fn wasi_state(&mut self) -> &mut WasiState {
        let (cap, deterministic) = (self.output_cap, self.deterministic);
        self.wasi
            .get_or_insert_with(|| WasiState::build(cap, deterministic))
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi_state();
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for CallState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        self.wasi_state();
        let CallState { wasi, http, .. } = self;
        let wasi = wasi.as_mut().expect("built above");
        let http = http
            .as_mut()
            .expect("only provider calls link wasi:http, and they have an HTTP state");
        http.view(&mut wasi.table)
    }
}

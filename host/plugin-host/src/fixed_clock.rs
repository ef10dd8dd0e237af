//! `wasi:clocks/monotonic-clock` for deterministic plugins: time stands still at zero, and
//! every timer is ready at once.
//!
//! wasmtime-wasi's own implementation sleeps in real time for `subscribe-duration`,
//! whatever clock is installed, and the host thread that blocks in `wasi:io/poll` is beyond
//! the reach of the epoch deadline: a plugin asking to sleep an hour would hold a thread for
//! an hour. Here a `time.sleep(3600)` returns at once, and a loop that waits for the clock to
//! move spins until its fuel or deadline ends the call.

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration, Instant};
use wasmtime_wasi_io::poll::{Pollable, subscribe};

/// The clock's view of a call's state: only its resource table (for the timers).
pub(crate) struct FixedClock<'a>(pub &'a mut ResourceTable);

/// [`HasData`] marker for linking [`FixedClock`].
pub(crate) struct HasFixedClock;

impl HasData for HasFixedClock {
    type Data<'a> = FixedClock<'a>;
}

/// A timer that is already due.
struct Due;

#[wasmtime_wasi_io::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

impl FixedClock<'_> {
    fn due(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let timer = self.0.push(Due)?;
        subscribe(self.0, timer)
    }
}

impl monotonic_clock::Host for FixedClock<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<Duration> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
    }

    fn subscribe_duration(&mut self, _: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
    }
}

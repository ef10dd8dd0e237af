//! Group commit: a write is acknowledged only once it is on disk, and the writes that arrive
//! while one flush runs share the next one.
//!
//! A writer first applies its change to sled, then calls [`GroupCommit::commit`], which takes
//! a sequence number and waits until a flush that *started after* that number was taken has
//! finished. One flusher thread runs flushes back to back while anything is waiting, so the
//! cost of an fsync (about 160 µs here) is shared by every write that arrived meanwhile.
//! Under load the flusher also waits briefly before each flush so that more writes share it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

/// A group commit's progress: every write numbered up to `seq` is durable (unless `error`).
/// Shared by sled's flusher and the PostgreSQL journal's writer.
#[derive(Clone, Debug, Default)]
struct Flushed {
    seq: u64,
    error: Option<String>,
}

/// What a group commit's writer reports and its writers wait on.
pub(crate) struct Progress(watch::Sender<Flushed>);

impl Progress {
    pub fn new() -> Progress {
        Progress(watch::Sender::new(Flushed::default()))
    }

    /// Every write numbered up to `seq` is durable, or failed with `error`.
    pub fn report(&self, seq: u64, error: Option<String>) {
        self.0.send_replace(Flushed { seq, error });
    }

    /// Wait until the write numbered `seq` is durable; `wake` the writer first unless it is
    /// already.
    pub async fn wait_for(&self, seq: u64, wake: impl FnOnce()) -> Result<(), CommitError> {
        let mut flushed = self.0.subscribe();
        if flushed.borrow().seq >= seq {
            return Ok(());
        }
        wake();
        let state = flushed
            .wait_for(|f| f.seq >= seq)
            .await
            .map_err(|_| CommitError("the writer stopped".into()))?;
        match &state.error {
            Some(error) => Err(CommitError(error.clone())),
            None => Ok(()),
        }
    }
}

struct Pending {
    /// The number of the latest write that asked to be committed.
    written: u64,
    /// Whether the flusher sleeps on the condvar (only then does a commit wake it: a
    /// busy flusher looks at `written` again before it sleeps).
    idle: bool,
    stop: bool,
}

struct Shared {
    /// A std `Mutex`, not tokio's: held for a few instructions, never across an `.await`.
    pending: Mutex<Pending>,
    wake: Condvar,
    flushed: Progress,
}

/// The flusher of one sled database; stops (after a last flush) when dropped.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A flush failed: the write may not be durable.
#[derive(Debug, thiserror::Error)]
#[error("flushing to disk failed: {0}")]
pub struct CommitError(pub String);

impl GroupCommit {
    pub fn start(db: sled::Db) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                written: 0,
                idle: false,
                stop: false,
            }),
            wake: Condvar::new(),
            flushed: Progress::new(),
        });
        let thread = std::thread::Builder::new()
            .name("sled-commit".into())
            .spawn({
                let shared = shared.clone();
                move || flusher(db, &shared)
            })?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Wait until every write this task made before the call is on disk.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let seq = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.written += 1;
            pending.written
        };
        self.shared
            .flushed
            .wait_for(seq, || self.shared.wake.notify_one())
            .await
    }
}

/// When the last flush carried at least this many commits, the system is busy...
const COMMIT_SIBLINGS: u64 = 4;
/// ...and the next flush waits this long for more writes to join it. Under light load (a
/// lone writer) flushes start at once, so the delay never adds latency to a quiet system;
/// under load it trades a little latency for far fewer fsyncs (and fewer wake-ups of sled's
/// I/O threads), which is what bounds throughput on two cores (see BENCHMARKS.md).
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(1000);

fn flusher(db: sled::Db, shared: &Shared) {
    let mut done = 0;
    let mut last_batch = 0;
    loop {
        let target = {
            let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            while pending.written == done && !pending.stop {
                pending.idle = true;
                pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                pending.idle = false;
            }
            if pending.stop && pending.written == done {
                break;
            }
            if last_batch >= COMMIT_SIBLINGS {
                // Busy: let more writes join this flush (PostgreSQL's commit_delay).
                drop(pending);
                std::thread::sleep(COMMIT_DELAY);
                pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            }
            pending.written
        };
        last_batch = target - done;
        let error = db.flush().err().map(|e| e.to_string());
        if let Some(error) = &error {
            tracing::error!("sled flush failed: {error}");
        }
        done = target;
        shared.flushed.report(target, error);
    }
    let _ = db.flush();
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! What `zonebroker plugin upload` shows on a terminal while it waits: a progress bar while
//! the component is sent, then a spinner while the server compiles and smoke-tests it.
//! Nothing is drawn when stderr is not a terminal (scripts, CI logs).

use std::io::{IsTerminal as _, Read, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counts the bytes read out of a body as they are sent.
pub struct CountingReader {
    bytes: Vec<u8>,
    sent: Arc<AtomicUsize>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.sent.load(Ordering::Relaxed);
        let n = buf.len().min(self.bytes.len() - at);
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        self.sent.store(at + n, Ordering::Relaxed);
        Ok(n)
    }
}

/// The drawing thread of one upload; stops and clears its line when dropped.
pub struct UploadProgress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UploadProgress {
    /// Start showing the upload of `bytes`; answers the body to send.
    pub fn start(bytes: Vec<u8>) -> (CountingReader, UploadProgress) {
        let total = bytes.len();
        let sent = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let (sent, done) = (sent.clone(), done.clone());
            std::thread::spawn(move || draw(total, &sent, &done))
        });
        (
            CountingReader { bytes, sent },
            UploadProgress { done, thread },
        )
    }
}

impl Drop for UploadProgress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const BAR_WIDTH: usize = 30;
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

fn draw(total: usize, sent: &AtomicUsize, done: &AtomicBool) {
    let started = Instant::now();
    let mut sent_at: Option<Instant> = None;
    let mut frame = 0;
    let mut stderr = std::io::stderr();
    while !done.load(Ordering::Relaxed) {
        let now = sent.load(Ordering::Relaxed);
        let line = if now < total {
            let filled = BAR_WIDTH * now / total.max(1);
            format!(
                "uploading [{}{}] {:>3}% {:.1}/{:.1} MB",
                "#".repeat(filled),
                " ".repeat(BAR_WIDTH - filled),
                100 * now / total.max(1),
                now as f64 / 1e6,
                total as f64 / 1e6
            )
        } else {
            let since = *sent_at.get_or_insert_with(Instant::now);
            frame += 1;
            format!(
                "{} the server is compiling and smoke-testing it ({:.1} s; sent in {:.1} s)",
                SPINNER[frame % SPINNER.len()],
                since.elapsed().as_secs_f64(),
                (since - started).as_secs_f64()
            )
        };
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_hands_over_every_byte_and_counts_them() {
        let (mut reader, _progress) =
            UploadProgress::start((0..=255u8).cycle().take(10_000).collect());
        let mut read = Vec::new();
        let mut chunk = [0u8; 777];
        loop {
            let n = reader.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(read.len(), 10_000);
        assert!(read.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8));
        assert_eq!(reader.sent.load(Ordering::Relaxed), 10_000);
    }
}

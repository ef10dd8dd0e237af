//! A plugin's stdout or stderr: kept in memory up to a cap, the rest dropped (and the drop
//! remembered). Unlike wasmtime-wasi's `MemoryOutputPipe`, a full stream never fails a
//! write: an interpreter that prints in a loop keeps running until its own limits stop it,
//! rather than getting an I/O error it may not expect.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamResult};

/// One captured stream; clones share the buffer.
#[derive(Clone, Debug)]
pub(crate) struct CappedOutput {
    cap: usize,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: bool,
}

/// How much a guest may hand over in one `write` (it asks with `check-write` first).
const WRITE_PERMIT: usize = 64 << 10;

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            cap,
            kept: Arc::default(),
        }
    }

    /// What was kept, and whether anything was dropped.
    pub fn contents(&self) -> (Vec<u8>, bool) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (kept.bytes.clone(), kept.dropped)
    }

    fn keep(&self, bytes: &[u8]) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(kept.bytes.len());
        if bytes.len() > room {
            kept.dropped = true;
        }
        kept.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_remembers_the_drop() {
        let out = CappedOutput::new(5);
        let mut stream = out.p2_stream();
        stream.write(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(out.contents(), (b"abc".to_vec(), false));
        stream.write(Bytes::from_static(b"defg")).unwrap();
        stream.write(Bytes::from_static(b"h")).unwrap();
        assert_eq!(out.contents(), (b"abcde".to_vec(), true));
        assert!(
            stream.check_write().unwrap() > 0,
            "a full stream still takes writes"
        );
    }
}

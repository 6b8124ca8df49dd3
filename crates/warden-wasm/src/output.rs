//! Standard streams of a run: the caller's stdin (or given bytes), and
//! stdout/stderr through one shared byte cap, as the jail's supervisor
//! does. A write past the cap is cut at the cap and traps the guest; the
//! run is then reported as `output_limit` with `truncated`.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Where a guest's stdin comes from.
#[derive(Clone, Debug, Default)]
pub enum Input {
    /// The caller's standard input (what `warden run` uses).
    #[default]
    Inherit,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// End of file at once.
    Empty,
}

/// Where a guest's stdout or stderr goes (after the cap).
#[derive(Clone, Debug, Default)]
pub enum Output {
    /// The caller's own stdout (for the guest's stdout) or stderr (for
    /// its stderr).
    #[default]
    Inherit,
    /// Collected in memory.
    Buffer(SharedBuffer),
    /// Counted and dropped.
    Discard,
}

/// A byte buffer shared between the caller and a run.
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn new() -> Self {
        SharedBuffer::default()
    }

    /// A copy of what was written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// What was written so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Standard streams for one run.
#[derive(Clone, Debug, Default)]
pub struct RunIo {
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
}

impl RunIo {
    /// Flushes the caller's stdout/stderr where the run writes to them.
    pub(crate) fn flush(&self) {
        if matches!(self.stdout, Output::Inherit) {
            let _ = io::stdout().flush();
        }
        if matches!(self.stderr, Output::Inherit) {
            let _ = io::stderr().flush();
        }
    }

    /// Stdin empty, stdout and stderr collected in the returned buffers.
    pub fn captured(stdin: Input) -> (RunIo, SharedBuffer, SharedBuffer) {
        let out = SharedBuffer::new();
        let err = SharedBuffer::new();
        (
            RunIo {
                stdin,
                stdout: Output::Buffer(out.clone()),
                stderr: Output::Buffer(err.clone()),
            },
            out,
            err,
        )
    }
}

/// The shared output budget of a run.
#[derive(Debug)]
pub(crate) struct OutputCap {
    limit: u64,
    used: AtomicU64,
    pub exceeded: AtomicBool,
}

impl OutputCap {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(OutputCap {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Takes up to `n` bytes from the budget; returns how many were granted.
    fn take(&self, n: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                granted = self.limit.saturating_sub(used).min(n);
                Some(used + granted)
            });
        granted
    }
}

#[derive(Clone, Copy, Debug)]
enum Fd {
    Stdout,
    Stderr,
}

/// One of a run's output streams: counts what passes, enforces the cap.
#[derive(Clone)]
pub(crate) struct CappedStream {
    cap: Arc<OutputCap>,
    written: Arc<AtomicU64>,
    target: Output,
    fd: Fd,
}

/// The error a guest's write traps with when the output cap is reached.
#[derive(Debug, thiserror::Error)]
#[error("output limit of {0} bytes (stdout and stderr together) reached")]
pub(crate) struct OutputLimitReached(pub u64);

impl CappedStream {
    pub fn stdout(cap: Arc<OutputCap>, target: Output) -> Self {
        Self::new(cap, target, Fd::Stdout)
    }

    pub fn stderr(cap: Arc<OutputCap>, target: Output) -> Self {
        Self::new(cap, target, Fd::Stderr)
    }

    fn new(cap: Arc<OutputCap>, target: Output, fd: Fd) -> Self {
        CappedStream {
            cap,
            written: Arc::new(AtomicU64::new(0)),
            target,
            fd,
        }
    }

    /// Bytes that went through (at most the cap).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Writes what the cap allows; `Err(OutputLimitReached)` when it cut.
    fn put(&self, buf: &[u8]) -> Result<(), PutError> {
        let granted = self.cap.take(buf.len() as u64) as usize;
        let result = match &self.target {
            Output::Inherit => match self.fd {
                Fd::Stdout => io::stdout().lock().write_all(&buf[..granted]),
                Fd::Stderr => io::stderr().lock().write_all(&buf[..granted]),
            },
            Output::Buffer(b) => {
                b.lock().extend_from_slice(&buf[..granted]);
                Ok(())
            }
            Output::Discard => Ok(()),
        };
        self.written.fetch_add(granted as u64, Ordering::Relaxed);
        result.map_err(PutError::Io)?;
        if granted < buf.len() {
            self.cap.exceeded.store(true, Ordering::Relaxed);
            return Err(PutError::Limit(OutputLimitReached(self.cap.limit)));
        }
        Ok(())
    }

    /// Writes what the cap allows (a callee's stderr, forwarded);
    /// `Err` when the cap cut it. A failing target is ignored, as a
    /// guest's own failed write would be its own business.
    pub fn write_capped(&self, buf: &[u8]) -> Result<(), OutputLimitReached> {
        match self.put(buf) {
            Err(PutError::Limit(l)) => Err(l),
            Ok(()) | Err(PutError::Io(_)) => Ok(()),
        }
    }

    fn flush_target(&self) -> io::Result<()> {
        match (&self.target, self.fd) {
            (Output::Inherit, Fd::Stdout) => io::stdout().flush(),
            (Output::Inherit, Fd::Stderr) => io::stderr().flush(),
            _ => Ok(()),
        }
    }
}

enum PutError {
    Io(io::Error),
    Limit(OutputLimitReached),
}

impl IsTerminal for CappedStream {
    fn is_terminal(&self) -> bool {
        // Never tell the guest it has a terminal: its behaviour (buffering,
        // colours) must not depend on where Warden's output goes.
        false
    }
}

impl StdoutStream for CappedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.put(&bytes).map_err(|e| match e {
            PutError::Io(e) => StreamError::LastOperationFailed(wasmtime::Error::new(e)),
            PutError::Limit(l) => StreamError::Trap(wasmtime::Error::new(l)),
        })
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flush_target()
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(match self.put(buf) {
            Ok(()) => Ok(buf.len()),
            Err(PutError::Io(e)) => Err(e),
            Err(PutError::Limit(l)) => Err(io::Error::other(l)),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.flush_target())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

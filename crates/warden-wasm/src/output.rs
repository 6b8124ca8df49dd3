//! Standard streams of a run: the caller's stdin (or given bytes), and
//! stdout/stderr through one shared byte cap, as the jail's supervisor
//! does. A write past the cap is cut at the cap and traps the guest; the
//! run is then reported as `output_limit` with `truncated`.
//!
//! A run holding leased secrets passes each stream through a streaming
//! redactor of every form of every value ([`warden_secrets::StreamRedactor`]:
//! `[REDACTED:NAME]`, also when a value is split across writes) before it
//! is handed on; the hash of a stream is of the redacted bytes, while the
//! output cap counts the guest's own.
//!
//! Output for the caller's own stdout/stderr ([`Output::Inherit`]) never
//! blocks the run's thread: unless the descriptor is a regular file or
//! `/dev/null` (which never block), it is queued for a writer thread per
//! descriptor (one per process, like the jail's forwarders). When the queue
//! is full (the reader does not keep up, or has stopped), the guest's write
//! waits asynchronously, so the run's deadline still ends it; at the end of
//! a run Warden waits for its output to be written at most until the run's
//! deadline (and [`DRAIN_GRACE`]), then reports what is still queued.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use warden_secrets::{Redactor, StreamRedactor};
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

/// A run's output: the budget its stdout and stderr share, and what
/// each of them wrote and where it goes. One allocation per run, shared by
/// its two streams.
pub(crate) struct RunOutput {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
    /// Stdout, then stderr.
    streams: [StreamState; 2],
}

struct StreamState {
    target: Output,
    /// Bytes of the guest's that went through (at most the cap).
    written: AtomicU64,
    /// SHA-256 of what was handed on (redacted, with secrets).
    hash: Mutex<sha2::Sha256>,
    /// The redactor of the run's secrets, for this stream; its lock is
    /// held while what it lets through is handed on, so that it goes out
    /// (and is hashed) in order.
    redact: Option<Mutex<StreamRedactor>>,
    /// The output cap cut one of this stream's writes.
    cut: AtomicBool,
    /// Sequence number (in its queue) of the last byte this stream queued
    /// for the caller's descriptor.
    queued_to: AtomicU64,
}

impl StreamState {
    fn new(target: Output, redactor: Option<&Arc<Redactor>>) -> Self {
        StreamState {
            target,
            written: AtomicU64::new(0),
            hash: Mutex::default(),
            redact: redactor.map(|r| Mutex::new(r.stream())),
            cut: AtomicBool::new(false),
            queued_to: AtomicU64::new(0),
        }
    }

    /// Sends `bytes` to the target and hashes them.
    fn hand_on(&self, fd: Fd, bytes: &[u8]) -> io::Result<()> {
        let result = match &self.target {
            Output::Inherit => match fd.sink() {
                Sink::Direct(fd) => fd.write_all(bytes),
                Sink::Queued(q) => q.push(bytes).map(|seq| {
                    self.queued_to.fetch_max(seq, Ordering::Relaxed);
                }),
            },
            Output::Buffer(b) => {
                b.lock().extend_from_slice(bytes);
                Ok(())
            }
            Output::Discard => Ok(()),
        };
        {
            use sha2::Digest as _;
            self.hash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .update(bytes);
        }
        result
    }

    /// Sends the guest's `bytes` on: through the redactor, if any.
    fn deliver(&self, fd: Fd, bytes: &[u8]) -> io::Result<()> {
        let Some(redact) = &self.redact else {
            return self.hand_on(fd, bytes);
        };
        let mut redact = redact.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(bytes.len());
        redact.push(bytes, &mut out);
        if out.is_empty() {
            return Ok(());
        }
        self.hand_on(fd, &out)
    }

    /// Sends on what the redactor still holds (the stream has ended). If
    /// the cap cut the stream, that is dropped instead: it could be the
    /// beginning of a secret whose rest the cut hid, which the redactor
    /// cannot recognise.
    fn finish_redaction(&self, fd: Fd) {
        let Some(redact) = &self.redact else {
            return;
        };
        let mut redact = redact.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = zeroize::Zeroizing::new(Vec::new());
        redact.finish(&mut out);
        if !out.is_empty() && !self.cut.load(Ordering::Relaxed) {
            // A failing target drops it, as it would any output.
            let _ = self.hand_on(fd, &out);
        }
    }

    /// The writer queue this stream's output goes through, if any.
    fn queue(&self, fd: Fd) -> Option<&'static Queue> {
        match (&self.target, fd.sink()) {
            (Output::Inherit, Sink::Queued(q)) => Some(q),
            _ => None,
        }
    }

    fn wait_delivered(&self, fd: Fd, until: Instant) -> u64 {
        let seq = self.queued_to.load(Ordering::Relaxed);
        match self.queue(fd) {
            Some(q) if seq > 0 => q.wait_written(seq, until),
            _ => 0,
        }
    }
}

impl RunOutput {
    /// The output of a run whose stdout and stderr share `limit` bytes,
    /// each redacted of the secrets of `redactor` if there is one.
    pub fn new(
        limit: u64,
        stdout: Output,
        stderr: Output,
        redactor: Option<Arc<Redactor>>,
    ) -> Arc<Self> {
        let redactor = redactor.filter(|r| !r.is_empty());
        Arc::new(RunOutput {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            streams: [
                StreamState::new(stdout, redactor.as_ref()),
                StreamState::new(stderr, redactor.as_ref()),
            ],
        })
    }

    /// Ends redaction: what each stream's redactor held back (fewer bytes
    /// than the longest form of a secret) is handed on. Call once the
    /// guest can write no more, before [`Self::digests`].
    pub fn finish_redaction(&self) {
        let [out, err] = &self.streams;
        out.finish_redaction(Fd::Stdout);
        err.finish_redaction(Fd::Stderr);
    }

    /// The guest's stdout.
    pub fn stdout(self: &Arc<Self>) -> CappedStream {
        CappedStream {
            out: self.clone(),
            fd: Fd::Stdout,
        }
    }

    /// The guest's stderr.
    pub fn stderr(self: &Arc<Self>) -> CappedStream {
        CappedStream {
            out: self.clone(),
            fd: Fd::Stderr,
        }
    }

    /// The guest's bytes that went through stdout and stderr (at most the
    /// cap).
    pub fn written(&self) -> (u64, u64) {
        let [out, err] = &self.streams;
        (
            out.written.load(Ordering::Relaxed),
            err.written.load(Ordering::Relaxed),
        )
    }

    /// Hex SHA-256 of what stdout and stderr handed on (redacted).
    pub fn digests(&self) -> (String, String) {
        use sha2::Digest as _;
        let [out, err] = &self.streams;
        let hex = |s: &StreamState| {
            let h = s.hash.lock().unwrap_or_else(|e| e.into_inner()).clone();
            hex::encode(h.finalize())
        };
        (hex(out), hex(err))
    }

    /// True if the run's output was cut at the cap.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Waits (at most until `until`) for what the run queued for the
    /// caller's descriptors to be written; returns the bytes still queued.
    pub fn wait_delivered(&self, until: Instant) -> u64 {
        let [out, err] = &self.streams;
        out.wait_delivered(Fd::Stdout, until) + err.wait_delivered(Fd::Stderr, until)
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

/// Bytes queued for the caller's stdout (or stderr) beyond which a guest's
/// write waits.
const QUEUE_BYTES: usize = 1 << 20;
/// At the end of a run, how long its queued output may take to be written
/// (never past the run's deadline), as the jail's `DRAIN_GRACE`.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The caller's stdout or stderr.
enum Sink {
    /// A regular file or `/dev/null`: written from the run's thread.
    Direct(Fd),
    /// Anything that can block (a pipe, a terminal, a socket): written by a
    /// thread of its own.
    Queued(Arc<Queue>),
}

/// Output waiting for a writer thread.
struct Queue {
    state: Mutex<QueueState>,
    /// The writer waits here for chunks.
    work: Condvar,
    /// Runs waiting for their output to be written wait here.
    progress: Condvar,
}

#[derive(Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    /// Bytes ever queued / ever written (or dropped after a failure).
    enqueued_total: u64,
    written_total: u64,
    /// The descriptor failed (the reader is gone): output is dropped and
    /// writes fail from then on.
    failed: bool,
    /// Guests waiting for room in the queue.
    wakers: Vec<Waker>,
}

impl Fd {
    fn write_all(self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = match self {
                Fd::Stdout => rustix::io::write(io::stdout().as_fd(), buf),
                Fd::Stderr => rustix::io::write(io::stderr().as_fd(), buf),
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(rustix::io::Errno::INTR) => {}
                // Someone made the descriptor non-blocking: wait a little.
                Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// True for a regular file and `/dev/null`, which never block.
    fn never_blocks(self) -> bool {
        let st = match self {
            Fd::Stdout => rustix::fs::fstat(io::stdout().as_fd()),
            Fd::Stderr => rustix::fs::fstat(io::stderr().as_fd()),
        };
        let Ok(st) = st else {
            // Closed: writes fail at once, they cannot block.
            return true;
        };
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => true,
            rustix::fs::FileType::CharacterDevice => st.st_rdev == rustix::fs::makedev(1, 3),
            _ => false,
        }
    }

    fn sink(self) -> &'static Sink {
        static STDOUT: OnceLock<Sink> = OnceLock::new();
        static STDERR: OnceLock<Sink> = OnceLock::new();
        let cell = match self {
            Fd::Stdout => &STDOUT,
            Fd::Stderr => &STDERR,
        };
        cell.get_or_init(|| {
            if self.never_blocks() {
                return Sink::Direct(self);
            }
            let queue = Arc::new(Queue {
                state: Mutex::new(QueueState::default()),
                work: Condvar::new(),
                progress: Condvar::new(),
            });
            let for_thread = queue.clone();
            let name = match self {
                Fd::Stdout => "warden-wasm-stdout",
                Fd::Stderr => "warden-wasm-stderr",
            };
            match std::thread::Builder::new()
                .name(name.into())
                .spawn(move || for_thread.write_loop(self))
            {
                Ok(_) => Sink::Queued(queue),
                // No thread: write from the run's thread, as before.
                Err(_) => Sink::Direct(self),
            }
        })
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_loop(&self, fd: Fd) {
        loop {
            let chunk = {
                let mut st = self.lock();
                loop {
                    if let Some(c) = st.chunks.pop_front() {
                        break c;
                    }
                    st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let ok = fd.write_all(&chunk).is_ok();
            let wakers = {
                let mut st = self.lock();
                st.queued -= chunk.len();
                st.written_total += chunk.len() as u64;
                if !ok {
                    // The caller stopped reading for good: drop the rest.
                    st.failed = true;
                    st.chunks.clear();
                    st.queued = 0;
                    st.written_total = st.enqueued_total;
                }
                std::mem::take(&mut st.wakers)
            };
            self.progress.notify_all();
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Queues `buf`; returns the sequence number of its last byte.
    fn push(&self, buf: &[u8]) -> io::Result<u64> {
        let mut st = self.lock();
        if st.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !buf.is_empty() {
            st.chunks.push_back(buf.to_vec());
            st.queued += buf.len();
            st.enqueued_total += buf.len() as u64;
            self.work.notify_one();
        }
        Ok(st.enqueued_total)
    }

    /// Room in the queue (0: full); a failed queue has room (its writes
    /// fail at once).
    fn room(&self) -> usize {
        let st = self.lock();
        if st.failed {
            return QUEUE_BYTES;
        }
        QUEUE_BYTES.saturating_sub(st.queued)
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.failed || st.queued < QUEUE_BYTES {
            return Poll::Ready(());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until byte `seq` is written or `until`; returns how many of
    /// the bytes up to `seq` are still queued.
    fn wait_written(&self, seq: u64, until: Instant) -> u64 {
        let mut st = self.lock();
        loop {
            if st.written_total >= seq {
                return 0;
            }
            let now = Instant::now();
            if now >= until {
                return seq - st.written_total;
            }
            st = self
                .progress
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One of a run's output streams: counts what passes, enforces the cap.
#[derive(Clone)]
pub(crate) struct CappedStream {
    out: Arc<RunOutput>,
    fd: Fd,
}

/// The error a guest's write traps with when the output cap is reached.
#[derive(Debug, thiserror::Error)]
#[error("output limit of {0} bytes (stdout and stderr together) reached")]
pub(crate) struct OutputLimitReached(pub u64);

impl Output {
    /// True if a guest's write to this target (as its stdout, or stderr)
    /// never waits: it is not queued for a writer thread.
    pub(crate) fn never_waits(&self, stderr: bool) -> bool {
        let fd = if stderr { Fd::Stderr } else { Fd::Stdout };
        !matches!((self, fd.sink()), (Output::Inherit, Sink::Queued(_)))
    }
}

impl CappedStream {
    fn state(&self) -> &StreamState {
        match self.fd {
            Fd::Stdout => &self.out.streams[0],
            Fd::Stderr => &self.out.streams[1],
        }
    }

    /// The writer queue this stream's output goes through, if any.
    fn queue(&self) -> Option<&'static Queue> {
        self.state().queue(self.fd)
    }

    /// Ready when the stream can take more bytes without exceeding its
    /// queue (always, for targets that do not queue).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.queue() {
            Some(q) => q.poll_room(cx),
            None => Poll::Ready(()),
        }
    }

    /// Writes what the cap allows; `Err(OutputLimitReached)` when it cut.
    fn put(&self, buf: &[u8]) -> Result<(), PutError> {
        let state = self.state();
        // The cap counts the guest's bytes, not what redaction makes of them.
        let granted = self.out.take(buf.len() as u64) as usize;
        let result = state.deliver(self.fd, &buf[..granted]);
        // Counted against the cap also when the target failed (a caller's
        // pipe whose reader is gone drops them): a guest that ignores its
        // write errors is stopped by the output limit, as any output, and
        // not kept alive until its deadline.
        state.written.fetch_add(granted as u64, Ordering::Relaxed);
        if granted < buf.len() {
            state.cut.store(true, Ordering::Relaxed);
            self.out.exceeded.store(true, Ordering::Relaxed);
            return Err(PutError::Limit(OutputLimitReached(self.out.limit)));
        }
        result.map_err(PutError::Io)
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

    /// Nothing to do: bytes go to the descriptor (or its queue) unbuffered.
    fn flush_target(&self) -> io::Result<()> {
        Ok(())
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
    /// Waits for room in the writer queue (without blocking the thread: the
    /// run's deadline can still end it).
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_room(cx)).await;
    }
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
        Ok(match self.queue() {
            Some(q) => q.room().min(64 * 1024),
            None => 64 * 1024,
        })
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_room(cx).is_pending() {
            return Poll::Pending;
        }
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

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

//! Moving bytes between the caller and the jail without ever blocking the
//! supervisor: output is written to the caller's descriptors by a thread
//! per stream, and the caller's stdin is pumped into a pipe by another, so
//! a stopped terminal or a reader that never reads cannot stall deadlines.
//! The program never receives the caller's own descriptors.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::sys;

/// Chunks buffered per stream before the supervisor stops reading it.
const QUEUE: usize = 16;

pub(crate) struct Forwarder {
    /// `None` when the destination never blocks (a regular file or
    /// /dev/null): chunks are written inline and no thread is started.
    tx: Option<SyncSender<Vec<u8>>>,
    done: Option<Receiver<()>>,
    pending: Option<Vec<u8>>,
    direct: Option<RawFd>,
    /// Set by the writer when the destination refused a write (the
    /// caller's pipe has no reader any more).
    broken: Arc<AtomicBool>,
    /// Set when the run is over and the writer is not waited for any
    /// longer: it stops after the chunk it is writing.
    abandoned: Arc<AtomicBool>,
    /// Bytes offered, and bytes the writer has written.
    offered: u64,
    delivered: Arc<AtomicU64>,
}

impl Forwarder {
    /// Starts a thread that writes every chunk it is given to `to`.
    pub(crate) fn new(to: RawFd) -> io::Result<Forwarder> {
        if sys::never_blocks(to) {
            return Ok(Forwarder {
                tx: None,
                done: None,
                pending: None,
                direct: Some(to),
                broken: Arc::default(),
                abandoned: Arc::default(),
                offered: 0,
                delivered: Arc::default(),
            });
        }
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let (done_tx, done) = sync_channel(1);
        let broken = Arc::new(AtomicBool::new(false));
        let abandoned = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let (writer_broken, writer_abandoned, writer_delivered) =
            (broken.clone(), abandoned.clone(), delivered.clone());
        std::thread::Builder::new()
            .name(format!("warden-out-{to}"))
            .spawn(move || {
                for chunk in rx {
                    // Chunks to stderr are written under std's stderr lock,
                    // which the report (`--report -`) and Warden's own
                    // messages take too: never interleaved with them, and
                    // none after the report once this writer is abandoned.
                    let _stderr = (to == 2).then(|| std::io::stderr().lock());
                    if writer_abandoned.load(Ordering::Relaxed) {
                        break;
                    }
                    if sys::write_all(to, &chunk).is_err() {
                        // The caller stopped reading: drop the rest.
                        writer_broken.store(true, Ordering::Relaxed);
                        break;
                    }
                    writer_delivered.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                let _ = done_tx.send(());
            })?;
        Ok(Forwarder {
            tx: Some(tx),
            done: Some(done),
            pending: None,
            direct: None,
            broken,
            abandoned,
            offered: 0,
            delivered,
        })
    }

    /// Whether the destination is gone (a write to it failed): the
    /// supervisor then closes the program's end too, so that the program
    /// meets a closed pipe (SIGPIPE or EPIPE) as it would outside.
    pub(crate) fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Queues a chunk; when the queue is full the chunk is kept and
    /// [`Forwarder::blocked`] is true until [`Forwarder::retry`] succeeds.
    pub(crate) fn offer(&mut self, chunk: Vec<u8>) {
        self.offered += chunk.len() as u64;
        if let Some(fd) = self.direct {
            if sys::write_all(fd, &chunk).is_ok() {
                self.delivered
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            return;
        }
        debug_assert!(self.pending.is_none());
        self.pending = Some(chunk);
        self.retry();
    }

    pub(crate) fn retry(&mut self) {
        let (Some(tx), Some(chunk)) = (&self.tx, self.pending.take()) else {
            return;
        };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(chunk)) => self.pending = Some(chunk),
            // The writer gave up (its destination is gone): drop output.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub(crate) fn blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// Hands over what is left and waits up to `wait` for it to be
    /// written; a destination that stays blocked is abandoned (the report
    /// does not wait for a stopped terminal). Returns how many offered
    /// bytes were not delivered.
    pub(crate) fn finish(mut self, wait: Duration) -> u64 {
        if let (Some(tx), Some(chunk)) = (&self.tx, self.pending.take()) {
            let _ = tx.send_timeout_compat(chunk, wait);
        }
        drop(self.tx.take());
        if let Some(done) = &self.done {
            if done.recv_timeout(wait).is_err() {
                self.abandoned.store(true, Ordering::Relaxed);
            }
        }
        self.offered
            .saturating_sub(self.delivered.load(Ordering::Relaxed))
    }
}

trait SendTimeout {
    fn send_timeout_compat(&self, chunk: Vec<u8>, wait: Duration) -> Result<(), ()>;
}

impl SendTimeout for SyncSender<Vec<u8>> {
    /// `SyncSender` has no send with a timeout: retry `try_send` briefly.
    fn send_timeout_compat(&self, mut chunk: Vec<u8>, wait: Duration) -> Result<(), ()> {
        let until = std::time::Instant::now() + wait;
        loop {
            match self.try_send(chunk) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) if std::time::Instant::now() < until => {
                    chunk = c;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(()),
            }
        }
    }
}

/// SHA-256 of the bytes the stdin pump delivered so far.
pub(crate) type StdinHash = Arc<std::sync::Mutex<sha2::Sha256>>;

/// Copies the caller's stdin into `to` on a detached thread until either
/// side closes, hashing what it delivers. The thread ends with the
/// process if stdin never closes.
pub(crate) fn pump_stdin(to: OwnedFd) -> io::Result<StdinHash> {
    use sha2::Digest as _;
    let hash = StdinHash::default();
    let pumped = hash.clone();
    std::thread::Builder::new()
        .name("warden-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = sys::read(0, &mut buf) {
                if n == 0 || sys::write_all(to.as_raw_fd(), &buf[..n]).is_err() {
                    break;
                }
                pumped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .update(&buf[..n]);
            }
        })?;
    Ok(hash)
}

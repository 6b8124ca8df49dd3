//! Moving bytes between the caller and the jail without ever blocking the
//! supervisor: output is written to the caller's descriptors by a thread
//! per stream, and the caller's stdin is pumped into a pipe by another, so
//! a stopped terminal or a reader that never reads cannot stall deadlines.
//! The program never receives the caller's own descriptors.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
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
            });
        }
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let (done_tx, done) = sync_channel(1);
        let broken = Arc::new(AtomicBool::new(false));
        let writer_broken = broken.clone();
        std::thread::Builder::new()
            .name(format!("warden-out-{to}"))
            .spawn(move || {
                for chunk in rx {
                    if sys::write_all(to, &chunk).is_err() {
                        // The caller stopped reading: drop the rest.
                        writer_broken.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let _ = done_tx.send(());
            })?;
        Ok(Forwarder {
            tx: Some(tx),
            done: Some(done),
            pending: None,
            direct: None,
            broken,
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
        if let Some(fd) = self.direct {
            let _ = sys::write_all(fd, &chunk);
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
    /// does not wait for a stopped terminal).
    pub(crate) fn finish(mut self, wait: Duration) {
        if let (Some(tx), Some(chunk)) = (&self.tx, self.pending.take()) {
            let _ = tx.send_timeout_compat(chunk, wait);
        }
        drop(self.tx.take());
        if let Some(done) = &self.done {
            let _ = done.recv_timeout(wait);
        }
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

/// Copies the caller's stdin into `to` on a detached thread until either
/// side closes. The thread ends with the process if stdin never closes.
pub(crate) fn pump_stdin(to: OwnedFd) -> io::Result<()> {
    std::thread::Builder::new()
        .name("warden-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = sys::read(0, &mut buf) {
                if n == 0 || sys::write_all(to.as_raw_fd(), &buf[..n]).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

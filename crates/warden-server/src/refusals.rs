//! Every refused request (400, 401, 413, 429, 503) becomes a ledger entry
//! of kind `refusal`. The ledger is SQLite and an append is an fsync, so
//! handlers do not write it: they hand the entry to one writer thread
//! through a bounded queue, which appends what it finds in batches (one
//! transaction each). When the queue is full — a flood of bad requests —
//! the entry is dropped and counted in `warden_refusals_unrecorded_total`,
//! so that refusals never hold up good requests for long.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Entries that may wait for the writer.
pub const QUEUE: usize = 4096;
/// Entries appended in one transaction at most.
const BATCH: usize = 256;

/// One refusal, as the ledger keeps it: never the key, the body or the
/// error message (which may quote the body).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    pub route: String,
    pub method: String,
    pub status: u16,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The quota of a 429.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

enum Message {
    Entry(Refusal),
    /// Write what came before, then end.
    Stop,
}

/// The queue to the writer thread.
pub struct Recorder {
    tx: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// Starts the writer for the ledger of `state`.
    pub fn start(state: PathBuf) -> std::io::Result<Recorder> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("warden-refusals".into())
            .spawn(move || write_loop(&state, &rx))?;
        Ok(Recorder {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `refusal` for the ledger; never waits. Dropped (and
    /// counted) when the queue is full.
    pub fn record(&self, refusal: Refusal) {
        match self.tx.try_send(Message::Entry(refusal)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::unrecorded(1);
            }
        }
    }

    /// Writes what is queued and stops the writer (at shutdown; blocks up
    /// to `within`).
    pub fn finish(&self, within: Duration) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        let Some(thread) = thread else { return };
        // The queue may be full: wait for room, but not for ever.
        let deadline = std::time::Instant::now() + within;
        let mut message = Message::Stop;
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

fn write_loop(state: &std::path::Path, rx: &Receiver<Message>) {
    let mut audit: Option<warden_engine::audit::Audit> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut stop = false;
        match first {
            Message::Entry(r) => batch.push(r),
            Message::Stop => stop = true,
        }
        while !stop && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Message::Entry(r)) => batch.push(r),
                Ok(Message::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let events: Vec<serde_json::Value> = batch
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            let written = match audit.take() {
                Some(a) => Ok(a),
                None => warden_engine::audit::Audit::open(state),
            }
            .and_then(|mut a| {
                a.record_many("refusal", events)?;
                audit = Some(a);
                Ok(())
            });
            if let Err(e) = written {
                // Reopened for the next batch.
                audit = None;
                tracing::warn!("{n} refusals not recorded in the ledger: {e}");
                crate::metrics::unrecorded(n);
            }
        }
        if stop {
            break;
        }
    }
}

//! Group commit: many threads append through one [`GroupLedger`], each
//! waiting for its own entry to be durable, and the entries that arrive
//! while a commit is under way are committed together in the next one —
//! one transaction and one fsync for the whole group.
//!
//! A writer prepares its event (the JSON work) on its own thread and
//! queues it. If no commit is under way it becomes the *leader*: it takes
//! the whole queue, appends it in one transaction, hands each writer its
//! index and leaf hash (or the error), and wakes them; a writer that
//! queued meanwhile becomes the next leader. Other processes appending to
//! the same database are ordered by SQLite's locking, as with [`Ledger`].
//!
//! Writers that wait for each entry come back in waves: those the last
//! commit woke queue again a few microseconds after the next leader
//! started. So a leader first waits — at most [`MAX_GATHER`], and only
//! while fewer are queued than were recently outstanding at once — for
//! them to join: with 8 such writers every commit then holds 8 entries
//! instead of alternating halves, and a lone writer never waits.

use std::time::{Duration, Instant};

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;

use serde_json::Value;

use crate::merkle::Hash;
use crate::store::{Ledger, Prepared, StoreError};

/// A ledger shared by threads, appending with group commit.
pub struct GroupLedger {
    state: Mutex<State>,
    arrived: Condvar,
    ledger: Mutex<Ledger>,
}

/// See [`Ledger::set_checkpoint_pages`]: a group committer lives long,
/// and a checkpoint (one more fsync) delays the commit it precedes.
pub const GROUP_CHECKPOINT_PAGES: u64 = 512;

/// The longest a leader waits for writers to join its commit.
pub const MAX_GATHER: Duration = Duration::from_micros(150);

/// Commits over which the number of writers outstanding at once is
/// remembered.
const WINDOW: u64 = 64;

type Ack = Result<(u64, Hash), StoreError>;

/// Where a waiting writer gets its answer: the result, or the word to
/// lead the next commit. It sleeps (parks) until one is there.
struct Slot {
    answer: Mutex<Option<Answer>>,
    thread: Thread,
}

enum Answer {
    Done(Ack),
    Lead,
}

impl Slot {
    fn tell(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
        self.thread.unpark();
    }
}

#[derive(Default)]
struct State {
    queue: Vec<(Prepared, Arc<Slot>)>,
    leading: bool,
    /// Requests queued or being committed.
    outstanding: usize,
    /// The most outstanding at once, in this window and the last.
    peak: usize,
    last_peak: usize,
    /// What a gathering leader waits for (0: none is).
    gather: usize,
    /// Commits made and entries in them, for statistics.
    commits: u64,
    entries: u64,
    committing: Duration,
}

impl GroupLedger {
    /// Shares `ledger`; its WAL may hold [`GROUP_CHECKPOINT_PAGES`]
    /// before an append checkpoints it first.
    pub fn new(mut ledger: Ledger) -> GroupLedger {
        ledger.set_checkpoint_pages(GROUP_CHECKPOINT_PAGES);
        GroupLedger {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            ledger: Mutex::new(ledger),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one event and returns once it is durable: its index and
    /// leaf hash.
    pub fn append(&self, time: u64, kind: &str, event: &Value) -> Ack {
        self.append_prepared(Prepared::new(time, kind, event))
    }

    /// Appends one prepared event and returns once it is durable.
    pub fn append_prepared(&self, event: Prepared) -> Ack {
        let slot = Arc::new(Slot {
            answer: Mutex::new(None),
            thread: std::thread::current(),
        });
        let lead = {
            let mut st = self.state();
            st.queue.push((event, Arc::clone(&slot)));
            st.outstanding += 1;
            st.peak = st.peak.max(st.outstanding);
            let lead = !st.leading;
            st.leading = true;
            // Wake a gathering leader only when it has what it waits for.
            if !lead && st.queue.len() == st.gather {
                self.arrived.notify_one();
            }
            lead
        };
        if lead {
            self.lead();
        }
        loop {
            let answer = slot
                .answer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match answer {
                Some(Answer::Done(ack)) => return ack,
                Some(Answer::Lead) => self.lead(),
                None => std::thread::park(),
            }
        }
    }

    /// Commits what is queued as one transaction, after letting the
    /// writers that are about to queue join; answers each; passes the lead
    /// to a writer that queued meanwhile, if any.
    fn lead(&self) {
        let mut st = self.state();
        let target = st.peak.max(st.last_peak);
        st.gather = target;
        let deadline = Instant::now() + MAX_GATHER;
        while st.queue.len() < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Fewer writers than before: expect as many as came.
                st.peak = st.queue.len();
                st.last_peak = st.queue.len();
                break;
            }
            st = self
                .arrived
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.gather = 0;
        let batch = std::mem::take(&mut st.queue);
        drop(st);
        let (events, slots): (Vec<Prepared>, Vec<Arc<Slot>>) = batch.into_iter().unzip();
        let started = Instant::now();
        let result = self
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append_prepared(&events);
        let next = {
            let mut st = self.state();
            st.outstanding -= slots.len();
            st.commits += 1;
            if st.commits.is_multiple_of(WINDOW) {
                st.last_peak = st.peak;
                st.peak = st.outstanding;
            }
            st.committing += started.elapsed();
            if let Ok(acks) = &result {
                st.entries += acks.len() as u64;
            }
            let next = st.queue.first().map(|(_, slot)| Arc::clone(slot));
            st.leading = next.is_some();
            next
        };
        if let Some(next) = next {
            next.tell(Answer::Lead);
        }
        match result {
            Ok(acks) => {
                for (slot, ack) in slots.iter().zip(acks) {
                    slot.tell(Answer::Done(Ok(ack)));
                }
            }
            Err(e) => {
                for slot in &slots {
                    slot.tell(Answer::Done(Err(e.clone())));
                }
            }
        }
    }

    /// Commits made so far, the entries they held and the time spent in
    /// them.
    pub fn stats(&self) -> (u64, u64, Duration) {
        let st = self.state();
        (st.commits, st.entries, st.committing)
    }

    /// The ledger, for reading (waits for a commit under way).
    pub fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        f(&mut self.ledger.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn into_inner(self) -> Ledger {
        self.ledger
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_share_commits_and_every_entry_is_acknowledged_once() {
        let dir = std::env::temp_dir().join(format!("warden-ledger-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let group = GroupLedger::new(Ledger::open(&dir).unwrap());
        let acks: Vec<Vec<(u64, Hash)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let group = &group;
                    s.spawn(move || {
                        (0..50)
                            .map(|i| {
                                group
                                    .append(7, "run", &serde_json::json!({"thread": t, "i": i}))
                                    .unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let (commits, entries, _) = group.stats();
        assert_eq!(entries, 400);
        assert!(commits <= 400);
        let ledger = group.into_inner();
        let mut all: Vec<(u64, Hash)> = acks.into_iter().flatten().collect();
        all.sort();
        for (i, (index, leaf)) in all.iter().enumerate() {
            assert_eq!(*index, i as u64);
            let body = ledger.entry(*index).unwrap().unwrap();
            assert_eq!(crate::merkle::leaf_hash(&body), *leaf);
        }
        assert_eq!(ledger.verify().unwrap(), Ok(400));
        drop(ledger);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

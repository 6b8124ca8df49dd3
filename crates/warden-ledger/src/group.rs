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

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::merkle::Hash;
use crate::store::{Ledger, Prepared, StoreError};

/// A ledger shared by threads, appending with group commit.
pub struct GroupLedger {
    state: Mutex<State>,
    done: Condvar,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    queue: Vec<(u64, Prepared)>,
    leading: bool,
    results: HashMap<u64, Result<(u64, Hash), StoreError>>,
    /// Commits made and entries in them, for statistics.
    commits: u64,
    entries: u64,
}

impl GroupLedger {
    pub fn new(ledger: Ledger) -> GroupLedger {
        GroupLedger {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            ledger: Mutex::new(ledger),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one event and returns once it is durable: its index and
    /// leaf hash.
    pub fn append(&self, time: u64, kind: &str, event: &Value) -> Result<(u64, Hash), StoreError> {
        self.append_prepared(Prepared::new(time, kind, event))
    }

    /// Appends one prepared event and returns once it is durable.
    pub fn append_prepared(&self, event: Prepared) -> Result<(u64, Hash), StoreError> {
        let mut st = self.state();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, event));
        loop {
            if let Some(result) = st.results.remove(&ticket) {
                return result;
            }
            if st.leading {
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: commit everything queued so far as one transaction.
            st.leading = true;
            let batch = std::mem::take(&mut st.queue);
            drop(st);
            let (tickets, events): (Vec<u64>, Vec<Prepared>) = batch.into_iter().unzip();
            let result = self
                .ledger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append_prepared(&events);
            st = self.state();
            st.leading = false;
            st.commits += 1;
            match result {
                Ok(acks) => {
                    st.entries += acks.len() as u64;
                    for (t, ack) in tickets.into_iter().zip(acks) {
                        st.results.insert(t, Ok(ack));
                    }
                }
                Err(e) => {
                    for t in tickets {
                        st.results.insert(t, Err(e.clone()));
                    }
                }
            }
            self.done.notify_all();
        }
    }

    /// Commits made so far and the entries they held.
    pub fn stats(&self) -> (u64, u64) {
        let st = self.state();
        (st.commits, st.entries)
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
        let (commits, entries) = group.stats();
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

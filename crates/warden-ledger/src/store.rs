//! The ledger on disk: one SQLite database (WAL, `synchronous=FULL`) in
//! the state directory's `ledger/`, holding each entry's exact canonical
//! bytes and leaf hash, the stored hashes of complete subtrees (so a proof
//! reads O(log n) rows), and the signed checkpoints. An append is one
//! transaction: the entries, their nodes, the tree head and — the chain —
//! the previous entry's leaf hash inside each entry's own bytes; SQLite's
//! locking orders appends from many processes, and its journal makes an
//! interrupted append vanish whole.
//!
//! An entry is the RFC 8785 (JCS) canonical JSON of
//! `{"v":1,"index":N,"prev":HEX,"time":SECS,"kind":K,"event":{…}}`.
//!
//! # Layout (`user_version` 2)
//! - `entries(idx, body, leaf)`: the entries; `leaf` is the level-0 node.
//! - `tree(k, v)`: the interior nodes (level ≥ 1) of complete subtrees,
//!   keyed by their position in append order (the "stored hash index" of
//!   Go's `golang.org/x/mod/sumdb/tlog`), so that the nodes one append
//!   adds are the B-tree's last rows and share its last page. The very
//!   last row, `k = i64::MAX`, is the *head*: the size, the last leaf and
//!   the frontier (the roots of the complete subtrees the tree is made
//!   of), so an append reads one row, not one per level, and the head
//!   says how many entries the tree had (a truncated tail shows).
//! - `checkpoints(size, note)`, `meta(key, value)`.
//!
//! # Cost of one append in a fresh process
//! Closing does not checkpoint the WAL (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`)
//! and the WAL file is kept, overwritten in place from its start after
//! each checkpoint (so a commit's fsync does not also commit a size change
//! of the file). A process that opens the database when no other has it
//! open reads the valid part of the WAL to rebuild its index, and then
//! knows nothing of what was already copied into the database; so an
//! append does the checkpoint itself *before* its own write once the head
//! says the WAL holds more than [`CHECKPOINT_PAGES`] pages: its own write
//! then restarts the WAL, and the next process reads only a few pages.
//!
//! # Bulk appends
//! An append of more than 64 entries does not stop for a checkpoint: the
//! ledger starts a checkpointer thread (its own connection) that copies
//! the WAL into the database while the next transaction is written, and
//! every 8 such transactions the writer waits for it so that the WAL
//! restarts. [`Ledger::append_stream`] also writes on a thread of its own
//! while the caller's iterator makes the next batch.

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use crate::canonical;
use crate::merkle::{self, Hash, HashReader, ProofError};

/// The version of the database layout (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 2;

/// The version of the entry encoding.
pub const ENTRY_VERSION: u64 = 1;

/// The key of the head row in `tree`.
const HEAD_KEY: i64 = i64::MAX;

/// An append first checkpoints the WAL when the head estimates it holds
/// at least this many pages written since the last checkpoint.
pub const CHECKPOINT_PAGES: u64 = 32;

/// Appends of at most this many entries checkpoint first (above); larger
/// ones — bulk imports, in one process — leave it to a checkpointer
/// thread, which runs while the next transaction is written.
const SMALL_APPEND: usize = 64;

/// Large appends let the WAL restart (wait for the checkpointer to catch
/// up) every this many transactions.
const RESTART_EVERY: u64 = 8;

/// SQLite's own checkpoint after a commit (pages): a backstop for writers
/// that are not this code (and, times 8, behind the checkpointer thread).
const AUTOCHECKPOINT_PAGES: i64 = 1000;

/// The WAL file is cut back to this size when it restarts (bytes).
const WAL_SIZE_LIMIT: i64 = 8 << 20;

/// `verify` reads the database through a memory map (not a copy of each
/// page by `pread`); other uses do not. (A database file cut shorter while
/// it is mapped would end the process with SIGBUS; the ledger never
/// shrinks its file, so only tampering during a verify could.)
const VERIFY_MMAP: &str = "PRAGMA mmap_size = 1099511627776;";

/// Below this many entries `verify` reads in one thread.
const PARALLEL_VERIFY: u64 = 20_000;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ledger {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("{0}")]
    Proof(#[from] ProofError),
    #[error("cannot encode the entry: {0}")]
    Encode(String),
}

/// The first thing `verify` found wrong, naming the entry.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Tamper {
    #[error("entry {0}: its bytes do not match its leaf hash (changed)")]
    Changed(u64),
    #[error("entry {0}: it names index {1} (moved, inserted or replayed)")]
    Misplaced(u64, u64),
    #[error("entry {0}: its previous-entry hash does not match entry {prev} (deleted, inserted or reordered)", prev = .0.saturating_sub(1))]
    BrokenChain(u64),
    #[error("entry {0}: not canonical JSON of a ledger entry")]
    Malformed(u64),
    #[error("stored tree hashes disagree with the entries at size {0}")]
    Tree(u64),
    #[error("checkpoint of size {size}: {why}")]
    Checkpoint { size: u64, why: String },
    #[error("index {0} is missing (entries are not contiguous)")]
    Gap(u64),
    #[error(
        "entry {entries}: missing; the tree records {recorded} entries (the tail was truncated)"
    )]
    Truncated { entries: u64, recorded: u64 },
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// When small appends checkpoint first (pages in the WAL).
    checkpoint_pages: u64,
    /// The thread that checkpoints behind large appends, once one ran.
    checkpointer: Option<Checkpointer>,
}

struct Checkpointer {
    sync: std::sync::Arc<StreamSync>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Large appends so far.
    commits: u64,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(cp) = &mut self.checkpointer {
            cp.sync.finish();
            if let Some(h) = cp.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// An event made ready to append: its kind and event in canonical form,
/// which do not depend on where in the ledger it lands. Preparing is the
/// JSON work of an append; it can be done before, and on other threads
/// than, the transaction.
#[derive(Clone, Debug)]
pub struct Prepared {
    time: u64,
    kind: Vec<u8>,
    event: Vec<u8>,
}

impl Prepared {
    pub fn new(time: u64, kind: &str, event: &Value) -> Prepared {
        let mut k = Vec::with_capacity(kind.len() + 2);
        canonical::write_str(&mut k, kind);
        let mut e = Vec::with_capacity(256);
        canonical::write_value(&mut e, event);
        Prepared {
            time,
            kind: k,
            event: e,
        }
    }

    /// The entry's bytes at `index` after the entry whose leaf is `prev`.
    fn encode(&self, index: u64, prev: &Hash, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(&self.event);
        out.extend_from_slice(b",\"index\":");
        canonical::write_u64(out, index);
        out.extend_from_slice(b",\"kind\":");
        out.extend_from_slice(&self.kind);
        out.extend_from_slice(b",\"prev\":\"");
        let mut hex = [0u8; 64];
        for (i, b) in prev.iter().enumerate() {
            hex[2 * i] = HEX[(b >> 4) as usize];
            hex[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"\",\"time\":");
        canonical::write_u64(out, self.time);
        out.extend_from_slice(b",\"v\":1}");
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The tree's right edge: what appending needs and the root of the
/// current size, without reading stored nodes.
#[derive(Clone)]
struct Head {
    size: u64,
    /// The last entry's leaf hash (zeros before the first).
    prev: Hash,
    /// At each level `l` whose bit is set in `size`, the root of the
    /// complete subtree of `2^l` leaves that the tree of `size` ends with
    /// at that level.
    frontier: [Hash; 64],
    /// Pages written to the WAL since the last checkpoint (an estimate).
    wal_pages: u64,
}

impl Head {
    fn empty() -> Head {
        Head {
            size: 0,
            prev: [0; 32],
            frontier: [[0; 32]; 64],
            wal_pages: 0,
        }
    }

    /// Adds a leaf; `node` gets each interior node it completes.
    fn push(&mut self, leaf: Hash, mut node: impl FnMut(u8, u64, &Hash)) {
        let n = self.size;
        let (mut level, mut hash) = (0usize, leaf);
        while (n >> level) & 1 == 1 {
            hash = merkle::node_hash(&self.frontier[level], &hash);
            level += 1;
            node(level as u8, n >> level, &hash);
        }
        self.frontier[level] = hash;
        self.prev = leaf;
        self.size = n + 1;
    }

    fn root(&self) -> Hash {
        let mut root: Option<Hash> = None;
        for level in 0..64 {
            if (self.size >> level) & 1 == 1 {
                root = Some(match root {
                    None => self.frontier[level],
                    Some(r) => merkle::node_hash(&self.frontier[level], &r),
                });
            }
        }
        root.unwrap_or_else(merkle::empty_root)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 32 * self.size.count_ones() as usize);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.wal_pages.to_le_bytes());
        out.extend_from_slice(&self.prev);
        for level in 0..64 {
            if (self.size >> level) & 1 == 1 {
                out.extend_from_slice(&self.frontier[level]);
            }
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Head> {
        let size = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let wal_pages = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        let prev: Hash = b.get(16..48)?.try_into().ok()?;
        if b.len() != 48 + 32 * size.count_ones() as usize {
            return None;
        }
        let mut head = Head {
            size,
            prev,
            frontier: [[0; 32]; 64],
            wal_pages,
        };
        let mut at = 48;
        for level in 0..64 {
            if (size >> level) & 1 == 1 {
                head.frontier[level] = b[at..at + 32].try_into().ok()?;
                at += 32;
            }
        }
        Some(head)
    }
}

/// The key of the interior node at `level` ≥ 1, `index` in `tree`: its
/// position when hashes are stored in append order (tlog's
/// `StoredHashIndex`).
fn node_key(level: u8, index: u64) -> i64 {
    let mut n = index;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut i = 0u64;
    while n > 0 {
        i += n;
        n >>= 1;
    }
    (i + level as u64) as i64
}

struct Nodes<'c> {
    conn: &'c Connection,
}

impl HashReader for Nodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let read = |e: rusqlite::Error| ProofError::Read(e.to_string());
        let row: Option<Vec<u8>> = if level == 0 {
            self.conn
                .prepare_cached("SELECT leaf FROM entries WHERE idx = ?1")
                .map_err(read)?
                .query_row(params![index.min(i64::MAX as u64) as i64], |r| r.get(0))
                .optional()
                .map_err(read)?
        } else if level >= 60 || index >= 1 << (60 - level) {
            None
        } else {
            self.conn
                .prepare_cached("SELECT v FROM tree WHERE k = ?1")
                .map_err(read)?
                .query_row(params![node_key(level, index)], |r| r.get(0))
                .optional()
                .map_err(read)?
        };
        row.and_then(|h| h.try_into().ok())
            .ok_or(ProofError::Missing { level, index })
    }
}

/// SQLite's busy handler: short sleeps first (an append holds the write
/// lock for well under a millisecond), about 30 s in all.
fn busy(attempt: i32) -> bool {
    let micros = match attempt {
        0..=49 => 50,
        50..=199 => 200,
        _ => 1000,
    };
    std::thread::sleep(std::time::Duration::from_micros(micros));
    attempt < 200 + 30_000
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_handler(Some(busy))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
         PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};"
    ))?;
    Ok(conn)
}

impl Ledger {
    /// Opens (creating if needed) the ledger database `dir/ledger.db`.
    pub fn open(dir: &Path) -> Result<Ledger, StoreError> {
        let path = dir.join("ledger.db");
        let db = |e: rusqlite::Error| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let conn = open_connection(&path).map_err(db)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        if version == SCHEMA_VERSION {
            return Ok(Ledger {
                conn,
                path,
                checkpoint_pages: CHECKPOINT_PAGES,
                checkpointer: None,
            });
        }
        if version != 0 {
            return Err(StoreError::Db {
                path,
                message: format!(
                    "layout version {version} is not supported (this build reads {SCHEMA_VERSION})"
                ),
            });
        }
        // WAL mode and the schema are kept in the file, made once
        // (user_version says so); two first openers wait for each other.
        conn.execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(db)?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, body BLOB NOT NULL, leaf BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS tree (k INTEGER PRIMARY KEY, v BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO tree (k, v) VALUES ({HEAD_KEY}, x'{}');
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;",
            hex::encode(Head::empty().encode())
        ))
        .map_err(db)?;
        Ok(Ledger {
            conn,
            path,
            checkpoint_pages: CHECKPOINT_PAGES,
            checkpointer: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many pages the WAL may hold before a small append checkpoints
    /// it first ([`CHECKPOINT_PAGES`] unless set). A process that keeps
    /// the ledger open for long (a group committer) can let it grow more:
    /// while any connection is open the WAL index is kept, and only the
    /// first process to open the database after all have closed reads
    /// the WAL.
    pub fn set_checkpoint_pages(&mut self, pages: u64) {
        self.checkpoint_pages = pages.max(1);
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The log's origin (its name in checkpoints), set on first use to
    /// `default` and kept.
    pub fn origin(&self, default: &str) -> Result<String, StoreError> {
        let get = || {
            self.conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'origin'")
                .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
                .map_err(self.db())
        };
        if let Some(origin) = get()? {
            return Ok(origin);
        }
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('origin', ?1)",
                params![default],
            )
            .map_err(self.db())?;
        Ok(get()?.unwrap_or_else(|| default.to_string()))
    }

    /// Number of entries (one more than the last index).
    pub fn size(&self) -> Result<u64, StoreError> {
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT idx FROM entries ORDER BY idx DESC LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(self.db())?;
        Ok(last.map_or(0, |i| (i.max(-1) + 1) as u64))
    }

    /// Appends events (`kind`, JSON object) in one transaction, durable
    /// when this returns; returns the index and leaf hash of each.
    pub fn append(
        &mut self,
        time: u64,
        events: &[(&str, serde_json::Value)],
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let prepared: Vec<Prepared> = events
            .iter()
            .map(|(kind, event)| Prepared::new(time, kind, event))
            .collect();
        self.append_prepared(&prepared)
    }

    /// Appends the events an iterator gives in one transaction and, once
    /// they are durable, calls `ack` with the index and leaf hash of each
    /// in order; returns how many were appended. For bulk imports: call it
    /// with batches of a thousand or so (one fsync each).
    pub fn append_iter<K, V>(
        &mut self,
        time: u64,
        events: impl IntoIterator<Item = (K, V)>,
        mut ack: impl FnMut(u64, &Hash),
    ) -> Result<usize, StoreError>
    where
        K: AsRef<str>,
        V: std::borrow::Borrow<Value>,
    {
        let prepared: Vec<Prepared> = events
            .into_iter()
            .map(|(k, v)| Prepared::new(time, k.as_ref(), v.borrow()))
            .collect();
        let acks = self.append_prepared(&prepared)?;
        for (index, leaf) in &acks {
            ack(*index, leaf);
        }
        Ok(acks.len())
    }

    /// Appends prepared events (each with its own time) in one
    /// transaction, durable when this returns; the index and leaf hash of
    /// each.
    pub fn append_prepared(&mut self, events: &[Prepared]) -> Result<Vec<(u64, Hash)>, StoreError> {
        if events.len() > SMALL_APPEND {
            return self.append_large(events);
        }
        append_tx(&mut self.conn, &self.path, events, self.checkpoint_pages)
    }

    /// Appends a long stream of events — a bulk import — in transactions
    /// of `batch` events, calling `ack` with the index and leaf hash of
    /// each once its transaction is durable; returns how many were
    /// appended. The transactions are written on a second thread while
    /// this one takes events from the iterator (so its work, such as
    /// parsing, overlaps the writes), and the ledger's checkpointer thread
    /// copies the WAL into the database meanwhile (see
    /// [`Ledger::append_prepared`]). On an error, the transactions before
    /// it stay appended (and acknowledged).
    pub fn append_stream(
        &mut self,
        events: impl IntoIterator<Item = Prepared>,
        batch: usize,
        mut ack: impl FnMut(u64, &Hash),
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let mut acked = 0u64;
        let this = &mut *self;
        std::thread::scope(|s| {
            let (to_writer, batches) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(2);
            let (to_caller, acks) = std::sync::mpsc::channel::<Vec<(u64, Hash)>>();
            let writer = s.spawn(move || -> Result<(), StoreError> {
                for events in batches {
                    let result = this.append_large(&events);
                    if to_caller.send(result?).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            let mut each = |a: Vec<(u64, Hash)>| {
                for (index, leaf) in &a {
                    ack(*index, leaf);
                }
                acked += a.len() as u64;
            };
            let mut buf = Vec::with_capacity(batch);
            for event in events {
                buf.push(event);
                if buf.len() == batch {
                    if to_writer.send(std::mem::take(&mut buf)).is_err() {
                        break;
                    }
                    buf.reserve(batch);
                    while let Ok(a) = acks.try_recv() {
                        each(a);
                    }
                }
            }
            if !buf.is_empty() {
                let _ = to_writer.send(buf);
            }
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(StoreError::Encode("the writer thread panicked".into())));
            for a in acks.try_iter() {
                each(a);
            }
            written
        })?;
        Ok(acked)
    }

    /// A large append: its commit does not stop for a checkpoint; the
    /// checkpointer thread (started by the first one) copies the WAL into
    /// the database while the next transaction is written, and every few
    /// transactions this one waits for it to catch up, so that the WAL
    /// restarts instead of growing.
    fn append_large(&mut self, events: &[Prepared]) -> Result<Vec<(u64, Hash)>, StoreError> {
        if self.checkpointer.is_none() {
            let sync = std::sync::Arc::new(StreamSync::default());
            let (shared, path) = (std::sync::Arc::clone(&sync), self.path.clone());
            let handle = std::thread::Builder::new()
                .name("ledger-checkpoint".into())
                .spawn(move || shared.checkpointer(&path))
                .map_err(|e| StoreError::Db {
                    path: self.path.clone(),
                    message: format!("cannot start the checkpointer thread: {e}"),
                })?;
            // SQLite's own checkpoint only as a backstop now.
            self.conn
                .execute_batch(&format!(
                    "PRAGMA wal_autocheckpoint = {};",
                    8 * AUTOCHECKPOINT_PAGES
                ))
                .map_err(self.db())?;
            self.checkpointer = Some(Checkpointer {
                sync,
                handle: Some(handle),
                commits: 0,
            });
        }
        let Some(cp) = self.checkpointer.as_mut() else {
            unreachable!("started above")
        };
        if cp.commits > 0 && cp.commits.is_multiple_of(RESTART_EVERY) {
            cp.sync.wait_checkpointed();
        }
        let result = append_tx(&mut self.conn, &self.path, events, u64::MAX);
        cp.commits += 1;
        cp.sync.committed();
        result
    }

    /// The root hash of the first `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        Ok(merkle::root(size, &Nodes { conn: &self.conn })?)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        Ok(merkle::inclusion_proof(
            index,
            size,
            &Nodes { conn: &self.conn },
        )?)
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        Ok(merkle::consistency_proof(
            old,
            new,
            &Nodes { conn: &self.conn },
        )?)
    }

    /// Signs the tree head of the current size as a C2SP checkpoint with
    /// `key` under the log's `origin`, stores it, and returns the note.
    pub fn checkpoint(
        &mut self,
        origin: &str,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<String, StoreError> {
        let size = self.size()?;
        let cp = crate::note::Checkpoint {
            origin: origin.to_string(),
            size,
            root: self.root(size)?,
        };
        let note = crate::note::sign(&cp.text(), origin, key)
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?1, ?2)",
                params![size as i64, note],
            )
            .map_err(self.db())?;
        Ok(note)
    }

    /// The stored checkpoint notes, by size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, note FROM checkpoints ORDER BY size")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Checks every stored checkpoint against `verifier` and the entries:
    /// its signature, its size (not beyond the entries: a truncated tail)
    /// and its root (the tree of that size as the entries give it).
    pub fn verify_checkpoints(
        &self,
        verifier: &crate::note::Verifier,
        entries: u64,
    ) -> Result<Result<usize, Tamper>, StoreError> {
        let checkpoints = self.checkpoints()?;
        for (size, note) in &checkpoints {
            let bad = |why: String| Ok(Err(Tamper::Checkpoint { size: *size, why }));
            let text = match crate::note::open(note, verifier) {
                Ok(t) => t,
                Err(e) => return bad(e.to_string()),
            };
            let cp = match crate::note::Checkpoint::parse(text) {
                Ok(cp) => cp,
                Err(e) => return bad(e.to_string()),
            };
            if cp.size != *size {
                return bad(format!("it says size {}", cp.size));
            }
            if cp.size > entries {
                return bad(format!(
                    "the ledger has only {entries} entries (the tail was truncated)"
                ));
            }
            if self.root(cp.size)? != cp.root {
                return bad("its root is not the tree of the entries (history rewritten)".into());
            }
        }
        Ok(Ok(checkpoints.len()))
    }

    /// The exact bytes of entries `from..to` in order, to `each`.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, body FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(self.db())?;
        let mut rows = stmt
            .query(params![
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64
            ])
            .map_err(self.db())?;
        while let Some(row) = rows.next().map_err(self.db())? {
            let idx = row.get::<_, i64>(0).map_err(self.db())? as u64;
            let body = row.get_ref(1).map_err(self.db())?;
            let body = body.as_bytes_or_null().ok().flatten().unwrap_or(&[]);
            if let Err(e) = each(idx, body) {
                // A closed reader ends the listing.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(StoreError::Db {
                    path: self.path.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The exact bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT body FROM entries WHERE idx = ?1")
            .and_then(|mut s| {
                s.query_row(params![index.min(i64::MAX as u64) as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(self.db())
    }

    /// Recomputes every leaf, the chain and the tree from the entries'
    /// bytes alone and compares them with what is stored. `Ok(Err(t))`:
    /// the first thing found wrong. A large ledger is read by two threads
    /// (two connections on one snapshot's entries), each half of it.
    pub fn verify(&self) -> Result<Result<u64, Tamper>, StoreError> {
        // One read transaction: the head, the bound and the stored tree
        // are of one moment; entries below the bound never change.
        self.conn.execute_batch(VERIFY_MMAP).map_err(self.db())?;
        let verdict = self.verify_mapped();
        let unmapped = self.conn.execute_batch("PRAGMA mmap_size = 0;");
        let verdict = verdict?;
        unmapped.map_err(self.db())?;
        Ok(verdict)
    }

    fn verify_mapped(&self) -> Result<Result<u64, Tamper>, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.db())?;
        let head_row: Option<Vec<u8>> = tx
            .prepare_cached("SELECT v FROM tree WHERE k = ?1")
            .and_then(|mut s| s.query_row(params![HEAD_KEY], |r| r.get(0)).optional())
            .map_err(self.db())?;
        let head = head_row.as_deref().and_then(Head::decode);
        let last: Option<i64> = tx
            .prepare_cached("SELECT idx FROM entries ORDER BY idx DESC LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(self.db())?;
        let bound = last.map_or(0, |i| i.max(-1) + 1) as u64;
        let (scan, size) = if bound < PARALLEL_VERIFY {
            let s = scan(&tx, i64::MIN, bound, 0, Some([0; 32])).map_err(self.db())?;
            let size = s.next;
            (s, size)
        } else {
            let mid = bound / 2;
            let path = self.path.as_path();
            let second = std::thread::scope(|scope| {
                let other = scope.spawn(move || -> rusqlite::Result<Scan> {
                    let conn = open_connection(path)?;
                    conn.execute_batch(VERIFY_MMAP)?;
                    let t = conn.unchecked_transaction()?;
                    scan(&t, mid as i64, bound, mid, None)
                });
                let first = scan(&tx, i64::MIN, mid, 0, Some([0; 32]));
                let second = other
                    .join()
                    .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery));
                first.and_then(|f| second.map(|s| (f, s)))
            });
            let (mut first, second) = second.map_err(self.db())?;
            if first.tamper.is_none() && first.next != mid {
                first.tamper = Some(Tamper::Gap(first.next));
            }
            if first.tamper.is_none() {
                if let Some(named) = second.first_prev {
                    if named != first.leaves.last().copied().unwrap_or([0; 32]) {
                        first.tamper = Some(Tamper::BrokenChain(mid));
                    }
                }
            }
            if first.tamper.is_none() {
                first.tamper = second.tamper;
                first.leaves.extend_from_slice(&second.leaves);
                first.next = second.next;
            }
            let size = first.next;
            (first, size)
        };
        if let Some(t) = scan.tamper {
            return Ok(Err(t));
        }
        let recorded = head.as_ref().map_or(0, |h| h.size);
        if recorded > size {
            return Ok(Err(Tamper::Truncated {
                entries: size,
                recorded,
            }));
        }
        let computed = root_of(&scan.leaves);
        let stored = merkle::root(size, &Nodes { conn: &tx }).unwrap_or([0; 32]);
        // The head an append continues from: of this size, this tree and
        // this last entry.
        let head_ok = head.as_ref().is_some_and(|h| {
            h.size == size
                && h.root() == computed
                && h.prev == scan.leaves.last().copied().unwrap_or([0; 32])
        });
        if computed != stored || !head_ok {
            return Ok(Err(Tamper::Tree(size)));
        }
        Ok(Ok(size))
    }
}

/// One append transaction (see [`Ledger::append_prepared`]); the WAL is
/// checkpointed before it when the head says it holds `checkpoint_at`
/// pages or more.
fn append_tx(
    conn: &mut Connection,
    path: &Path,
    events: &[Prepared],
    checkpoint_at: u64,
) -> Result<Vec<(u64, Hash)>, StoreError> {
    let db = |e: rusqlite::Error| StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut checkpointed = false;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db)?;
        let mut head = read_head(&tx).map_err(&db)?.ok_or_else(|| StoreError::Db {
            path: path.to_path_buf(),
            message: "the tree head is missing or malformed".into(),
        })?;
        if head.wal_pages >= checkpoint_at && !checkpointed {
            // Copy the WAL into the database before writing, so that
            // this transaction restarts the WAL (see the module note).
            drop(tx);
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            checkpointed = true;
            continue;
        }
        if checkpointed {
            head.wal_pages = 0;
        }
        let mut out = Vec::with_capacity(events.len());
        let mut bytes = 0u64;
        {
            let mut insert_entry = tx
                .prepare_cached("INSERT INTO entries (idx, body, leaf) VALUES (?1, ?2, ?3)")
                .map_err(&db)?;
            let mut insert_node = tx
                .prepare_cached("INSERT INTO tree (k, v) VALUES (?1, ?2)")
                .map_err(&db)?;
            let mut body = Vec::with_capacity(512);
            let mut nodes: Vec<(u8, u64, Hash)> = Vec::with_capacity(8);
            for event in events {
                let n = head.size;
                if n >= i64::MAX as u64 / 4 {
                    return Err(StoreError::Encode("the ledger is full".into()));
                }
                event.encode(n, &head.prev, &mut body);
                let leaf = merkle::leaf_hash(&body);
                insert_entry
                    .execute(params![n as i64, body, leaf.as_slice()])
                    .map_err(&db)?;
                nodes.clear();
                head.push(leaf, |level, index, hash| nodes.push((level, index, *hash)));
                for (level, index, hash) in &nodes {
                    insert_node
                        .execute(params![node_key(*level, *index), hash.as_slice()])
                        .map_err(&db)?;
                }
                bytes += body.len() as u64 + 48 + 44 * nodes.len() as u64;
                out.push((n, leaf));
            }
        }
        head.wal_pages += 2 + bytes / 4096;
        tx.prepare_cached("UPDATE tree SET v = ?1 WHERE k = ?2")
            .and_then(|mut s| s.execute(params![head.encode(), HEAD_KEY]))
            .map_err(&db)?;
        tx.commit().map_err(&db)?;
        return Ok(out);
    }
}

/// What a ledger's large appends and its checkpointer thread tell each
/// other.
#[derive(Default)]
struct StreamSync {
    state: std::sync::Mutex<StreamState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct StreamState {
    committed: u64,
    checkpointed: u64,
    finished: bool,
    checkpointer_gone: bool,
}

impl StreamSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn committed(&self) {
        self.lock().committed += 1;
        self.changed.notify_all();
    }

    fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }

    /// Until a checkpoint begun after the last commit has ended.
    fn wait_checkpointed(&self) {
        let mut st = self.lock();
        while st.checkpointed < st.committed && !st.checkpointer_gone {
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The checkpointer's loop: after each commit, copy what the WAL
    /// holds into the database (PASSIVE: never waiting for the writer).
    fn checkpointer(&self, path: &Path) {
        if let Ok(conn) = open_connection(path) {
            loop {
                let target = {
                    let mut st = self.lock();
                    while st.checkpointed == st.committed && !st.finished {
                        st = self
                            .changed
                            .wait(st)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    if st.checkpointed == st.committed {
                        break;
                    }
                    st.committed
                };
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                self.lock().checkpointed = target;
                self.changed.notify_all();
            }
        }
        self.lock().checkpointer_gone = true;
        self.changed.notify_all();
    }
}

fn read_head(conn: &Connection) -> rusqlite::Result<Option<Head>> {
    let row: Option<Vec<u8>> = conn
        .prepare_cached("SELECT v FROM tree WHERE k = ?1")?
        .query_row(params![HEAD_KEY], |r| r.get(0))
        .optional()?;
    Ok(row.as_deref().and_then(Head::decode))
}

/// What one thread of `verify` found in its range of entries.
struct Scan {
    leaves: Vec<Hash>,
    /// The index after the last entry read.
    next: u64,
    /// The previous-entry hash the first entry names, when the caller did
    /// not know it (to be checked against the range before).
    first_prev: Option<Hash>,
    tamper: Option<Tamper>,
}

/// Checks the entries with `from <= idx < to`, expecting them to be
/// `start, start+1, …` chained from `prev` (or, with `None`, from
/// whatever the first names).
fn scan(
    conn: &Connection,
    from: i64,
    to: u64,
    start: u64,
    mut prev: Option<Hash>,
) -> rusqlite::Result<Scan> {
    let mut out = Scan {
        leaves: Vec::with_capacity(to.saturating_sub(start).min(1 << 26) as usize),
        next: start,
        first_prev: None,
        tamper: None,
    };
    let mut stmt = conn.prepare_cached(
        "SELECT idx, body, leaf FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let mut rows = stmt.query(params![from, to.min(i64::MAX as u64) as i64])?;
    while let Some(row) = rows.next()? {
        let idx = row.get::<_, i64>(0)?;
        let expected = out.next;
        if idx < 0 || idx as u64 != expected {
            out.tamper = Some(Tamper::Gap(expected));
            break;
        }
        let body = row.get_ref(1)?.as_bytes_or_null()?.unwrap_or(&[]);
        let stored = row.get_ref(2)?.as_bytes_or_null()?.unwrap_or(&[]);
        let leaf = merkle::leaf_hash(body);
        if stored != leaf {
            out.tamper = Some(Tamper::Changed(expected));
            break;
        }
        let Some((named, named_prev)) = canonical::check_entry(body) else {
            out.tamper = Some(Tamper::Malformed(expected));
            break;
        };
        if named != expected {
            out.tamper = Some(Tamper::Misplaced(expected, named));
            break;
        }
        match prev {
            Some(p) if p != named_prev => {
                out.tamper = Some(Tamper::BrokenChain(expected));
                break;
            }
            Some(_) => {}
            None => out.first_prev = Some(named_prev),
        }
        out.leaves.push(leaf);
        prev = Some(leaf);
        out.next += 1;
    }
    Ok(out)
}

/// The RFC 9162 root of a list of leaf hashes, folding a frontier.
fn root_of(leaves: &[Hash]) -> Hash {
    let mut head = Head::empty();
    for leaf in leaves {
        head.push(*leaf, |_, _, _| {});
    }
    head.root()
}

/// The canonical bytes of an entry.
pub fn encode_entry(
    index: u64,
    prev: &Hash,
    time: u64,
    kind: &str,
    event: &serde_json::Value,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    Prepared::new(time, kind, event).encode(index, prev, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-ledger-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn event(i: u64) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({"argv": ["python3", format!("job{i}.py")], "status": "exited"}),
        )
    }

    /// The encoding before it was written by hand: the whole entry through
    /// the reference canonicalizer.
    fn reference_entry(index: u64, prev: &Hash, time: u64, kind: &str, event: &Value) -> Vec<u8> {
        let entry = serde_json::json!({
            "v": ENTRY_VERSION,
            "index": index,
            "prev": hex::encode(prev),
            "time": time,
            "kind": kind,
            "event": event,
        });
        serde_json_canonicalizer::to_vec(&entry).unwrap()
    }

    proptest! {
        #[test]
        fn entries_encode_as_the_reference_does(index in any::<u64>(), time in any::<u64>(),
                                                 kind in "\\PC{0,8}", s in "\\PC{0,8}", n in any::<i64>(), p in any::<[u8; 32]>()) {
            let ev = serde_json::json!({"s": s, "n": n, "list": [1.5, null, true, {"é": "\u{1}"}]});
            let body = encode_entry(index, &p, time, &kind, &ev).unwrap();
            prop_assert_eq!(&body, &reference_entry(index, &p, time, &kind, &ev));
            if index <= 1 << 53 {
                prop_assert_eq!(canonical::check_entry(&body), Some((index, p)));
            }
        }
    }

    #[test]
    fn node_keys_are_append_order() {
        // Leaves and nodes in the order appends store them: each key once,
        // increasing.
        let mut keys = Vec::new();
        let mut head = Head::empty();
        for n in 0..1000u64 {
            keys.push(node_key(0, n));
            head.push([0; 32], |l, i, _| keys.push(node_key(l, i)));
        }
        assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{keys:?}");
        // The node (level 3, index 0) that a tampering test changes.
        assert_eq!(node_key(3, 0), 14);
    }

    #[test]
    fn head_frontier_gives_the_root_and_survives_encoding() {
        let mut head = Head::empty();
        let mut tree = merkle::MemoryHashes::default();
        for n in 0..300u64 {
            let leaf = merkle::leaf_hash(&n.to_le_bytes());
            head.push(leaf, |_, _, _| {});
            tree.push(leaf);
            assert_eq!(head.root(), merkle::root(n + 1, &tree).unwrap());
            let back = Head::decode(&head.encode()).unwrap();
            assert_eq!(back.root(), head.root());
            assert_eq!(back.size, head.size);
        }
        assert!(Head::decode(&head.encode()[1..]).is_none());
    }

    #[test]
    fn entries_are_canonical_chained_and_provable() {
        let dir = temp("prove");
        let mut l = Ledger::open(&dir).unwrap();
        let events: Vec<_> = (0..37).map(event).collect();
        let acks = l.append(1_700_000_000, &events).unwrap();
        assert_eq!(acks.len(), 37);
        assert_eq!(l.size().unwrap(), 37);
        let body = l.entry(5).unwrap().unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(
            text.starts_with("{\"event\":{\"argv\":"),
            "keys sorted: {text}"
        );
        assert!(text.contains(&format!("\"prev\":\"{}\"", hex::encode(acks[4].1))));
        assert_eq!(
            body,
            reference_entry(5, &acks[4].1, 1_700_000_000, "run", &events[5].1)
        );
        for size in [1u64, 2, 7, 16, 37] {
            let root = l.root(size).unwrap();
            for index in 0..size {
                let p = l.inclusion_proof(index, size).unwrap();
                merkle::verify_inclusion(index, size, &acks[index as usize].1, &p, &root).unwrap();
            }
            let c = l.consistency_proof(size, 37).unwrap();
            merkle::verify_consistency(size, 37, &root, &l.root(37).unwrap(), &c).unwrap();
        }
        assert_eq!(l.verify().unwrap(), Ok(37));
        // Reopened: appends continue the chain.
        drop(l);
        let mut l = Ledger::open(&dir).unwrap();
        let more = l.append(1_700_000_001, &[event(99)]).unwrap();
        assert_eq!(more[0].0, 37);
        assert_eq!(l.verify().unwrap(), Ok(38));
        // The iterator form, acknowledging after the commit.
        let mut seen = Vec::new();
        let n = l
            .append_iter(5, (0..3).map(event), |i, h| seen.push((i, *h)))
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [38, 39, 40]);
        assert_eq!(l.verify().unwrap(), Ok(41));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stream_is_appended_in_order_and_acknowledged_once_each() {
        let dir = temp("stream");
        let mut l = Ledger::open(&dir).unwrap();
        l.append(1, &[event(0)]).unwrap();
        let mut acks = Vec::new();
        let events = (1..5001).map(|i| Prepared::new(2, "run", &event(i).1));
        let n = l
            .append_stream(events, 300, |i, h| acks.push((i, *h)))
            .unwrap();
        assert_eq!(n, 5000);
        assert_eq!(
            acks.iter().map(|a| a.0).collect::<Vec<_>>(),
            (1..5001).collect::<Vec<_>>()
        );
        for (i, h) in acks.iter().step_by(97) {
            assert_eq!(merkle::leaf_hash(&l.entry(*i).unwrap().unwrap()), *h);
        }
        assert_eq!(l.verify().unwrap(), Ok(5001));
        // Single appends go on from there, and an empty stream is nothing.
        assert_eq!(l.append(3, &[event(9)]).unwrap()[0].0, 5001);
        assert_eq!(
            l.append_stream(std::iter::empty(), 10, |_, _| {}).unwrap(),
            0
        );
        assert_eq!(l.verify().unwrap(), Ok(5002));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Many appends of one entry, as many processes make them: the WAL is
    /// checkpointed along the way and everything stays provable.
    #[test]
    fn many_small_appends_checkpoint_and_verify() {
        let dir = temp("small");
        for round in 0..4u64 {
            let mut l = Ledger::open(&dir).unwrap();
            for i in 0..60 {
                l.append(round, &[event(i)]).unwrap();
            }
        }
        let l = Ledger::open(&dir).unwrap();
        assert_eq!(l.verify().unwrap(), Ok(240));
        let root = l.root(240).unwrap();
        let leaf = merkle::leaf_hash(&l.entry(200).unwrap().unwrap());
        let p = l.inclusion_proof(200, 240).unwrap();
        merkle::verify_inclusion(200, 240, &leaf, &p, &root).unwrap();
        // The WAL did not grow without bound.
        let wal = std::fs::metadata(dir.join("ledger.db-wal")).unwrap().len();
        assert!(wal < (CHECKPOINT_PAGES + 16) * 4200, "{wal}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_ledger_verifies_in_two_halves_and_names_the_first_fault() {
        let dir = temp("large");
        let mut l = Ledger::open(&dir).unwrap();
        let n = PARALLEL_VERIFY + 1001;
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            l.append(1, &chunk.iter().map(|i| event(*i)).collect::<Vec<_>>())
                .unwrap();
        }
        assert_eq!(l.verify().unwrap(), Ok(n));
        let mid = n / 2;
        // A forged entry at the start of the second half, leaf recomputed:
        // the chain into it breaks.
        let forged = encode_entry(mid, &[9; 32], 1, "run", &serde_json::json!({})).unwrap();
        let leaf = merkle::leaf_hash(&forged);
        let save = l.entry(mid).unwrap().unwrap();
        let save_leaf = merkle::leaf_hash(&save);
        let set = |l: &Ledger, b: &[u8], h: &Hash, i: u64| {
            l.conn
                .execute(
                    "UPDATE entries SET body = ?1, leaf = ?2 WHERE idx = ?3",
                    params![b, h.as_slice(), i as i64],
                )
                .unwrap();
        };
        set(&l, &forged, &leaf, mid);
        assert_eq!(l.verify().unwrap(), Err(Tamper::BrokenChain(mid)));
        set(&l, &save, &save_leaf, mid);
        // A change in each half: the first half's is named.
        l.conn
            .execute_batch(&format!(
                "UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), 'job', 'jab') AS BLOB) WHERE idx IN (17, {});",
                mid + 5
            ))
            .unwrap();
        assert_eq!(l.verify().unwrap(), Err(Tamper::Changed(17)));
        l.conn
            .execute("DELETE FROM entries WHERE idx = 17", [])
            .unwrap();
        assert_eq!(l.verify().unwrap(), Err(Tamper::Gap(17)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each tamper, done with SQLite itself as root on the host could.
    #[test]
    fn checkpoints_are_signed_and_checked() {
        let dir = temp("checkpoints");
        let mut l = Ledger::open(&dir).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let v = crate::note::Verifier::new("test.log", key.verifying_key()).unwrap();
        l.append(1, &(0..10).map(event).collect::<Vec<_>>())
            .unwrap();
        let note = l.checkpoint("test.log", &key).unwrap();
        assert!(note.starts_with("test.log\n10\n"), "{note}");
        assert_eq!(l.verify_checkpoints(&v, 10).unwrap(), Ok(1));
        // The tail's entry, its tree row and the head rolled back together:
        // only the checkpoint still knows there were ten.
        let mut head = Head::empty();
        for i in 0..9 {
            head.push(
                merkle::leaf_hash(&l.entry(i).unwrap().unwrap()),
                |_, _, _| {},
            );
        }
        l.conn
            .execute_batch(&format!(
                "DELETE FROM entries WHERE idx = 9; DELETE FROM tree WHERE k = {};",
                node_key(1, 4)
            ))
            .unwrap();
        l.conn
            .execute(
                "UPDATE tree SET v = ?1 WHERE k = ?2",
                params![head.encode(), HEAD_KEY],
            )
            .unwrap();
        assert_eq!(l.verify().unwrap(), Ok(9));
        assert!(matches!(
            l.verify_checkpoints(&v, 9).unwrap(),
            Err(Tamper::Checkpoint { size: 10, .. })
        ));
        // A checkpoint signed by another key is refused.
        let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let forged = l.checkpoint("test.log", &other).unwrap();
        assert!(forged.contains("test.log"));
        assert!(matches!(
            l.verify_checkpoints(&v, 9).unwrap(),
            Err(Tamper::Checkpoint { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tampering_is_found_and_named() {
        let cases: &[(&str, &str, Tamper)] = &[
            (
                "flip",
                "UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), 'job3', 'jobX') AS BLOB) WHERE idx = 3",
                Tamper::Changed(3),
            ),
            (
                "delete-tail",
                "DELETE FROM entries WHERE idx = 9",
                Tamper::Truncated {
                    entries: 9,
                    recorded: 10,
                },
            ),
            ("delete", "DELETE FROM entries WHERE idx = 4", Tamper::Gap(4)),
            (
                "swap",
                "UPDATE entries SET idx = -1 WHERE idx = 2; UPDATE entries SET idx = 2 WHERE idx = 6; UPDATE entries SET idx = 6 WHERE idx = -1;",
                Tamper::Misplaced(2, 6),
            ),
            (
                "node",
                "UPDATE tree SET v = zeroblob(32) WHERE k = 14",
                Tamper::Tree(10),
            ),
            (
                "head",
                "UPDATE tree SET v = zeroblob(48) WHERE k = 9223372036854775807",
                Tamper::Tree(10),
            ),
            (
                "spaced",
                "UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), '\"status\":', '\"status\": ') AS BLOB) WHERE idx = 5",
                Tamper::Changed(5),
            ),
        ];
        for (tag, sql, want) in cases {
            let dir = temp(tag);
            let mut l = Ledger::open(&dir).unwrap();
            l.append(1, &(0..10).map(event).collect::<Vec<_>>())
                .unwrap();
            l.conn.execute_batch(sql).unwrap();
            assert_eq!(l.verify().unwrap(), Err(want.clone()), "{tag}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // A rewritten entry with a recomputed leaf hash: its successor's
        // chain link no longer matches.
        let dir = temp("rewrite");
        let mut l = Ledger::open(&dir).unwrap();
        l.append(1, &(0..10).map(event).collect::<Vec<_>>())
            .unwrap();
        let forged = encode_entry(
            3,
            &l.verify_prev(3),
            1,
            "run",
            &serde_json::json!({"forged": true}),
        )
        .unwrap();
        let leaf = merkle::leaf_hash(&forged);
        l.conn
            .execute(
                "UPDATE entries SET body = ?1, leaf = ?2 WHERE idx = 3",
                params![forged, leaf.as_slice()],
            )
            .unwrap();
        assert_eq!(l.verify().unwrap(), Err(Tamper::BrokenChain(4)));
        // Non-canonical bytes with a matching leaf hash: malformed.
        let spaced = String::from_utf8(l.entry(6).unwrap().unwrap())
            .unwrap()
            .replace("\"status\":", "\"status\": ");
        let leaf = merkle::leaf_hash(spaced.as_bytes());
        l.conn
            .execute(
                "UPDATE entries SET body = ?1, leaf = ?2 WHERE idx = 6",
                params![spaced.as_bytes(), leaf.as_slice()],
            )
            .unwrap();
        // Entry 4 still comes first.
        assert_eq!(l.verify().unwrap(), Err(Tamper::BrokenChain(4)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_layout_is_refused_by_name() {
        let dir = temp("old");
        std::fs::create_dir_all(&dir).unwrap();
        let c = Connection::open(dir.join("ledger.db")).unwrap();
        c.execute_batch("PRAGMA user_version = 1;").unwrap();
        drop(c);
        let err = Ledger::open(&dir).err().unwrap().to_string();
        assert!(
            err.ends_with("layout version 1 is not supported (this build reads 2)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    impl Ledger {
        fn verify_prev(&self, index: u64) -> Hash {
            let leaf: Vec<u8> = self
                .conn
                .query_row(
                    "SELECT leaf FROM entries WHERE idx = ?1",
                    params![index as i64 - 1],
                    |r| r.get(0),
                )
                .unwrap();
            leaf.try_into().unwrap()
        }
    }
}

//! The ledger on disk: one SQLite database (WAL, `synchronous=FULL`) in
//! the state directory's `ledger/`, holding each entry's exact canonical
//! bytes and leaf hash, the stored hashes of complete subtrees (so a proof
//! reads O(log n) rows), and the signed checkpoints. An append is one
//! transaction: the entry, its nodes, and — the chain — the previous
//! entry's leaf hash inside the entry's own bytes; SQLite's locking orders
//! appends from many processes, and its journal makes an interrupted
//! append vanish whole.
//!
//! An entry is the RFC 8785 (JCS) canonical JSON of
//! `{"v":1,"index":N,"prev":HEX,"time":SECS,"kind":K,"event":{…}}`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::merkle::{self, Hash, HashReader, ProofError};

/// The version of the database layout (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

/// The version of the entry encoding.
pub const ENTRY_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
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
}

struct Nodes<'c> {
    conn: &'c Connection,
}

impl HashReader for Nodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let row: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2",
                params![level, index as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| ProofError::Read(e.to_string()))?;
        row.and_then(|h| h.try_into().ok())
            .ok_or(ProofError::Missing { level, index })
    }
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
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db)?;
        // Durability of every commit; WAL mode and the schema are kept in
        // the file, made once (user_version says so).
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(db)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        if version == SCHEMA_VERSION {
            return Ok(Ledger { conn, path });
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, body BLOB NOT NULL, leaf BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             PRAGMA user_version = 1;",
        )
        .map_err(db)?;
        Ok(Ledger { conn, path })
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
                .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| {
                    r.get(0)
                })
                .optional()
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

    /// Number of entries.
    pub fn size(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .map_err(self.db())?;
        Ok(n as u64)
    }

    /// Appends events (`kind`, JSON object) in one transaction, durable
    /// when this returns; returns the index and leaf hash of each.
    pub fn append(
        &mut self,
        time: u64,
        events: &[(&str, serde_json::Value)],
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let path = self.path.clone();
        let db = move |e: rusqlite::Error| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db)?;
        let (mut n, mut prev): (u64, Hash) = match tx
            .query_row(
                "SELECT idx, leaf FROM entries ORDER BY idx DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(&db)?
        {
            Some((i, leaf)) => (i as u64 + 1, leaf.try_into().unwrap_or([0; 32])),
            None => (0, [0; 32]),
        };
        let mut out = Vec::with_capacity(events.len());
        {
            let mut insert_entry = tx
                .prepare_cached("INSERT INTO entries (idx, body, leaf) VALUES (?1, ?2, ?3)")
                .map_err(&db)?;
            let mut insert_node = tx
                .prepare_cached("INSERT INTO nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
                .map_err(&db)?;
            for (kind, event) in events {
                let body = encode_entry(n, &prev, time, kind, event)?;
                let leaf = merkle::leaf_hash(&body);
                insert_entry
                    .execute(params![n as i64, body, leaf.as_slice()])
                    .map_err(&db)?;
                for (level, index, hash) in merkle::nodes_for_append(n, leaf, &Nodes { conn: &tx })?
                {
                    insert_node
                        .execute(params![level, index as i64, hash.as_slice()])
                        .map_err(&db)?;
                }
                out.push((n, leaf));
                prev = leaf;
                n += 1;
            }
        }
        tx.commit().map_err(&db)?;
        Ok(out)
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
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")
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
            .prepare("SELECT idx, body FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
            .map_err(self.db())?;
        let mut rows = stmt
            .query(params![
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64
            ])
            .map_err(self.db())?;
        while let Some(row) = rows.next().map_err(self.db())? {
            let idx = row.get::<_, i64>(0).map_err(self.db())? as u64;
            let body: Vec<u8> = row.get(1).map_err(self.db())?;
            if let Err(e) = each(idx, &body) {
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
            .query_row(
                "SELECT body FROM entries WHERE idx = ?1",
                params![index as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db())
    }

    /// Recomputes every leaf, the chain and the tree from the entries'
    /// bytes alone and compares them with what is stored. `Ok(Err(t))`:
    /// the first thing found wrong.
    pub fn verify(&self) -> Result<Result<u64, Tamper>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, body, leaf FROM entries ORDER BY idx")
            .map_err(self.db())?;
        let mut rows = stmt.query([]).map_err(self.db())?;
        let mut tree = merkle::MemoryHashes::default();
        let mut prev: Hash = [0; 32];
        let mut expected = 0u64;
        while let Some(row) = rows.next().map_err(self.db())? {
            let idx = row.get::<_, i64>(0).map_err(self.db())? as u64;
            let body: Vec<u8> = row.get(1).map_err(self.db())?;
            let stored: Vec<u8> = row.get(2).map_err(self.db())?;
            if idx != expected {
                return Ok(Err(Tamper::Gap(expected)));
            }
            let leaf = merkle::leaf_hash(&body);
            if stored != leaf {
                return Ok(Err(Tamper::Changed(idx)));
            }
            let Some((named, named_prev)) = entry_position(&body) else {
                return Ok(Err(Tamper::Malformed(idx)));
            };
            if named != idx {
                return Ok(Err(Tamper::Misplaced(idx, named)));
            }
            if named_prev != prev {
                return Ok(Err(Tamper::BrokenChain(idx)));
            }
            tree.push(leaf);
            prev = leaf;
            expected += 1;
        }
        let size = expected;
        let recorded: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM nodes WHERE level = 0", [], |r| {
                r.get(0)
            })
            .map_err(self.db())?;
        if recorded as u64 > size {
            return Ok(Err(Tamper::Truncated {
                entries: size,
                recorded: recorded as u64,
            }));
        }
        if size > 0 && merkle::root(size, &tree)? != self.root(size).unwrap_or([0; 32]) {
            return Ok(Err(Tamper::Tree(size)));
        }
        Ok(Ok(size))
    }
}

/// The canonical bytes of an entry.
pub fn encode_entry(
    index: u64,
    prev: &Hash,
    time: u64,
    kind: &str,
    event: &serde_json::Value,
) -> Result<Vec<u8>, StoreError> {
    let entry = serde_json::json!({
        "v": ENTRY_VERSION,
        "index": index,
        "prev": hex::encode(prev),
        "time": time,
        "kind": kind,
        "event": event,
    });
    serde_json_canonicalizer::to_vec(&entry).map_err(|e| StoreError::Encode(e.to_string()))
}

/// The index and previous-entry hash an entry's bytes name, if they are
/// the canonical encoding of an entry.
fn entry_position(body: &[u8]) -> Option<(u64, Hash)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if serde_json_canonicalizer::to_vec(&v).ok()? != body || v["v"] != ENTRY_VERSION {
        return None;
    }
    let index = v["index"].as_u64()?;
    let prev: Hash = hex::decode(v["prev"].as_str()?).ok()?.try_into().ok()?;
    Some((index, prev))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Entry and node rows of the tail deleted together: only the
        // checkpoint still knows there were ten.
        l.conn
            .execute_batch("DELETE FROM entries WHERE idx = 9; DELETE FROM nodes WHERE level = 0 AND idx = 9; DELETE FROM nodes WHERE level = 1 AND idx = 4;")
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

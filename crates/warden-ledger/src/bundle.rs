//! The offline audit bundle (`warden audit export` / `warden audit verify
//! --bundle`): one JSON file holding a signed checkpoint, a contiguous
//! range of entries with their exact canonical bytes, and each entry's
//! RFC 9162 inclusion proof against that checkpoint, so that the range can
//! be checked with the log's verifier key alone, far from the ledger.
//! `docs/audit.md` describes the format for independent verifiers.
//!
//! ```text
//! {"format":"warden-audit-bundle/v1","checkpoint":NOTE,"from":F,"to":T,"entries":[
//! {"index":F,"entry":BASE64(bytes),"audit_path":[BASE64(hash),…]},
//! …]}
//! ```
//!
//! The range is half-open, `from..to`, and never empty; `to` is at most
//! the checkpoint's tree size and every proof is against that size.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash, ProofError};
use crate::note::{self, Checkpoint, NoteError, Verifier};
use crate::store::{Ledger, StoreError, ENTRY_VERSION};

/// The value of the bundle's `format` field.
pub const FORMAT: &str = "warden-audit-bundle/v1";

/// Bundles larger than this are refused before parsing (1 GiB: about
/// 900,000 entries of typical size with their proofs).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

/// The fields of a ledger entry, in canonical (sorted) order.
const ENTRY_FIELDS: [&str; 6] = ["event", "index", "kind", "prev", "time", "v"];

/// The first thing found wrong with a bundle (or, for [`build`], with
/// what it was asked to export). Messages are one line and name the
/// first bad entry.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("malformed bundle: {size} bytes, more than the cap of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("unsupported bundle format {0:?} (this verifier reads {FORMAT:?})")]
    UnsupportedFormat(String),
    #[error("checkpoint: malformed: {0}")]
    CheckpointMalformed(String),
    #[error("checkpoint: not signed by key {0}")]
    CheckpointNotSigned(String),
    #[error("checkpoint: signature does not verify with key {0}")]
    CheckpointBadSignature(String),
    #[error("checkpoint: its origin {origin:?} is not the key's name {key:?}")]
    CheckpointOrigin { origin: String, key: String },
    #[error("checkpoint: its root is not the ledger's tree of size {0}")]
    CheckpointNotLedger(u64),
    #[error("range {from}..{to} is empty")]
    EmptyRange { from: u64, to: u64 },
    #[error("range {from}..{to} goes beyond the checkpoint's tree size {size}")]
    RangeBeyondCheckpoint { from: u64, to: u64, size: u64 },
    #[error("entry {expected}: the bundle has entry {found} in its place (entries missing, repeated or reordered)")]
    Misplaced { expected: u64, found: u64 },
    #[error("entry {0}: missing (the bundle's entries end before its range does)")]
    Missing(u64),
    #[error("entry {0}: beyond the bundle's range (more entries than the range holds)")]
    Extra(u64),
    #[error("entry {index}: inclusion proof has {got} hashes, not as many as a tree of size {size} needs")]
    ProofLength { index: u64, got: usize, size: u64 },
    #[error("entry {0}: inclusion proof does not lead to the checkpoint root")]
    ProofMismatch(u64),
    #[error("entry {0}: bytes are not the canonical encoding")]
    NotCanonical(u64),
    #[error("entry {index}: not a ledger entry: {why}")]
    NotAnEntry { index: u64, why: String },
    #[error("entry {index}: its bytes name index {named}")]
    WrongIndex { index: u64, named: u64 },
    #[error("entry {0}: {why}", why = chain_why(*.0))]
    BrokenChain(u64),
    #[error("entry {0}: missing from the ledger")]
    LedgerGap(u64),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("writing the bundle: {0}")]
    Write(#[source] std::io::Error),
}

fn chain_why(index: u64) -> String {
    if index == 0 {
        "its prev is not 64 zeros (the first entry of the ledger has no predecessor)".into()
    } else {
        format!(
            "its prev is not the leaf hash of entry {} (entries deleted, inserted or reordered)",
            index - 1
        )
    }
}

/// What a verified bundle proves: entries `from..to` are in the log
/// `origin`'s tree of `tree_size` entries with root `root`, signed by the
/// verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
    pub from: u64,
    pub to: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entries {}..{} ({}) are in {}'s signed tree of {} entries, root {}",
            self.from,
            self.to,
            self.to - self.from,
            self.origin,
            self.tree_size,
            STANDARD.encode(self.root)
        )
    }
}

/// The bundle as parsed, strictly: every field required, none other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    format: String,
    checkpoint: String,
    from: u64,
    to: u64,
    entries: Vec<BundleEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleEntry {
    index: u64,
    entry: String,
    audit_path: Vec<String>,
}

/// Only the format, read first so that a later version is named as such
/// rather than refused for its unknown fields.
#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
}

/// The checkpoint of a note's text (the part before its signatures),
/// not checking any signature.
fn unsigned_checkpoint(note: &str) -> Result<Checkpoint, BundleError> {
    if note.len() > note::MAX_NOTE_BYTES {
        return Err(BundleError::CheckpointMalformed(format!(
            "larger than {} bytes",
            note::MAX_NOTE_BYTES
        )));
    }
    let split = note.rfind("\n\n").ok_or_else(|| {
        BundleError::CheckpointMalformed("no blank line before the signatures".into())
    })?;
    Checkpoint::parse(&note[..split + 1])
        .map_err(|e| BundleError::CheckpointMalformed(e.to_string()))
}

/// Writes the bundle of entries `from..to` of `ledger` with their proofs
/// against `checkpoint_note` (a signed checkpoint of this ledger, as
/// [`Ledger::checkpoint`] or [`Ledger::checkpoints`] gives it) to `out`,
/// one entry per line, reading one entry at a time.
pub fn write(
    ledger: &Ledger,
    from: u64,
    to: u64,
    checkpoint_note: &str,
    out: &mut dyn Write,
) -> Result<(), BundleError> {
    let cp = unsigned_checkpoint(checkpoint_note)?;
    if from >= to {
        return Err(BundleError::EmptyRange { from, to });
    }
    if to > cp.size {
        return Err(BundleError::RangeBeyondCheckpoint {
            from,
            to,
            size: cp.size,
        });
    }
    if ledger.size()? < cp.size || ledger.root(cp.size)? != cp.root {
        return Err(BundleError::CheckpointNotLedger(cp.size));
    }
    let json = |s: &str| serde_json::Value::from(s).to_string();
    write!(
        out,
        "{{\"format\":{},\"checkpoint\":{},\"from\":{from},\"to\":{to},\"entries\":[",
        json(FORMAT),
        json(checkpoint_note)
    )
    .map_err(BundleError::Write)?;
    let mut next = from;
    let mut failed: Option<BundleError> = None;
    // Errors are kept here and the listing stopped with one of our own
    // (the store would turn a broken pipe into success).
    let stop = || std::io::Error::other("bundle export stopped");
    let listed = ledger.entries(from, to, |index, body| {
        if index != next {
            failed = Some(BundleError::LedgerGap(next));
            return Err(stop());
        }
        let path = match ledger.inclusion_proof(index, cp.size) {
            Ok(p) => p,
            Err(e) => {
                failed = Some(e.into());
                return Err(stop());
            }
        };
        let mut line = format!(
            "{}{{\"index\":{index},\"entry\":\"{}\",\"audit_path\":[",
            if index == from { "\n" } else { ",\n" },
            STANDARD.encode(body)
        );
        for (i, h) in path.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push('"');
            line.push_str(&STANDARD.encode(h));
            line.push('"');
        }
        line.push_str("]}");
        if let Err(e) = out.write_all(line.as_bytes()) {
            failed = Some(BundleError::Write(e));
            return Err(stop());
        }
        next += 1;
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    listed?;
    if next != to {
        return Err(BundleError::LedgerGap(next));
    }
    out.write_all(b"\n]}\n").map_err(BundleError::Write)?;
    out.flush().map_err(BundleError::Write)
}

/// The bundle of entries `from..to` against `checkpoint_note`, in memory
/// (see [`write`] to stream it to a file).
pub fn build(
    ledger: &Ledger,
    from: u64,
    to: u64,
    checkpoint_note: &str,
) -> Result<String, BundleError> {
    let mut out = Vec::new();
    write(ledger, from, to, checkpoint_note, &mut out)?;
    String::from_utf8(out).map_err(|_| BundleError::Malformed("not UTF-8".into()))
}

/// Checks a bundle offline with the log's verifier key: the checkpoint's
/// signature and origin, then every entry in order — its place, its
/// inclusion proof against the checkpoint root, its encoding, its index
/// and its chain link to the entry before it. Returns what was proved, or
/// the first thing wrong.
pub fn verify(bytes: &[u8], verifier: &Verifier) -> Result<Summary, BundleError> {
    verify_capped(bytes, verifier, MAX_BUNDLE_BYTES)
}

fn verify_capped(bytes: &[u8], verifier: &Verifier, max: usize) -> Result<Summary, BundleError> {
    if bytes.len() > max {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let malformed = |e: serde_json::Error| BundleError::Malformed(e.to_string());
    let probe: Probe = serde_json::from_slice(bytes).map_err(malformed)?;
    match probe.format {
        None => return Err(BundleError::Malformed("missing field `format`".into())),
        Some(serde_json::Value::String(f)) if f == FORMAT => {}
        Some(serde_json::Value::String(f)) => return Err(BundleError::UnsupportedFormat(f)),
        Some(_) => return Err(BundleError::Malformed("`format` is not a string".into())),
    }
    let bundle: Bundle = serde_json::from_slice(bytes).map_err(malformed)?;

    let text = note::open(&bundle.checkpoint, verifier).map_err(|e| match e {
        NoteError::NotSigned(name) => BundleError::CheckpointNotSigned(name),
        NoteError::BadSignature(name) => BundleError::CheckpointBadSignature(name),
        other => BundleError::CheckpointMalformed(other.to_string()),
    })?;
    let cp =
        Checkpoint::parse(text).map_err(|e| BundleError::CheckpointMalformed(e.to_string()))?;
    if cp.origin != verifier.name {
        return Err(BundleError::CheckpointOrigin {
            origin: cp.origin,
            key: verifier.name.clone(),
        });
    }
    let (from, to) = (bundle.from, bundle.to);
    if from >= to {
        return Err(BundleError::EmptyRange { from, to });
    }
    if to > cp.size {
        return Err(BundleError::RangeBeyondCheckpoint {
            from,
            to,
            size: cp.size,
        });
    }

    let mut prev_leaf: Option<Hash> = None;
    let mut expected = from;
    for e in &bundle.entries {
        if expected >= to {
            return Err(BundleError::Extra(expected));
        }
        if e.index != expected {
            return Err(BundleError::Misplaced {
                expected,
                found: e.index,
            });
        }
        let index = expected;
        let body = STANDARD
            .decode(&e.entry)
            .map_err(|_| BundleError::Malformed(format!("entry {index}: `entry` is not base64")))?;
        let mut path = Vec::with_capacity(e.audit_path.len());
        for (i, h) in e.audit_path.iter().enumerate() {
            let h: Hash = STANDARD
                .decode(h)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| {
                    BundleError::Malformed(format!(
                        "entry {index}: audit_path[{i}] is not 32 bytes of base64"
                    ))
                })?;
            path.push(h);
        }
        let leaf = merkle::leaf_hash(&body);
        merkle::verify_inclusion(index, cp.size, &leaf, &path, &cp.root).map_err(|e| match e {
            ProofError::WrongLength { got } => BundleError::ProofLength {
                index,
                got,
                size: cp.size,
            },
            _ => BundleError::ProofMismatch(index),
        })?;
        let named_prev = check_entry(index, &body)?;
        let chained = match prev_leaf {
            Some(p) => named_prev == p,
            // The first entry of the range: its bytes, prev included, are
            // what the log signed; only entry 0's prev is known (zeros).
            None => index != 0 || named_prev == [0u8; 32],
        };
        if !chained {
            return Err(BundleError::BrokenChain(index));
        }
        prev_leaf = Some(leaf);
        expected += 1;
    }
    if expected < to {
        return Err(BundleError::Missing(expected));
    }
    Ok(Summary {
        origin: cp.origin,
        tree_size: cp.size,
        root: cp.root,
        from,
        to,
    })
}

/// Checks that `body` is the canonical (RFC 8785) JSON of a ledger entry
/// of this `index`; returns the `prev` it names.
fn check_entry(index: u64, body: &[u8]) -> Result<Hash, BundleError> {
    let not = |why: String| BundleError::NotAnEntry { index, why };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| not(format!("not JSON ({e})")))?;
    let canonical = serde_json_canonicalizer::to_vec(&value)
        .map_err(|e| not(format!("cannot be canonicalized ({e})")))?;
    if canonical != body {
        return Err(BundleError::NotCanonical(index));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| not("not a JSON object".into()))?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ENTRY_FIELDS {
        return Err(not(format!(
            "its fields are {keys:?}, not {ENTRY_FIELDS:?}"
        )));
    }
    if obj["v"].as_u64() != Some(ENTRY_VERSION) {
        return Err(not(format!("version {}, not {ENTRY_VERSION}", obj["v"])));
    }
    let named = obj["index"]
        .as_u64()
        .ok_or_else(|| not("`index` is not an unsigned integer".into()))?;
    let prev = obj["prev"]
        .as_str()
        .filter(|p| p.len() == 64 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|p| hex::decode(p).ok())
        .and_then(|p| Hash::try_from(p).ok())
        .ok_or_else(|| not("`prev` is not 64 lowercase hex digits".into()))?;
    if obj["time"].as_u64().is_none() {
        return Err(not("`time` is not an unsigned integer".into()));
    }
    if !obj["kind"].is_string() {
        return Err(not("`kind` is not a string".into()));
    }
    if !obj["event"].is_object() {
        return Err(not("`event` is not an object".into()));
    }
    if named != index {
        return Err(BundleError::WrongIndex { index, named });
    }
    Ok(prev)
}

/// The origin and key (Ed25519, secret key of 32 bytes of 7) the fuzz
/// seeds are signed with.
pub const FUZZ_ORIGIN: &str = "warden.local/fuzz";

fn fuzz_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// The body of the `ledger_parse` fuzz target: arbitrary bytes to the
/// bundle verifier (with a fixed key, and with a key given on the first
/// line), the checkpoint and verifier-key parsers and the note opener.
/// Panics only if one of them panics or breaks an invariant.
pub fn fuzz_one(data: &[u8]) {
    let fixed = Verifier::new(FUZZ_ORIGIN, fuzz_key().verifying_key())
        .expect("the fuzz origin is a valid key name");
    fuzz_with(data, &fixed);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(Checkpoint::parse(&cp.text()).as_ref(), Ok(&cp));
    }
    if let Some((first, rest)) = text.split_once('\n') {
        if let Ok(v) = Verifier::parse(first) {
            assert_eq!(Verifier::parse(&v.encode()).as_ref(), Ok(&v));
            fuzz_with(rest.as_bytes(), &v);
        }
    }
    if let Ok(v) = Verifier::parse(text) {
        assert_eq!(Verifier::parse(&v.encode()).as_ref(), Ok(&v));
    }
}

fn fuzz_with(data: &[u8], verifier: &Verifier) {
    if let Ok(s) = verify(data, verifier) {
        assert!(s.from < s.to && s.to <= s.tree_size, "{s:?}");
        assert_eq!(s.origin, verifier.name);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(opened) = note::open(text, verifier) {
            assert!(text.starts_with(opened) && opened.ends_with('\n'));
            if let Ok(cp) = Checkpoint::parse(opened) {
                assert_eq!(Checkpoint::parse(&cp.text()).as_ref(), Ok(&cp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemoryHashes;
    use crate::store::encode_entry;
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha256};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    const ORIGIN: &str = "warden.local/test";
    const TIME: u64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn verifier() -> Verifier {
        Verifier::new(ORIGIN, key().verifying_key()).unwrap()
    }

    /// A ledger in a fresh temporary directory, removed on drop.
    struct Log {
        ledger: Ledger,
        note: String,
        dir: PathBuf,
    }

    impl Drop for Log {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn event(i: u64) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({"argv": ["python3", format!("job{i}.py")], "status": "exited"}),
        )
    }

    /// `n` entries, a checkpoint of all of them signed by `key()` as `origin`.
    fn log_of(origin: &str, n: u64) -> Log {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "warden-ledger-bundle-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut ledger = Ledger::open(&dir).unwrap();
        ledger
            .append(TIME, &(0..n).map(event).collect::<Vec<_>>())
            .unwrap();
        let note = ledger.checkpoint(origin, &key()).unwrap();
        Log { ledger, note, dir }
    }

    fn log(n: u64) -> Log {
        log_of(ORIGIN, n)
    }

    fn parsed(bundle: &str) -> Bundle {
        serde_json::from_str(bundle).unwrap()
    }

    fn encoded(bundle: &Bundle) -> Vec<u8> {
        serde_json::to_vec(bundle).unwrap()
    }

    fn check(bytes: &[u8]) -> Result<Summary, BundleError> {
        verify(bytes, &verifier())
    }

    macro_rules! fails {
        ($bytes:expr, $pat:pat) => {
            match check(&$bytes) {
                Err(e) => assert!(matches!(e, $pat), "wrong error: {e}"),
                Ok(s) => panic!("verified: {s}"),
            }
        };
    }

    /// Chained canonical entries, as the store writes them.
    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = [0u8; 32];
        (0..n)
            .map(|i| {
                let (kind, ev) = event(i);
                let body = encode_entry(i, &prev, TIME, kind, &ev).unwrap();
                prev = merkle::leaf_hash(&body);
                body
            })
            .collect()
    }

    /// A correctly signed and proved bundle of `from..to` of a log whose
    /// entries are exactly `bodies`, whatever they are.
    fn signed_log(bodies: &[Vec<u8>], from: u64, to: u64) -> Vec<u8> {
        let mut tree = MemoryHashes::default();
        for b in bodies {
            tree.push(merkle::leaf_hash(b));
        }
        let size = bodies.len() as u64;
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: merkle::root(size, &tree).unwrap(),
        };
        let checkpoint = note::sign(&cp.text(), ORIGIN, &key()).unwrap();
        let entries = (from..to)
            .map(|i| BundleEntry {
                index: i,
                entry: STANDARD.encode(&bodies[i as usize]),
                audit_path: merkle::inclusion_proof(i, size, &tree)
                    .unwrap()
                    .iter()
                    .map(|h| STANDARD.encode(h))
                    .collect(),
            })
            .collect();
        encoded(&Bundle {
            format: FORMAT.into(),
            checkpoint,
            from,
            to,
            entries,
        })
    }

    #[test]
    fn bundle_good_bundles_verify() {
        let l = log(10);
        for (from, to) in [(0, 10), (2, 7), (9, 10), (0, 1), (4, 5)] {
            let b = build(&l.ledger, from, to, &l.note).unwrap();
            assert!(b.starts_with("{\"format\":\"warden-audit-bundle/v1\",\"checkpoint\":"));
            assert_eq!(b.lines().count() as u64, to - from + 2, "one entry a line");
            let s = check(b.as_bytes()).unwrap();
            assert_eq!(
                s,
                Summary {
                    origin: ORIGIN.into(),
                    tree_size: 10,
                    root: l.ledger.root(10).unwrap(),
                    from,
                    to,
                }
            );
            // The exact stored bytes are carried.
            let p = parsed(&b);
            assert_eq!(p.entries.len() as u64, to - from);
            for e in &p.entries {
                assert_eq!(
                    STANDARD.decode(&e.entry).unwrap(),
                    l.ledger.entry(e.index).unwrap().unwrap()
                );
            }
            // Re-encoded by any JSON tool (here: pretty-printed), it
            // still verifies: the bytes that matter are in base64.
            let pretty = serde_json::to_vec_pretty(&p).unwrap();
            assert_eq!(check(&pretty).unwrap().to, to);
        }
        let s = check(build(&l.ledger, 2, 7, &l.note).unwrap().as_bytes()).unwrap();
        assert!(s.to_string().starts_with(
            "entries 2..7 (5) are in warden.local/test's signed tree of 10 entries, root "
        ));
        // An older checkpoint (a smaller tree) of the same ledger.
        let mut l = l;
        l.ledger.append(TIME + 1, &[event(10), event(11)]).unwrap();
        let b = build(&l.ledger, 3, 10, &l.note).unwrap();
        assert_eq!(check(b.as_bytes()).unwrap().tree_size, 10);
    }

    #[test]
    fn bundle_build_refuses_what_it_cannot_prove() {
        let l = log(6);
        let e = |r: Result<String, BundleError>| r.unwrap_err();
        assert!(matches!(
            e(build(&l.ledger, 3, 3, &l.note)),
            BundleError::EmptyRange { from: 3, to: 3 }
        ));
        assert!(matches!(
            e(build(&l.ledger, 4, 2, &l.note)),
            BundleError::EmptyRange { .. }
        ));
        assert!(matches!(
            e(build(&l.ledger, 0, 7, &l.note)),
            BundleError::RangeBeyondCheckpoint { size: 6, .. }
        ));
        assert!(matches!(
            e(build(&l.ledger, 0, 2, "not a note")),
            BundleError::CheckpointMalformed(_)
        ));
        // A checkpoint of another ledger of the same size.
        let mut other = log(5);
        other
            .ledger
            .append(TIME, &[("other", serde_json::json!({}))])
            .unwrap();
        let foreign = other.ledger.checkpoint(ORIGIN, &key()).unwrap();
        assert!(matches!(
            e(build(&l.ledger, 0, 2, &foreign)),
            BundleError::CheckpointNotLedger(6)
        ));
        // A checkpoint larger than the ledger.
        let bigger = log(9);
        assert!(matches!(
            e(build(&l.ledger, 0, 2, &bigger.note)),
            BundleError::CheckpointNotLedger(9)
        ));
        // A writer that fails is reported, not mistaken for the end.
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(
            write(&l.ledger, 0, 6, &l.note, &mut Broken),
            Err(BundleError::Write(_))
        ));
    }

    #[test]
    fn bundle_changed_entries_and_proofs_are_named() {
        let l = log(10);
        let good = parsed(&build(&l.ledger, 2, 8, &l.note).unwrap());
        let edit = |f: &dyn Fn(&mut Bundle)| {
            let mut b = good.clone();
            f(&mut b);
            encoded(&b)
        };
        let body = |b: &Bundle, k: usize| {
            String::from_utf8(STANDARD.decode(&b.entries[k].entry).unwrap()).unwrap()
        };

        // A flipped byte in entry 4 (still canonical JSON).
        let flipped = edit(&|b| {
            let t = body(b, 2).replace("job4", "jobX");
            b.entries[2].entry = STANDARD.encode(t);
        });
        fails!(flipped, BundleError::ProofMismatch(4));
        assert_eq!(
            check(&flipped).unwrap_err().to_string(),
            "entry 4: inclusion proof does not lead to the checkpoint root"
        );
        // Whitespace added to entry 5's bytes: not what the log signed.
        fails!(
            edit(&|b| {
                let t = body(b, 3).replacen(',', ", ", 1);
                b.entries[3].entry = STANDARD.encode(t);
            }),
            BundleError::ProofMismatch(5)
        );
        // A changed proof hash; a proof hash dropped or added.
        fails!(
            edit(&|b| b.entries[1].audit_path[1] = STANDARD.encode([0u8; 32])),
            BundleError::ProofMismatch(3)
        );
        fails!(
            edit(&|b| {
                b.entries[1].audit_path.pop();
            }),
            BundleError::ProofLength {
                index: 3,
                got: 3,
                size: 10
            }
        );
        fails!(
            edit(&|b| b.entries[0].audit_path.push(STANDARD.encode([1u8; 32]))),
            BundleError::ProofLength { index: 2, .. }
        );
        // Removed entries: from the middle, at the end, at the start.
        fails!(
            edit(&|b| {
                b.entries.remove(2);
            }),
            BundleError::Misplaced {
                expected: 4,
                found: 5
            }
        );
        fails!(
            edit(&|b| {
                b.entries.pop();
            }),
            BundleError::Missing(7)
        );
        fails!(
            edit(&|b| {
                b.entries.remove(0);
            }),
            BundleError::Misplaced {
                expected: 2,
                found: 3
            }
        );
        // Reordered, with or without their stated indices.
        fails!(
            edit(&|b| b.entries.swap(1, 3)),
            BundleError::Misplaced {
                expected: 3,
                found: 5
            }
        );
        fails!(
            edit(&|b| {
                b.entries.swap(1, 3);
                b.entries[1].index = 3;
                b.entries[3].index = 5;
            }),
            BundleError::ProofMismatch(3)
        );
        // An entry repeated beyond the range; the range stretched.
        fails!(
            edit(&|b| b.entries.push(b.entries[5].clone())),
            BundleError::Extra(8)
        );
        fails!(edit(&|b| b.to = 9), BundleError::Missing(8));
        fails!(
            edit(&|b| b.to = 11),
            BundleError::RangeBeyondCheckpoint {
                to: 11,
                size: 10,
                ..
            }
        );
        fails!(
            edit(&|b| b.to = 2),
            BundleError::EmptyRange { from: 2, to: 2 }
        );
        // Not base64.
        fails!(
            edit(&|b| b.entries[0].entry.push('!')),
            BundleError::Malformed(_)
        );
        fails!(
            edit(&|b| b.entries[0].audit_path[0] = STANDARD.encode([0u8; 31])),
            BundleError::Malformed(_)
        );
        assert_eq!(
            check(&edit(&|b| b.entries[3].entry = "%".into()))
                .unwrap_err()
                .to_string(),
            "malformed bundle: entry 5: `entry` is not base64"
        );
    }

    #[test]
    fn bundle_bad_checkpoints_are_refused() {
        let l = log(10);
        let good = parsed(&build(&l.ledger, 0, 4, &l.note).unwrap());
        let with_note = |note: &str| {
            let mut b = good.clone();
            b.checkpoint = note.to_string();
            encoded(&b)
        };
        let bundle = encoded(&good);
        // A wrong key under the right name; the right key under another name.
        let wrong =
            Verifier::new(ORIGIN, SigningKey::from_bytes(&[8u8; 32]).verifying_key()).unwrap();
        let e = verify(&bundle, &wrong).unwrap_err();
        assert!(matches!(e, BundleError::CheckpointNotSigned(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "checkpoint: not signed by key warden.local/test"
        );
        let renamed = Verifier::new("warden.local/other", key().verifying_key()).unwrap();
        assert!(matches!(
            verify(&bundle, &renamed),
            Err(BundleError::CheckpointNotSigned(_))
        ));
        // Truncated: cut in the signature, in the text, the signature gone.
        let cut = &l.note[..l.note.len() - 10];
        fails!(with_note(cut), BundleError::CheckpointMalformed(_));
        fails!(
            with_note(&l.note[..12]),
            BundleError::CheckpointMalformed(_)
        );
        let unsigned = &l.note[..l.note.rfind("\n\n").unwrap() + 2];
        fails!(with_note(unsigned), BundleError::CheckpointMalformed(_));
        // Re-signed by another key: openly, or claiming our key's ID.
        let text = &l.note[..l.note.rfind("\n\n").unwrap() + 1];
        let other = SigningKey::from_bytes(&[9u8; 32]);
        fails!(
            with_note(&note::sign(text, ORIGIN, &other).unwrap()),
            BundleError::CheckpointNotSigned(_)
        );
        let mut blob = verifier().id.to_be_bytes().to_vec();
        blob.extend_from_slice(&ed25519_dalek::Signer::sign(&other, text.as_bytes()).to_bytes());
        let spoofed = format!("{text}\n\u{2014} {ORIGIN} {}\n", STANDARD.encode(blob));
        let e = check(&with_note(&spoofed)).unwrap_err();
        assert!(matches!(e, BundleError::CheckpointBadSignature(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "checkpoint: signature does not verify with key warden.local/test"
        );
        // The size rewritten under the old signature.
        fails!(
            with_note(&l.note.replacen("\n10\n", "\n11\n", 1)),
            BundleError::CheckpointBadSignature(_)
        );
        // Another key's own signature added: ignored, ours still verifies.
        let cosigned = format!(
            "{}{}",
            l.note,
            &note::sign(text, "witness.example", &other).unwrap()[text.len() + 1..]
        );
        assert!(check(&with_note(&cosigned)).is_ok());
        // Signed by our key, but the checkpoint names another origin.
        let elsewhere = log_of("warden.local/elsewhere", 10);
        let b = build(&elsewhere.ledger, 0, 4, &elsewhere.note).unwrap();
        let named = Verifier::new("warden.local/elsewhere", key().verifying_key()).unwrap();
        assert!(verify(b.as_bytes(), &named).is_ok());
        let cp = Checkpoint {
            origin: "warden.local/elsewhere".into(),
            size: 10,
            root: l.ledger.root(10).unwrap(),
        };
        let mismatched = note::sign(&cp.text(), ORIGIN, &key()).unwrap();
        fails!(with_note(&mismatched), BundleError::CheckpointOrigin { .. });
    }

    #[test]
    fn bundle_parsing_is_strict() {
        let l = log(3);
        let b = build(&l.ledger, 0, 3, &l.note).unwrap();
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = v.clone();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        fails!(edit(&|v| v["extra"] = 1.into()), BundleError::Malformed(_));
        fails!(
            edit(&|v| v["entries"][1]["leaf"] = "x".into()),
            BundleError::Malformed(_)
        );
        fails!(
            edit(&|v| {
                v.as_object_mut().unwrap().remove("to");
            }),
            BundleError::Malformed(_)
        );
        fails!(
            edit(&|v| v["from"] = (-1).into()),
            BundleError::Malformed(_)
        );
        fails!(edit(&|v| v["from"] = 0.5.into()), BundleError::Malformed(_));
        fails!(
            edit(&|v| v["entries"][0]["audit_path"] = serde_json::Value::Null),
            BundleError::Malformed(_)
        );
        // A later version is named as such, even with fields this one lacks.
        let e = check(&edit(&|v| {
            v["format"] = "warden-audit-bundle/v2".into();
            v["extra"] = 1.into();
        }))
        .unwrap_err();
        assert!(matches!(e, BundleError::UnsupportedFormat(_)), "{e}");
        fails!(edit(&|v| v["format"] = 1.into()), BundleError::Malformed(_));
        fails!(
            edit(&|v| {
                v.as_object_mut().unwrap().remove("format");
            }),
            BundleError::Malformed(_)
        );
        for junk in [&b""[..], b"[]", b"null", b"{", b"\xff", b"{}"] {
            fails!(junk, BundleError::Malformed(_));
        }
        // Trailing data, a repeated field.
        fails!(format!("{b} {{}}").into_bytes(), BundleError::Malformed(_));
        fails!(
            b.replacen("\"from\":0,", "\"from\":0,\"from\":0,", 1)
                .into_bytes(),
            BundleError::Malformed(_)
        );
        // The size cap.
        assert!(matches!(
            verify_capped(b.as_bytes(), &verifier(), b.len() - 1),
            Err(BundleError::TooLarge { .. })
        ));
        assert!(verify_capped(b.as_bytes(), &verifier(), b.len()).is_ok());
    }

    /// A log that signed bad entries: the proofs hold, the entries do not.
    #[test]
    fn bundle_signed_bad_entries_are_named() {
        let good = chain(6);
        assert!(check(&signed_log(&good, 0, 6)).is_ok());
        let with = |k: usize, body: Vec<u8>| {
            let mut bodies = good.clone();
            bodies[k] = body;
            bodies
        };
        let text = |k: usize| String::from_utf8(good[k].clone()).unwrap();
        // Whitespace added; keys out of order; a number written 3.0.
        let spaced = with(3, text(3).replacen(',', ", ", 1).into_bytes());
        let e = check(&signed_log(&spaced, 1, 5)).unwrap_err();
        assert!(matches!(e, BundleError::NotCanonical(3)), "{e}");
        assert_eq!(
            e.to_string(),
            "entry 3: bytes are not the canonical encoding"
        );
        let v: serde_json::Value = serde_json::from_slice(&good[2]).unwrap();
        let unsorted = serde_json::to_vec(&serde_json::json!({"v": 1, "index": 2, "prev": v["prev"], "time": v["time"], "kind": "run", "event": v["event"]})).unwrap();
        // (serde_json without preserve_order sorts too: make sure it is not canonical.)
        let unsorted = if unsorted == good[2] {
            text(2)
                .replacen("{\"event\":", "{\"v\":1,\"event\":", 1)
                .replacen(",\"v\":1}", "}", 1)
                .into_bytes()
        } else {
            unsorted
        };
        assert!(matches!(
            check(&signed_log(&with(2, unsorted), 0, 6)),
            Err(BundleError::NotCanonical(2))
        ));
        let three = with(
            4,
            text(4)
                .replace(&format!("\"time\":{TIME}"), &format!("\"time\":{TIME}.0"))
                .into_bytes(),
        );
        assert!(matches!(
            check(&signed_log(&three, 0, 6)),
            Err(BundleError::NotCanonical(4))
        ));
        // Not JSON; not an object; a field more or less; version 2.
        let entry = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut v: serde_json::Value = serde_json::from_slice(&good[1]).unwrap();
            f(v.as_object_mut().unwrap());
            with(1, serde_json_canonicalizer::to_vec(&v).unwrap())
        };
        let not_an_entry = |bodies: Vec<Vec<u8>>, why: &str| match check(&signed_log(&bodies, 0, 6))
        {
            Err(BundleError::NotAnEntry { index: 1, why: w }) => assert!(w.contains(why), "{w}"),
            other => panic!("{why}: {other:?}"),
        };
        not_an_entry(with(1, b"{\"v\":1".to_vec()), "not JSON");
        not_an_entry(with(1, b"[1]".to_vec()), "not a JSON object");
        not_an_entry(
            entry(&|m| {
                m.insert("extra".into(), true.into());
            }),
            "fields",
        );
        not_an_entry(
            entry(&|m| {
                m.remove("time");
            }),
            "fields",
        );
        not_an_entry(
            entry(&|m| {
                m.insert("v".into(), 2.into());
            }),
            "version 2",
        );
        not_an_entry(
            entry(&|m| {
                m.insert(
                    "prev".into(),
                    m["prev"].as_str().unwrap().to_uppercase().into(),
                );
            }),
            "prev",
        );
        not_an_entry(
            entry(&|m| {
                m.insert("time".into(), (-5).into());
            }),
            "time",
        );
        not_an_entry(
            entry(&|m| {
                m.insert("kind".into(), 5.into());
            }),
            "kind",
        );
        not_an_entry(
            entry(&|m| {
                m.insert("event".into(), "run".into());
            }),
            "event",
        );
        // Naming another index.
        let moved = entry(&|m| {
            m.insert("index".into(), 4.into());
        });
        let e = check(&signed_log(&moved, 0, 6)).unwrap_err();
        assert!(
            matches!(e, BundleError::WrongIndex { index: 1, named: 4 }),
            "{e}"
        );
        // Chain: a rewritten entry with its own valid prev breaks the next
        // link; entry 0 must name zeros; the first of a range is trusted.
        let (kind, ev) = event(99);
        let prev3: Hash = merkle::leaf_hash(&good[2]);
        let rewritten = with(3, encode_entry(3, &prev3, TIME, kind, &ev).unwrap());
        let e = check(&signed_log(&rewritten, 0, 6)).unwrap_err();
        assert!(matches!(e, BundleError::BrokenChain(4)), "{e}");
        assert_eq!(
            e.to_string(),
            "entry 4: its prev is not the leaf hash of entry 3 (entries deleted, inserted or reordered)"
        );
        assert!(check(&signed_log(&rewritten, 4, 6)).is_ok());
        let first = with(0, encode_entry(0, &[1u8; 32], TIME, kind, &ev).unwrap());
        assert!(matches!(
            check(&signed_log(&first, 0, 2)),
            Err(BundleError::BrokenChain(0))
        ));
        // Two entries in swapped places, each correctly proved there.
        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert!(matches!(
            check(&signed_log(&swapped, 0, 6)),
            Err(BundleError::WrongIndex { index: 2, named: 3 })
        ));
    }

    /// Entries the store writes with awkward content (escapes, non-ASCII,
    /// keys whose UTF-16 and code point orders differ, floats, integers
    /// past 2^53): the bundle's canonical check (serde_json_canonicalizer)
    /// and the store's own (`canonical::check_entry`) accept them alike.
    #[test]
    fn bundle_awkward_entries_verify() {
        let events = [
            serde_json::json!({"s": "\u{1}\u{1f}\"\\\n\t\u{7f}\u{2028}é𝄞", "\u{e000}": 1, "𝄞": 2, "z": 3}),
            serde_json::json!({"f": 1.5, "g": -0.25, "h": 1e21, "i": 1e-7, "j": 100.0, "k": 0.1}),
            serde_json::json!({"big": u64::MAX, "neg": i64::MIN, "exact": 9007199254740993u64}),
            serde_json::json!({"nested": {"b": [null, true, false, {}, []], "a": ""}}),
        ];
        let mut l = log(0);
        for e in &events {
            l.ledger.append(TIME, &[("external", e.clone())]).unwrap();
        }
        let note = l.ledger.checkpoint(ORIGIN, &key()).unwrap();
        for i in 0..events.len() as u64 {
            let body = l.ledger.entry(i).unwrap().unwrap();
            assert!(crate::canonical::check_entry(&body).is_some());
            check_entry(i, &body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        }
        let b = build(&l.ledger, 0, events.len() as u64, &note).unwrap();
        assert!(check(b.as_bytes()).is_ok());
        // And both refuse what is not canonical.
        let good = chain(3);
        for bad in [
            String::from_utf8(good[1].clone())
                .unwrap()
                .replacen(',', ", ", 1),
            String::from_utf8(good[1].clone()).unwrap().replacen(
                &format!("{TIME}"),
                &format!("{TIME}.0"),
                1,
            ),
            String::from_utf8(good[1].clone())
                .unwrap()
                .replacen("job1", "\\u006aob1", 1),
        ] {
            assert!(
                crate::canonical::check_entry(bad.as_bytes()).is_none(),
                "{bad}"
            );
            assert!(
                matches!(
                    check_entry(1, bad.as_bytes()),
                    Err(BundleError::NotCanonical(1))
                ),
                "{bad}"
            );
        }
    }

    // --- an independent verifier, as docs/audit.md describes it --------

    fn sha256(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    /// The root a leaf and its audit path give (RFC 9162 §2.1.3.1's PATH,
    /// undone recursively): nearest sibling first, so the last hash is the
    /// sibling of the top split.
    fn root_from_path(
        index: u64,
        size: u64,
        leaf: [u8; 32],
        path: &[[u8; 32]],
    ) -> Option<[u8; 32]> {
        if size == 1 {
            return path.is_empty().then_some(leaf);
        }
        let (top, rest) = path.split_last()?;
        let mut k = 1u64;
        while k * 2 < size {
            k *= 2;
        }
        Some(if index < k {
            sha256(&[&[1], &root_from_path(index, k, leaf, rest)?, top])
        } else {
            sha256(&[&[1], top, &root_from_path(index - k, size - k, leaf, rest)?])
        })
    }

    /// Checks a bundle's checkpoint and proofs without this crate's code:
    /// returns the number of entries checked.
    fn verify_independently(bundle: &[u8], vkey: &str) -> usize {
        let b64 = |s: &str| STANDARD.decode(s).unwrap();
        let b: serde_json::Value = serde_json::from_slice(bundle).unwrap();
        assert_eq!(b["format"], "warden-audit-bundle/v1");
        // The verifier key: NAME+HEX(ID)+BASE64(0x01 ‖ key).
        let mut parts = vkey.splitn(3, '+');
        let (name, id, material) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            b64(parts.next().unwrap()),
        );
        assert_eq!(material[0], 1);
        let pk: [u8; 32] = material[1..].try_into().unwrap();
        assert_eq!(
            hex::encode(&sha256(&[name.as_bytes(), b"\n", &[1], &pk])[..4]),
            id
        );
        // The note: text, blank line, signature lines.
        let note = b["checkpoint"].as_str().unwrap();
        let split = note.rfind("\n\n").unwrap();
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let sig_line = sigs
            .lines()
            .find(|l| l.starts_with(&format!("\u{2014} {name} ")))
            .unwrap();
        let blob = b64(sig_line.rsplit(' ').next().unwrap());
        assert_eq!(hex::encode(&blob[..4]), id);
        let sig = ed25519_dalek::Signature::from_slice(&blob[4..]).unwrap();
        ed25519_dalek::VerifyingKey::from_bytes(&pk)
            .unwrap()
            .verify_strict(text.as_bytes(), &sig)
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], name);
        let size: u64 = lines[1].parse().unwrap();
        let root = b64(lines[2]);
        // The entries.
        let (from, to) = (b["from"].as_u64().unwrap(), b["to"].as_u64().unwrap());
        assert!(from < to && to <= size);
        let entries = b["entries"].as_array().unwrap();
        assert_eq!(entries.len() as u64, to - from);
        let mut prev: Option<[u8; 32]> = None;
        for (k, e) in entries.iter().enumerate() {
            let index = from + k as u64;
            assert_eq!(e["index"], index);
            let bytes = b64(e["entry"].as_str().unwrap());
            let leaf = sha256(&[&[0], &bytes]);
            let path: Vec<[u8; 32]> = e["audit_path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| b64(h.as_str().unwrap()).try_into().unwrap())
                .collect();
            assert_eq!(
                root_from_path(index, size, leaf, &path).unwrap().as_slice(),
                root
            );
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["index"], index);
            assert_eq!(v["v"], 1);
            if let Some(p) = prev {
                assert_eq!(v["prev"], hex::encode(p));
            } else if index == 0 {
                assert_eq!(v["prev"], "0".repeat(64));
            }
            prev = Some(leaf);
        }
        entries.len()
    }

    #[test]
    fn bundle_an_independent_verifier_agrees() {
        for n in [1u64, 2, 3, 5, 8, 13, 33] {
            let l = log(n);
            for (from, to) in [(0, n), (n / 2, n), (0, n.div_ceil(2))] {
                let b = build(&l.ledger, from, to, &l.note).unwrap();
                assert_eq!(
                    verify_independently(b.as_bytes(), &verifier().encode()) as u64,
                    to - from
                );
                assert!(check(b.as_bytes()).is_ok());
            }
        }
        // And it disagrees where the code does: a proof hash changed.
        let l = log(7);
        let mut b = parsed(&build(&l.ledger, 0, 7, &l.note).unwrap());
        b.entries[5].audit_path[0] = STANDARD.encode([3u8; 32]);
        let bytes = encoded(&b);
        assert!(
            std::panic::catch_unwind(|| verify_independently(&bytes, &verifier().encode()))
                .is_err()
        );
        fails!(bytes, BundleError::ProofMismatch(5));
    }

    // --- the example of docs/audit.md and the fuzz seeds ----------------

    /// The documented example: a log of five entries, its checkpoint, and
    /// the bundle of entries 1..4. Returns (verifier key, checkpoint, bundle).
    fn example(origin: &str) -> (String, String, String) {
        let l = log_of(origin, 5);
        let v = Verifier::new(origin, key().verifying_key()).unwrap();
        let b = build(&l.ledger, 1, 4, &l.note).unwrap();
        (v.encode(), l.note.clone(), b)
    }

    fn between<'a>(doc: &'a str, marker: &str) -> &'a str {
        let at = doc
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker} in docs/audit.md"));
        let rest = &doc[at..];
        let start = rest.find("```").unwrap();
        let rest = &rest[start..];
        let body = &rest[rest.find('\n').unwrap() + 1..];
        &body[..body.find("```").unwrap()]
    }

    #[test]
    fn bundle_the_documented_example_is_what_the_code_writes() {
        let (vkey, note, bundle) = example(ORIGIN);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        assert_eq!(between(&doc, "<!-- example: verifier key -->").trim(), vkey);
        assert_eq!(between(&doc, "<!-- example: checkpoint -->"), note);
        assert_eq!(
            between(&doc, "<!-- example: bundle -->"),
            bundle,
            "regenerate the example: cargo test -p warden-ledger bundle_print_example -- --ignored --nocapture"
        );
        let entry = parsed(&bundle).entries[0].entry.clone();
        assert_eq!(
            between(&doc, "<!-- example: entry 1 -->").trim().as_bytes(),
            STANDARD.decode(entry).unwrap()
        );
        let v = Verifier::parse(&vkey).unwrap();
        assert_eq!(verify(bundle.as_bytes(), &v).unwrap().to, 4);
        assert_eq!(verify_independently(bundle.as_bytes(), &vkey), 3);
    }

    #[test]
    #[ignore = "prints the example of docs/audit.md"]
    fn bundle_print_example() {
        let (vkey, note, bundle) = example(ORIGIN);
        let entry = STANDARD
            .decode(parsed(&bundle).entries[0].entry.clone())
            .unwrap();
        println!(
            "{vkey}\n\n{note}\n{bundle}\n{}",
            String::from_utf8(entry).unwrap()
        );
    }

    /// The seeds of fuzz/seeds/ledger_parse, signed with the fuzz key.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let (vkey, note, bundle) = example(FUZZ_ORIGIN);
        vec![
            ("bundle.json", bundle.clone().into_bytes()),
            ("checkpoint.note", note.into_bytes()),
            ("verifier.key", format!("{vkey}\n").into_bytes()),
            (
                "key-and-bundle.txt",
                format!("{vkey}\n{bundle}").into_bytes(),
            ),
        ]
    }

    #[test]
    #[ignore = "writes fuzz/seeds/ledger_parse"]
    fn bundle_write_fuzz_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/ledger_parse");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn bundle_fuzz_one_takes_seeds_and_junk() {
        let fixed = Verifier::new(FUZZ_ORIGIN, key().verifying_key()).unwrap();
        let seeds = seeds();
        // The seeds verify (so the fuzzer starts from the success path).
        assert!(verify(&seeds[0].1, &fixed).is_ok());
        assert!(note::open(std::str::from_utf8(&seeds[1].1).unwrap(), &fixed).is_ok());
        // Those checked in are these (or the fuzz tree is not here).
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/ledger_parse");
        if dir.is_dir() {
            for (name, bytes) in &seeds {
                assert_eq!(
                    &std::fs::read(dir.join(name)).unwrap(),
                    bytes,
                    "{name}: run bundle_write_fuzz_seeds"
                );
            }
        }
        for (_, s) in &seeds {
            fuzz_one(s);
            for cut in [0, 1, s.len() / 3, s.len() / 2, s.len() - 1] {
                fuzz_one(&s[..cut]);
                let mut flipped = s.clone();
                flipped[cut] ^= 0x20;
                fuzz_one(&flipped);
            }
        }
        for junk in [
            &b""[..],
            b"\n",
            b"\xff\xfe",
            b"{}",
            b"o\n1\nAAAA\n",
            b"a+b+c\n{}",
            b"\n\n\xe2\x80\x94 ",
        ] {
            fuzz_one(junk);
        }
    }

    #[test]
    #[ignore = "timing of a 100,000-entry bundle"]
    fn bundle_of_100k_entries() {
        let mut l = log(0);
        for chunk in 0..100u64 {
            l.ledger
                .append(
                    TIME,
                    &(chunk * 1000..(chunk + 1) * 1000)
                        .map(event)
                        .collect::<Vec<_>>(),
                )
                .unwrap();
        }
        let note = l.ledger.checkpoint(ORIGIN, &key()).unwrap();
        let t = std::time::Instant::now();
        let b = build(&l.ledger, 0, 100_000, &note).unwrap();
        let built = t.elapsed();
        let t = std::time::Instant::now();
        let s = check(b.as_bytes()).unwrap();
        println!(
            "{} bytes; build {built:?}; verify {:?}; {s}",
            b.len(),
            t.elapsed()
        );
    }
}

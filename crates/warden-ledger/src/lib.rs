//! Warden's audit ledger. This crate knows nothing of runs: it keeps an
//! append-only sequence of entries in an RFC 9162 Merkle tree and proves
//! what it holds. [`merkle`] is the tree itself — hashing, roots, and
//! inclusion and consistency proofs — computed from the hashes of complete
//! subtrees, which a store keeps so that a proof costs O(log n) reads, not
//! a rebuild. [`note`] signs and opens C2SP signed notes with Ed25519 and
//! carries the log's checkpoints in the c2sp.org/tlog-checkpoint format.
//! [`store`] keeps the ledger in SQLite: canonical (RFC 8785) chained
//! entries, stored subtree hashes, checkpoints, and a verifier that names
//! the first bad entry; [`group`] lets many threads share its commits.
//! [`canonical`] writes and checks the canonical JSON.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod canonical;
pub mod group;
pub mod merkle;
pub mod note;
pub mod store;

pub use merkle::{Hash, HashReader, MemoryHashes, ProofError};

//! Warden's audit ledger. This crate knows nothing of runs: it keeps an
//! append-only sequence of entries in an RFC 9162 Merkle tree and proves
//! what it holds. [`merkle`] is the tree itself — hashing, roots, and
//! inclusion and consistency proofs — computed from the hashes of complete
//! subtrees, which a store keeps so that a proof costs O(log n) reads, not
//! a rebuild.
#![forbid(unsafe_code)]

pub mod merkle;

pub use merkle::{Hash, HashReader, MemoryHashes, ProofError};

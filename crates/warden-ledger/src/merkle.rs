//! The Merkle tree of RFC 9162 (Certificate Transparency 2.0), section 2.1:
//! leaf hash `SHA-256(0x00 ‖ entry)`, interior node `SHA-256(0x01 ‖ left ‖
//! right)`, the tree over `n` leaves split at the largest power of two
//! below `n`.
//!
//! A store keeps the hash of every *complete* subtree: at level `l`, node
//! `i` covers leaves `[i·2^l, (i+1)·2^l)`. Appending leaf `n` adds its leaf
//! hash and one node per level while the new node is a right child (at
//! most log n of them, all computable from what is already stored). Any
//! root, inclusion proof or consistency proof is then assembled from
//! O(log n) ranges, each the fold of at most log n stored nodes.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has {got} hashes: not as many as these tree sizes give")]
    WrongLength { got: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("stored hash at level {level} index {index} is missing")]
    Missing { level: u8, index: u64 },
    #[error("reading stored hashes: {0}")]
    Read(String),
}

/// Reads the stored hashes of complete subtrees.
pub trait HashReader {
    /// The hash of the complete subtree at `level` and `index` (leaves
    /// `[index << level, (index + 1) << level)`).
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

/// The stored nodes that appending a leaf adds, given the tree's size `n`
/// before it and the new leaf's hash: `(level, index, hash)`, bottom up.
pub fn nodes_for_append(
    n: u64,
    leaf: Hash,
    reader: &impl HashReader,
) -> Result<Vec<(u8, u64, Hash)>, ProofError> {
    let mut out = vec![(0u8, n, leaf)];
    let (mut level, mut index, mut hash) = (0u8, n, leaf);
    // While the node is a right child, its parent is complete now.
    while index & 1 == 1 {
        let left = reader.node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        out.push((level, index, hash));
    }
    Ok(out)
}

/// The hash of leaves `[lo, hi)`, a range the RFC's recursion produces:
/// `lo` is a multiple of the largest power of two below `hi - lo` (or
/// the range is a complete subtree).
fn range_hash(lo: u64, hi: u64, reader: &impl HashReader) -> Result<Hash, ProofError> {
    let width = hi - lo;
    if width.is_power_of_two() && lo.is_multiple_of(width) {
        let level = width.trailing_zeros() as u8;
        return reader.node(level, lo >> level);
    }
    let k = split(width);
    Ok(node_hash(
        &range_hash(lo, lo + k, reader)?,
        &range_hash(lo + k, hi, reader)?,
    ))
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The root hash of the tree of the first `size` leaves.
pub fn root(size: u64, reader: &impl HashReader) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(0, size, reader)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC
/// 9162 §2.1.3.1), nearest sibling first.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    // Walk down from the root, remembering the sibling ranges.
    let mut siblings: Vec<(u64, u64)> = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
            m -= k;
        }
    }
    for (a, b) in siblings.into_iter().rev() {
        path.push(range_hash(a, b, reader)?);
    }
    Ok(path)
}

/// The consistency proof between the trees of `old` and `new` leaves (RFC
/// 9162 §2.1.4.1).
pub fn consistency_proof(
    old: u64,
    new: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    subproof(old, 0, new, true, reader, &mut proof)?;
    Ok(proof)
}

/// SUBPROOF(m, D[lo:hi], b) of the RFC, with `m` counted from `lo`.
fn subproof(
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(range_hash(lo, hi, reader)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, whole, reader, out)?;
        out.push(range_hash(lo + k, hi, reader)?);
    } else {
        subproof(m - k, lo + k, hi, false, reader, out)?;
        out.push(range_hash(lo, lo + k, reader)?);
    }
    Ok(())
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength { got: proof.len() });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength { got: proof.len() });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len() });
        }
        // An empty tree is consistent with any; equal sizes need equal roots.
        return if old == 0 || old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let mut path: Vec<Hash> = proof.to_vec();
    // A power-of-two old tree is its own first element.
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength { got: 0 });
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength { got: proof.len() });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength { got: proof.len() });
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Stored hashes in memory, level by level: for tests, and for a ledger
/// small enough to hold.
#[derive(Debug, Default, Clone)]
pub struct MemoryHashes {
    levels: Vec<Vec<Hash>>,
}

impl MemoryHashes {
    /// Appends a leaf by its hash, storing the nodes it completes.
    pub fn push(&mut self, leaf: Hash) {
        let n = self.len();
        // Reading only nodes that exist: nodes_for_append asks for left
        // siblings, which are stored.
        let nodes = nodes_for_append(n, leaf, self).unwrap_or_default();
        for (level, index, hash) in nodes {
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            debug_assert_eq!(self.levels[level].len() as u64, index);
            self.levels[level].push(hash);
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HashReader for MemoryHashes {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or(ProofError::Missing { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A straightforward RFC 9162 implementation over the leaf list, to
    // check the stored-node one against.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn subproof_ref(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = subproof_ref(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof_ref(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    fn store(d: &[Vec<u8>]) -> MemoryHashes {
        let mut s = MemoryHashes::default();
        for e in d {
            s.push(leaf_hash(e));
        }
        s
    }

    #[test]
    fn hashes_follow_rfc_9162_domain_separation() {
        // SHA-256 of the empty string, and of 0x00 (the empty leaf).
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_small_tree_agrees_with_the_reference() {
        let d = leaves(70);
        let s = store(&d);
        for size in 1..=70usize {
            assert_eq!(
                root(size as u64, &s).unwrap(),
                mth(&d[..size]),
                "root {size}"
            );
            let r = mth(&d[..size]);
            for index in 0..size {
                let p = inclusion_proof(index as u64, size as u64, &s).unwrap();
                assert_eq!(p, path(index, &d[..size]), "path {index}/{size}");
                verify_inclusion(index as u64, size as u64, &leaf_hash(&d[index]), &p, &r).unwrap();
            }
            for old in 1..=size {
                let p = consistency_proof(old as u64, size as u64, &s).unwrap();
                let want = if old == size {
                    Vec::new()
                } else {
                    subproof_ref(old, &d[..size], true)
                };
                assert_eq!(p, want, "consistency {old}/{size}");
                verify_consistency(old as u64, size as u64, &mth(&d[..old]), &r, &p).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn proofs_verify_and_tampering_fails(size in 1usize..3000, seed in any::<u64>()) {
            let d = leaves(size);
            let s = store(&d);
            let r = root(size as u64, &s).unwrap();
            prop_assert_eq!(r, mth(&d));
            let index = (seed % size as u64) as usize;
            let p = inclusion_proof(index as u64, size as u64, &s).unwrap();
            let leaf = leaf_hash(&d[index]);
            prop_assert!(verify_inclusion(index as u64, size as u64, &leaf, &p, &r).is_ok());
            // Another leaf, a flipped proof byte, a wrong index: refused.
            prop_assert!(verify_inclusion(index as u64, size as u64, &leaf_hash(b"forged"), &p, &r).is_err());
            if let Some(first) = p.first() {
                let mut bad = p.clone();
                bad[0][0] ^= first[0] | 1;
                prop_assert!(verify_inclusion(index as u64, size as u64, &leaf, &bad, &r).is_err());
            }
            if size > 1 {
                let other = (index + 1) % size;
                prop_assert!(verify_inclusion(other as u64, size as u64, &leaf, &p, &r).is_err());
            }
            let old = 1 + (seed >> 20) as usize % size;
            let c = consistency_proof(old as u64, size as u64, &s).unwrap();
            let old_root = mth(&d[..old]);
            prop_assert!(verify_consistency(old as u64, size as u64, &old_root, &r, &c).is_ok());
            // A rewritten history (another old root) is refused.
            if old < size {
                let mut forged = d[..old].to_vec();
                forged[0] = b"rewritten".to_vec();
                prop_assert!(verify_consistency(old as u64, size as u64, &mth(&forged), &r, &c).is_err());
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let s = store(&leaves(5));
        assert!(inclusion_proof(5, 5, &s).is_err());
        assert!(consistency_proof(6, 5, &s).is_err());
        assert!(root(9, &s).is_err());
        let r = root(5, &s).unwrap();
        assert!(verify_inclusion(0, 5, &r, &[], &r).is_err());
        assert!(verify_inclusion(7, 5, &r, &[], &r).is_err());
        assert!(verify_consistency(3, 5, &r, &r, &[]).is_err());
        assert!(verify_consistency(3, 5, &r, &r, &[r; 40]).is_err());
    }
}

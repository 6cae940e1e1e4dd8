//! RFC 9162 (RFC 6962) Merkle tree hashing over the audit log, kept incrementally.
//!
//! Leaf hash = SHA-256(0x00 ‖ record bytes), interior = SHA-256(0x01 ‖ left ‖ right). The
//! tree is stored as the hashes of its complete, aligned subtrees: node `(level, index)` covers
//! leaves `[index · 2^level, (index + 1) · 2^level)`. Appending leaf `n` stores its hash and
//! the hash of every subtree it completes — O(log n) writes, about 2n hashes in all — and any
//! root, inclusion proof or consistency proof is computed from O(log n) stored hashes. Storage
//! is the caller's ([`HashStore`]); everything here is pure.
//!
//! Why our own code: the Rust crates for this either bind a storage model we do not use or
//! implement only verification; the algorithms are RFC 9162 §2.1 verbatim, checked here against
//! the recursive definitions and (issue 15) by Go's `golang.org/x/mod/sumdb/tlog`.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A stored subtree: `(level, index)`.
pub type Node = (u8, u64);

/// Where stored subtree hashes live (a redb table, a map in tests).
pub trait HashStore {
    /// The hash of complete subtree `(level, index)`; `None` if it is not stored.
    fn get(&self, level: u8, index: u64) -> Option<Hash>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("the tree has no subtree ({0}, {1}) stored")]
    Missing(u8, u64),
    #[error("index {index} is not below tree size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof does not verify")]
    Invalid,
}

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

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

/// The hashes to store when leaf number `size` (0-based: the tree had `size` leaves) with hash
/// `leaf` is appended: the leaf at `(0, size)`, then each subtree it completes. `store` must
/// hold the tree's earlier hashes.
pub fn append(
    store: &(impl HashStore + ?Sized),
    size: u64,
    leaf: Hash,
) -> Result<Vec<(Node, Hash)>, MerkleError> {
    let mut out = vec![((0u8, size), leaf)];
    let (mut level, mut index, mut hash) = (0u8, size, leaf);
    while index % 2 == 1 {
        let left = store
            .get(level, index - 1)
            .ok_or(MerkleError::Missing(level, index - 1))?;
        hash = node_hash(&left, &hash);
        level += 1;
        index /= 2;
        out.push(((level, index), hash));
    }
    Ok(out)
}

/// The right edge of a tree: the roots of its perfect subtrees, largest first (one per set bit
/// of the size, so at most 64). Enough to append a leaf and to compute the root, and small
/// enough to live in the replicated state, so every node derives the same root at the same size
/// without reading storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the subtree hashes to store, as [`append`] does.
    pub fn push(&mut self, leaf: Hash) -> Vec<(Node, Hash)> {
        let mut out = vec![((0u8, self.size), leaf)];
        let (mut level, mut index, mut hash) = (0u8, self.size, leaf);
        while index % 2 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index /= 2;
            out.push(((level, index), hash));
        }
        self.peaks.push(hash);
        self.size += 1;
        out
    }

    /// The root of the tree: the peaks folded from the right (RFC 9162's MTH).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[lo:hi]) for `lo < hi`, from stored complete subtrees: the range splits into aligned
/// perfect subtrees, folded from the right.
fn range_hash(store: &(impl HashStore + ?Sized), lo: u64, hi: u64) -> Result<Hash, MerkleError> {
    let mut parts = Vec::new();
    let mut at = lo;
    while at < hi {
        let mut level = at.trailing_zeros().min(63);
        while level > 0 && (hi - at) < (1u64 << level) {
            level -= 1;
        }
        let level = level as u8;
        let index = at >> level;
        parts.push(
            store
                .get(level, index)
                .ok_or(MerkleError::Missing(level, index))?,
        );
        at += 1u64 << level;
    }
    let mut hash = parts.pop().ok_or(MerkleError::OutOfRange {
        index: lo,
        size: hi,
    })?;
    while let Some(left) = parts.pop() {
        hash = node_hash(&left, &hash);
    }
    Ok(hash)
}

/// The root of the first `size` leaves.
pub fn root(store: &(impl HashStore + ?Sized), size: u64) -> Result<Hash, MerkleError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(store, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(
    store: &(impl HashStore + ?Sized),
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange { index, size });
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    let mut siblings = Vec::new();
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
    // PATH lists the deepest sibling first.
    for (a, b) in siblings.into_iter().rev() {
        proof.push(range_hash(store, a, b)?);
    }
    Ok(proof)
}

/// The consistency proof between trees of `old` and `new` leaves (RFC 9162 §2.1.4.1).
pub fn consistency_proof(
    store: &(impl HashStore + ?Sized),
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if old > new {
        return Err(MerkleError::OutOfRange {
            index: old,
            size: new,
        });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let (mut lo, mut hi, mut m, mut complete) = (0u64, new, old, true);
    loop {
        if m == hi - lo {
            if !complete {
                parts.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            parts.push((lo + k, hi));
            hi = lo + k;
        } else {
            parts.push((lo, lo + k));
            lo += k;
            m -= k;
            complete = false;
        }
    }
    parts
        .into_iter()
        .rev()
        .map(|(a, b)| range_hash(store, a, b))
        .collect()
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(MerkleError::Invalid);
        }
        if f_n % 2 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n % 2 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && &r == root {
        Ok(())
    } else {
        Err(MerkleError::Invalid)
    }
}

/// Checks a consistency proof between a tree of `old` leaves with root `old_root` and one of
/// `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old > new {
        return Err(MerkleError::Invalid);
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::Invalid)
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::Invalid)
        };
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n % 2 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(MerkleError::Invalid);
    };
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(MerkleError::Invalid);
        }
        if f_n % 2 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n % 2 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if &f_r == old_root && &s_r == new_root && s_n == 0 {
        Ok(())
    } else {
        Err(MerkleError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Mem(HashMap<(u8, u64), Hash>);

    impl HashStore for Mem {
        fn get(&self, level: u8, index: u64) -> Option<Hash> {
            self.0.get(&(level, index)).copied()
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("record {i}").as_bytes()))
            .collect()
    }

    /// MTH by the recursive definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn grown(n: u64) -> (Mem, Vec<Hash>) {
        let mut store = Mem::default();
        let ls = leaves(n);
        for (i, leaf) in ls.iter().enumerate() {
            for (at, hash) in append(&store, i as u64, *leaf).expect("append") {
                store.0.insert(at, hash);
            }
        }
        (store, ls)
    }

    #[test]
    fn roots_match_the_recursive_definition_and_storage_is_about_2n() {
        let (store, ls) = grown(70);
        for size in 0..=70u64 {
            assert_eq!(
                root(&store, size).expect("root"),
                mth(&ls[..size as usize]),
                "size {size}"
            );
        }
        assert!(store.0.len() <= 2 * 70, "{} hashes stored", store.0.len());
        // The empty tree's root is SHA-256 of nothing (RFC 9162 §2.1.1).
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_frontier_agrees_with_the_stored_tree() {
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        let mut store = Mem::default();
        for (i, leaf) in leaves(70).into_iter().enumerate() {
            let stored = append(&store, i as u64, leaf).expect("append");
            assert_eq!(frontier.push(leaf), stored);
            for ((level, index), hash) in stored {
                store.0.insert((level, index), hash);
            }
            assert_eq!(frontier.size(), i as u64 + 1);
            assert_eq!(frontier.root(), root(&store, i as u64 + 1).expect("root"));
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_tampered_one_does_not() {
        let (store, ls) = grown(37);
        for size in 1..=37u64 {
            let r = root(&store, size).expect("root");
            for index in 0..size {
                let proof = inclusion_proof(&store, index, size).expect("proof");
                let leaf = ls[index as usize];
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, &r), Ok(()));
                let other = leaf_hash(b"not logged");
                assert!(verify_inclusion(&other, index, size, &proof, &r).is_err());
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &r).is_err());
                }
            }
        }
        assert!(inclusion_proof(&store, 37, 37).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_fork_does_not() {
        let (store, _) = grown(33);
        for new in 1..=33u64 {
            let new_root = root(&store, new).expect("root");
            for old in 1..=new {
                let old_root = root(&store, old).expect("root");
                let proof = consistency_proof(&store, old, new).expect("proof");
                assert_eq!(
                    verify_consistency(old, new, &old_root, &new_root, &proof),
                    Ok(()),
                    "{old} → {new}"
                );
                // A log that rewrote history (another old root) is caught.
                let forked = leaf_hash(b"forked");
                if old < new {
                    assert!(verify_consistency(old, new, &forked, &new_root, &proof).is_err());
                }
            }
        }
    }
}

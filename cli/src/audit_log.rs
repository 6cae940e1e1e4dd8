//! Client side of the transparency log: verify a checkpoint with the log key, prove that a
//! record (a bundle's signing) is in the log, and watch the log for forks and rollbacks. The
//! decisions are pure functions over what the server sent, so they are tested without a server;
//! `main.rs` fetches.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stella_api::{ConsistencyProof, InclusionProof};
use stella_signer::note::{Checkpoint, open_checkpoint};

/// The log key: a note verifier key (`<origin>+<id>+<key>`), or a file holding one (as `stella
/// trust export` writes `audit-log.vkey`).
pub fn read_log_key(arg: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)?;
        return Ok(text.trim().to_owned());
    }
    Ok(arg.trim().to_owned())
}

/// Verifies a checkpoint note with the log key.
pub fn verify_checkpoint(note: &str, log_key: &str) -> anyhow::Result<Checkpoint> {
    open_checkpoint(note, log_key).map_err(|e| anyhow::anyhow!("checkpoint rejected: {e}"))
}

fn hash32(hex_hash: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("`{hex_hash}` is not a hex SHA-256 hash"))
}

/// What a verified inclusion proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    pub audit_id: String,
    pub log_index: u64,
    pub tree_size: u64,
}

/// Checks an inclusion proof end to end against a verified checkpoint: the leaf is recomputed
/// from the record the server returned (RFC 8785 bytes, as the log hashes them), the proof
/// must lead from it to the checkpoint's root, and — when the caller holds the bundle — the
/// record must name that bundle's hash.
pub fn check_inclusion(
    proof: &InclusionProof,
    checkpoint: &Checkpoint,
    bundle_sha256: Option<&str>,
) -> anyhow::Result<Included> {
    if proof.tree_size != checkpoint.size {
        anyhow::bail!(
            "the proof is for {} records, the checkpoint for {}",
            proof.tree_size,
            checkpoint.size
        );
    }
    let bytes = serde_json_canonicalizer::to_vec(&proof.record)?;
    let leaf = stella_tlog::leaf_hash(&bytes);
    if hex::encode(leaf) != proof.leaf_hash {
        anyhow::bail!("the record does not hash to the leaf the server named");
    }
    let hashes = proof
        .hashes
        .iter()
        .map(|h| hash32(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    stella_tlog::verify_inclusion(
        &leaf,
        proof.log_index,
        proof.tree_size,
        &hashes,
        &checkpoint.root,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "record {} is NOT in the log the checkpoint commits to: {e}",
            proof.log_index
        )
    })?;
    let audit_id = proof
        .record
        .get("auditId")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if let Some(expected) = bundle_sha256 {
        let names: Vec<&str> = record_bundle_hashes(&proof.record);
        if !names.contains(&expected) {
            anyhow::bail!("record {audit_id} does not name bundle {expected}");
        }
    }
    Ok(Included {
        audit_id,
        log_index: proof.log_index,
        tree_size: proof.tree_size,
    })
}

/// The bundle hashes an audit record names (its own and, for several signatures, each one's).
fn record_bundle_hashes(record: &serde_json::Value) -> Vec<&str> {
    let mut out: Vec<&str> = record
        .get("bundleSha256")
        .and_then(|v| v.as_str())
        .into_iter()
        .collect();
    if let Some(signatures) = record.get("signatures").and_then(|v| v.as_array()) {
        out.extend(
            signatures
                .iter()
                .filter_map(|s| s.get("bundleSha256").and_then(|v| v.as_str())),
        );
    }
    out
}

/// SHA-256 (hex) of a file's bytes: how a bundle's hash is computed.
pub fn file_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The checkpoint a monitor last trusted, kept in its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    pub size: u64,
    /// Hex root.
    pub root: String,
    pub note: String,
}

impl Trusted {
    pub fn from(checkpoint: &Checkpoint, note: &str) -> Trusted {
        Trusted {
            size: checkpoint.size,
            root: hex::encode(checkpoint.root),
            note: note.to_owned(),
        }
    }
}

/// What a monitor concludes from a new checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing trusted yet: trust this one.
    First,
    /// The same checkpoint.
    Unchanged,
    /// A larger tree that extends the trusted one (the proof verified).
    Extended { from: u64, to: u64 },
    /// A smaller tree than one already trusted.
    Rollback { trusted: u64, served: u64 },
    /// Two different trees that cannot both be the log: same size with another root, or a
    /// larger tree that does not extend the trusted one.
    Fork {
        trusted: u64,
        served: u64,
        why: String,
    },
}

/// What a monitor needs from the server after seeing `new`: a consistency proof from the trusted
/// size, or nothing.
pub fn needs_proof(trusted: Option<&Trusted>, new: &Checkpoint) -> Option<(u64, u64)> {
    trusted
        .filter(|t| t.size < new.size && t.size > 0)
        .map(|t| (t.size, new.size))
}

/// The monitor's decision (pure).
pub fn judge(
    trusted: Option<&Trusted>,
    new: &Checkpoint,
    proof: Option<&ConsistencyProof>,
) -> Verdict {
    let Some(trusted) = trusted else {
        return Verdict::First;
    };
    let fork = |why: String| Verdict::Fork {
        trusted: trusted.size,
        served: new.size,
        why,
    };
    let Ok(old_root) = hash32(&trusted.root) else {
        return fork("the trusted root in the state file is not a hash".into());
    };
    if new.size < trusted.size {
        return Verdict::Rollback {
            trusted: trusted.size,
            served: new.size,
        };
    }
    if new.size == trusted.size {
        return if new.root == old_root {
            Verdict::Unchanged
        } else {
            fork("the same size with another root".into())
        };
    }
    if trusted.size == 0 {
        return Verdict::Extended {
            from: 0,
            to: new.size,
        };
    }
    let Some(proof) = proof.filter(|p| p.from == trusted.size && p.to == new.size) else {
        return fork("the server gave no consistency proof for these sizes".into());
    };
    let hashes = match proof
        .hashes
        .iter()
        .map(|h| hash32(h))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(h) => h,
        Err(e) => return fork(e.to_string()),
    };
    match stella_tlog::verify_consistency(trusted.size, new.size, &old_root, &new.root, &hashes) {
        Ok(()) => Verdict::Extended {
            from: trusted.size,
            to: new.size,
        },
        Err(e) => fork(format!("the consistency proof does not verify: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem(std::collections::HashMap<(u8, u64), [u8; 32]>);

    impl stella_tlog::HashStore for Mem {
        fn get(&self, level: u8, index: u64) -> Option<[u8; 32]> {
            self.0.get(&(level, index)).copied()
        }
    }

    fn tree(leaves: &[&str]) -> Mem {
        let mut store = Mem::default();
        for (i, leaf) in leaves.iter().enumerate() {
            let hash = stella_tlog::leaf_hash(leaf.as_bytes());
            for (node, h) in stella_tlog::append(&store, i as u64, hash).expect("append") {
                store.0.insert(node, h);
            }
        }
        store
    }

    fn head(store: &Mem, size: u64) -> Checkpoint {
        Checkpoint {
            origin: "test".into(),
            size,
            root: stella_tlog::root(store, size).expect("root"),
        }
    }

    #[test]
    fn a_monitor_accepts_extensions_and_names_rollbacks_and_forks() {
        let honest = tree(&["a", "b", "c", "d", "e", "f"]);
        let forked = tree(&["a", "b", "c", "X", "e", "f"]);
        let trusted = Trusted::from(&head(&honest, 4), "note");
        assert_eq!(judge(None, &head(&honest, 4), None), Verdict::First);
        assert_eq!(
            judge(Some(&trusted), &head(&honest, 4), None),
            Verdict::Unchanged
        );
        let proof = |store: &Mem| ConsistencyProof {
            from: 4,
            to: 6,
            hashes: stella_tlog::consistency_proof(store, 4, 6)
                .expect("proof")
                .iter()
                .map(hex::encode)
                .collect(),
        };
        assert_eq!(needs_proof(Some(&trusted), &head(&honest, 6)), Some((4, 6)));
        assert_eq!(
            judge(Some(&trusted), &head(&honest, 6), Some(&proof(&honest))),
            Verdict::Extended { from: 4, to: 6 }
        );
        assert!(matches!(
            judge(Some(&trusted), &head(&forked, 6), Some(&proof(&forked))),
            Verdict::Fork { .. }
        ));
        assert!(matches!(
            judge(Some(&trusted), &head(&forked, 4), None),
            Verdict::Fork { .. }
        ));
        assert_eq!(
            judge(Some(&trusted), &head(&honest, 3), None),
            Verdict::Rollback {
                trusted: 4,
                served: 3
            }
        );
        assert!(matches!(
            judge(Some(&trusted), &head(&honest, 6), None),
            Verdict::Fork { .. }
        ));
    }
}

//! The audit log as a transparency log, on the node: the log key, the checkpointer (the leader
//! cuts and signs a checkpoint at least every N records or T milliseconds) and the reads behind
//! the checkpoint and proof endpoints. The tree itself is the state machine's (`stella_state::
//! log_tree`, `storage`); ADR 0016 says what a checkpoint promises.

use std::sync::Arc;
use std::time::Duration;

use stella_api::{AuditLogKey, ConsistencyProof, InclusionProof, LogEntry};
use stella_cluster::ClusterHandle;
use stella_signer::note::LogKey;
use stella_state::Command;
use stella_state::command::Response;
use stella_state::log_tree::SignedCheckpoint;
use stella_state::storage::{StateView, TreeError};

use crate::clock::Clock;
use crate::config::Config;
use crate::{Error, keys};

/// When the leader cuts a new checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub every_records: u64,
    pub interval_ms: u64,
}

/// Whether a checkpoint is due: records were added since the last one, and either enough of them
/// or enough time passed (pure).
pub fn due(policy: Policy, tree_size: u64, last: Option<&SignedCheckpoint>, now_ms: u64) -> bool {
    let Some(last) = last else {
        return tree_size > 0;
    };
    tree_size > last.head.size
        && (tree_size - last.head.size >= policy.every_records
            || now_ms.saturating_sub(last.cut_at_ms) >= policy.interval_ms)
}

/// The log key: `[audit_log.pkcs11]`, `[audit_log] key_file`, or in dev mode
/// `DATA_DIR/log-key.pem` (created).
pub fn load_log_key(config: &Config) -> Result<Option<LogKey>, Error> {
    if let Some(hsm) = &config.audit_log.pkcs11 {
        let key = LogKey::from_pkcs11(
            &config.log_origin(),
            &stella_signer::pkcs11::Pkcs11Config {
                module: hsm.module.clone(),
                token_label: hsm.token_label.clone(),
                pin: keys::read_pin(&hsm.pin_file)?,
                key_label: hsm.key_label.clone(),
                max_sessions: 1,
            },
            hsm.create,
        )
        .map_err(|e| Error::Key(format!("[audit_log.pkcs11]: {e}")))?;
        tracing::info!(origin = %key.origin(), verifier_key = %key.verifier_key(), token = %hsm.token_label, "audit-log key ready (PKCS#11)");
        return Ok(Some(key));
    }
    let path = match (&config.audit_log.key_file, config.dev) {
        (Some(path), _) => path.clone(),
        (None, true) => config.data_dir.join("log-key.pem"),
        (None, false) => {
            tracing::warn!(
                "[audit_log] key_file is not set: this node signs no checkpoints (it keeps the tree and serves proofs)"
            );
            return Ok(None);
        }
    };
    if config.dev && !path.exists() {
        let pem = LogKey::generate_pkcs8_pem().map_err(|e| Error::Key(e.to_string()))?;
        keys::write_secret_atomically(&path, pem.as_bytes())?;
        tracing::info!(path = %path.display(), "created dev audit-log key");
    }
    keys::owner_only(&path)?;
    let pem =
        std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    let key = LogKey::from_pkcs8_pem(&config.log_origin(), &pem)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    tracing::info!(origin = %key.origin(), verifier_key = %key.verifier_key(), "audit-log key ready");
    Ok(Some(key))
}

/// What `stella trust export` publishes about the log.
pub fn published(key: &LogKey) -> AuditLogKey {
    AuditLogKey {
        origin: key.origin().to_owned(),
        verifier_key: key.verifier_key(),
    }
}

/// Runs the checkpointer until the node stops: while this node leads, a due checkpoint is cut
/// (one entry), signed, and committed (a second entry), so every node serves it.
pub fn spawn_checkpointer(
    cluster: ClusterHandle,
    key: Arc<LogKey>,
    policy: Policy,
    clock: Arc<dyn Clock>,
) -> tokio::task::JoinHandle<()> {
    let tick = Duration::from_millis((policy.interval_ms / 4).clamp(10, 250));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !cluster.serving_leader() {
                continue;
            }
            let tree = cluster.view().log_tree();
            if !due(
                policy,
                tree.head().size,
                tree.checkpoint.as_ref(),
                clock.now_ms(),
            ) {
                continue;
            }
            if let Err(e) = checkpoint(&cluster, &key, clock.now_ms()).await {
                tracing::warn!(error = %e, "checkpoint not signed; the next tick retries");
            }
        }
    })
}

async fn checkpoint(cluster: &ClusterHandle, key: &LogKey, now_ms: u64) -> Result<(), Error> {
    let unavailable = |e: stella_cluster::ClusterError| Error::Unavailable(e.to_string());
    let head = match cluster
        .propose(Command::CutCheckpoint { now_ms })
        .await
        .map_err(unavailable)?
    {
        Response::CheckpointCut(head) => head,
        other => return Err(Error::Unavailable(format!("cut answered {other:?}"))),
    };
    let note = key
        .sign_checkpoint(head.size, &head.root)
        .map_err(|e| Error::Key(e.to_string()))?;
    // What a token returned is checked before the cluster serves it.
    stella_signer::note::open_checkpoint(&note, &key.verifier_key())
        .map_err(|e| Error::Key(format!("the log key made a note that does not verify: {e}")))?;
    match cluster
        .propose(Command::SignCheckpoint { head, note })
        .await
        .map_err(unavailable)?
    {
        Response::CheckpointSigned => {
            tracing::debug!(size = head.size, "checkpoint signed");
            Ok(())
        }
        other => Err(Error::Unavailable(format!(
            "the signed checkpoint was refused: {other:?}"
        ))),
    }
}

/// The current signed checkpoint (the note, byte for byte).
pub fn current_checkpoint(view: &StateView) -> Result<String, Error> {
    view.log_tree()
        .checkpoint
        .map(|c| c.note)
        .ok_or_else(|| Error::NotFound("no checkpoint has been signed yet".into()))
}

/// The log position of record `audit_id` as this node has applied it.
pub fn log_entry(view: &StateView, audit_id: &str) -> Result<LogEntry, Error> {
    let seq = parse_audit_id(audit_id)?;
    let record = view
        .audit_record(seq)
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .ok_or_else(|| Error::NotFound(format!("no audit record {audit_id}")))?;
    Ok(LogEntry {
        log_index: seq - 1,
        leaf_hash: hex::encode(stella_state::merkle::leaf_hash(&record.to_canonical_line())),
    })
}

/// Which record an inclusion proof is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Index(u64),
    AuditId(String),
    BundleHash(String),
}

/// The inclusion proof of a record the caller may read (`tenant`: `None` for auditors) in the
/// tree of `tree_size` records (default: the current checkpoint's).
pub fn inclusion(
    view: &StateView,
    target: &Target,
    tree_size: Option<u64>,
    tenant: Option<&str>,
) -> Result<InclusionProof, Error> {
    let seq = match target {
        Target::Index(index) => index
            .checked_add(1)
            .ok_or_else(|| Error::InvalidRequest("index is out of range".into()))?,
        Target::AuditId(id) => parse_audit_id(id)?,
        Target::BundleHash(hash) => {
            let hash = hash.strip_prefix("sha256:").unwrap_or(hash);
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidRequest(
                    "bundleHash must be 64 hex digits".into(),
                ));
            }
            let seqs = view
                .seqs_by_bundle(&hash.to_ascii_lowercase())
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            *seqs
                .first()
                .ok_or_else(|| Error::NotFound("no audit record names that bundle".into()))?
        }
    };
    let record = view
        .audit_record(seq)
        .map_err(|e| Error::Unavailable(e.to_string()))?
        // A record another tenant owns is answered exactly like one that does not exist.
        .filter(|r| tenant.is_none_or(|t| r.draft.tenant == t))
        .ok_or_else(|| Error::NotFound("no such audit record".into()))?;
    let checkpoint = view.log_tree().checkpoint;
    let (tree_size, note) = match tree_size {
        Some(size) => (
            size,
            checkpoint.filter(|c| c.head.size == size).map(|c| c.note),
        ),
        None => {
            let c = checkpoint.ok_or_else(|| {
                Error::Unavailable("no checkpoint has been signed yet; retry shortly".into())
            })?;
            (c.head.size, Some(c.note))
        }
    };
    let index = seq - 1;
    if index >= tree_size {
        return Err(Error::NotFound(format!(
            "record {} is not in the tree of {tree_size} records (yet)",
            record.audit_id
        )));
    }
    let hashes = view.inclusion_proof(index, tree_size).map_err(tree_error)?;
    Ok(InclusionProof {
        log_index: index,
        tree_size,
        leaf_hash: hex::encode(stella_state::merkle::leaf_hash(&record.to_canonical_line())),
        hashes: hashes.iter().map(hex::encode).collect(),
        record: serde_json::to_value(&record).map_err(|e| Error::Unavailable(e.to_string()))?,
        checkpoint: note,
    })
}

/// The consistency proof between the trees of `from` and `to` records.
pub fn consistency(view: &StateView, from: u64, to: u64) -> Result<ConsistencyProof, Error> {
    if from > to {
        return Err(Error::InvalidRequest(
            "from must not be larger than to".into(),
        ));
    }
    let hashes = view.consistency_proof(from, to).map_err(tree_error)?;
    Ok(ConsistencyProof {
        from,
        to,
        hashes: hashes.iter().map(hex::encode).collect(),
    })
}

fn tree_error(e: TreeError) -> Error {
    match e {
        // A size this node has not applied yet (it lags the node that served the checkpoint):
        // retryable, here or on another node.
        TreeError::Beyond { .. } => Error::Unavailable(e.to_string()),
        TreeError::Merkle(stella_state::merkle::MerkleError::OutOfRange { .. }) => {
            Error::InvalidRequest(e.to_string())
        }
        // A tree read racing the commit of the records it needs: retryable.
        TreeError::Merkle(_) | TreeError::Storage(_) => Error::Unavailable(e.to_string()),
    }
}

/// `aud-0000000000000042` (or the bare number) → 42; zero is no record.
pub fn parse_audit_id(id: &str) -> Result<u64, Error> {
    let digits = id.strip_prefix("aud-").unwrap_or(id);
    match digits.parse::<u64>() {
        Ok(seq) if seq > 0 && digits.len() <= 20 => Ok(seq),
        _ => Err(Error::InvalidRequest(format!(
            "`{}` is not an audit id",
            crate::error::clip_to(id, 80)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_state::log_tree::TreeHead;

    fn last(size: u64, cut_at_ms: u64) -> SignedCheckpoint {
        SignedCheckpoint {
            head: TreeHead {
                size,
                root: [0; 32],
            },
            cut_at_ms,
            note: String::new(),
        }
    }

    #[test]
    fn a_checkpoint_is_due_after_enough_records_or_enough_time_but_never_for_nothing() {
        let policy = Policy {
            every_records: 100,
            interval_ms: 1000,
        };
        assert!(!due(policy, 0, None, 0), "an empty log has nothing to sign");
        assert!(
            due(policy, 1, None, 0),
            "the first record gets a checkpoint"
        );
        let cp = last(10, 5_000);
        assert!(!due(policy, 10, Some(&cp), 99_000), "nothing new: none");
        assert!(!due(policy, 11, Some(&cp), 5_500), "one record, too soon");
        assert!(due(policy, 11, Some(&cp), 6_000), "one record, time's up");
        assert!(due(policy, 110, Some(&cp), 5_001), "enough records");
        assert!(
            !due(policy, 11, Some(&cp), 4_000),
            "a clock behind the cut never underflows"
        );
    }

    #[test]
    fn audit_ids_are_checked() {
        assert_eq!(parse_audit_id("aud-0000000000000042").ok(), Some(42));
        assert_eq!(parse_audit_id("7").ok(), Some(7));
        for bad in ["aud-0", "aud-", "-1", "aud-x", "99999999999999999999999"] {
            assert!(parse_audit_id(bad).is_err(), "{bad}");
        }
    }
}

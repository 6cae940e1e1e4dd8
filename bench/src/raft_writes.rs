//! G3: Raft-committed writes per second with fsync, at 64 concurrent clients, against a
//! single-node redb group-commit baseline measured in the same run.
//!
//! - Baseline: one redb file; a writer task drains every pending write into one transaction and
//!   commits it with `Durability::Immediate` (fsync), then answers all of them.
//! - Raft: a one-node cluster in-process (the production `ClusterHandle` on redb, log and state
//!   machine both fsynced) fed through the production quota-ledger actor, which batches
//!   concurrent proposals into one log entry. Each write is an audit append.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use stella_cluster::{ClusterConfig, ClusterHandle};
use stella_node::ledger::Ledger;
use stella_state::raft_types::NodeAddr;
use stella_state::{AuditDraft, Command, Decision};
use tokio::sync::{mpsc, oneshot};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("writes");

pub struct G3 {
    pub baseline: f64,
    pub raft: f64,
}

fn draft(i: u64) -> AuditDraft {
    AuditDraft {
        time: "2026-11-28T12:00:00Z".into(),
        request_id: format!("bench-{i}"),
        tenant: "bench".into(),
        caller_subject: "bench".into(),
        issuer: "bench".into(),
        subject_digests: vec![format!("sha256:{}", "a".repeat(64))],
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: "sha256:bench".into(),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "not_checked".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Signed,
        reason: "signed".into(),
        bundle_sha256: Some("b".repeat(64)),
        statement_sha256: Some("c".repeat(64)),
        signatures: Vec::new(),
    }
}

pub async fn measure(clients: usize, duration: Duration) -> anyhow::Result<G3> {
    let dir = tempfile::tempdir()?;
    let baseline = baseline(&dir.path().join("baseline.redb"), clients, duration).await?;
    let raft = raft(&dir.path().join("raft"), clients, duration).await?;
    Ok(G3 { baseline, raft })
}

async fn baseline(
    path: &std::path::Path,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let db = Arc::new(Database::create(path)?);
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<()>)>(4096);
    let writer_db = db.clone();
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut seq = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while let Ok(next) = rx.try_recv() {
                batch.push(next);
            }
            let txn = writer_db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for (bytes, _) in &batch {
                    seq += 1;
                    table.insert(seq, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            for (_, reply) in batch {
                let _ = reply.send(());
            }
        }
        Ok(())
    });
    let record = serde_json_canonicalizer_bytes(&draft(0));
    let rate = drive(clients, duration, move |_| {
        let tx = tx.clone();
        let record = record.clone();
        async move {
            let (reply, done) = oneshot::channel();
            tx.send((record, reply)).await.is_ok() && done.await.is_ok()
        }
    })
    .await;
    writer.abort();
    Ok(rate)
}

async fn raft(dir: &std::path::Path, clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let cluster = ClusterHandle::start(ClusterConfig::new(
        1,
        dir.to_path_buf(),
        NodeAddr::default(),
        None,
    ))
    .await?;
    cluster.initialize().await?;
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let ledger = Ledger::start(cluster.clone(), 1 << 16).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let rate = drive(clients, duration, move |_| {
        let ledger = ledger.clone();
        let i = counter.fetch_add(1, Ordering::Relaxed);
        async move { ledger.propose(Command::Audit(draft(i))).await.is_ok() }
    })
    .await;
    cluster.shutdown().await;
    Ok(rate)
}

/// Runs `clients` loops of `op` for `duration`; returns successful operations per second.
async fn drive<F, Fut>(clients: usize, duration: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if op(c).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn serde_json_canonicalizer_bytes(draft: &AuditDraft) -> Vec<u8> {
    stella_signer::canonical::to_vec(draft).unwrap_or_default()
}

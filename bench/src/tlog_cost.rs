//! The transparency log's costs (issue 15): proof generation and look-up by bundle hash at
//! growing log sizes (expected: logarithmic), the state machine's apply cost per record as the
//! log grows, and the CPU the tree itself adds per record.
//!
//! The log is built through the production state machine (`storage::open` + `apply`, batches of
//! 1,000 audit commands, as group commit delivers them), so every record gets its chain link,
//! leaf, subtree hashes and index rows exactly as on a node.

use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId};
use stella_state::raft_types::Entry;
use stella_state::{AuditDraft, AuditRecord, Command, Decision};

pub struct Row {
    pub records: u64,
    /// Apply cost per record while the log grew to this size (µs).
    pub apply_us: f64,
    pub inclusion_p50_us: f64,
    pub inclusion_p99_us: f64,
    pub consistency_p50_us: f64,
    pub lookup_p50_us: f64,
    pub lookup_p99_us: f64,
}

pub(crate) fn draft(i: u64) -> AuditDraft {
    AuditDraft {
        time: format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}Z",
            1 + (i / 86_400) % 28,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        ),
        request_id: format!("bench-{i}"),
        tenant: format!("tenant-{}", i % 100),
        caller_subject: "bench".into(),
        issuer: "bench".into(),
        subject_digests: vec![format!("sha256:{:064x}", i.wrapping_mul(0x9e37_79b9))],
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: format!("sha256:key-{}", i % 10),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "valid".into(),
        plan: Some("team".into()),
        provenance: None,
        certificate_serial: None,
        decision: Decision::Signed,
        reason: "signed".into(),
        bundle_sha256: Some(bundle_hash(i)),
        statement_sha256: Some("c".repeat(64)),
        signatures: Vec::new(),
    }
}

fn bundle_hash(i: u64) -> String {
    format!("{:064x}", i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xabcdef)
}

/// xorshift64*: repeatable samples without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(at).copied().unwrap_or(0.0)
}

fn timed(mut f: impl FnMut(), samples: usize) -> Vec<f64> {
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

pub async fn measure(sizes: &[u64]) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = stella_state::storage::open(dir.path())
        .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
    let view = sm.view();
    let mut built = 0u64;
    let mut rows = Vec::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for &size in sizes {
        let started = Instant::now();
        let grown = size.saturating_sub(built);
        while built < size {
            let batch = (size - built).min(1000);
            let entries: Vec<Entry> = (0..batch)
                .map(|k| {
                    let i = built + k;
                    Entry {
                        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i + 1),
                        payload: EntryPayload::Normal(Command::Audit(draft(i))),
                    }
                })
                .collect();
            sm.apply(entries)
                .await
                .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
            built += batch;
        }
        let apply_us = started.elapsed().as_secs_f64() * 1e6 / grown.max(1) as f64;
        let samples = 2000;
        let mut inclusion = timed(
            || {
                let index = rng.below(size);
                let proof = view.inclusion_proof(index, size);
                assert!(proof.is_ok(), "inclusion proof at {index}/{size}");
            },
            samples,
        );
        let mut consistency = timed(
            || {
                let old = 1 + rng.below(size - 1);
                let proof = view.consistency_proof(old, size);
                assert!(proof.is_ok(), "consistency proof {old}/{size}");
            },
            samples,
        );
        let mut lookup = timed(
            || {
                let i = rng.below(size);
                let seqs = view.seqs_by_bundle(&bundle_hash(i)).unwrap_or_default();
                let record = seqs
                    .first()
                    .and_then(|s| view.audit_record(*s).ok().flatten());
                assert!(
                    record.is_some_and(|r| r.seq == i + 1),
                    "look-up of record {i}"
                );
            },
            samples,
        );
        rows.push(Row {
            records: size,
            apply_us,
            inclusion_p50_us: percentile(&mut inclusion, 0.5),
            inclusion_p99_us: percentile(&mut inclusion, 0.99),
            consistency_p50_us: percentile(&mut consistency, 0.5),
            lookup_p50_us: percentile(&mut lookup, 0.5),
            lookup_p99_us: percentile(&mut lookup, 0.99),
        });
    }
    Ok(rows)
}

/// What the tree adds per record (µs): the leaf hash over the record's canonical bytes and the
/// frontier append (CPU), and that plus writing the subtree hashes it completes into a redb
/// table in transactions of 1,000 records, as apply does. The canonical bytes are what storage
/// writes anyway; they are made outside the timing.
pub fn tree_cost_per_record(n: u64, budget: Duration) -> anyhow::Result<(f64, f64)> {
    const NODES: redb::TableDefinition<(u8, u64), &[u8]> = redb::TableDefinition::new("merkle");
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| AuditRecord::chain(draft(i), None).to_canonical_line())
        .collect();
    let mut tree = stella_state::log_tree::LogTree::default();
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < budget || done == 0 {
        for line in &records {
            tree.push_record(line);
            done += 1;
        }
        let _ = tree.take_nodes();
    }
    let cpu = started.elapsed().as_secs_f64() * 1e6 / done as f64;

    let dir = tempfile::tempdir()?;
    let db = redb::Database::create(dir.path().join("tree.redb"))?;
    let mut tree = stella_state::log_tree::LogTree::default();
    let started = Instant::now();
    for chunk in records.chunks(1000) {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut table = txn.open_table(NODES)?;
            for line in chunk {
                tree.push_record(line);
            }
            for (node, hash) in tree.take_nodes() {
                table.insert(node, hash.as_slice())?;
            }
        }
        txn.commit()?;
    }
    let stored = started.elapsed().as_secs_f64() * 1e6 / records.len() as f64;
    Ok((cpu, stored))
}

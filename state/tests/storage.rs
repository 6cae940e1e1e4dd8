//! The redb storage against openraft's own storage test suite, plus restart and snapshot checks.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, Vote};
use stella_state::command::{Reserve, Response};
use stella_state::raft_types::{Entry, StorageError, TypeConfig};
use stella_state::storage::{self, LogStore, StateMachineStore};
use stella_state::{AuditDraft, Command, Decision};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let (log, sm) = storage::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

fn audit(i: u64) -> Command {
    Command::Audit(AuditDraft {
        time: format!("2026-11-28T10:00:{i:02}Z"),
        request_id: format!("req-{i}"),
        tenant: "t".into(),
        caller_subject: "c".into(),
        issuer: "i".into(),
        subject_digests: vec![],
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: "k".into(),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "not_checked".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Signed,
        reason: "signed".into(),
        bundle_sha256: None,
        statement_sha256: None,
    })
}

/// An admission claiming proof `proof` and reserving `id`.
fn admit(id: &str, proof: &str) -> Command {
    let Command::Reserve(reserve) = reserve(id) else {
        unreachable!("reserve builds a Reserve")
    };
    Command::Admit(stella_state::command::Admit {
        proof: Some(stella_state::command::ProofClaim {
            key: proof.into(),
            expires_at_ms: 600_000,
        }),
        reserve,
    })
}

fn reserve(id: &str) -> Command {
    Command::Reserve(Reserve {
        reservation_id: id.into(),
        tenant: "t".into(),
        plan: "p".into(),
        limit: 10,
        window_ms: 60_000,
        max_concurrent: 5,
        now_ms: 1_000,
        ttl_ms: 10_000,
    })
}

#[tokio::test]
async fn applied_state_and_audit_survive_reopen_and_travel_in_snapshots() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (mut log, mut sm) = storage::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        let entries = vec![
            entry(1, 1, audit(1)),
            entry(1, 2, admit("r1", "proof-1")),
            entry(1, 3, audit(2)),
        ];
        let responses = sm.apply(entries).await.expect("apply");
        assert!(matches!(responses[0], Response::Audited { seq: 1, .. }));
        assert!(matches!(
            responses[1],
            Response::Reserved { remaining: 9, .. }
        ));
    }
    // Reopen: vote, applied index, state and audit records are all there.
    let (mut log, mut sm) = storage::open(dir.path()).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 3)));
    let view = sm.view();
    let records = view.audit_after(0, 100).expect("audit");
    assert_eq!(records.len(), 2);
    assert_eq!(stella_state::verify_chain(&records, None), Ok(()));
    assert_eq!(view.with_state(|s| s.reservations.len()), 1);
    assert_eq!(
        view.with_state(|s| s.proofs.len()),
        1,
        "the replicated proof set survives a restart"
    );
    let responses = sm
        .apply(vec![entry(2, 4, audit(3))])
        .await
        .expect("apply after reopen");
    assert!(
        matches!(responses[0], Response::Audited { seq: 3, .. }),
        "the chain continues: {responses:?}"
    );

    // A snapshot installed on a fresh node reproduces state and audit records exactly.
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    let other = tempfile::tempdir().expect("tmp");
    let (_, mut fresh) = storage::open(other.path()).expect("open fresh");
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(
        fresh.applied_state().await.expect("applied").0,
        Some(log_id(2, 4))
    );
    assert_eq!(
        fresh.view().audit_after(0, 100).expect("audit"),
        view.audit_after(0, 100).expect("audit")
    );
    assert_eq!(
        fresh.view().with_state(Clone::clone),
        view.with_state(Clone::clone)
    );
    let next = fresh
        .apply(vec![
            entry(2, 5, audit(4)),
            entry(2, 6, admit("r2", "proof-1")),
        ])
        .await
        .expect("apply");
    assert!(matches!(next[0], Response::Audited { seq: 4, .. }));
    assert_eq!(
        next[1],
        Response::Replayed,
        "a proof claimed before the snapshot stays claimed after it"
    );
    assert!(
        fresh
            .get_current_snapshot()
            .await
            .expect("current")
            .is_some()
    );
}

/// A node upgraded from format v4 finds its one-time proofs in the old `proofs` table: they are
/// claims (a second use is a replay), and they leave that table when they expire.
#[tokio::test]
async fn proofs_of_a_v4_node_are_claims_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        // What a v4 node left behind: one row in `proofs` (key → end of its window).
        let db = redb::Database::create(dir.path().join("state-machine.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("proofs");
            let mut proofs = txn.open_table(table).expect("table");
            proofs.insert("old-proof", 600_000).expect("row");
        }
        txn.commit().expect("commit");
    }
    let (_, mut sm) = storage::open(dir.path()).expect("open");
    assert!(sm.view().with_state(|s| s.proofs.contains("old-proof")));
    let responses = sm
        .apply(vec![entry(1, 1, admit("r1", "old-proof"))])
        .await
        .expect("apply");
    assert_eq!(
        responses[0],
        Response::Replayed,
        "a v4 proof is still spent"
    );
    // Past its window it is forgotten, in both tables: a reopened node does not bring it back.
    let mut late = admit("r2", "new-proof");
    if let Command::Admit(a) = &mut late {
        a.reserve.now_ms = 700_000;
    }
    sm.apply(vec![entry(1, 2, late)]).await.expect("apply");
    drop(sm);
    let (_, sm) = storage::open(dir.path()).expect("reopen");
    let view = sm.view();
    assert!(!view.with_state(|s| s.proofs.contains("old-proof")));
    assert!(view.with_state(|s| s.proofs.contains("new-proof")));
}

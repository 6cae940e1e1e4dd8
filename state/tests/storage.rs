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
        bundle_sha256: Some(format!("{i:064x}")),
        statement_sha256: None,
        signatures: Vec::new(),
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

/// The audit log's Merkle tree is kept with the records: proofs from storage verify against the
/// replicated head, a checkpoint is cut and signed through entries, both survive a reopen and
/// travel in snapshots, and files from before format 6 get their tree rebuilt on open.
#[tokio::test]
async fn the_merkle_tree_and_checkpoints_are_stored_with_the_records() {
    use stella_state::log_tree::TreeHead;
    use stella_state::merkle;

    let dir = tempfile::tempdir().expect("tmp");
    let note = |head: &TreeHead| {
        use base64::Engine as _;
        let root = base64::engine::general_purpose::STANDARD.encode(head.root);
        format!("test/log\n{}\n{root}\n\n— test/log AAAA\n", head.size)
    };
    let (head, roots) = {
        let (_, mut sm) = storage::open(dir.path()).expect("open");
        let mut index = 0;
        let mut roots = Vec::new();
        for i in 1..=13 {
            index += 1;
            sm.apply(vec![entry(1, index, audit(i))])
                .await
                .expect("apply");
            roots.push(sm.view().log_tree().head().root);
        }
        index += 1;
        let cut = sm
            .apply(vec![
                entry(1, index, Command::CutCheckpoint { now_ms: 7 }),
                entry(1, index + 1, audit(14)),
            ])
            .await
            .expect("cut");
        let Response::CheckpointCut(head) = cut[0] else {
            panic!("cut: {cut:?}")
        };
        assert_eq!(head.size, 13, "the cut is the head when it applied");
        let signed = sm
            .apply(vec![entry(
                1,
                index + 2,
                Command::SignCheckpoint {
                    head,
                    note: note(&head),
                },
            )])
            .await
            .expect("sign");
        assert_eq!(signed[0], Response::CheckpointSigned);
        (head, roots)
    };

    let (_, sm) = storage::open(dir.path()).expect("reopen");
    let view = sm.view();
    let tree = view.log_tree();
    assert_eq!(tree.head().size, 14);
    assert_eq!(tree.checkpoint.as_ref().map(|c| c.head), Some(head));
    let records = view.audit_after(0, 100).expect("records");
    for size in 1..=13u64 {
        assert_eq!(
            view.tree_root(size).expect("root"),
            roots[size as usize - 1]
        );
        for index in 0..size {
            let leaf = merkle::leaf_hash(&records[index as usize].to_canonical_line());
            let proof = view.inclusion_proof(index, size).expect("inclusion");
            merkle::verify_inclusion(&leaf, index, size, &proof, &roots[size as usize - 1])
                .expect("inclusion verifies");
        }
        let proof = view.consistency_proof(size, 13).expect("consistency");
        merkle::verify_consistency(size, 13, &roots[size as usize - 1], &roots[12], &proof)
            .expect("consistency verifies");
    }
    assert!(matches!(
        view.inclusion_proof(0, 15),
        Err(storage::TreeError::Beyond { .. })
    ));
    assert_eq!(
        view.seqs_by_bundle(&format!("{:064x}", 9)).expect("index"),
        vec![9]
    );
    assert!(view.seqs_by_bundle("nothing").expect("index").is_empty());

    // A node whose files predate the tree (no head key, no tree table) rebuilds it on open.
    drop((view, sm));
    {
        let db = redb::Database::open(dir.path().join("state-machine.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sm_meta");
            txn.open_table(meta)
                .expect("meta")
                .remove("log_tree")
                .expect("remove");
            let nodes: redb::TableDefinition<(u8, u64), &[u8]> =
                redb::TableDefinition::new("merkle");
            txn.delete_table(nodes).expect("drop tree");
        }
        txn.commit().expect("commit");
    }
    let (_, mut sm) = storage::open(dir.path()).expect("open the old files");
    let rebuilt = sm.view().log_tree();
    assert_eq!(
        rebuilt.head(),
        tree.head(),
        "the same root from the same records"
    );
    assert_eq!(rebuilt.checkpoint, None, "a checkpoint is not invented");
    assert_eq!(
        sm.view()
            .seqs_by_bundle(&format!("{:064x}", 12))
            .expect("index"),
        vec![12],
        "the indexes are rebuilt with the tree"
    );
    let proof = sm
        .view()
        .inclusion_proof(3, 13)
        .expect("inclusion after rebuild");
    let leaf = merkle::leaf_hash(&records[3].to_canonical_line());
    merkle::verify_inclusion(&leaf, 3, 13, &proof, &roots[12]).expect("verifies");

    // A snapshot carries the head and checkpoint; the receiver rebuilds the nodes and agrees.
    let cut = sm
        .apply(vec![entry(2, 20, Command::CutCheckpoint { now_ms: 9 })])
        .await
        .expect("cut");
    let Response::CheckpointCut(head) = cut[0] else {
        panic!("cut: {cut:?}")
    };
    sm.apply(vec![entry(
        2,
        21,
        Command::SignCheckpoint {
            head,
            note: note(&head),
        },
    )])
    .await
    .expect("sign");
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
    assert_eq!(fresh.view().log_tree(), sm.view().log_tree());
    assert_eq!(
        fresh.view().log_tree().checkpoint.map(|c| c.head.size),
        Some(14)
    );
    assert_eq!(
        fresh.view().consistency_proof(5, 14).expect("proof"),
        sm.view().consistency_proof(5, 14).expect("proof")
    );
}

/// The files under a store's `snapshots/` directory.
fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Snapshots are files streamed from storage: building one writes a file (the database keeps
/// only where it is), a fresh node and a node that is behind both install it to the same state,
/// records, tree and indexes, and a file whose records were altered is refused without
/// touching the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_files_installed_in_a_stream() {
    const N: u64 = 3_000;
    let leader_dir = tempfile::tempdir().expect("tmp");
    let (_, mut leader) = storage::open(leader_dir.path()).expect("open");
    let entries: Vec<Entry> = (1..=N).map(|i| entry(1, i, audit(i))).collect();
    for chunk in entries.chunks(500) {
        leader.apply(chunk.to_vec()).await.expect("apply");
    }
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let files = snapshot_files(leader_dir.path());
    assert_eq!(files.len(), 1, "one snapshot file: {files:?}");
    let size = std::fs::metadata(&files[0]).expect("file").len();
    assert!(size > N * 300, "the file holds the records ({size} bytes)");

    // A node that is behind: it applied the first half itself.
    let behind_dir = tempfile::tempdir().expect("tmp");
    let (_, mut behind) = storage::open(behind_dir.path()).expect("open");
    for chunk in entries[..(N as usize / 2)].chunks(500) {
        behind.apply(chunk.to_vec()).await.expect("apply");
    }
    let fresh_dir = tempfile::tempdir().expect("tmp");
    let (_, mut fresh) = storage::open(fresh_dir.path()).expect("open");
    for node in [&mut behind, &mut fresh] {
        let current = leader
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("a snapshot");
        node.install_snapshot(&current.meta, current.snapshot)
            .await
            .expect("install");
        assert_eq!(
            node.applied_state().await.expect("applied").0,
            Some(log_id(1, N))
        );
        assert_eq!(node.view().log_tree(), leader.view().log_tree());
        assert_eq!(
            node.view().audit_after(N - 3, 10).expect("audit"),
            leader.view().audit_after(N - 3, 10).expect("audit")
        );
        assert_eq!(
            node.view()
                .seqs_by_bundle(&format!("{:064x}", N - 1))
                .expect("index"),
            vec![N - 1]
        );
        assert_eq!(
            node.view().inclusion_proof(7, N).expect("proof"),
            leader.view().inclusion_proof(7, N).expect("proof")
        );
        assert_eq!(
            node.view().with_state(Clone::clone),
            leader.view().with_state(Clone::clone)
        );
    }
    assert_eq!(
        snapshot_files(fresh_dir.path()).len(),
        1,
        "the receiver keeps its copy"
    );

    // A snapshot file whose records were altered (same length, so the frames still parse) is
    // refused, and the receiver is where it was.
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let at = bytes
        .windows(7)
        .rposition(|w| w == b"req-123")
        .expect("a record");
    bytes[at + 4] = b'9';
    let forged = leader_dir.path().join("forged.bin");
    std::fs::write(&forged, &bytes).expect("write");
    let victim_dir = tempfile::tempdir().expect("tmp");
    let (_, mut victim) = storage::open(victim_dir.path()).expect("open");
    victim.apply(entries[..10].to_vec()).await.expect("apply");
    let err = victim
        .install_snapshot(
            &snapshot.meta,
            Box::new(tokio::fs::File::open(&forged).await.expect("open")),
        )
        .await
        .expect_err("a forged snapshot is refused");
    assert!(err.to_string().contains("tree head"), "{err}");
    assert_eq!(
        victim.applied_state().await.expect("applied").0,
        Some(log_id(1, 10))
    );
    assert_eq!(victim.view().audit_after(0, 100).expect("audit").len(), 10);
}

/// A snapshot built from an older copy finishes after a newer one was installed: the newer one
/// stays current, and only its file remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_build_does_not_replace_a_newer_installed_snapshot() {
    let leader_dir = tempfile::tempdir().expect("tmp");
    let (_, mut leader) = storage::open(leader_dir.path()).expect("open");
    leader
        .apply((1..=40).map(|i| entry(1, i, audit(i))).collect::<Vec<_>>())
        .await
        .expect("apply");
    let newer = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let dir = tempfile::tempdir().expect("tmp");
    let (_, mut node) = storage::open(dir.path()).expect("open");
    node.apply((1..=10).map(|i| entry(1, i, audit(i))).collect::<Vec<_>>())
        .await
        .expect("apply");
    let mut late = node.get_snapshot_builder().await;
    node.install_snapshot(&newer.meta, newer.snapshot)
        .await
        .expect("install");
    let built = late
        .build_snapshot()
        .await
        .expect("the late build still answers");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 10)));
    let current = node
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("one");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 40)));
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

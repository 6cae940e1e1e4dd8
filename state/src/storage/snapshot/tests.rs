//! Snapshots written before files (format 6 blobs) keep working: rewritten on open, and
//! installed when an older peer sends one.
use openraft::storage::RaftStateMachine;

use super::*;
use crate::{AuditDraft, Command, Decision};

fn audit(i: u64) -> Entry {
    Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
        payload: openraft::EntryPayload::Normal(Command::Audit(AuditDraft {
            time: "2026-12-01T10:00:00Z".into(),
            request_id: format!("req-{i}"),
            tenant: "t".into(),
            caller_subject: "c".into(),
            issuer: "i".into(),
            subject_digests: vec![],
            predicate_type: "stella.ops/sbom@v1".into(),
            key_id: "k".into(),
            key_source: "file".into(),
            signing_mode: "keyful".into(),
            poe_state: "valid".into(),
            plan: None,
            provenance: None,
            certificate_serial: None,
            decision: Decision::Signed,
            reason: "signed".into(),
            bundle_sha256: Some(format!("{i:064x}")),
            statement_sha256: None,
            signatures: Vec::new(),
        })),
    }
}

/// The blob a format-6 node stored (and sent): meta + one codec payload.
async fn legacy_blob(sm: &mut StateMachineStore) -> (SnapshotMeta, Vec<u8>) {
    let view = sm.view();
    let state = view.with_state(Clone::clone);
    let audit = view
        .audit_after(0, 1000)
        .expect("audit")
        .iter()
        .map(|r| String::from_utf8(r.to_canonical_line()).expect("utf8"))
        .collect();
    let applied = Applied {
        last_applied: sm.applied_state().await.expect("applied").0,
        membership: StoredMembership::default(),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: StoredMembership::default(),
        snapshot_id: "1-1-20".into(),
    };
    let payload = SnapshotPayload {
        applied,
        state,
        audit,
        claims: Vec::new(),
        log: None,
    };
    (meta, codec::encode(&payload).expect("encode"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_snapshot_is_rewritten_as_a_file_and_a_legacy_transfer_installs() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = StateMachineStore::open(&dir.path().join("state-machine.redb")).expect("open");
    sm.apply((1..=20).map(audit)).await.expect("apply");
    let (meta, blob) = legacy_blob(&mut sm).await;
    let stored = StoredSnapshot {
        meta: meta.clone(),
        data: blob.clone(),
    };
    put_meta(
        Durability::Immediate,
        &sm.view().db,
        SM_META,
        SNAPSHOT,
        &stored,
    )
    .expect("store");
    let expected = sm.view().audit_after(0, 100).expect("audit");
    let tree = sm.view().log_tree();
    drop(sm);

    // On open, the blob becomes a file the node can send.
    let mut sm = StateMachineStore::open(&dir.path().join("state-machine.redb")).expect("reopen");
    assert!(
        get_meta::<StoredSnapshot>(&sm.view().db, SM_META, SNAPSHOT)
            .expect("meta")
            .is_none(),
        "the blob is gone"
    );
    let current = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("one");
    assert_eq!(current.meta, meta);

    // A file made from it, and the blob itself as an older peer would send it, install the same.
    let blob_file = dir.path().join("legacy.bin");
    std::fs::write(&blob_file, &blob).expect("write");
    for data in [
        current.snapshot,
        Box::new(tokio::fs::File::open(&blob_file).await.expect("open")),
    ] {
        let other = tempfile::tempdir().expect("tmp");
        let mut fresh =
            StateMachineStore::open(&other.path().join("state-machine.redb")).expect("open");
        fresh.install_snapshot(&meta, data).await.expect("install");
        assert_eq!(fresh.view().audit_after(0, 100).expect("audit"), expected);
        assert_eq!(fresh.view().log_tree().frontier, tree.frontier);
        assert_eq!(
            fresh
                .view()
                .seqs_by_bundle(&format!("{:064x}", 7))
                .expect("idx"),
            vec![7]
        );
    }
}

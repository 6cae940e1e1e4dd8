//! The state as rows (ADR 0027): an apply writes only the entities it changed, a store opened
//! again reads back the state it had, a file that kept the whole state in one row is migrated,
//! and snapshots carry many entities.

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use stella_state::command::{
    Approval, KeyEntry, KeyState, Reserve, Response, ThresholdGroup, Toggle, Verdict,
};
use stella_state::raft_types::Entry;
use stella_state::storage::StateMachineStore;
use stella_state::{AuditDraft, Command, Decision, State};

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn reserve(tenant: &str, id: &str, now_ms: u64) -> Command {
    Command::Reserve(Reserve {
        reservation_id: id.into(),
        tenant: tenant.into(),
        plan: "p".into(),
        limit: 1_000,
        window_ms: 60_000,
        max_concurrent: 100,
        now_ms,
        ttl_ms: 10_000,
    })
}

fn audit(i: u64) -> Command {
    Command::Audit(AuditDraft {
        time: "2026-12-02T10:00:00Z".into(),
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
    })
}

fn key(i: u64) -> KeyEntry {
    KeyEntry {
        key_id: format!("sha256:key-{i}"),
        owner_tenant: format!("tenant-{i}"),
        plan: "p".into(),
        source: "file".into(),
        algorithm: "ECDSA_P256_SHA256".into(),
        public_key_pem: "-----BEGIN PUBLIC KEY-----".into(),
        state: KeyState::Active,
        created_ms: i,
        updated_ms: i,
        reason: String::new(),
    }
}

fn approval(i: u64) -> Approval {
    Approval {
        approval_id: format!("ap-{i}"),
        subject: format!("sha256:{i:064x}"),
        requested_by: format!("ci@tenant-{i}"),
        reason: "release".into(),
        requested_ms: 1_000,
        expires_at_ms: 10_000_000,
        decision: None,
    }
}

/// Commands that create `n` of every kind of entity (and an audit record per ten).
fn many(n: u64) -> Vec<Command> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(reserve(&format!("tenant-{i}"), &format!("r-{i}"), 1_000));
        out.push(Command::RegisterKey(key(i)));
        out.push(Command::SetToggle(Toggle {
            name: format!("toggle-{i}"),
            enabled: i % 2 == 0,
            reason: "test".into(),
            actor: "admin".into(),
            set_ms: 1_000,
            expires_at_ms: None,
        }));
        out.push(Command::RequestApproval(approval(i)));
        if i % 3 == 0 {
            out.push(Command::DecideApproval {
                approval_id: format!("ap-{i}"),
                verdict: Verdict::Approved,
                actor: "admin".into(),
                reason: "ok".into(),
                now_ms: 2_000,
            });
            out.push(Command::Commit {
                reservation_id: format!("r-{i}"),
                now_ms: 2_000,
            });
        }
        if i % 10 == 0 {
            out.push(audit(i));
        }
    }
    out.push(Command::RegisterThresholdKey {
        entry: key(n + 1),
        group: ThresholdGroup {
            min_signers: 2,
            holders: vec![(1, 1), (2, 2), (3, 3)],
            public_key_package: vec![7; 64],
        },
    });
    out
}

async fn apply_all(sm: &mut StateMachineStore, first: u64, commands: Vec<Command>) -> u64 {
    let mut index = first;
    let entries: Vec<Entry> = commands
        .into_iter()
        .map(|c| {
            index += 1;
            entry(index, c)
        })
        .collect();
    for chunk in entries.chunks(500) {
        sm.apply(chunk.to_vec()).await.expect("apply");
    }
    index
}

/// The state `apply` computes from `commands`, without storage.
fn pure(commands: &[Command]) -> State {
    let mut state = State::default();
    let mut emitted = Vec::new();
    for c in commands {
        state.term = 1;
        state.apply(c, &mut emitted);
    }
    state.term = 0;
    state
}

#[tokio::test]
async fn an_apply_touching_one_ledger_writes_one_ledger_row_however_many_there_are() {
    let mut per_size = Vec::new();
    for tenants in [10u64, 2_000] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sm = StateMachineStore::open(&dir.path().join("state-machine.redb")).expect("open");
        let commands: Vec<Command> = (0..tenants)
            .map(|i| reserve(&format!("tenant-{i}"), &format!("r-{i}"), 1_000))
            .collect();
        let last = apply_all(&mut sm, 0, commands).await;
        assert_eq!(sm.view().with_state(|s| s.ledgers.len()), tenants as usize);

        // Committing one reservation: its ledger row changes, its reservation row goes.
        let before = sm.entity_writes();
        let responses = sm
            .apply([entry(
                last + 1,
                Command::Commit {
                    reservation_id: "r-7".into(),
                    now_ms: 2_000,
                },
            )])
            .await
            .expect("commit");
        assert_eq!(responses, vec![Response::Committed]);
        let after = sm.entity_writes();
        assert_eq!(
            after.rows - before.rows,
            2,
            "one ledger row and one reservation removed ({tenants} tenants)"
        );
        let commit_bytes = after.bytes - before.bytes;
        assert!(
            commit_bytes < 64,
            "one small ledger row: {commit_bytes} bytes"
        );

        // An audit record changes no entity at all.
        let before = sm.entity_writes();
        sm.apply([entry(last + 2, audit(1))]).await.expect("audit");
        assert_eq!(sm.entity_writes(), before, "no entity rows for a record");

        // A new reservation on an existing ledger: that ledger and the reservation.
        let before = sm.entity_writes();
        sm.apply([entry(last + 3, reserve("tenant-3", "again", 3_000))])
            .await
            .expect("reserve");
        let after = sm.entity_writes();
        assert_eq!(after.rows - before.rows, 2);
        per_size.push((commit_bytes, after.bytes - before.bytes));
    }
    assert_eq!(
        per_size[0], per_size[1],
        "the bytes an apply writes do not depend on how many tenants there are"
    );
}

#[tokio::test]
async fn the_state_read_back_from_the_tables_is_the_state_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("state-machine.redb");
    let commands = many(300);
    let expected = pure(&commands);
    let (state, tree) = {
        let mut sm = StateMachineStore::open(&path).expect("open");
        apply_all(&mut sm, 0, commands).await;
        let view = sm.view();
        (view.with_state(Clone::clone), view.log_tree())
    };
    assert_eq!(
        state, expected,
        "storage applies as the pure state machine does"
    );
    assert!(!state.threshold_groups.is_empty() && state.audit_tail.is_some());
    let sm = StateMachineStore::open(&path).expect("reopen");
    assert_eq!(sm.view().with_state(Clone::clone), state);
    assert_eq!(sm.view().log_tree(), tree);
}

/// A file written before the entity tables: the whole state in `sm_meta/state`, no tables.
fn make_old_format(path: &std::path::Path, state: &State) {
    use redb::TableDefinition;
    const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
    let db = redb::Database::create(path).expect("db");
    let txn = db.begin_write().expect("txn");
    for table in [
        "st_ledgers",
        "st_reservations",
        "st_keys",
        "st_toggles",
        "st_approvals",
        "st_groups",
    ] {
        let deleted = if table == "st_ledgers" {
            txn.delete_table(TableDefinition::<(&str, &str), &[u8]>::new(table))
        } else {
            txn.delete_table(TableDefinition::<&str, &[u8]>::new(table))
        };
        assert!(matches!(deleted, Ok(true)), "{table}: {deleted:?}");
    }
    {
        let mut meta = txn.open_table(SM_META).expect("meta");
        meta.remove("audit_tail").expect("no tail row then");
        let bytes = stella_state::codec::encode(state).expect("encode");
        meta.insert("state", bytes.as_slice()).expect("state row");
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_file_with_the_state_in_one_row_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("state-machine.redb");
    let commands = many(200);
    let (state, records) = {
        let mut sm = StateMachineStore::open(&path).expect("open");
        apply_all(&mut sm, 0, commands.clone()).await;
        let view = sm.view();
        (
            view.with_state(Clone::clone),
            view.audit_after(0, 1_000).expect("audit"),
        )
    };
    // Turn it into what the previous release left: the single row, no entity tables.
    make_old_format(&path, &state);

    let mut sm = StateMachineStore::open(&path).expect("open migrates");
    assert_eq!(sm.view().with_state(Clone::clone), state);
    assert_eq!(sm.view().audit_after(0, 1_000).expect("audit"), records);
    {
        let db = redb::Database::open(&path);
        assert!(db.is_err(), "the store holds the file while open");
    }
    // It goes on applying from the rows: one more reservation writes two rows.
    let before = sm.entity_writes();
    sm.apply([entry(10_000, reserve("tenant-5", "after", 5_000))])
        .await
        .expect("apply");
    assert_eq!(sm.entity_writes().rows - before.rows, 2);
    let state = sm.view().with_state(Clone::clone);
    drop(sm);

    // The single row is gone: a second open reads the tables (and finds the new reservation).
    {
        let db = redb::Database::create(&path).expect("db");
        let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
        let meta = txn
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("sm_meta"))
            .expect("meta");
        assert!(meta.get("state").expect("get").is_none(), "migrated once");
    }
    let sm = StateMachineStore::open(&path).expect("reopen");
    let reread = sm.view().with_state(Clone::clone);
    assert_eq!(reread, state);
    assert!(reread.reservations.contains_key("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_many_entities_installs_the_same_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = StateMachineStore::open(&dir.path().join("state-machine.redb")).expect("open");
    apply_all(&mut sm, 0, many(3_000)).await;
    let state = sm.view().with_state(Clone::clone);
    let tree = sm.view().log_tree();
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.expect("build");

    let other = tempfile::tempdir().expect("tmp");
    let path = other.path().join("state-machine.redb");
    {
        // The receiver had entities of its own that the snapshot does not have.
        let mut fresh = StateMachineStore::open(&path).expect("open");
        apply_all(&mut fresh, 0, vec![reserve("stranger", "s-1", 1_000)]).await;
        fresh
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(fresh.view().with_state(Clone::clone), state);
        assert_eq!(fresh.view().log_tree(), tree);
    }
    // And the rows it wrote are that state.
    let reopened = StateMachineStore::open(&path).expect("reopen");
    let reread = reopened.view().with_state(Clone::clone);
    assert_eq!(reread, state);
    assert!(!reread.ledgers.keys().any(|k| k.tenant == "stranger"));
    assert_eq!(reread.ledgers.len(), 3_000);
}

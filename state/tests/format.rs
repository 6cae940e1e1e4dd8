//! Format stability: bytes written by every earlier format version must still decode.
//!
//! `fixtures/format-v1/` holds commands, a state snapshot and Raft log entries encoded by format
//! version 1; `format-v2/` the same for version 2 (which adds `Command::Admit` and the replicated
//! proof set); `format-v3/` for version 3 (threshold keys: `Command::RegisterThresholdKey` and
//! `State::threshold_groups`); `format-v4/` for version 4 (`Command::Configure`: a configuration
//! change and its audit record in one entry); `format-v5/` for version 5 (exactly-once signing:
//! `Command::AdmitOnce` / `Command::Finish`, and the claim set's rows); `format-v6/` for version 6
//! (the audit log's Merkle tree: `Command::CutCheckpoint` / `SignCheckpoint` and the stored
//! `LogTree`). A newer node must read an older log, so every version directory stays. Regenerate
//! (only the CURRENT version's directory is written):
//! `STELLA_WRITE_FORMAT_FIXTURE=1 cargo test -p stella-state --test format format_v6`.

use std::path::PathBuf;

use stella_state::command::{Approval, KeyEntry, KeyState, Reserve, Toggle, Verdict};
use stella_state::{AuditDraft, Command, Decision, State, codec};

fn dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v1")
}

fn dir_v2() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v2")
}

fn dir_v3() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v3")
}

fn dir_v4() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v4")
}

/// Version 4 adds configuration changes with their audit record in the same entry.
fn commands_v4() -> Vec<Command> {
    let mut commands = commands_v3();
    let mut draft = commands
        .iter()
        .find_map(|c| match c {
            Command::Audit(d) => Some(d.clone()),
            _ => None,
        })
        .expect("an audit draft among the v1 commands");
    draft.decision = Decision::Configured;
    draft.reason = "poe.bypass off: drill over".into();
    commands.push(Command::Configure {
        commands: vec![Command::SetToggle(Toggle {
            name: "poe.bypass".into(),
            enabled: false,
            reason: "drill over".into(),
            actor: "alice@ops".into(),
            set_ms: 4_000,
            expires_at_ms: None,
        })],
        audit: draft,
    });
    commands
}

#[test]
fn format_v4_fixtures_decode() {
    let commands = commands_v4();
    let state = state_after(&commands);
    assert!(state.toggles.contains_key("poe.bypass"));
    let stored = std::fs::read(dir_v4().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 4, "fixture is format v4");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v4 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir_v4().join("state.bin")).expect("state fixture"))
            .expect("v4 state decodes");
    let mut without_proofs = state.clone();
    without_proofs.proofs = Default::default();
    without_proofs.log = Default::default();
    assert_eq!(snapshot, without_proofs);
}

fn dir_v5() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v5")
}

/// Version 5 adds exactly-once signing: an admission with an idempotency identity and the
/// finish that records its outcome.
fn commands_v5() -> Vec<Command> {
    use stella_state::command::{
        Admit, AdmitOnce, Finish, Identity, SignedOutcome, StoredSignature,
    };
    let mut commands = commands_v4();
    let draft = commands
        .iter()
        .find_map(|c| match c {
            Command::Audit(d) => Some(d.clone()),
            _ => None,
        })
        .expect("an audit draft among the v1 commands");
    commands.push(Command::AdmitOnce(AdmitOnce {
        admit: Admit {
            proof: None,
            reserve: Reserve {
                reservation_id: "res-v5".into(),
                tenant: "acme".into(),
                plan: "team".into(),
                limit: 10,
                window_ms: 60_000,
                max_concurrent: 4,
                now_ms: 5_000,
                ttl_ms: 30_000,
            },
        },
        identity: Some(Identity {
            key: "a".repeat(64),
            binding: "b".repeat(64),
            expires_at_ms: 305_000,
        }),
        evidence: None,
    }));
    commands.push(Command::Finish(Finish {
        reservation_id: "res-v5".into(),
        identity: Some("a".repeat(64)),
        audit: draft,
        signed: Some(SignedOutcome {
            audit_id: String::new(),
            request_id: "req-v5".into(),
            remaining: 9,
            window_resets_at_ms: 60_000,
            key_source: "file".into(),
            signatures: vec![StoredSignature {
                key_id: "sha256:key".into(),
                algorithm: "ECDSA_P256_SHA256".into(),
                signature: vec![0x30, 0x44, 1, 2, 3],
                public_key: vec![0x30, 0x59, 4, 5, 6],
                certificate_chain_der: vec![vec![0x30, 0x82, 7]],
                timestamps: Vec::new(),
            }],
        }),
        now_ms: 5_100,
    }));
    commands
}

#[test]
fn format_v5_fixtures_decode() {
    let commands = commands_v5();
    let state = state_after(&commands);
    let claims: Vec<(String, stella_state::machine::Claim)> = state
        .proofs
        .claims()
        .map(|(k, c)| (k.to_owned(), c.clone()))
        .collect();
    assert!(
        claims
            .iter()
            .any(|(_, c)| matches!(c.status, stella_state::machine::ClaimStatus::Done(_))),
        "the finish recorded its outcome"
    );
    let stored = std::fs::read(dir_v5().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 5, "fixture is format v5");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v5 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir_v5().join("state.bin")).expect("state fixture"))
            .expect("v5 state decodes");
    let mut without_claims = state.clone();
    without_claims.proofs = Default::default();
    without_claims.log = Default::default();
    assert_eq!(snapshot, without_claims);
    let rows: Vec<(String, stella_state::machine::Claim)> =
        codec::decode(&std::fs::read(dir_v5().join("claims.bin")).expect("claims fixture"))
            .expect("v5 claims decode");
    assert_eq!(rows, claims);
}

fn dir_v6() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/format-v6")
}

/// Version 6 adds the audit log's Merkle tree: a head cut for a checkpoint and its signed note.
fn commands_v6() -> Vec<Command> {
    let mut commands = commands_v5();
    let head = state_after(&commands).log.head();
    commands.push(Command::CutCheckpoint { now_ms: 6_000 });
    let root = base64_root(&head.root);
    commands.push(Command::SignCheckpoint {
        head,
        note: format!(
            "stella.ops/signer/fixture\n{}\n{root}\n\n— stella.ops/signer/fixture AAAAAA==\n",
            head.size
        ),
    });
    commands
}

fn base64_root(root: &[u8; 32]) -> String {
    // RFC 4648 base64 by hand, so the test does not trust the code under test for it.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in root.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn format_v6_fixtures_decode() {
    let commands = commands_v6();
    let state = state_after(&commands);
    let checkpoint = state
        .log
        .checkpoint
        .clone()
        .expect("the note over the cut applied");
    assert_eq!(
        checkpoint.head.size, 4,
        "the fixture log holds four records"
    );
    if std::env::var_os("STELLA_WRITE_FORMAT_FIXTURE").is_some() {
        std::fs::create_dir_all(dir_v6()).expect("dir");
        for (name, bytes) in [
            ("commands.bin", codec::encode(&commands)),
            ("state.bin", codec::encode(&state)),
            ("log_tree.bin", codec::encode(&state.log)),
        ] {
            std::fs::write(dir_v6().join(name), bytes.expect("encode")).expect("write");
        }
    }
    let stored = std::fs::read(dir_v6().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 6, "fixture is format v6");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v6 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir_v6().join("state.bin")).expect("state fixture"))
            .expect("v6 state decodes");
    let mut without = state.clone();
    without.proofs = Default::default();
    without.log = Default::default();
    assert_eq!(snapshot, without);
    let log: stella_state::log_tree::LogTree =
        codec::decode(&std::fs::read(dir_v6().join("log_tree.bin")).expect("log tree fixture"))
            .expect("v6 log tree decodes");
    assert_eq!(log, state.log);
}

/// Version 3 adds threshold keys.
fn commands_v3() -> Vec<Command> {
    let mut commands = commands_v2();
    commands.push(Command::RegisterThresholdKey {
        entry: KeyEntry {
            key_id: "sha256:t".into(),
            owner_tenant: "tenant-a".into(),
            plan: "pro".into(),
            source: "threshold".into(),
            algorithm: "BIP340_SECP256K1_SHA256".into(),
            public_key_pem: "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n".into(),
            state: KeyState::Active,
            created_ms: 3_000,
            updated_ms: 3_000,
            reason: "2-of-3 group".into(),
        },
        group: stella_state::command::ThresholdGroup {
            min_signers: 2,
            holders: vec![(1, 1), (2, 2), (3, 3)],
            public_key_package: vec![1, 2, 3, 4],
        },
    });
    commands.push(Command::UpdateThresholdGroup {
        key_id: "sha256:t".into(),
        group: stella_state::command::ThresholdGroup {
            min_signers: 2,
            holders: vec![(1, 1), (2, 2)],
            public_key_package: vec![5, 6, 7],
        },
    });
    commands
}

#[test]
fn format_v3_fixtures_decode() {
    let commands = commands_v3();
    let state = state_after(&commands);
    assert_eq!(state.threshold_groups.len(), 1);
    assert_eq!(
        state.threshold_groups["sha256:t"].holders,
        vec![(1, 1), (2, 2)],
        "the refresh replaced the group"
    );
    let stored = std::fs::read(dir_v3().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 3, "fixture is format v3");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v3 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir_v3().join("state.bin")).expect("state fixture"))
            .expect("v3 state decodes");
    let mut without_proofs = state.clone();
    without_proofs.proofs = Default::default();
    without_proofs.log = Default::default();
    assert_eq!(snapshot, without_proofs);
}

/// Version 2 adds admissions with one-time proofs (one of them replayed).
fn commands_v2() -> Vec<Command> {
    let admit = |id: &str, proof: &str, now_ms| {
        Command::Admit(stella_state::command::Admit {
            proof: Some(stella_state::command::ProofClaim {
                key: proof.into(),
                expires_at_ms: now_ms + 300_000,
            }),
            reserve: Reserve {
                reservation_id: id.into(),
                tenant: "tenant-b".into(),
                plan: "team".into(),
                limit: 10,
                window_ms: 60_000,
                max_concurrent: 2,
                now_ms,
                ttl_ms: 30_000,
            },
        })
    };
    let mut commands = commands();
    commands.push(admit("adm-1", "p1", 2_000));
    commands.push(admit("adm-2", "p1", 2_001));
    commands.push(admit("adm-3", "p2", 2_002));
    commands
}

#[test]
fn format_v2_fixtures_decode() {
    let commands = commands_v2();
    let state = state_after(&commands);
    assert_eq!(
        state.proofs.len(),
        2,
        "the replayed proof was not recorded twice"
    );
    let stored = std::fs::read(dir_v2().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 2, "fixture is format v2");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v2 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir_v2().join("state.bin")).expect("state fixture"))
            .expect("v2 state decodes");
    // The proof set is stored apart from the state (a table; snapshots carry it separately).
    let mut without_proofs = state.clone();
    without_proofs.proofs = Default::default();
    without_proofs.log = Default::default();
    assert_eq!(snapshot, without_proofs);
}

fn commands() -> Vec<Command> {
    let draft = AuditDraft {
        time: "2026-11-28T10:00:00Z".into(),
        request_id: "req-1".into(),
        tenant: "tenant-a".into(),
        caller_subject: "token:ab12".into(),
        issuer: "static-token".into(),
        subject_digests: vec![format!("sha256:{}", "a".repeat(64))],
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: "sha256:k".into(),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "not_checked".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Signed,
        reason: "signed".into(),
        bundle_sha256: Some("b".repeat(64)),
        statement_sha256: None,
        signatures: Vec::new(),
    };
    vec![
        Command::Reserve(Reserve {
            reservation_id: "r1".into(),
            tenant: "tenant-a".into(),
            plan: "pro".into(),
            limit: 10,
            window_ms: 60_000,
            max_concurrent: 4,
            now_ms: 1_764_000_000_000,
            ttl_ms: 30_000,
        }),
        Command::Audit(draft.clone()),
        Command::Commit {
            reservation_id: "r1".into(),
            now_ms: 1_764_000_000_100,
        },
        Command::Release {
            reservation_id: "r2".into(),
            now_ms: 1_764_000_000_200,
        },
        Command::RegisterKey(KeyEntry {
            key_id: "sha256:k".into(),
            owner_tenant: "tenant-a".into(),
            plan: "pro".into(),
            source: "file".into(),
            algorithm: "ECDSA_P256_SHA256".into(),
            public_key_pem: "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n".into(),
            state: KeyState::Active,
            created_ms: 1,
            updated_ms: 1,
            reason: "created".into(),
        }),
        Command::SetKeyState {
            key_id: "sha256:k".into(),
            state: KeyState::Retired,
            reason: "rotation".into(),
            actor: "alice".into(),
            now_ms: 2,
        },
        Command::SetToggle(Toggle {
            name: "poe-bypass".into(),
            enabled: true,
            reason: "outage".into(),
            actor: "bob".into(),
            set_ms: 3,
            expires_at_ms: Some(4),
        }),
        Command::RequestApproval(Approval {
            approval_id: "ap".into(),
            subject: "sha256:s".into(),
            requested_by: "ci".into(),
            reason: "r".into(),
            requested_ms: 5,
            expires_at_ms: 6,
            decision: None,
        }),
        Command::DecideApproval {
            approval_id: "ap".into(),
            verdict: Verdict::Approved,
            actor: "carol".into(),
            reason: "ok".into(),
            now_ms: 5,
        },
        Command::Batch(vec![
            Command::Audit(draft),
            Command::Commit {
                reservation_id: "x".into(),
                now_ms: 7,
            },
        ]),
    ]
}

fn state_after(commands: &[Command]) -> State {
    let mut state = State::default();
    let mut emitted = Vec::new();
    for c in commands {
        state.apply(c, &mut emitted);
    }
    state
}

#[test]
fn format_v1_fixtures_still_decode() {
    let commands = commands();
    let stored = std::fs::read(dir().join("commands.bin")).expect("commands fixture");
    assert_eq!(stored[0], 1, "fixture is format v1");
    let decoded: Vec<Command> = codec::decode(&stored).expect("v1 commands decode");
    assert_eq!(decoded, commands);
    let snapshot: State =
        codec::decode(&std::fs::read(dir().join("state.bin")).expect("state fixture"))
            .expect("v1 state decodes");
    let mut applied = state_after(&commands);
    applied.log = Default::default();
    assert_eq!(snapshot, applied);
}

/// Raft log entries as the log store writes them (one `codec::encode(&Entry)` per entry).
fn entries() -> Vec<stella_state::raft_types::Entry> {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
    use stella_state::raft_types::NodeAddr;
    let id = |index| LogId::new(CommittedLeaderId::new(2, 1), index);
    let nodes: BTreeMap<u64, NodeAddr> = (1..=3)
        .map(|n| {
            (
                n,
                NodeAddr {
                    peer_url: format!("https://10.0.0.{n}:9441"),
                    api_url: format!("https://10.0.0.{n}:8443"),
                },
            )
        })
        .collect();
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    vec![
        openraft::Entry {
            log_id: id(1),
            payload: EntryPayload::Blank,
        },
        openraft::Entry {
            log_id: id(2),
            payload: EntryPayload::Membership(membership),
        },
        openraft::Entry {
            log_id: id(3),
            payload: EntryPayload::Normal(commands()[0].clone()),
        },
        openraft::Entry {
            log_id: id(4),
            payload: EntryPayload::Normal(commands()[9].clone()),
        },
    ]
}

#[test]
fn format_v1_raft_log_entries_still_decode() {
    let entries = entries();
    let path = dir().join("entries.bin");
    let stored: Vec<Vec<u8>> =
        codec::decode(&std::fs::read(&path).expect("entries fixture")).expect("frame");
    let decoded: Vec<stella_state::raft_types::Entry> = stored
        .iter()
        .map(|b| codec::decode(b).expect("v1 entry decodes"))
        .collect();
    assert_eq!(format!("{decoded:?}"), format!("{entries:?}"));
}

#[test]
fn unknown_versions_and_garbage_are_errors() {
    assert!(matches!(
        codec::decode::<Command>(&[]),
        Err(codec::CodecError::Empty)
    ));
    assert!(matches!(
        codec::decode::<Command>(&[9, 0]),
        Err(codec::CodecError::UnsupportedVersion(9))
    ));
    assert!(codec::decode::<Command>(&[1, 0xff, 0xff, 0xff]).is_err());
    assert!(codec::decode::<Command>(&[2, 0xff, 0xff, 0xff]).is_err());
}

use stella_state::{AuditDraft, AuditRecord, Decision};

use super::*;
use crate::history::{Attempt, FaultEvent, History, Kind, Outcome, ReadResult};

fn draft(request: &str, tenant: &str, decision: Decision, bundle: Option<&str>) -> AuditDraft {
    AuditDraft {
        time: "2026-12-02T05:00:00Z".into(),
        request_id: request.into(),
        tenant: tenant.into(),
        caller_subject: "ci".into(),
        issuer: "https://authority.test".into(),
        subject_digests: Vec::new(),
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: "k".into(),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "valid".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision,
        reason: "signed".into(),
        bundle_sha256: bundle.map(str::to_owned),
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

fn chain(drafts: Vec<AuditDraft>) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    for d in drafts {
        let prev = out.last().map(|r| (r.seq, r.hash.clone()));
        let record = AuditRecord::chain(d, prev.as_ref().map(|(s, h)| (*s, h.as_str())));
        out.push(record);
    }
    out
}

fn sign(request: &str, tenant: &str, audit: &str, bundle: &str, jti: &str) -> Attempt {
    Attempt {
        kind: Kind::Sign,
        request_id: request.into(),
        tenant: tenant.into(),
        node: 1,
        start_ms: 1000,
        end_ms: 1100,
        outcome: Outcome::Ok,
        status: Some(200),
        code: None,
        retry_after: None,
        problem_json: false,
        audit_id: Some(audit.into()),
        bundle_sha256: Some(bundle.into()),
        proof_jti: Some(jti.into()),
        bundle_check: Some(Ok(())),
        read: None,
    }
}

/// Two acknowledged signings of tenant-a, one of quota-1; three nodes with the same log.
fn healthy() -> (History, Vec<AuditRecord>) {
    let history = History {
        attempts: vec![
            sign(
                "chaos-tenant-a-0-1",
                "tenant-a",
                "aud-0000000000000001",
                "b1",
                "j1",
            ),
            sign(
                "chaos-tenant-a-0-2",
                "tenant-a",
                "aud-0000000000000002",
                "b2",
                "j2",
            ),
            sign(
                "chaos-quota-1-0-1",
                "quota-1",
                "aud-0000000000000003",
                "b3",
                "j3",
            ),
        ],
        faults: Vec::new(),
        end_ms: 2000,
    };
    let log = chain(vec![
        draft(
            "chaos-tenant-a-0-1",
            "tenant-a",
            Decision::Signed,
            Some("b1"),
        ),
        draft(
            "chaos-tenant-a-0-2",
            "tenant-a",
            Decision::Signed,
            Some("b2"),
        ),
        draft("chaos-quota-1-0-1", "quota-1", Decision::Signed, Some("b3")),
    ]);
    (history, log)
}

fn run(history: &History, logs: Vec<Vec<AuditRecord>>, quota: u64) -> Vec<Verdict> {
    let logs: Vec<NodeLog> = logs
        .into_iter()
        .enumerate()
        .map(|(i, r)| NodeLog {
            node: i + 1,
            records: Ok(r),
        })
        .collect();
    check(&Evidence {
        history,
        logs: &logs,
        quotas: &[("quota-1".to_owned(), quota, 3600)],
        answer_within_ms: 8000,
        converged: true,
    })
}

fn failing(verdicts: &[Verdict]) -> Vec<&'static str> {
    verdicts
        .iter()
        .filter(|v| !v.holds)
        .map(|v| v.name)
        .collect()
}

#[test]
fn a_healthy_history_holds_everything() {
    let (h, log) = healthy();
    let v = run(&h, vec![log.clone(), log.clone(), log], 1);
    assert_eq!(failing(&v), Vec::<&str>::new(), "{v:#?}");
}

#[test]
fn one_grant_over_quota_fails_the_quota_invariant_only() {
    let (h, log) = healthy();
    let v = run(&h, vec![log.clone(), log.clone(), log], 0);
    assert_eq!(failing(&v), vec!["quota-never-exceeded"]);
}

#[test]
fn an_acknowledged_signing_missing_on_a_node_fails() {
    let (h, log) = healthy();
    let short: Vec<AuditRecord> = log[..2].to_vec();
    // Whichever node is behind, the others' (longer) log is the reference.
    let v = run(&h, vec![short, log.clone(), log], 1);
    let f = failing(&v);
    assert!(f.contains(&"acknowledged-signings-committed"), "{f:?}");
    assert!(f.contains(&"audit-chains-identical"), "{f:?}");
}

#[test]
fn an_acknowledgement_before_the_commit_fails() {
    // The client was told "signed", the record never committed anywhere.
    let (mut h, log) = healthy();
    h.attempts.push(sign(
        "chaos-tenant-a-0-3",
        "tenant-a",
        "aud-0000000000000004",
        "b4",
        "j4",
    ));
    let v = run(&h, vec![log.clone(), log.clone(), log], 1);
    assert_eq!(failing(&v), vec!["acknowledged-signings-committed"]);
}

#[test]
fn a_tampered_record_breaks_the_chain() {
    let (h, log) = healthy();
    let mut bad = log.clone();
    bad[1].draft.tenant = "tenant-b".into();
    let v = run(&h, vec![log.clone(), bad, log], 1);
    assert!(failing(&v).contains(&"audit-chains-identical"));
}

#[test]
fn a_signing_nobody_asked_for_is_a_phantom() {
    let (h, _) = healthy();
    let log = chain(vec![
        draft(
            "chaos-tenant-a-0-1",
            "tenant-a",
            Decision::Signed,
            Some("b1"),
        ),
        draft(
            "chaos-tenant-a-0-2",
            "tenant-a",
            Decision::Signed,
            Some("b2"),
        ),
        draft("chaos-quota-1-0-1", "quota-1", Decision::Signed, Some("b3")),
        draft(
            "chaos-tenant-a-9-9",
            "tenant-a",
            Decision::Signed,
            Some("b9"),
        ),
    ]);
    let v = run(&h, vec![log.clone(), log.clone(), log], 1);
    assert_eq!(failing(&v), vec!["no-phantom-signings"]);
}

#[test]
fn a_replay_accepted_for_a_new_signing_fails() {
    let (mut h, log) = healthy();
    let mut replay = sign("replay-1", "tenant-a", "aud-0000000000000009", "b9", "j1");
    replay.kind = Kind::Replay;
    replay.read = Some(ReadResult {
        wanted_audit_id: Some("aud-0000000000000001".into()),
        found: None,
        seen: Vec::new(),
    });
    h.attempts.push(replay);
    let v = run(&h, vec![log.clone(), log.clone(), log], 1);
    assert!(failing(&v).contains(&"dpop-proof-single-use"));
}

fn answer(status: u16, retry_after: Option<&str>, problem: bool) -> Attempt {
    Attempt {
        outcome: Outcome::of_status(status),
        status: Some(status),
        retry_after: retry_after.map(str::to_owned),
        problem_json: problem,
        code: Some("x".into()),
        audit_id: None,
        bundle_sha256: None,
        bundle_check: None,
        ..sign("chaos-tenant-b-0-1", "tenant-b", "", "", "j7")
    }
}

#[test]
fn only_throttles_and_unavailability_with_retry_after() {
    let (mut h, log) = healthy();
    h.attempts.push(answer(503, Some("1"), true));
    h.attempts.push(answer(429, Some("30"), true));
    let v = run(&h, vec![log.clone(), log.clone(), log.clone()], 1);
    assert_eq!(failing(&v), Vec::<&str>::new());
    for bad in [
        answer(500, None, true),
        answer(503, None, true),
        answer(401, None, true),
    ] {
        let mut h2 = h.clone();
        h2.attempts.push(bad);
        let v = run(&h2, vec![log.clone(), log.clone(), log.clone()], 1);
        assert_eq!(failing(&v), vec!["error-contract"]);
    }
}

#[test]
fn a_hung_request_is_excused_only_on_a_frozen_node() {
    let (mut h, log) = healthy();
    let mut slow = answer(503, Some("1"), true);
    slow.end_ms = slow.start_ms + 20_000;
    h.attempts.push(slow);
    let v = run(&h, vec![log.clone(), log.clone(), log.clone()], 1);
    assert_eq!(failing(&v), vec!["no-hung-requests"]);
    h.faults.push(FaultEvent {
        index: 0,
        kind: FaultKind::PauseLeader,
        planned_at_s: 1.0,
        hold_s: 5.0,
        nodes: vec![1],
        cuts: Vec::new(),
        skew_seconds: None,
        observed_skew_seconds: None,
        link_delay_ms: None,
        joined: None,
        purged_past_follower: None,
        notes: Vec::new(),
        leader: Some(1),
        start_ms: 500,
        heal_ms: 5500,
        settled_ms: Some(6000),
        errors: Vec::new(),
    });
    let v = run(&h, vec![log.clone(), log.clone(), log], 1);
    assert_eq!(failing(&v), Vec::<&str>::new());
}

/// A fault event on node 1 from 500 to 5500 ms.
fn fault_on_node_1(kind: FaultKind) -> FaultEvent {
    FaultEvent {
        index: 0,
        kind,
        planned_at_s: 1.0,
        hold_s: 5.0,
        nodes: vec![1],
        cuts: Vec::new(),
        skew_seconds: None,
        observed_skew_seconds: None,
        link_delay_ms: Some(300),
        joined: None,
        purged_past_follower: None,
        notes: Vec::new(),
        leader: Some(1),
        start_ms: 500,
        heal_ms: 5500,
        settled_ms: Some(6000),
        errors: Vec::new(),
    }
}

#[test]
fn a_node_whose_peer_links_are_faulted_must_still_answer_in_time() {
    for kind in [
        FaultKind::LinkDelay,
        FaultKind::LinkDrop,
        FaultKind::LinkReset,
    ] {
        let (mut h, log) = healthy();
        let mut slow = answer(503, Some("1"), true);
        slow.end_ms = slow.start_ms + 20_000;
        h.attempts.push(slow);
        h.faults.push(fault_on_node_1(kind));
        let v = run(&h, vec![log.clone(), log.clone(), log], 1);
        assert_eq!(failing(&v), vec!["no-hung-requests"], "{kind:?}");
    }
}

#[test]
fn a_removed_or_stopped_node_excuses_a_hung_request() {
    for kind in [FaultKind::Membership, FaultKind::SnapshotCatchup] {
        let (mut h, log) = healthy();
        let mut slow = answer(503, Some("1"), true);
        slow.end_ms = slow.start_ms + 20_000;
        h.attempts.push(slow);
        h.faults.push(fault_on_node_1(kind));
        let v = run(&h, vec![log.clone(), log.clone(), log], 1);
        assert_eq!(failing(&v), Vec::<&str>::new(), "{kind:?}");
    }
}

#[test]
fn percentiles_are_nearest_rank() {
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&[5], 0.99), Some(5));
    assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
    assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 0.99), Some(99));
}

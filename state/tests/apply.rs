//! Table tests for `State::apply` on keys, toggles, approvals and quotas.

use stella_state::command::{
    Approval, KeyEntry, KeyState, Reserve, Response, ThrottleReason, Toggle, Verdict,
};
use stella_state::{Command, State};

fn apply_all(state: &mut State, commands: &[Command]) -> Vec<Response> {
    let mut emitted = Vec::new();
    commands
        .iter()
        .map(|c| state.apply(c, &mut emitted))
        .collect()
}

fn key(id: &str) -> KeyEntry {
    KeyEntry {
        key_id: id.into(),
        owner_tenant: "t".into(),
        plan: "pro".into(),
        source: "file".into(),
        algorithm: "ECDSA_P256_SHA256".into(),
        public_key_pem: "pem".into(),
        state: KeyState::Active,
        created_ms: 1,
        updated_ms: 1,
        reason: "created".into(),
    }
}

fn set_key(id: &str, state: KeyState) -> Command {
    Command::SetKeyState {
        key_id: id.into(),
        state,
        reason: "ops".into(),
        actor: "alice".into(),
        now_ms: 5,
    }
}

#[test]
fn key_lifecycle() {
    let mut state = State::default();
    let got = apply_all(
        &mut state,
        &[
            Command::RegisterKey(key("k1")),
            Command::RegisterKey(key("k1")),
            set_key("k1", KeyState::Retired),
            set_key("k1", KeyState::Active),
            set_key("k1", KeyState::Revoked),
            set_key("k1", KeyState::Retired),
            set_key("nope", KeyState::Revoked),
        ],
    );
    assert_eq!(
        got,
        vec![
            Response::KeyRegistered,
            Response::KeyExists,
            Response::KeyUpdated,
            Response::InvalidKeyTransition {
                from: KeyState::Retired,
                to: KeyState::Active
            },
            Response::KeyUpdated,
            Response::InvalidKeyTransition {
                from: KeyState::Revoked,
                to: KeyState::Retired
            },
            Response::KeyNotFound,
        ]
    );
    assert_eq!(state.keys["k1"].state, KeyState::Revoked);
    assert_eq!(state.keys["k1"].updated_ms, 5);
}

#[test]
fn toggles_expire() {
    let mut state = State::default();
    let toggle = Toggle {
        name: "poe-bypass".into(),
        enabled: true,
        reason: "licensing outage".into(),
        actor: "bob".into(),
        set_ms: 100,
        expires_at_ms: Some(200),
    };
    assert_eq!(
        apply_all(&mut state, &[Command::SetToggle(toggle)]),
        vec![Response::ToggleSet]
    );
    assert!(state.toggle_enabled("poe-bypass", 150));
    assert!(!state.toggle_enabled("poe-bypass", 200));
    assert!(!state.toggle_enabled("other", 150));
}

#[test]
fn approvals_are_decided_once_and_expire() {
    let mut state = State::default();
    let approval = Approval {
        approval_id: "ap1".into(),
        subject: "sha256:abc".into(),
        requested_by: "ci".into(),
        reason: "hotfix scanner".into(),
        requested_ms: 10,
        expires_at_ms: 1000,
        decision: None,
    };
    let decide = |verdict, now_ms| Command::DecideApproval {
        approval_id: "ap1".into(),
        verdict,
        actor: "carol".into(),
        reason: "checked".into(),
        now_ms,
    };
    let got = apply_all(
        &mut state,
        &[
            Command::RequestApproval(approval.clone()),
            Command::RequestApproval(approval),
            decide(Verdict::Approved, 20),
            decide(Verdict::Denied, 30),
            Command::DecideApproval {
                approval_id: "zz".into(),
                verdict: Verdict::Approved,
                actor: "c".into(),
                reason: "r".into(),
                now_ms: 1,
            },
        ],
    );
    assert_eq!(
        got,
        vec![
            Response::ApprovalRecorded,
            Response::ApprovalExists,
            Response::ApprovalRecorded,
            Response::ApprovalAlreadyDecided,
            Response::ApprovalNotFound
        ]
    );
    assert!(state.approved("sha256:abc", 999));
    assert!(!state.approved("sha256:abc", 1000), "approvals expire");
    assert!(!state.approved("sha256:other", 500));
}

#[test]
fn a_tenant_has_a_bounded_number_of_pending_approvals_and_old_ones_leave_the_state() {
    use stella_state::machine::MAX_PENDING_APPROVALS_PER_TENANT;
    let mut state = State::default();
    let request = |id: usize, tenant: &str, now_ms: u64| {
        Command::RequestApproval(Approval {
            approval_id: format!("ap-{tenant}-{id}"),
            subject: "sha256:abc".into(),
            requested_by: format!("ci@{tenant}"),
            reason: "r".repeat(500),
            requested_ms: now_ms,
            expires_at_ms: now_ms + 1_000,
            decision: None,
        })
    };
    for i in 0..MAX_PENDING_APPROVALS_PER_TENANT {
        assert_eq!(
            state.apply(&request(i, "a", 10), &mut Vec::new()),
            Response::ApprovalRecorded
        );
    }
    assert_eq!(
        state.apply(&request(99, "a", 10), &mut Vec::new()),
        Response::ApprovalLimitReached,
        "tenant a is at its bound"
    );
    assert_eq!(
        state.apply(&request(0, "b", 10), &mut Vec::new()),
        Response::ApprovalRecorded,
        "another tenant is not"
    );
    // A denied approval leaves the state at the next request; an approved one stays until it
    // expires (it still grants trust).
    let decide = |id: &str, verdict| Command::DecideApproval {
        approval_id: id.into(),
        verdict,
        actor: "op".into(),
        reason: "checked".into(),
        now_ms: 20,
    };
    assert_eq!(
        state.apply(&decide("ap-a-0", Verdict::Denied), &mut Vec::new()),
        Response::ApprovalRecorded
    );
    assert_eq!(
        state.apply(&decide("ap-a-1", Verdict::Approved), &mut Vec::new()),
        Response::ApprovalRecorded
    );
    assert_eq!(
        state.apply(&request(100, "a", 30), &mut Vec::new()),
        Response::ApprovalRecorded,
        "two decided: room for one more pending"
    );
    assert!(!state.approvals.contains_key("ap-a-0"), "denied: pruned");
    // Expired, undecided approvals still in the state (nothing pruned them yet) never count:
    // a receiving node checking the bound against its applied state must not lock a tenant
    // out after its requests lapsed undecided.
    assert_eq!(
        state.pending_approvals("a", 30),
        MAX_PENDING_APPROVALS_PER_TENANT - 1,
        "32 filed, two decided, one more filed"
    );
    assert_eq!(
        state.pending_approvals("a", 1_010),
        1,
        "requested at 30, until 1_030"
    );
    assert_eq!(state.pending_approvals("a", 5_000), 0);
    assert!(state.approvals.contains_key("ap-a-1"), "approved: kept");
    assert!(state.approved("sha256:abc", 30));
    // Once everything has expired, a request finds an empty state (but for itself).
    assert_eq!(
        state.apply(&request(101, "a", 5_000), &mut Vec::new()),
        Response::ApprovalRecorded
    );
    assert_eq!(state.approvals.len(), 1);
    // i64/u64 ends: an approval requested at the end of time neither panics nor lingers.
    let mut at_end = Approval {
        approval_id: "end".into(),
        subject: "s".into(),
        requested_by: "x@c".into(),
        reason: String::new(),
        requested_ms: u64::MAX,
        expires_at_ms: u64::MAX,
        decision: None,
    };
    assert_eq!(
        state.apply(&Command::RequestApproval(at_end.clone()), &mut Vec::new()),
        Response::ApprovalRecorded
    );
    at_end.approval_id = "end-2".into();
    state.apply(&Command::RequestApproval(at_end), &mut Vec::new());
    assert!(!state.approvals.contains_key("end"), "expired at u64::MAX");
}

#[test]
fn quota_window_concurrency_and_ttl() {
    let reserve = |id: &str, now_ms| {
        Command::Reserve(Reserve {
            reservation_id: id.into(),
            tenant: "t".into(),
            plan: "p".into(),
            limit: 2,
            window_ms: 1000,
            max_concurrent: 1,
            now_ms,
            ttl_ms: 300,
        })
    };
    let mut state = State::default();
    let got = apply_all(
        &mut state,
        &[
            reserve("a", 1000),
            reserve("a", 1001), // duplicate proposal: same answer, no second grant
            reserve("b", 1002), // concurrency 1 is taken
            Command::Commit {
                reservation_id: "a".into(),
                now_ms: 1003,
            },
            reserve("b", 1004),
            Command::Release {
                reservation_id: "b".into(),
                now_ms: 1005,
            }, // refunded
            reserve("c", 1006),
            Command::Commit {
                reservation_id: "c".into(),
                now_ms: 1007,
            },
            reserve("d", 1008), // 2 of 2 used
            reserve("e", 2000), // new window
            reserve("f", 2400), // e expired after its TTL and was refunded
            Command::Commit {
                reservation_id: "e".into(),
                now_ms: 2401,
            },
        ],
    );
    assert_eq!(
        got,
        vec![
            Response::Reserved {
                remaining: 1,
                window_resets_at_ms: 2000
            },
            Response::Reserved {
                remaining: 1,
                window_resets_at_ms: 2000
            },
            Response::Throttled {
                reason: ThrottleReason::Concurrency,
                retry_after_ms: 1000
            },
            Response::Committed,
            Response::Reserved {
                remaining: 0,
                window_resets_at_ms: 2000
            },
            Response::Released,
            Response::Reserved {
                remaining: 0,
                window_resets_at_ms: 2000
            },
            Response::Committed,
            Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms: 992
            },
            Response::Reserved {
                remaining: 1,
                window_resets_at_ms: 3000
            },
            Response::Reserved {
                remaining: 1,
                window_resets_at_ms: 3000
            },
            Response::UnknownReservation,
        ]
    );
}

#[test]
fn admission_claims_each_proof_once_within_its_window_and_reserves_atomically() {
    use stella_state::command::{Admit, ProofClaim};
    let admit = |id: &str, proof: Option<&str>, now_ms: u64| {
        Command::Admit(Admit {
            proof: proof.map(|p| ProofClaim {
                key: p.into(),
                expires_at_ms: now_ms + 1_000,
            }),
            reserve: Reserve {
                reservation_id: id.into(),
                tenant: "t".into(),
                plan: "team".into(),
                limit: 2,
                window_ms: 60_000,
                max_concurrent: 10,
                now_ms,
                ttl_ms: 30_000,
            },
        })
    };
    let mut state = State::default();
    let answers = apply_all(
        &mut state,
        &[
            admit("r1", Some("p1"), 100),
            // The same proof again: refused, and no grant is taken.
            admit("r2", Some("p1"), 200),
            admit("r3", Some("p2"), 300),
            // Quota exhausted: the proof is consumed all the same (a new proof is needed).
            admit("r4", Some("p3"), 400),
            admit("r5", Some("p3"), 500),
            // After p1's window it is forgotten (a stale proof fails its `iat` check first).
            admit("r6", Some("p1"), 1_200),
            // Tokens bound by mTLS carry no proof.
            admit("r7", None, 1_300),
        ],
    );
    assert!(matches!(
        answers[0],
        Response::Reserved { remaining: 1, .. }
    ));
    assert_eq!(answers[1], Response::Replayed);
    assert!(matches!(
        answers[2],
        Response::Reserved { remaining: 0, .. }
    ));
    assert!(matches!(
        answers[3],
        Response::Throttled {
            reason: ThrottleReason::Quota,
            ..
        }
    ));
    assert_eq!(answers[4], Response::Replayed);
    assert!(matches!(answers[5], Response::Throttled { .. }));
    assert!(matches!(answers[6], Response::Throttled { .. }));
    // Pruning happens when a proof is claimed: at 1_200 only p1 (window until 1_100) had
    // expired; it was claimed again, and p2 and p3 are still held.
    assert_eq!(state.proofs.len(), 3);
}

fn configured_draft(reason: &str) -> stella_state::AuditDraft {
    stella_state::AuditDraft {
        time: "2026-12-01T10:00:00Z".into(),
        request_id: "req-cfg".into(),
        tenant: "ops".into(),
        caller_subject: "alice".into(),
        issuer: "authority".into(),
        subject_digests: Vec::new(),
        predicate_type: String::new(),
        key_id: String::new(),
        key_source: String::new(),
        signing_mode: String::new(),
        poe_state: "key_rotated".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: stella_state::Decision::Configured,
        reason: reason.into(),
        bundle_sha256: None,
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

#[test]
fn a_configuration_change_and_its_audit_record_apply_together_or_not_at_all() {
    let mut state = State::default();
    let mut emitted = Vec::new();
    // Applied: both commands and the record, in one command.
    let rotate = Command::Configure {
        commands: vec![
            Command::RegisterKey(key("k1")),
            set_key("k0", KeyState::Retired),
        ],
        audit: configured_draft("rotated"),
    };
    state.apply(&Command::RegisterKey(key("k0")), &mut emitted);
    let answer = state.apply(&rotate, &mut emitted);
    let Response::Configured {
        audit_id: Some(audit_id),
        responses,
    } = answer
    else {
        panic!("{answer:?}")
    };
    assert_eq!(
        responses,
        vec![Response::KeyRegistered, Response::KeyUpdated]
    );
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].audit_id, audit_id);
    assert_eq!(emitted[0].draft.reason, "rotated");
    assert_eq!(state.keys["k0"].state, KeyState::Retired);

    // Refused half-way: the first command's effect is rolled back and nothing is audited.
    let before = state.clone();
    let answer = state.apply(
        &Command::Configure {
            commands: vec![
                Command::RegisterKey(key("k2")),
                set_key("missing", KeyState::Revoked),
            ],
            audit: configured_draft("never"),
        },
        &mut emitted,
    );
    assert_eq!(
        answer,
        Response::Configured {
            responses: vec![Response::KeyRegistered, Response::KeyNotFound],
            audit_id: None
        }
    );
    assert_eq!(state, before, "nothing of a refused change stays");
    assert_eq!(emitted.len(), 1, "a refused change is not audited");

    // Quota, audit or nested commands have no place in a configuration change.
    for stowaway in [
        Command::Audit(configured_draft("forged")),
        Command::Batch(vec![]),
        Command::Commit {
            reservation_id: "r".into(),
            now_ms: 1,
        },
    ] {
        let answer = state.apply(
            &Command::Configure {
                commands: vec![stowaway],
                audit: configured_draft("never"),
            },
            &mut emitted,
        );
        assert_eq!(
            answer,
            Response::Configured {
                responses: vec![Response::InvalidConfigCommand],
                audit_id: None
            }
        );
    }
    assert_eq!(state, before);
    assert_eq!(emitted.len(), 1);
}

mod exactly_once {
    use stella_state::command::{
        Admit, AdmitOnce, Finish, Identity, Outcome, ProofClaim, QuotaUse, Reserve, Response,
        SignOnce, SignedOutcome, ThrottleReason,
    };
    use stella_state::{Command, State};

    fn draft(request_id: &str) -> stella_state::AuditDraft {
        let mut d = super::configured_draft("signed");
        d.request_id = request_id.into();
        d.decision = stella_state::Decision::Signed;
        d
    }

    fn admit(reservation: &str, binding: &str, now_ms: u64, limit: u64) -> Command {
        Command::AdmitOnce(AdmitOnce {
            admit: Admit {
                proof: None,
                reserve: Reserve {
                    reservation_id: reservation.into(),
                    tenant: "t".into(),
                    plan: "team".into(),
                    limit,
                    window_ms: 60_000,
                    max_concurrent: 10,
                    now_ms,
                    ttl_ms: 30_000,
                },
            },
            identity: Some(Identity {
                key: "id-1".into(),
                binding: binding.into(),
                expires_at_ms: now_ms + 10_000,
            }),
            evidence: None,
        })
    }

    fn finish(reservation: &str, signed: bool) -> Command {
        Command::Finish(Finish {
            reservation_id: reservation.into(),
            identity: Some("id-1".into()),
            audit: draft("req-1"),
            signed: signed.then(|| SignedOutcome {
                audit_id: String::new(),
                request_id: "req-1".into(),
                remaining: 4,
                window_resets_at_ms: 60_000,
                key_source: "file".into(),
                signatures: Vec::new(),
            }),
            now_ms: 200,
        })
    }

    fn apply(state: &mut State, term: u64, command: &Command) -> Response {
        state.term = term;
        state.apply(command, &mut Vec::new())
    }

    fn used(state: &State) -> u64 {
        state.ledgers.values().map(|l| l.used).sum()
    }

    #[test]
    fn a_retry_gets_the_committed_outcome_and_takes_no_second_grant() {
        let mut state = State::default();
        assert!(matches!(
            apply(&mut state, 1, &admit("r1", "b", 100, 5)),
            Response::Reserved { .. }
        ));
        // Asked again while the first attempt runs on the same leader: in progress.
        assert_eq!(
            apply(&mut state, 1, &admit("r2", "b", 150, 5)),
            Response::InProgress {
                reservation_id: "r1".into()
            }
        );
        let Response::Audited { audit_id, .. } = apply(&mut state, 1, &finish("r1", true)) else {
            panic!("finish audits")
        };
        // Every later ask, on any leader, gets the same outcome with the record's audit id.
        for (term, reservation) in [(1, "r3"), (2, "r4")] {
            match apply(&mut state, term, &admit(reservation, "b", 300, 5)) {
                Response::Concluded(outcome) => match *outcome {
                    Outcome::Signed(signed) => assert_eq!(signed.audit_id, audit_id),
                    other => panic!("unexpected outcome {other:?}"),
                },
                other => panic!("expected the committed outcome, got {other:?}"),
            }
        }
        assert_eq!(used(&state), 1);
        assert!(state.reservations.is_empty());
        // The same identity with another binding (another request or token) is a replay.
        assert_eq!(
            apply(&mut state, 2, &admit("r5", "other", 300, 5)),
            Response::Replayed
        );
    }

    #[test]
    fn a_new_leader_takes_over_an_attempt_whose_leader_is_gone() {
        let mut state = State::default();
        apply(&mut state, 1, &admit("r1", "b", 100, 5));
        // Term 2: the old leader's attempt never finished; the new one takes the identity and
        // the old grant is refunded (one grant in all).
        assert!(matches!(
            apply(&mut state, 2, &admit("r2", "b", 150, 5)),
            Response::Reserved { .. }
        ));
        assert_eq!(used(&state), 1);
        // The old attempt's late finish changes nothing.
        assert_eq!(
            apply(&mut state, 2, &finish("r1", true)),
            Response::Superseded
        );
        assert!(state.audit_tail.is_none());
        assert!(matches!(
            apply(&mut state, 2, &finish("r2", true)),
            Response::Audited { .. }
        ));
        assert_eq!(state.audit_tail.as_ref().map(|t| t.seq), Some(1));
    }

    #[test]
    fn a_failed_attempt_reopens_the_identity_and_refunds() {
        let mut state = State::default();
        apply(&mut state, 1, &admit("r1", "b", 100, 5));
        assert!(matches!(
            apply(&mut state, 1, &finish("r1", false)),
            Response::Audited { .. }
        ));
        assert_eq!(used(&state), 0);
        assert!(matches!(
            apply(&mut state, 1, &admit("r2", "b", 150, 5)),
            Response::Reserved { .. }
        ));
        // A released reservation (the session died) also lets the next attempt in.
        state.apply(
            &Command::Release {
                reservation_id: "r2".into(),
                now_ms: 160,
            },
            &mut Vec::new(),
        );
        assert!(matches!(
            apply(&mut state, 1, &admit("r3", "b", 170, 5)),
            Response::Reserved { .. }
        ));
    }

    fn sign(binding: &str, now_ms: u64, limit: u64) -> Command {
        Command::Sign(Box::new(SignOnce {
            proof: None,
            identity: Some(Identity {
                key: "id-1".into(),
                binding: binding.into(),
                expires_at_ms: now_ms.saturating_add(10_000),
            }),
            quota: QuotaUse {
                tenant: "t".into(),
                plan: "team".into(),
                limit,
                window_ms: 60_000,
                now_ms,
            },
            audit: draft("req-1"),
            signed: SignedOutcome {
                audit_id: String::new(),
                request_id: "req-1".into(),
                remaining: 0,
                window_resets_at_ms: 0,
                key_source: "file".into(),
                signatures: Vec::new(),
            },
        }))
    }

    fn sign_with_proof(proof: &str, now_ms: u64, limit: u64) -> Command {
        let Command::Sign(mut once) = sign("b", now_ms, limit) else {
            unreachable!()
        };
        once.identity = None;
        once.proof = Some(ProofClaim {
            key: proof.into(),
            expires_at_ms: now_ms.saturating_add(10_000),
        });
        Command::Sign(once)
    }

    #[test]
    fn one_entry_signs_spends_and_audits_together_and_a_retry_gets_that_outcome() {
        let mut state = State::default();
        let Response::Granted {
            audit_id,
            remaining,
            window_resets_at_ms,
        } = apply(&mut state, 1, &sign("b", 100, 5))
        else {
            panic!("granted")
        };
        assert_eq!((remaining, window_resets_at_ms), (4, 60_000));
        assert_eq!(used(&state), 1);
        assert_eq!(state.audit_tail.as_ref().map(|t| t.seq), Some(1));
        assert!(state.reservations.is_empty(), "no reservation is made");
        // A second attempt of the same request (a retry that raced the first, or came after
        // a failover) gets the committed outcome, with apply's own quota figures: no second
        // unit, no second record.
        match apply(&mut state, 2, &sign("b", 150, 5)) {
            Response::Concluded(outcome) => match *outcome {
                Outcome::Signed(signed) => {
                    assert_eq!(signed.audit_id, audit_id);
                    assert_eq!(signed.remaining, 4);
                    assert_eq!(signed.window_resets_at_ms, 60_000);
                }
                other => panic!("unexpected outcome {other:?}"),
            },
            other => panic!("expected the committed outcome, got {other:?}"),
        }
        assert_eq!(used(&state), 1);
        assert_eq!(state.audit_tail.as_ref().map(|t| t.seq), Some(1));
        assert_eq!(
            apply(&mut state, 2, &sign("other", 150, 5)),
            Response::Replayed
        );
    }

    #[test]
    fn the_last_unit_goes_to_one_signing_and_the_loser_changes_nothing_but_its_refusal() {
        let mut state = State::default();
        // Two leaders' speculative signings for the last unit of a plan of 1.
        assert!(matches!(
            apply(&mut state, 1, &sign_with_proof("p1", 100, 1)),
            Response::Granted { remaining: 0, .. }
        ));
        let tail = state.audit_tail.clone();
        assert_eq!(
            apply(&mut state, 2, &sign_with_proof("p2", 110, 1)),
            Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms: 60_000 - 110
            }
        );
        assert_eq!(used(&state), 1, "the plan is never overshot");
        assert_eq!(state.audit_tail, tail, "the loser's record is not appended");
        // Its proof is spent like any refused admission's; a replay of the winner's too.
        assert_eq!(
            apply(&mut state, 2, &sign_with_proof("p2", 120, 1)),
            Response::Replayed
        );
        assert_eq!(
            apply(&mut state, 2, &sign_with_proof("p1", 120, 1)),
            Response::Replayed
        );
        // The next window grants again; a clock behind the newest window does not reopen an
        // older one.
        assert!(matches!(
            apply(&mut state, 2, &sign_with_proof("p3", 60_100, 1)),
            Response::Granted { .. }
        ));
        assert!(matches!(
            apply(&mut state, 3, &sign_with_proof("p4", 59_000, 1)),
            Response::Throttled { .. }
        ));
    }

    #[test]
    fn a_one_entry_signing_takes_over_an_identity_a_gone_leader_held() {
        let mut state = State::default();
        apply(&mut state, 1, &admit("r1", "b", 100, 5));
        // Same term and still reserved: in progress (a threshold attempt runs).
        assert_eq!(
            apply(&mut state, 1, &sign("b", 120, 5)),
            Response::InProgress {
                reservation_id: "r1".into()
            }
        );
        // A new term: the old attempt's grant is refunded and this signing takes it.
        assert!(matches!(
            apply(&mut state, 2, &sign("b", 150, 5)),
            Response::Granted { remaining: 4, .. }
        ));
        assert_eq!(used(&state), 1);
        assert_eq!(
            apply(&mut state, 2, &finish("r1", true)),
            Response::Superseded
        );
    }

    #[test]
    fn quota_arithmetic_holds_at_the_extremes() {
        let mut state = State::default();
        let mut at = |now: u64, window: u64, limit: u64| {
            let Command::Sign(mut once) = sign_with_proof(&format!("x{now}{window}"), now, limit)
            else {
                unreachable!()
            };
            once.quota.window_ms = window;
            once.quota.tenant = format!("t{now}{window}");
            apply(&mut state, 1, &Command::Sign(once))
        };
        assert!(matches!(
            at(u64::MAX, u64::MAX, u64::MAX),
            Response::Granted { .. }
        ));
        assert!(matches!(at(u64::MAX, 0, 1), Response::Granted { .. }));
        assert!(matches!(at(0, 1, 0), Response::Throttled { .. }));
    }

    #[test]
    fn a_refusal_is_the_outcome_too_and_claims_expire_with_their_window() {
        let mut state = State::default();
        let limited = |r: &str, now| admit(r, "b", now, 0);
        assert!(matches!(
            apply(&mut state, 1, &limited("r1", 100)),
            Response::Throttled {
                reason: ThrottleReason::Quota,
                ..
            }
        ));
        match apply(&mut state, 3, &limited("r2", 200)) {
            Response::Concluded(outcome) => assert!(matches!(
                *outcome,
                Outcome::Throttled {
                    reason: ThrottleReason::Quota,
                    until_ms: 60_000
                }
            )),
            other => panic!("expected the same refusal, got {other:?}"),
        }
        // Past the identity's window it is forgotten: a new decision.
        assert!(matches!(
            apply(&mut state, 3, &admit("r3", "b", 20_000, 5)),
            Response::Reserved { .. }
        ));
        assert_eq!(state.proofs.len(), 1);
    }
}

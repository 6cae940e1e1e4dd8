//! The leader's decision before it signs, free of I/O: read against its own applied state, it
//! tells whether a signing may go ahead speculatively (ADR 0028). `apply` decides again when
//! the signing's one entry commits, so this check only has to be conservative, never exact:
//! what it lets through and `apply` refuses costs one discarded signature, never a unit of
//! quota or an answer.

use stella_state::State;
use stella_state::command::{Identity, Outcome, ProofClaim};
use stella_state::machine::{ClaimStatus, LedgerKey};

/// What the decision reads besides the state.
pub struct PrecheckFacts<'a> {
    /// The DPoP proof to claim, when no identity carries it.
    pub proof: Option<&'a ProofClaim>,
    pub identity: Option<&'a Identity>,
    pub tenant: &'a str,
    pub plan: &'a str,
    /// Signatures per window.
    pub limit: u64,
    pub window_ms: u64,
    pub now_ms: u64,
    /// Units this leader has promised to signings of the same tenant and plan that are not
    /// applied yet (signing, or their entry on its way through Raft).
    pub promised: u64,
}

/// What the leader does with a request.
#[derive(Debug, PartialEq)]
pub enum Precheck {
    /// Sign now; the entry that records it spends the unit.
    Proceed,
    /// The proof or identity was used for something else: refuse.
    Replayed,
    /// Decided before: answer with that outcome (no new signature).
    Concluded(Outcome),
    /// A two-round attempt of this leader term holds the identity (a threshold key signs).
    InProgress { reservation_id: String },
    /// No unit left in the plan's window.
    Throttled { retry_after_ms: u64 },
}

pub fn precheck(state: &State, f: &PrecheckFacts<'_>) -> Precheck {
    let live = |expires_at_ms: u64| expires_at_ms > f.now_ms;
    if let Some(proof) = f.proof
        && state
            .proofs
            .get(&proof.key)
            .is_some_and(|c| live(c.expires_at_ms))
    {
        return Precheck::Replayed;
    }
    if let Some(identity) = f.identity
        && let Some(claim) = state
            .proofs
            .get(&identity.key)
            .filter(|c| live(c.expires_at_ms))
    {
        if claim.binding.as_deref() != Some(identity.binding.as_str()) {
            return Precheck::Replayed;
        }
        match &claim.status {
            ClaimStatus::Used => return Precheck::Replayed,
            ClaimStatus::Done(outcome) => return Precheck::Concluded(outcome.clone()),
            ClaimStatus::Pending {
                term,
                reservation_id,
            } if *term == state.term && state.reservations.contains_key(reservation_id) => {
                return Precheck::InProgress {
                    reservation_id: reservation_id.clone(),
                };
            }
            ClaimStatus::Pending { .. } | ClaimStatus::Open => {}
        }
    }
    let window_ms = f.window_ms.max(1);
    let key = LedgerKey {
        tenant: f.tenant.to_owned(),
        plan: f.plan.to_owned(),
    };
    let ledger = state.ledgers.get(&key);
    let window_start_ms =
        (f.now_ms - f.now_ms % window_ms).max(ledger.map_or(0, |l| l.window_start_ms));
    let used = ledger
        .filter(|l| l.window_start_ms == window_start_ms)
        .map_or(0, |l| l.used);
    if used.saturating_add(f.promised) >= f.limit {
        return Precheck::Throttled {
            retry_after_ms: window_start_ms
                .saturating_add(window_ms)
                .saturating_sub(f.now_ms),
        };
    }
    Precheck::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_state::command::{Command, QuotaUse, SignOnce, SignedOutcome};

    fn facts<'a>(proof: Option<&'a ProofClaim>, limit: u64, promised: u64) -> PrecheckFacts<'a> {
        PrecheckFacts {
            proof,
            identity: None,
            tenant: "t",
            plan: "p",
            limit,
            window_ms: 60_000,
            now_ms: 1_000,
            promised,
        }
    }

    fn granted(state: &mut State, proof: &ProofClaim) {
        let draft: stella_state::AuditDraft = serde_json::from_value(serde_json::json!({
            "time": "2026-12-02T00:00:00Z", "requestId": "r", "tenant": "t",
            "callerSubject": "s", "issuer": "i", "subjectDigests": ["d"],
            "predicateType": "x", "keyId": "k", "keySource": "file",
            "signingMode": "keyful", "poeState": "valid", "decision": "signed",
            "reason": "signed"
        }))
        .expect("draft");
        let answer = state.apply(
            &Command::Sign(Box::new(SignOnce {
                proof: Some(proof.clone()),
                identity: None,
                quota: QuotaUse {
                    tenant: "t".into(),
                    plan: "p".into(),
                    limit: 2,
                    window_ms: 60_000,
                    now_ms: 1_000,
                },
                audit: draft,
                signed: SignedOutcome {
                    audit_id: String::new(),
                    request_id: "r".into(),
                    remaining: 0,
                    window_resets_at_ms: 0,
                    key_source: "file".into(),
                    signatures: Vec::new(),
                },
            })),
            &mut Vec::new(),
        );
        assert!(matches!(
            answer,
            stella_state::command::Response::Granted { .. }
        ));
    }

    #[test]
    fn counts_applied_units_and_the_leaders_own_promises() {
        let mut state = State::default();
        let p1 = ProofClaim {
            key: "p1".into(),
            expires_at_ms: 9_000,
        };
        let p2 = ProofClaim {
            key: "p2".into(),
            expires_at_ms: 9_000,
        };
        assert_eq!(precheck(&state, &facts(Some(&p2), 2, 0)), Precheck::Proceed);
        granted(&mut state, &p1);
        // One applied, one promised: the plan of two is full for a third.
        assert_eq!(
            precheck(&state, &facts(Some(&p2), 2, 1)),
            Precheck::Throttled {
                retry_after_ms: 59_000
            }
        );
        assert_eq!(precheck(&state, &facts(Some(&p2), 2, 0)), Precheck::Proceed);
        // The claimed proof is a replay.
        assert_eq!(
            precheck(&state, &facts(Some(&p1), 2, 0)),
            Precheck::Replayed
        );
        // Promises at u64::MAX do not wrap around into a grant.
        assert!(matches!(
            precheck(&state, &facts(Some(&p2), u64::MAX, u64::MAX)),
            Precheck::Throttled { .. }
        ));
        // A zero window and a clock at the end of time do not panic.
        let mut edge = facts(Some(&p2), 5, 0);
        edge.window_ms = 0;
        edge.now_ms = u64::MAX;
        assert_eq!(precheck(&state, &edge), Precheck::Proceed);
    }
}

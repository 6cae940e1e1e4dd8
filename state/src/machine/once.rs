//! `apply` for exactly-once signing: `AdmitOnce`, `Finish` and the one-entry `Sign`, with the
//! identity gate they share.

use super::{Claim, ClaimStatus, LedgerKey, State};
use crate::audit::AuditRecord;
use crate::command::{AdmitOnce, Command, Finish, Outcome, Response, SignOnce, ThrottleReason};

impl State {
    /// See [`Command::AdmitOnce`].
    pub(super) fn admit_once(&mut self, once: &AdmitOnce) -> Response {
        let reserve = &once.admit.reserve;
        if let Some(proof) = &once.admit.proof
            && !self.proofs.claim(proof, reserve.now_ms)
        {
            return Response::Replayed;
        }
        if let Some(identity) = &once.identity {
            self.proofs.prune(reserve.now_ms);
            if let Some(answer) = self.identity_gate(identity) {
                return answer;
            }
        }
        let response = self.reserve(reserve);
        if let Some(identity) = &once.identity {
            let status = match &response {
                Response::Reserved { .. } => Some(ClaimStatus::Pending {
                    term: self.term,
                    reservation_id: reserve.reservation_id.clone(),
                }),
                Response::Throttled {
                    reason,
                    retry_after_ms,
                } => Some(ClaimStatus::Done(Outcome::Throttled {
                    reason: *reason,
                    until_ms: reserve.now_ms.saturating_add(*retry_after_ms),
                })),
                _ => None,
            };
            if let Some(status) = status {
                self.proofs.put(
                    identity.key.clone(),
                    Claim {
                        expires_at_ms: identity.expires_at_ms,
                        binding: Some(identity.binding.clone()),
                        status,
                    },
                );
            }
        }
        if let (Response::Reserved { .. }, Some(evidence)) = (&response, &once.evidence) {
            self.admissions
                .insert(reserve.reservation_id.clone(), evidence.clone());
        }
        response
    }

    /// What a held identity answers a new attempt: `Some` ends the attempt (a replay, the
    /// committed outcome, or an attempt of this term still in progress); `None` lets it go on —
    /// the identity is new or open, or its attempt's leader is gone (or its reservation
    /// expired), in which case this attempt takes it over and the old grant goes back.
    pub(super) fn identity_gate(
        &mut self,
        identity: &crate::command::Identity,
    ) -> Option<Response> {
        let claim = self.proofs.get(&identity.key)?;
        if claim.binding.as_deref() != Some(identity.binding.as_str()) {
            return Some(Response::Replayed);
        }
        match claim.status.clone() {
            ClaimStatus::Used => Some(Response::Replayed),
            ClaimStatus::Done(outcome) => Some(Response::Concluded(Box::new(outcome))),
            ClaimStatus::Pending {
                term,
                reservation_id,
            } => {
                if term == self.term && self.reservations.contains_key(&reservation_id) {
                    return Some(Response::InProgress { reservation_id });
                }
                self.admissions.remove(&reservation_id);
                if let Some(res) = self.reservations.remove(&reservation_id) {
                    self.refund(&res);
                }
                None
            }
            ClaimStatus::Open => None,
        }
    }

    /// See [`Command::Finish`].
    pub(super) fn finish(&mut self, finish: &Finish, emitted: &mut Vec<AuditRecord>) -> Response {
        if let Some(key) = &finish.identity
            && let Some(claim) = self.proofs.get(key)
        {
            let holds = matches!(&claim.status, ClaimStatus::Pending { reservation_id, .. }
                if *reservation_id == finish.reservation_id);
            if !holds {
                return Response::Superseded;
            }
        }
        let audited = self.apply(&Command::Audit(finish.audit.clone()), emitted);
        let Response::Audited { audit_id, .. } = &audited else {
            return audited;
        };
        let end = if finish.signed.is_some() {
            Command::Commit {
                reservation_id: finish.reservation_id.clone(),
                now_ms: finish.now_ms,
            }
        } else {
            Command::Release {
                reservation_id: finish.reservation_id.clone(),
                now_ms: finish.now_ms,
            }
        };
        self.apply(&end, emitted);
        if let Some(key) = &finish.identity {
            let status = match &finish.signed {
                Some(signed) => {
                    let mut signed = signed.clone();
                    signed.audit_id = audit_id.clone();
                    ClaimStatus::Done(Outcome::Signed(signed))
                }
                None => ClaimStatus::Open,
            };
            self.proofs.set_status(key, status);
        }
        audited
    }

    /// See [`Command::Sign`]. Every check comes before the first change, so a refused signing
    /// changes nothing but what its refusal must pin (a throttled identity's outcome, the
    /// claimed proof — exactly what `AdmitOnce` pins for a refusal).
    pub(super) fn sign_once(
        &mut self,
        sign: &SignOnce,
        emitted: &mut Vec<AuditRecord>,
    ) -> Response {
        let quota = &sign.quota;
        let now_ms = quota.now_ms;
        self.proofs.prune(now_ms);
        if let Some(proof) = &sign.proof
            && self.proofs.contains(&proof.key)
        {
            return Response::Replayed;
        }
        if let Some(identity) = &sign.identity
            && let Some(answer) = self.identity_gate(identity)
        {
            return answer;
        }
        let key = LedgerKey {
            tenant: quota.tenant.clone(),
            plan: quota.plan.clone(),
        };
        self.expire_reservations(&key, now_ms);
        let (ledger, window_resets_at_ms) = self.ledger_window(key, now_ms, quota.window_ms);
        let granted = ledger.used < quota.limit;
        if granted {
            ledger.used += 1;
        }
        let remaining = quota.limit.saturating_sub(ledger.used);
        if let Some(proof) = &sign.proof {
            self.proofs.claim(proof, now_ms);
        }
        if !granted {
            let retry_after_ms = window_resets_at_ms.saturating_sub(now_ms);
            if let Some(identity) = &sign.identity {
                self.proofs.put(
                    identity.key.clone(),
                    Claim {
                        expires_at_ms: identity.expires_at_ms,
                        binding: Some(identity.binding.clone()),
                        status: ClaimStatus::Done(Outcome::Throttled {
                            reason: ThrottleReason::Quota,
                            until_ms: window_resets_at_ms,
                        }),
                    },
                );
            }
            return Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms,
            };
        }
        let audited = self.apply(&Command::Audit(sign.audit.clone()), emitted);
        let Response::Audited { audit_id, .. } = &audited else {
            return audited;
        };
        let audit_id = audit_id.clone();
        if let Some(identity) = &sign.identity {
            let mut signed = sign.signed.clone();
            signed.audit_id = audit_id.clone();
            signed.remaining = remaining;
            signed.window_resets_at_ms = window_resets_at_ms;
            self.proofs.put(
                identity.key.clone(),
                Claim {
                    expires_at_ms: identity.expires_at_ms,
                    binding: Some(identity.binding.clone()),
                    status: ClaimStatus::Done(Outcome::Signed(signed)),
                },
            );
        }
        Response::Granted {
            audit_id,
            remaining,
            window_resets_at_ms,
        }
    }
}

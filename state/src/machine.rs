//! The replicated state and its pure, deterministic `apply`.
//!
//! `apply` does no I/O, reads no clock and never signs. It returns the answer for the proposer
//! and the audit records the command produced; the storage layer persists both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditDraft, AuditRecord};
use crate::command::{
    AdmissionEvidence, Admit, AdmitOnce, Approval, ApprovalDecision, Command, Finish, KeyEntry,
    KeyState, Outcome, ProofClaim, Reserve, Response, SignOnce, ThresholdGroup, ThrottleReason,
    Toggle, Verdict,
};
pub use crate::tracked::Tracked;

mod changes;
pub use changes::StateChanges;

/// Hint given to a caller throttled by concurrency (the slot frees when a signing ends).
pub const CONCURRENCY_RETRY_MS: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LedgerKey {
    pub tenant: String,
    pub plan: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub window_start_ms: u64,
    /// Grants in the current window (a grant counts from reservation; a release refunds it).
    pub used: u64,
    /// Reservations neither committed nor released.
    pub in_flight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub ledger: LedgerKey,
    pub window_start_ms: u64,
    pub expires_at_ms: u64,
    /// The answer given when it was made, repeated for a duplicate request.
    pub remaining: u64,
    pub window_resets_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTail {
    pub seq: u64,
    pub hash: String,
}

/// Everything replicated except the audit records themselves (those are appended to storage as
/// `apply` emits them; the tail here is what chains the next one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
///
/// Each map is [`Tracked`]: it records the keys `apply` changes, and storage writes only those
/// rows (one table per kind, ADR 0027) — see [`State::take_changes`].
pub struct State {
    pub ledgers: Tracked<LedgerKey, Ledger>,
    pub reservations: Tracked<String, Reservation>,
    pub audit_tail: Option<AuditTail>,
    pub keys: Tracked<String, KeyEntry>,
    pub toggles: Tracked<String, Toggle>,
    pub approvals: Tracked<String, Approval>,
    /// Share holders of threshold keys, by key id (format v3).
    pub threshold_groups: Tracked<String, ThresholdGroup>,
    /// One-time proofs seen within their validity window. Not part of the state's encoding:
    /// the set can be large, so storage keeps it in a table of its own, updated per apply
    /// from [`ProofSet::take_changes`], and snapshots carry it separately.
    #[serde(skip)]
    pub proofs: ProofSet,
    /// The caller evidence of admissions that may use a threshold key, by reservation id, while
    /// the reservation is open: what each share holder re-checks before it releases a share.
    /// Short-lived (gone when the reservation commits, is released or expires) and rebuilt by
    /// replaying the log, so it is not part of the state's encoding or of snapshots; a holder
    /// restored from a snapshot mid-signing refuses, and the coordinator routes around it.
    #[serde(skip)]
    pub admissions: BTreeMap<String, AdmissionEvidence>,
    /// The leader term of the entry being applied (from its log id, set by storage before each
    /// entry; 0 outside storage). `AdmitOnce` tells a retry of a live attempt from one whose
    /// leader is gone by it. Not state: part of each entry's identity in the log.
    #[serde(skip)]
    pub term: u64,
    /// The audit log's Merkle tree head and checkpoints (format v6). Kept by storage under a
    /// key of its own and carried by snapshots beside the state, so the state's own encoding
    /// is unchanged.
    #[serde(skip)]
    pub log: crate::log_tree::LogTree,
}

/// A change to the proof set, for storage to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofChange {
    Claimed { key: String, claim: Claim },
    Forgotten { key: String },
}

/// One identity the cluster has seen within its window: a one-time DPoP proof or an
/// idempotency key (format v5; a format-v2–v4 proof is a bare `Used` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub expires_at_ms: u64,
    /// What the identity is bound to; `None` for a proof claimed without one (`Admit`).
    pub binding: Option<String>,
    pub status: ClaimStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimStatus {
    /// Claimed by an `Admit` (no outcome kept: any second use is a replay).
    Used,
    /// An attempt holds it: the leader term that admitted it and its reservation.
    Pending { term: u64, reservation_id: String },
    /// The last attempt failed without an outcome: the next one takes it.
    Open,
    /// Decided: every later ask gets this.
    Done(Outcome),
}

impl Claim {
    pub(crate) fn used(expires_at_ms: u64) -> Claim {
        Claim {
            expires_at_ms,
            binding: None,
            status: ClaimStatus::Used,
        }
    }
}

/// Seen one-time proofs and idempotency keys by key, with an expiry index so pruning is
/// proportional to what expires.
#[derive(Debug, Clone, Default)]
pub struct ProofSet {
    by_key: BTreeMap<String, Claim>,
    by_expiry: std::collections::BTreeSet<(u64, String)>,
    /// Changes since storage last took them (not part of the set's value).
    changes: Vec<ProofChange>,
}

impl PartialEq for ProofSet {
    fn eq(&self, other: &ProofSet) -> bool {
        self.by_key == other.by_key
    }
}

impl Eq for ProofSet {}

/// Bare proofs with the end of their window (formats 2–4).
impl FromIterator<(String, u64)> for ProofSet {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(entries: I) -> ProofSet {
        entries
            .into_iter()
            .map(|(k, e)| (k, Claim::used(e)))
            .collect()
    }
}

impl FromIterator<(String, Claim)> for ProofSet {
    fn from_iter<I: IntoIterator<Item = (String, Claim)>>(entries: I) -> ProofSet {
        let by_key: BTreeMap<String, Claim> = entries.into_iter().collect();
        let by_expiry = by_key
            .iter()
            .map(|(k, c)| (c.expires_at_ms, k.clone()))
            .collect();
        ProofSet {
            by_key,
            by_expiry,
            changes: Vec::new(),
        }
    }
}

impl ProofSet {
    /// Every held claim.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &Claim)> {
        self.by_key.iter().map(|(k, c)| (k.as_str(), c))
    }

    /// Whether the cluster has claimed proof `key` (and it is still within its window).
    pub fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Claim> {
        self.by_key.get(key)
    }

    /// Changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<ProofChange> {
        std::mem::take(&mut self.changes)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Forgets claims whose window ended at or before `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now_ms {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.by_key.remove(&key);
                self.changes.push(ProofChange::Forgotten { key });
            }
        }
    }

    /// Records a proof; `false` if it is already recorded (a replay).
    fn claim(&mut self, claim: &ProofClaim, now_ms: u64) -> bool {
        self.prune(now_ms);
        if self.by_key.contains_key(&claim.key) {
            return false;
        }
        self.put(claim.key.clone(), Claim::used(claim.expires_at_ms));
        true
    }

    /// Inserts or replaces the claim of `key` (its window never changes once claimed).
    fn put(&mut self, key: String, claim: Claim) {
        if let Some(old) = self.by_key.get(&key) {
            self.by_expiry.remove(&(old.expires_at_ms, key.clone()));
        }
        self.by_expiry.insert((claim.expires_at_ms, key.clone()));
        self.changes.push(ProofChange::Claimed {
            key: key.clone(),
            claim: claim.clone(),
        });
        self.by_key.insert(key, claim);
    }

    /// Sets the status of a held claim.
    fn set_status(&mut self, key: &str, status: ClaimStatus) {
        if let Some(mut claim) = self.by_key.get(key).cloned() {
            claim.status = status;
            self.put(key.to_owned(), claim);
        }
    }
}

impl State {
    /// Applies one command. Audit records it creates are pushed onto `emitted`, in order.
    pub fn apply(&mut self, command: &Command, emitted: &mut Vec<AuditRecord>) -> Response {
        match command {
            Command::Reserve(r) => self.reserve(r),
            Command::Commit { reservation_id, .. } => {
                self.admissions.remove(reservation_id);
                match self.reservations.remove(reservation_id) {
                    Some(res) => {
                        if let Some(ledger) = self.ledgers.get_mut(&res.ledger) {
                            ledger.in_flight = ledger.in_flight.saturating_sub(1);
                        }
                        Response::Committed
                    }
                    None => Response::UnknownReservation,
                }
            }
            Command::Release { reservation_id, .. } => {
                self.admissions.remove(reservation_id);
                match self.reservations.remove(reservation_id) {
                    Some(res) => {
                        self.refund(&res);
                        Response::Released
                    }
                    None => Response::UnknownReservation,
                }
            }
            Command::Audit(draft) => {
                let prev = self.audit_tail.as_ref().map(|t| (t.seq, t.hash.as_str()));
                let record = AuditRecord::chain(draft.clone(), prev);
                self.log.push_record(&record.to_canonical_line());
                self.audit_tail = Some(AuditTail {
                    seq: record.seq,
                    hash: record.hash.clone(),
                });
                let response = Response::Audited {
                    seq: record.seq,
                    audit_id: record.audit_id.clone(),
                    hash: record.hash.clone(),
                };
                emitted.push(record);
                response
            }
            Command::RegisterKey(entry) => {
                if self.keys.contains_key(&entry.key_id) {
                    return Response::KeyExists;
                }
                self.keys.insert(entry.key_id.clone(), entry.clone());
                Response::KeyRegistered
            }
            Command::RegisterThresholdKey { entry, group } => {
                if self.keys.contains_key(&entry.key_id) {
                    return Response::KeyExists;
                }
                self.keys.insert(entry.key_id.clone(), entry.clone());
                self.threshold_groups
                    .insert(entry.key_id.clone(), group.clone());
                Response::KeyRegistered
            }
            Command::UpdateThresholdGroup { key_id, group } => {
                let active = self
                    .keys
                    .get(key_id)
                    .is_some_and(|k| k.state == KeyState::Active);
                match self.threshold_groups.get_mut(key_id) {
                    Some(current) if active => {
                        *current = group.clone();
                        Response::KeyUpdated
                    }
                    _ => Response::KeyNotFound,
                }
            }
            Command::SetKeyState {
                key_id,
                state,
                reason,
                now_ms,
                ..
            } => {
                let Some(entry) = self.keys.get_mut(key_id) else {
                    return Response::KeyNotFound;
                };
                if !key_transition_allowed(entry.state, *state) {
                    return Response::InvalidKeyTransition {
                        from: entry.state,
                        to: *state,
                    };
                }
                entry.state = *state;
                entry.reason = reason.clone();
                entry.updated_ms = *now_ms;
                Response::KeyUpdated
            }
            Command::SetToggle(toggle) => {
                self.toggles.insert(toggle.name.clone(), toggle.clone());
                Response::ToggleSet
            }
            Command::RequestApproval(approval) => {
                // Denied and expired approvals grant nothing: they leave the state (their
                // history is in the audit log), so tenants cannot grow it with old requests.
                self.prune_approvals(approval.requested_ms);
                if self.approvals.contains_key(&approval.approval_id) {
                    return Response::ApprovalExists;
                }
                let tenant = approval_tenant(&approval.requested_by);
                if self.pending_approvals(tenant, approval.requested_ms)
                    >= MAX_PENDING_APPROVALS_PER_TENANT
                {
                    return Response::ApprovalLimitReached;
                }
                let mut approval = approval.clone();
                approval.decision = None;
                self.approvals
                    .insert(approval.approval_id.clone(), approval);
                Response::ApprovalRecorded
            }
            Command::DecideApproval {
                approval_id,
                verdict,
                actor,
                reason,
                now_ms,
            } => {
                let Some(approval) = self.approvals.get_mut(approval_id) else {
                    return Response::ApprovalNotFound;
                };
                if approval.decision.is_some() {
                    return Response::ApprovalAlreadyDecided;
                }
                if *now_ms >= approval.expires_at_ms {
                    return Response::ApprovalExpired;
                }
                approval.decision = Some(ApprovalDecision {
                    verdict: *verdict,
                    actor: actor.clone(),
                    reason: reason.clone(),
                    decided_ms: *now_ms,
                });
                Response::ApprovalRecorded
            }
            Command::Batch(commands) => {
                Response::Batch(commands.iter().map(|c| self.apply(c, emitted)).collect())
            }
            Command::Configure { commands, audit } => self.configure(commands, audit, emitted),
            Command::Admit(admit) => self.admit(admit),
            Command::AdmitWithEvidence { admit, evidence } => {
                let response = self.admit(admit);
                if matches!(response, Response::Reserved { .. }) {
                    self.admissions
                        .insert(admit.reserve.reservation_id.clone(), evidence.clone());
                }
                response
            }
            Command::AdmitOnce(once) => self.admit_once(once),
            Command::Finish(finish) => self.finish(finish, emitted),
            Command::Sign(sign) => self.sign_once(sign, emitted),
            Command::CutCheckpoint { now_ms } => Response::CheckpointCut(self.log.cut(*now_ms)),
            Command::SignCheckpoint { head, note } => match self.log.sign(*head, note) {
                Ok(()) => Response::CheckpointSigned,
                Err(refusal) => Response::CheckpointRefused(refusal),
            },
        }
    }

    /// See [`Command::AdmitOnce`].
    fn admit_once(&mut self, once: &AdmitOnce) -> Response {
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
    fn identity_gate(&mut self, identity: &crate::command::Identity) -> Option<Response> {
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
    fn finish(&mut self, finish: &Finish, emitted: &mut Vec<AuditRecord>) -> Response {
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
    fn sign_once(&mut self, sign: &SignOnce, emitted: &mut Vec<AuditRecord>) -> Response {
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

    /// The ledger of `key` in the window `now_ms` falls in, and when that window ends. Windows
    /// only move forward: a leader whose clock is behind the previous one must not reopen an
    /// older window and grant its quota twice.
    fn ledger_window(&mut self, key: LedgerKey, now_ms: u64, window_ms: u64) -> (&mut Ledger, u64) {
        let window_ms = window_ms.max(1);
        let ledger = self.ledgers.entry(key).or_default();
        let window_start_ms = (now_ms - now_ms % window_ms).max(ledger.window_start_ms);
        if window_start_ms > ledger.window_start_ms {
            ledger.window_start_ms = window_start_ms;
            ledger.used = 0;
        }
        (ledger, window_start_ms.saturating_add(window_ms))
    }

    /// All or nothing: a refused command rolls the whole change back. Configuration changes are
    /// rare and never touch the one-time proofs, so the rollback copy leaves those out.
    fn configure(
        &mut self,
        commands: &[Command],
        audit: &AuditDraft,
        emitted: &mut Vec<AuditRecord>,
    ) -> Response {
        let proofs = std::mem::take(&mut self.proofs);
        let before = self.clone();
        let mut scratch = Vec::new();
        let responses: Vec<Response> = commands
            .iter()
            .map(|c| match c {
                // Only registry, toggle and approval commands belong in a configuration change.
                Command::Reserve(_)
                | Command::AdmitWithEvidence { .. }
                | Command::Commit { .. }
                | Command::Release { .. }
                | Command::Admit(_)
                | Command::Audit(_)
                | Command::Batch(_)
                | Command::Configure { .. }
                | Command::AdmitOnce(_)
                | Command::Finish(_)
                | Command::Sign(_)
                | Command::CutCheckpoint { .. }
                | Command::SignCheckpoint { .. } => Response::InvalidConfigCommand,
                _ => self.apply(c, &mut scratch),
            })
            .collect();
        let refused = responses.iter().any(Response::is_refused_change);
        if refused {
            *self = before;
        }
        self.proofs = proofs;
        if refused {
            return Response::Configured {
                responses,
                audit_id: None,
            };
        }
        emitted.append(&mut scratch);
        let audit_id = match self.apply(&Command::Audit(audit.clone()), emitted) {
            Response::Audited { audit_id, .. } => Some(audit_id),
            _ => None,
        };
        Response::Configured {
            responses,
            audit_id,
        }
    }

    fn reserve(&mut self, r: &Reserve) -> Response {
        if let Some(existing) = self.reservations.get(&r.reservation_id) {
            return Response::Reserved {
                remaining: existing.remaining,
                window_resets_at_ms: existing.window_resets_at_ms,
            };
        }
        let key = LedgerKey {
            tenant: r.tenant.clone(),
            plan: r.plan.clone(),
        };
        self.expire_reservations(&key, r.now_ms);
        let (ledger, window_resets_at_ms) = self.ledger_window(key.clone(), r.now_ms, r.window_ms);
        let window_start_ms = ledger.window_start_ms;
        if ledger.used >= r.limit {
            return Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms: window_resets_at_ms.saturating_sub(r.now_ms),
            };
        }
        if ledger.in_flight >= r.max_concurrent {
            return Response::Throttled {
                reason: ThrottleReason::Concurrency,
                retry_after_ms: CONCURRENCY_RETRY_MS,
            };
        }
        ledger.used += 1;
        ledger.in_flight += 1;
        let remaining = r.limit - ledger.used;
        self.reservations.insert(
            r.reservation_id.clone(),
            Reservation {
                ledger: key,
                window_start_ms,
                expires_at_ms: r.now_ms.saturating_add(r.ttl_ms),
                remaining,
                window_resets_at_ms,
            },
        );
        Response::Reserved {
            remaining,
            window_resets_at_ms,
        }
    }

    /// Releases (and refunds) reservations of `key` whose TTL has passed.
    fn admit(&mut self, admit: &Admit) -> Response {
        if let Some(proof) = &admit.proof
            && !self.proofs.claim(proof, admit.reserve.now_ms)
        {
            return Response::Replayed;
        }
        self.reserve(&admit.reserve)
    }

    fn expire_reservations(&mut self, key: &LedgerKey, now_ms: u64) {
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, res)| &res.ledger == key && res.expires_at_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.admissions.remove(&id);
            if let Some(res) = self.reservations.remove(&id) {
                self.refund(&res);
            }
        }
    }

    fn refund(&mut self, res: &Reservation) {
        if let Some(ledger) = self.ledgers.get_mut(&res.ledger) {
            ledger.in_flight = ledger.in_flight.saturating_sub(1);
            if ledger.window_start_ms == res.window_start_ms {
                ledger.used = ledger.used.saturating_sub(1);
            }
        }
    }

    /// Whether toggle `name` is on at `now_ms` (an expired toggle reads as off).
    pub fn toggle_enabled(&self, name: &str, now_ms: u64) -> bool {
        self.toggles
            .get(name)
            .is_some_and(|t| t.enabled && t.expires_at_ms.is_none_or(|exp| now_ms < exp))
    }

    /// Undecided approvals requested by `tenant` that have not expired at `now_ms` (expired ones
    /// may still sit in the state until the next request prunes them; they never count).
    pub fn pending_approvals(&self, tenant: &str, now_ms: u64) -> usize {
        self.approvals
            .values()
            .filter(|a| {
                a.decision.is_none()
                    && now_ms < a.expires_at_ms
                    && approval_tenant(&a.requested_by) == tenant
            })
            .count()
    }

    fn prune_approvals(&mut self, now_ms: u64) {
        self.approvals.retain(|_, a| {
            now_ms < a.expires_at_ms
                && a.decision
                    .as_ref()
                    .is_none_or(|d| d.verdict == Verdict::Approved)
        });
    }

    /// Whether `subject` has an approval that is approved and unexpired at `now_ms`.
    pub fn approved(&self, subject: &str, now_ms: u64) -> bool {
        self.approvals.values().any(|a| {
            a.subject == subject
                && now_ms < a.expires_at_ms
                && a.decision
                    .as_ref()
                    .is_some_and(|d| d.verdict == Verdict::Approved)
        })
    }
}

/// The most undecided approvals one tenant may have in the replicated state at once: with
/// reasons of at most 500 bytes, a tenant holds at most ~32 KiB of approvals (`docs/security.md`).
pub const MAX_PENDING_APPROVALS_PER_TENANT: usize = 32;

/// The tenant of an approval's requester (`subject@tenant`, as the node writes it).
pub fn approval_tenant(requested_by: &str) -> &str {
    requested_by
        .rsplit_once('@')
        .map_or(requested_by, |(_, tenant)| tenant)
}

fn key_transition_allowed(from: KeyState, to: KeyState) -> bool {
    matches!(
        (from, to),
        (KeyState::Active, KeyState::Retired)
            | (KeyState::Active, KeyState::Revoked)
            | (KeyState::Retired, KeyState::Revoked)
            | (KeyState::Standby, KeyState::Active)
            | (KeyState::Standby, KeyState::Retired)
            | (KeyState::Standby, KeyState::Revoked)
    )
}

/// `State` as formats 1 and 2 encoded it: without threshold groups (added in format v3).
#[derive(Deserialize)]
pub(crate) struct StateV2 {
    ledgers: BTreeMap<LedgerKey, Ledger>,
    reservations: BTreeMap<String, Reservation>,
    audit_tail: Option<AuditTail>,
    keys: BTreeMap<String, KeyEntry>,
    toggles: BTreeMap<String, Toggle>,
    approvals: BTreeMap<String, Approval>,
}

impl From<StateV2> for State {
    fn from(old: StateV2) -> State {
        State {
            ledgers: old.ledgers.into(),
            reservations: old.reservations.into(),
            audit_tail: old.audit_tail,
            keys: old.keys.into(),
            toggles: old.toggles.into(),
            approvals: old.approvals.into(),
            threshold_groups: Tracked::default(),
            proofs: ProofSet::default(),
            admissions: BTreeMap::new(),
            term: 0,
            log: crate::log_tree::LogTree::default(),
        }
    }
}

//! The replicated state and its pure, deterministic `apply`.
//!
//! `apply` does no I/O, reads no clock and never signs. It returns the answer for the proposer
//! and the audit records the command produced; the storage layer persists both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::command::{
    AdmissionEvidence, Approval, ApprovalDecision, Command, KeyEntry, KeyState, Response,
    ThresholdGroup, Toggle,
};
pub use crate::tracked::Tracked;

mod changes;
mod config;
mod once;
mod proofs;
mod quota;

pub use changes::StateChanges;
use config::key_transition_allowed;
pub use config::{MAX_PENDING_APPROVALS_PER_TENANT, approval_tenant};
pub use proofs::{Claim, ClaimStatus, ProofChange, ProofSet};

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

//! `apply` for configuration changes (all or nothing), toggles, approvals and key-state
//! transitions.

use super::State;
use crate::audit::{AuditDraft, AuditRecord};
use crate::command::{Command, KeyState, Response, Verdict};

impl State {
    /// All or nothing: a refused command rolls the whole change back. Configuration changes are
    /// rare and never touch the one-time proofs, so the rollback copy leaves those out.
    pub(super) fn configure(
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

    pub(super) fn prune_approvals(&mut self, now_ms: u64) {
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

pub(super) fn key_transition_allowed(from: KeyState, to: KeyState) -> bool {
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

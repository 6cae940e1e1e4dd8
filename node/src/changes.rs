//! Changes to the replicated configuration (PoE bypass, release allowlist and approvals, the
//! key registry) as typed requests.
//!
//! The receiving node authenticates the caller and checks what only it can (a tenant's PoE, a
//! private key in place), then forwards a [`ConfigChange`] — *what* to change, never a list of
//! commands — to the leader. The leader alone turns it into commands with [`plan`], a pure
//! function of its applied state, its clock and the request, and proposes them together with
//! the change's audit record as one `Command::Configure` entry: the state machine applies the
//! commands all or nothing and appends the record only if they applied, so no leader change or
//! overload can leave a change without its record. A threshold key's group is never taken from
//! a peer: the leader plans those changes only with the group its own key generation produced.

use serde::{Deserialize, Serialize};
use stella_signer::PublicKey;
use stella_state::command::{Approval, KeyEntry, KeyState, ThresholdGroup, Toggle, Verdict};
use stella_state::{AuditDraft, Command, State};

use crate::Error;
use crate::admission::provenance::allow_toggle;
use crate::admission::{BYPASS_TOGGLE, Caller};
use crate::clock::rfc3339_ms;
use crate::pipeline::{self, Configured};

mod keys;

use keys::{key_audit, promotion, registered, standby_of, standby_registered};

/// The longest an emergency bypass may be switched on for in one go.
pub const MAX_BYPASS_SECONDS: u64 = 7 * 24 * 3600;
/// The longest a release approval may stay open.
pub const MAX_APPROVAL_SECONDS: u64 = 90 * 24 * 3600;

/// A change and who asked for it, as a receiving node forwards it to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    pub tenant: String,
    pub subject: String,
    pub issuer: String,
    pub request_id: String,
    pub request: ChangeRequest,
}

impl ConfigChange {
    pub fn new(caller: &Caller, request_id: &str, request: ChangeRequest) -> ConfigChange {
        ConfigChange {
            tenant: caller.tenant.clone(),
            subject: caller.subject.clone(),
            issuer: caller.issuer.clone(),
            request_id: request_id.to_owned(),
            request,
        }
    }

    fn caller(&self) -> Caller {
        Caller {
            tenant: self.tenant.clone(),
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            scopes: Vec::new(),
        }
    }

    fn actor(&self) -> String {
        format!("{}@{}", self.subject, self.tenant)
    }
}

/// What to change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ChangeRequest {
    PoeBypass {
        enabled: bool,
        reason: String,
        expires_in_seconds: Option<u64>,
    },
    Allowlist {
        digest: String,
        allowed: bool,
        reason: String,
    },
    RequestApproval {
        approval_id: String,
        digest: String,
        reason: String,
        expires_in_seconds: u64,
    },
    DecideApproval {
        approval_id: String,
        verdict: Verdict,
        reason: String,
    },
    /// A key whose private half this node found in place (file or PKCS#11 label `source`).
    RegisterKey {
        tenant: String,
        plan: String,
        source: String,
        public_key_pem: String,
        rotate: bool,
        /// Register as the tenant/plan's standby (fallback) key instead of an active one.
        #[serde(default)]
        standby: bool,
        reason: String,
    },
    RevokeKey {
        key_id: String,
        reason: String,
    },
    /// A new threshold key by a distributed key generation the leader drives; holders: these
    /// voters (empty: all).
    CreateThresholdKey {
        tenant: String,
        plan: String,
        suite: stella_signer::threshold::SuiteId,
        min_signers: u16,
        nodes: Vec<u64>,
        rotate: bool,
        reason: String,
    },
    /// New shares of a threshold key among these holders (empty: every voting holder).
    RefreshThresholdKey {
        key_id: String,
        nodes: Vec<u64>,
        reason: String,
    },
}

impl ChangeRequest {
    /// Whether the change needs a key generation on the leader first.
    pub fn is_key_generation(&self) -> bool {
        matches!(
            self,
            ChangeRequest::CreateThresholdKey { .. } | ChangeRequest::RefreshThresholdKey { .. }
        )
    }
}

/// The commands and audit record the leader proposes for a change, in one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub commands: Vec<Command>,
    pub audit: AuditDraft,
    /// The change's subject: a key id or approval id, when it has one.
    pub subject: Option<String>,
    /// Keys a rotation retires.
    pub retired: Vec<String>,
}

/// The leader's decision: what `change` means against its applied `state` at `now_ms`.
/// `generated` is the group the leader's own key generation produced, for exactly the changes
/// that need one ([`ChangeRequest::is_key_generation`]).
pub fn plan(
    state: &State,
    change: &ConfigChange,
    generated: Option<&ThresholdGroup>,
    now_ms: u64,
    time: String,
) -> Result<Planned, Error> {
    if change.request.is_key_generation() != generated.is_some() {
        return Err(Error::InvalidRequest(
            "a threshold key change is made only by the leader's own key generation".into(),
        ));
    }
    let caller = change.caller();
    let actor = change.actor();
    let draft = |subject_digests: Vec<String>, tag: &str, reason: String| {
        pipeline::configured_draft(Configured {
            time: time.clone(),
            request_id: &change.request_id,
            caller: &caller,
            subject_digests,
            state: tag,
            reason,
        })
    };
    let planned = |commands, audit, subject: Option<&str>| Planned {
        commands,
        audit,
        subject: subject.map(str::to_owned),
        retired: Vec::new(),
    };
    match &change.request {
        ChangeRequest::PoeBypass {
            enabled,
            reason,
            expires_in_seconds,
        } => {
            let reason = pipeline::operator_reason(reason)?;
            let expires_at_ms = match (enabled, expires_in_seconds) {
                (true, Some(s)) if (1..=MAX_BYPASS_SECONDS).contains(s) => {
                    Some(now_ms.saturating_add(s * 1000))
                }
                (true, _) => {
                    return Err(Error::InvalidRequest(format!(
                        "an emergency bypass must expire: expiresInSeconds between 1 and {MAX_BYPASS_SECONDS}"
                    )));
                }
                (false, _) => None,
            };
            let toggle = Toggle {
                name: BYPASS_TOGGLE.into(),
                enabled: *enabled,
                reason: reason.clone(),
                actor,
                set_ms: now_ms,
                expires_at_ms,
            };
            let (tag, text) = match expires_at_ms {
                Some(exp) => (
                    "bypass_on",
                    format!("{BYPASS_TOGGLE} on until {}: {reason}", rfc3339_ms(exp)),
                ),
                None => ("bypass_off", format!("{BYPASS_TOGGLE} off: {reason}")),
            };
            Ok(planned(
                vec![Command::SetToggle(toggle)],
                draft(Vec::new(), tag, text),
                None,
            ))
        }
        ChangeRequest::Allowlist {
            digest,
            allowed,
            reason,
        } => {
            let digest = digest_of(digest)?;
            let reason = pipeline::operator_reason(reason)?;
            let toggle = Toggle {
                name: allow_toggle(&digest),
                enabled: *allowed,
                reason: reason.clone(),
                actor,
                set_ms: now_ms,
                expires_at_ms: None,
            };
            let (tag, verb) = if *allowed {
                ("release_allowed", "allowlisted")
            } else {
                ("release_disallowed", "removed from the allowlist")
            };
            let text = format!("scanner image {digest} {verb}: {reason}");
            Ok(planned(
                vec![Command::SetToggle(toggle)],
                draft(vec![digest], tag, text),
                None,
            ))
        }
        ChangeRequest::RequestApproval {
            approval_id,
            digest,
            reason,
            expires_in_seconds,
        } => {
            let digest = digest_of(digest)?;
            let reason = pipeline::operator_reason(reason)?;
            if !(1..=MAX_APPROVAL_SECONDS).contains(expires_in_seconds) {
                return Err(Error::InvalidRequest(format!(
                    "expiresInSeconds must be between 1 and {MAX_APPROVAL_SECONDS}"
                )));
            }
            // The receiving node names the approval; the leader only checks the name's shape.
            if !approval_id.starts_with("apr-") || approval_id.len() > 64 {
                return Err(Error::InvalidRequest("a malformed approval id".into()));
            }
            let expires_at_ms = now_ms.saturating_add(expires_in_seconds * 1000);
            let approval = Approval {
                approval_id: approval_id.clone(),
                subject: digest.clone(),
                requested_by: actor,
                reason: reason.clone(),
                requested_ms: now_ms,
                expires_at_ms,
                decision: None,
            };
            let text = format!(
                "approval {approval_id} requested for scanner image {digest} until {}: {reason}",
                rfc3339_ms(expires_at_ms)
            );
            Ok(planned(
                vec![Command::RequestApproval(approval)],
                draft(vec![digest], "release_approval_requested", text),
                Some(approval_id),
            ))
        }
        ChangeRequest::DecideApproval {
            approval_id,
            verdict,
            reason,
        } => {
            let reason = pipeline::operator_reason(reason)?;
            let subject = state
                .approvals
                .get(approval_id)
                .map(|a| a.subject.clone())
                .ok_or_else(|| Error::InvalidRequest(format!("no approval `{approval_id}`")))?;
            let word = match verdict {
                Verdict::Approved => "approved",
                Verdict::Denied => "denied",
            };
            let text =
                format!("approval {approval_id} {word} for scanner image {subject}: {reason}");
            Ok(planned(
                vec![Command::DecideApproval {
                    approval_id: approval_id.clone(),
                    verdict: *verdict,
                    actor,
                    reason,
                    now_ms,
                }],
                draft(vec![subject], "release_approval_decided", text),
                Some(approval_id),
            ))
        }
        ChangeRequest::RegisterKey {
            tenant,
            plan,
            source,
            public_key_pem,
            rotate,
            standby,
            reason,
        } => {
            let reason = pipeline::operator_reason(reason)?;
            if tenant.is_empty() || plan.is_empty() || !crate::keys::valid_source(source) {
                return Err(Error::InvalidRequest(
                    "tenant, plan and a file, pkcs11:<label> or kms:<key ARN> source are required"
                        .into(),
                ));
            }
            // The key id is the leader's own reading of the key, never a peer's claim.
            let public_key = PublicKey::from_pem(public_key_pem)
                .map_err(|e| Error::InvalidRequest(format!("publicKeyPem: {e}")))?;
            if *standby && *rotate {
                return Err(Error::InvalidRequest(
                    "a standby key is registered next to the active keys; rotate to it later to promote it".into(),
                ));
            }
            if *rotate && let Some(promoted) = standby_of(state, tenant, plan, &public_key) {
                return Ok(promotion(state, &actor, &draft, promoted, &reason, now_ms));
            }
            let entry = KeyEntry {
                key_id: public_key.key_id(),
                owner_tenant: tenant.clone(),
                plan: plan.clone(),
                source: source.clone(),
                algorithm: "ECDSA_P256_SHA256".into(),
                public_key_pem: public_key.to_pem(),
                state: if *standby {
                    KeyState::Standby
                } else {
                    KeyState::Active
                },
                created_ms: now_ms,
                updated_ms: now_ms,
                reason: reason.clone(),
            };
            if *standby {
                return Ok(standby_registered(state, &actor, &draft, entry, now_ms));
            }
            Ok(registered(
                state,
                &actor,
                entry.clone(),
                Command::RegisterKey(entry),
                *rotate,
                now_ms,
                |retired| {
                    key_audit(
                        &draft,
                        "key",
                        tenant,
                        plan,
                        &public_key.key_id(),
                        retired,
                        &reason,
                    )
                },
            ))
        }
        ChangeRequest::CreateThresholdKey {
            tenant,
            plan,
            rotate,
            reason,
            ..
        } => {
            let group =
                generated.ok_or_else(|| Error::InvalidRequest("no key generation".into()))?;
            if tenant.is_empty() || plan.is_empty() {
                return Err(Error::InvalidRequest("tenant and plan are required".into()));
            }
            let reason = pipeline::operator_reason(reason)?;
            let group_key = stella_signer::threshold::GroupKey::from_bytes(
                &group.public_key_package,
            )
            .map_err(|e| Error::Unavailable(format!("the key generation's group key: {e}")))?;
            let public_key = group_key.public_key();
            let entry = KeyEntry {
                key_id: public_key.key_id(),
                owner_tenant: tenant.clone(),
                plan: plan.clone(),
                source: crate::keys::THRESHOLD_SOURCE.into(),
                algorithm: group_key.suite().algorithm().to_string(),
                public_key_pem: public_key.to_pem(),
                state: KeyState::Active,
                created_ms: now_ms,
                updated_ms: now_ms,
                reason: reason.clone(),
            };
            let holders: Vec<u64> = group.holders.iter().map(|(_, node)| *node).collect();
            let what = format!(
                "{}-of-{} threshold key on nodes {holders:?}",
                group.min_signers,
                holders.len()
            );
            let register = Command::RegisterThresholdKey {
                entry: entry.clone(),
                group: group.clone(),
            };
            Ok(registered(
                state,
                &actor,
                entry,
                register,
                *rotate,
                now_ms,
                |retired| {
                    key_audit(
                        &draft,
                        &what,
                        tenant,
                        plan,
                        &public_key.key_id(),
                        retired,
                        &reason,
                    )
                },
            ))
        }
        ChangeRequest::RefreshThresholdKey { key_id, reason, .. } => {
            let group =
                generated.ok_or_else(|| Error::InvalidRequest("no key generation".into()))?;
            let reason = pipeline::operator_reason(reason)?;
            let before = state.threshold_groups.get(key_id).ok_or_else(|| {
                Error::InvalidRequest(format!("`{key_id}` is not a threshold key"))
            })?;
            let kept: Vec<u64> = group.holders.iter().map(|(_, node)| *node).collect();
            let dropped: Vec<u64> = before
                .holders
                .iter()
                .map(|(_, node)| *node)
                .filter(|node| !kept.contains(node))
                .collect();
            let text = format!(
                "threshold key {key_id} refreshed: holders {kept:?}, left out {dropped:?}: {reason}"
            );
            Ok(planned(
                vec![Command::UpdateThresholdGroup {
                    key_id: key_id.clone(),
                    group: group.clone(),
                }],
                draft(Vec::new(), "key_refreshed", text),
                Some(key_id),
            ))
        }
        ChangeRequest::RevokeKey { key_id, reason } => {
            let reason = pipeline::operator_reason(reason)?;
            let tenant = state
                .keys
                .get(key_id)
                .map(|k| k.owner_tenant.clone())
                .ok_or_else(|| Error::InvalidRequest(format!("no key `{key_id}`")))?;
            let text = format!("key {key_id} of {tenant} revoked: {reason}");
            Ok(planned(
                vec![Command::SetKeyState {
                    key_id: key_id.clone(),
                    state: KeyState::Revoked,
                    reason,
                    actor,
                    now_ms,
                }],
                draft(Vec::new(), "key_revoked", text),
                Some(key_id),
            ))
        }
    }
}

pub fn digest_of(text: &str) -> Result<String, Error> {
    stella_release::parse_digest(text).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests;

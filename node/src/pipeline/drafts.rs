//! Audit drafts, free of I/O: what the audit log records of a signing, a refusal, a period's
//! refusals before authentication, and an operator's change.

use stella_state::audit::SignatureRecord;
use stella_state::{AuditDraft, Decision};

use stella_api::SignDsseRequest;

use super::{MODE_KEYFUL, MODE_KEYLESS, POE_UNCHECKED, SigningPlan};
use crate::Error;
use crate::admission::Caller;

/// What goes into the audit log for this request.
pub struct Outcome<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub caller: &'a Caller,
    pub plan: &'a SigningPlan,
    pub key_id: &'a str,
    pub key_source: &'a str,
    pub poe_state: &'a str,
    pub plan_name: &'a str,
    pub provenance: Option<&'a str>,
    pub certificate_serial: Option<String>,
    pub decision: Decision,
    pub reason: String,
    pub bundle_sha256: Option<String>,
    /// Every signature, for a signed response of more than one (empty otherwise).
    pub signatures: Vec<SignatureRecord>,
}

pub fn audit_draft(outcome: Outcome<'_>) -> AuditDraft {
    AuditDraft {
        time: outcome.time,
        request_id: outcome.request_id.to_owned(),
        tenant: outcome.caller.tenant.clone(),
        caller_subject: outcome.caller.subject.clone(),
        issuer: outcome.caller.issuer.clone(),
        subject_digests: outcome.plan.subject_digests.clone(),
        predicate_type: outcome.plan.predicate_type.as_str().to_owned(),
        key_id: outcome.key_id.to_owned(),
        key_source: outcome.key_source.to_owned(),
        signing_mode: outcome.plan.mode.to_owned(),
        poe_state: outcome.poe_state.to_owned(),
        plan: Some(outcome.plan_name.to_owned()),
        provenance: outcome.provenance.map(str::to_owned),
        certificate_serial: outcome.certificate_serial,
        decision: outcome.decision,
        reason: outcome.reason,
        bundle_sha256: outcome.bundle_sha256,
        statement_sha256: Some(outcome.plan.statement_sha256.clone()),
        signatures: outcome.signatures,
    }
}

/// A request refused by admission (token, binding, entitlement, quota, size): what is known
/// of it goes into the audit log with the refusal's stable code.
pub struct Refusal<'a> {
    pub time: String,
    pub request_id: &'a str,
    /// Absent when the caller could not be authenticated.
    pub caller: Option<&'a Caller>,
    pub request: Option<&'a SignDsseRequest>,
    pub poe_state: &'a str,
    pub plan_name: Option<&'a str>,
    pub error: &'a Error,
}

pub fn refusal_draft(refusal: Refusal<'_>) -> AuditDraft {
    let (tenant, caller_subject, issuer) = match refusal.caller {
        Some(c) => (c.tenant.clone(), c.subject.clone(), c.issuer.clone()),
        None => (String::new(), String::new(), String::new()),
    };
    let subject_digests = refusal
        .request
        .map(|r| {
            r.subject
                .iter()
                .filter_map(|s| s.digest.get("sha256"))
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|h| format!("sha256:{}", h.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    AuditDraft {
        time: refusal.time,
        request_id: refusal.request_id.to_owned(),
        tenant,
        caller_subject,
        issuer,
        subject_digests,
        predicate_type: refusal
            .request
            .map(|r| r.predicate_type.chars().take(200).collect())
            .unwrap_or_default(),
        key_id: String::new(),
        key_source: String::new(),
        signing_mode: refusal
            .request
            .and_then(|r| r.options.signing_mode.clone())
            .filter(|m| m == MODE_KEYLESS)
            .unwrap_or_else(|| MODE_KEYFUL.to_owned()),
        poe_state: refusal.poe_state.to_owned(),
        plan: refusal.plan_name.map(str::to_owned),
        provenance: None,
        certificate_serial: None,
        decision: Decision::Denied,
        reason: format!(
            "{}: {}",
            refusal.error.code().as_str(),
            crate::error::clip_to(&refusal.error.to_string(), crate::error::MAX_DETAIL_BYTES)
        ),
        bundle_sha256: None,
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

/// The audit record of one period's refusals before authentication on one node: no caller, no
/// tenant, the counts by code and source in the reason.
pub fn preauth_draft(
    time: String,
    request_id: &str,
    summary: &crate::admission::preauth::PreAuthSummary,
) -> AuditDraft {
    AuditDraft {
        time,
        request_id: request_id.to_owned(),
        tenant: String::new(),
        caller_subject: String::new(),
        issuer: String::new(),
        subject_digests: Vec::new(),
        predicate_type: String::new(),
        key_id: String::new(),
        key_source: String::new(),
        signing_mode: String::new(),
        poe_state: POE_UNCHECKED.to_owned(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Denied,
        reason: crate::error::clip_to(&summary.reason(), crate::error::MAX_DETAIL_BYTES),
        bundle_sha256: None,
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

/// The reason an operator gives for a change: required, at most 500 characters, trimmed.
pub fn operator_reason(text: &str) -> Result<String, Error> {
    let reason = text.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(Error::InvalidRequest(
            "a reason of 1 to 500 characters is required".into(),
        ));
    }
    Ok(reason.to_owned())
}

/// An operator's change to the replicated configuration, as the audit log records it.
pub struct Configured<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub caller: &'a Caller,
    /// Scanner image digests the change is about, if any.
    pub subject_digests: Vec<String>,
    /// A short tag of what changed (`bypass_on`, `release_allowed`, …), kept in `poeState`.
    pub state: &'a str,
    pub reason: String,
}

pub fn configured_draft(change: Configured<'_>) -> AuditDraft {
    AuditDraft {
        time: change.time,
        request_id: change.request_id.to_owned(),
        tenant: change.caller.tenant.clone(),
        caller_subject: change.caller.subject.clone(),
        issuer: change.caller.issuer.clone(),
        subject_digests: change.subject_digests,
        predicate_type: String::new(),
        key_id: String::new(),
        key_source: String::new(),
        signing_mode: String::new(),
        poe_state: change.state.to_owned(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Configured,
        reason: change.reason,
        bundle_sha256: None,
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

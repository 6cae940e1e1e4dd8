//! Operator workflows for scanner release trust: the replicated allowlist, manual approvals
//! (request → approve/deny with a reason, expiring), and the trust report behind
//! `GET /api/v1/signer/verify/referrers`. Every change is audited (`decision: configured`).

use stella_api::{
    AllowlistChange, ApprovalDecision, ApprovalRequest, ReferrersReport, ReleaseChange,
    ReleaseSignature,
};
use stella_state::command::Verdict;
use stella_state::machine::MAX_PENDING_APPROVALS_PER_TENANT;

use crate::Error;
use crate::admission::optok::SCOPE_ADMIN;
use crate::admission::provenance::{self, untrusted_reason};
use crate::admission::{Authenticated, Caller};
use crate::changes::{ChangeRequest, ConfigChange, MAX_APPROVAL_SECONDS, digest_of};
use crate::pipeline;
use crate::signing::SigningService;

/// Adds a digest to the allowlist, or removes it.
pub async fn allow(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    change: AllowlistChange,
) -> Result<ReleaseChange, Error> {
    let request = ChangeRequest::Allowlist {
        digest: digest_of(&change.image_digest)?,
        allowed: change.allowed,
        reason: pipeline::operator_reason(&change.reason)?,
    };
    let applied = service
        .configure(ConfigChange::new(caller, request_id, request))
        .await?;
    Ok(ReleaseChange {
        audit_id: applied.audit_id,
        approval_id: None,
    })
}

/// Records a request for a manual approval; an operator decides it later.
/// A tenant (not an operator) must show a valid proof of entitlement, and may have at most
/// `MAX_PENDING_APPROVALS_PER_TENANT` undecided approvals (the state machine enforces the bound;
/// this node checks it first to answer with a clear 429).
pub async fn request_approval(
    service: &SigningService,
    authn: &Authenticated,
    client_cert_sha256: Option<&str>,
    request_id: &str,
    request: ApprovalRequest,
) -> Result<ReleaseChange, Error> {
    let caller = &authn.caller;
    let digest = digest_of(&request.image_digest)?;
    let reason = pipeline::operator_reason(&request.reason)?;
    if !(1..=MAX_APPROVAL_SECONDS).contains(&request.expires_in_seconds) {
        return Err(Error::InvalidRequest(format!(
            "expiresInSeconds must be between 1 and {MAX_APPROVAL_SECONDS}"
        )));
    }
    if !caller.has_scope(SCOPE_ADMIN) {
        service
            .admission()
            .entitle(
                authn,
                request.poe.as_ref(),
                client_cert_sha256,
                service.poe_bypass_on(),
            )
            .await?;
    }
    let now_ms = service.now_ms();
    let pending = service
        .cluster()
        .view()
        .with_state(|s| s.pending_approvals(&caller.tenant, now_ms));
    if pending >= MAX_PENDING_APPROVALS_PER_TENANT {
        return Err(Error::too_many_pending_approvals());
    }
    let approval_id = format!("apr-{}", stella_api::dpop::random_id());
    let change = ChangeRequest::RequestApproval {
        approval_id: approval_id.clone(),
        digest,
        reason,
        expires_in_seconds: request.expires_in_seconds,
    };
    let applied = service
        .configure(ConfigChange::new(caller, request_id, change))
        .await?;
    Ok(ReleaseChange {
        audit_id: applied.audit_id,
        approval_id: Some(approval_id),
    })
}

/// Approves or denies a pending approval (an operator, scope `signer.admin`).
pub async fn decide(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    decision: ApprovalDecision,
) -> Result<ReleaseChange, Error> {
    let verdict = match decision.verdict.as_str() {
        "approved" => Verdict::Approved,
        "denied" => Verdict::Denied,
        other => {
            return Err(Error::InvalidRequest(format!(
                "verdict `{}`: use approved or denied",
                crate::error::clip(other)
            )));
        }
    };
    let request = ChangeRequest::DecideApproval {
        approval_id: decision.approval_id.clone(),
        verdict,
        reason: pipeline::operator_reason(&decision.reason)?,
    };
    let applied = service
        .configure(ConfigChange::new(caller, request_id, request))
        .await?;
    Ok(ReleaseChange {
        audit_id: applied.audit_id,
        approval_id: Some(decision.approval_id),
    })
}

/// The trust verdict for a digest: replicated allowlist/approval first, then a fresh look at
/// the registry (this is an explicit question, so no cached answer).
pub async fn report(
    service: &SigningService,
    image_digest: &str,
) -> Result<ReferrersReport, Error> {
    let digest = digest_of(image_digest)?;
    let checker = service.provenance().ok_or_else(|| {
        Error::InvalidRequest("release provenance is not configured on this signer".into())
    })?;
    let now_ms = service.now_ms();
    let replicated = service
        .cluster()
        .view()
        .with_state(|s| provenance::replicated_path(s, &digest, now_ms));
    let verdict = checker.fetch(&digest).await?;
    let signatures = verdict
        .signatures
        .iter()
        .map(|s| ReleaseSignature {
            kind: s.kind.clone(),
            manifest_digest: s.manifest_digest.clone(),
            key_id: s.key_id.clone(),
            verified: s.verified,
            reason: s.reason.clone(),
        })
        .collect();
    let (trusted, path, reason) = match (&replicated, verdict.signer()) {
        (Some(path), _) => (
            true,
            Some(path.describe()),
            format!("trusted by {}", path.describe()),
        ),
        (None, Some(key_id)) => (
            true,
            Some(format!("signature:{key_id}")),
            format!("release signature by trusted key {key_id}"),
        ),
        (None, None) => (false, None, untrusted_reason(&digest, &verdict)),
    };
    Ok(ReferrersReport {
        image_digest: digest,
        trusted,
        path,
        reason,
        signatures,
        problems: verdict.problems,
    })
}

//! Release trust: the referrers report (any signer scope) and the operator workflows.

use actix_web::HttpRequest;
use actix_web::web::{Data, Json, Payload, Query};
use serde::Deserialize;
use stella_api::{ReferrersReport, ReleaseChange};

use super::context::current_request_id;
use super::{ApiProblem, AppState, body};
use crate::admission::optok::{SCOPE_ADMIN, SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_SIGN};
use crate::release_trust;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReferrersQuery {
    /// `sha256:<hex>` of the scanner image.
    image_digest: String,
}

/// `GET /api/v1/signer/verify/referrers?imageDigest=sha256:…`
#[utoipa::path(get, operation_id = "getReferrers", path = stella_api::REFERRERS_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"]), ("optok" = ["signer.admin"])), tag = "release trust", params(ReferrersQuery),
    responses((status = 200, description = "The trust verdict for a scanner image and the release signatures found for it", body = ReferrersReport)))]
pub async fn referrers(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<ReferrersQuery>,
) -> Result<Json<ReferrersReport>, ApiProblem> {
    let scopes = [SCOPE_SIGN, SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_ADMIN];
    super::authenticate_with(&state, &req, &scopes).await?;
    Ok(Json(
        release_trust::report(&state.signing, &query.image_digest).await?,
    ))
}

/// `POST /api/v1/signer/admin/releases/allowlist` (scope `signer.admin`)
#[utoipa::path(post, operation_id = "changeAllowlist", path = stella_api::RELEASE_ALLOWLIST_PATH, security(("optok" = ["signer.admin"])), tag = "release trust", summary = "Add or remove a digest on the release allowlist (scope `signer.admin`)",
    request_body(content = stella_api::AllowlistChange, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = ReleaseChange)))]
pub async fn allow(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<ReleaseChange>, ApiProblem> {
    let caller = super::authenticate_with(&state, &req, &[SCOPE_ADMIN]).await?;
    let (change, _) = body::read_json(&req, payload, &state.body).await?;
    let id = current_request_id().unwrap_or_default();
    Ok(Json(
        release_trust::allow(&state.signing, &caller, &id, change).await?,
    ))
}

/// `POST /api/v1/signer/admin/releases/approvals` (a tenant or an operator asks)
#[utoipa::path(post, operation_id = "requestApproval", path = stella_api::RELEASE_APPROVALS_PATH, security(("optok" = ["signer.sign"]), ("optok" = ["signer.admin"])), tag = "release trust", summary = "Ask for a manual approval of a scanner digest",
    request_body(content = stella_api::ApprovalRequest, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = ReleaseChange)))]
pub async fn request_approval(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<ReleaseChange>, ApiProblem> {
    let (authn, facts) = super::authenticated(&state, &req, &[SCOPE_SIGN, SCOPE_ADMIN]).await?;
    let (request, _) = body::read_json(&req, payload, &state.body).await?;
    let id = current_request_id().unwrap_or_default();
    let client_cert = facts.client_cert_sha256.as_deref();
    Ok(Json(
        release_trust::request_approval(&state.signing, &authn, client_cert, &id, request).await?,
    ))
}

/// `POST /api/v1/signer/admin/releases/approvals/decision` (scope `signer.admin`)
#[utoipa::path(post, operation_id = "decideApproval", path = stella_api::RELEASE_DECISIONS_PATH, security(("optok" = ["signer.admin"])), tag = "release trust", summary = "Approve or deny a pending approval (scope `signer.admin`)",
    request_body(content = stella_api::ApprovalDecision, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = ReleaseChange)))]
pub async fn decide(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<ReleaseChange>, ApiProblem> {
    let caller = super::authenticate_with(&state, &req, &[SCOPE_ADMIN]).await?;
    let (decision, _) = body::read_json(&req, payload, &state.body).await?;
    let id = current_request_id().unwrap_or_default();
    Ok(Json(
        release_trust::decide(&state.signing, &caller, &id, decision).await?,
    ))
}

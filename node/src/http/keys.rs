//! The key registry: listing (tenants see their own keys) and the operator's changes.

use actix_web::HttpRequest;
use actix_web::web::{Data, Json, Payload};
use stella_api::{KeyChange, KeyInfo};

use super::context::current_request_id;
use super::{ApiProblem, AppState, body};
use crate::admission::Caller;
use crate::admission::optok::{SCOPE_ADMIN, SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_SIGN};
use crate::key_admin;

/// `GET /api/v1/signer/keys`
#[utoipa::path(get, operation_id = "listKeys", path = stella_api::KEYS_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"]), ("optok" = ["signer.admin"])), tag = "keys",
    responses((status = 200, description = "The keys the caller may see (a tenant: its own)", body = Vec<KeyInfo>)))]
pub async fn list(
    state: Data<AppState>,
    req: HttpRequest,
) -> Result<Json<Vec<KeyInfo>>, ApiProblem> {
    let scopes = [SCOPE_SIGN, SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_ADMIN];
    let caller = super::authenticate_with(&state, &req, &scopes).await?;
    Ok(Json(key_admin::list(&state.signing, &caller)))
}

/// `GET /api/v1/signer/trust`
#[utoipa::path(get, operation_id = "getTrustMaterial", path = stella_api::TRUST_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"]), ("optok" = ["signer.admin"])), tag = "keys",
    responses((status = 200, description = "What offline verifiers need: keys, CA and TSA chains, the audit log's checkpoint key", body = stella_api::TrustMaterial)))]
pub async fn trust(
    state: Data<AppState>,
    req: HttpRequest,
) -> Result<Json<stella_api::TrustMaterial>, ApiProblem> {
    let scopes = [SCOPE_SIGN, SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_ADMIN];
    let caller = super::authenticate_with(&state, &req, &scopes).await?;
    let mut trust = key_admin::trust(&state.signing, &caller, &state.keyless_trust);
    trust.audit_log = state.audit_log.clone();
    Ok(Json(trust))
}

/// An operator's key change (scope `signer.admin`): authenticated, its JSON body read (bad
/// bodies answer problem+json), handed to `change` with the caller and the request id.
async fn key_change<R: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: Payload,
    change: impl AsyncFnOnce(&Caller, &str, R) -> Result<KeyChange, crate::Error>,
) -> Result<Json<KeyChange>, ApiProblem> {
    let caller = super::authenticate_with(state, req, &[SCOPE_ADMIN]).await?;
    let (request, _) = body::read_json(req, payload, &state.body).await?;
    let id = current_request_id().unwrap_or_default();
    Ok(Json(change(&caller, &id, request).await?))
}

/// `POST /api/v1/signer/admin/keys`
#[utoipa::path(post, operation_id = "registerKey", path = stella_api::KEYS_ADMIN_PATH, security(("optok" = ["signer.admin"])), tag = "keys", summary = "Register a key (scope `signer.admin`)",
    request_body(content = stella_api::RegisterKeyRequest, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = KeyChange)))]
pub async fn register(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<KeyChange>, ApiProblem> {
    let signing = &state.signing;
    key_change(&state, &req, payload, async |caller, id, request| {
        key_admin::register(signing, caller, id, request).await
    })
    .await
}

/// `POST /api/v1/signer/admin/keys/threshold`
#[utoipa::path(post, operation_id = "createThresholdKey", path = stella_api::KEYS_THRESHOLD_PATH, security(("optok" = ["signer.admin"])), tag = "keys", summary = "Generate a threshold key across the nodes (scope `signer.admin`)",
    request_body(content = stella_api::CreateThresholdKeyRequest, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = KeyChange)))]
pub async fn create_threshold(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<KeyChange>, ApiProblem> {
    let signing = &state.signing;
    key_change(&state, &req, payload, async |caller, id, request| {
        key_admin::create_threshold(signing, caller, id, request).await
    })
    .await
}

/// `POST /api/v1/signer/admin/keys/threshold/refresh`
#[utoipa::path(post, operation_id = "refreshThresholdKey", path = stella_api::KEYS_THRESHOLD_REFRESH_PATH, security(("optok" = ["signer.admin"])), tag = "keys", summary = "New shares of a threshold key (scope `signer.admin`)",
    request_body(content = stella_api::RefreshThresholdKeyRequest, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = KeyChange)))]
pub async fn refresh_threshold(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<KeyChange>, ApiProblem> {
    let signing = &state.signing;
    key_change(&state, &req, payload, async |caller, id, request| {
        key_admin::refresh_threshold(signing, caller, id, request).await
    })
    .await
}

/// `POST /api/v1/signer/admin/keys/revoke`
#[utoipa::path(post, operation_id = "revokeKey", path = stella_api::KEYS_REVOKE_PATH, security(("optok" = ["signer.admin"])), tag = "keys", summary = "Revoke a key (scope `signer.admin`)",
    request_body(content = stella_api::RevokeKeyRequest, content_type = "application/json"),
    responses((status = 200, description = "The change, committed", body = KeyChange)))]
pub async fn revoke(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<KeyChange>, ApiProblem> {
    let signing = &state.signing;
    key_change(&state, &req, payload, async |caller, id, request| {
        key_admin::revoke(signing, caller, id, request).await
    })
    .await
}

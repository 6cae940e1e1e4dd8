//! Application API (tenants): signing evidence, and signing Export Center manifests.

use std::time::Instant;

use actix_web::HttpRequest;
use actix_web::web::{Data, Json, Payload};
use stella_api::{SignDsseRequest, SignDsseResponse, SignExportRequest, SignExportResponse};

use super::context::{current_request_id, request_facts};
use super::{ApiProblem, AppState, body};
use crate::{Error, telemetry};

/// `POST /api/v1/signer/sign/dsse`
#[utoipa::path(post, operation_id = "signDsse", path = stella_api::SIGN_DSSE_PATH, security(("optok" = ["signer.sign"])), tag = "signing",
    request_body(content = SignDsseRequest, content_type = "application/json"),
    params(super::openapi::IdempotencyKey),
    responses((status = 200, description = "Signed: envelope, bundles and the audit record's place in the log (returned only after the record is committed)", body = SignDsseResponse)))]
pub async fn sign_dsse(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<SignDsseResponse>, ApiProblem> {
    let started = Instant::now();
    let result = sign(&state, &req, payload).await;
    telemetry::record_sign(result.as_ref().map(|_| ()), started.elapsed());
    Ok(Json(result?))
}

async fn sign(
    state: &AppState,
    req: &HttpRequest,
    payload: Payload,
) -> Result<SignDsseResponse, Error> {
    let _permit = state.front_door.enter()?;
    let facts = request_facts(req, &state.base_urls);
    let request_id = current_request_id().unwrap_or_default();
    let authn = state.signing.authenticate(&facts, &request_id).await?;
    let _share = state.front_door.enter_tenant(&authn.caller.tenant)?;
    let (request, bytes) = body::read_json(req, payload, &state.body).await?;
    let request: SignDsseRequest = request;
    state
        .signing
        .sign(&facts, authn, &request_id, request, bytes)
        .await
}

/// `POST /api/v1/signer/sign/export`
#[utoipa::path(post, operation_id = "signExport", path = stella_api::SIGN_EXPORT_PATH, security(("optok" = ["signer.sign"])), tag = "signing",
    request_body(content = SignExportRequest, content_type = "application/json"),
    params(super::openapi::IdempotencyKey),
    responses((status = 200, description = "The manifest + signature tuple (`export.json`, `provenance.json`)", body = SignExportResponse)))]
pub async fn sign_export(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<SignExportResponse>, ApiProblem> {
    let started = Instant::now();
    let result = export(&state, &req, payload).await;
    telemetry::record_sign(result.as_ref().map(|_| ()), started.elapsed());
    Ok(Json(result?))
}

async fn export(
    state: &AppState,
    req: &HttpRequest,
    payload: Payload,
) -> Result<SignExportResponse, Error> {
    let _permit = state.front_door.enter()?;
    let facts = request_facts(req, &state.base_urls);
    let request_id = current_request_id().unwrap_or_default();
    let authn = state.signing.authenticate(&facts, &request_id).await?;
    let _share = state.front_door.enter_tenant(&authn.caller.tenant)?;
    let (tenant, subject) = (authn.caller.tenant.clone(), authn.caller.subject.clone());
    let (request, bytes) = body::read_json::<SignExportRequest>(req, payload, &state.body).await?;
    crate::export::validate(&request.manifest)?;
    let manifest = crate::export::canonical(&request.manifest)?;
    let sign = crate::export::sign_request(&request, &manifest);
    let signature = state
        .signing
        .sign(&facts, authn, &request_id, sign, bytes)
        .await?;
    crate::export::response(
        &request.manifest,
        manifest,
        signature,
        crate::export::Signed {
            tenant: &tenant,
            requested_by: &subject,
            signed_at: state.signing.now_rfc3339(),
        },
    )
}

//! Application API (tenants): signing.

use std::time::Instant;

use actix_web::web::{Data, Json, Payload};
use actix_web::{HttpMessage, HttpRequest};
use stella_api::{SignDsseRequest, SignDsseResponse};

use super::context::RequestContext;
use super::{ApiProblem, AppState, body};
use crate::{Error, telemetry};

/// `POST /api/v1/signer/sign/dsse`
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
    let caller = state.auth.authenticate(
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    )?;
    let request: SignDsseRequest = body::read_json(req, payload, state.max_body_bytes).await?;
    let request_id = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    state.signing.sign(&caller, &request_id, request).await
}

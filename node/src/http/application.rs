//! Application API (tenants): signing.

use actix_web::web::{Data, Json, Payload};
use actix_web::{HttpMessage, HttpRequest};
use stella_api::{SignDsseRequest, SignDsseResponse};

use super::context::RequestContext;
use super::{AppState, ApiProblem, body};

/// `POST /api/v1/signer/sign/dsse`
pub async fn sign_dsse(state: Data<AppState>, req: HttpRequest, payload: Payload) -> Result<Json<SignDsseResponse>, ApiProblem> {
    let caller = state.auth.authenticate(req.headers().get("authorization").and_then(|v| v.to_str().ok()))?;
    let request: SignDsseRequest = body::read_json(&req, payload, state.max_body_bytes).await?;
    let request_id = req.extensions().get::<RequestContext>().map(|c| c.request_id.clone()).unwrap_or_default();
    Ok(Json(state.signing.sign(&caller, &request_id, request).await?))
}

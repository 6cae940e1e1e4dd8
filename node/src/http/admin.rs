//! Operator API (scope `signer.admin`): the PoE emergency bypass toggle.

use actix_web::HttpRequest;
use actix_web::web::{Data, Json, Payload};
use stella_api::{PoeBypassRequest, ToggleStatus};

use super::context::current_request_id;
use super::{ApiProblem, AppState, body};
use crate::admission::optok::SCOPE_ADMIN;

/// `GET /api/v1/signer/admin/poe-bypass`
#[utoipa::path(get, operation_id = "getPoeBypass", path = stella_api::POE_BYPASS_PATH, security(("optok" = ["signer.admin"])), tag = "operations",
    responses((status = 200, description = "The PoE emergency bypass toggle", body = ToggleStatus)))]
pub async fn poe_bypass(
    state: Data<AppState>,
    req: HttpRequest,
) -> Result<Json<ToggleStatus>, ApiProblem> {
    super::authenticate_with(&state, &req, &[SCOPE_ADMIN]).await?;
    Ok(Json(state.signing.poe_bypass()))
}

/// `PUT /api/v1/signer/admin/poe-bypass`
#[utoipa::path(put, operation_id = "setPoeBypass", path = stella_api::POE_BYPASS_PATH, security(("optok" = ["signer.admin"])), tag = "operations",
    request_body(content = PoeBypassRequest, content_type = "application/json"),
    responses((status = 200, description = "The toggle after the change", body = ToggleStatus)))]
pub async fn set_poe_bypass(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> Result<Json<ToggleStatus>, ApiProblem> {
    let caller = super::authenticate_with(&state, &req, &[SCOPE_ADMIN]).await?;
    let (change, _): (PoeBypassRequest, usize) =
        body::read_json(&req, payload, &state.body).await?;
    let request_id = current_request_id().unwrap_or_default();
    Ok(Json(
        state
            .signing
            .set_poe_bypass(&caller, &request_id, change)
            .await?,
    ))
}

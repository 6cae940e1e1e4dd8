//! The audit log as a transparency log: `GET /api/v1/signer/audit/checkpoint` (public, like a
//! CT log's: it reveals only a size and a root), and the inclusion and consistency proofs for
//! callers who may read the audit log. Any node answers from what it has applied.

use actix_web::web::{Data, Json, Query};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use stella_api::{ConsistencyProof, InclusionProof};

use super::{ApiProblem, AppState};
use crate::Error;
use crate::admission::optok::SCOPE_AUDIT_ALL;
use crate::transparency::{self, Target};

/// `GET /api/v1/signer/audit/checkpoint`: the signed note, `text/plain`.
#[utoipa::path(get, operation_id = "getCheckpoint", path = stella_api::AUDIT_CHECKPOINT_PATH, tag = "transparency log", security(()),
    responses((status = 200, description = "The current signed checkpoint: a C2SP tlog-checkpoint in a C2SP signed note (Ed25519)", content_type = "text/plain", body = String)))]
pub async fn checkpoint(state: Data<AppState>) -> Result<HttpResponse, ApiProblem> {
    let note = transparency::current_checkpoint(state.cluster().view())?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(note))
}

/// Exactly one of `index`, `auditId` and `bundleHash`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The record's leaf index (its sequence number − 1).
    index: Option<u64>,
    audit_id: Option<String>,
    /// Hex SHA-256 of a Sigstore bundle the record files.
    bundle_hash: Option<String>,
    /// The tree to prove against (default: the current checkpoint's, which comes along).
    tree_size: Option<u64>,
}

/// `GET /api/v1/signer/audit/proof/inclusion`
#[utoipa::path(get, operation_id = "getInclusionProof", path = stella_api::AUDIT_INCLUSION_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"])), tag = "transparency log", params(InclusionQuery),
    responses((status = 200, description = "The record and its RFC 9162 inclusion proof", body = InclusionProof)))]
pub async fn inclusion(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiProblem> {
    let caller = super::authenticate_reader(&state, &req).await?;
    let q = query.into_inner();
    let target = match (q.index, q.audit_id, q.bundle_hash) {
        (Some(i), None, None) => Target::Index(i),
        (None, Some(id), None) => Target::AuditId(id),
        (None, None, Some(hash)) => Target::BundleHash(hash),
        _ => {
            return Err(Error::InvalidRequest(
                "give exactly one of index, auditId and bundleHash".into(),
            )
            .into());
        }
    };
    let tenant = (!caller.has_scope(SCOPE_AUDIT_ALL)).then_some(caller.tenant.clone());
    let view = state.cluster().view().clone();
    let proof = actix_web::web::block(move || {
        transparency::inclusion(&view, &target, q.tree_size, tenant.as_deref())
    })
    .await
    .map_err(|e| Error::Unavailable(e.to_string()))??;
    Ok(Json(proof))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size (at least 1).
    from: u64,
    /// The newer tree size (at most the current one).
    to: u64,
}

/// `GET /api/v1/signer/audit/proof/consistency?from=N&to=M`
#[utoipa::path(get, operation_id = "getConsistencyProof", path = stella_api::AUDIT_CONSISTENCY_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"])), tag = "transparency log", params(ConsistencyQuery),
    responses((status = 200, description = "The RFC 9162 consistency proof between two tree sizes", body = ConsistencyProof)))]
pub async fn consistency(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiProblem> {
    super::authenticate_reader(&state, &req).await?;
    let view = state.cluster().view().clone();
    let ConsistencyQuery { from, to } = query.into_inner();
    let proof = actix_web::web::block(move || transparency::consistency(&view, from, to))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))??;
    Ok(Json(proof))
}

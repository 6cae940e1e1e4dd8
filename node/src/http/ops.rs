//! Operations endpoints: liveness, readiness, metrics.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json};
use stella_api::Health;

use super::AppState;
use crate::telemetry;

/// `GET /healthz`: the process serves HTTP.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process serves HTTP", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Vec::new(),
    })
}

/// `GET /readyz`: 200 only when this node can serve a signing now (`readiness.rs`); 503 names
/// the failing checks.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "This node can serve a signing now", body = Health),
        (status = 503, description = "Not ready: the failing checks are named", body = Health,
         headers(("retry-after" = u32, description = "Seconds before asking again")))))]
pub async fn readyz(state: Data<AppState>) -> HttpResponse {
    let health = state
        .health
        .report(state.cluster(), state.signing.admission())
        .await;
    if health.status == "ready" {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("retry-after", "1"))
            .json(health)
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    telemetry::record_cluster(&state.cluster().status());
    telemetry::record_log(&state.cluster().view().log_tree(), state.signing.now_ms());
    telemetry::record_front_door(state.front_door.in_flight());
    // `/metrics` is unauthenticated: the gauges read from the state (a pass over every
    // tenant's ledger, under the state's read lock) are refreshed at most once a second,
    // however often anyone scrapes.
    let now_ms = state.signing.now_ms();
    if telemetry::state_refresh_due(now_ms) {
        state.cluster().view().with_state(|applied| {
            telemetry::record_state(
                applied,
                state.signing.admission().plans(),
                now_ms,
                state.signing.poe_bypass_on(),
            )
        });
    }
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

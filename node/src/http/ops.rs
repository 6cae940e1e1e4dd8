//! Operations endpoints: liveness, readiness, metrics.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json};
use stella_api::{Health, HealthCheck};

use super::AppState;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Vec::new(),
    })
}

/// `GET /readyz`: the node can sign (its audit log accepts writes).
pub async fn readyz(state: Data<AppState>) -> HttpResponse {
    let audit_ok = state.signing.audit_healthy();
    let health = Health {
        status: if audit_ok { "ready" } else { "not_ready" }.into(),
        checks: vec![HealthCheck {
            name: "audit_log".into(),
            ok: audit_ok,
            detail: (!audit_ok).then(|| "the audit log failed a write; restart the node".into()),
        }],
    };
    if audit_ok {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

//! Operations endpoints: liveness, readiness, metrics.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json};
use stella_api::{Health, HealthCheck};

use super::AppState;
use crate::telemetry;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Vec::new(),
    })
}

/// `GET /readyz`: the node can sign — it is a cluster member and knows a leader.
pub async fn readyz(state: Data<AppState>) -> HttpResponse {
    let status = state.cluster().status();
    let member =
        status.voters.contains(&status.node_id) || status.learners.contains(&status.node_id);
    let leader_ok = status.leader.is_some();
    let health = Health {
        status: if member && leader_ok {
            "ready"
        } else {
            "not_ready"
        }
        .into(),
        checks: vec![
            HealthCheck {
                name: "cluster_member".into(),
                ok: member,
                detail: (!member)
                    .then(|| "not a member yet: run `stella-signer cluster init` or `join`".into()),
            },
            HealthCheck {
                name: "leader_known".into(),
                ok: leader_ok,
                detail: (!leader_ok).then(|| "no leader: the cluster has no quorum".into()),
            },
        ],
    };
    if member && leader_ok {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    telemetry::record_cluster(&state.cluster().status());
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

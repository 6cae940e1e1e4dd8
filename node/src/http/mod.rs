//! The HTTP edge: routes, extractors, middleware and the problem+json error type. Handlers are
//! a few lines each and call into services; no signing decision is made here.

mod application;
mod body;
mod context;
mod ops;
mod problem;

use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::signing::SigningService;

pub use context::request_context;
pub use problem::ApiProblem;

/// Shared, read-only state every handler receives.
pub struct AppState {
    pub signing: SigningService,
    pub auth: Authenticator,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
}

/// Registers every route. Unknown paths and wrong methods answer problem+json too.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(stella_api::SIGN_DSSE_PATH)
            .route(web::post().to(application::sign_dsse))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(ops::healthz))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(ops::readyz))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(ops::metrics))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .default_service(web::to(problem::not_found));
}

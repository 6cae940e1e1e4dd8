//! The HTTP edge: routes, extractors, middleware and the problem+json error type. Handlers are
//! a few lines each and call into services; no signing decision is made here.

mod admin;
mod application;
mod audit;
pub mod body;
mod cluster;
mod context;
mod keys;
mod log;
mod openapi;
mod ops;
mod peer;
pub mod peer_access;
mod problem;
mod releases;

use actix_web::http::Method;
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;

use stella_cluster::ClusterHandle;
use stella_cluster::network::{RAFT_APPEND, RAFT_SNAPSHOT, RAFT_VOTE};

use crate::key_admin::PEER_KEYGEN;
use crate::signing::{PEER_AUDIT, PEER_CONFIGURE, PEER_SIGN, SigningService};
use crate::threshold;

pub use crate::keyless::KeylessTrust;
pub use context::{ClientCert, request_context, request_facts};
pub use problem::ApiProblem;

/// Shared, read-only state every handler receives.
pub struct AppState {
    pub signing: SigningService,
    pub metrics: PrometheusHandle,
    /// Size and arrival deadline of request bodies.
    pub body: body::BodyLimits,
    /// PEM chains of the Fulcio CAs keyless signatures chain to (published for verifiers).
    pub keyless_trust: KeylessTrust,
    /// Base URLs clients may address this node by (its own and the load balancer's): DPoP
    /// `htu` must be one of them plus the request path. The `Host` header is never trusted.
    pub base_urls: Vec<String>,
    /// What readiness watches besides the cluster (actors, storage, shutdown), and the drill
    /// hook that kills actors.
    pub health: crate::readiness::NodeHealth,
    /// The audit log's checkpoint key, as `stella trust export` publishes it.
    pub audit_log: Option<stella_api::AuditLogKey>,
    /// The bound on signing requests in progress on this node (load shedding).
    pub front_door: crate::shedding::FrontDoor,
}

impl AppState {
    pub fn cluster(&self) -> &ClusterHandle {
        self.signing.cluster()
    }
}

/// Admission for the read APIs (audit, cluster status): a valid, bound OpToken with a signer
/// scope; its DPoP proof is single-use on this node.
async fn authenticate_reader(
    state: &AppState,
    req: &actix_web::HttpRequest,
) -> Result<crate::admission::Caller, crate::Error> {
    use crate::admission::optok::{SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_SIGN};
    authenticate_with(state, req, &[SCOPE_AUDIT, SCOPE_AUDIT_ALL, SCOPE_SIGN]).await
}

/// A valid, bound OpToken with one of `scopes`; its DPoP proof is single-use on this node.
async fn authenticate_with(
    state: &AppState,
    req: &actix_web::HttpRequest,
    scopes: &[&str],
) -> Result<crate::admission::Caller, crate::Error> {
    Ok(authenticated(state, req, scopes).await?.0.caller)
}

/// As [`authenticate_with`], keeping the token and the request facts (for a PoE check).
async fn authenticated(
    state: &AppState,
    req: &actix_web::HttpRequest,
    scopes: &[&str],
) -> Result<
    (
        crate::admission::Authenticated,
        crate::admission::RequestFacts,
    ),
    crate::Error,
> {
    let admission = state.signing.admission();
    let facts = request_facts(req, &state.base_urls);
    let authn = admission.authenticate(&facts, scopes).await?;
    if let Some(proof) = &authn.proof {
        admission.claim_locally(proof)?;
    }
    Ok((authn, facts))
}

/// Registers every route. Unknown paths and wrong methods answer problem+json too.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // A malformed query string (e.g. `?limit=ten` on the audit API) is a client mistake too.
    let query_errors = web::QueryConfig::default().error_handler(|e, _req| {
        ApiProblem::from(stella_api::Problem::new(
            stella_api::ProblemCode::InvalidRequest,
            format!("invalid query string: {e}"),
        ))
        .into()
    });
    cfg.app_data(query_errors);
    for (path, operations) in api_routes() {
        let mut resource = web::resource(path);
        for (method, route) in operations {
            resource = resource.route(route.method(method));
        }
        cfg.service(resource.default_service(web::to(problem::method_not_allowed)));
    }
    cfg.default_service(web::to(problem::not_found));
}

/// The client API: every path and its methods. [`routes`] serves exactly these and the OpenAPI
/// document lists exactly these (`openapi::tests` compares them).
fn api_routes() -> Vec<(&'static str, Vec<(Method, actix_web::Route)>)> {
    use stella_api as api;
    let get = |route: actix_web::Route| vec![(Method::GET, route)];
    let post = |route: actix_web::Route| vec![(Method::POST, route)];
    vec![
        (
            api::SIGN_DSSE_PATH,
            post(web::route().to(application::sign_dsse)),
        ),
        (
            api::SIGN_EXPORT_PATH,
            post(web::route().to(application::sign_export)),
        ),
        (api::AUDIT_PATH, get(web::route().to(audit::list))),
        (api::AUDIT_EXPORT_PATH, get(web::route().to(audit::export))),
        (
            api::AUDIT_CHECKPOINT_PATH,
            get(web::route().to(log::checkpoint)),
        ),
        (
            api::AUDIT_INCLUSION_PATH,
            get(web::route().to(log::inclusion)),
        ),
        (
            api::AUDIT_CONSISTENCY_PATH,
            get(web::route().to(log::consistency)),
        ),
        (api::TRUST_PATH, get(web::route().to(keys::trust))),
        (api::KEYS_PATH, get(web::route().to(keys::list))),
        (api::KEYS_ADMIN_PATH, post(web::route().to(keys::register))),
        (
            api::KEYS_THRESHOLD_PATH,
            post(web::route().to(keys::create_threshold)),
        ),
        (
            api::KEYS_THRESHOLD_REFRESH_PATH,
            post(web::route().to(keys::refresh_threshold)),
        ),
        (api::KEYS_REVOKE_PATH, post(web::route().to(keys::revoke))),
        (
            api::REFERRERS_PATH,
            get(web::route().to(releases::referrers)),
        ),
        (
            api::RELEASE_ALLOWLIST_PATH,
            post(web::route().to(releases::allow)),
        ),
        (
            api::RELEASE_APPROVALS_PATH,
            post(web::route().to(releases::request_approval)),
        ),
        (
            api::RELEASE_DECISIONS_PATH,
            post(web::route().to(releases::decide)),
        ),
        (
            api::POE_BYPASS_PATH,
            vec![
                (Method::GET, web::route().to(admin::poe_bypass)),
                (Method::PUT, web::route().to(admin::set_poe_bypass)),
            ],
        ),
        (
            api::CLUSTER_STATUS_PATH,
            get(web::route().to(cluster::status)),
        ),
        (
            openapi::OPENAPI_PATH,
            get(web::route().to(openapi::document)),
        ),
        ("/healthz", get(web::route().to(ops::healthz))),
        ("/readyz", get(web::route().to(ops::readyz))),
        ("/metrics", get(web::route().to(ops::metrics))),
    ]
}

/// The key-shard routes of the peer listener (app data: the node's [`threshold::Holders`]).
pub fn threshold_peer_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(threshold::PEER_DKG_START, web::post().to(peer::dkg_start))
        .route(threshold::PEER_DKG_ROUND1, web::post().to(peer::dkg_round1))
        .route(threshold::PEER_DKG_ROUND2, web::post().to(peer::dkg_round2))
        .route(threshold::PEER_DKG_FINISH, web::post().to(peer::dkg_finish))
        .route(threshold::PEER_COMMIT, web::post().to(peer::commit))
        .route(threshold::PEER_SIGN_SHARE, web::post().to(peer::sign_share));
}

/// Peer listener routes (mutual TLS is enforced by the listener, before any of these run; the
/// certificate's role by [`peer_access::guard`], which the listener wraps around them).
pub fn peer_routes(cfg: &mut web::ServiceConfig) {
    use peer_access::{
        ADMIN_DRILL_KILL, ADMIN_INIT, ADMIN_JOIN, ADMIN_REMOVE, ADMIN_SNAPSHOT, PEER_ELECT,
        PEER_READ_INDEX, PEER_STATUS,
    };
    cfg.app_data(web::JsonConfig::default().limit(512 * 1024 * 1024))
        .route(RAFT_APPEND, web::post().to(peer::append))
        .route(RAFT_VOTE, web::post().to(peer::vote))
        .route(RAFT_SNAPSHOT, web::post().to(peer::snapshot))
        .route(PEER_SIGN, web::post().to(peer::sign))
        .route(PEER_AUDIT, web::post().to(peer::audit))
        .route(PEER_CONFIGURE, web::post().to(peer::configure))
        .route(PEER_KEYGEN, web::post().to(peer::keygen))
        .configure(threshold_peer_routes)
        .route(PEER_READ_INDEX, web::post().to(peer::read_index))
        .route(PEER_STATUS, web::get().to(peer::status))
        .route(ADMIN_INIT, web::post().to(peer::init))
        .route(ADMIN_JOIN, web::post().to(peer::join))
        .route(ADMIN_REMOVE, web::post().to(peer::remove))
        .route(ADMIN_SNAPSHOT, web::post().to(peer::trigger_snapshot))
        .route(PEER_ELECT, web::post().to(peer::elect))
        .route(ADMIN_DRILL_KILL, web::post().to(peer::drill_kill_actor))
        .default_service(web::to(problem::not_found));
}

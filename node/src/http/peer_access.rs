//! Who may call what on the peer listener. The TLS handshake has checked the client
//! certificate's chain against the cluster CA; here its identity URI (see
//! [`stella_cluster::identity`]) decides each route:
//!
//! | route | node | operator |
//! |---|---|---|
//! | Raft append / vote / snapshot | only as the node id its certificate names | no |
//! | forwarded signing, audit, configuration, key generation, threshold shares, read index | yes | no |
//! | status | yes | yes |
//! | `init`, `join`, `remove` (membership) | only for itself | yes |
//! | `snapshot` (compaction), drill `kill-actor` | no | yes |
//! | `elect` (leadership transfer) | only from the leader it knows | no |
//!
//! A certificate with no identity, several, or another cluster's is refused every route.
//! [`route_access`] and [`may_act_as`] are the decision, free of I/O; [`guard`] applies it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use stella_cluster::identity::{IdentityError, PeerRole};
use stella_cluster::network::{RAFT_APPEND, RAFT_SNAPSHOT, RAFT_VOTE};
use stella_state::raft_types::NodeId;

use super::ApiProblem;
use crate::Error;
use crate::key_admin::PEER_KEYGEN;
use crate::signing::{PEER_AUDIT, PEER_CONFIGURE, PEER_SIGN};
use crate::threshold;

pub const PEER_STATUS: &str = "/peer/v1/status";
pub const PEER_READ_INDEX: &str = "/peer/v1/read-index";
pub const ADMIN_INIT: &str = "/admin/v1/init";
pub const ADMIN_JOIN: &str = "/admin/v1/join";
pub const ADMIN_REMOVE: &str = "/admin/v1/remove";
pub const ADMIN_SNAPSHOT: &str = "/admin/v1/snapshot";
/// Leadership transfer: the leader that shuts down asks a caught-up voter to campaign now.
pub const PEER_ELECT: &str = "/peer/v1/elect";
/// Chaos drills only (`[drill] kill_actors`): kill one supervised actor of this node.
pub const ADMIN_DRILL_KILL: &str = "/admin/v1/drill/kill-actor";

/// The identity the connection's client certificate names, read once per connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub Result<PeerRole, IdentityError>);

/// Which roles a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Cluster members only.
    Nodes,
    /// Members and operators.
    Anyone,
    /// Operators, and a node for itself (the handler checks "itself").
    OperatorsOrSelf,
    /// Operators only.
    Operators,
}

/// The roles `path` admits; `None` for a path the peer listener does not serve.
pub fn route_access(path: &str) -> Option<Access> {
    const NODES: [&str; 15] = [
        RAFT_APPEND,
        RAFT_VOTE,
        RAFT_SNAPSHOT,
        PEER_SIGN,
        PEER_AUDIT,
        PEER_CONFIGURE,
        PEER_KEYGEN,
        PEER_READ_INDEX,
        PEER_ELECT,
        threshold::PEER_DKG_START,
        threshold::PEER_DKG_ROUND1,
        threshold::PEER_DKG_ROUND2,
        threshold::PEER_DKG_FINISH,
        threshold::PEER_COMMIT,
        threshold::PEER_SIGN_SHARE,
    ];
    match path {
        p if NODES.contains(&p) => Some(Access::Nodes),
        PEER_STATUS => Some(Access::Anyone),
        ADMIN_INIT | ADMIN_JOIN | ADMIN_REMOVE => Some(Access::OperatorsOrSelf),
        ADMIN_SNAPSHOT | ADMIN_DRILL_KILL => Some(Access::Operators),
        _ => None,
    }
}

/// Whether `role` passes `access` at the door (the handler may narrow a node to itself).
pub fn admits(access: Access, role: &PeerRole) -> bool {
    matches!(
        (access, role),
        (Access::Anyone | Access::OperatorsOrSelf, _)
            | (Access::Nodes, PeerRole::Node(_))
            | (Access::Operators, PeerRole::Operator(_))
    )
}

/// Whether `role` may act for node `subject` (a Raft sender, a joining or leaving member): an
/// operator may act for any node, a node only for itself.
pub fn may_act_as(role: &PeerRole, subject: NodeId, operators_too: bool) -> bool {
    match role {
        PeerRole::Node(id) => *id == subject,
        PeerRole::Operator(_) => operators_too,
    }
}

/// The role of the connection `req` came on (set by [`guard`]'s listener; always present on a
/// route the guard let through).
pub fn role(req: &actix_web::HttpRequest) -> Result<PeerRole, Error> {
    match req.conn_data::<PeerIdentity>() {
        Some(PeerIdentity(Ok(role))) => Ok(role.clone()),
        Some(PeerIdentity(Err(e))) => Err(Error::PeerForbidden(e.to_string())),
        None => Err(Error::PeerForbidden(
            "no client certificate identity on this connection".into(),
        )),
    }
}

/// Refuses a request whose certificate role the route does not admit, before any handler runs.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let verdict = match (route_access(req.path()), role(req.request())) {
        // Unknown paths fall through to the listener's 404.
        (None, _) => Ok(()),
        (Some(_), Err(e)) => Err(e),
        (Some(access), Ok(role)) if admits(access, &role) => Ok(()),
        (Some(_), Ok(role)) => Err(Error::PeerForbidden(format!(
            "{role} may not call {}",
            req.path()
        ))),
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(e) => {
            tracing::warn!(path = req.path(), error = %e, peer = ?req.peer_addr(), "peer call refused");
            metrics::counter!(crate::telemetry::PEER_REFUSALS).increment(1);
            let response = actix_web::ResponseError::error_response(&ApiProblem::from(e));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Reads the identity from a peer connection's client certificate (the listener's `on_connect`).
pub fn remember_peer(
    cluster_id: &str,
    conn: &dyn std::any::Any,
    data: &mut actix_web::dev::Extensions,
) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let identity = match conn
        .downcast_ref::<Tls>()
        .and_then(|tls| tls.get_ref().1.peer_certificates())
        .and_then(|chain| chain.first())
    {
        Some(cert) => stella_cluster::identity::role_of_certificate(cert.as_ref(), cluster_id),
        None => Err(IdentityError::Missing),
    };
    data.insert(PeerIdentity(identity));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_administer_membership_and_never_sign_audit_configure_or_vote() {
        let operator = PeerRole::Operator("admin".into());
        let node = PeerRole::Node(2);
        for path in [
            RAFT_APPEND,
            RAFT_VOTE,
            RAFT_SNAPSHOT,
            PEER_SIGN,
            PEER_AUDIT,
            PEER_CONFIGURE,
            PEER_KEYGEN,
            PEER_READ_INDEX,
            threshold::PEER_SIGN_SHARE,
            threshold::PEER_COMMIT,
            threshold::PEER_DKG_START,
        ] {
            let access = route_access(path).expect(path);
            assert!(!admits(access, &operator), "{path}");
            assert!(admits(access, &node), "{path}");
        }
        for path in [ADMIN_INIT, ADMIN_JOIN, ADMIN_REMOVE, PEER_STATUS] {
            assert!(admits(route_access(path).expect(path), &operator), "{path}");
        }
        assert!(admits(
            route_access(ADMIN_SNAPSHOT).expect("snapshot"),
            &operator
        ));
        assert!(!admits(
            route_access(ADMIN_SNAPSHOT).expect("snapshot"),
            &node
        ));
        assert_eq!(route_access("/peer/v1/other"), None);
    }

    #[test]
    fn a_node_acts_only_as_itself() {
        assert!(may_act_as(&PeerRole::Node(2), 2, false));
        assert!(!may_act_as(&PeerRole::Node(2), 1, true));
        assert!(may_act_as(&PeerRole::Operator("admin".into()), 1, true));
        assert!(!may_act_as(&PeerRole::Operator("admin".into()), 1, false));
    }
}

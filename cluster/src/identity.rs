//! Who a peer is: the role and identity its cluster certificate names.
//!
//! Every certificate the cluster CA issues carries exactly one URI SAN of the form
//! `stella://<cluster-id>/node/<id>` or `stella://<cluster-id>/operator/<name>`. The peer
//! listener reads it from the client certificate (after the TLS handshake has checked the chain)
//! and decides each route by it ([`PeerRole`]); a certificate without one, with several, or for
//! another cluster id has no role here and is refused everything. Decision logic only: no I/O.

use der::Decode;
use stella_state::raft_types::NodeId;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The scheme of identity URIs.
pub const SCHEME: &str = "stella://";
/// The cluster id of `cluster certs` and configurations that do not set one.
pub const DEFAULT_CLUSTER_ID: &str = "stella";

/// What a certificate may do on the peer plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRole {
    /// A cluster member: Raft RPCs as itself, forwarded jobs, threshold shares.
    Node(NodeId),
    /// A person or tool administering membership; never signs, audits or proposes commands.
    Operator(String),
}

impl std::fmt::Display for PeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerRole::Node(id) => write!(f, "node {id}"),
            PeerRole::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("the certificate names no stella:// identity")]
    Missing,
    #[error("the certificate names more than one stella:// identity")]
    Ambiguous,
    #[error("the certificate belongs to cluster `{0}`, not this one")]
    OtherCluster(String),
    #[error("the certificate's identity `{0}` is not a node or operator of this cluster")]
    Unknown(String),
}

/// The identity URI of node `id` of `cluster_id`.
pub fn node_uri(cluster_id: &str, id: NodeId) -> String {
    format!("{SCHEME}{cluster_id}/node/{id}")
}

/// The identity URI of operator `name` of `cluster_id`.
pub fn operator_uri(cluster_id: &str, name: &str) -> String {
    format!("{SCHEME}{cluster_id}/operator/{name}")
}

/// A cluster id or operator name: short, and nothing that could break the URI apart.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The role `uri` gives in `cluster_id`.
pub fn role_of_uri(uri: &str, cluster_id: &str) -> Result<PeerRole, IdentityError> {
    let unknown = || IdentityError::Unknown(uri.chars().take(96).collect());
    let rest = uri.strip_prefix(SCHEME).ok_or_else(unknown)?;
    let mut parts = rest.split('/');
    let (Some(cluster), Some(kind), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unknown());
    };
    if cluster != cluster_id {
        return Err(IdentityError::OtherCluster(
            cluster.chars().take(64).collect(),
        ));
    }
    match kind {
        "node" => {
            let id: NodeId = name.parse().map_err(|_| unknown())?;
            // Node ids are written in decimal without a sign or leading zeros: one spelling each.
            if id == 0 || id.to_string() != name {
                return Err(unknown());
            }
            Ok(PeerRole::Node(id))
        }
        "operator" if valid_name(name) => Ok(PeerRole::Operator(name.to_owned())),
        _ => Err(unknown()),
    }
}

/// The role the (already chain-verified) certificate `der` has in `cluster_id`.
pub fn role_of_certificate(der: &[u8], cluster_id: &str) -> Result<PeerRole, IdentityError> {
    let cert = Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let sans = match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, sans))) => sans.0,
        Ok(None) => return Err(IdentityError::Missing),
        Err(e) => return Err(IdentityError::Malformed(e.to_string())),
    };
    let mut uris = sans.iter().filter_map(|name| match name {
        GeneralName::UniformResourceIdentifier(uri) if uri.as_str().starts_with(SCHEME) => {
            Some(uri.as_str())
        }
        _ => None,
    });
    let uri = uris.next().ok_or(IdentityError::Missing)?;
    if uris.next().is_some() {
        return Err(IdentityError::Ambiguous);
    }
    role_of_uri(uri, cluster_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_one_role_in_one_cluster() {
        assert_eq!(
            role_of_uri(&node_uri("prod", 3), "prod"),
            Ok(PeerRole::Node(3))
        );
        assert_eq!(
            role_of_uri(&operator_uri("prod", "admin"), "prod"),
            Ok(PeerRole::Operator("admin".into()))
        );
        assert_eq!(
            role_of_uri(&node_uri("staging", 3), "prod"),
            Err(IdentityError::OtherCluster("staging".into()))
        );
        for bad in [
            "stella://prod/node/0",
            "stella://prod/node/03",
            "stella://prod/node/+3",
            "stella://prod/node/-1",
            "stella://prod/node/18446744073709551616",
            "stella://prod/node/3/extra",
            "stella://prod/node",
            "stella://prod/auditor/x",
            "stella://prod/operator/",
            "stella://prod/operator/a b",
            "https://prod/node/3",
        ] {
            assert!(
                matches!(role_of_uri(bad, "prod"), Err(IdentityError::Unknown(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("prod-eu.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(64)));
    }
}

//! The `[cluster]` section: Raft membership, peer listener and TLS, timings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub node_id: u64,
    /// The cluster's name in its certificates' identity URIs (`stella://<cluster-id>/node/<id>`):
    /// a peer whose certificate names another cluster is refused even if the CA is shared.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// Address of the peer (Raft, mutual TLS) listener.
    pub peer_listen: SocketAddr,
    /// How peers reach this node's peer listener, e.g. `https://10.0.0.5:9441`.
    pub peer_url: String,
    /// How clients (and forwarding peers) reach this node's API, e.g. `https://10.0.0.5:8443`.
    pub api_url: String,
    /// Cluster CA (PEM): peers must present a certificate it issued.
    pub ca_cert: PathBuf,
    /// This node's certificate chain and key (PEM), issued by the cluster CA.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Build a Raft snapshot (and compact the log) every this many entries.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Leader heartbeat interval (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Election timeout range (ms); the upper bound is also the leader lease (ADR 0015).
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: [u64; 2],
    /// On SIGTERM the node reports not-ready this long before it stops accepting requests,
    /// so a load balancer's health check drains it first.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    stella_cluster::DEFAULT_HEARTBEAT_MS
}

fn default_election_timeout_ms() -> [u64; 2] {
    let (min, max) = stella_cluster::DEFAULT_ELECTION_TIMEOUT_MS;
    [min, max]
}

fn default_shutdown_grace_ms() -> u64 {
    1000
}

fn default_cluster_id() -> String {
    stella_cluster::identity::DEFAULT_CLUSTER_ID.into()
}

fn default_snapshot_every() -> u64 {
    5000
}

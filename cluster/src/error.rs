use stella_state::raft_types::{NodeAddr, NodeId};

/// The cluster layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, NodeAddr)> },
    #[error("no quorum or leader: {0}")]
    Unavailable(String),
    #[error("membership: {0}")]
    Membership(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("peer {peer}: {detail}")]
    Peer { peer: String, detail: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
}

//! The openraft type configuration shared by the storage layer here and the cluster crate.

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};

/// How to reach a node: its peer (Raft, mutual TLS) URL and its client API URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub peer_url: String,
    pub api_url: String,
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Stella Signer's Raft types: commands in, responses out, nodes addressed by URL.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;

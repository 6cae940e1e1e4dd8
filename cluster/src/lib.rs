//! Cluster wiring: one [`ClusterHandle`] that the node calls for every linearizable decision.
//!
//! Composition (openraft's raft-kv example order): config → log store → state machine →
//! network → Raft. Single-node mode (dev) runs the same Raft with a membership of one, so there
//! is one code path for every deployment size.

mod error;
pub mod identity;
pub mod network;
pub mod pki;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use stella_state::raft_types::{NodeAddr, NodeId, Raft};
use stella_state::storage::{self, StateView};
use stella_state::{Command, Response};

pub use error::ClusterError;
pub use network::{PeerClient, PeerTls};

/// Entries per AppendEntries call (openraft's default is 300).
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Raft storage directory (two redb files).
    pub raft_dir: PathBuf,
    pub addr: NodeAddr,
    /// Peer TLS material; `None` for a single node that never talks to peers.
    pub tls: Option<PeerTls>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and allow purging the log) after this many applied entries.
    pub snapshot_every: u64,
    /// Source address for outgoing peer connections.
    pub local_address: Option<std::net::IpAddr>,
}

impl ClusterConfig {
    pub fn new(
        node_id: NodeId,
        raft_dir: PathBuf,
        addr: NodeAddr,
        tls: Option<PeerTls>,
    ) -> ClusterConfig {
        ClusterConfig {
            node_id,
            raft_dir,
            addr,
            tls,
            heartbeat_ms: 100,
            election_timeout_ms: (300, 600),
            snapshot_every: 5000,
            local_address: None,
        }
    }
}

/// What one node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeAddr>,
}

/// The node's handle on the cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    addr: NodeAddr,
    raft: Raft,
    view: StateView,
    peers: PeerClient,
}

impl ClusterHandle {
    /// Opens storage and starts Raft. The node is not a member of anything until
    /// [`ClusterHandle::initialize`] or a leader's `join` adds it.
    pub async fn start(config: ClusterConfig) -> Result<ClusterHandle, ClusterError> {
        let (log_store, state_machine) =
            storage::open(&config.raft_dir).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let view = state_machine.view();
        let peers = PeerClient::new(config.tls.as_ref(), config.local_address)?;
        let raft_config = openraft::Config {
            cluster_name: "stella-signer".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // openraft gives each AppendEntries one heartbeat interval to complete: a follower
            // catching up after a restart gets small batches, so each one fits the budget even
            // on a busy machine (300 entries per call never did there, and the follower kept
            // campaigning instead of catching up).
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            max_in_snapshot_log_to_keep: config.snapshot_every / 2,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| ClusterError::Config(e.to_string()))?,
        );
        let network = network::Network::new(peers.clone());
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(ClusterHandle {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                addr: config.addr,
                raft,
                view,
                peers,
            }),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.inner.addr
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn view(&self) -> &StateView {
        &self.inner.view
    }

    pub fn peers(&self) -> &PeerClient {
        &self.inner.peers
    }

    /// Makes this node the first member of a new cluster (idempotent on an initialized node).
    pub async fn initialize(&self) -> Result<(), ClusterError> {
        if self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(self.inner.node_id, self.inner.addr.clone())]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// Proposes a command on this node; fails with `NotLeader` when it is not the leader.
    pub async fn propose(&self, command: Command) -> Result<Response, ClusterError> {
        match self.inner.raft.client_write(command).await {
            Ok(reply) => Ok(reply.data),
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn write_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>,
    ) -> ClusterError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                ClusterError::Membership(c.to_string())
            }
            RaftError::Fatal(f) => ClusterError::Raft(f.to_string()),
        }
    }

    /// The current leader as this node sees it.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, addr))
    }

    /// The address of cluster member `id` (voter or learner), from this node's view of the
    /// membership.
    pub fn member_addr(&self, id: NodeId) -> Option<NodeAddr> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// The current voters, by id.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters().into_iter().collect()
    }

    pub fn is_leader(&self) -> bool {
        self.leader()
            .is_some_and(|(id, _)| id == self.inner.node_id)
    }

    /// Waits until some leader is known (or the timeout passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, NodeAddr)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leader only: a log index such that every write acknowledged before this call is applied
    /// once a node has applied up to it (the read-index of linearizable reads).
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ClusterError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Err(e) => Err(ClusterError::Unavailable(e.to_string())),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        if index == 0 {
            return Ok(());
        }
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Unavailable(e.to_string()))
    }

    /// Leader only: adds a node as a learner (waiting until it caught up), then as a voter.
    pub async fn join(&self, node_id: NodeId, addr: NodeAddr) -> Result<(), ClusterError> {
        self.inner
            .raft
            .add_learner(node_id, addr, true)
            .await
            .map_err(|e| self.write_error(e))?;
        let mut voters: BTreeSet<NodeId> = self.voters();
        voters.insert(node_id);
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Leader only: removes a node from the voters and from the cluster.
    pub async fn remove(&self, node_id: NodeId) -> Result<(), ClusterError> {
        let mut voters = self.voters();
        if !voters.remove(&node_id) {
            return Err(ClusterError::Membership(format!(
                "node {node_id} is not a voter"
            )));
        }
        if voters.is_empty() {
            return Err(ClusterError::Membership(
                "cannot remove the last voter".into(),
            ));
        }
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.write_error(e))?;
        let removal = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
        self.inner
            .raft
            .change_membership(removal, false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let nodes = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        NodeStatus {
            node_id: m.id,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters,
            learners,
            nodes,
        }
    }

    /// Asks Raft to build a snapshot now (tests and operators use it before compaction checks).
    pub async fn trigger_snapshot(&self) -> Result<(), ClusterError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Stops Raft, then makes the state machine's applied state durable.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        let view = self.inner.view.clone();
        let flushed =
            tokio::task::spawn_blocking(move || view.flush_durable().map_err(|e| e.to_string()))
                .await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!(
                "could not flush the state machine on shutdown; the log will be replayed on start"
            );
        }
    }
}

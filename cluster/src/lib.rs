//! Cluster wiring: one [`ClusterHandle`] that the node calls for every linearizable decision.
//!
//! Composition (openraft's raft-kv example order): config → log store → state machine →
//! network → Raft. Single-node mode (dev) runs the same Raft with a membership of one, so there
//! is one code path for every deployment size.

pub mod compaction;
mod error;
pub mod identity;
pub mod lease;
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

/// Leader heartbeat interval.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Election timeout range. openraft's leader lease is the upper bound: followers refuse votes
/// for that long after a heartbeat and campaign after lease + timeout, so a dead leader is
/// replaced 0.5–0.6 s after its last heartbeat, or about 0.3 s later when a second round is
/// needed (ADR 0015; the failover drill in `docs/benchmarks.md`).
pub const DEFAULT_ELECTION_TIMEOUT_MS: (u64, u64) = (200, 300);

/// Entries per AppendEntries call (openraft's default is 300).
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

/// How long one InstallSnapshot call may take: sending a chunk, and for the last one also
/// installing the whole snapshot on the follower (which grows with the audit log). openraft's
/// default is 200 ms, for every chunk: a snapshot of more than one chunk never arrived on a
/// loaded machine — the leader dropped the call after the first chunk and started over, for
/// ever, and the follower (or a freshly joined node) never caught up (found by the chaos drill,
/// ADR 0029). Five minutes: installing 10^6 audit records took 150 s in `docs/benchmarks.md`.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 300_000;

/// Bytes per InstallSnapshot chunk (openraft's default is 3 MiB, sent as a JSON array of
/// numbers: ~11 MB per call). Smaller chunks keep each call short on a slow link.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;

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
    /// Build a snapshot (and allow purging the log) after this many applied entries, or after
    /// a quarter of the audit log's records, whichever is more (`compaction`).
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
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
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
    /// On the leader: the last log index each member has acknowledged (`None`: nothing yet).
    #[serde(default)]
    pub replication: BTreeMap<NodeId, Option<u64>>,
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
    timing: lease::Timing,
    /// The last AppendEntries this node accepted from a leader (followers' side of the lease).
    contact: std::sync::Mutex<Option<lease::Contact>>,
    /// Set when this leader hands leadership over (graceful shutdown): it takes no new work.
    handing_over: std::sync::atomic::AtomicBool,
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
            // Snapshots are triggered by `compaction`, spaced in proportion to the log.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // openraft gives each AppendEntries one heartbeat interval to complete: a follower
            // catching up after a restart gets small batches, so each one fits the budget even
            // on a busy machine (300 entries per call never did there, and the follower kept
            // campaigning instead of catching up).
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            max_in_snapshot_log_to_keep: config.snapshot_every / 2,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
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
        compaction::spawn(raft.clone(), view.clone(), config.snapshot_every);
        Ok(ClusterHandle {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                addr: config.addr,
                raft,
                view,
                peers,
                timing: lease::Timing {
                    heartbeat: Duration::from_millis(config.heartbeat_ms),
                    election_min: Duration::from_millis(config.election_timeout_ms.0),
                    election_max: Duration::from_millis(config.election_timeout_ms.1),
                },
                contact: std::sync::Mutex::new(None),
                handing_over: std::sync::atomic::AtomicBool::new(false),
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

    /// Hands an AppendEntries from a leader to Raft, and remembers an accepted one: a
    /// follower's readiness is "heard from the current leader lately and caught up".
    pub async fn append_entries(
        &self,
        rpc: openraft::raft::AppendEntriesRequest<stella_state::raft_types::TypeConfig>,
    ) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let term = rpc.vote.leader_id().term;
        let leader = rpc.vote.leader_id().voted_for();
        let leader_commit = rpc.leader_commit.map(|l| l.index);
        let answer = self.inner.raft.append_entries(rpc).await;
        if matches!(answer, Ok(openraft::raft::AppendEntriesResponse::Success)) {
            let mut contact = self
                .inner
                .contact
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *contact = Some(lease::Contact {
                at: std::time::Instant::now(),
                term,
                leader,
                leader_commit,
            });
        }
        answer
    }

    /// The facts readiness and the leader lease are decided on (see [`lease`]).
    pub fn lease_facts(&self) -> lease::Facts {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        let member = membership.get_node(&self.inner.node_id).is_some();
        let contact = self
            .inner
            .contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        lease::Facts {
            node_id: self.inner.node_id,
            member,
            single_voter: voters == 1,
            leader: m.state == ServerState::Leader,
            term: m.current_term,
            current_leader: m.current_leader,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            applied: m.last_applied.map(|l| (l.leader_id.term, l.index)),
            since_contact: contact.as_ref().map(|c| c.at.elapsed()),
            contact_term: contact.as_ref().map(|c| c.term),
            contact_leader_commit: contact.and_then(|c| c.leader_commit),
        }
    }

    /// Whether Raft runs (a storage error stops it for good).
    pub fn raft_running(&self) -> bool {
        self.inner.raft.metrics().borrow().running_state.is_ok()
    }

    /// Why Raft stopped for good on its own (a storage error, a panic in its core); `None`
    /// while it runs and after an orderly shutdown.
    pub fn raft_failure(&self) -> Option<String> {
        match &self.inner.raft.metrics().borrow().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    pub fn timing(&self) -> lease::Timing {
        self.inner.timing
    }

    /// Whether this node may act as leader for clients now: it leads, and a quorum
    /// acknowledged it within the lease (a partitioned leader stops serving within one
    /// election timeout, although openraft keeps it leader until it hears a higher term).
    pub fn serving_leader(&self) -> bool {
        lease::serving_leader(&self.lease_facts(), &self.inner.timing)
    }

    /// Whether this node leads with a lapsed lease (see [`lease::lease_lapsed`]): it must not
    /// keep clients waiting.
    pub fn lease_lapsed(&self) -> bool {
        lease::lease_lapsed(&self.lease_facts(), &self.inner.timing)
    }

    /// Resolves when this node stops being the leader of `term` (a newer term, another leader)
    /// or its lease lapses.
    pub async fn leadership_lost(&self, term: u64) {
        loop {
            let facts = self.lease_facts();
            if !facts.leader
                || facts.term != term
                || lease::lease_lapsed(&facts, &self.inner.timing)
            {
                return;
            }
            tokio::time::sleep(lease::POLL).await;
        }
    }

    /// Resolves when this node learns of a leader other than `leader` or a term newer than
    /// `term` — a forward to `leader` is then moot.
    pub async fn leader_changed(&self, leader: NodeId, term: u64) {
        let mut metrics = self.inner.raft.metrics();
        let _ = metrics
            .wait_for(|m| m.current_term != term || m.current_leader.is_some_and(|l| l != leader))
            .await;
    }

    /// The current term as this node knows it.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// Stops this node campaigning (graceful shutdown) and asks `target` — a caught-up
    /// voter — to take over: see `lease::transfer`.
    pub fn raft_runtime(
        &self,
    ) -> openraft::raft::RuntimeConfigHandle<'_, stella_state::raft_types::TypeConfig> {
        self.inner.raft.runtime_config()
    }

    /// From now on this node takes no new leader work (forwarded jobs are answered "not the
    /// leader", so their senders wait for the next one) and campaigns no more: its log stops
    /// growing, so a voter can catch up with it completely before it hands over.
    pub fn begin_handover(&self) {
        self.inner
            .handing_over
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.raft.runtime_config().elect(false);
    }

    pub fn handing_over(&self) -> bool {
        self.inner
            .handing_over
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The voter (other than this node) whose replicated log is furthest, when this node leads.
    pub fn most_caught_up_voter(&self) -> Option<(NodeId, NodeAddr)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let replication = m.replication.as_ref()?;
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter(|id| *id != self.inner.node_id)
            .max_by_key(|id| replication.get(id).cloned().flatten().map(|l| l.index))
            .and_then(|id| membership.get_node(&id).map(|n| (id, n.clone())))
    }

    /// Campaign now (the target of a leadership transfer).
    pub async fn elect(&self) -> Result<(), ClusterError> {
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
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
            replication: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
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

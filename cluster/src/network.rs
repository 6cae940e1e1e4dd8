//! Peer transport: Raft RPCs and node-to-node calls over HTTPS with mutual TLS.
//!
//! Every node has a certificate issued by the cluster CA; the peer listener (served by the node
//! crate) refuses connections without one, and the client here presents the node's certificate
//! and trusts only the cluster CA. Bodies are JSON; a Raft RPC answers with the serialized
//! `Result` of the remote `Raft` call, so remote Raft errors arrive typed.
//!
//! Kept in one module: openraft 0.10 changes the network API.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stella_state::raft_types::{NodeAddr, NodeId, TypeConfig};

use crate::ClusterError;

pub const RAFT_APPEND: &str = "/raft/v1/append";
pub const RAFT_VOTE: &str = "/raft/v1/vote";
pub const RAFT_SNAPSHOT: &str = "/raft/v1/snapshot";

/// PEM material of this node's peer identity.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// HTTPS client for peer calls. Without TLS material (single node) it can only fail.
#[derive(Clone)]
pub struct PeerClient {
    http: Option<reqwest::Client>,
}

impl PeerClient {
    /// `local_address`: source address of outgoing peer connections (a node bound to one
    /// loopback or interface address speaks from it, so firewalls can tell nodes apart).
    pub fn new(
        tls: Option<&PeerTls>,
        local_address: Option<std::net::IpAddr>,
    ) -> Result<PeerClient, ClusterError> {
        let Some(tls) = tls else {
            return Ok(PeerClient { http: None });
        };
        let identity =
            reqwest::Identity::from_pem(format!("{}\n{}", tls.cert_pem, tls.key_pem).as_bytes())
                .map_err(|e| ClusterError::Tls(format!("node certificate/key: {e}")))?;
        let ca = reqwest::Certificate::from_pem_bundle(tls.ca_pem.as_bytes())
            .map_err(|e| ClusterError::Tls(format!("cluster CA: {e}")))?;
        let http = reqwest::Client::builder()
            .identity(identity)
            .tls_certs_only(ca)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .local_address(local_address)
            .build()
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        Ok(PeerClient { http: Some(http) })
    }

    /// POSTs JSON to `base + path` and decodes the JSON answer.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let http = self.http()?;
        self.exchange(http.post(url(base, path)).timeout(timeout).json(body))
            .await
    }

    /// GETs JSON from `base + path`.
    pub async fn get<Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let http = self.http()?;
        self.exchange(http.get(url(base, path)).timeout(timeout))
            .await
    }

    fn http(&self) -> Result<&reqwest::Client, PeerCallError> {
        self.http.as_ref().ok_or_else(|| {
            PeerCallError::Unreachable("this node has no peer TLS configuration".into())
        })
    }

    /// Sends a request and decodes a 2xx JSON answer; connection failures are `Unreachable`.
    async fn exchange<Resp: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Resp, PeerCallError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                PeerCallError::Unreachable(e.to_string())
            } else {
                PeerCallError::Network(e.to_string())
            }
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PeerCallError::Network(e.to_string()))?;
        if !status.is_success() {
            return Err(PeerCallError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| PeerCallError::Network(format!("undecodable answer: {e}")))
    }
}

fn url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerCallError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("network: {0}")]
    Network(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

/// openraft's network factory: one connection object per target node.
pub struct Network {
    peers: PeerClient,
}

impl Network {
    pub fn new(peers: PeerClient) -> Network {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Connection {
        Connection {
            peers: self.peers.clone(),
            target,
            node: node.clone(),
        }
    }
}

pub struct Connection {
    peers: PeerClient,
    target: NodeId,
    node: NodeAddr,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .peers
            .post(&self.node.peer_url, path, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerCallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.call(RAFT_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RAFT_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.call(RAFT_VOTE, &rpc, &option).await
    }
}

//! Peer listener (mutual TLS, cluster certificates only): Raft RPCs, leader-side signing for
//! forwarded requests, read-index and status for other nodes, and membership administration.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};
use stella_state::raft_types::{NodeAddr, NodeId, TypeConfig};

use super::AppState;
use crate::signing::{ForwardAnswer, SignJob};
use crate::threshold::{self, PeerAnswer};

pub async fn append(
    state: Data<AppState>,
    rpc: Json<AppendEntriesRequest<TypeConfig>>,
) -> HttpResponse {
    HttpResponse::Ok().json(
        state
            .cluster()
            .raft()
            .append_entries(rpc.into_inner())
            .await,
    )
}

pub async fn vote(state: Data<AppState>, rpc: Json<VoteRequest<NodeId>>) -> HttpResponse {
    HttpResponse::Ok().json(state.cluster().raft().vote(rpc.into_inner()).await)
}

pub async fn snapshot(
    state: Data<AppState>,
    rpc: Json<InstallSnapshotRequest<TypeConfig>>,
) -> HttpResponse {
    HttpResponse::Ok().json(
        state
            .cluster()
            .raft()
            .install_snapshot(rpc.into_inner())
            .await,
    )
}

/// A follower's admitted signing job; answered only by the leader.
pub async fn sign(
    state: Data<AppState>,
    job: Json<SignJob>,
) -> Json<ForwardAnswer<stella_api::SignDsseResponse>> {
    Json(answer(state.signing.sign_as_leader(job.into_inner()).await))
}

/// A follower's refusal to audit; answered only by the leader.
pub async fn audit(
    state: Data<AppState>,
    draft: Json<stella_state::AuditDraft>,
) -> Json<ForwardAnswer<String>> {
    Json(answer(
        state.signing.audit_as_leader(draft.into_inner()).await,
    ))
}

/// A follower's configuration change (with its audit record); answered only by the leader.
pub async fn configure(
    state: Data<AppState>,
    change: Json<crate::signing::ConfigChange>,
) -> Json<ForwardAnswer<crate::signing::ConfigApplied>> {
    Json(answer(
        state.signing.configure_as_leader(change.into_inner()).await,
    ))
}

/// A key generation forwarded by a follower; driven only by the leader.
pub async fn keygen(
    state: Data<AppState>,
    job: Json<threshold::KeygenJob>,
) -> Json<ForwardAnswer<threshold::KeygenDone>> {
    Json(answer(
        state.signing.generate_as_leader(job.into_inner()).await,
    ))
}

/// The holder side of threshold keys: each call goes to this node's key-shard actor. Routed by
/// [`super::threshold_peer_routes`] with the node's [`threshold::Holders`] as app data.
pub async fn dkg_start(
    holders: Data<threshold::Holders>,
    req: Json<threshold::DkgStart>,
) -> Json<PeerAnswer<Vec<u8>>> {
    Json(holders.dkg_start(req.into_inner()).await)
}

pub async fn dkg_round1(
    holders: Data<threshold::Holders>,
    req: Json<threshold::DkgSession>,
) -> Json<PeerAnswer<Vec<u8>>> {
    Json(holders.dkg_round1(req.into_inner()).await)
}

pub async fn dkg_round2(
    holders: Data<threshold::Holders>,
    req: Json<threshold::DkgRound2>,
) -> Json<PeerAnswer<std::collections::BTreeMap<u16, Vec<u8>>>> {
    Json(holders.dkg_round2(req.into_inner()).await)
}

pub async fn dkg_finish(
    holders: Data<threshold::Holders>,
    req: Json<threshold::DkgFinish>,
) -> Json<PeerAnswer<Vec<u8>>> {
    Json(holders.dkg_finish(req.into_inner()).await)
}

pub async fn commit(
    holders: Data<threshold::Holders>,
    req: Json<threshold::CommitRequest>,
) -> Json<PeerAnswer<Vec<u8>>> {
    Json(holders.commit(req.into_inner()).await)
}

pub async fn sign_share(
    holders: Data<threshold::Holders>,
    req: Json<threshold::SignShareRequest>,
) -> Json<PeerAnswer<Vec<u8>>> {
    Json(holders.sign_share(req.into_inner()).await)
}

fn answer<T>(result: Result<T, crate::Error>) -> ForwardAnswer<T> {
    match result {
        Ok(value) => ForwardAnswer::Done(value),
        Err(crate::Error::NotLeader) => ForwardAnswer::NotLeader,
        Err(e) => ForwardAnswer::Refused(super::ApiProblem::from(e).problem),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: u64,
}

/// Leader: the read index for a linearizable read on another node.
pub async fn read_index(state: Data<AppState>) -> HttpResponse {
    match state.cluster().read_index().await {
        Ok(index) => HttpResponse::Ok().json(ReadIndex { index }),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

pub async fn status(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cluster().status())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub peer_url: String,
    pub api_url: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveRequest {
    pub node_id: NodeId,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AdminAnswer {
    pub ok: bool,
    pub detail: String,
}

fn admin(result: Result<(), stella_cluster::ClusterError>) -> HttpResponse {
    match result {
        Ok(()) => HttpResponse::Ok().json(AdminAnswer {
            ok: true,
            detail: "done".into(),
        }),
        Err(e) => HttpResponse::Conflict().json(AdminAnswer {
            ok: false,
            detail: e.to_string(),
        }),
    }
}

/// `cluster init`: make this node a one-member cluster.
pub async fn init(state: Data<AppState>) -> HttpResponse {
    admin(state.cluster().initialize().await)
}

/// `cluster join` (sent to the leader): add as learner, wait for catch-up, promote to voter.
pub async fn join(state: Data<AppState>, req: Json<JoinRequest>) -> HttpResponse {
    let req = req.into_inner();
    let addr = NodeAddr {
        peer_url: req.peer_url,
        api_url: req.api_url,
    };
    admin(state.cluster().join(req.node_id, addr).await)
}

/// `cluster remove` (sent to the leader).
pub async fn remove(state: Data<AppState>, req: Json<RemoveRequest>) -> HttpResponse {
    admin(state.cluster().remove(req.node_id).await)
}

/// Build a snapshot now (log compaction on demand).
pub async fn trigger_snapshot(state: Data<AppState>) -> HttpResponse {
    admin(state.cluster().trigger_snapshot().await)
}

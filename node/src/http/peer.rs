//! Peer listener (mutual TLS, cluster certificates only): Raft RPCs, leader-side signing for
//! forwarded requests, read-index and status for other nodes, and membership administration.

use actix_web::web::{Data, Json};
use actix_web::{HttpRequest, HttpResponse};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};
use stella_state::raft_types::{NodeAddr, NodeId, TypeConfig};

use super::peer_access::{self, may_act_as};
use super::{ApiProblem, AppState};
use crate::signing::{ForwardAnswer, SignJob};
use crate::threshold::{self, PeerAnswer};

/// Raft RPCs come only from the member their certificate names: a node cannot vote, append
/// or install a snapshot in another node's name.
fn raft_sender(req: &HttpRequest, sender: Option<NodeId>) -> Result<(), crate::Error> {
    let role = peer_access::role(req)?;
    match sender {
        Some(id) if may_act_as(&role, id, false) => Ok(()),
        _ => Err(crate::Error::PeerForbidden(format!(
            "{role} may not send Raft messages as node {}",
            sender.map_or_else(|| "?".into(), |id| id.to_string())
        ))),
    }
}

pub async fn append(
    state: Data<AppState>,
    req: HttpRequest,
    rpc: Json<AppendEntriesRequest<TypeConfig>>,
) -> Result<HttpResponse, ApiProblem> {
    raft_sender(&req, rpc.vote.leader_id().voted_for())?;
    Ok(HttpResponse::Ok().json(state.cluster().append_entries(rpc.into_inner()).await))
}

pub async fn vote(
    state: Data<AppState>,
    req: HttpRequest,
    rpc: Json<VoteRequest<NodeId>>,
) -> Result<HttpResponse, ApiProblem> {
    raft_sender(&req, rpc.vote.leader_id().voted_for())?;
    Ok(HttpResponse::Ok().json(state.cluster().raft().vote(rpc.into_inner()).await))
}

pub async fn snapshot(
    state: Data<AppState>,
    req: HttpRequest,
    rpc: Json<InstallSnapshotRequest<TypeConfig>>,
) -> Result<HttpResponse, ApiProblem> {
    raft_sender(&req, rpc.vote.leader_id().voted_for())?;
    Ok(HttpResponse::Ok().json(
        state
            .cluster()
            .raft()
            .install_snapshot(rpc.into_inner())
            .await,
    ))
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
    if state.cluster().handing_over() {
        return Json(ForwardAnswer::NotLeader);
    }
    Json(answer(
        state.signing.audit_as_leader(draft.into_inner()).await,
    ))
}

/// A follower's typed configuration change; the leader plans and audits it itself.
pub async fn configure(
    state: Data<AppState>,
    change: Json<crate::changes::ConfigChange>,
) -> Json<ForwardAnswer<crate::signing::configure::ConfigApplied>> {
    Json(answer(
        state.signing.configure_as_leader(change.into_inner()).await,
    ))
}

/// A key generation forwarded by a follower; driven only by the leader.
pub async fn keygen(
    state: Data<AppState>,
    job: Json<crate::changes::ConfigChange>,
) -> Json<ForwardAnswer<crate::signing::configure::ConfigApplied>> {
    Json(answer(
        crate::key_admin::generate_as_leader(&state.signing, job.into_inner()).await,
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

/// Membership changes for node `subject`: an operator for any node, a node only for itself.
fn membership_for(req: &HttpRequest, subject: NodeId) -> Result<(), crate::Error> {
    let role = peer_access::role(req)?;
    if may_act_as(&role, subject, true) {
        Ok(())
    } else {
        Err(crate::Error::PeerForbidden(format!(
            "{role} may change only its own membership, not node {subject}'s"
        )))
    }
}

/// `cluster init`: make this node a one-member cluster.
pub async fn init(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiProblem> {
    membership_for(&req, state.cluster().node_id())?;
    Ok(admin(state.cluster().initialize().await))
}

/// `cluster join` (sent to the leader): add as learner, wait for catch-up, promote to voter.
pub async fn join(
    state: Data<AppState>,
    req: HttpRequest,
    body: Json<JoinRequest>,
) -> Result<HttpResponse, ApiProblem> {
    let body = body.into_inner();
    membership_for(&req, body.node_id)?;
    let addr = NodeAddr {
        peer_url: body.peer_url,
        api_url: body.api_url,
    };
    Ok(admin(state.cluster().join(body.node_id, addr).await))
}

/// `cluster remove` (sent to the leader).
pub async fn remove(
    state: Data<AppState>,
    req: HttpRequest,
    body: Json<RemoveRequest>,
) -> Result<HttpResponse, ApiProblem> {
    membership_for(&req, body.node_id)?;
    Ok(admin(state.cluster().remove(body.node_id).await))
}

/// Build a snapshot now (log compaction on demand; operators only, see `peer_access`).
pub async fn trigger_snapshot(state: Data<AppState>) -> HttpResponse {
    admin(state.cluster().trigger_snapshot().await)
}

/// Leadership transfer: the leader that is shutting down asks this node to campaign now. Only
/// the leader this node knows may ask.
pub async fn elect(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiProblem> {
    let role = peer_access::role(&req)?;
    let cluster = state.cluster();
    match cluster.leader() {
        Some((leader, _)) if may_act_as(&role, leader, false) => {}
        _ => {
            return Err(crate::Error::PeerForbidden(format!(
                "{role} is not the leader this node knows; it may not hand over leadership"
            ))
            .into());
        }
    }
    tracing::info!("leadership transfer: campaigning at the leader's request");
    Ok(admin(cluster.elect().await))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KillActor {
    pub actor: String,
    /// The restart waits at least this long (at most 60 s).
    #[serde(default)]
    pub restart_after_ms: u64,
}

/// Chaos drills only: kill one supervised actor (`quota-ledger`, `entitlement-cache`,
/// `key-shard`) as a crash would; its supervisor restarts it.
pub async fn drill_kill_actor(
    state: Data<AppState>,
    body: Json<KillActor>,
) -> Result<HttpResponse, ApiProblem> {
    let hold = std::time::Duration::from_millis(body.restart_after_ms.min(60_000));
    let killed = state.health.drill_kill(&body.actor, hold)?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"killed": killed})))
}

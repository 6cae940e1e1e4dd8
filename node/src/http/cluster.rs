//! `GET /api/v1/signer/cluster/status`: leader, term, members and every member's applied index.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::web::{Data, Json};
use stella_api::{ClusterStatus, MemberStatus};
use stella_cluster::NodeStatus;

use super::{ApiProblem, AppState};

#[utoipa::path(get, operation_id = "getClusterStatus", path = stella_api::CLUSTER_STATUS_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"])), tag = "operations",
    responses((status = 200, description = "Leader, term and every member's progress", body = ClusterStatus)))]
pub async fn status(
    state: Data<AppState>,
    req: HttpRequest,
) -> Result<Json<ClusterStatus>, ApiProblem> {
    super::authenticate_reader(&state, &req).await?;
    let cluster = state.cluster();
    let me = cluster.status();
    let mut members = Vec::new();
    let mut leader_status: Option<NodeStatus> = None;
    for (id, addr) in &me.nodes {
        let status: Option<NodeStatus> = if *id == me.node_id {
            Some(me.clone())
        } else {
            cluster
                .peers()
                .get(
                    &addr.peer_url,
                    "/peer/v1/status",
                    Duration::from_millis(500),
                )
                .await
                .ok()
        };
        if Some(*id) == me.leader {
            leader_status = status.clone();
        }
        members.push(MemberStatus {
            node_id: *id,
            role: if me.voters.contains(id) {
                "voter"
            } else {
                "learner"
            }
            .into(),
            peer_url: addr.peer_url.clone(),
            api_url: addr.api_url.clone(),
            reachable: status.is_some(),
            state: status.as_ref().map(|s| s.state.clone()),
            applied_index: status.as_ref().and_then(|s| s.applied_index),
            last_log_index: status.as_ref().and_then(|s| s.last_log_index),
            snapshot_index: status.as_ref().and_then(|s| s.snapshot_index),
            purged_index: status.as_ref().and_then(|s| s.purged_index),
        });
    }
    Ok(Json(ClusterStatus {
        leader: me.leader,
        term: me.term,
        // The leader applies what it commits; its applied index is the committed index it has acted on.
        commit_index: leader_status.and_then(|s| s.applied_index),
        answered_by: me.node_id,
        members,
    }))
}

//! The node's background tasks and its shutdown: readiness announcement, failing closed when
//! Raft stops, pre-authentication summaries, and the graceful drain and leadership hand-over
//! on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use stella_cluster::ClusterHandle;

use super::EXIT_STORAGE_FAILED;
use crate::Error;
use crate::admission::Admission;
use crate::signing::SigningService;

/// Logs "stella-signer ready" once, when readiness first says so: a node of a cluster is ready
/// only after it was made a member (`cluster init`/`join`) and caught up, not when it listens.
pub(super) fn announce_ready(
    health: crate::readiness::NodeHealth,
    cluster: ClusterHandle,
    admission: Arc<Admission>,
    url: String,
) {
    tokio::spawn(async move {
        loop {
            let report = health.report(&cluster, &admission).await;
            if report.status == "ready" {
                tracing::info!(url = %url, node_id = cluster.node_id(), "stella-signer ready");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Fails closed when Raft stops for good (openraft's core quits on a storage error, e.g. a full
/// disk): a node that can neither append nor apply must not linger answering 408s and slow
/// 503s. It exits at once — everything it acknowledged is already durable — and its supervisor
/// (systemd `Restart=on-failure`, `deploy/systemd/`) starts it again; it serves once its disk
/// has room, catching up from the log and its peers like any restarted node.
pub(super) fn spawn_fail_closed(cluster: stella_cluster::ClusterHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            // An orderly shutdown stops Raft too: that is not a failure.
            if let Some(failure) = cluster.raft_failure() {
                tracing::error!(
                    exit_code = EXIT_STORAGE_FAILED,
                    failure = %failure,
                    "Raft stopped on a storage error (is the disk full?): failing closed; the supervisor restarts this node"
                );
                std::process::exit(EXIT_STORAGE_FAILED);
            }
        }
    });
}

/// Every `every`, the refusals before authentication this node counted go into one audit record.
pub(super) fn spawn_preauth_summaries(signing: SigningService, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            signing.audit_preauth_summary().await;
        }
    });
}

/// What a graceful shutdown stops, in order.
pub(super) struct Shutdown {
    pub(super) client: actix_web::dev::ServerHandle,
    pub(super) peer: Option<actix_web::dev::ServerHandle>,
    pub(super) cluster: ClusterHandle,
    pub(super) shutting_down: Arc<std::sync::atomic::AtomicBool>,
    pub(super) grace: Duration,
}

/// On SIGTERM/SIGINT: not ready first (the balancer drains the node), then stop accepting and
/// finish the requests in flight (bounded by the server's shutdown timeout) while the peer
/// listener still carries Raft, then hand leadership to a caught-up voter, then stop the peer
/// listener. `Node::run` then stops the actors and Raft.
pub(super) fn stop_on_signal(shutdown: Shutdown) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(Error::io("installing the SIGTERM handler"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(Error::io("installing the SIGINT handler"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: not ready, draining");
        shutdown
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        tokio::time::sleep(shutdown.grace).await;
        shutdown.client.stop(true).await;
        if shutdown.peer.is_some() {
            transfer_leadership(&shutdown.cluster).await;
        }
        if let Some(peer) = shutdown.peer {
            peer.stop(true).await;
        }
    });
    Ok(())
}

/// If this node leads: stop campaigning, let the most caught-up voter have the whole log, and
/// ask it to campaign at once (openraft 0.9 has no transfer call; this is Raft's TimeoutNow,
/// done from outside). Its vote request wins with this node's vote: the other followers still
/// hold this leader's lease and refuse, but this node's own vote was last renewed when it was
/// elected, so it grants a caught-up candidate of a newer term and steps down. Heartbeats go on
/// meanwhile, so no follower starts a competing election. Bounded; on any failure the cluster
/// elects a leader by timeout as after a crash.
pub(super) async fn transfer_leadership(cluster: &ClusterHandle) {
    // A leader without a quorum cannot hand over (nobody could win); its followers elect.
    if !cluster.serving_leader() || cluster.voter_ids().len() < 2 {
        return;
    }
    cluster.begin_handover();
    let Some((target, addr)) = cluster.most_caught_up_voter() else {
        return;
    };
    // A candidacy can fail (a vote request that timed out on a busy machine, or a target that
    // fell behind again): ask up to three times. Before each ask the target's log must be as
    // long as this node's, or this node refuses its vote — signings that were running still
    // append their entries, so compare with the newest last index each time.
    let mut asks = 0;
    let mut moved = false;
    let mut caught_up = false;
    while asks < 3 && !moved {
        asks += 1;
        caught_up = cluster
            .raft()
            .wait(Some(Duration::from_secs(2)))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&target).cloned().flatten())
                        .map(|l| l.index)
                        >= m.last_log_index
                },
                "target caught up",
            )
            .await
            .is_ok();
        let _: Result<serde_json::Value, _> = cluster
            .peers()
            .post(
                &addr.peer_url,
                crate::http::peer_access::PEER_ELECT,
                &serde_json::json!({}),
                Duration::from_secs(2),
            )
            .await;
        moved = cluster
            .raft()
            .wait(Some(Duration::from_secs(1)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != cluster.node_id()),
                "leadership moved",
            )
            .await
            .is_ok();
    }
    tracing::info!(target, caught_up, asks, moved, "leadership transfer");
}

//! Running leader work: here if this node leads, else forwarded to the leader over the peer
//! channel — re-routed to the newest leader the moment one is known, bounded by a deadline
//! (ADR 0015). Every caller that must run on the leader (signing, refusal audits, configuration
//! changes, key generation) goes through [`at_leader`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stella_api::Problem;
use stella_cluster::ClusterHandle;

use crate::Error;

/// How long an operator's or the node's own call (audit, configuration, key generation) may
/// wait for the leader; signing requests use `[limits] request_deadline_seconds`.
const ADMIN_DEADLINE: Duration = Duration::from_secs(30);
/// Back-off before forwarding again to a leader that just failed to answer (cut short when a
/// new leader is known).
const RETRY_SAME_LEADER: Duration = Duration::from_millis(250);

/// The leader's answer to a forwarded call.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardAnswer<T> {
    Done(T),
    Refused(Problem),
    NotLeader,
}

/// Runs `local` if this node leads, else forwards `body` to the leader's `path`, until
/// `deadline`. A forward is abandoned as soon as this node learns of another leader or a
/// newer term (re-routed to the newest leader); a leader whose lease lapsed answers 503 at
/// once. Past the deadline the outcome is unknown: the caller retries with the same
/// proof or `Idempotency-Key` and gets the committed outcome if there is one.
pub async fn at_leader<B, T, F>(
    cluster: &ClusterHandle,
    path: &str,
    body: &B,
    deadline: tokio::time::Instant,
    local: impl Fn() -> F,
) -> Result<T, Error>
where
    B: Serialize,
    T: DeserializeOwned,
    F: std::future::Future<Output = Result<T, Error>>,
{
    // Waits (bounded) for this node to learn of a leader other than `leader` in `term`.
    let moved_on = async |leader: u64, term: u64, at_most: Duration| {
        let until = deadline.min(tokio::time::Instant::now() + at_most);
        let _ = tokio::time::timeout_at(until, cluster.leader_changed(leader, term)).await;
    };
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let Some((leader_id, leader)) = cluster.wait_for_leader(deadline - now).await else {
            break;
        };
        let term = cluster.term();
        if leader_id == cluster.node_id() {
            if cluster.lease_lapsed() {
                return Err(Error::Unavailable(
                    "this node lost contact with its quorum; retry (another node may lead now)"
                        .into(),
                ));
            }
            match tokio::time::timeout_at(deadline, local()).await {
                Err(_) => break,
                Ok(Err(Error::NotLeader)) => {
                    moved_on(leader_id, term, Duration::from_millis(50)).await;
                    continue;
                }
                Ok(other) => return other,
            }
        }
        let forward = cluster.peers().post::<B, ForwardAnswer<T>>(
            &leader.peer_url,
            path,
            body,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        );
        let answer = tokio::select! {
            biased;
            answer = forward => Some(answer),
            () = cluster.leader_changed(leader_id, term) => None,
        };
        match answer {
            None => {
                metrics::counter!(crate::telemetry::REROUTES, "why" => "leader_changed")
                    .increment(1);
                tracing::info!(
                    leader = leader_id,
                    "a newer leader is known; re-routing the forward"
                );
            }
            Some(Ok(ForwardAnswer::Done(value))) => return Ok(value),
            Some(Ok(ForwardAnswer::Refused(problem))) => return Err(Error::Remote(problem)),
            Some(Ok(ForwardAnswer::NotLeader)) => {
                moved_on(leader_id, term, Duration::from_millis(100)).await;
            }
            Some(Err(e)) => {
                metrics::counter!(crate::telemetry::REROUTES, "why" => "unreachable").increment(1);
                tracing::warn!(leader = leader_id, error = %e, "forwarding to the leader failed; re-routing");
                // Give the election time to replace it before trying it again.
                moved_on(leader_id, term, RETRY_SAME_LEADER).await;
            }
        }
    }
    Err(Error::Unavailable(
        "no leader answered before the request's deadline (the cluster has no quorum or is electing one); the outcome is unknown: retry with the same proof or Idempotency-Key".into(),
    ))
}

pub fn admin_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + ADMIN_DEADLINE
}

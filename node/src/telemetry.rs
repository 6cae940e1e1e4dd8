//! Logs (tracing, JSON lines on stdout) and metrics (Prometheus text at `/metrics`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub const SIGN_LATENCY: &str = "stella_signer_sign_latency_seconds";
pub const REQUESTS: &str = "stella_signer_sign_requests_total";
pub const KEY_USAGE: &str = "stella_signer_key_usage_total";
pub const RAFT_BATCH: &str = "stella_signer_raft_batch_size";
pub const ADMISSION_DENIALS: &str = "stella_signer_admission_denials_total";
pub const POE_LOOKUPS: &str = "stella_signer_poe_lookups_total";
pub const POE_OUTAGES: &str = "stella_signer_poe_introspection_failures_total";
pub const POE_STATE: &str = "stella_signer_poe_decisions_total";
pub const QUOTA_HITS: &str = "stella_signer_quota_throttled_total";
/// Supervised actors restarted after dying, by actor.
pub const ACTOR_RESTARTS: &str = "stella_signer_actor_restarts_total";
/// Forwards to the leader abandoned and sent again, by why (`leader_changed`, `unreachable`).
pub const REROUTES: &str = "stella_signer_forward_reroutes_total";
/// Signing requests answered with an earlier attempt's committed outcome (retries).
pub const IDEMPOTENT_REPLIES: &str = "stella_signer_idempotent_replies_total";
pub const JWKS_REFRESH: &str = "stella_signer_jwks_refresh_total";
pub const PROVENANCE_LOOKUPS: &str = "stella_signer_release_registry_lookups_total";
pub const PEER_REFUSALS: &str = "stella_signer_peer_refusals_total";
/// Records in this node's audit tree, and in the checkpoint it serves.
pub const TREE_SIZE: &str = "stella_signer_audit_tree_size";
pub const CHECKPOINT_SIZE: &str = "stella_signer_audit_checkpoint_size";
/// Seconds since the served checkpoint was cut (by the leader's clock).
pub const CHECKPOINT_AGE: &str = "stella_signer_audit_checkpoint_age_seconds";

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// JSON logs; the level comes from `STELLA_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("STELLA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_target(true)
        .try_init();
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn init_metrics() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(SIGN_LATENCY.into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(RAFT_BATCH.into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
                    )
                })
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    let _ = metrics::set_global_recorder(recorder);
                    describe();
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics recorder could not be configured");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_histogram!(
        SIGN_LATENCY,
        metrics::Unit::Seconds,
        "Time to answer a signing request, Raft commit of its audit record included"
    );
    metrics::describe_counter!(
        REQUESTS,
        "Signing requests by outcome (signed or problem code)"
    );
    metrics::describe_counter!(KEY_USAGE, "Signatures produced, by key id");
    metrics::describe_histogram!(
        RAFT_BATCH,
        "Commands carried by one Raft log entry (group commit)"
    );
    metrics::describe_counter!(
        ADMISSION_DENIALS,
        "Requests refused by admission, by problem code and check"
    );
    metrics::describe_counter!(
        POE_LOOKUPS,
        "Entitlement-cache look-ups: hit, miss (introspection) or coalesced"
    );
    metrics::describe_counter!(
        POE_OUTAGES,
        "PoE introspections that failed (licensing service unreachable or broken)"
    );
    metrics::describe_counter!(
        POE_STATE,
        "Admitted requests by PoE state (valid, stale, bypassed)"
    );
    metrics::describe_counter!(QUOTA_HITS, "Requests throttled by plan quota, by plan");
    metrics::describe_counter!(
        ACTOR_RESTARTS,
        "Supervised actors (quota-ledger, entitlement-cache, key-shard) restarted after dying"
    );
    metrics::describe_counter!(
        REROUTES,
        "Forwards to the leader abandoned for a newer leader or an unreachable one"
    );
    metrics::describe_counter!(
        IDEMPOTENT_REPLIES,
        "Signing requests answered with the committed outcome of an earlier attempt"
    );
    metrics::describe_counter!(JWKS_REFRESH, "Authority JWKS refreshes by result");
    metrics::describe_counter!(
        PROVENANCE_LOOKUPS,
        "Registry look-ups for scanner release signatures (cache misses)"
    );
    metrics::describe_counter!(
        PEER_REFUSALS,
        "Peer-listener calls refused because the certificate's role may not make them"
    );
    metrics::describe_gauge!(TREE_SIZE, "Audit records in this node's Merkle tree");
    metrics::describe_gauge!(
        CHECKPOINT_SIZE,
        "Tree size of the signed checkpoint this node serves"
    );
    metrics::describe_gauge!(
        CHECKPOINT_AGE,
        "Seconds since the served checkpoint was cut (by the leader's clock)"
    );
}

/// Counts one signing request under `signed` or its problem code, with its latency.
pub fn record_sign(result: Result<(), &crate::Error>, elapsed: Duration) {
    let outcome = match result {
        Ok(()) => "signed",
        Err(e) => e.code().as_str(),
    };
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(SIGN_LATENCY, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Transparency-log gauges, refreshed on every scrape: a checkpoint that stops growing while
/// the tree grows, or ages, is what an alert watches.
pub fn record_log(tree: &stella_state::log_tree::LogTree, now_ms: u64) {
    metrics::gauge!(TREE_SIZE).set(tree.head().size as f64);
    if let Some(checkpoint) = &tree.checkpoint {
        metrics::gauge!(CHECKPOINT_SIZE).set(checkpoint.head.size as f64);
        metrics::gauge!(CHECKPOINT_AGE)
            .set(now_ms.saturating_sub(checkpoint.cut_at_ms) as f64 / 1000.0);
    }
}

/// Raft gauges, refreshed on every scrape: who leads, in which term, how far this node got.
pub fn record_cluster(status: &stella_cluster::NodeStatus) {
    metrics::gauge!("stella_signer_raft_term").set(status.term as f64);
    metrics::gauge!("stella_signer_raft_is_leader").set(if status.leader == Some(status.node_id) {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("stella_signer_raft_leader_known").set(if status.leader.is_some() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("stella_signer_raft_applied_index")
        .set(status.applied_index.unwrap_or(0) as f64);
    metrics::gauge!("stella_signer_raft_last_log_index")
        .set(status.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("stella_signer_raft_voters").set(status.voters.len() as f64);
}

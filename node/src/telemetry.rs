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
/// Speculative signatures discarded because `apply` found the plan's window spent (ADR 0028).
pub const SPECULATIVE_DISCARDS: &str = "stella_signer_speculative_discards_total";
/// Signing requests refused at the front door because the node had its bound in progress.
pub const SHED: &str = "stella_signer_shed_total";
/// Signing requests in progress on this node (the front door's count), at scrape time.
pub const IN_FLIGHT: &str = "stella_signer_inflight_signings";
pub const JWKS_REFRESH: &str = "stella_signer_jwks_refresh_total";
pub const PROVENANCE_LOOKUPS: &str = "stella_signer_release_registry_lookups_total";
pub const PEER_REFUSALS: &str = "stella_signer_peer_refusals_total";
/// Records in this node's audit tree, and in the checkpoint it serves.
pub const TREE_SIZE: &str = "stella_signer_audit_tree_size";
pub const CHECKPOINT_SIZE: &str = "stella_signer_audit_checkpoint_size";
/// Seconds since the served checkpoint was cut (by the leader's clock).
pub const CHECKPOINT_AGE: &str = "stella_signer_audit_checkpoint_age_seconds";

/// Seconds from proposing a batch of commands (audit records, reservations) to its commit.
pub const COMMIT_LATENCY: &str = "stella_signer_raft_commit_seconds";
/// Refusals before the caller was known (bad or missing tokens, spent source budgets), by code.
pub const PREAUTH_REFUSALS: &str = "stella_signer_preauth_refusals_total";
/// Per plan: the largest share of its window quota any tenant has used (0–1).
pub const QUOTA_USAGE: &str = "stella_signer_quota_usage_ratio";
/// Keys in the replicated registry, by state (`active`, `retired`, `revoked`).
pub const KEYS: &str = "stella_signer_registry_keys";
/// 1 while the PoE emergency bypass is on.
pub const BYPASS_ACTIVE: &str = "stella_signer_poe_bypass_active";
/// When each certificate this node serves or trusts stops being valid (Unix seconds).
pub const CERT_EXPIRY: &str = "stella_signer_certificate_expiry_timestamp_seconds";
/// Per plan: when its oldest active key is due for rotation under `max_key_age_seconds` (Unix
/// seconds; +Inf for a plan without a cadence or without an active key).
pub const KEY_ROTATION_DUE: &str = "stella_signer_key_rotation_due_timestamp_seconds";
/// Per plan: when that key stops signing (due + grace; +Inf likewise).
pub const KEY_SIGNING_ENDS: &str = "stella_signer_key_signing_ends_timestamp_seconds";
/// Entries in this node's log not yet applied.
pub const APPLY_LAG: &str = "stella_signer_raft_apply_lag_entries";
/// On the leader: entries each follower has yet to acknowledge, by peer node id.
pub const REPLICATION_LAG: &str = "stella_signer_raft_replication_lag_entries";

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
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_LATENCY.into()), &buckets)
                })
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
    metrics::describe_counter!(
        SPECULATIVE_DISCARDS,
        "Signatures made before the commit and discarded: the plan's last unit went to another signing"
    );
    metrics::describe_counter!(
        SHED,
        "Signing requests refused with 503 before any work: the node had max_inflight_signings in progress"
    );
    metrics::describe_gauge!(
        IN_FLIGHT,
        "Signing requests in progress on this node, out of max_inflight_signings"
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
    metrics::describe_histogram!(
        COMMIT_LATENCY,
        metrics::Unit::Seconds,
        "Time from proposing a batch of commands (audit records included) to its commit"
    );
    metrics::describe_counter!(
        PREAUTH_REFUSALS,
        "Requests refused before the caller was known, by problem code"
    );
    metrics::describe_gauge!(
        QUOTA_USAGE,
        "Per plan, the largest share of its window quota any tenant has used (0 to 1)"
    );
    metrics::describe_gauge!(KEYS, "Keys in the replicated registry, by state");
    metrics::describe_gauge!(BYPASS_ACTIVE, "1 while the PoE emergency bypass is on");
    metrics::describe_gauge!(
        CERT_EXPIRY,
        "When each certificate this node serves or trusts expires (Unix seconds)"
    );
    metrics::describe_gauge!(APPLY_LAG, "Entries in this node's log not yet applied");
    metrics::describe_gauge!(
        REPLICATION_LAG,
        "On the leader, entries each follower has yet to acknowledge"
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

/// Creates, at zero, the series alert rules read as rates, so a rule sees `0` rather than no
/// data before the first event (a throttle, an outage, a failure).
pub fn zero_series(plans: &[crate::config::PlanConfig]) {
    for plan in plans {
        metrics::counter!(QUOTA_HITS, "plan" => plan.name.clone()).increment(0);
        metrics::gauge!(QUOTA_USAGE, "plan" => plan.name.clone()).set(0.0);
    }
    metrics::counter!(POE_OUTAGES).increment(0);
    for state in ["valid", "stale", "bypassed"] {
        metrics::counter!(POE_STATE, "state" => state).increment(0);
    }
    for outcome in ["signed", "signing_unavailable", "internal_error"] {
        metrics::counter!(REQUESTS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(PREAUTH_REFUSALS, "code" => "invalid_token").increment(0);
    metrics::counter!(ACTOR_RESTARTS, "actor" => "quota-ledger").increment(0);
    // An alert's `rate()` needs the series before the first refusal.
    metrics::counter!(SHED).increment(0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
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

/// One signing request shed at the front door (`shedding`).
pub fn record_shed() {
    metrics::counter!(SHED).increment(1);
}

/// The front door's count of signing requests in progress.
pub fn record_front_door(in_flight: usize) {
    metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
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
    let last = status.last_log_index.unwrap_or(0);
    metrics::gauge!(APPLY_LAG).set(last.saturating_sub(status.applied_index.unwrap_or(0)) as f64);
    for (peer, matched) in &status.replication {
        if *peer != status.node_id {
            let behind = matched.map_or(last, |m| last.saturating_sub(m));
            metrics::gauge!(REPLICATION_LAG, "peer" => peer.to_string()).set(behind as f64);
        }
    }
}

/// Whether the state-derived gauges are due for a refresh (at most once a second per process).
pub fn state_refresh_due(now_ms: u64) -> bool {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    due(&LAST, now_ms, 1000)
}

/// Claims the refresh for `now_ms` if the last one is at least `every_ms` old. Pure but for the
/// atomic it is given.
fn due(last: &std::sync::atomic::AtomicU64, now_ms: u64, every_ms: u64) -> bool {
    use std::sync::atomic::Ordering;
    let previous = last.load(Ordering::Relaxed);
    (previous == 0 || now_ms.saturating_sub(previous) >= every_ms)
        && last
            .compare_exchange(
                previous,
                now_ms.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// Gauges read from the replicated state on a scrape: quota usage per plan, the key
/// registry, the PoE bypass.
pub fn record_state(
    state: &stella_state::State,
    plans: &[crate::config::PlanConfig],
    now_ms: u64,
    bypass_on: bool,
) {
    for (plan, ratio) in quota_usage(state, plans, now_ms) {
        metrics::gauge!(QUOTA_USAGE, "plan" => plan).set(ratio);
    }
    for (key_state, count) in key_counts(state) {
        metrics::gauge!(KEYS, "state" => key_state).set(count as f64);
    }
    for (plan, due, ends) in key_rotation(state, plans) {
        metrics::gauge!(KEY_ROTATION_DUE, "plan" => plan.clone()).set(due);
        metrics::gauge!(KEY_SIGNING_ENDS, "plan" => plan).set(ends);
    }
    metrics::gauge!(BYPASS_ACTIVE).set(if bypass_on { 1.0 } else { 0.0 });
}

/// Per plan offered, the largest share of the window quota any tenant has used in its current
/// window (0 for a plan nobody used lately). One pass over the ledgers. Pure.
pub fn quota_usage(
    state: &stella_state::State,
    plans: &[crate::config::PlanConfig],
    now_ms: u64,
) -> Vec<(String, f64)> {
    let mut busiest: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let windows: std::collections::BTreeMap<&str, u64> = plans
        .iter()
        .map(|p| (p.name.as_str(), p.window_seconds.saturating_mul(1000)))
        .collect();
    for (key, ledger) in &state.ledgers {
        if let Some(window_ms) = windows.get(key.plan.as_str())
            && now_ms < ledger.window_start_ms.saturating_add(*window_ms)
        {
            let used = busiest.entry(key.plan.as_str()).or_default();
            *used = (*used).max(ledger.used);
        }
    }
    plans
        .iter()
        .map(|plan| {
            let used = busiest.get(plan.name.as_str()).copied().unwrap_or(0);
            let ratio = if plan.signatures_per_window == 0 {
                0.0
            } else {
                (used as f64 / plan.signatures_per_window as f64).min(1.0)
            };
            (plan.name.clone(), ratio)
        })
        .collect()
}

/// Per plan: (plan, rotation due, signing ends) in Unix seconds for its oldest active key;
/// +Inf when the plan has no rotation cadence or no active key, so every plan's series exists
/// and an alert on it never fires by accident. Pure.
pub fn key_rotation(
    state: &stella_state::State,
    plans: &[crate::config::PlanConfig],
) -> Vec<(String, f64, f64)> {
    plans
        .iter()
        .map(
            |plan| match crate::key_policy::earliest_rotation_due(plan, state.keys.values()) {
                Some(due_ms) => {
                    let ends_ms =
                        due_ms.saturating_add(plan.key_age_grace_seconds.saturating_mul(1000));
                    (
                        plan.name.clone(),
                        due_ms as f64 / 1000.0,
                        ends_ms as f64 / 1000.0,
                    )
                }
                None => (plan.name.clone(), f64::INFINITY, f64::INFINITY),
            },
        )
        .collect()
}

/// Keys in the registry by state, every state named (zero included). Pure.
pub fn key_counts(state: &stella_state::State) -> [(&'static str, u64); 4] {
    use stella_state::command::KeyState;
    let count = |wanted: KeyState| state.keys.values().filter(|k| k.state == wanted).count() as u64;
    [
        ("active", count(KeyState::Active)),
        ("retired", count(KeyState::Retired)),
        ("revoked", count(KeyState::Revoked)),
        ("standby", count(KeyState::Standby)),
    ]
}

/// Sets the expiry gauge of each certificate in `pems` (name, PEM chain; the chain's earliest
/// `notAfter` counts). Unreadable files are skipped: configuration loading reports them.
pub fn record_certificates(pems: &[(&'static str, Vec<u8>)]) {
    for (name, pem) in pems {
        if let Some(expiry) = earliest_expiry(pem) {
            metrics::gauge!(CERT_EXPIRY, "certificate" => *name).set(expiry as f64);
        }
    }
}

/// The earliest `notAfter` (Unix seconds) of the certificates in a PEM chain. Pure.
pub fn earliest_expiry(pem: &[u8]) -> Option<u64> {
    let chain = x509_cert::Certificate::load_pem_chain(pem).ok()?;
    chain
        .iter()
        .map(|c| {
            c.tbs_certificate
                .validity
                .not_after
                .to_unix_duration()
                .as_secs()
        })
        .min()
}

#[cfg(test)]
mod tests {
    use stella_state::State;
    use stella_state::machine::{Ledger, LedgerKey};

    use super::*;

    fn plan(name: &str, limit: u64) -> crate::config::PlanConfig {
        crate::config::PlanConfig {
            name: name.into(),
            signatures_per_window: limit,
            window_seconds: 60,
            max_concurrent: 4,
            max_artifact_bytes: 1024,
            shared_default_key: false,
            require_hardware_backed: false,
            max_key_age_seconds: None,
            key_age_grace_seconds: 0,
        }
    }

    fn ledger(state: &mut State, tenant: &str, plan: &str, start_ms: u64, used: u64) {
        state.ledgers.insert(
            LedgerKey {
                tenant: tenant.into(),
                plan: plan.into(),
            },
            Ledger {
                window_start_ms: start_ms,
                used,
                in_flight: 0,
            },
        );
    }

    #[test]
    fn quota_usage_is_the_busiest_tenant_of_each_plan_in_its_current_window() {
        let mut state = State::default();
        ledger(&mut state, "a", "team", 100_000, 30);
        ledger(&mut state, "b", "team", 100_000, 90);
        // b's older window on another plan has ended: it no longer counts.
        ledger(&mut state, "b", "free", 0, 10);
        ledger(&mut state, "c", "free", 100_000, u64::MAX);
        let plans = [
            plan("team", 100),
            plan("free", 10),
            plan("idle", 5),
            plan("zero", 0),
        ];
        let usage = quota_usage(&state, &plans, 120_000);
        assert_eq!(
            usage,
            vec![
                ("team".to_owned(), 0.9),
                ("free".to_owned(), 1.0),
                ("idle".to_owned(), 0.0),
                ("zero".to_owned(), 0.0),
            ]
        );
        // After every window ended, nothing is in use.
        assert!(
            quota_usage(&state, &plans, 10_000_000)
                .iter()
                .all(|(_, r)| *r == 0.0)
        );
    }

    #[test]
    fn state_gauges_refresh_at_most_once_a_second() {
        let last = std::sync::atomic::AtomicU64::new(0);
        assert!(due(&last, 5_000, 1000), "the first scrape refreshes");
        assert!(!due(&last, 5_500, 1000), "half a second later: not again");
        assert!(due(&last, 6_000, 1000));
        assert!(
            !due(&last, 0, 1000),
            "a clock that went back does not refresh"
        );
    }

    #[test]
    fn key_counts_name_every_state() {
        assert_eq!(
            key_counts(&State::default()),
            [
                ("active", 0),
                ("retired", 0),
                ("revoked", 0),
                ("standby", 0)
            ]
        );
    }

    #[test]
    fn certificate_expiry_is_the_earliest_of_the_chain() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let late = params.self_signed(&key).expect("cert").pem();
        params.not_after = rcgen::date_time_ymd(2027, 6, 1);
        let early = params.self_signed(&key).expect("cert").pem();
        let chain = format!("{late}{early}");
        assert_eq!(earliest_expiry(chain.as_bytes()), Some(1_811_808_000));
        assert_eq!(earliest_expiry(b"not a certificate"), None);
    }
}

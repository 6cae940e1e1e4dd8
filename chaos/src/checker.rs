//! The oracle: the system's invariants checked against what the callers saw (the history) and
//! the audit logs every node holds once the cluster is healed. Pure: no I/O, unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use stella_state::{AuditRecord, Decision};

use crate::history::{Attempt, FaultEvent, History, Kind, Outcome};
use crate::schedule::FaultKind;

pub mod checkpoints;

/// One node's audit log, or why it could not be read.
pub struct NodeLog {
    pub node: usize,
    pub records: Result<Vec<AuditRecord>, String>,
}

pub struct Evidence<'a> {
    pub history: &'a History,
    pub logs: &'a [NodeLog],
    /// (tenant, signatures per window, window seconds)
    pub quotas: &'a [(String, u64, u64)],
    /// The nodes' request deadline plus what a busy machine may add, in ms.
    pub answer_within_ms: u64,
    /// The cluster converged after the final heal.
    pub converged: bool,
}

/// How many offending items an invariant lists (the count is always exact).
const SHOWN: usize = 25;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub name: &'static str,
    pub description: &'static str,
    pub holds: bool,
    /// Items checked.
    pub checked: usize,
    pub violations: usize,
    /// The first offending requests or records.
    pub examples: Vec<String>,
}

struct Tally {
    checked: usize,
    bad: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            checked: 0,
            bad: Vec::new(),
        }
    }
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.bad.push(what());
        }
    }
    fn verdict(self, name: &'static str, description: &'static str) -> Verdict {
        Verdict {
            name,
            description,
            holds: self.bad.is_empty(),
            checked: self.checked,
            violations: self.bad.len(),
            examples: self.bad.into_iter().take(SHOWN).collect(),
        }
    }
}

pub fn check(e: &Evidence<'_>) -> Vec<Verdict> {
    vec![
        acknowledged_committed(e),
        no_phantom_signings(e),
        chains_identical(e),
        quota(e),
        dpop_single_use(e),
        bundles_verify(e),
        error_contract(e),
        no_hung_requests(e),
        linearizable_reads(e),
        stale_reads_committed(e),
        cluster_recovers(e),
    ]
}

/// The reference log: the longest readable one (a node that fell behind holds a prefix of it;
/// which nodes differ from it is `audit-chains-identical`'s business).
fn reference_log<'a>(e: &'a Evidence<'_>) -> &'a [AuditRecord] {
    e.logs
        .iter()
        .filter_map(|l| l.records.as_ref().ok())
        .max_by_key(|r| r.len())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn signs<'a>(e: &Evidence<'a>) -> impl Iterator<Item = &'a Attempt> {
    e.history.attempts.iter().filter(|a| a.kind == Kind::Sign)
}

/// A node's records by audit id (`None`: unreadable) and its signed records per request id.
type NodeIndex<'a> = (
    usize,
    Option<HashMap<&'a str, &'a AuditRecord>>,
    HashMap<&'a str, usize>,
);

/// Every acknowledged signing has exactly one committed `signed` record, with its audit id,
/// request id and bundle hash, on every node.
fn acknowledged_committed(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    let per_node: Vec<NodeIndex<'_>> = e
        .logs
        .iter()
        .map(|l| match &l.records {
            Ok(records) => {
                let by_id = records.iter().map(|r| (r.audit_id.as_str(), r)).collect();
                let mut signed = HashMap::new();
                for r in records
                    .iter()
                    .filter(|r| r.draft.decision == Decision::Signed)
                {
                    *signed.entry(r.draft.request_id.as_str()).or_insert(0) += 1;
                }
                (l.node, Some(by_id), signed)
            }
            Err(_) => (l.node, None, HashMap::new()),
        })
        .collect();
    for a in signs(e).filter(|a| a.outcome == Outcome::Ok) {
        let audit_id = a.audit_id.as_deref().unwrap_or("");
        let bundle = a.bundle_sha256.as_deref();
        for (node, by_id, signed) in &per_node {
            let found = by_id.as_ref().and_then(|m| m.get(audit_id));
            let ok = found.is_some_and(|r| {
                r.draft.decision == Decision::Signed
                    && r.draft.request_id == a.request_id
                    && r.draft.bundle_sha256.as_deref() == bundle
            }) && signed.get(a.request_id.as_str()) == Some(&1);
            t.check(ok, || {
                format!(
                    "{} (acknowledged at {} ms as {audit_id}, bundle {}): node {node} has {} and {} signed record(s) for the request",
                    a.request_id,
                    a.end_ms,
                    bundle.unwrap_or("-"),
                    match found {
                        Some(r) => format!("{:?} for {} with bundle {}", r.draft.decision, r.draft.request_id, r.draft.bundle_sha256.as_deref().unwrap_or("-")),
                        None => "no such record".to_owned(),
                    },
                    signed.get(a.request_id.as_str()).copied().unwrap_or(0)
                )
            });
        }
    }
    t.verdict(
        "acknowledged-signings-committed",
        "every acknowledged signing has exactly one committed audit record with its bundle hash on every node",
    )
}

/// No signed record for a request no client sent, or one its client was definitely refused.
fn no_phantom_signings(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    let mut by_request: HashMap<&str, Vec<&Attempt>> = HashMap::new();
    for a in signs(e) {
        by_request.entry(a.request_id.as_str()).or_default().push(a);
    }
    for r in reference_log(e).iter().filter(|r| {
        r.draft.decision == Decision::Signed && r.draft.request_id.starts_with("chaos-")
    }) {
        let tries = by_request.get(r.draft.request_id.as_str());
        let seen = tries.is_some_and(|tries| {
            tries.iter().any(|a| {
                matches!(
                    a.outcome,
                    Outcome::Ok | Outcome::Unavailable | Outcome::Transport | Outcome::Timeout
                )
            })
        });
        t.check(seen, || {
            format!(
                "{} signed {} for {} — {}",
                r.audit_id,
                r.draft.bundle_sha256.as_deref().unwrap_or("-"),
                r.draft.request_id,
                match tries {
                    None => "no client sent it".to_owned(),
                    Some(tries) => format!(
                        "its client was told {:?}",
                        tries.iter().map(|a| a.status).collect::<Vec<_>>()
                    ),
                }
            )
        });
    }
    t.verdict(
        "no-phantom-signings",
        "no audit record claims a signing that no client saw succeed or fail",
    )
}

/// The audit chain verifies on every node and is the same everywhere.
fn chains_identical(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    let reference = reference_log(e);
    for log in e.logs {
        match &log.records {
            Err(why) => t.check(false, || format!("node {}: {why}", log.node)),
            Ok(records) => {
                let verified = stella_state::verify_chain(records.iter(), None);
                t.check(verified.is_ok(), || {
                    format!(
                        "node {}: {}",
                        log.node,
                        verified.err().map(|e| e.to_string()).unwrap_or_default()
                    )
                });
                let same = records.len() == reference.len()
                    && records.iter().zip(reference).all(|(a, b)| a.hash == b.hash);
                t.check(same, || {
                    let diverged = records
                        .iter()
                        .zip(reference)
                        .find(|(a, b)| a.hash != b.hash)
                        .map(|(a, _)| format!("first difference at seq {}", a.seq))
                        .unwrap_or_default();
                    format!(
                        "node {}: {} records, the longest log {} {diverged}",
                        log.node,
                        records.len(),
                        reference.len()
                    )
                });
            }
        }
    }
    t.verdict(
        "audit-chains-identical",
        "the audit hash chain verifies on every node and is identical everywhere",
    )
}

/// Per tenant and window, signed records never exceed the plan's quota.
fn quota(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for (tenant, limit, window_s) in e.quotas {
        let window_ms = window_s.saturating_mul(1000).max(1);
        let mut per_window: BTreeMap<u64, (u64, Vec<&str>)> = BTreeMap::new();
        for r in reference_log(e)
            .iter()
            .filter(|r| r.draft.decision == Decision::Signed && &r.draft.tenant == tenant)
        {
            let ms = record_ms(r).unwrap_or(0);
            let entry = per_window.entry(ms / window_ms).or_default();
            entry.0 += 1;
            entry.1.push(r.audit_id.as_str());
        }
        for (window, (granted, ids)) in &per_window {
            t.check(granted <= limit, || {
                format!(
                    "tenant {tenant}, window {window} ({window_s} s): {granted} signatures granted, quota {limit}; the last: {:?}",
                    ids.iter().rev().take(3).collect::<Vec<_>>()
                )
            });
        }
    }
    t.verdict(
        "quota-never-exceeded",
        "per tenant and window, granted signatures never exceed the plan's quota",
    )
}

fn record_ms(r: &AuditRecord) -> Option<u64> {
    let t = time::OffsetDateTime::parse(
        &r.draft.time,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// No DPoP proof is accepted for two signings; a replayed proof with another body is refused.
fn dpop_single_use(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    let mut by_proof: HashMap<&str, HashSet<&str>> = HashMap::new();
    for a in e
        .history
        .attempts
        .iter()
        .filter(|a| matches!(a.kind, Kind::Sign | Kind::Replay))
    {
        if let (Some(jti), Some(id), Outcome::Ok) = (&a.proof_jti, &a.audit_id, a.outcome) {
            by_proof
                .entry(jti.as_str())
                .or_default()
                .insert(id.as_str());
        }
        if a.kind == Kind::Replay {
            let original = a.read.as_ref().and_then(|r| r.wanted_audit_id.as_deref());
            let accepted = a.outcome == Outcome::Ok && a.audit_id.as_deref() != original;
            t.check(!accepted, || {
                format!(
                    "{}: the proof of {} was accepted again (status {:?}, audit id {:?})",
                    a.request_id,
                    original.unwrap_or("-"),
                    a.status,
                    a.audit_id
                )
            });
        }
    }
    for (jti, ids) in &by_proof {
        t.check(ids.len() <= 1, || format!("proof {jti} answered {ids:?}"));
    }
    for r in reference_log(e)
        .iter()
        .filter(|r| r.draft.request_id.starts_with("replay-"))
    {
        t.check(r.draft.decision != Decision::Signed, || {
            format!(
                "{} signed the replayed request {}",
                r.audit_id, r.draft.request_id
            )
        });
    }
    t.verdict(
        "dpop-proof-single-use",
        "no DPoP proof is accepted twice: one signing per proof, replays refused",
    )
}

fn bundles_verify(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for a in signs(e).filter(|a| a.outcome == Outcome::Ok) {
        let result = a.bundle_check.clone().unwrap_or(Err("not checked".into()));
        t.check(result.is_ok(), || {
            format!(
                "{} ({:?}): {}",
                a.request_id,
                a.audit_id,
                result.err().unwrap_or_default()
            )
        });
    }
    t.verdict(
        "bundles-verify-offline",
        "every returned bundle verifies offline with the signing key and hashes to bundleSha256",
    )
}

/// Only 429/503 with a numeric Retry-After, or problem+json 4xx for client mistakes (honest
/// signing clients make none); never any other 5xx.
fn error_contract(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for a in &e.history.attempts {
        let Some(status) = a.status else { continue };
        let retry_after_ok = a
            .retry_after
            .as_deref()
            .is_some_and(|v| v.trim().parse::<u64>().is_ok());
        let ok = match a.outcome {
            Outcome::Ok => true,
            Outcome::Throttled | Outcome::Unavailable => retry_after_ok && a.problem_json,
            Outcome::Refused => a.problem_json && a.code.is_some() && a.kind == Kind::Replay,
            _ => false,
        };
        t.check(ok, || {
            format!(
                "{} {:?} → node {}: {status} code {:?} Retry-After {:?} problem+json {}",
                a.request_id, a.kind, a.node, a.code, a.retry_after, a.problem_json
            )
        });
    }
    t.verdict(
        "error-contract",
        "only 429/503 with Retry-After, or problem+json 4xx for a client's mistake (a replay); never 500",
    )
}

/// The node was down or frozen during the attempt (then a caller's timeout is the caller's).
fn node_faulted(faults: &[FaultEvent], node: usize, start: u64, end: u64) -> bool {
    faults.iter().any(|f| {
        let stops_node = matches!(
            f.kind,
            FaultKind::PauseLeader
                | FaultKind::PauseFollower
                | FaultKind::KillLeader
                | FaultKind::KillFollower
                | FaultKind::KillRandom
                | FaultKind::RestartLoop
                | FaultKind::ClockSkew
                | FaultKind::Membership
                | FaultKind::SnapshotCatchup
        );
        let until = f.settled_ms.unwrap_or(f.heal_ms);
        stops_node && f.nodes.contains(&node) && start <= until && end >= f.start_ms
    })
}

fn no_hung_requests(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for a in &e.history.attempts {
        let hung = a.took_ms() > e.answer_within_ms || a.outcome == Outcome::Timeout;
        let excused = node_faulted(&e.history.faults, a.node, a.start_ms, a.end_ms);
        t.check(!hung || excused, || {
            format!(
                "{} {:?} → node {}: {} ms ({}), sent at {} ms",
                a.request_id,
                a.kind,
                a.node,
                a.took_ms(),
                a.outcome.name(),
                a.start_ms
            )
        });
    }
    t.verdict(
        "no-hung-requests",
        "a node that runs answers within its deadline (plus slack), also when cut off",
    )
}

fn linearizable_reads(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for a in e
        .history
        .attempts
        .iter()
        .filter(|a| a.kind == Kind::ReadLinearizable)
    {
        if let Some(found) = a.read.as_ref().and_then(|r| r.found) {
            t.check(found, || {
                format!(
                    "{} on node {} at {} ms did not see {:?}",
                    a.request_id,
                    a.node,
                    a.start_ms,
                    a.read.as_ref().and_then(|r| r.wanted_audit_id.clone())
                )
            });
        }
    }
    t.verdict(
        "linearizable-reads",
        "a linearizable audit read includes every signing acknowledged before it started",
    )
}

fn stale_reads_committed(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    let committed: HashMap<&str, &str> = reference_log(e)
        .iter()
        .map(|r| (r.audit_id.as_str(), r.hash.as_str()))
        .collect();
    for a in e
        .history
        .attempts
        .iter()
        .filter(|a| a.kind == Kind::ReadStale)
    {
        for (id, hash) in a.read.iter().flat_map(|r| r.seen.iter()) {
            t.check(committed.get(id.as_str()) == Some(&hash.as_str()), || {
                format!(
                    "{} on node {} saw {id} {hash}, not in the final log",
                    a.request_id, a.node
                )
            });
        }
    }
    t.verdict(
        "stale-reads-committed",
        "a stale audit read only ever shows records of the final, committed log",
    )
}

fn cluster_recovers(e: &Evidence<'_>) -> Verdict {
    let mut t = Tally::new();
    for f in &e.history.faults {
        t.check(f.settled_ms.is_some() && f.errors.is_empty(), || {
            format!("fault {} ({}): {:?}", f.index, f.kind.name(), f.errors)
        });
    }
    t.check(e.converged, || {
        "the cluster did not converge after the final heal".to_owned()
    });
    t.verdict(
        "cluster-recovers",
        "after every heal all nodes are ready again, and the cluster converges at the end",
    )
}

/// Recovery after each fault: injected → first successful signing sent after the injection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub kind: &'static str,
    pub faults: usize,
    pub recovered: usize,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
    /// Signing attempts answered 200 during the faults of this kind / all of them.
    pub availability: f64,
}

/// Per fault (by index): ms from injection to the first acknowledged signing sent after it.
pub fn recovery_per_fault(history: &History) -> Vec<Option<u64>> {
    history
        .faults
        .iter()
        .map(|f| {
            history
                .attempts
                .iter()
                .filter(|a| {
                    a.kind == Kind::Sign && a.outcome == Outcome::Ok && a.start_ms >= f.start_ms
                })
                .map(|a| a.end_ms.saturating_sub(f.start_ms))
                .min()
        })
        .collect()
}

pub fn recoveries(history: &History) -> Vec<Recovery> {
    let per_fault = recovery_per_fault(history);
    let mut kinds: Vec<FaultKind> = history.faults.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let mut times: Vec<u64> = Vec::new();
            let mut faults = 0;
            let (mut ok, mut all) = (0usize, 0usize);
            for (f, r) in history.faults.iter().zip(&per_fault) {
                if f.kind != kind {
                    continue;
                }
                faults += 1;
                times.extend(r);
                for a in history.attempts.iter().filter(|a| {
                    a.kind == Kind::Sign && a.start_ms >= f.start_ms && a.start_ms < f.heal_ms
                }) {
                    all += 1;
                    ok += usize::from(a.outcome == Outcome::Ok);
                }
            }
            times.sort_unstable();
            Recovery {
                kind: kind.name(),
                faults,
                recovered: times.len(),
                p50_ms: percentile(&times, 0.5),
                p99_ms: percentile(&times, 0.99),
                max_ms: times.last().copied(),
                availability: if all == 0 {
                    1.0
                } else {
                    ok as f64 / all as f64
                },
            }
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests;

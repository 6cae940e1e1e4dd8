//! Refusals before the caller is known: counted, not audited one by one, and limited per source.
//!
//! A request whose token does not verify (none, garbage, forged, expired, another scheme) names
//! nobody, so recording it as its own Raft entry would let anyone on the network buy replicated,
//! never-pruned audit volume on every node. Instead this node counts such refusals by problem
//! code and source address and the node audits one summary record per period
//! (`SigningService::audit_preauth_summary`). Refusals of callers whose token verified keep their
//! own records. Each source also has a token bucket of failed authentications: a source that
//! spent it is refused (`rate_limited`, 429 + `Retry-After`) before any verification work, unless
//! its credential could be an honest caller's (a token this node verified, or one naming a key
//! the Authority publishes: behind a load balancer every caller shares the balancer's address,
//! and honest callers must not pay for a flood). Memory is bounded: at most `MAX_SOURCES`
//! buckets and `MAX_TALLY_ROWS` rows (the rest is counted under the source `other`).
//!
//! No I/O and no clock: times come in as Unix milliseconds, so the rules are tested directly.

/// Default budget of a source: failed authentications per second, and in a burst.
pub use crate::config::{DEFAULT_BURST, DEFAULT_FAILURES_PER_SECOND};

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

/// Buckets kept at once; past it, full buckets are dropped first, then every bucket.
const MAX_SOURCES: usize = 4096;
/// Distinct (code, source) rows in one period's tally; later sources count as `other`.
const MAX_TALLY_ROWS: usize = 64;
/// Rows written into one summary record (the largest first).
const SUMMARY_ROWS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreAuthPolicy {
    /// Failed authentications per second a source may sustain.
    pub failures_per_second: f64,
    /// How many it may have in a burst.
    pub burst: f64,
}

impl Default for PreAuthPolicy {
    fn default() -> PreAuthPolicy {
        PreAuthPolicy {
            failures_per_second: f64::from(DEFAULT_FAILURES_PER_SECOND),
            burst: f64::from(DEFAULT_BURST),
        }
    }
}

impl PreAuthPolicy {
    /// The policy an `[admission]` section sets.
    pub fn of(config: &crate::config::AdmissionConfig) -> PreAuthPolicy {
        PreAuthPolicy {
            failures_per_second: f64::from(config.failed_auth_per_second.max(1)),
            burst: f64::from(config.failed_auth_burst.max(1)),
        }
    }
}

/// One period's pre-authentication refusals, as they go into the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuthSummary {
    pub from_ms: u64,
    pub to_ms: u64,
    pub total: u64,
    /// (code, source, count), the largest counts first, at most `SUMMARY_ROWS`.
    pub rows: Vec<(String, String, u64)>,
}

impl PreAuthSummary {
    /// The audit reason: bounded whatever the traffic was.
    pub fn reason(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|(code, source, n)| format!("{code} from {source}: {n}"))
            .collect();
        let listed: u64 = self.rows.iter().map(|r| r.2).sum();
        let rest = self.total.saturating_sub(listed);
        let mut reason = format!(
            "pre-authentication refusals: {} ({})",
            self.total,
            rows.join("; ")
        );
        if rest > 0 {
            reason.push_str(&format!("; {rest} more"));
        }
        reason
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<IpAddr, Bucket>,
    tally: BTreeMap<(&'static str, String), u64>,
    total: u64,
    since_ms: Option<u64>,
}

pub struct PreAuth {
    policy: PreAuthPolicy,
    inner: Mutex<Inner>,
}

impl PreAuth {
    pub fn new(policy: PreAuthPolicy) -> PreAuth {
        PreAuth {
            policy,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `source` may fail again, when it has spent its budget; `None`: go ahead.
    pub fn over_budget(&self, source: Option<IpAddr>, now_ms: u64) -> Option<u64> {
        let source = source?;
        let inner = self.lock();
        let bucket = inner.buckets.get(&source)?;
        let tokens = refill(&self.policy, bucket, now_ms);
        if tokens >= 1.0 {
            return None;
        }
        let wait = (1.0 - tokens) / self.policy.failures_per_second.max(f64::MIN_POSITIVE);
        Some(wait.ceil().clamp(1.0, 3600.0) as u64)
    }

    /// Counts one refusal before authentication, and spends one of the source's budget.
    pub fn refused(&self, source: Option<IpAddr>, code: &'static str, now_ms: u64) {
        let mut inner = self.lock();
        count(&mut inner, source, code, now_ms);
        let Some(source) = source else {
            return;
        };
        if inner.buckets.len() >= MAX_SOURCES && !inner.buckets.contains_key(&source) {
            let policy = self.policy;
            inner
                .buckets
                .retain(|_, b| refill(&policy, b, now_ms) < policy.burst);
            if inner.buckets.len() >= MAX_SOURCES {
                inner.buckets.clear();
            }
        }
        let burst = self.policy.burst;
        let bucket = inner.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let tokens = refill(&self.policy, bucket, now_ms);
        *bucket = Bucket {
            tokens: (tokens - 1.0).max(0.0),
            at_ms: now_ms.max(bucket.at_ms),
        };
    }

    /// Counts a refusal that was not the caller's fault (the Authority's keys unavailable): in
    /// the summary, at no cost to the source's budget.
    pub fn unavailable(&self, source: Option<IpAddr>, now_ms: u64) {
        count(&mut self.lock(), source, "signing_unavailable", now_ms);
    }

    /// Counts a refusal for being over budget; it costs the source nothing more, or a flood
    /// would never end.
    pub fn rate_limited(&self, source: Option<IpAddr>, now_ms: u64) {
        count(&mut self.lock(), source, "rate_limited", now_ms);
    }

    /// The refusals counted since the last call, or `None` if there were none.
    pub fn take_summary(&self, now_ms: u64) -> Option<PreAuthSummary> {
        let mut inner = self.lock();
        let from_ms = inner.since_ms.take()?;
        let total = std::mem::take(&mut inner.total);
        let mut rows: Vec<(String, String, u64)> = std::mem::take(&mut inner.tally)
            .into_iter()
            .map(|((code, source), n)| (code.to_owned(), source, n))
            .collect();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        rows.truncate(SUMMARY_ROWS);
        Some(PreAuthSummary {
            from_ms,
            to_ms: now_ms,
            total,
            rows,
        })
    }
}

/// One refusal in the period's tally, under `other` once the tally is full.
fn count(inner: &mut Inner, source: Option<IpAddr>, code: &'static str, now_ms: u64) {
    inner.since_ms.get_or_insert(now_ms);
    inner.total = inner.total.saturating_add(1);
    let label = source.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    let row =
        if inner.tally.len() < MAX_TALLY_ROWS || inner.tally.contains_key(&(code, label.clone())) {
            (code, label)
        } else {
            (code, "other".to_owned())
        };
    let n = inner.tally.entry(row).or_insert(0);
    *n = n.saturating_add(1);
}

/// Tokens in `bucket` at `now_ms` (a clock that went back refills nothing).
fn refill(policy: &PreAuthPolicy, bucket: &Bucket, now_ms: u64) -> f64 {
    let elapsed_ms = now_ms.saturating_sub(bucket.at_ms) as f64;
    (bucket.tokens + elapsed_ms / 1000.0 * policy.failures_per_second).min(policy.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_source_that_spent_its_burst_waits_and_others_do_not() {
        let guard = PreAuth::new(PreAuthPolicy {
            failures_per_second: 2.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(guard.over_budget(ip(1), 0), None);
            guard.refused(ip(1), "invalid_token", 0);
        }
        assert_eq!(guard.over_budget(ip(1), 0), Some(1), "burst spent");
        assert_eq!(guard.over_budget(ip(2), 0), None, "another source");
        assert_eq!(guard.over_budget(None, 0), None, "no address: no bucket");
        // A refusal for being over budget costs nothing, so the source recovers on time.
        guard.rate_limited(ip(1), 100);
        assert_eq!(guard.over_budget(ip(1), 499), Some(1));
        assert_eq!(
            guard.over_budget(ip(1), 500),
            None,
            "2/s refills one in 500 ms"
        );
        // A clock that jumps back refills nothing; one at the end of the range neither panics
        // nor overflows.
        assert_eq!(guard.over_budget(ip(1), 0), Some(1));
        assert_eq!(guard.over_budget(ip(1), u64::MAX), None);
    }

    #[test]
    fn the_summary_counts_everything_but_stays_bounded() {
        let guard = PreAuth::new(PreAuthPolicy::default());
        assert_eq!(guard.take_summary(0), None, "nothing happened");
        for i in 0..200u32 {
            let source = Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]));
            guard.refused(source, "invalid_token", 1_000);
        }
        for _ in 0..500 {
            guard.refused(ip(7), "invalid_token", 2_000);
        }
        let summary = guard.take_summary(3_000).expect("summary");
        assert_eq!(summary.total, 700);
        assert_eq!((summary.from_ms, summary.to_ms), (1_000, 3_000));
        assert_eq!(summary.rows.len(), SUMMARY_ROWS);
        assert_eq!(
            summary.rows[0],
            ("invalid_token".into(), "10.0.0.7".into(), 501),
            "the largest first (10.0.0.7 also failed once in the first loop)"
        );
        assert!(summary.rows.iter().any(|r| r.1 == "other"), "{summary:?}");
        let reason = summary.reason();
        assert!(reason.starts_with("pre-authentication refusals: 700 ("));
        assert!(reason.len() < 1024, "{} bytes", reason.len());
        assert_eq!(guard.take_summary(4_000), None, "taken");
    }

    #[test]
    fn buckets_are_bounded_however_many_sources_there_are() {
        let guard = PreAuth::new(PreAuthPolicy::default());
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let source = Some(IpAddr::from(i.to_be_bytes()));
            guard.refused(source, "invalid_token", 0);
        }
        assert!(guard.lock().buckets.len() <= MAX_SOURCES);
        assert!(guard.lock().tally.len() <= MAX_TALLY_ROWS + 1);
    }
}

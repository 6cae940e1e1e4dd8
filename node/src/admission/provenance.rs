//! Scanner release provenance: a report or SBOM is signed only if the scanner image that
//! produced it (`scannerImageDigest`) is trusted — by an operator allowlist entry, an approved
//! and unexpired manual approval (both replicated), or a release signature found in the
//! registry and verified against the configured release keys. Fail closed.
//!
//! Registry verdicts are cached per digest (trusted for `positive_cache_seconds`, untrusted for
//! `negative_cache_seconds`); within that window the registry is not asked, so an outage does
//! not stop signing. After it, an unreachable registry means `signing_unavailable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stella_release::{Registry, Verdict};
use stella_signer::PublicKey;
use stella_state::State;

use crate::Error;
use crate::clock::Clock;

/// Replicated toggle name of an allowlisted digest.
pub fn allow_toggle(digest: &str) -> String {
    format!("release.allow.{digest}")
}

pub struct ProvenanceParts {
    pub registry: Registry,
    pub keys: Vec<PublicKey>,
    pub positive_cache_seconds: i64,
    pub negative_cache_seconds: i64,
    /// Predicate types that need a trusted scanner release.
    pub required_for: Vec<String>,
    pub clock: Arc<dyn Clock>,
}

/// The most digests whose verdicts are cached (callers choose digests: the cache is bounded).
pub const MAX_CACHED_VERDICTS: usize = 4096;

pub struct Provenance {
    parts: ProvenanceParts,
    cache: Mutex<HashMap<String, (Verdict, i64)>>,
    /// Single flight: one registry look-up per digest at a time; waiters then read the cache.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How a digest was admitted (recorded in the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    Signature { key_id: String },
    Allowlist,
    Approval { approval_id: String },
}

impl Path {
    pub fn describe(&self) -> String {
        match self {
            Path::Signature { key_id } => format!("signature:{key_id}"),
            Path::Allowlist => "allowlist".into(),
            Path::Approval { approval_id } => format!("approval:{approval_id}"),
        }
    }
}

/// The replicated facts about a digest, read from the applied state.
pub fn replicated_path(state: &State, digest: &str, now_ms: u64) -> Option<Path> {
    if state.toggle_enabled(&allow_toggle(digest), now_ms) {
        return Some(Path::Allowlist);
    }
    state
        .approvals
        .values()
        .find(|a| {
            a.subject == digest
                && now_ms < a.expires_at_ms
                && a.decision
                    .as_ref()
                    .is_some_and(|d| d.verdict == stella_state::command::Verdict::Approved)
        })
        .map(|a| Path::Approval {
            approval_id: a.approval_id.clone(),
        })
}

/// Caches a verdict; at `max` digests, expired verdicts go first, then the oldest.
fn remember(
    cache: &mut HashMap<String, (Verdict, i64)>,
    digest: &str,
    verdict: Verdict,
    now: i64,
    window: impl Fn(&Verdict) -> i64,
    max: usize,
) {
    if cache.len() >= max && !cache.contains_key(digest) {
        cache.retain(|_, (v, at)| now < at.saturating_add(window(v)));
        if cache.len() >= max
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
    }
    cache.insert(digest.to_owned(), (verdict, now));
}

impl Provenance {
    pub fn new(parts: ProvenanceParts) -> Provenance {
        Provenance {
            parts,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    pub fn required_for(&self, predicate_type: &str) -> bool {
        self.parts.required_for.iter().any(|t| t == predicate_type)
    }

    /// The signature path: a cached verdict within its window, else the registry.
    pub async fn by_signature(&self, digest: &str) -> Result<Path, Error> {
        stella_release::parse_digest(digest).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let verdict = match self.cached(digest) {
            Some(verdict) => verdict,
            None => {
                let flight = self
                    .fetching
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(digest.to_owned())
                    .or_default()
                    .clone();
                let _one = flight.lock().await;
                let verdict = match self.cached(digest) {
                    Some(verdict) => Ok(verdict),
                    None => self.fetch(digest).await.inspect(|verdict| {
                        let now = self.parts.clock.now().unix_timestamp();
                        self.remember(digest, verdict.clone(), now);
                    }),
                };
                self.fetching
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(digest);
                verdict?
            }
        };
        match verdict.signer() {
            Some(key_id) if verdict.trusted => Ok(Path::Signature {
                key_id: key_id.to_owned(),
            }),
            _ => Err(Error::ReleaseUntrusted(untrusted_reason(digest, &verdict))),
        }
    }

    /// A fresh look at the registry (for the referrers API and `stella release verify`).
    pub async fn fetch(&self, digest: &str) -> Result<Verdict, Error> {
        let discovery = self
            .parts
            .registry
            .discover(digest)
            .await
            .map_err(|e| match e {
                stella_release::ReleaseError::Reference(m) => Error::InvalidRequest(m),
                other => {
                    Error::Unavailable(format!("release signatures cannot be checked: {other}"))
                }
            })?;
        metrics::counter!(crate::telemetry::PROVENANCE_LOOKUPS).increment(1);
        Ok(stella_release::verify(&discovery, digest, &self.parts.keys))
    }

    /// The cached verdict for `digest`, if still within its window.
    fn cached(&self, digest: &str) -> Option<Verdict> {
        let now = self.parts.clock.now().unix_timestamp();
        match self.lock().get(digest) {
            Some((verdict, at)) if now < at.saturating_add(self.window(verdict)) => {
                Some(verdict.clone())
            }
            _ => None,
        }
    }

    fn remember(&self, digest: &str, verdict: Verdict, now: i64) {
        let window = |v: &Verdict| self.window(v);
        remember(
            &mut self.lock(),
            digest,
            verdict,
            now,
            window,
            MAX_CACHED_VERDICTS,
        );
    }

    fn window(&self, verdict: &Verdict) -> i64 {
        if verdict.trusted {
            self.parts.positive_cache_seconds
        } else {
            self.parts.negative_cache_seconds
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Verdict, i64)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a digest is not trusted, in one sentence.
pub fn untrusted_reason(digest: &str, verdict: &Verdict) -> String {
    if verdict.signatures.is_empty() {
        let problems = if verdict.problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", verdict.problems.join("; "))
        };
        return format!(
            "scanner image {digest} has no release signature, allowlist entry or approval{problems}"
        );
    }
    let reasons: Vec<String> = verdict
        .signatures
        .iter()
        .map(|s| format!("{} {}: {}", s.kind, s.manifest_digest, s.reason))
        .collect();
    format!(
        "no release signature of scanner image {digest} verifies: {}",
        reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_cache_is_bounded_and_drops_expired_then_oldest() {
        let verdict = |trusted| Verdict {
            trusted,
            signatures: Vec::new(),
            problems: Vec::new(),
        };
        // Trusted verdicts last 100 s, untrusted 10 s.
        let window = |v: &Verdict| if v.trusted { 100 } else { 10 };
        let mut cache = HashMap::new();
        remember(&mut cache, "a", verdict(true), 0, window, 3);
        remember(&mut cache, "b", verdict(false), 5, window, 3);
        remember(&mut cache, "c", verdict(true), 8, window, 3);
        remember(&mut cache, "c", verdict(true), 9, window, 3);
        assert_eq!(cache.len(), 3, "a known digest never evicts");
        // At 20 s `b` has expired: it goes, nothing else.
        remember(&mut cache, "d", verdict(true), 20, window, 3);
        assert!(!cache.contains_key("b") && cache.len() == 3);
        // Nothing expired: the oldest goes.
        remember(&mut cache, "e", verdict(true), 21, window, 3);
        assert!(!cache.contains_key("a") && cache.len() == 3);
    }
}

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

pub struct Provenance {
    parts: ProvenanceParts,
    cache: Mutex<HashMap<String, (Verdict, i64)>>,
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

impl Provenance {
    pub fn new(parts: ProvenanceParts) -> Provenance {
        Provenance {
            parts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn required_for(&self, predicate_type: &str) -> bool {
        self.parts.required_for.iter().any(|t| t == predicate_type)
    }

    /// The signature path: a cached verdict within its window, else the registry.
    pub async fn by_signature(&self, digest: &str) -> Result<Path, Error> {
        stella_release::parse_digest(digest).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let now = self.parts.clock.now().unix_timestamp();
        let cached = self.lock().get(digest).cloned();
        let verdict = match cached {
            Some((verdict, at)) if now < at + self.window(&verdict) => verdict,
            _ => match self.fetch(digest).await {
                Ok(verdict) => {
                    self.lock()
                        .insert(digest.to_owned(), (verdict.clone(), now));
                    verdict
                }
                Err(e) => return Err(e),
            },
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

//! The Authority's key set: fetched over HTTPS (or read from a file for offline installs),
//! cached, and refreshed when a token names a `kid` the cache does not know (key rotation) —
//! at most once per `min_refresh` so that tokens with random `kid`s cannot make the node hammer
//! the Authority. A failed refresh keeps the keys already known — for at most `max_stale` past
//! their `max_age`: after that the node fails closed (503) rather than trust keys the Authority
//! may have withdrawn long ago, and says so in its log and metrics (and each refusal is counted
//! in the pre-authentication audit summary).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::http_client::{self, HttpsSource};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    #[error("the Authority's keys are unavailable: {0}")]
    Unavailable(String),
}

/// Keys of the two algorithms admission accepts (P-256 for ES256, Ed25519 for EdDSA).
fn usable(key: &Jwk) -> bool {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &key.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P256,
        AlgorithmParameters::OctetKeyPair(okp) => okp.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

pub enum JwksSource {
    Url(HttpsSource),
    File(PathBuf),
}

pub struct JwksCache {
    source: JwksSource,
    min_refresh: Duration,
    max_age: Duration,
    /// How long past `max_age` a set that cannot be refreshed still verifies.
    max_stale: Duration,
    cached: RwLock<Cached>,
    /// Single flight: one refresh at a time; waiters re-check the cache after it.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl JwksCache {
    pub fn new(
        source: JwksSource,
        min_refresh: Duration,
        max_age: Duration,
        max_stale: Duration,
    ) -> JwksCache {
        JwksCache {
            source,
            min_refresh,
            max_age,
            max_stale,
            cached: RwLock::new(Cached::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The key named `kid`, refreshing the set if it is unknown or old.
    pub async fn key(&self, kid: &str) -> Result<Jwk, JwksError> {
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        let _one = self.refreshing.lock().await;
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        let may_refresh = self
            .read()
            .attempted_at
            .is_none_or(|t| t.elapsed() >= self.min_refresh);
        if may_refresh {
            let result = self.fetch().await;
            let mut cached = self.write();
            cached.attempted_at = Some(Instant::now());
            match result {
                Ok(set) => {
                    metrics::counter!(crate::telemetry::JWKS_REFRESH, "result" => "ok")
                        .increment(1);
                    cached.keys = set.keys;
                    cached.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    metrics::counter!(crate::telemetry::JWKS_REFRESH, "result" => "error")
                        .increment(1);
                    tracing::warn!(error = %e, "refreshing the Authority's JWKS failed");
                    if cached.keys.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        // An old set still verifies for a while (the Authority may be down); an unknown kid
        // does not, and neither does a set past its stale bound.
        if self.expired() {
            metrics::counter!(crate::telemetry::JWKS_REFRESH, "result" => "expired").increment(1);
            tracing::error!(
                max_stale_seconds = self.max_stale.as_secs(),
                "the Authority's JWKS could not be refreshed and is past its stale bound: refusing every token until a refresh succeeds"
            );
            return Err(JwksError::Unavailable(
                "the Authority's keys are too old and could not be refreshed".into(),
            ));
        }
        self.lookup(kid, false)
            .ok_or_else(|| JwksError::UnknownKey(crate::error::clip(kid)))
    }

    /// Readiness: the Authority's keys are loaded and within their stale bound. A set that
    /// was never fetched (or is past the bound) is fetched now, at most once per
    /// `min_refresh` (the same single flight as verification).
    pub async fn check_loaded(&self) -> Result<(), String> {
        if !self.expired() {
            return Ok(());
        }
        // A key id nobody uses: `key` refreshes the set if it may, then reports.
        match self.key("stella-readiness-probe").await {
            Ok(_) | Err(JwksError::UnknownKey(_)) if !self.expired() => Ok(()),
            Ok(_) | Err(JwksError::UnknownKey(_)) => {
                Err("the Authority's keys could not be loaded".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the held set is past `max_age + max_stale` (or there never was one).
    fn expired(&self) -> bool {
        self.read()
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.max_age.saturating_add(self.max_stale))
    }

    /// Whether `kid` is a key of the set this node holds and may still use (no fetch).
    pub fn knows(&self, kid: &str) -> bool {
        !self.expired() && self.lookup(kid, false).is_some()
    }

    fn lookup(&self, kid: &str, fresh_only: bool) -> Option<Jwk> {
        let cached = self.read();
        let fresh = cached
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.max_age);
        if fresh_only && !fresh {
            return None;
        }
        cached
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned()
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let bytes = match &self.source {
            JwksSource::Url(source) => source
                .get(http_client::MAX_DOCUMENT_BYTES)
                .await
                .map_err(JwksError::Unavailable)?,
            // A small local file, read at most once per `min_refresh`.
            JwksSource::File(path) => std::fs::read(path)
                .map_err(|e| JwksError::Unavailable(format!("{}: {e}", path.display())))?,
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| JwksError::Unavailable(format!("JWKS is not JSON: {e}")))?;
        // Keys of types this node cannot use (RSA, symmetric, unknown) are skipped, not fatal.
        let keys = value
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| JwksError::Unavailable("JWKS has no `keys` array".into()))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| k.common.key_id.is_some() && usable(k))
            .collect();
        Ok(JwkSet { keys })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(kid: &str) -> String {
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRjGWnM-G7_uKkTmA5twXwpwiAnSFvwHqs9DKdA"},
            {"kty": "RSA", "kid": "skipped", "n": "AQAB", "e": "AQAB"}]})
        .to_string()
    }

    #[tokio::test]
    async fn a_rotated_key_is_picked_up_from_the_file_at_a_bounded_rate() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks("k1")).expect("write");
        let cache = JwksCache::new(
            JwksSource::File(path.clone()),
            Duration::from_millis(300),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        assert!(cache.key("k1").await.is_ok());
        std::fs::write(&path, jwks("k2")).expect("rotate");
        // Just refreshed: an unknown kid does not make the node re-read at once.
        assert!(matches!(
            cache.key("k2").await,
            Err(JwksError::UnknownKey(_))
        ));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(cache.key("k2").await.is_ok(), "rotation picked up");
        assert!(
            cache.key("skipped").await.is_err(),
            "unusable key types are skipped"
        );
        std::fs::remove_file(&path).expect("rm");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            cache.key("k2").await.is_ok(),
            "a failed refresh keeps the known keys"
        );
    }

    #[tokio::test]
    async fn keys_that_cannot_be_refreshed_are_trusted_only_up_to_the_stale_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks("k1")).expect("write");
        // Old after 200 ms, unusable 300 ms later if the Authority stays away.
        let cache = JwksCache::new(
            JwksSource::File(path.clone()),
            Duration::from_millis(50),
            Duration::from_millis(200),
            Duration::from_millis(300),
        );
        assert!(cache.key("k1").await.is_ok());
        std::fs::remove_file(&path).expect("the Authority goes away");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cache.key("k1").await.is_ok(), "old but within the bound");
        assert!(cache.knows("k1"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(
            cache.key("k1").await,
            Err(JwksError::Unavailable(_))
        ));
        assert!(!cache.knows("k1"), "an expired set vouches for nobody");
        std::fs::write(&path, jwks("k1")).expect("the Authority is back");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.key("k1").await.is_ok(), "a refresh restores trust");
    }
}

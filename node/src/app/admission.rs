//! Admission and release provenance from configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::admission::dpop::{NonceIssuer, ProofPolicy};
use crate::admission::entitlement::{CacheConfig, EntitlementCache};
use crate::admission::jwks::{JwksCache, JwksSource};
use crate::admission::licensing::LicensingClient;
use crate::admission::optok::TokenPolicy;
use crate::admission::{Admission, AdmissionParts};
use crate::clock::Clock;
use crate::config::Config;
use crate::http_client::HttpsSource;
use crate::keys;

/// Release provenance from configuration (`None`: not enforced).
pub(super) fn build_provenance(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Option<crate::admission::provenance::Provenance>, Error> {
    use crate::admission::provenance::{Provenance, ProvenanceParts};
    let Some(p) = &config.provenance else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))
    };
    let keys = p
        .trusted_keys
        .iter()
        .map(|path| {
            stella_signer::PublicKey::from_pem(&read(path)?)
                .map_err(|e| Error::Config(format!("release key {}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if keys.is_empty() {
        return Err(Error::Config(
            "[provenance] trusted_keys must name at least one release key".into(),
        ));
    }
    let mut registry = stella_release::RegistryConfig::new(&p.repository);
    registry.insecure = p.insecure_registry;
    registry.ca_pem = p.ca_cert.as_deref().map(read).transpose()?;
    registry.max_manifest_bytes = p.max_manifest_bytes;
    let registry = stella_release::Registry::new(registry)
        .map_err(|e| Error::Config(format!("[provenance] {e}")))?;
    Ok(Some(Provenance::new(ProvenanceParts {
        registry,
        keys,
        positive_cache_seconds: p.positive_cache_seconds,
        negative_cache_seconds: p.negative_cache_seconds,
        required_for: p.required_for.clone(),
        clock,
    })))
}

/// Admission from configuration: the Authority's keys, DPoP rules, the licensing client behind
/// the entitlement-cache actor, and the plans.
pub(super) async fn build_admission(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Admission, Error> {
    let (Some(a), Some(e)) = (&config.admission, &config.entitlement) else {
        return Err(Error::Config(
            "[admission] and [entitlement] are required".into(),
        ));
    };
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
    };
    let timeout = Duration::from_secs(5);
    let authority_ca = a.ca_cert.as_deref().map(read).transpose()?;
    let jwks_source = match (&a.jwks_url, &a.jwks_file) {
        (Some(url), _) => JwksSource::Url(HttpsSource::new(url, authority_ca.as_deref(), timeout)?),
        (None, Some(path)) => JwksSource::File(path.clone()),
        (None, None) => {
            return Err(Error::Config(
                "[admission] needs jwks_url or jwks_file".into(),
            ));
        }
    };
    let nonces = match &a.dpop_nonce_secret_file {
        Some(path) => {
            let secret = keys::read_secret(path)?;
            if secret.len() < 32 {
                return Err(Error::Config(format!(
                    "{}: the DPoP nonce secret must be at least 32 bytes",
                    path.display()
                )));
            }
            Some(NonceIssuer::new(&secret, a.dpop_nonce_lifetime_seconds))
        }
        None => None,
    };
    let licensing_ca = e.ca_cert.as_deref().map(read).transpose()?;
    let licensing = LicensingClient {
        endpoint: HttpsSource::new(&e.introspection_url, licensing_ca.as_deref(), timeout)?,
        client_id: e.client_id.clone(),
        client_secret: zeroize::Zeroizing::new(
            String::from_utf8(keys::read_secret(&e.client_secret_file)?)
                .map_err(|_| Error::Config("the licensing client secret is not UTF-8".into()))?
                .trim()
                .to_owned(),
        ),
    };
    let entitlements = EntitlementCache::start(
        Arc::new(licensing),
        CacheConfig {
            ttl_seconds: e.cache_ttl_seconds,
            negative_ttl_seconds: e.negative_cache_ttl_seconds,
            grace_seconds: e.grace_seconds,
        },
        clock.clone(),
    )
    .await?;
    Ok(Admission::new(AdmissionParts {
        token_policy: TokenPolicy {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            skew_seconds: a.clock_skew_seconds,
            max_lifetime_seconds: a.max_token_lifetime_seconds,
        },
        proof_policy: ProofPolicy {
            max_age_seconds: a.dpop_max_age_seconds,
            skew_seconds: a.clock_skew_seconds,
        },
        jwks: JwksCache::new(
            jwks_source,
            Duration::from_secs(a.jwks_min_refresh_seconds),
            Duration::from_secs(a.jwks_max_age_seconds),
            Duration::from_secs(a.jwks_max_stale_seconds),
        ),
        nonces,
        entitlements,
        plans: config.plans.clone(),
        bypass_plan: e.bypass_plan.clone(),
        auditor_tenants: a.auditor_tenants.clone(),
        clock,
        preauth: crate::admission::preauth::PreAuthPolicy::of(a),
    }))
}

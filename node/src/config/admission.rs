//! The admission sections: `[admission]` (OpToks, DPoP, JWKS), `[entitlement]` (PoE
//! introspection and its cache), `[[plans]]` with their quotas, and `[provenance]`.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// The Authority's issuer URL (`iss` of every OpTok).
    pub issuer: String,
    /// Tenants whose tokens may use `signer.audit.all` (read every tenant's audit records
    /// and keys). The scope in any other tenant's token is ignored.
    #[serde(default)]
    pub auditor_tenants: Vec<String>,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Where the Authority publishes its JWKS (HTTPS)…
    pub jwks_url: Option<String>,
    /// …or a JWKS file, for offline installs (re-read on an unknown `kid`).
    pub jwks_file: Option<PathBuf>,
    /// Extra PEM CA for the Authority's TLS certificate.
    pub ca_cert: Option<PathBuf>,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: i64,
    #[serde(default = "default_max_lifetime")]
    pub max_token_lifetime_seconds: i64,
    /// An unknown `kid` refreshes the JWKS at most this often.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_seconds: u64,
    /// Keys are re-fetched after this long even without an unknown `kid`.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_seconds: u64,
    /// Past `jwks_max_age_seconds`, keys that cannot be refreshed still verify for this long;
    /// then every token is refused (503) until a refresh succeeds.
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale_seconds: u64,
    /// Base URLs clients use to reach the cluster (the load balancer's), accepted as DPoP `htu`
    /// besides the URL the request arrived on.
    #[serde(default)]
    pub public_urls: Vec<String>,
    /// A DPoP proof is accepted this long after its `iat`.
    #[serde(default = "default_dpop_max_age")]
    pub dpop_max_age_seconds: i64,
    /// Shared secret (file, at least 32 bytes) for DPoP server nonces; when set, every proof
    /// must carry a nonce issued by a node of the cluster (RFC 9449 §8).
    pub dpop_nonce_secret_file: Option<PathBuf>,
    #[serde(default = "default_dpop_max_age")]
    pub dpop_nonce_lifetime_seconds: i64,
    /// Failed authentications per second one source address may sustain; past its burst, the
    /// source is refused with `rate_limited` before any verification work.
    #[serde(default = "default_failed_auth_per_second")]
    pub failed_auth_per_second: u32,
    #[serde(default = "default_failed_auth_burst")]
    pub failed_auth_burst: u32,
    /// How often the node audits its count of refusals before authentication (one record per
    /// period with refusals, by code and source).
    #[serde(default = "default_preauth_summary_seconds")]
    pub preauth_summary_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementConfig {
    /// The licensing service's RFC 7662 introspection endpoint.
    pub introspection_url: String,
    pub client_id: String,
    /// File holding the client secret for HTTP Basic authentication.
    pub client_secret_file: PathBuf,
    pub ca_cert: Option<PathBuf>,
    #[serde(default = "default_poe_ttl")]
    pub cache_ttl_seconds: i64,
    #[serde(default = "default_poe_negative_ttl")]
    pub negative_cache_ttl_seconds: i64,
    /// During a licensing outage, the last-known entitlement is served this long past its TTL.
    #[serde(default = "default_poe_grace")]
    pub grace_seconds: i64,
    /// The plan whose quota applies while the emergency bypass is on.
    pub bypass_plan: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    pub signatures_per_window: u64,
    pub window_seconds: u64,
    pub max_concurrent: u32,
    /// Largest request body (the evidence to sign) this plan may send.
    pub max_artifact_bytes: usize,
    /// Tenants on this plan without a registered key of their own sign with the node's default
    /// key. Off by default: every such tenant's evidence verifies with the same key, so one
    /// tenant's signature cannot be told from another's by the key alone.
    #[serde(default)]
    pub shared_default_key: bool,
    /// Only hardware-backed keys (PKCS#11, KMS, threshold) may sign for this plan: a file key
    /// is refused at registration, keyless signing is refused, and the node does not start if
    /// the plan would fall back to a file default key (ADR 0022).
    #[serde(default)]
    pub require_hardware_backed: bool,
    /// Rotation cadence: a key older than this is due for rotation (metric and alert).
    #[serde(default)]
    pub max_key_age_seconds: Option<u64>,
    /// How long past `max_key_age_seconds` a key still signs; then it is refused (503,
    /// audited, naming the key) until rotated.
    #[serde(default)]
    pub key_age_grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// `host[:port]/path` of the scanner image repository holding release signatures.
    pub repository: String,
    /// Talk plain HTTP to the registry (loopback test registries only).
    #[serde(default)]
    pub insecure_registry: bool,
    pub ca_cert: Option<PathBuf>,
    /// PEM public keys whose release signatures are trusted.
    pub trusted_keys: Vec<PathBuf>,
    #[serde(default = "default_positive_cache")]
    pub positive_cache_seconds: i64,
    #[serde(default = "default_negative_cache")]
    pub negative_cache_seconds: i64,
    /// Predicate types whose requests need a trusted scanner release.
    #[serde(default = "default_required_for")]
    pub required_for: Vec<String>,
    #[serde(default = "default_max_manifest")]
    pub max_manifest_bytes: usize,
}

fn default_positive_cache() -> i64 {
    300
}
fn default_negative_cache() -> i64 {
    30
}
fn default_required_for() -> Vec<String> {
    vec!["stella.ops/sbom@v1".into(), "stella.ops/report@v1".into()]
}
fn default_max_manifest() -> usize {
    256 * 1024
}

/// Ledger settings shared by every plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// A reservation not finished by then is released (a crashed session's slot comes back).
    #[serde(default = "default_reservation_ttl")]
    pub reservation_ttl_seconds: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            reservation_ttl_seconds: default_reservation_ttl(),
        }
    }
}

fn default_audience() -> String {
    "signer".into()
}
fn default_skew() -> i64 {
    60
}
fn default_max_lifetime() -> i64 {
    24 * 3600
}
fn default_jwks_min_refresh() -> u64 {
    30
}
fn default_jwks_max_stale() -> u64 {
    24 * 3600
}

fn default_jwks_max_age() -> u64 {
    600
}
fn default_dpop_max_age() -> i64 {
    300
}
/// Failed authentications per second one source may sustain before it is refused at the door.
pub const DEFAULT_FAILURES_PER_SECOND: u32 = 20;
/// How many failed authentications one source may have in a burst.
pub const DEFAULT_BURST: u32 = 100;

pub fn default_failed_auth_per_second() -> u32 {
    DEFAULT_FAILURES_PER_SECOND
}
pub fn default_failed_auth_burst() -> u32 {
    DEFAULT_BURST
}
pub fn default_preauth_summary_seconds() -> u64 {
    60
}
fn default_poe_ttl() -> i64 {
    300
}
fn default_poe_negative_ttl() -> i64 {
    30
}
fn default_poe_grace() -> i64 {
    3600
}
fn default_reservation_ttl() -> u64 {
    60
}

//! Node configuration (TOML, see `docs/configuration.md`), and the dev-mode defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

pub mod kms;

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_PROPOSAL_QUEUE: usize = 8192;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub limits: Limits,
    pub signing: SigningConfig,
    /// OpTok and sender-binding checks (filled in by dev mode).
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
    /// PoE introspection (filled in by dev mode).
    #[serde(default)]
    pub entitlement: Option<EntitlementConfig>,
    /// Plans a PoE can name, with their quotas.
    #[serde(default)]
    pub plans: Vec<PlanConfig>,
    /// Scanner release provenance (absent: not enforced).
    #[serde(default)]
    pub provenance: Option<ProvenanceConfig>,
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Peer listener and identity; absent for a single node.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// This node's threshold-key shares.
    #[serde(default)]
    pub threshold: ThresholdSection,
    /// The audit log's signed checkpoints.
    #[serde(default)]
    pub audit_log: AuditLogSection,
    /// Chaos-drill hooks (all off by default; never on in production).
    #[serde(default)]
    pub drill: DrillSection,
    /// Set by `--dev`, never read from a file.
    #[serde(skip)]
    pub dev: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSection {
    /// The Ed25519 PKCS#8 key that signs checkpoints — the same file on every node, so any
    /// leader signs for the one log (dev mode: `DATA_DIR/log-key.pem`, created). Absent: the
    /// node signs no checkpoints (it still keeps the tree and serves proofs and the
    /// checkpoints other leaders signed).
    pub key_file: Option<PathBuf>,
    /// The log key on a PKCS#11 token instead (an Ed25519 key, `CKM_EDDSA`; the same key must
    /// be reachable from every node, e.g. a network HSM). `max_sessions` is not used.
    pub pkcs11: Option<Pkcs11Section>,
    /// The checkpoint origin: the log's name in its notes (default
    /// `stella-signer/<cluster_id>`, or `stella-signer/dev` for a single node).
    pub origin: Option<String>,
    /// A new checkpoint at least every this many records…
    #[serde(default = "default_checkpoint_records")]
    pub checkpoint_every_records: u64,
    /// …or this many milliseconds after the last one, when records were added since.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditLogSection {
    fn default() -> AuditLogSection {
        AuditLogSection {
            key_file: None,
            pkcs11: None,
            origin: None,
            checkpoint_every_records: default_checkpoint_records(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
        }
    }
}

fn default_checkpoint_records() -> u64 {
    256
}

fn default_checkpoint_interval_ms() -> u64 {
    1000
}

impl Config {
    /// The origin line of this cluster's checkpoints.
    pub fn log_origin(&self) -> String {
        self.audit_log.origin.clone().unwrap_or_else(|| {
            let id = self
                .cluster
                .as_ref()
                .map_or("dev", |c| c.cluster_id.as_str());
            format!("stella-signer/{id}")
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSection {
    /// Operators (peer listener, operator certificate) may kill this node's supervised actors
    /// (`POST /admin/v1/drill/kill-actor`) to watch supervision and readiness recover.
    #[serde(default)]
    pub kill_actors: bool,
    /// A deliberately broken build for chaos drills: every plan grants this many signatures per
    /// window beyond its quota (`stella-chaos --drill-fault grant-over-quota` proves that its
    /// checker catches it). 0, the default, is the only value for a real cluster.
    #[serde(default)]
    pub extra_grants_per_window: u64,
}

impl DrillSection {
    /// Raises every plan's quota by `extra_grants_per_window` (nothing when it is 0).
    pub fn break_quotas(&self, plans: &mut [PlanConfig]) {
        for plan in plans {
            plan.signatures_per_window = plan
                .signatures_per_window
                .saturating_add(self.extra_grants_per_window);
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSection {
    /// The 32-byte key that seals this node's shares at rest (default
    /// `DATA_DIR/threshold/share.key`, created on first start). Keep it off the data volume to
    /// make a stolen data directory useless.
    pub share_key_file: Option<PathBuf>,
    /// Chaos drills only: this node answers threshold signing with corrupted signature shares,
    /// so operators can watch the coordinator name and route around it.
    #[serde(default)]
    pub drill_corrupt_shares: bool,
    /// Chaos drills only: as coordinator (leader), this node asks the share holders to sign a
    /// statement nobody admitted, so operators can watch the holders refuse.
    #[serde(default)]
    pub drill_tamper_as_coordinator: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// Serve plain HTTP. Only for a loopback listener behind a TLS-terminating load balancer.
    #[serde(default)]
    pub disabled: bool,
    /// PEM CA(s) for client certificates: when set, clients may present a certificate (mTLS)
    /// and tokens bound to it (`cnf.x5t#S256`) are accepted.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Pending Raft proposals before the node answers 503 (the ledger actor's bounded mailbox).
    #[serde(default = "default_proposal_queue")]
    pub proposal_queue: usize,
    /// Signing sessions running at once on the leader before the node answers 503.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A signing request is answered within this many seconds of its admission: past it the
    /// node stops waiting for the leader and answers 503 (outcome unknown; retry with the same
    /// proof or `Idempotency-Key`).
    #[serde(default = "default_request_deadline")]
    pub request_deadline_seconds: u64,
    /// Signing requests this node works on at once; past it a request is answered 503 with
    /// `Retry-After` before any work is done for it (load shedding, ADR 0030).
    #[serde(default = "default_max_inflight_signings")]
    pub max_inflight_signings: usize,
}

fn default_max_inflight_signings() -> usize {
    crate::shedding::DEFAULT_MAX_INFLIGHT_SIGNINGS
}

fn default_request_deadline() -> u64 {
    10
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            proposal_queue: DEFAULT_PROPOSAL_QUEUE,
            max_sessions: default_max_sessions(),
            request_deadline_seconds: default_request_deadline(),
            max_inflight_signings: default_max_inflight_signings(),
        }
    }
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_max_sessions() -> usize {
    4096
}

fn default_proposal_queue() -> usize {
    DEFAULT_PROPOSAL_QUEUE
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// PKCS#8 PEM P-256 private key (or use `[signing.pkcs11]`).
    pub key_file: Option<PathBuf>,
    /// A non-extractable P-256 key on a PKCS#11 token (HSM).
    pub pkcs11: Option<Pkcs11Section>,
    /// Private keys of registered (per tenant/plan) file keys, `<hex of key id>.pem`
    /// (default `DATA_DIR/keys`).
    pub keys_dir: Option<PathBuf>,
    /// Keyless signing (requests with `options.signingMode = "keyless"`).
    pub keyless: Option<KeylessSection>,
    /// AWS KMS, for registered `kms:<key ARN>` keys (`crate::kms`).
    pub kms: Option<kms::KmsSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeylessSection {
    /// Fulcio's base URL (the node calls `{fulcio_url}/api/v2/signingCert`).
    pub fulcio_url: String,
    /// The node's OIDC identity token (audience `sigstore`), refreshed by whatever provides it.
    pub identity_token_file: PathBuf,
    pub ca_cert: Option<PathBuf>,
    /// The Fulcio CA chain (PEM, root last) that verifiers must trust for keyless signatures;
    /// published by `GET /api/v1/signer/trust` (`stella trust export`).
    pub ca_chain: Option<PathBuf>,
    /// An RFC 3161 Time-Stamping Authority that timestamps every keyless signature, so offline
    /// verifiers can check the short-lived certificate at a trusted time.
    pub tsa: Option<TsaSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsaSection {
    /// Where `application/timestamp-query` requests are POSTed.
    pub url: String,
    /// CA certificate to trust for an https `url`.
    pub ca_cert: Option<PathBuf>,
    /// The TSA's certificate chain (PEM, signing certificate first, root last): every token is
    /// checked against it on receipt, and it is published in the trust material.
    pub chain: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token_label: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
    pub key_label: String,
    /// Sessions kept open for concurrent signing.
    #[serde(default = "default_hsm_sessions")]
    pub max_sessions: usize,
    /// Generate the key on the token if it does not exist yet (first start).
    #[serde(default)]
    pub create: bool,
}

fn default_hsm_sessions() -> usize {
    8
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub node_id: u64,
    /// The cluster's name in its certificates' identity URIs (`stella://<cluster-id>/node/<id>`):
    /// a peer whose certificate names another cluster is refused even if the CA is shared.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// Address of the peer (Raft, mutual TLS) listener.
    pub peer_listen: SocketAddr,
    /// How peers reach this node's peer listener, e.g. `https://10.0.0.5:9441`.
    pub peer_url: String,
    /// How clients (and forwarding peers) reach this node's API, e.g. `https://10.0.0.5:8443`.
    pub api_url: String,
    /// Cluster CA (PEM): peers must present a certificate it issued.
    pub ca_cert: PathBuf,
    /// This node's certificate chain and key (PEM), issued by the cluster CA.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Build a Raft snapshot (and compact the log) every this many entries.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Leader heartbeat interval (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Election timeout range (ms); the upper bound is also the leader lease (ADR 0015).
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: [u64; 2],
    /// On SIGTERM the node reports not-ready this long before it stops accepting requests,
    /// so a load balancer's health check drains it first.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    stella_cluster::DEFAULT_HEARTBEAT_MS
}

fn default_election_timeout_ms() -> [u64; 2] {
    let (min, max) = stella_cluster::DEFAULT_ELECTION_TIMEOUT_MS;
    [min, max]
}

fn default_shutdown_grace_ms() -> u64 {
    1000
}

fn default_cluster_id() -> String {
    stella_cluster::identity::DEFAULT_CLUSTER_ID.into()
}

fn default_snapshot_every() -> u64 {
    5000
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        Config::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Dev mode: everything under `data_dir`, plain HTTP on `listen`, one `dev` tenant.
    pub fn dev(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            listen,
            signing: SigningConfig {
                key_file: Some(data_dir.join("keys").join("signing-key.pem")),
                pkcs11: None,
                keys_dir: None,
                keyless: None,
                kms: None,
            },
            data_dir,
            tls: TlsConfig {
                cert: None,
                key: None,
                disabled: true,
                client_ca: None,
            },
            limits: Limits::default(),
            admission: None,
            entitlement: None,
            plans: Vec::new(),
            provenance: None,
            quota: QuotaConfig::default(),
            cluster: None,
            threshold: ThresholdSection::default(),
            audit_log: AuditLogSection::default(),
            drill: DrillSection::default(),
            dev: true,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if !self.tls.disabled && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(Error::Config(
                "TLS is on by default: set [tls] cert and key, or `disabled = true` behind a TLS-terminating proxy".into(),
            ));
        }
        // Tokens and proofs in clear text may only cross the loopback interface (a TLS proxy
        // on the same host); anything wider would hand them to the network.
        if self.tls.disabled && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "[tls] disabled = true is only allowed on a loopback listen address, not {}",
                self.listen
            )));
        }
        if let Some(cluster) = &self.cluster
            && !stella_cluster::identity::valid_name(&cluster.cluster_id)
        {
            return Err(Error::Config(format!(
                "[cluster] cluster_id `{}`: 1-63 letters, digits, `-`, `_` or `.`",
                cluster.cluster_id
            )));
        }
        // Plain HTTP would let anyone on the path swap release signatures: only for a registry
        // on this host (tests, a local mirror).
        if let Some(p) = &self.provenance
            && p.insecure_registry
            && !stella_release::RegistryConfig::new(&p.repository).is_loopback()
        {
            return Err(Error::Config(format!(
                "[provenance] insecure_registry is only allowed for a registry on loopback, not `{}`",
                p.repository
            )));
        }
        if self.limits.max_inflight_signings == 0 {
            return Err(Error::Config(
                "limits.max_inflight_signings must be at least 1".into(),
            ));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(Error::Config(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.audit_log.key_file.is_some() && self.audit_log.pkcs11.is_some() {
            return Err(Error::Config(
                "[audit_log] takes key_file or [audit_log.pkcs11], not both".into(),
            ));
        }
        if self.audit_log.checkpoint_every_records == 0
            || self.audit_log.checkpoint_interval_ms < 10
        {
            return Err(Error::Config(
                "[audit_log] checkpoint_every_records must be positive and checkpoint_interval_ms at least 10".into(),
            ));
        }
        if self.limits.proposal_queue == 0 {
            return Err(Error::Config(
                "limits.proposal_queue must be positive".into(),
            ));
        }
        if self.signing.key_file.is_some() == self.signing.pkcs11.is_some() {
            return Err(Error::Config(
                "[signing] needs exactly one of key_file and [signing.pkcs11]".into(),
            ));
        }
        if let Some(kms) = &self.signing.kms {
            kms.settings().map_err(Error::Config)?;
        }
        let (Some(admission), Some(entitlement)) = (&self.admission, &self.entitlement) else {
            return Err(Error::Config(
                "[admission] and [entitlement] are required (see docs/configuration.md)".into(),
            ));
        };
        if admission.jwks_url.is_some() == admission.jwks_file.is_some() {
            return Err(Error::Config(
                "[admission] needs exactly one of jwks_url and jwks_file".into(),
            ));
        }
        if admission.dpop_max_age_seconds <= 0 || admission.clock_skew_seconds < 0 {
            return Err(Error::Config(
                "[admission] dpop_max_age_seconds must be positive and clock_skew_seconds not negative".into(),
            ));
        }
        if self.plans.is_empty() {
            return Err(Error::Config(
                "at least one [[plans]] entry is required".into(),
            ));
        }
        for plan in &self.plans {
            if plan.window_seconds == 0 || plan.max_concurrent == 0 || plan.max_artifact_bytes == 0
            {
                return Err(Error::Config(format!(
                    "plan `{}`: window_seconds, max_concurrent and max_artifact_bytes must be positive",
                    plan.name
                )));
            }
        }
        if !self.plans.iter().any(|p| p.name == entitlement.bypass_plan) {
            return Err(Error::Config(format!(
                "[entitlement] bypass_plan `{}` is not a [[plans]] entry",
                entitlement.bypass_plan
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "/var/lib/stella-signer"
[tls]
cert = "/etc/stella/tls/server.pem"
key = "/etc/stella/tls/server.key"
[signing]
key_file = "/etc/stella/keys/signing.pem"
[admission]
issuer = "https://authority.example"
jwks_url = "https://authority.example/jwks.json"
[entitlement]
introspection_url = "https://licensing.example/introspect"
client_id = "stella-signer"
client_secret_file = "/etc/stella/licensing-secret"
bypass_plan = "team"
[[plans]]
name = "team"
signatures_per_window = 1000
window_seconds = 3600
max_concurrent = 8
max_artifact_bytes = 1048576
"#;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(!config.dev);
    }

    #[test]
    fn tls_is_required_unless_disabled_explicitly() {
        let no_tls = MINIMAL.replace("cert = \"/etc/stella/tls/server.pem\"\n", "");
        assert!(matches!(Config::from_toml(&no_tls), Err(Error::Config(_))));
        let disabled = MINIMAL.replace("[tls]\n", "[tls]\ndisabled = true\n");
        assert!(Config::from_toml(&disabled).is_ok());
        for wide in ["0.0.0.0:8443", "10.1.2.3:8443", "[::]:8443"] {
            let exposed = disabled.replace("127.0.0.1:8443", wide);
            assert!(
                matches!(Config::from_toml(&exposed), Err(Error::Config(e)) if e.contains("loopback")),
                "{wide}"
            );
        }
        let loopback = disabled.replace("127.0.0.1:8443", "127.0.0.3:8443");
        assert!(
            Config::from_toml(&loopback).is_ok(),
            "all of 127/8 is loopback"
        );
    }

    #[test]
    fn plain_http_to_a_registry_only_on_loopback() {
        let with = |repository: &str| {
            format!(
                "{MINIMAL}\n[provenance]\nrepository = \"{repository}\"\ninsecure_registry = true\ntrusted_keys = [\"/k.pem\"]\n"
            )
        };
        assert!(Config::from_toml(&with("127.0.0.1:5000/stella/scanner")).is_ok());
        assert!(Config::from_toml(&with("localhost:5000/stella/scanner")).is_ok());
        assert!(matches!(
            Config::from_toml(&with("registry.example:5000/stella/scanner")),
            Err(Error::Config(e)) if e.contains("loopback")
        ));
    }

    #[test]
    fn unknown_keys_missing_sections_and_dangling_plans_are_rejected() {
        assert!(Config::from_toml(&format!("{MINIMAL}\nfoo = 1\n")).is_err());
        let no_entitlement = MINIMAL.replace("[entitlement]", "[entitlement_x]");
        assert!(Config::from_toml(&no_entitlement).is_err());
        let both_jwks = MINIMAL.replace(
            "jwks_url = ",
            "jwks_file = \"/etc/stella/jwks.json\"\njwks_url = ",
        );
        assert!(Config::from_toml(&both_jwks).is_err());
        let dangling = MINIMAL.replace("bypass_plan = \"team\"", "bypass_plan = \"gold\"");
        assert!(Config::from_toml(&dangling).is_err());
    }
}

//! Node configuration (TOML, see `docs/configuration.md`), and the dev-mode defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

mod admission;
mod cluster;
pub mod kms;

pub use admission::{
    AdmissionConfig, DEFAULT_BURST, DEFAULT_FAILURES_PER_SECOND, EntitlementConfig, PlanConfig,
    ProvenanceConfig, QuotaConfig, default_failed_auth_burst, default_failed_auth_per_second,
    default_preauth_summary_seconds,
};
pub use cluster::ClusterSection;

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
    /// Of those, the most one tenant may hold; past it the tenant gets 429 with
    /// `Retry-After`. Default: half of `max_inflight_signings`.
    #[serde(default)]
    pub max_inflight_per_tenant: Option<usize>,
}

impl Limits {
    /// The tenant's share of the front door.
    pub fn per_tenant(&self) -> usize {
        self.max_inflight_per_tenant
            .unwrap_or(self.max_inflight_signings / 2)
            .clamp(1, self.max_inflight_signings.max(1))
    }
}

/// Signing requests a node works on at once by default: throughput still grows with
/// concurrency up to about this many on a 2-core node (batched Raft entries), and beyond it
/// only latency grows (docs/benchmarks.md).
pub const DEFAULT_MAX_INFLIGHT_SIGNINGS: usize = 256;

fn default_max_inflight_signings() -> usize {
    DEFAULT_MAX_INFLIGHT_SIGNINGS
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
            max_inflight_per_tenant: None,
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
mod tests;

//! Node configuration (TOML, see `docs/configuration.md`), and the dev-mode defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

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
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Peer listener and identity; absent for a single node.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Set by `--dev`, never read from a file.
    #[serde(skip)]
    pub dev: bool,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            proposal_queue: DEFAULT_PROPOSAL_QUEUE,
            max_sessions: default_max_sessions(),
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
    /// PKCS#8 PEM P-256 private key.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// Lowercase hex SHA-256 of the tenant's bearer token (the token itself is never stored).
    pub token_sha256: String,
    /// May read every tenant's audit records (the Attestor's tenant).
    #[serde(default)]
    pub auditor: bool,
}

/// The quota every tenant's plan gets (per-plan quotas arrive with admission).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(default = "default_per_window")]
    pub signatures_per_window: u64,
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// A reservation not finished by then is released (a crashed session's slot comes back).
    #[serde(default = "default_reservation_ttl")]
    pub reservation_ttl_seconds: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            signatures_per_window: default_per_window(),
            window_seconds: default_window_seconds(),
            max_concurrent: default_max_concurrent(),
            reservation_ttl_seconds: default_reservation_ttl(),
        }
    }
}

fn default_per_window() -> u64 {
    1_000_000_000
}
fn default_window_seconds() -> u64 {
    3600
}
fn default_max_concurrent() -> u32 {
    100_000
}
fn default_reservation_ttl() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub node_id: u64,
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
                key_file: data_dir.join("keys").join("signing-key.pem"),
            },
            data_dir,
            tls: TlsConfig {
                cert: None,
                key: None,
                disabled: true,
            },
            limits: Limits::default(),
            tenants: Vec::new(),
            quota: QuotaConfig::default(),
            cluster: None,
            dev: true,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if !self.tls.disabled && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(Error::Config(
                "TLS is on by default: set [tls] cert and key, or `disabled = true` behind a TLS-terminating proxy".into(),
            ));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(Error::Config(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.limits.proposal_queue == 0 {
            return Err(Error::Config(
                "limits.proposal_queue must be positive".into(),
            ));
        }
        if self.quota.window_seconds == 0 || self.quota.max_concurrent == 0 {
            return Err(Error::Config(
                "quota.window_seconds and quota.max_concurrent must be positive".into(),
            ));
        }
        if self.tenants.is_empty() {
            return Err(Error::Config(
                "at least one [[tenants]] entry is required".into(),
            ));
        }
        for tenant in &self.tenants {
            let ok = tenant.token_sha256.len() == 64
                && tenant
                    .token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(Error::Config(format!(
                    "tenant `{}`: token_sha256 must be 64 lowercase hex",
                    tenant.id
                )));
            }
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
[[tenants]]
id = "tenant-a"
token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
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
    }

    #[test]
    fn unknown_keys_and_bad_hashes_are_rejected() {
        assert!(Config::from_toml(&format!("{MINIMAL}\nfoo = 1\n")).is_err());
        assert!(Config::from_toml(&MINIMAL.replace("5e88", "XXXX")).is_err());
    }
}

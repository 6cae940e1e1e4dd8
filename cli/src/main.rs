//! `stella`: sign evidence with a Stella Signer node and verify it offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use stella_api::{
    Client, ClientConfig, ClientError, Credentials, SignDsseRequest, SignOptions, SubjectWire,
};
use stella_cli::evidence;
use stella_signer::digest::{parse_sha256_ref, sha256_hex};
use stella_signer::verify::{Expectations, check_expectations, verify_bundle, verify_envelope};
use stella_signer::{Bundle, Envelope, PublicKey, Subject};

/// Prints a line to stdout; a closed pipe (`stella ... | head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "stella",
    version,
    about = "Stella Signer client: sign evidence, verify it offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign evidence with a signer node.
    Sign {
        #[command(subcommand)]
        what: SignCommand,
    },
    /// Verify a bundle or envelope offline against a public key.
    Verify(VerifyArgs),
    /// Cluster information.
    Cluster {
        #[command(subcommand)]
        what: ClusterCommand,
    },
    /// Read the replicated audit log.
    Audit(Box<AuditArgs>),
    /// Scanner release trust: publish and check release signatures (OCI referrers), manage the
    /// allowlist and approvals.
    Release {
        #[command(subcommand)]
        what: ReleaseCommand,
    },
    /// Trust material for offline verification (Offline Kit).
    Trust {
        #[command(subcommand)]
        what: TrustCommand,
    },
    /// The key registry: which key signs for which tenant and plan.
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
    /// Operator actions (token scope `signer.admin`).
    Admin {
        #[command(subcommand)]
        what: AdminCommand,
    },
    /// The offline kit for air-gapped installs.
    OfflineKit {
        #[command(subcommand)]
        what: OfflineKitCommand,
    },
}

#[derive(Subcommand)]
enum OfflineKitCommand {
    /// Pack the binaries, deploy/, docs/ and trust material into OUT/stella-signer-offline-kit.tar
    /// (byte-identical from the same inputs) and have the signer sign its manifest: OUT gets
    /// export.json, export.sigstore.json, export.dsse.json and provenance.json. Check it
    /// offline with `stella verify OUT/stella-signer-offline-kit.tar --bundle
    /// OUT/export.sigstore.json --key KEY --predicate-type stella.ops/export@v1`.
    Build {
        #[arg(long)]
        out: PathBuf,
        /// Where `stella-signer` and `stella` are (default: beside this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long, default_value = "deploy")]
        deploy_dir: PathBuf,
        #[arg(long)]
        docs_dir: Option<PathBuf>,
        /// The output of `stella trust export`.
        #[arg(long)]
        trust_dir: Option<PathBuf>,
        /// Only pack (and write OUT/kit-manifest.json); sign later with `stella sign export`.
        #[arg(long)]
        unsigned: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Sign IMAGE@sha256:HEX with a release key and publish the signature as an OCI referrer
    /// (updating the referrers tag-schema index).
    Sign {
        image: String,
        /// PKCS#8 PEM P-256 release key.
        #[arg(long)]
        key: PathBuf,
        /// Publish a classic cosign signature (`sha256-<hex>.sig` tag) instead of a referrer.
        #[arg(long)]
        cosign: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Find IMAGE@sha256:HEX's release signatures in its registry and verify them offline
    /// against public keys. Exit 0 trusted, 1 not trusted, 2 could not check.
    Verify {
        image: String,
        /// PEM public key(s) of trusted release signers.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Ask the signer what it thinks of a scanner image digest.
    Status {
        digest: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a digest to the replicated allowlist (or `--remove` it). Scope `signer.admin`.
    Allow {
        digest: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Ask for a manual approval of a digest, valid `--for` (e.g. 24h) once granted.
    RequestApproval {
        digest: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "for")]
        for_: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Approve a pending approval. Scope `signer.admin`.
    Approve {
        approval_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Deny a pending approval. Scope `signer.admin`.
    Deny {
        approval_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Write `trusted_root.json` (the keyless CAs), the PEM public key of every active and
    /// retired key (the default key included) and `keys.json` (tenant, plan, state, times).
    Export {
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// The registry (tenants see their own keys).
    List {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Generate a P-256 key file `DIR/<hex of key id>.pem` (mode 0600) to install in every
    /// node's keys directory before registering it.
    Create {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a t-of-n threshold key (FROST) by a distributed key generation across the nodes —
    /// each holds one share, none the key — and register it for a tenant and plan (scope
    /// `signer.admin`).
    CreateThreshold {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        plan: String,
        /// Shares needed to sign (t).
        #[arg(long)]
        threshold: u16,
        /// Node ids that hold shares, comma-separated (default: every voter; n = their count).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u64>,
        #[arg(long)]
        reason: String,
        /// Retire the tenant/plan's active keys in the same step.
        #[arg(long)]
        rotate: bool,
        /// `ed25519` (plain Ed25519 signatures every Sigstore verifier accepts, with a bundle)
        /// or `secp256k1-tr` (BIP-340, envelope only).
        #[arg(long, default_value = "ed25519", value_parser = parse_suite)]
        suite: stella_api::ThresholdSuite,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// New shares of a threshold key among some or all of its holders (the key stays; holders
    /// left out lose their share) — e.g. before a node leaves the cluster.
    RefreshThreshold {
        key_id: String,
        /// Node ids that keep a share, comma-separated (default: every current holder).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u64>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Register a key for a tenant and plan (scope `signer.admin`).
    Register(RegisterArgs),
    /// Register a new key and retire the tenant/plan's active key in one step.
    Rotate(RegisterArgs),
    /// Revoke a key: in force on every reachable node when this returns.
    Revoke {
        key_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Write the public keys of every active and retired key (PEM) and `keys.json` (tenant,
    /// plan, state, validity times) for offline verification.
    ExportPublic {
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Args)]
struct RegisterArgs {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    plan: String,
    /// The key file (private or public PEM) of a file key, or the public key of an HSM key;
    /// with `--kms` optional (the node reads the public key from KMS; given, it must match).
    #[arg(long, required_unless_present = "kms")]
    key: Option<PathBuf>,
    /// For a key on the nodes' PKCS#11 token: its label there.
    #[arg(long, conflicts_with = "kms")]
    pkcs11_label: Option<String>,
    /// Register as the tenant/plan's standby key: it signs only while an active key's back-end
    /// (HSM, KMS) is unavailable; `stella keys rotate` with the same key promotes it.
    #[arg(long)]
    standby: bool,
    /// For an AWS KMS key (ECC_NIST_P256, SIGN_VERIFY): its key ARN. The nodes need a
    /// `[signing.kms]` section and AWS credentials in their environment.
    #[arg(long, value_name = "KEY_ARN")]
    kms: Option<String>,
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
struct RegistryArgs {
    /// Talk plain HTTP to the registry (a loopback registry).
    #[arg(long)]
    insecure: bool,
    /// Extra PEM CA for the registry's TLS certificate.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry client for IMAGE@DIGEST, and the digest.
    fn open(&self, image: &str) -> anyhow::Result<(stella_release::Registry, String)> {
        let (repository, digest) = image
            .split_once('@')
            .with_context(|| format!("`{image}`: expected REPOSITORY@sha256:HEX"))?;
        stella_release::parse_digest(digest)?;
        let mut config = stella_release::RegistryConfig::new(repository);
        config.insecure = self.insecure;
        config.ca_pem = self
            .registry_ca
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?;
        Ok((stella_release::Registry::new(config)?, digest.to_owned()))
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Show, switch on (`--enable --for 30m`) or off (`--disable`) the emergency PoE bypass.
    /// Every change and every bypassed signing is audited.
    PoeBypass(BypassArgs),
}

#[derive(Args)]
struct BypassArgs {
    #[arg(long, conflicts_with = "disable", requires_all = ["reason", "for_"])]
    enable: bool,
    #[arg(long, requires = "reason")]
    disable: bool,
    /// Why (recorded in the toggle and the audit log).
    #[arg(long)]
    reason: Option<String>,
    /// How long the bypass stays on: e.g. 90s, 30m, 4h (at most 7 days).
    #[arg(long = "for", id = "for_")]
    for_: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Leader, term, members, commit index and every member's applied index.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, value_enum, default_value = "table")]
        output: Table,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Table {
    Table,
    Json,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    action: Option<AuditCommand>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Start after this audit id (e.g. aud-0000000000000042).
    #[arg(long)]
    after: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Only this tenant's records (auditor tenants only; others always see their own).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    filters: AuditFilters,
    /// `linearizable` (default) or `stale`.
    #[arg(long)]
    consistency: Option<String>,
}

/// What `stella audit` and `stella audit export` filter by (answered from indexes).
#[derive(Args)]
struct AuditFilters {
    /// Only records with this subject digest (sha256:HEX).
    #[arg(long)]
    subject: Option<String>,
    /// Only the record of this bundle hash (hex).
    #[arg(long)]
    bundle_hash: Option<String>,
    /// Only records of signatures by this key id.
    #[arg(long)]
    key_id: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

impl AuditFilters {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("subject", &self.subject),
            ("bundleHash", &self.bundle_hash),
            ("keyId", &self.key_id),
            ("since", &self.from),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Stream every record you may read as NDJSON (bulk ingestion); continue later with the
    /// cursor it prints on stderr.
    Export {
        #[command(flatten)]
        conn: ConnArgs,
        /// Where the last export stopped (its cursor), or an audit id.
        #[arg(long)]
        since: Option<String>,
        /// Only this tenant's records (auditors).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        filters: AuditFilters,
    },
    /// Fetch the log's current checkpoint and verify its signature with the log key.
    Checkpoint {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        key: LogKeyArg,
    },
    /// Verify a saved checkpoint (a signed note) offline.
    VerifyCheckpoint {
        /// The checkpoint file.
        file: PathBuf,
        #[command(flatten)]
        key: LogKeyArg,
    },
    /// Prove that a signing is in the audit log: fetch the inclusion proof of its record and
    /// verify it against the current checkpoint and the log key.
    Prove {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        key: LogKeyArg,
        /// A Sigstore bundle the signer returned.
        #[arg(long, group = "target")]
        bundle: Option<PathBuf>,
        /// A bundle hash (hex SHA-256, as `bundleSha256`).
        #[arg(long, group = "target")]
        bundle_hash: Option<String>,
        /// An audit id (aud-…).
        #[arg(long, group = "target")]
        audit_id: Option<String>,
    },
    /// Monitor the log: keep the last checkpoint trusted in STATE, check every new one extends
    /// it (consistency proof), and exit 3 on a fork or rollback.
    Watch {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        key: LogKeyArg,
        /// Where the last trusted checkpoint is kept (JSON; created on first run).
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value_t = 10)]
        interval_seconds: u64,
        /// Check once and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Args)]
struct LogKeyArg {
    /// The log's note verifier key (`origin+id+key`), or a file holding it (`stella trust
    /// export` writes `audit-log.vkey`).
    #[arg(long)]
    log_key: String,
}

#[derive(Subcommand)]
enum SignCommand {
    /// Sign an SBOM (CycloneDX 1.6 JSON, SPDX 2.3 JSON or SPDX 3.0.1 JSON-LD) as a
    /// stella.ops/sbom@v1 statement.
    Sbom {
        file: PathBuf,
        /// Force the SBOM format instead of detecting it.
        #[arg(long, value_parser = ["cyclonedx-1.6", "spdx-3.0.1", "spdx-2.3"])]
        format: Option<String>,
        #[command(flatten)]
        common: SignArgs,
    },
    /// Sign a scan report as a stella.ops/report@v1 statement with its policy metadata.
    Report {
        file: PathBuf,
        /// Digest of the policy the report was evaluated under (else the report's policy.digest).
        #[arg(long)]
        policy_digest: Option<String>,
        /// Comma-separated view set (else the report's policy.viewSet, else `default`).
        #[arg(long, value_delimiter = ',')]
        view_set: Vec<String>,
        #[command(flatten)]
        common: SignArgs,
    },
    /// Sign an Export Center manifest (JSON: exportId, files[{path, digest, mediaType}],
    /// metadata) and write the offline-verifiable set: export.json (canonical manifest),
    /// provenance.json, export.dsse.json and export.sigstore.json (one per signature).
    Export {
        manifest: PathBuf,
        /// The directory to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// How to reach and authenticate to a signer.
#[derive(Args)]
struct ConnArgs {
    /// Signer URL (default: from the credentials).
    #[arg(long, env = "STELLA_SERVER")]
    server: Option<String>,
    /// Credentials directory or file (e.g. DATA_DIR/dev). Required (checked when connecting,
    /// so that `stella audit <subcommand>` parses).
    #[arg(long, env = "STELLA_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the server.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

impl ConnArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let path = self
            .credentials
            .as_deref()
            .context("--credentials (or STELLA_CREDENTIALS) is required")?;
        let creds = Credentials::load(path).map_err(anyhow::Error::msg)?;
        let server = self.server.clone().unwrap_or(creds.server.clone());
        if server.is_empty() {
            bail!("no server URL: pass --server or set STELLA_SERVER");
        }
        let mut credentials = creds;
        if let Some(path) = &self.ca_cert {
            credentials.ca_cert_pem = Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
        Ok(Client::new(ClientConfig {
            server,
            credentials,
            timeout: Duration::from_secs(30),
        })?)
    }
}

#[derive(Args)]
struct SignArgs {
    /// Subject as NAME@sha256:HEX (repeatable). Default: the file itself.
    #[arg(long)]
    subject: Vec<String>,
    /// Digest (sha256:HEX) of the scanner image that produced the evidence: checked against
    /// the signer's release trust (signature, allowlist or approval).
    #[arg(long)]
    scanner_image: Option<String>,
    /// How to sign: with the tenant's key (`keyful`), with an ephemeral key and a Fulcio
    /// certificate (`keyless`), or both in one envelope (`keyful+keyless`). Default: the
    /// signer's (keyful).
    #[arg(long, value_parser = ["keyful", "keyless", "keyful+keyless"])]
    mode: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Where to write the Sigstore bundle (further bundles get `.2`, `.3`, … before the extension).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Where to write the DSSE envelope.
    #[arg(long)]
    envelope: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
struct VerifyArgs {
    /// The artifact file, or its digest as sha256:HEX.
    artifact: String,
    /// Sigstore bundle to verify.
    #[arg(
        long,
        required_unless_present = "envelope",
        conflicts_with = "envelope"
    )]
    bundle: Option<PathBuf>,
    /// DSSE envelope to verify (instead of a bundle).
    #[arg(long)]
    envelope: Option<PathBuf>,
    /// Public key (PEM) the signature must verify with.
    #[arg(
        long,
        required_unless_present_any = ["trust", "trusted_root"],
        conflicts_with_all = ["trust", "trusted_root"]
    )]
    key: Option<PathBuf>,
    /// An Offline Kit written by `stella trust export`: the signature must verify with one of its
    /// keys, and that key must have been valid at `--signed-at`.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// When the signature was made (RFC 3339, e.g. from its audit record); needed for a retired key.
    #[arg(long, requires = "trust")]
    signed_at: Option<String>,
    /// A Sigstore `trusted_root.json` (e.g. from `stella trust export`) for a keyless bundle:
    /// its timestamp must verify with a listed TSA and its certificate chain to a listed CA at
    /// that time.
    #[arg(
        long,
        conflicts_with = "trust",
        requires_all = ["certificate_identity", "certificate_oidc_issuer", "bundle"]
    )]
    trusted_root: Option<PathBuf>,
    /// The identity (email or URI) the keyless certificate must name.
    #[arg(long, requires = "trusted_root")]
    certificate_identity: Option<String>,
    /// The OIDC issuer the keyless certificate must name.
    #[arg(long, requires = "trusted_root")]
    certificate_oidc_issuer: Option<String>,
    /// Required predicate type.
    #[arg(long)]
    predicate_type: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sign { what } => match sign(what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stella: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Verify(args) => verify(&args),
        Command::Cluster {
            what: ClusterCommand::Status { conn, output },
        } => report(cluster_status(&conn, output)),
        Command::Audit(args) => match args.action {
            None => report(audit(&args)),
            Some(AuditCommand::Watch {
                conn,
                key,
                state,
                interval_seconds,
                once,
            }) => audit_watch(&conn, &key, &state, interval_seconds, once),
            Some(action) => report(audit_log_command(action)),
        },
        Command::Admin {
            what: AdminCommand::PoeBypass(args),
        } => report(poe_bypass(&args)),
        Command::Release { what } => release(what),
        Command::Keys { what } => report(keys(what)),
        Command::Trust {
            what: TrustCommand::Export { out, conn },
        } => report(trust_export(&out, &conn)),
        Command::OfflineKit { what } => report(offline_kit(what)),
    }
}

fn offline_kit(what: OfflineKitCommand) -> anyhow::Result<()> {
    let OfflineKitCommand::Build {
        out,
        bin_dir,
        deploy_dir,
        docs_dir,
        trust_dir,
        unsigned,
        conn,
    } = what;
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the directory of this binary")?
            .to_path_buf(),
    };
    let sources = stella_cli::offline_kit::Sources {
        bin_dir,
        deploy_dir,
        docs_dir,
        trust_dir,
    };
    let manifest = stella_cli::offline_kit::build(&sources, &out, env!("CARGO_PKG_VERSION"))?;
    let manifest_path = out.join("kit-manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    say!(
        "packed {} files into {}",
        manifest.files.len() - 1,
        out.join(format!("{}.tar", stella_cli::offline_kit::KIT))
            .display()
    );
    if unsigned {
        return Ok(());
    }
    sign_export(&manifest_path, &out, &conn)
}

fn keys(what: KeysCommand) -> anyhow::Result<()> {
    match what {
        KeysCommand::List { conn, output } => {
            let keys = conn.client()?.keys()?;
            if output == Output::Json {
                say!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(());
            }
            for k in keys {
                say!(
                    "{}  {:<8} {:<12} {:<10} {:<7} since {}",
                    k.key_id,
                    k.state,
                    k.tenant,
                    k.plan,
                    k.source,
                    k.created_at
                );
            }
            Ok(())
        }
        KeysCommand::Create { out } => {
            let key = stella_signer::FileKeySigner::generate()?;
            let key_id = key.public_key().key_id();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join(format!("{}.pem", key_id.trim_start_matches("sha256:")));
            write_private(&path, key.to_pkcs8_pem().as_bytes())?;
            say!("{key_id}  {}", path.display());
            Ok(())
        }
        KeysCommand::CreateThreshold {
            tenant,
            plan,
            threshold,
            nodes,
            reason,
            rotate,
            suite,
            conn,
        } => {
            let change =
                conn.client()?
                    .create_threshold_key(&stella_api::CreateThresholdKeyRequest {
                        tenant,
                        plan,
                        min_signers: threshold,
                        nodes,
                        reason,
                        rotate,
                        suite,
                    })?;
            say!("{}", serde_json::to_string_pretty(&change)?);
            Ok(())
        }
        KeysCommand::RefreshThreshold {
            key_id,
            nodes,
            reason,
            conn,
        } => {
            let change =
                conn.client()?
                    .refresh_threshold_key(&stella_api::RefreshThresholdKeyRequest {
                        key_id,
                        nodes,
                        reason,
                    })?;
            say!("{}", serde_json::to_string_pretty(&change)?);
            Ok(())
        }
        KeysCommand::Register(args) => register(args, false),
        KeysCommand::Rotate(args) => register(args, true),
        KeysCommand::Revoke {
            key_id,
            reason,
            conn,
        } => {
            let change = conn
                .client()?
                .revoke_key(&stella_api::RevokeKeyRequest { key_id, reason })?;
            say!("{}", serde_json::to_string_pretty(&change)?);
            Ok(())
        }
        KeysCommand::ExportPublic { out, conn } => {
            let keys = conn.client()?.keys()?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let usable: Vec<_> = keys.into_iter().filter(|k| k.state != "revoked").collect();
            for k in &usable {
                let path = out.join(format!(
                    "{}.pub.pem",
                    k.key_id.trim_start_matches("sha256:")
                ));
                std::fs::write(&path, &k.public_key_pem)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            std::fs::write(out.join("keys.json"), serde_json::to_vec_pretty(&usable)?)?;
            say!("{} keys written to {}", usable.len(), out.display());
            Ok(())
        }
    }
}

fn trust_export(out: &Path, conn: &ConnArgs) -> anyhow::Result<()> {
    use base64::Engine;
    let trust = conn.client()?.trust()?;
    std::fs::create_dir_all(out.join("keys"))
        .with_context(|| format!("creating {}", out.display()))?;
    for k in &trust.keys {
        let path = out.join("keys").join(format!(
            "{}.pub.pem",
            k.key_id.trim_start_matches("sha256:")
        ));
        std::fs::write(&path, &k.public_key_pem)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(
        out.join("keys.json"),
        serde_json::to_vec_pretty(&trust.keys)?,
    )?;
    // The audit log's checkpoint key: what `stella audit prove|watch --log-key` take.
    if let Some(log) = &trust.audit_log {
        std::fs::write(
            out.join("audit-log.vkey"),
            format!("{}\n", log.verifier_key),
        )?;
    }
    // Sigstore trust-root entries; `validFor` is left open: the chains' own validity bounds them.
    let authorities = |chains: &[Vec<String>], name: &str| {
        chains
            .iter()
            .map(|chain| {
                let certificates = chain
                    .iter()
                    .map(|pem| {
                        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                            .map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
                        Ok(json!({"rawBytes": base64::engine::general_purpose::STANDARD.encode(der.as_ref())}))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(json!({
                    "subject": {"organization": "Stella Signer", "commonName": name},
                    "certChain": {"certificates": certificates},
                    "validFor": {"start": "1970-01-01T00:00:00Z"}
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let root = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [], "ctlogs": [],
        "certificateAuthorities": authorities(&trust.certificate_authorities, "Fulcio")?,
        "timestampAuthorities": authorities(&trust.timestamp_authorities, "Time-Stamping Authority")?,
    });
    std::fs::write(
        out.join("trusted_root.json"),
        serde_json::to_vec_pretty(&root)?,
    )?;
    say!(
        "{} keys, {} certificate authorities and {} timestamp authorities written to {}",
        trust.keys.len(),
        trust.certificate_authorities.len(),
        trust.timestamp_authorities.len(),
        out.display()
    );
    Ok(())
}

fn register(args: RegisterArgs, rotate: bool) -> anyhow::Result<()> {
    let public_key_pem = match &args.key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            match stella_signer::FileKeySigner::from_pkcs8_pem(&text) {
                Ok(key) => key.public_key().to_pem(),
                Err(_) => PublicKey::from_pem(&text)?.to_pem(),
            }
        }
        None => String::new(),
    };
    let (source, label) = match (args.pkcs11_label, args.kms) {
        (_, Some(arn)) => (Some("kms".to_owned()), Some(arn)),
        (Some(label), None) => (Some("pkcs11".to_owned()), Some(label)),
        (None, None) => (None, None),
    };
    let change = args
        .conn
        .client()?
        .register_key(&stella_api::RegisterKeyRequest {
            tenant: args.tenant,
            plan: args.plan,
            public_key_pem,
            source,
            label,
            reason: args.reason,
            rotate,
            standby: args.standby,
        })?;
    say!("{}", serde_json::to_string_pretty(&change)?);
    Ok(())
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn release(what: ReleaseCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stella: {e}");
            return ExitCode::from(2);
        }
    };
    match what {
        ReleaseCommand::Sign {
            image,
            key,
            cosign,
            registry,
        } => report(runtime.block_on(async {
            let (registry, digest) = registry.open(&image)?;
            let key = stella_signer::FileKeySigner::from_pem_file(&key)?;
            let published = if cosign {
                registry
                    .publish_cosign_classic(&digest, &digest, &key)
                    .await?
            } else {
                registry.publish(&digest, &key).await?
            };
            say!(
                "published release signature {published} for {image} (key {})",
                key.public_key().key_id()
            );
            Ok(())
        })),
        ReleaseCommand::Verify {
            image,
            key,
            registry,
            output,
        } => {
            let checked = runtime.block_on(async {
                let (registry, digest) = registry.open(&image)?;
                let keys = key
                    .iter()
                    .map(|p| PublicKey::from_pem_file(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let discovery = registry.discover(&digest).await?;
                anyhow::Ok(stella_release::verify(&discovery, &digest, &keys))
            });
            match checked {
                Ok(verdict) => {
                    if output == Output::Json {
                        say!(
                            "{}",
                            serde_json::to_string_pretty(&verdict).unwrap_or_default()
                        );
                    } else {
                        for s in &verdict.signatures {
                            say!(
                                "{} {} {}: {}",
                                if s.verified { "ok  " } else { "FAIL" },
                                s.kind,
                                s.manifest_digest,
                                s.reason
                            );
                        }
                        for p in &verdict.problems {
                            say!("problem: {p}");
                        }
                        say!(
                            "{}",
                            if verdict.trusted {
                                "trusted"
                            } else {
                                "NOT trusted"
                            }
                        );
                    }
                    if verdict.trusted {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("stella: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        ReleaseCommand::Status { digest, conn } => report((|| {
            let answer = conn.client()?.referrers(&digest)?;
            say!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        })()),
        ReleaseCommand::Allow {
            digest,
            reason,
            remove,
            conn,
        } => report((|| {
            let answer = conn.client()?.allow_release(&stella_api::AllowlistChange {
                image_digest: digest,
                allowed: !remove,
                reason,
            })?;
            say!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        })()),
        ReleaseCommand::RequestApproval {
            digest,
            reason,
            for_,
            conn,
        } => report((|| {
            let client = conn.client()?;
            let answer = client.request_approval(&stella_api::ApprovalRequest {
                image_digest: digest,
                reason,
                expires_in_seconds: parse_duration(&for_)?,
                poe: client.credentials().poe.clone(),
            })?;
            say!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        })()),
        ReleaseCommand::Approve {
            approval_id,
            reason,
            conn,
        } => report(decide(&conn, approval_id, "approved", reason)),
        ReleaseCommand::Deny {
            approval_id,
            reason,
            conn,
        } => report(decide(&conn, approval_id, "denied", reason)),
    }
}

fn decide(
    conn: &ConnArgs,
    approval_id: String,
    verdict: &str,
    reason: String,
) -> anyhow::Result<()> {
    let answer = conn
        .client()?
        .decide_approval(&stella_api::ApprovalDecision {
            approval_id,
            verdict: verdict.to_owned(),
            reason,
        })?;
    say!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn poe_bypass(args: &BypassArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let status = if args.enable || args.disable {
        let expires_in_seconds = args.for_.as_deref().map(parse_duration).transpose()?;
        client.set_poe_bypass(&stella_api::PoeBypassRequest {
            enabled: args.enable,
            reason: args.reason.clone().unwrap_or_default(),
            expires_in_seconds,
        })?
    } else {
        client.poe_bypass()?
    };
    say!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// `--suite ed25519|secp256k1-tr`.
fn parse_suite(text: &str) -> Result<stella_api::ThresholdSuite, String> {
    [
        stella_api::ThresholdSuite::Ed25519,
        stella_api::ThresholdSuite::Secp256k1Tr,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| format!("unknown suite `{text}` (ed25519 or secp256k1-tr)"))
}

/// `90s`, `30m`, `4h`, `2d` → seconds.
fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("`{text}`: expected a number and s, m, h or d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("`{text}`: expected a number and s, m, h or d"),
    };
    Ok(n * factor)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stella: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cluster_status(conn: &ConnArgs, output: Table) -> anyhow::Result<()> {
    let status = conn.client()?.cluster_status()?;
    if output == Table::Json {
        say!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let dash = || "-".to_owned();
    say!(
        "leader {}  term {}  commit index {}  (answered by node {})",
        status.leader.map_or_else(dash, |l| l.to_string()),
        status.term,
        status.commit_index.map_or_else(dash, |c| c.to_string()),
        status.answered_by
    );
    say!(
        "{:>4}  {:<8} {:<10} {:>9} {:>9} {:>9}  {}",
        "node",
        "role",
        "state",
        "applied",
        "last log",
        "snapshot",
        "peer url"
    );
    for m in &status.members {
        say!(
            "{:>4}  {:<8} {:<10} {:>9} {:>9} {:>9}  {}",
            m.node_id,
            m.role,
            if m.reachable {
                m.state.clone().unwrap_or_else(dash)
            } else {
                "unreachable".into()
            },
            m.applied_index.map_or_else(dash, |v| v.to_string()),
            m.last_log_index.map_or_else(dash, |v| v.to_string()),
            m.snapshot_index.map_or_else(dash, |v| v.to_string()),
            m.peer_url
        );
    }
    Ok(())
}

fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    query.extend(args.filters.query());
    for (name, value) in [
        ("after", &args.after),
        ("tenant", &args.tenant),
        ("consistency", &args.consistency),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    let page = args.conn.client()?.audit(&query)?;
    for record in &page.records {
        say!("{}", serde_json::to_string(record)?);
    }
    if let Some(next) = &page.next {
        eprintln!("next page: --after {next}");
    }
    Ok(())
}

fn audit_log_command(action: AuditCommand) -> anyhow::Result<()> {
    use stella_cli::audit_log;
    match action {
        AuditCommand::Checkpoint { conn, key } => {
            let note = conn.client()?.checkpoint()?;
            let checkpoint =
                audit_log::verify_checkpoint(&note, &audit_log::read_log_key(&key.log_key)?)?;
            say!(
                "checkpoint verified: {} records, root {}\n{note}",
                checkpoint.size,
                hex::encode(checkpoint.root)
            );
        }
        AuditCommand::VerifyCheckpoint { file, key } => {
            let note = String::from_utf8(read(&file)?)?;
            let checkpoint =
                audit_log::verify_checkpoint(&note, &audit_log::read_log_key(&key.log_key)?)?;
            say!(
                "checkpoint verified: origin {}, {} records, root {}",
                checkpoint.origin,
                checkpoint.size,
                hex::encode(checkpoint.root)
            );
        }
        AuditCommand::Prove {
            conn,
            key,
            bundle,
            bundle_hash,
            audit_id,
        } => {
            let log_key = audit_log::read_log_key(&key.log_key)?;
            let bundle_hash = match (&bundle, bundle_hash) {
                (Some(path), _) => {
                    Some(stella_signer::bundle::Bundle::from_json(&read(path)?)?.sha256()?)
                }
                (None, hash) => hash.map(|h| h.trim_start_matches("sha256:").to_ascii_lowercase()),
            };
            let query = match (&bundle_hash, audit_id) {
                (Some(hash), _) => vec![("bundleHash", hash.clone())],
                (None, Some(id)) => vec![("auditId", id)],
                (None, None) => bail!("give --bundle, --bundle-hash or --audit-id"),
            };
            let proof = conn.client()?.inclusion_proof(&query)?;
            let note = proof
                .checkpoint
                .clone()
                .context("the server sent no checkpoint with the proof")?;
            let checkpoint = audit_log::verify_checkpoint(&note, &log_key)?;
            let included = audit_log::check_inclusion(&proof, &checkpoint, bundle_hash.as_deref())?;
            say!(
                "included: {} is leaf {} of the log's {} records (checkpoint signed by {})",
                included.audit_id,
                included.log_index,
                included.tree_size,
                checkpoint.origin
            );
        }
        AuditCommand::Export {
            conn,
            since,
            tenant,
            filters,
        } => {
            use std::io::BufRead;
            let mut query = filters.query();
            query.extend(since.map(|s| ("after", s)));
            query.extend(tenant.map(|t| ("tenant", t)));
            let response = conn.client()?.audit_export(&query)?;
            let mut cursor = None;
            for line in std::io::BufReader::new(response).lines() {
                let line = line.context("reading the export")?;
                match serde_json::from_str::<serde_json::Value>(&line)?.get("cursor") {
                    Some(c) if line.starts_with("{\"cursor\"") => {
                        cursor = c.as_str().map(str::to_owned);
                    }
                    _ => say!("{line}"),
                }
            }
            let cursor = cursor.context("the export ended without its cursor (cut short?)")?;
            eprintln!("next: --since {cursor}");
        }
        AuditCommand::Watch { .. } => unreachable!("handled by audit_watch"),
    }
    Ok(())
}

/// `stella audit watch`: exit 0 while the log only grows, 3 on a fork or rollback, 1 when it
/// cannot check.
fn audit_watch(
    conn: &ConnArgs,
    key: &LogKeyArg,
    state: &Path,
    interval_seconds: u64,
    once: bool,
) -> ExitCode {
    use stella_cli::audit_log::{self, Trusted, Verdict};
    let round = || -> anyhow::Result<Verdict> {
        let log_key = audit_log::read_log_key(&key.log_key)?;
        let client = conn.client()?;
        let note = client.checkpoint()?;
        let checkpoint = audit_log::verify_checkpoint(&note, &log_key)?;
        let trusted: Option<Trusted> = match std::fs::read(state) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a monitor state file", state.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
        };
        let proof = match audit_log::needs_proof(trusted.as_ref(), &checkpoint) {
            Some((from, to)) => Some(client.consistency_proof(from, to)?),
            None => None,
        };
        let verdict = audit_log::judge(trusted.as_ref(), &checkpoint, proof.as_ref());
        if matches!(verdict, Verdict::First | Verdict::Extended { .. }) {
            let tmp = state.with_extension("tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&Trusted::from(&checkpoint, &note))?,
            )?;
            std::fs::rename(&tmp, state)?;
        }
        Ok(verdict)
    };
    loop {
        match round() {
            Ok(Verdict::Rollback { trusted, served }) => {
                eprintln!(
                    "stella: ROLLBACK: the log served a checkpoint of {served} records after one of {trusted} was trusted"
                );
                return ExitCode::from(3);
            }
            Ok(Verdict::Fork {
                trusted,
                served,
                why,
            }) => {
                eprintln!(
                    "stella: FORK: the checkpoint of {served} records is not an extension of the trusted one of {trusted} records: {why}"
                );
                return ExitCode::from(3);
            }
            Ok(verdict) => say!("{verdict:?}"),
            Err(e) => {
                eprintln!("stella: {e:#}");
                if once {
                    return ExitCode::FAILURE;
                }
            }
        }
        if once {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(interval_seconds.max(1)));
    }
}

/// A signing error as the user reads it: the problem's stable code, status and detail.
fn refusal(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Problem(p) => anyhow::anyhow!(
            "the signer refused: {} ({}): {}",
            p.code.as_str(),
            p.status,
            p.detail
        ),
        other => other.into(),
    }
}

fn sign_export(manifest: &Path, out: &Path, conn: &ConnArgs) -> anyhow::Result<()> {
    let manifest: stella_api::ExportManifest = serde_json::from_slice(&read(manifest)?)
        .with_context(|| format!("{} is not an export manifest", manifest.display()))?;
    let request = stella_api::SignExportRequest {
        manifest,
        poe: None,
        options: SignOptions::default(),
    };
    let response = conn.client()?.sign_export(&request).map_err(refusal)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Byte for byte: its SHA-256 is the statement's `export.json` subject.
    std::fs::write(out.join("export.json"), response.manifest.get())?;
    std::fs::write(
        out.join("provenance.json"),
        serde_json::to_vec_pretty(&response.provenance)?,
    )?;
    write_raw_json(
        &out.join("export.dsse.json"),
        response.signature.envelope.get(),
    )?;
    for (i, signed) in response.signature.bundles.iter().enumerate() {
        let name = if i == 0 {
            "export.sigstore.json".to_owned()
        } else {
            format!("export.sigstore.{}.json", i + 1)
        };
        write_raw_json(&out.join(name), signed.bundle.get())?;
    }
    say!(
        "signed export {} ({} files)\n  manifest  sha256:{}\n  key       {}\n  audit id  {}{}\n  wrote     {}",
        response.provenance.export_id,
        request.manifest.files.len(),
        response.manifest_sha256,
        response.provenance.key_ids.join(", "),
        response.provenance.audit_id,
        response
            .provenance
            .log_index
            .map(|i| format!(" (log index {i})"))
            .unwrap_or_default(),
        out.display()
    );
    Ok(())
}

fn sign(command: SignCommand) -> anyhow::Result<()> {
    let (file, common, predicate_type, predicate) = match command {
        SignCommand::Sbom {
            file,
            format,
            common,
        } => {
            let bytes = read(&file)?;
            let predicate = evidence::sbom_predicate(&bytes, format.as_deref())?;
            (file, common, "stella.ops/sbom@v1", predicate)
        }
        SignCommand::Report {
            file,
            policy_digest,
            view_set,
            common,
        } => {
            let bytes = read(&file)?;
            let predicate =
                evidence::report_predicate(&bytes, policy_digest.as_deref(), &view_set)?;
            (file, common, "stella.ops/report@v1", predicate)
        }
        SignCommand::Export {
            manifest,
            out,
            conn,
        } => return sign_export(&manifest, &out, &conn),
    };
    let subject = subjects(&file, &common.subject)?;
    let client = common.conn.client()?;
    let request = SignDsseRequest {
        subject,
        predicate_type: predicate_type.to_owned(),
        predicate,
        scanner_image_digest: common.scanner_image.clone(),
        poe: None,
        options: SignOptions {
            signing_mode: common.mode.clone(),
        },
    };
    let response = client.sign_dsse(&request).map_err(refusal)?;
    if let Some(path) = &common.envelope {
        write_raw_json(path, response.envelope.get())?;
    }
    if let Some(path) = &common.bundle {
        for (i, signed) in response.bundles.iter().enumerate() {
            let target = if i == 0 {
                path.clone()
            } else {
                numbered(path, i + 1)
            };
            write_raw_json(&target, signed.bundle.get())?;
        }
    }
    match common.output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&response)?),
        Output::Text => say!(
            "signed {} as {predicate_type}\n  key       {}\n  bundle    sha256:{}\n  audit id  {}",
            file.display(),
            response.signer_identity.key_id,
            response.bundle_sha256,
            response.audit_id
        ),
    }
    Ok(())
}

fn subjects(file: &Path, given: &[String]) -> anyhow::Result<Vec<SubjectWire>> {
    if given.is_empty() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into());
        return Ok(vec![SubjectWire {
            name,
            digest: [("sha256".to_owned(), sha256_hex(&read(file)?))].into(),
        }]);
    }
    given
        .iter()
        .map(|s| {
            let subject = Subject::parse_reference(s)?;
            Ok(SubjectWire {
                name: subject.name,
                digest: subject.digest,
            })
        })
        .collect()
}

/// Exit codes: 0 verified, 1 not verified, 2 could not run (bad input files, usage).
fn verify(args: &VerifyArgs) -> ExitCode {
    match verify_inner(args) {
        Ok(Ok(report)) => {
            match args.output {
                Output::Json => say!("{report}"),
                Output::Text => say!(
                    "verified: {} over {} by {}",
                    report["predicateType"].as_str().unwrap_or(""),
                    report["artifact"].as_str().unwrap_or(""),
                    report["keyId"].as_str().unwrap_or("")
                ),
            }
            ExitCode::SUCCESS
        }
        Ok(Err(failure)) => {
            match args.output {
                Output::Json => say!(
                    "{}",
                    json!({"verified": false, "kind": failure.kind(), "reason": failure.to_string()})
                ),
                Output::Text => eprintln!("verification failed: {failure}"),
            }
            ExitCode::from(1)
        }
        Err(e) => {
            match args.output {
                Output::Json => say!(
                    "{}",
                    json!({"verified": false, "kind": "error", "reason": format!("{e:#}")})
                ),
                Output::Text => eprintln!("stella verify: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

fn verify_inner(args: &VerifyArgs) -> anyhow::Result<Result<Value, stella_signer::VerifyFailure>> {
    let artifact_sha256 = match parse_sha256_ref(&args.artifact) {
        Ok(hex) => hex.to_owned(),
        Err(_) => sha256_hex(&read(Path::new(&args.artifact))?),
    };
    if let Some(root) = &args.trusted_root {
        return verify_keyless(args, root, &artifact_sha256);
    }
    // The candidate keys: the one given, or every key of the Offline Kit with its validity.
    let candidates: Vec<(PublicKey, Option<stella_signer::verify::KeyValidity>)> =
        match (&args.key, &args.trust) {
            (Some(path), _) => vec![(PublicKey::from_pem_file(path)?, None)],
            (None, Some(dir)) => {
                let keys: Vec<stella_api::KeyInfo> =
                    serde_json::from_slice(&read(&dir.join("keys.json"))?)
                        .context("keys.json of the trust export")?;
                keys.into_iter()
                    .map(|k| {
                        Ok((
                            PublicKey::from_pem(&k.public_key_pem)?,
                            Some(stella_signer::verify::KeyValidity {
                                state: k.state,
                                valid_from: k.created_at,
                                retired_at: k.updated_at,
                            }),
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            (None, None) => bail!("pass --key or --trust"),
        };
    let bundle = args
        .bundle
        .as_deref()
        .map(read)
        .transpose()?
        .map(|b| Bundle::from_json(&b))
        .transpose()?;
    let envelope = args
        .envelope
        .as_deref()
        .map(read)
        .transpose()?
        .map(|b| Envelope::from_json(&b))
        .transpose()?;
    let bundle_sha256 = bundle.as_ref().map(Bundle::sha256).transpose()?;
    let mut verified = Err(stella_signer::VerifyFailure::NoSignatures);
    let mut validity = None;
    for (key, key_validity) in &candidates {
        let attempt = match (&bundle, &envelope) {
            (Some(bundle), _) => verify_bundle(bundle, key),
            (None, Some(envelope)) => verify_envelope(envelope, key),
            (None, None) => bail!("pass --bundle or --envelope"),
        };
        let found = attempt.is_ok();
        verified = attempt;
        if found {
            validity = key_validity.clone();
            break;
        }
    }
    let verified = match verified {
        Ok(v) => v,
        Err(failure) => return Ok(Err(failure)),
    };
    if let Err(failure) = check_statement(&verified, &artifact_sha256, args) {
        return Ok(Err(failure));
    }
    if let Some(validity) = &validity
        && let Err(failure) = stella_signer::verify::check_key_validity(
            &verified.key_id,
            validity,
            args.signed_at.as_deref(),
        )
    {
        return Ok(Err(failure));
    }
    Ok(Ok(json!({
        "verified": true,
        "artifact": format!("sha256:{artifact_sha256}"),
        "predicateType": verified.statement.predicate_type,
        "keyId": verified.key_id,
        "subjects": verified.statement.subject,
        "bundleSha256": bundle_sha256,
    })))
}

/// The verified statement must name the artifact (and the predicate type asked for).
fn check_statement(
    verified: &stella_signer::Verified,
    artifact_sha256: &str,
    args: &VerifyArgs,
) -> Result<(), stella_signer::VerifyFailure> {
    check_expectations(
        verified,
        &Expectations {
            subject_sha256: Some(artifact_sha256.to_owned()),
            predicate_type: args.predicate_type.clone(),
        },
    )
}

/// `stella verify --trusted-root … --certificate-identity … --certificate-oidc-issuer …`.
fn verify_keyless(
    args: &VerifyArgs,
    root: &Path,
    artifact_sha256: &str,
) -> anyhow::Result<Result<Value, stella_signer::VerifyFailure>> {
    let root = stella_signer::verify::TrustedRoot::from_json(&read(root)?)?;
    let bundle_path = args
        .bundle
        .as_deref()
        .context("--trusted-root needs --bundle")?;
    let bundle = Bundle::from_json(&read(bundle_path)?)?;
    let policy = stella_signer::timestamp::IdentityPolicy {
        identity: args.certificate_identity.clone().unwrap_or_default(),
        oidc_issuer: args.certificate_oidc_issuer.clone().unwrap_or_default(),
    };
    let (verified, signed_at) =
        match stella_signer::verify::verify_keyless_bundle(&bundle, &root, &policy) {
            Ok(v) => v,
            Err(failure) => return Ok(Err(failure)),
        };
    if let Err(failure) = check_statement(&verified, artifact_sha256, args) {
        return Ok(Err(failure));
    }
    Ok(Ok(json!({
        "verified": true,
        "artifact": format!("sha256:{artifact_sha256}"),
        "predicateType": verified.statement.predicate_type,
        "keyId": verified.key_id,
        "subjects": verified.statement.subject,
        "bundleSha256": bundle.sha256()?,
        "certificateIdentity": policy.identity,
        "certificateOidcIssuer": policy.oidc_issuer,
        "signedAt": signed_at.format(&time::format_description::well_known::Rfc3339)?,
    })))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes JSON received from the node, pretty-printed (hashes are over canonical bytes, so
/// formatting does not matter to verifiers).
fn write_raw_json(path: &Path, raw: &str) -> anyhow::Result<()> {
    let value: Value = serde_json::from_str(raw)?;
    let mut bytes = serde_json::to_vec_pretty(&value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    path.with_file_name(name)
}

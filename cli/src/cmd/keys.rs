//! `stella keys …`: the key registry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use stella_signer::PublicKey;

use super::common::{ConnArgs, Output};

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
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
pub(crate) struct RegisterArgs {
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

pub(crate) fn keys(what: KeysCommand) -> anyhow::Result<()> {
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

pub(crate) fn register(args: RegisterArgs, rotate: bool) -> anyhow::Result<()> {
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
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

/// `--suite ed25519|secp256k1-tr`.
pub(crate) fn parse_suite(text: &str) -> Result<stella_api::ThresholdSuite, String> {
    [
        stella_api::ThresholdSuite::Ed25519,
        stella_api::ThresholdSuite::Secp256k1Tr,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| format!("unknown suite `{text}` (ed25519 or secp256k1-tr)"))
}

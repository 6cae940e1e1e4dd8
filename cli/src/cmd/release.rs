//! `stella release …`: scanner release signatures, allowlist and approvals.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use stella_signer::PublicKey;

use super::common::{ConnArgs, Output, parse_duration, report};

#[derive(Subcommand)]
pub(crate) enum ReleaseCommand {
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

#[derive(Args)]
pub(crate) struct RegistryArgs {
    /// Talk plain HTTP to the registry (a loopback registry).
    #[arg(long)]
    insecure: bool,
    /// Extra PEM CA for the registry's TLS certificate.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry client for IMAGE@DIGEST, and the digest.
    pub(crate) fn open(&self, image: &str) -> anyhow::Result<(stella_release::Registry, String)> {
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

pub(crate) fn release(what: ReleaseCommand) -> ExitCode {
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

pub(crate) fn decide(
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

//! `stella audit …`: read, export, prove and monitor the replicated audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::common::{ConnArgs, read, report};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
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
pub(crate) struct AuditFilters {
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
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
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
pub(crate) enum AuditCommand {
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
pub(crate) struct LogKeyArg {
    /// The log's note verifier key (`origin+id+key`), or a file holding it (`stella trust
    /// export` writes `audit-log.vkey`).
    #[arg(long)]
    log_key: String,
}

pub(crate) fn audit(args: &AuditArgs) -> anyhow::Result<()> {
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

pub(crate) fn audit_log_command(action: AuditCommand) -> anyhow::Result<()> {
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
pub(crate) fn audit_watch(
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

/// `stella audit [SUBCOMMAND]`: a page of records without a subcommand.
pub(crate) fn run(args: Box<AuditArgs>) -> ExitCode {
    match args.action {
        None => report(audit(&args)),
        Some(AuditCommand::Watch {
            conn,
            key,
            state,
            interval_seconds,
            once,
        }) => audit_watch(&conn, &key, &state, interval_seconds, once),
        Some(action) => report(audit_log_command(action)),
    }
}

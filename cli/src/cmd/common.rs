//! What every subcommand shares: the connection arguments, output format and file helpers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;
use stella_api::{Client, ClientConfig, Credentials};

/// How to reach and authenticate to a signer.
#[derive(Args)]
pub(crate) struct ConnArgs {
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
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

/// `90s`, `30m`, `4h`, `2d` → seconds.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<u64> {
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

pub(crate) fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stella: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes JSON received from the node, pretty-printed (hashes are over canonical bytes, so
/// formatting does not matter to verifiers).
pub(crate) fn write_raw_json(path: &Path, raw: &str) -> anyhow::Result<()> {
    let value: Value = serde_json::from_str(raw)?;
    let mut bytes = serde_json::to_vec_pretty(&value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn numbered(path: &Path, n: usize) -> PathBuf {
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

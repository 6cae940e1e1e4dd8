//! `--cluster FILE`: an operator's own cluster. The file names each node's client and peer URL
//! and the shell commands that kill, restart, pause, resume and cut it off (systemctl, kubectl,
//! ssh — whatever the deployment uses), plus the credentials of the tenants the workload signs
//! for and of an auditor. Format: `docs/runbooks/chaos-drills.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use stella_api::Credentials;

use crate::target::{Target, Tenant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The URL clients make DPoP proofs for (the load balancer's, one of `[admission]
    /// public_urls`).
    pub public_url: String,
    /// The nodes' `[limits] request_deadline_seconds`.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
    /// PEM public key of the signing key (bundles verify with it).
    pub verify_key: PathBuf,
    /// A credentials file (as `stella --credentials` takes) of an auditor tenant with scope
    /// `signer.audit.all`.
    pub auditor_credentials: PathBuf,
    /// Removes every cut made by the nodes' `cut` commands.
    pub heal: String,
    pub tenants: Vec<TenantEntry>,
    pub nodes: Vec<NodeEntry>,
}

fn default_deadline() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantEntry {
    pub name: String,
    pub credentials: PathBuf,
    /// The plan's signatures per window, to check it (leave out to skip the check).
    pub quota: Option<u64>,
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    #[serde(default = "default_workers")]
    pub workers: usize,
}

fn default_window() -> u64 {
    3600
}

fn default_workers() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: usize,
    pub api_url: String,
    pub peer_url: String,
    pub kill: String,
    pub restart: String,
    pub pause: String,
    pub resume: String,
    /// Cuts this node's peer link to another node (`{peer_id}`, `{peer_url}`, `{peer_host}`,
    /// `{peer_port}` name the other one); run for both ends of a link.
    pub cut: String,
    /// Restarts the node with its clock `{seconds}` off (e.g. under `faketime`); `{seconds}` is
    /// 0 to restore the true clock. Without it the clock-skew fault fails on this node.
    pub skew_clock: Option<String>,
    /// Fills the filesystem under the node's data directory (e.g. `fallocate` a ballast file
    /// on a small volume); `free_disk` removes it. Without them the disk-full fault fails here.
    pub fill_disk: Option<String>,
    pub free_disk: Option<String>,
}

pub struct FileTarget {
    file: ClusterFile,
    base: PathBuf,
    auditor: Credentials,
    tenants: Vec<Tenant>,
}

impl FileTarget {
    pub fn load(path: &Path) -> Result<FileTarget> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ClusterFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.nodes.is_empty() {
            bail!("{}: no [[nodes]]", path.display());
        }
        let mut ids: Vec<usize> = file.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids != (1..=file.nodes.len()).collect::<Vec<_>>() {
            bail!(
                "{}: node ids must be 1..{}",
                path.display(),
                file.nodes.len()
            );
        }
        if file.tenants.is_empty() {
            bail!("{}: no [[tenants]]", path.display());
        }
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let auditor = credentials(&base, &file.auditor_credentials)?;
        let tenants = file
            .tenants
            .iter()
            .map(|t| {
                Ok(Tenant {
                    name: t.name.clone(),
                    credentials: credentials(&base, &t.credentials)?,
                    quota: t.quota.map(|q| (q, t.window_seconds)),
                    workers: t.workers.clamp(1, 64),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileTarget {
            file,
            base,
            auditor,
            tenants,
        })
    }

    fn node(&self, id: usize) -> Result<&NodeEntry> {
        self.file
            .nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn path(&self, p: &Path) -> PathBuf {
        relative_to(&self.base, p)
    }
}

fn relative_to(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn credentials(base: &Path, p: &Path) -> Result<Credentials> {
    Credentials::load(&relative_to(base, p)).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// `(host, port)` of a URL such as `https://10.0.0.2:8444`.
pub fn host_port(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h.to_owned(), p.to_owned()),
        _ => (authority.to_owned(), String::new()),
    }
}

/// Runs an operator's command with `sh -c`; `vars` replace `{name}` placeholders and are also
/// exported as `STELLA_CHAOS_<NAME>`.
pub fn run_command(template: &str, vars: &[(&str, String)]) -> Result<()> {
    let mut command = template.to_owned();
    for (name, value) in vars {
        command = command.replace(&format!("{{{name}}}"), value);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&command);
    for (name, value) in vars {
        cmd.env(format!("STELLA_CHAOS_{}", name.to_uppercase()), value);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running `{command}`"))?;
    if !out.status.success() {
        bail!(
            "`{command}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Target for FileTarget {
    fn node_ids(&self) -> Vec<usize> {
        (1..=self.file.nodes.len()).collect()
    }

    fn api_url(&self, id: usize) -> String {
        self.node(id).map(|n| n.api_url.clone()).unwrap_or_default()
    }

    fn public_url(&self) -> String {
        self.file.public_url.trim_end_matches('/').to_owned()
    }

    fn kill(&mut self, id: usize) -> Result<()> {
        run_command(&self.node(id)?.kill, &[("id", id.to_string())])
    }

    fn restart(&mut self, id: usize) -> Result<()> {
        run_command(&self.node(id)?.restart, &[("id", id.to_string())])
    }

    fn pause(&mut self, id: usize) -> Result<()> {
        run_command(&self.node(id)?.pause, &[("id", id.to_string())])
    }

    fn resume(&mut self, id: usize) -> Result<()> {
        run_command(&self.node(id)?.resume, &[("id", id.to_string())])
    }

    fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let peer = self.node(to)?;
            let (host, port) = host_port(&peer.peer_url);
            run_command(
                &self.node(from)?.cut,
                &[
                    ("id", from.to_string()),
                    ("peer_id", to.to_string()),
                    ("peer_url", peer.peer_url.clone()),
                    ("peer_host", host),
                    ("peer_port", port),
                ],
            )?;
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<()> {
        run_command(&self.file.heal, &[])
    }

    fn fill_disk(&mut self, id: usize) -> Result<()> {
        let Some(command) = &self.node(id)?.fill_disk else {
            bail!("node {id} has no fill_disk command");
        };
        run_command(command, &[("id", id.to_string())])
    }

    fn free_disk(&mut self, id: usize) -> Result<()> {
        let Some(command) = &self.node(id)?.free_disk else {
            bail!("node {id} has no free_disk command");
        };
        run_command(command, &[("id", id.to_string())])
    }

    fn skew_clock(&mut self, id: usize, seconds: i64) -> Result<()> {
        let Some(command) = &self.node(id)?.skew_clock else {
            bail!("node {id} has no skew_clock command");
        };
        run_command(
            command,
            &[("id", id.to_string()), ("seconds", seconds.to_string())],
        )
    }

    fn tenants(&self) -> Vec<Tenant> {
        self.tenants.clone()
    }

    fn auditor(&self) -> Credentials {
        self.auditor.clone()
    }

    fn verify_key_pem(&self) -> Result<String> {
        let p = self.path(&self.file.verify_key);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(self.file.deadline_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_peer_urls() {
        assert_eq!(
            host_port("https://10.0.0.2:8444"),
            ("10.0.0.2".into(), "8444".into())
        );
        assert_eq!(
            host_port("https://node-1.example:8444/x"),
            ("node-1.example".into(), "8444".into())
        );
        assert_eq!(host_port("https://node"), ("node".into(), String::new()));
    }

    #[test]
    fn commands_get_their_placeholders() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        run_command(
            &format!(
                "echo {{peer_host}}:$STELLA_CHAOS_PEER_PORT > {}",
                out.display()
            ),
            &[
                ("peer_host", "10.0.0.3".into()),
                ("peer_port", "8444".into()),
            ],
        )
        .expect("runs");
        assert_eq!(
            std::fs::read_to_string(out).expect("out").trim(),
            "10.0.0.3:8444"
        );
        assert!(run_command("exit 3", &[]).is_err());
    }
}

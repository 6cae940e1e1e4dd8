//! `stella-signer`: the signing node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use stella_cluster::PeerClient;
use stella_node::config::Config;
use stella_node::{app, telemetry};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "stella-signer", version, about = "Stella Signer node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the node.
    Serve {
        /// Single-node dev mode: embedded storage, generated key and credentials, plain HTTP.
        #[arg(long)]
        dev: bool,
        /// Data directory (dev mode).
        #[arg(long, default_value = ".stella-dev")]
        data_dir: PathBuf,
        /// Listen address (dev mode). Port 0 picks a free port; the ready line tells which.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// TOML configuration file (required without --dev).
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
    },
    /// Cluster membership and PKI.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Inspect the audit log of a stopped node.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Generate a dev cluster CA and node certificates (node-1..node-N, admin) into DIR.
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// The cluster id the certificates' identity URIs name (`[cluster] cluster_id`).
        #[arg(long, default_value = stella_cluster::identity::DEFAULT_CLUSTER_ID)]
        cluster_id: String,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Extra subject alternative names (host names or IPs) for every node certificate.
        #[arg(long)]
        san: Vec<String>,
    },
    /// Write everything a new cluster needs into OUT: PKI, shared keys, one configuration
    /// per node, HAProxy's and Prometheus's configuration, and client credentials. The
    /// identity services are a dev node's stand-ins (`serve --dev --data-dir IDENTITY_DIR`
    /// listening at IDENTITY_URL).
    Plan {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The balancer's and Prometheus's host (and every node's, without --hosts).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// One host per node (comma-separated): each node on its own host, same ports.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Node i serves clients on API_PORT (+ i - 1 when the nodes share a host) …
        #[arg(long, default_value_t = 8443)]
        api_port: u16,
        /// … and peers on PEER_PORT + i - 1.
        #[arg(long, default_value_t = 9443)]
        peer_port: u16,
        /// The load balancer's client port.
        #[arg(long, default_value_t = 8440)]
        lb_port: u16,
        #[arg(long, default_value_t = 9090)]
        prometheus_port: u16,
        #[arg(long, default_value = stella_cluster::identity::DEFAULT_CLUSTER_ID)]
        cluster_id: String,
        /// The dev node that stands in for the Authority and the licensing service: its data
        /// directory …
        #[arg(long)]
        identity_dir: PathBuf,
        /// … and the URL it serves at (`serve --dev --listen`).
        #[arg(long)]
        identity_url: String,
    },
    /// Make the (running) node of CONFIG the first member of a new cluster.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Add the (running) node of CONFIG to the cluster led by LEADER (a peer URL).
    Join {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        leader: String,
    },
    /// Remove NODE_ID from the cluster led by LEADER. A node may remove only itself: removing
    /// another member takes an operator certificate (`--cert`/`--key`, e.g. `admin.pem`).
    Remove {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        leader: String,
        #[arg(long)]
        node_id: u64,
        #[command(flatten)]
        identity: Identity,
    },
}

/// The peer identity to act with instead of the certificate in CONFIG.
#[derive(clap::Args)]
struct Identity {
    /// Operator certificate (PEM) from the cluster CA.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of a stopped node's audit log and print its head.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print every audit record of a stopped node as JSON lines.
    Export {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stella-signer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            dev,
            data_dir,
            listen,
            config,
        } => {
            telemetry::init_logging();
            let config = match (dev, config) {
                (true, _) => Config::dev(data_dir, listen),
                (false, Some(path)) => Config::from_file(&path)?,
                (false, None) => bail!("either --dev or --config FILE is required"),
            };
            runtime()?.block_on(async {
                let node = app::build(config).await?;
                node.run().await
            })?;
            Ok(())
        }
        Command::Cluster { command } => cluster(command),
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => {
            let records = read_audit(&data_dir)?;
            stella_state::verify_chain(&records, None)
                .map_err(|e| anyhow::anyhow!("audit chain broken: {e}"))?;
            let head = records
                .last()
                .map(|r| r.hash.as_str())
                .unwrap_or(stella_state::GENESIS_HASH);
            println!(
                "{}",
                json!({"records": records.len(), "head": head, "chain": "ok"})
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Export { data_dir },
        } => {
            let records = read_audit(&data_dir)?;
            for record in records {
                println!("{}", String::from_utf8_lossy(&record.to_canonical_line()));
            }
            Ok(())
        }
    }
}

/// Every audit record of a stopped node (a running node holds the database).
fn read_audit(data_dir: &std::path::Path) -> anyhow::Result<Vec<stella_state::AuditRecord>> {
    stella_state::storage::read_audit_offline(&data_dir.join("raft"))
        .map_err(|e| anyhow::anyhow!("reading the audit log (is the node stopped?): {e}"))
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    let no_identity = Identity {
        cert: None,
        key: None,
    };
    let (config_path, target, body, path, identity) = match &command {
        ClusterCommand::Plan {
            out,
            nodes,
            host,
            hosts,
            api_port,
            peer_port,
            lb_port,
            prometheus_port,
            cluster_id,
            identity_dir,
            identity_url,
        } => {
            let layout = stella_node::plan::Layout {
                nodes: *nodes,
                host: host.clone(),
                hosts: hosts.clone(),
                api_port: *api_port,
                peer_port: *peer_port,
                lb_port: *lb_port,
                prometheus_port: *prometheus_port,
                cluster_id: cluster_id.clone(),
            };
            if !(1..=15).contains(nodes) {
                bail!("a cluster has 1 to 15 nodes (3 or 5 are the usual sizes)");
            }
            if !hosts.is_empty() && hosts.len() as u64 != *nodes {
                bail!("--hosts names {} hosts for {nodes} nodes", hosts.len());
            }
            stella_node::plan::write(&layout, out, identity_dir, identity_url)?;
            println!(
                "{}",
                json!({"dir": out, "nodes": nodes, "url": layout.public_url()})
            );
            return Ok(());
        }
        ClusterCommand::Certs {
            out,
            cluster_id,
            nodes,
            san,
        } => {
            stella_cluster::pki::generate_dev_pki(out, cluster_id, *nodes, san)?;
            println!(
                "{}",
                json!({"dir": out, "clusterId": cluster_id, "nodes": nodes})
            );
            return Ok(());
        }
        ClusterCommand::Init { config } => {
            (config, None, json!({}), "/admin/v1/init", &no_identity)
        }
        ClusterCommand::Join { config, leader } => (
            config,
            Some(leader.clone()),
            json!(null),
            "/admin/v1/join",
            &no_identity,
        ),
        ClusterCommand::Remove {
            config,
            leader,
            node_id,
            identity,
        } => (
            config,
            Some(leader.clone()),
            json!({"nodeId": node_id}),
            "/admin/v1/remove",
            identity,
        ),
    };
    let config = Config::from_file(config_path)?;
    let Some(section) = &config.cluster else {
        bail!("{} has no [cluster] section", config_path.display())
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let tls = stella_cluster::PeerTls {
        ca_pem: read(&section.ca_cert)?,
        cert_pem: read(identity.cert.as_ref().unwrap_or(&section.cert))?,
        key_pem: read(identity.key.as_ref().unwrap_or(&section.key))?,
    };
    let body = if body.is_null() {
        json!({"nodeId": section.node_id, "peerUrl": section.peer_url, "apiUrl": section.api_url})
    } else {
        body
    };
    let target = target.unwrap_or_else(|| section.peer_url.clone());
    let answer: serde_json::Value = runtime()?.block_on(async {
        let peers = PeerClient::new(Some(&tls), None)?;
        peers
            .post(&target, path, &body, Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("{target}{path}: {e}"))
    })?;
    println!("{answer}");
    if answer["ok"] != true {
        bail!("{}", answer["detail"]);
    }
    Ok(())
}

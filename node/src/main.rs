//! `stella-signer`: the signing node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stella_node::audit_log::read_log;
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
    /// Inspect the local audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit log under DATA_DIR and print its head.
    Verify {
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
                (false, None) => anyhow::bail!("either --dev or --config FILE is required"),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            runtime.block_on(async {
                let node = app::build(config).await?;
                node.run().await
            })?;
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => {
            let records = read_log(&data_dir.join("audit"))?;
            let head = records
                .last()
                .map(|r| r.hash.as_str())
                .unwrap_or(stella_state::GENESIS_HASH);
            println!(
                "{}",
                serde_json::json!({"records": records.len(), "head": head, "chain": "ok"})
            );
            Ok(())
        }
    }
}

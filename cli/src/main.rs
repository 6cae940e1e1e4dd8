//! `stella`: sign evidence with a Stella Signer node and verify it offline.
//!
//! One module per subcommand under `cmd/`; this file parses the command line and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Prints a line to stdout; a closed pipe (`stella ... | head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod cmd;

use cmd::admin::AdminCommand;
use cmd::audit::AuditArgs;
use cmd::cluster::ClusterCommand;
use cmd::common::report;
use cmd::keys::KeysCommand;
use cmd::offline_kit::OfflineKitCommand;
use cmd::release::ReleaseCommand;
use cmd::sign::SignCommand;
use cmd::trust::TrustCommand;
use cmd::verify::VerifyArgs;

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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sign { what } => match cmd::sign::sign(what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stella: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Verify(args) => cmd::verify::verify(&args),
        Command::Cluster { what } => cmd::cluster::run(what),
        Command::Audit(args) => cmd::audit::run(args),
        Command::Admin { what } => cmd::admin::run(what),
        Command::Release { what } => cmd::release::release(what),
        Command::Keys { what } => report(cmd::keys::keys(what)),
        Command::Trust { what } => cmd::trust::run(what),
        Command::OfflineKit { what } => report(cmd::offline_kit::offline_kit(what)),
    }
}

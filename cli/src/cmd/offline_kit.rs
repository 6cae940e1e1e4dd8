//! `stella offline-kit build`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::common::ConnArgs;
use super::sign::sign_export;

#[derive(Subcommand)]
pub(crate) enum OfflineKitCommand {
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

pub(crate) fn offline_kit(what: OfflineKitCommand) -> anyhow::Result<()> {
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

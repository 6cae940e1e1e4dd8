//! `stella sign …`: sign evidence with a signer node.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use stella_api::{ClientError, SignDsseRequest, SignOptions, SubjectWire};
use stella_cli::evidence;
use stella_signer::Subject;
use stella_signer::digest::sha256_hex;

use super::common::{ConnArgs, Output, numbered, read, write_raw_json};

#[derive(Subcommand)]
pub(crate) enum SignCommand {
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

#[derive(Args)]
pub(crate) struct SignArgs {
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

/// A signing error as the user reads it: the problem's stable code, status and detail.
pub(crate) fn refusal(e: ClientError) -> anyhow::Error {
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

pub(crate) fn sign_export(manifest: &Path, out: &Path, conn: &ConnArgs) -> anyhow::Result<()> {
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

pub(crate) fn sign(command: SignCommand) -> anyhow::Result<()> {
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

pub(crate) fn subjects(file: &Path, given: &[String]) -> anyhow::Result<Vec<SubjectWire>> {
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

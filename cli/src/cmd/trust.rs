//! `stella trust export`: trust material for offline verification.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use super::common::{ConnArgs, report};

#[derive(Subcommand)]
pub(crate) enum TrustCommand {
    /// Write `trusted_root.json` (the keyless CAs), the PEM public key of every active and
    /// retired key (the default key included) and `keys.json` (tenant, plan, state, times).
    Export {
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub(crate) fn trust_export(out: &Path, conn: &ConnArgs) -> anyhow::Result<()> {
    use base64::Engine;
    let trust = conn.client()?.trust()?;
    std::fs::create_dir_all(out.join("keys"))
        .with_context(|| format!("creating {}", out.display()))?;
    for k in &trust.keys {
        let path = out.join("keys").join(format!(
            "{}.pub.pem",
            k.key_id.trim_start_matches("sha256:")
        ));
        std::fs::write(&path, &k.public_key_pem)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(
        out.join("keys.json"),
        serde_json::to_vec_pretty(&trust.keys)?,
    )?;
    // The audit log's checkpoint key: what `stella audit prove|watch --log-key` take.
    if let Some(log) = &trust.audit_log {
        std::fs::write(
            out.join("audit-log.vkey"),
            format!("{}\n", log.verifier_key),
        )?;
    }
    // Sigstore trust-root entries; `validFor` is left open: the chains' own validity bounds them.
    let authorities = |chains: &[Vec<String>], name: &str| {
        chains
            .iter()
            .map(|chain| {
                let certificates = chain
                    .iter()
                    .map(|pem| {
                        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                            .map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
                        Ok(json!({"rawBytes": base64::engine::general_purpose::STANDARD.encode(der.as_ref())}))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(json!({
                    "subject": {"organization": "Stella Signer", "commonName": name},
                    "certChain": {"certificates": certificates},
                    "validFor": {"start": "1970-01-01T00:00:00Z"}
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let root = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [], "ctlogs": [],
        "certificateAuthorities": authorities(&trust.certificate_authorities, "Fulcio")?,
        "timestampAuthorities": authorities(&trust.timestamp_authorities, "Time-Stamping Authority")?,
    });
    std::fs::write(
        out.join("trusted_root.json"),
        serde_json::to_vec_pretty(&root)?,
    )?;
    say!(
        "{} keys, {} certificate authorities and {} timestamp authorities written to {}",
        trust.keys.len(),
        trust.certificate_authorities.len(),
        trust.timestamp_authorities.len(),
        out.display()
    );
    Ok(())
}

/// `stella trust …`.
pub(crate) fn run(what: TrustCommand) -> ExitCode {
    let TrustCommand::Export { out, conn } = what;
    report(trust_export(&out, &conn))
}

//! `stella verify`: offline verification of a bundle or envelope.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use stella_signer::digest::{parse_sha256_ref, sha256_hex};
use stella_signer::verify::{Expectations, check_expectations, verify_bundle, verify_envelope};
use stella_signer::{Bundle, Envelope, PublicKey};

use super::common::{Output, read};

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The artifact file, or its digest as sha256:HEX.
    artifact: String,
    /// Sigstore bundle to verify.
    #[arg(
        long,
        required_unless_present = "envelope",
        conflicts_with = "envelope"
    )]
    bundle: Option<PathBuf>,
    /// DSSE envelope to verify (instead of a bundle).
    #[arg(long)]
    envelope: Option<PathBuf>,
    /// Public key (PEM) the signature must verify with.
    #[arg(
        long,
        required_unless_present_any = ["trust", "trusted_root"],
        conflicts_with_all = ["trust", "trusted_root"]
    )]
    key: Option<PathBuf>,
    /// An Offline Kit written by `stella trust export`: the signature must verify with one of its
    /// keys, and that key must have been valid at `--signed-at`.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// When the signature was made (RFC 3339, e.g. from its audit record); needed for a retired key.
    #[arg(long, requires = "trust")]
    signed_at: Option<String>,
    /// A Sigstore `trusted_root.json` (e.g. from `stella trust export`) for a keyless bundle:
    /// its timestamp must verify with a listed TSA and its certificate chain to a listed CA at
    /// that time.
    #[arg(
        long,
        conflicts_with = "trust",
        requires_all = ["certificate_identity", "certificate_oidc_issuer", "bundle"]
    )]
    trusted_root: Option<PathBuf>,
    /// The identity (email or URI) the keyless certificate must name.
    #[arg(long, requires = "trusted_root")]
    certificate_identity: Option<String>,
    /// The OIDC issuer the keyless certificate must name.
    #[arg(long, requires = "trusted_root")]
    certificate_oidc_issuer: Option<String>,
    /// Required predicate type.
    #[arg(long)]
    predicate_type: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Exit codes: 0 verified, 1 not verified, 2 could not run (bad input files, usage).
pub(crate) fn verify(args: &VerifyArgs) -> ExitCode {
    match verify_inner(args) {
        Ok(Ok(report)) => {
            match args.output {
                Output::Json => say!("{report}"),
                Output::Text => say!(
                    "verified: {} over {} by {}",
                    report["predicateType"].as_str().unwrap_or(""),
                    report["artifact"].as_str().unwrap_or(""),
                    report["keyId"].as_str().unwrap_or("")
                ),
            }
            ExitCode::SUCCESS
        }
        Ok(Err(failure)) => {
            match args.output {
                Output::Json => say!(
                    "{}",
                    json!({"verified": false, "kind": failure.kind(), "reason": failure.to_string()})
                ),
                Output::Text => eprintln!("verification failed: {failure}"),
            }
            ExitCode::from(1)
        }
        Err(e) => {
            match args.output {
                Output::Json => say!(
                    "{}",
                    json!({"verified": false, "kind": "error", "reason": format!("{e:#}")})
                ),
                Output::Text => eprintln!("stella verify: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

pub(crate) fn verify_inner(
    args: &VerifyArgs,
) -> anyhow::Result<Result<Value, stella_signer::VerifyFailure>> {
    let artifact_sha256 = match parse_sha256_ref(&args.artifact) {
        Ok(hex) => hex.to_owned(),
        Err(_) => sha256_hex(&read(Path::new(&args.artifact))?),
    };
    if let Some(root) = &args.trusted_root {
        return verify_keyless(args, root, &artifact_sha256);
    }
    // The candidate keys: the one given, or every key of the Offline Kit with its validity.
    let candidates: Vec<(PublicKey, Option<stella_signer::verify::KeyValidity>)> =
        match (&args.key, &args.trust) {
            (Some(path), _) => vec![(PublicKey::from_pem_file(path)?, None)],
            (None, Some(dir)) => {
                let keys: Vec<stella_api::KeyInfo> =
                    serde_json::from_slice(&read(&dir.join("keys.json"))?)
                        .context("keys.json of the trust export")?;
                keys.into_iter()
                    .map(|k| {
                        Ok((
                            PublicKey::from_pem(&k.public_key_pem)?,
                            Some(stella_signer::verify::KeyValidity {
                                state: k.state,
                                valid_from: k.created_at,
                                retired_at: k.updated_at,
                            }),
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            (None, None) => bail!("pass --key or --trust"),
        };
    let bundle = args
        .bundle
        .as_deref()
        .map(read)
        .transpose()?
        .map(|b| Bundle::from_json(&b))
        .transpose()?;
    let envelope = args
        .envelope
        .as_deref()
        .map(read)
        .transpose()?
        .map(|b| Envelope::from_json(&b))
        .transpose()?;
    let bundle_sha256 = bundle.as_ref().map(Bundle::sha256).transpose()?;
    let mut verified = Err(stella_signer::VerifyFailure::NoSignatures);
    let mut validity = None;
    for (key, key_validity) in &candidates {
        let attempt = match (&bundle, &envelope) {
            (Some(bundle), _) => verify_bundle(bundle, key),
            (None, Some(envelope)) => verify_envelope(envelope, key),
            (None, None) => bail!("pass --bundle or --envelope"),
        };
        let found = attempt.is_ok();
        verified = attempt;
        if found {
            validity = key_validity.clone();
            break;
        }
    }
    let verified = match verified {
        Ok(v) => v,
        Err(failure) => return Ok(Err(failure)),
    };
    if let Err(failure) = check_statement(&verified, &artifact_sha256, args) {
        return Ok(Err(failure));
    }
    if let Some(validity) = &validity
        && let Err(failure) = stella_signer::verify::check_key_validity(
            &verified.key_id,
            validity,
            args.signed_at.as_deref(),
        )
    {
        return Ok(Err(failure));
    }
    Ok(Ok(json!({
        "verified": true,
        "artifact": format!("sha256:{artifact_sha256}"),
        "predicateType": verified.statement.predicate_type,
        "keyId": verified.key_id,
        "subjects": verified.statement.subject,
        "bundleSha256": bundle_sha256,
    })))
}

/// The verified statement must name the artifact (and the predicate type asked for).
pub(crate) fn check_statement(
    verified: &stella_signer::Verified,
    artifact_sha256: &str,
    args: &VerifyArgs,
) -> Result<(), stella_signer::VerifyFailure> {
    check_expectations(
        verified,
        &Expectations {
            subject_sha256: Some(artifact_sha256.to_owned()),
            predicate_type: args.predicate_type.clone(),
        },
    )
}

/// `stella verify --trusted-root … --certificate-identity … --certificate-oidc-issuer …`.
pub(crate) fn verify_keyless(
    args: &VerifyArgs,
    root: &Path,
    artifact_sha256: &str,
) -> anyhow::Result<Result<Value, stella_signer::VerifyFailure>> {
    let root = stella_signer::verify::TrustedRoot::from_json(&read(root)?)?;
    let bundle_path = args
        .bundle
        .as_deref()
        .context("--trusted-root needs --bundle")?;
    let bundle = Bundle::from_json(&read(bundle_path)?)?;
    let policy = stella_signer::timestamp::IdentityPolicy {
        identity: args.certificate_identity.clone().unwrap_or_default(),
        oidc_issuer: args.certificate_oidc_issuer.clone().unwrap_or_default(),
    };
    let (verified, signed_at) =
        match stella_signer::verify::verify_keyless_bundle(&bundle, &root, &policy) {
            Ok(v) => v,
            Err(failure) => return Ok(Err(failure)),
        };
    if let Err(failure) = check_statement(&verified, artifact_sha256, args) {
        return Ok(Err(failure));
    }
    Ok(Ok(json!({
        "verified": true,
        "artifact": format!("sha256:{artifact_sha256}"),
        "predicateType": verified.statement.predicate_type,
        "keyId": verified.key_id,
        "subjects": verified.statement.subject,
        "bundleSha256": bundle.sha256()?,
        "certificateIdentity": policy.identity,
        "certificateOidcIssuer": policy.oidc_issuer,
        "signedAt": signed_at.format(&time::format_description::well_known::Rfc3339)?,
    })))
}

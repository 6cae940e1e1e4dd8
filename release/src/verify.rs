//! Verifying discovered release signatures against the trusted keys (offline, pure).

use serde_json::Value;
use stella_signer::verify::{Expectations, check_expectations, verify_bundle};
use stella_signer::{Bundle, PublicKey};

use crate::*;

/// Verifies every candidate against the trusted keys; trusted if one verifies over `digest`.
pub fn verify(discovery: &Discovery, digest: &str, keys: &[PublicKey]) -> Verdict {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let signatures: Vec<SignatureReport> = discovery
        .candidates
        .iter()
        .map(|candidate| match candidate {
            Candidate::Bundle {
                manifest_digest,
                bundle,
            } => verify_release_bundle(bundle, hex, keys, manifest_digest),
            Candidate::CosignClassic {
                manifest_digest,
                payload,
                signature,
            } => verify_cosign_classic(payload, signature, digest, keys, manifest_digest),
        })
        .collect();
    Verdict {
        trusted: signatures.iter().any(|s| s.verified),
        signatures,
        problems: discovery.problems.clone(),
    }
}

fn verify_release_bundle(
    bundle: &Bundle,
    hex: &str,
    keys: &[PublicKey],
    manifest_digest: &str,
) -> SignatureReport {
    let report = |key_id: Option<String>, verified, reason: String| SignatureReport {
        kind: "sigstore-bundle".into(),
        manifest_digest: manifest_digest.to_owned(),
        key_id,
        verified,
        reason,
    };
    let expect = Expectations {
        subject_sha256: Some(hex.to_owned()),
        predicate_type: Some(RELEASE_PREDICATE.to_owned()),
    };
    let mut last = "no trusted key is configured".to_owned();
    for key in keys {
        match verify_bundle(bundle, key) {
            Ok(verified) => match check_expectations(&verified, &expect) {
                Ok(()) => return report(Some(key.key_id()), true, "verified".into()),
                // A valid signature by a trusted key over something else.
                Err(e) => return report(Some(key.key_id()), false, e.to_string()),
            },
            Err(e) => last = e.to_string(),
        }
    }
    report(None, false, format!("not signed by a trusted key ({last})"))
}

fn verify_cosign_classic(
    payload: &[u8],
    signature: &[u8],
    digest: &str,
    keys: &[PublicKey],
    manifest_digest: &str,
) -> SignatureReport {
    let report = |key_id: Option<String>, verified, reason: &str| SignatureReport {
        kind: "cosign-classic".into(),
        manifest_digest: manifest_digest.to_owned(),
        key_id,
        verified,
        reason: reason.to_owned(),
    };
    let Some(key) = keys.iter().find(|k| k.verify(payload, signature)) else {
        return report(None, false, "not signed by a trusted key");
    };
    let signed_digest = serde_json::from_slice::<Value>(payload).ok().and_then(|p| {
        p.pointer("/critical/image/docker-manifest-digest")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if signed_digest.as_deref() != Some(digest) {
        return report(
            Some(key.key_id()),
            false,
            "the signed payload names another digest",
        );
    }
    report(Some(key.key_id()), true, "verified")
}

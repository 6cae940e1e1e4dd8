//! Signing decisions, free of I/O: validate a request into a plan, turn signatures into bundles,
//! and describe the outcome for the audit log and the response. The `signing` service wires
//! these steps to keys, the clock and the audit log.

use stella_api::{
    SignDsseRequest, SignDsseResponse, SignatureIdentity, SignedBundle, SignerIdentity,
};
use stella_signer::digest::sha256_hex;
use stella_signer::{
    Bundle, Envelope, PredicateType, SignatureAlgorithm, SignedOperation, Statement, Subject,
};
use stella_state::audit::SignatureRecord;

use crate::Error;

mod decide;
mod drafts;
pub use decide::{Precheck, PrecheckFacts, precheck};
pub use drafts::{
    Configured, Outcome, Refusal, audit_draft, configured_draft, operator_reason, preauth_draft,
    refusal_draft,
};

/// Signing with a long-lived key (file or HSM).
pub const MODE_KEYFUL: &str = "keyful";
/// Signing with an ephemeral key and a short-lived Fulcio certificate.
pub const MODE_KEYLESS: &str = "keyless";
/// Both: the tenant/plan's keys and a keyless signature, in one envelope.
pub const MODE_KEYFUL_KEYLESS: &str = "keyful+keyless";
/// PoE state of a request refused before its entitlement was established.
pub const POE_UNCHECKED: &str = "unchecked";

/// A validated request: the exact payload that will be signed.
#[derive(Debug, Clone)]
pub struct SigningPlan {
    /// `keyful`, `keyless` or `keyful+keyless`.
    pub mode: &'static str,
    pub predicate_type: PredicateType,
    pub payload: Vec<u8>,
    pub statement_sha256: String,
    pub subject_digests: Vec<String>,
}

pub fn plan(request: SignDsseRequest) -> Result<SigningPlan, Error> {
    let mode = match request.options.signing_mode.as_deref() {
        None | Some(MODE_KEYFUL) => MODE_KEYFUL,
        Some(MODE_KEYLESS) => MODE_KEYLESS,
        Some(MODE_KEYFUL_KEYLESS) => MODE_KEYFUL_KEYLESS,
        Some(other) => {
            return Err(Error::InvalidRequest(format!(
                "signing mode `{other}` is not offered; use `keyful`, `keyless` or `keyful+keyless`"
            )));
        }
    };
    let predicate_type: PredicateType = request.predicate_type.parse()?;
    let subjects = request
        .subject
        .into_iter()
        .map(|s| Subject {
            name: s.name,
            digest: s.digest,
        })
        .collect();
    let statement = Statement::build(subjects, predicate_type, request.predicate)?;
    let subject_digests = statement
        .subject
        .iter()
        .filter_map(|s| s.sha256_hex())
        .map(|h| format!("sha256:{h}"))
        .collect();
    let payload = statement.to_canonical_bytes()?;
    Ok(SigningPlan {
        mode,
        predicate_type,
        statement_sha256: sha256_hex(&payload),
        payload,
        subject_digests,
    })
}

/// The longest `Idempotency-Key` accepted (the value is hashed; it never enters the state).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The caller's `Idempotency-Key` header: absent, or one value of 1–255 visible ASCII
/// characters (a structured-field string in double quotes is accepted and unquoted).
pub fn idempotency_key(values: &[String]) -> Result<Option<String>, Error> {
    let value = match values {
        [] => return Ok(None),
        [one] => one.trim(),
        _ => {
            return Err(Error::InvalidRequest(
                "more than one `Idempotency-Key` header".into(),
            ));
        }
    };
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let valid = !value.is_empty()
        && value.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if !valid {
        return Err(Error::InvalidRequest(format!(
            "`Idempotency-Key` must be 1–{MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// What a signing request's idempotency identity is made of (`docs/api.md`).
pub struct IdentityFacts<'a> {
    /// The DPoP proof the receiving node checked (its `jti` scoped to its key, hashed).
    pub proof: Option<&'a stella_state::command::ProofClaim>,
    pub idempotency_key: Option<&'a str>,
    /// The `Authorization` header as presented.
    pub authorization: &'a str,
    pub tenant: &'a str,
    pub subject: &'a str,
    pub client_cert_sha256: Option<&'a str>,
    pub request: &'a SignDsseRequest,
    pub now_ms: u64,
    /// How long an `Idempotency-Key`'s outcome is kept.
    pub window_ms: u64,
}

/// The request's idempotency identity: its DPoP proof (bound to the token and the request's
/// canonical hash), else its `Idempotency-Key` (scoped to the caller, bound to the request's
/// hash); `None` when it has neither (every such request is a new one).
pub fn identity(f: IdentityFacts<'_>) -> Result<Option<stella_state::command::Identity>, Error> {
    use stella_state::command::Identity;
    let canonical = stella_signer::canonical::to_vec(f.request)?;
    let request_sha256 = sha256_hex(&canonical);
    if let Some(proof) = f.proof {
        let token_sha256 = sha256_hex(f.authorization.as_bytes());
        return Ok(Some(Identity {
            key: proof.key.clone(),
            binding: sha256_hex(
                format!("stella-idempotency-v1\ndpop\n{token_sha256}\n{request_sha256}").as_bytes(),
            ),
            expires_at_ms: proof.expires_at_ms,
        }));
    }
    let Some(key) = f.idempotency_key else {
        return Ok(None);
    };
    // Scoped to the caller: another caller's equal key is another identity.
    let scope = format!(
        "stella-idempotency-v1\nkey\n{}\n{}\n{}\n{}",
        f.tenant,
        f.subject,
        f.client_cert_sha256.unwrap_or(""),
        key
    );
    Ok(Some(Identity {
        key: sha256_hex(scope.as_bytes()),
        binding: sha256_hex(format!("stella-idempotency-v1\nkey\n{request_sha256}").as_bytes()),
        expires_at_ms: f.now_ms.saturating_add(f.window_ms),
    }))
}

/// What the committed outcome keeps of each signature.
pub fn stored_signatures(
    operations: &[SignedOperation],
) -> Vec<stella_state::command::StoredSignature> {
    operations
        .iter()
        .map(|op| stella_state::command::StoredSignature {
            key_id: op.key_id.clone(),
            algorithm: op.algorithm.to_string(),
            signature: op.signature.clone(),
            public_key: op.public_key.spki_der().to_vec(),
            certificate_chain_der: op.certificate_chain_der.clone(),
            timestamps: op.timestamps.clone(),
        })
        .collect()
}

/// The envelope and operations of a committed signing, rebuilt from the plan (the same
/// request gives the same payload) and the kept signatures.
pub fn rebuilt(
    plan: &SigningPlan,
    signatures: &[stella_state::command::StoredSignature],
) -> Result<(Envelope, Vec<SignedOperation>), Error> {
    let mut operations = Vec::with_capacity(signatures.len());
    for s in signatures {
        let algorithm: SignatureAlgorithm =
            serde_json::from_value(serde_json::Value::String(s.algorithm.clone()))
                .map_err(|e| Error::Unavailable(format!("a kept signature: {e}")))?;
        operations.push(SignedOperation {
            key_id: s.key_id.clone(),
            algorithm,
            signature: s.signature.clone(),
            public_key: stella_signer::PublicKey::from_spki_der(&s.public_key)?,
            certificate_chain_der: s.certificate_chain_der.clone(),
            timestamps: s.timestamps.clone(),
            remarks: Vec::new(),
        });
    }
    let envelope = Envelope {
        payload_type: stella_signer::IN_TOTO_PAYLOAD_TYPE.to_owned(),
        payload: plan.payload.clone(),
        signatures: operations
            .iter()
            .map(stella_signer::EnvelopeSignature::of)
            .collect(),
    };
    Ok((envelope, operations))
}

/// A Sigstore bundle for one signature of the envelope.
#[derive(Debug, Clone)]
pub struct MadeBundle {
    /// The signature's position in the envelope.
    pub index: usize,
    pub key_id: String,
    pub bundle: Bundle,
    /// SHA-256 of the canonical bundle.
    pub sha256: String,
}

/// One bundle per Sigstore-verifiable signature (ECDSA P-256: file, HSM, KMS, keyless keys;
/// Ed25519: threshold keys of the Ed25519 suite), each with its canonical hash. A secp256k1
/// threshold key's BIP-340 signature is in the envelope only: Sigstore verifiers have no
/// secp256k1 Schnorr, so a bundle would verify nowhere.
pub fn bundles(
    envelope: &Envelope,
    operations: &[SignedOperation],
) -> Result<Vec<MadeBundle>, Error> {
    operations
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            matches!(
                op.algorithm,
                SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::Ed25519
            )
        })
        .map(|(i, op)| {
            let bundle = Bundle::for_signature(envelope, i, op)?;
            let sha256 = bundle.sha256()?;
            Ok(MadeBundle {
                index: i,
                key_id: op.key_id.clone(),
                bundle,
                sha256,
            })
        })
        .collect()
}

/// The hash every signature is filed under: its bundle's, or for a signature without one
/// (BIP-340 threshold), SHA-256 of its RFC 8785 envelope signature entry.
pub fn signature_hashes(envelope: &Envelope, bundles: &[MadeBundle]) -> Result<Vec<String>, Error> {
    envelope
        .signatures
        .iter()
        .enumerate()
        .map(|(i, entry)| match bundles.iter().find(|b| b.index == i) {
            Some(b) => Ok(b.sha256.clone()),
            None => stella_signer::canonical::to_vec(entry)
                .map(|bytes| sha256_hex(&bytes))
                .map_err(Error::from),
        })
        .collect()
}

/// What the audit record says about the signature made: the key that made it (for keyless,
/// the ephemeral key), the certificate serial of a keyless signature, and every signature.
pub struct Made<'a> {
    pub key_id: &'a str,
    pub key_source: &'a str,
    pub certificate_serial: Option<String>,
    pub bundle_sha256: Option<String>,
    pub signatures: Vec<SignatureRecord>,
}

/// The key source of each signature: its signer's, or `fallback` for a standby's signature
/// made because the active key's back-end failed (the remark names both keys).
pub fn signature_sources(
    signers: &[std::sync::Arc<dyn stella_signer::KeySigner>],
    operations: &[SignedOperation],
) -> Vec<String> {
    signers
        .iter()
        .zip(operations)
        .map(|(s, op)| {
            if op
                .remarks
                .iter()
                .any(|r| r.starts_with(crate::keys::FALLBACK_REMARK))
            {
                "fallback".to_owned()
            } else {
                s.descriptor().source.as_str().to_owned()
            }
        })
        .collect()
}

/// The reason a signed record gives: `signed`, with what the back-ends want on the record
/// (threshold holders left out, and why; a fallback).
pub fn signed_reason(operations: &[SignedOperation]) -> String {
    let remarks: Vec<&str> = operations
        .iter()
        .flat_map(|op| op.remarks.iter().map(String::as_str))
        .collect();
    if remarks.is_empty() {
        "signed".to_owned()
    } else {
        format!("signed; {}", remarks.join("; "))
    }
}

/// Every signature as the audit record keeps it. `sources[i]` is signature `i`'s key source.
pub fn signature_records(
    operations: &[SignedOperation],
    sources: &[String],
    hashes: &[String],
) -> Vec<SignatureRecord> {
    operations
        .iter()
        .zip(hashes)
        .enumerate()
        .map(|(i, (op, hash))| SignatureRecord {
            key_id: op.key_id.clone(),
            key_source: sources.get(i).cloned().unwrap_or_default(),
            algorithm: op.algorithm.to_string(),
            certificate_serial: op
                .certificate_chain_der
                .first()
                .and_then(|leaf| crate::keyless::certificate_serial(leaf)),
            bundle_sha256: hash.clone(),
        })
        .collect()
}

pub fn response(
    plan: &SigningPlan,
    envelope: &Envelope,
    operations: &[SignedOperation],
    bundles: Vec<MadeBundle>,
    sources: &[String],
    audit_id: String,
    request_id: &str,
) -> Result<SignDsseResponse, Error> {
    let hashes = signature_hashes(envelope, &bundles)?;
    let signatures: Vec<SignatureIdentity> = operations
        .iter()
        .zip(&hashes)
        .enumerate()
        .map(|(i, (op, hash))| SignatureIdentity {
            key_id: op.key_id.clone(),
            key_source: sources.get(i).cloned().unwrap_or_default(),
            algorithm: op.algorithm.to_string(),
            public_key_pem: op.public_key.to_pem(),
            certificate_chain: op
                .certificate_chain_der
                .iter()
                .map(|der| pem_certificate(der))
                .collect(),
            bundle_sha256: hash.clone(),
        })
        .collect();
    let first = signatures
        .first()
        .cloned()
        .ok_or_else(|| Error::Unavailable("no signature was produced".into()))?;
    let bundle_sha256 = bundles
        .first()
        .map_or_else(|| first.bundle_sha256.clone(), |b| b.sha256.clone());
    let bundles = bundles
        .iter()
        .map(|b| {
            Ok(SignedBundle {
                key_id: b.key_id.clone(),
                bundle: to_json(&b.bundle)?,
                bundle_sha256: b.sha256.clone(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(SignDsseResponse {
        envelope: to_json(envelope)?,
        bundles,
        bundle_sha256,
        statement_sha256: plan.statement_sha256.clone(),
        signer_identity: SignerIdentity {
            mode: plan.mode.to_owned(),
            key_id: first.key_id,
            key_source: first.key_source,
            algorithm: first.algorithm,
            public_key_pem: first.public_key_pem,
            certificate_chain: first.certificate_chain,
            signatures,
        },
        audit_id,
        request_id: request_id.to_owned(),
        quota: None,
        log_entry: None,
    })
}

/// A DER certificate as PEM.
pub fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Box<serde_json::value::RawValue>, Error> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::Unavailable(format!("encoding the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;
    use stella_api::{SignOptions, SubjectWire};
    use stella_signer::{FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner};

    fn request(predicate_type: &str) -> SignDsseRequest {
        SignDsseRequest {
            subject: vec![SubjectWire {
                name: "app".into(),
                digest: [("sha256".to_owned(), "e".repeat(64))].into(),
            }],
            predicate_type: predicate_type.into(),
            predicate: json!({"format": "spdx-2.3", "digest": format!("sha256:{}", "f".repeat(64)), "componentCount": 7}),
            scanner_image_digest: None,
            poe: None,
            options: SignOptions::default(),
        }
    }

    #[test]
    fn plans_validate_type_mode_and_subjects() {
        assert!(plan(request("stella.ops/sbom@v1")).is_ok());
        assert!(matches!(
            plan(request("cosign.sigstore.dev/attestation/v1")),
            Err(Error::UnsupportedPredicateType(_))
        ));
        let mut keyless = request("stella.ops/sbom@v1");
        keyless.options.signing_mode = Some("keyless".into());
        assert_eq!(plan(keyless).expect("keyless").mode, MODE_KEYLESS);
        let mut threshold = request("stella.ops/sbom@v1");
        threshold.options.signing_mode = Some("threshold".into());
        assert!(matches!(plan(threshold), Err(Error::InvalidRequest(_))));
        let mut no_subject = request("stella.ops/sbom@v1");
        no_subject.subject.clear();
        assert!(matches!(plan(no_subject), Err(Error::InvalidRequest(_))));
    }

    #[test]
    fn the_response_carries_one_verifiable_bundle_per_signature() {
        let p = plan(request("stella.ops/sbom@v1")).expect("plan");
        let (k1, k2) = (
            FileKeySigner::generate().expect("k1"),
            FileKeySigner::generate().expect("k2"),
        );
        let (envelope, ops) =
            Envelope::sign(IN_TOTO_PAYLOAD_TYPE, p.payload.clone(), &[&k1, &k2]).expect("sign");
        let bundles = bundles(&envelope, &ops).expect("bundles");
        let resp = response(
            &p,
            &envelope,
            &ops,
            bundles,
            &["file".to_owned(), "file".to_owned()],
            "aud-1".into(),
            "req-1",
        )
        .expect("response");
        assert_eq!(resp.bundles.len(), 2);
        let every: Vec<&str> = resp
            .signer_identity
            .signatures
            .iter()
            .map(|s| s.key_id.as_str())
            .collect();
        assert_eq!(
            every,
            [
                k1.descriptor().key_id.as_str(),
                k2.descriptor().key_id.as_str()
            ],
            "the identity covers every signature"
        );
        for (s, b) in resp.signer_identity.signatures.iter().zip(&resp.bundles) {
            assert_eq!(s.bundle_sha256, b.bundle_sha256);
        }
        assert_eq!(resp.bundle_sha256, resp.bundles[0].bundle_sha256);
        for (b, key) in resp.bundles.iter().zip([&k1, &k2]) {
            let bundle = Bundle::from_json(b.bundle.get().as_bytes()).expect("bundle");
            let verified =
                stella_signer::verify::verify_bundle(&bundle, key.public_key()).expect("verifies");
            assert_eq!(verified.statement.predicate_type, "stella.ops/sbom@v1");
            assert_eq!(bundle.sha256().expect("hash"), b.bundle_sha256);
        }
        assert_eq!(resp.signer_identity.key_id, k1.descriptor().key_id);
    }

    #[test]
    fn a_signature_without_a_bundle_is_filed_under_its_canonical_entry() {
        let p = plan(request("stella.ops/sbom@v1")).expect("plan");
        let key = FileKeySigner::generate().expect("key");
        let (envelope, ops) =
            Envelope::sign(IN_TOTO_PAYLOAD_TYPE, p.payload.clone(), &[&key]).expect("sign");
        // No bundles (as for a BIP-340 threshold signature): the entry's RFC 8785 hash.
        let hashes = signature_hashes(&envelope, &[]).expect("hashes");
        let entry = format!(
            "{{\"keyid\":\"{}\",\"sig\":\"{}\"}}",
            ops[0].key_id,
            base64::engine::general_purpose::STANDARD.encode(&ops[0].signature)
        );
        assert_eq!(hashes, vec![sha256_hex(entry.as_bytes())]);
        let resp = response(
            &p,
            &envelope,
            &ops,
            Vec::new(),
            &["threshold".into()],
            "aud-1".into(),
            "r",
        )
        .expect("response");
        assert_eq!(resp.bundle_sha256, hashes[0], "never an empty bundleSha256");
        let records = signature_records(&ops, &["threshold".into()], &hashes);
        assert_eq!(records[0].bundle_sha256, hashes[0]);
        assert_eq!(records[0].key_source, "threshold");
    }
}

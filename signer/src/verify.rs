//! Offline verification of DSSE envelopes and Sigstore bundles against a public key.
//!
//! Returns a typed result: either what was verified ([`Verified`]) or exactly why not
//! ([`VerifyFailure`]), so the CLI can print one line and machines can branch on the kind.

use serde::Serialize;

use crate::bundle::{BUNDLE_MEDIA_TYPE_V03, Bundle};
use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::key::PublicKey;
use crate::statement::Statement;
use crate::timestamp::{self, IdentityPolicy, TimestampAuthority};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub statement: Statement,
    pub key_id: String,
    /// Index of the first signature in the envelope that verified with the key.
    pub signature_index: usize,
}

/// Why verification failed. `kind()` is a stable machine-readable name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerifyFailure {
    #[error("the envelope carries no signature")]
    NoSignatures,
    #[error("payload type `{found}` is not {IN_TOTO_PAYLOAD_TYPE}")]
    PayloadType { found: String },
    #[error("no signature verifies with key {key_id}")]
    BadSignature { key_id: String },
    #[error("unsupported bundle: {reason}")]
    UnsupportedBundle { reason: String },
    #[error("bundle key hint does not match key {key_id}")]
    HintMismatch { key_id: String },
    #[error("payload is not a valid in-toto Statement v1: {reason}")]
    MalformedStatement { reason: String },
    #[error("sha256:{sha256} is not a subject of the statement")]
    SubjectMismatch { sha256: String },
    #[error("predicate type is `{found}`, expected `{expected}`")]
    PredicateTypeMismatch { expected: String, found: String },
    /// The key verified the signature but was not valid when it was made.
    #[error("key {key_id} was not valid at the signing time: {reason}")]
    KeyNotValidAtSigningTime { key_id: String, reason: String },
    /// No RFC 3161 timestamp of the bundle verifies with the trusted root's authorities.
    #[error("no trusted timestamp: {reason}")]
    Timestamp { reason: String },
    /// The keyless certificate does not chain to the trusted root at the timestamp, or names
    /// another identity or issuer.
    #[error("certificate not trusted: {reason}")]
    Certificate { reason: String },
}

impl VerifyFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyFailure::NoSignatures => "no_signatures",
            VerifyFailure::PayloadType { .. } => "payload_type",
            VerifyFailure::BadSignature { .. } => "bad_signature",
            VerifyFailure::UnsupportedBundle { .. } => "unsupported_bundle",
            VerifyFailure::HintMismatch { .. } => "hint_mismatch",
            VerifyFailure::MalformedStatement { .. } => "malformed_statement",
            VerifyFailure::SubjectMismatch { .. } => "subject_mismatch",
            VerifyFailure::PredicateTypeMismatch { .. } => "predicate_type_mismatch",
            VerifyFailure::KeyNotValidAtSigningTime { .. } => "key_not_valid_at_signing_time",
            VerifyFailure::Timestamp { .. } => "timestamp",
            VerifyFailure::Certificate { .. } => "certificate",
        }
    }
}

/// A key's validity as a trust export states it (times are RFC 3339; empty = unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValidity {
    /// `active` or `retired` (revoked keys are not exported).
    pub state: String,
    pub valid_from: String,
    /// For a retired key: when it stopped signing.
    pub retired_at: String,
}

/// Judges a signature by its signing time against the key's validity: a key signs from its
/// activation until its retirement. Without a signing time only an active key is accepted.
pub fn check_key_validity(
    key_id: &str,
    validity: &KeyValidity,
    signed_at: Option<&str>,
) -> Result<(), VerifyFailure> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let fail = |reason: &str| VerifyFailure::KeyNotValidAtSigningTime {
        key_id: key_id.to_owned(),
        reason: reason.to_owned(),
    };
    let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    let Some(signed_at) = signed_at else {
        return if validity.state == "active" {
            Ok(())
        } else {
            Err(fail(
                "the key is retired; give the signing time to check it",
            ))
        };
    };
    let signed = parse(signed_at).ok_or_else(|| fail("the signing time is not RFC 3339"))?;
    if let Some(from) = parse(&validity.valid_from)
        && signed < from
    {
        return Err(fail("signed before the key was activated (not yet valid)"));
    }
    match validity.state.as_str() {
        "active" => Ok(()),
        "retired" => match parse(&validity.retired_at) {
            Some(until) if signed < until => Ok(()),
            _ => Err(fail("signed after the key was retired")),
        },
        other => Err(fail(&format!("key state `{other}`"))),
    }
}

/// What the verified statement must additionally say.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Lowercase hex SHA-256 that must appear among the subjects.
    pub subject_sha256: Option<String>,
    pub predicate_type: Option<String>,
}

/// Verifies that at least one envelope signature is valid under `key`, then parses the payload.
pub fn verify_envelope(envelope: &Envelope, key: &PublicKey) -> Result<Verified, VerifyFailure> {
    if envelope.signatures.is_empty() {
        return Err(VerifyFailure::NoSignatures);
    }
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(VerifyFailure::PayloadType {
            found: envelope.payload_type.clone(),
        });
    }
    let message = envelope.pae();
    let Some(signature_index) = envelope
        .signatures
        .iter()
        .position(|s| key.verify(&message, &s.sig))
    else {
        return Err(VerifyFailure::BadSignature {
            key_id: key.key_id(),
        });
    };
    let statement = Statement::from_payload(&envelope.payload).map_err(|e| {
        VerifyFailure::MalformedStatement {
            reason: e.to_string(),
        }
    })?;
    Ok(Verified {
        statement,
        key_id: key.key_id(),
        signature_index,
    })
}

/// Verifies a keyful Sigstore bundle v0.3 offline.
pub fn verify_bundle(bundle: &Bundle, key: &PublicKey) -> Result<Verified, VerifyFailure> {
    if bundle.media_type != BUNDLE_MEDIA_TYPE_V03 {
        return Err(VerifyFailure::UnsupportedBundle {
            reason: format!("media type `{}`", bundle.media_type),
        });
    }
    if bundle.dsse_envelope.signatures.len() != 1 {
        return Err(VerifyFailure::UnsupportedBundle {
            reason: "a bundle must carry exactly one signature".into(),
        });
    }
    match bundle.hint() {
        Some(hint) if hint == key.hint() => {}
        Some(_) => {
            return Err(VerifyFailure::HintMismatch {
                key_id: key.key_id(),
            });
        }
        None => {
            return Err(VerifyFailure::UnsupportedBundle {
                reason: "certificate bundles need a trusted root; use a key bundle".into(),
            });
        }
    }
    verify_envelope(&bundle.dsse_envelope, key)
}

/// The parts of a Sigstore `trusted_root.json` an offline keyless check needs.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    /// Fulcio CA chains (DER), root last.
    pub certificate_authorities: Vec<Vec<Vec<u8>>>,
    pub timestamp_authorities: Vec<TimestampAuthority>,
}

impl TrustedRoot {
    /// Parses `trusted_root.json` (media type `application/vnd.dev.sigstore.trustedroot+json`).
    pub fn from_json(bytes: &[u8]) -> Result<TrustedRoot, crate::Error> {
        let bad = |why: &str| crate::Error::InvalidInput(format!("trusted root: {why}"));
        let root: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        if !root["mediaType"]
            .as_str()
            .is_some_and(|m| m.starts_with("application/vnd.dev.sigstore.trustedroot+json"))
        {
            return Err(bad("not a Sigstore trusted root (mediaType)"));
        }
        let chains = |field: &str| -> Result<Vec<Vec<Vec<u8>>>, crate::Error> {
            let Some(list) = root[field].as_array() else {
                return Ok(Vec::new());
            };
            list.iter()
                .map(|authority| {
                    authority["certChain"]["certificates"]
                        .as_array()
                        .ok_or_else(|| bad(&format!("{field}: an authority without certChain")))?
                        .iter()
                        .map(|c| {
                            c["rawBytes"]
                                .as_str()
                                .and_then(|b| STANDARD.decode(b).ok())
                                .ok_or_else(|| bad(&format!("{field}: bad rawBytes")))
                        })
                        .collect()
                })
                .collect()
        };
        Ok(TrustedRoot {
            certificate_authorities: chains("certificateAuthorities")?,
            timestamp_authorities: chains("timestampAuthorities")?
                .into_iter()
                .map(|chain_der| TimestampAuthority { chain_der })
                .collect(),
        })
    }
}

/// Verifies a keyless Sigstore bundle offline: an RFC 3161 timestamp from a trusted authority
/// fixes the signing time, the leaf must chain to a trusted Fulcio CA at that time and name
/// `policy`'s identity and issuer, and its key must verify the DSSE signature. Returns what
/// was verified and the vouched-for signing time.
pub fn verify_keyless_bundle(
    bundle: &Bundle,
    root: &TrustedRoot,
    policy: &IdentityPolicy,
) -> Result<(Verified, time::OffsetDateTime), VerifyFailure> {
    if bundle.media_type != BUNDLE_MEDIA_TYPE_V03 {
        return Err(VerifyFailure::UnsupportedBundle {
            reason: format!("media type `{}`", bundle.media_type),
        });
    }
    let [signature] = bundle.dsse_envelope.signatures.as_slice() else {
        return Err(VerifyFailure::UnsupportedBundle {
            reason: "a bundle must carry exactly one signature".into(),
        });
    };
    let Some(leaf) = &bundle.verification_material.certificate else {
        return Err(VerifyFailure::UnsupportedBundle {
            reason: "a key bundle: verify it with --key or --trust".into(),
        });
    };
    let tokens = bundle.rfc3161_timestamps();
    if tokens.is_empty() {
        return Err(VerifyFailure::Timestamp {
            reason: "the bundle carries no RFC 3161 timestamp".into(),
        });
    }
    let mut reasons = Vec::new();
    let mut signed_at = None;
    for token in &tokens {
        match timestamp::verify_timestamp(token, &signature.sig, &root.timestamp_authorities) {
            Ok(t) => {
                signed_at = Some(t);
                break;
            }
            Err(e) => reasons.push(e),
        }
    }
    let Some(signed_at) = signed_at else {
        return Err(VerifyFailure::Timestamp {
            reason: reasons.join("; "),
        });
    };
    let spki = timestamp::verify_leaf(
        &leaf.raw_bytes,
        &root.certificate_authorities,
        signed_at,
        policy,
    )
    .map_err(|reason| VerifyFailure::Certificate { reason })?;
    let key = PublicKey::from_spki_der(&spki).map_err(|e| VerifyFailure::Certificate {
        reason: e.to_string(),
    })?;
    Ok((verify_envelope(&bundle.dsse_envelope, &key)?, signed_at))
}

/// Checks the statement of a verified envelope against what the caller expects.
pub fn check_expectations(verified: &Verified, expect: &Expectations) -> Result<(), VerifyFailure> {
    if let Some(sha) = &expect.subject_sha256
        && !verified.statement.has_subject_digest(sha)
    {
        return Err(VerifyFailure::SubjectMismatch {
            sha256: sha.clone(),
        });
    }
    if let Some(expected) = &expect.predicate_type
        && &verified.statement.predicate_type != expected
    {
        return Err(VerifyFailure::PredicateTypeMismatch {
            expected: expected.clone(),
            found: verified.statement.predicate_type.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod validity_tests {
    use super::*;

    fn validity(state: &str, from: &str, retired_at: &str) -> KeyValidity {
        KeyValidity {
            state: state.into(),
            valid_from: from.into(),
            retired_at: retired_at.into(),
        }
    }

    #[test]
    fn signatures_are_judged_by_signing_time() {
        let active = validity("active", "2026-01-01T00:00:00Z", "");
        let retired = validity("retired", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z");
        assert!(check_key_validity("k", &active, None).is_ok());
        assert!(check_key_validity("k", &active, Some("2026-03-01T00:00:00Z")).is_ok());
        let early = check_key_validity("k", &active, Some("2025-12-31T23:59:59Z"));
        assert!(matches!(
            early,
            Err(VerifyFailure::KeyNotValidAtSigningTime { .. })
        ));
        assert!(check_key_validity("k", &retired, Some("2026-05-31T00:00:00Z")).is_ok());
        assert!(check_key_validity("k", &retired, Some("2026-06-01T00:00:00Z")).is_err());
        assert!(check_key_validity("k", &retired, None).is_err());
        assert!(check_key_validity("k", &active, Some("yesterday")).is_err());
    }
}

//! Offline verification of DSSE envelopes and Sigstore bundles against a public key.
//!
//! Returns a typed result: either what was verified ([`Verified`]) or exactly why not
//! ([`VerifyFailure`]), so the CLI can print one line and machines can branch on the kind.

use serde::Serialize;

use crate::bundle::{BUNDLE_MEDIA_TYPE_V03, Bundle};
use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::key::PublicKey;
use crate::statement::Statement;

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

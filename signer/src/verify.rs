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
        }
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

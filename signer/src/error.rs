use crate::threshold::ThresholdError;
use crate::verify::VerifyFailure;

/// The signing core's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("predicate type `{0}` is not on the allow-list")]
    UnsupportedPredicateType(String),
    #[error("invalid predicate for {predicate_type}: {reason}")]
    InvalidPredicate {
        predicate_type: String,
        reason: String,
    },
    #[error("canonical JSON: {0}")]
    Canonical(#[from] serde_json::Error),
    #[error("key material: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyFailure),
    #[error("threshold signing: {0}")]
    Threshold(#[from] ThresholdError),
}

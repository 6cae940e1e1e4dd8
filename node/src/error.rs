use stella_api::ProblemCode;

/// The node's one error type. Request-level variants map onto stable problem codes through
/// [`Error::code`]; start-up variants end the process with a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- request level ---
    #[error("{0}")]
    InvalidRequest(String),
    #[error("predicate type `{0}` is not on the allow-list")]
    UnsupportedPredicateType(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body exceeds {limit} bytes (the limit of this node or of the caller's plan)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Unauthenticated(String),
    /// The DPoP proof lacks a valid server nonce: retry with this one.
    #[error("the DPoP proof must carry a server nonce (use_dpop_nonce)")]
    DpopNonce(String),
    #[error("{0}")]
    EntitlementDenied(String),
    #[error("{0}")]
    ReleaseUntrusted(String),
    #[error("signing is unavailable: {0}")]
    Unavailable(String),
    #[error("the node is overloaded")]
    Overloaded,
    #[error("this node is not the leader")]
    NotLeader,
    #[error("quota exhausted ({reason}); retry in {retry_after_seconds} s")]
    Throttled {
        retry_after_seconds: u64,
        reason: String,
    },
    /// A problem answered by the leader for a forwarded request.
    #[error("{}", .0.detail)]
    Remote(stella_api::Problem),
    // --- start-up ---
    #[error("configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(String),
}

impl Error {
    /// Seconds a client should wait before retrying, when that is known.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Error::Throttled {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Error::Remote(p) => p.retry_after_seconds,
            Error::Unavailable(_) | Error::Overloaded | Error::NotLeader => Some(1),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub fn code(&self) -> ProblemCode {
        match self {
            Error::InvalidRequest(_) => ProblemCode::InvalidRequest,
            Error::UnsupportedPredicateType(_) => ProblemCode::UnsupportedPredicateType,
            Error::UnsupportedMediaType(_) => ProblemCode::UnsupportedMediaType,
            Error::TooLarge { .. } => ProblemCode::ArtifactTooLarge,
            Error::Unauthenticated(_) | Error::DpopNonce(_) => ProblemCode::InvalidToken,
            Error::EntitlementDenied(_) => ProblemCode::EntitlementDenied,
            Error::ReleaseUntrusted(_) => ProblemCode::ReleaseUntrusted,
            Error::Unavailable(_) | Error::Overloaded | Error::NotLeader => {
                ProblemCode::SigningUnavailable
            }
            Error::Throttled { .. } => ProblemCode::PlanThrottled,
            Error::Remote(p) => p.code,
            Error::Config(_) | Error::Io { .. } | Error::Key(_) => ProblemCode::InternalError,
        }
    }
}

impl From<stella_signer::Error> for Error {
    fn from(e: stella_signer::Error) -> Error {
        use stella_signer::Error as S;
        match e {
            S::UnsupportedPredicateType(t) => Error::UnsupportedPredicateType(t),
            S::InvalidInput(_) | S::InvalidPredicate { .. } | S::Canonical(_) => {
                Error::InvalidRequest(e.to_string())
            }
            S::Key(_) | S::Signing(_) | S::Verify(_) | S::Threshold(_) => {
                Error::Unavailable(e.to_string())
            }
        }
    }
}

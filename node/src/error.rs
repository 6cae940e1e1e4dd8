use stella_api::ProblemCode;

/// The most bytes of caller-chosen text (a `kid`, a scheme, a claim) that an error message, a
/// problem detail, an audit reason or a log line echoes.
pub const MAX_ECHO_BYTES: usize = 64;
/// The most bytes of a problem's `detail` and of an audit record's reason.
pub const MAX_DETAIL_BYTES: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn clip_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Route prefixes of this service: paths under them are public API, not internal detail.
const PUBLIC_PATHS: [&str; 7] = [
    "/api/", "/peer/", "/raft/", "/admin/", "/healthz", "/readyz", "/metrics",
];

/// `text` without internal locations: every URL becomes `<url>` and every absolute file-system
/// path `<path>` (the service's own API routes stay). Problem details go to callers; where a
/// dependency lives, and where the node keeps its files, stay in the node's log.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let space = &piece[word.len()..];
        let lead = word.len()
            - word
                .trim_start_matches(['(', '"', '`', '\'', '<', '['])
                .len();
        let core_end = word
            .trim_end_matches([')', '"', '`', '\'', ',', ';', ':', '.', '>', ']'])
            .len()
            .max(lead);
        let core = &word[lead..core_end];
        let replacement = if core.contains("://") {
            Some("<url>")
        } else if core.starts_with('/')
            && core[1..].contains('/')
            && !PUBLIC_PATHS.iter().any(|p| core.starts_with(p))
        {
            Some("<path>")
        } else {
            None
        };
        match replacement {
            Some(r) => {
                out.push_str(&word[..lead]);
                out.push_str(r);
                out.push_str(&word[core_end..]);
            }
            None => out.push_str(word),
        }
        out.push_str(space);
    }
    out
}

/// Caller-chosen text as an error may echo it (at most [`MAX_ECHO_BYTES`]).
pub fn clip(text: &str) -> String {
    clip_to(text, MAX_ECHO_BYTES)
}

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
    /// The plan's key policy refuses the key that would sign (too old, not hardware-backed):
    /// unavailable until an operator rotates it.
    #[error("signing is unavailable: {0}")]
    KeyPolicy(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the node is overloaded")]
    Overloaded,
    #[error("this node is not the leader")]
    NotLeader,
    #[error("quota exhausted ({reason}); retry in {retry_after_seconds} s")]
    Throttled {
        retry_after_seconds: u64,
        reason: String,
    },
    /// Too many failed authentications from this source.
    #[error("too many failed authentications from this address; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// Peer plane: the client certificate's role may not call this route (or act as this node).
    #[error("{0}")]
    PeerForbidden(String),
    /// The same caller used an idempotency identity for a different request.
    #[error("{0}")]
    IdempotencyConflict(String),
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
    /// A tenant at its bound of pending release approvals (checked by the receiving node, and
    /// again by the state machine when two requests race for the last slot).
    pub fn too_many_pending_approvals() -> Error {
        let bound = stella_state::machine::MAX_PENDING_APPROVALS_PER_TENANT;
        Error::Throttled {
            retry_after_seconds: 60,
            reason: format!(
                "{bound} approvals of this tenant are pending; retry once an operator decided one or one expired"
            ),
        }
    }

    /// Seconds a client should wait before retrying, when that is known.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Error::Throttled {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Error::RateLimited {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            Error::Remote(p) => p.retry_after_seconds,
            // Nothing changes until an operator rotates the key: no tight retry loop.
            Error::KeyPolicy(_) => Some(300),
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
            Error::Unavailable(_) | Error::KeyPolicy(_) | Error::Overloaded | Error::NotLeader => {
                ProblemCode::SigningUnavailable
            }
            Error::Throttled { .. } => ProblemCode::PlanThrottled,
            Error::RateLimited { .. } => ProblemCode::RateLimited,
            Error::PeerForbidden(_) => ProblemCode::PeerForbidden,
            Error::NotFound(_) => ProblemCode::NotFound,
            Error::IdempotencyConflict(_) => ProblemCode::IdempotencyConflict,
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

#[cfg(test)]
mod tests {

    #[test]
    fn details_lose_internal_urls_and_paths_but_keep_api_routes() {
        assert_eq!(
            super::scrub(
                "Fulcio unreachable: error sending request for url (https://fulcio.internal:5555/api/v2/signingCert)"
            ),
            "Fulcio unreachable: error sending request for url (<url>)"
        );
        assert_eq!(
            super::scrub(
                "install the private key first: reading /var/lib/stella/keys/a.pem: No such file"
            ),
            "install the private key first: reading <path>: No such file"
        );
        assert_eq!(
            super::scrub("operator admin may not call /peer/v1/sign, see `/etc/x/y`."),
            "operator admin may not call /peer/v1/sign, see `<path>`."
        );
        assert_eq!(super::scrub("a/b and / alone stay"), "a/b and / alone stay");
        assert_eq!(super::scrub("é://x ü"), "<url> ü");
    }
    use super::*;

    #[test]
    fn echoed_text_is_cut_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let cut = clip(&long);
        assert!(
            cut.len() <= MAX_ECHO_BYTES + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…') && cut.starts_with("éé"));
        assert_eq!(clip_to("abcdef", 3), "abc…");
    }
}

//! RFC 7807 problem details with stable codes. The codes are part of the API contract: clients
//! (and Attestor) branch on `code`, never on `title` or `detail`.

use serde::{Deserialize, Serialize};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    InvalidToken,
    EntitlementDenied,
    ReleaseUntrusted,
    PlanThrottled,
    ArtifactTooLarge,
    InvalidRequest,
    UnsupportedPredicateType,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    SigningUnavailable,
    InternalError,
    /// Too many failed authentications from this source: refused before any verification work.
    RateLimited,
    /// Peer plane only: the client certificate's role (node, operator, another cluster) may not
    /// call this route.
    PeerForbidden,
    /// The request's idempotency identity (its DPoP proof or `Idempotency-Key`) was used by
    /// the same caller for a different request body.
    IdempotencyConflict,
}

impl ProblemCode {
    pub const ALL: [ProblemCode; 15] = [
        ProblemCode::InvalidToken,
        ProblemCode::EntitlementDenied,
        ProblemCode::ReleaseUntrusted,
        ProblemCode::PlanThrottled,
        ProblemCode::ArtifactTooLarge,
        ProblemCode::InvalidRequest,
        ProblemCode::UnsupportedPredicateType,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::NotFound,
        ProblemCode::MethodNotAllowed,
        ProblemCode::SigningUnavailable,
        ProblemCode::InternalError,
        ProblemCode::RateLimited,
        ProblemCode::PeerForbidden,
        ProblemCode::IdempotencyConflict,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ProblemCode::InvalidToken => "invalid_token",
            ProblemCode::EntitlementDenied => "entitlement_denied",
            ProblemCode::ReleaseUntrusted => "release_untrusted",
            ProblemCode::PlanThrottled => "plan_throttled",
            ProblemCode::ArtifactTooLarge => "artifact_too_large",
            ProblemCode::InvalidRequest => "invalid_request",
            ProblemCode::UnsupportedPredicateType => "unsupported_predicate_type",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::SigningUnavailable => "signing_unavailable",
            ProblemCode::InternalError => "internal_error",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::PeerForbidden => "peer_forbidden",
            ProblemCode::IdempotencyConflict => "idempotency_conflict",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ProblemCode::InvalidToken => 401,
            ProblemCode::EntitlementDenied
            | ProblemCode::ReleaseUntrusted
            | ProblemCode::PeerForbidden => 403,
            ProblemCode::PlanThrottled | ProblemCode::RateLimited => 429,
            ProblemCode::ArtifactTooLarge => 413,
            ProblemCode::InvalidRequest | ProblemCode::UnsupportedPredicateType => 400,
            ProblemCode::UnsupportedMediaType => 415,
            ProblemCode::NotFound => 404,
            ProblemCode::IdempotencyConflict => 409,
            ProblemCode::MethodNotAllowed => 405,
            ProblemCode::SigningUnavailable => 503,
            ProblemCode::InternalError => 500,
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            ProblemCode::InvalidToken => "The caller's token is missing or invalid",
            ProblemCode::EntitlementDenied => "The caller is not entitled to signing",
            ProblemCode::ReleaseUntrusted => "The scanner release is not trusted",
            ProblemCode::PlanThrottled => "The plan's quota is exhausted",
            ProblemCode::ArtifactTooLarge => "The request body exceeds the configured limit",
            ProblemCode::InvalidRequest => "The request is malformed",
            ProblemCode::UnsupportedPredicateType => "The predicate type is not on the allow-list",
            ProblemCode::UnsupportedMediaType => "The request body must be application/json",
            ProblemCode::NotFound => "No such resource",
            ProblemCode::MethodNotAllowed => "Method not allowed on this resource",
            ProblemCode::SigningUnavailable => "Signing is temporarily unavailable",
            ProblemCode::InternalError => "Internal error",
            ProblemCode::RateLimited => "Too many failed authentications from this source",
            ProblemCode::PeerForbidden => "This peer certificate's role may not call this route",
            ProblemCode::IdempotencyConflict => {
                "The idempotency key was already used for a different request"
            }
        }
    }

    /// The RFC 7807 `type` URI.
    pub fn type_uri(&self) -> String {
        format!("urn:stella-ops:signer:problem:{}", self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ProblemCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `plan_throttled`, `rate_limited` and `signing_unavailable`: when to try again (also sent as `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            request_id: None,
            retry_after_seconds: None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status,
            self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in ProblemCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.status()));
        }
    }
}

//! The edge error type: every failure leaves the node as RFC 7807 problem+json with a stable code.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use stella_api::{PROBLEM_CONTENT_TYPE, Problem, ProblemCode};

use super::context::current_request_id;
use crate::Error;

#[derive(Debug)]
pub struct ApiProblem {
    pub problem: Problem,
    /// A fresh DPoP nonce to hand out (`DPoP-Nonce` header, RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl From<Problem> for ApiProblem {
    fn from(problem: Problem) -> ApiProblem {
        ApiProblem {
            problem,
            dpop_nonce: None,
        }
    }
}

impl std::fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.problem.fmt(f)
    }
}

impl From<Error> for ApiProblem {
    fn from(e: Error) -> ApiProblem {
        let code = e.code();
        // Internal details stay in the logs; clients get a generic sentence.
        let detail = if code == ProblemCode::InternalError {
            "internal error".to_owned()
        } else {
            let text = crate::error::scrub(&e.to_string());
            crate::error::clip_to(&text, crate::error::MAX_DETAIL_BYTES)
        };
        if code == ProblemCode::InternalError || code == ProblemCode::SigningUnavailable {
            tracing::error!(error = %e, code = code.as_str(), "request failed");
        }
        if let Error::Remote(problem) = e {
            return problem.into();
        }
        let mut problem = Problem::new(code, detail);
        problem.retry_after_seconds = e.retry_after_seconds();
        ApiProblem {
            problem,
            dpop_nonce: match e {
                Error::DpopNonce(nonce) => Some(nonce),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiProblem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut problem = self.problem.clone();
        problem.request_id = current_request_id();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        ));
        match problem.code {
            ProblemCode::InvalidToken => {
                // RFC 9449 §7.1 / RFC 6750 §3: say which scheme to use and why it failed.
                let challenge = match &self.dpop_nonce {
                    Some(_) => {
                        "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\""
                    }
                    None => {
                        "DPoP error=\"invalid_token\", algs=\"ES256 EdDSA\", Bearer error=\"invalid_token\""
                    }
                };
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                ));
                if let Some(nonce) = &self.dpop_nonce
                    && let Ok(value) = HeaderValue::from_str(nonce)
                {
                    response.insert_header(("dpop-nonce", value));
                }
            }
            ProblemCode::SigningUnavailable
            | ProblemCode::PlanThrottled
            | ProblemCode::RateLimited => {
                let seconds = problem.retry_after_seconds.unwrap_or(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&seconds) {
                    response.insert_header((header::RETRY_AFTER, value));
                }
            }
            _ => {}
        }
        response.body(body)
    }
}

pub async fn not_found() -> ApiProblem {
    Problem::new(ProblemCode::NotFound, "no such resource").into()
}

pub async fn method_not_allowed() -> ApiProblem {
    Problem::new(
        ProblemCode::MethodNotAllowed,
        "method not allowed on this resource",
    )
    .into()
}

impl actix_web::Responder for ApiProblem {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

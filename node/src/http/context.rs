//! Per-request context: request id and W3C trace context, one access log line per request.
//!
//! - `X-Request-Id`: taken from the client when it is a short token of safe characters,
//!   otherwise generated; echoed on the response and recorded in the audit log.
//! - `traceparent`: a valid incoming header keeps its trace id (and sampling flags); the node
//!   answers with its own span id under that trace. Without one, a new trace starts.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl RequestContext {
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let started = Instant::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ctx = build_context(
        header("x-request-id").as_deref(),
        header("traceparent").as_deref(),
    );
    req.extensions_mut().insert(ctx.clone());
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let span =
        tracing::info_span!("request", request_id = %ctx.request_id, trace_id = %ctx.trace_id);
    let result = REQUEST_ID
        .scope(
            ctx.request_id.clone(),
            next.call(req).instrument(span.clone()),
        )
        .await;
    let mut response = result?;
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.traceparent()) {
        headers.insert(HeaderName::from_static("traceparent"), v);
    }
    span.in_scope(|| {
        tracing::info!(
            target: "stella::http",
            method = %method,
            path = %path,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    Ok(response)
}

fn build_context(request_id: Option<&str>, traceparent: Option<&str>) -> RequestContext {
    let request_id = match request_id {
        Some(id) if is_safe_id(id) => id.to_owned(),
        _ => format!("req-{}", random_hex::<8>()),
    };
    let span_id = random_hex::<8>();
    match traceparent.and_then(parse_traceparent) {
        Some((trace_id, flags)) => RequestContext {
            request_id,
            trace_id,
            span_id,
            flags,
        },
        None => RequestContext {
            request_id,
            trace_id: random_hex::<16>(),
            span_id,
            flags: "01".into(),
        },
    }
}

fn is_safe_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Parses a version-00 `traceparent`; returns (trace id, flags).
fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return None;
    };
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = *version == "00"
        && is_hex(trace_id, 32)
        && is_hex(parent_id, 16)
        && is_hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    valid.then(|| ((*trace_id).to_owned(), (*flags).to_owned()))
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // On the (theoretical) failure of the system RNG, ids stay unique enough via the clock.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_only_when_valid() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = build_context(Some("abc-1"), Some(good));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.request_id, "abc-1");
        assert_ne!(ctx.span_id, "00f067aa0ba902b7");
        assert!(
            ctx.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let fresh = build_context(Some("bad id with spaces"), None);
        assert!(fresh.request_id.starts_with("req-") && fresh.trace_id.len() == 32);
    }
}

/// The client certificate presented on this connection (mTLS): base64url SHA-256 of its DER,
/// the value a bound token carries as `cnf.x5t#S256`. Stored per connection by `app.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub String);

/// Every value of a header, counted whole: a value that is not visible ASCII still counts (as
/// its lossy text, which then fails to parse), so it cannot hide a second header.
fn all_values(req: &actix_web::HttpRequest, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// What admission needs to know about a request, taken from its headers and connection.
pub fn request_facts(
    req: &actix_web::HttpRequest,
    base_urls: &[String],
) -> crate::admission::RequestFacts {
    let path = req.path();
    crate::admission::RequestFacts {
        method: req.method().as_str().to_owned(),
        urls: base_urls
            .iter()
            .map(|base| format!("{}{path}", base.trim_end_matches('/')))
            .collect(),
        authorization: all_values(req, "authorization"),
        dpop: all_values(req, "dpop"),
        idempotency_key: all_values(req, "idempotency-key"),
        client_cert_sha256: req.conn_data::<ClientCert>().map(|c| c.0.clone()),
        source: req.peer_addr().map(|a| a.ip()),
    }
}

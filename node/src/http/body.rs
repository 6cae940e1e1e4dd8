//! Reading JSON request bodies with a size limit and a content-type check, so that each failure
//! gets its own stable problem code (413, 415, 400) instead of a framework default.

use actix_web::HttpRequest;
use actix_web::web::{BytesMut, Payload};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::Error;

/// What a request body may cost: its size, and how long it may take to arrive. A body that
/// trickles in would otherwise hold its connection, and a signing request its place at the
/// front door (`shedding`), for as long as the caller likes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub deadline: std::time::Duration,
}

/// Reads and parses a JSON body; returns the value and the body's size in bytes.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: Payload,
    limits: &BodyLimits,
) -> Result<(T, usize), Error> {
    let limit = limits.max_bytes;
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(Error::UnsupportedMediaType(format!(
            "content type must be application/json, got `{}`",
            if content_type.is_empty() {
                "(none)"
            } else {
                content_type
            }
        )));
    }
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit });
    }
    let body = tokio::time::timeout(limits.deadline, collect(payload, limit))
        .await
        .map_err(|_| {
            Error::InvalidRequest(format!(
                "the request body did not arrive within {} s",
                limits.deadline.as_secs()
            ))
        })??;
    let value = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidRequest(format!("invalid JSON body: {e}")))?;
    Ok((value, body.len()))
}

async fn collect(mut payload: Payload, limit: usize) -> Result<BytesMut, Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidRequest(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

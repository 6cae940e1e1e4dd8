//! Blocking HTTP client for the CLI and tests.

use std::time::Duration;

use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::types::{
    AUDIT_PATH, AuditPage, CLUSTER_STATUS_PATH, ClusterStatus, Health, SIGN_DSSE_PATH,
    SignDsseRequest, SignDsseResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Problem(Problem),
    #[error("cannot reach the signer: {0}")]
    Transport(String),
    #[error("unexpected response ({status}): {body}")]
    Unexpected { status: u16, body: String },
    #[error("configuration: {0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    pub token: String,
    /// Extra PEM CA certificate(s) to trust.
    pub ca_cert_pem: Option<String>,
    pub timeout: Duration,
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let mut builder = reqwest::blocking::Client::builder().timeout(config.timeout);
        if let Some(pem) = &config.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            base: config.server.trim_end_matches('/').to_owned(),
            token: config.token,
            http,
        })
    }

    pub fn sign_dsse(&self, request: &SignDsseRequest) -> Result<SignDsseResponse, ClientError> {
        let response = self
            .http
            .post(format!("{}{SIGN_DSSE_PATH}", self.base))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    pub fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let response = self
            .http
            .get(format!("{}{CLUSTER_STATUS_PATH}", self.base))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    /// One page of audit records; `query` holds `after`, `limit`, `tenant`, `subject`, `consistency`.
    pub fn audit(&self, query: &[(&str, String)]) -> Result<AuditPage, ClientError> {
        let response = self
            .http
            .get(format!("{}{AUDIT_PATH}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    pub fn health(&self, path: &str) -> Result<Health, ClientError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::blocking::Response,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let is_problem = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_CONTENT_TYPE));
    let body = response
        .bytes()
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    if is_problem && let Ok(problem) = serde_json::from_slice::<Problem>(&body) {
        return Err(ClientError::Problem(problem));
    }
    if !(200..300).contains(&status) {
        return Err(ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
        status,
        body: format!("undecodable body ({e})"),
    })
}

//! Blocking HTTP client for the CLI, tests and the load generator.
//!
//! Authentication is transparent: the client obtains an OpTok from the Authority named in its
//! credentials (client-credentials grant, DPoP-bound), makes a fresh DPoP proof for every
//! request, answers the server's nonce challenge (`use_dpop_nonce`) once, and attaches the
//! credentials' PoE to signing requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::blocking::{RequestBuilder, Response};
use serde::Deserialize;

use crate::credentials::Credentials;
use crate::dpop::{DpopKey, unix_now};
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::types::{
    AUDIT_CHECKPOINT_PATH, AUDIT_CONSISTENCY_PATH, AUDIT_EXPORT_PATH, AUDIT_INCLUSION_PATH,
    AUDIT_PATH, AllowlistChange, ApprovalDecision, ApprovalRequest, AuditPage, CLUSTER_STATUS_PATH,
    ClusterStatus, ConsistencyProof, Health, InclusionProof, KEYS_ADMIN_PATH, KEYS_PATH,
    KEYS_REVOKE_PATH, KeyChange, KeyInfo, POE_BYPASS_PATH, PoeBypassRequest, REFERRERS_PATH,
    RELEASE_ALLOWLIST_PATH, RELEASE_APPROVALS_PATH, RELEASE_DECISIONS_PATH, ReferrersReport,
    RegisterKeyRequest, ReleaseChange, RevokeKeyRequest, SIGN_DSSE_PATH, SignDsseRequest,
    SignDsseResponse, TRUST_PATH, ToggleStatus, TrustMaterial,
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
    #[error("obtaining an access token: {0}")]
    Token(String),
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    pub credentials: Credentials,
    pub timeout: Duration,
}

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    authority_http: reqwest::blocking::Client,
    credentials: Credentials,
    dpop: Option<DpopKey>,
    token: Mutex<Option<(String, Instant)>>,
    nonce: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let creds = config.credentials;
        let mut builder = reqwest::blocking::Client::builder().timeout(config.timeout);
        if let Some(pem) = &creds.ca_cert_pem {
            builder = builder.tls_certs_merge(certs(pem)?);
        }
        if let (Some(cert), Some(key)) = (&creds.client_cert_pem, &creds.client_key_pem) {
            let identity = reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes())
                .map_err(|e| ClientError::Config(format!("client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut authority = reqwest::blocking::Client::builder().timeout(config.timeout);
        if let Some(pem) = creds
            .authority
            .as_ref()
            .and_then(|a| a.ca_cert_pem.as_deref())
        {
            authority = authority.tls_certs_merge(certs(pem)?);
        }
        let authority_http = authority
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let dpop = creds
            .dpop_key_pem
            .as_deref()
            .map(DpopKey::from_pem)
            .transpose()
            .map_err(ClientError::Config)?;
        Ok(Client {
            base: config.server.trim_end_matches('/').to_owned(),
            http,
            authority_http,
            credentials: creds,
            dpop,
            token: Mutex::new(None),
            nonce: Mutex::new(None),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The last DPoP nonce a server handed out (for callers that build requests themselves).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.lock_nonce().clone()
    }

    /// Signs `request`, adding the credentials' PoE if the request carries none.
    pub fn sign_dsse(&self, request: &SignDsseRequest) -> Result<SignDsseResponse, ClientError> {
        let body = if request.poe.is_none() && self.credentials.poe.is_some() {
            let mut with_poe = request.clone();
            with_poe.poe = self.credentials.poe.clone();
            serde_json::to_vec(&with_poe)
        } else {
            serde_json::to_vec(request)
        }
        .map_err(|e| ClientError::Config(e.to_string()))?;
        decode(self.send_idempotent(SIGN_DSSE_PATH, body, SIGN_RETRY_BUDGET)?)
    }

    /// Signs an export manifest (`/sign/export`), with the same retry rule as [`Client::sign_dsse`].
    pub fn sign_export(
        &self,
        request: &crate::SignExportRequest,
    ) -> Result<crate::SignExportResponse, ClientError> {
        let mut request = request.clone();
        if request.poe.is_none() {
            request.poe = self.credentials.poe.clone();
        }
        let body = serde_json::to_vec(&request).map_err(|e| ClientError::Config(e.to_string()))?;
        decode(self.send_idempotent(crate::SIGN_EXPORT_PATH, body, SIGN_RETRY_BUDGET)?)
    }

    /// POSTs a signing request so that it takes effect at most once however often it is sent:
    /// every retry carries the same DPoP proof and `Idempotency-Key` (the server answers a
    /// repeat with the first attempt's committed outcome). Retries a transport error (the
    /// outcome is unknown) and a 503 (after its `Retry-After`, at most 2 s), five attempts at
    /// most and until `budget` is spent; answers a DPoP nonce challenge once with a new proof (a challenged request did
    /// nothing).
    pub fn send_idempotent(
        &self,
        path: &str,
        body: Vec<u8>,
        budget: Duration,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let key = crate::dpop::random_id();
        // One request id for every attempt: the audit records of all of them carry it.
        let request_id = format!("req-{key}");
        let mut headers = self.auth_headers("POST", &url)?;
        let mut challenged_once = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self
                .http
                .post(&url)
                .header("idempotency-key", &key)
                .header("x-request-id", &request_id)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            let wait = match request.send() {
                Ok(response) => {
                    let challenged = self.remember_nonce(&response)
                        && response.status() == reqwest::StatusCode::UNAUTHORIZED;
                    if challenged && !challenged_once {
                        challenged_once = true;
                        headers = self.auth_headers("POST", &url)?;
                        continue;
                    }
                    if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        return Ok(response);
                    }
                    let wait = retry_after(&response).min(Duration::from_secs(2));
                    if attempts >= MAX_ATTEMPTS || started.elapsed() + wait >= budget {
                        return Ok(response);
                    }
                    wait
                }
                Err(e) => {
                    if attempts >= MAX_ATTEMPTS || started.elapsed() + RETRY_PAUSE >= budget {
                        return Err(ClientError::Transport(e.to_string()));
                    }
                    RETRY_PAUSE
                }
            };
            std::thread::sleep(wait);
        }
    }

    pub fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        decode(self.send(Method::GET, CLUSTER_STATUS_PATH, &[], None)?)
    }

    /// One page of audit records; `query` holds `after`, `limit`, `tenant`, `subject`, `consistency`.
    pub fn audit(&self, query: &[(&str, String)]) -> Result<AuditPage, ClientError> {
        decode(self.send(Method::GET, AUDIT_PATH, query, None)?)
    }

    /// The NDJSON export (`query` as for [`Client::audit`]), as a stream to read line by line;
    /// a problem answer is an error.
    pub fn audit_export(&self, query: &[(&str, String)]) -> Result<Response, ClientError> {
        let response = self.send(Method::GET, AUDIT_EXPORT_PATH, query, None)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        Err(decode::<serde_json::Value>(response)
            .err()
            .unwrap_or(ClientError::Unexpected {
                status,
                body: String::new(),
            }))
    }

    /// The audit log's current signed checkpoint (a C2SP signed note; public).
    pub fn checkpoint(&self) -> Result<String, ClientError> {
        let response = self.send(Method::GET, AUDIT_CHECKPOINT_PATH, &[], None)?;
        let status = response.status().as_u16();
        if status != 200 {
            return decode::<serde_json::Value>(response).and_then(|_| {
                Err(ClientError::Unexpected {
                    status,
                    body: String::new(),
                })
            });
        }
        response
            .text()
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// The inclusion proof of one record; `query` holds one of `index`, `auditId`,
    /// `bundleHash`, and optionally `treeSize`.
    pub fn inclusion_proof(&self, query: &[(&str, String)]) -> Result<InclusionProof, ClientError> {
        decode(self.send(Method::GET, AUDIT_INCLUSION_PATH, query, None)?)
    }

    /// The proof that the tree of `from` records is a prefix of the tree of `to` records.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProof, ClientError> {
        let query = [("from", from.to_string()), ("to", to.to_string())];
        decode(self.send(Method::GET, AUDIT_CONSISTENCY_PATH, &query, None)?)
    }

    /// Switches the emergency PoE bypass (scope `signer.admin`).
    pub fn set_poe_bypass(&self, request: &PoeBypassRequest) -> Result<ToggleStatus, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Config(e.to_string()))?;
        decode(self.send(Method::PUT, POE_BYPASS_PATH, &[], Some(body))?)
    }

    /// The signer's trust verdict for a scanner image digest.
    pub fn referrers(&self, image_digest: &str) -> Result<ReferrersReport, ClientError> {
        let query = [("imageDigest", image_digest.to_owned())];
        decode(self.send(Method::GET, REFERRERS_PATH, &query, None)?)
    }

    pub fn allow_release(&self, change: &AllowlistChange) -> Result<ReleaseChange, ClientError> {
        self.post_json(RELEASE_ALLOWLIST_PATH, change)
    }

    pub fn request_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ReleaseChange, ClientError> {
        self.post_json(RELEASE_APPROVALS_PATH, request)
    }

    pub fn decide_approval(
        &self,
        decision: &ApprovalDecision,
    ) -> Result<ReleaseChange, ClientError> {
        self.post_json(RELEASE_DECISIONS_PATH, decision)
    }

    /// The key registry (tenants see their own keys; admins and auditors all).
    pub fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        decode(self.send(Method::GET, KEYS_PATH, &[], None)?)
    }

    /// Verification material for offline use.
    pub fn trust(&self) -> Result<TrustMaterial, ClientError> {
        decode(self.send(Method::GET, TRUST_PATH, &[], None)?)
    }

    pub fn register_key(&self, request: &RegisterKeyRequest) -> Result<KeyChange, ClientError> {
        self.post_json(KEYS_ADMIN_PATH, request)
    }

    pub fn create_threshold_key(
        &self,
        request: &crate::CreateThresholdKeyRequest,
    ) -> Result<KeyChange, ClientError> {
        self.post_json(crate::KEYS_THRESHOLD_PATH, request)
    }

    pub fn refresh_threshold_key(
        &self,
        request: &crate::RefreshThresholdKeyRequest,
    ) -> Result<KeyChange, ClientError> {
        self.post_json(crate::KEYS_THRESHOLD_REFRESH_PATH, request)
    }

    pub fn revoke_key(&self, request: &RevokeKeyRequest) -> Result<KeyChange, ClientError> {
        self.post_json(KEYS_REVOKE_PATH, request)
    }

    fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Config(e.to_string()))?;
        decode(self.send(Method::POST, path, &[], Some(body))?)
    }

    pub fn poe_bypass(&self) -> Result<ToggleStatus, ClientError> {
        decode(self.send(Method::GET, POE_BYPASS_PATH, &[], None)?)
    }

    pub fn health(&self, path: &str) -> Result<Health, ClientError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    /// Sends an authenticated request, answering one nonce challenge. Not retried: for
    /// signing use [`Client::send_idempotent`].
    pub fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        json_body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.request(method.clone(), &url).query(query);
            for (name, value) in self.auth_headers(method.as_str(), &url)? {
                request = request.header(name, value);
            }
            if let Some(body) = &json_body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request
                .send()
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let challenged = self.remember_nonce(&response)
                && response.status() == reqwest::StatusCode::UNAUTHORIZED;
            if challenged && attempt == 1 {
                continue;
            }
            return Ok(response);
        }
    }

    /// `Authorization` (and `DPoP`) headers for one request to `url`.
    pub fn auth_headers(
        &self,
        method: &str,
        url: &str,
    ) -> Result<Vec<(&'static str, String)>, ClientError> {
        let token = self.access_token()?;
        match &self.dpop {
            Some(key) => {
                let nonce = self.lock_nonce().clone();
                let proof = key
                    .proof(method, url, Some(&token), nonce.as_deref(), unix_now())
                    .map_err(ClientError::Config)?;
                Ok(vec![
                    ("authorization", format!("DPoP {token}")),
                    ("dpop", proof),
                ])
            }
            None => Ok(vec![("authorization", format!("Bearer {token}"))]),
        }
    }

    /// The current access token, fetched (or re-fetched near expiry) from the Authority.
    pub fn access_token(&self) -> Result<String, ClientError> {
        if let Some(token) = &self.credentials.access_token {
            return Ok(token.clone());
        }
        let mut cached = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch_token()?;
        // Refresh a little early so a token never expires in flight.
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(30));
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    fn fetch_token(&self) -> Result<(String, Duration), ClientError> {
        let authority = self.credentials.authority.as_ref().ok_or_else(|| {
            ClientError::Config(
                "the credentials name no Authority and carry no access token".into(),
            )
        })?;
        // Without a configured scope the client asks for none, and the Authority grants the
        // scopes registered for it.
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = authority.scope.as_deref() {
            form.push(("scope", scope));
        }
        let mut nonce: Option<String> = None;
        for _ in 0..2 {
            let mut request: RequestBuilder = self
                .authority_http
                .post(&authority.token_url)
                .basic_auth(&authority.client_id, Some(&authority.client_secret))
                .form(&form);
            if let Some(key) = &self.dpop {
                let proof = key
                    .proof(
                        "POST",
                        &authority.token_url,
                        None,
                        nonce.as_deref(),
                        unix_now(),
                    )
                    .map_err(ClientError::Config)?;
                request = request.header("dpop", proof);
            }
            let response = request
                .send()
                .map_err(|e| ClientError::Token(e.to_string()))?;
            let status = response.status();
            let offered = header_value(&response, "dpop-nonce");
            let body = response
                .text()
                .map_err(|e| ClientError::Token(e.to_string()))?;
            if status.is_success() {
                let parsed: TokenResponse = serde_json::from_str(&body)
                    .map_err(|e| ClientError::Token(format!("undecodable token response: {e}")))?;
                let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(300));
                return Ok((parsed.access_token, lifetime));
            }
            match offered {
                Some(n) if nonce.is_none() && body.contains("use_dpop_nonce") => nonce = Some(n),
                _ => return Err(ClientError::Token(format!("HTTP {status}: {body}"))),
            }
        }
        Err(ClientError::Token(
            "the Authority kept asking for a new nonce".into(),
        ))
    }

    /// Keeps a `DPoP-Nonce` the server handed out; `true` if there was one.
    fn remember_nonce(&self, response: &Response) -> bool {
        match header_value(response, "dpop-nonce") {
            Some(nonce) => {
                *self.lock_nonce() = Some(nonce);
                true
            }
            None => false,
        }
    }

    fn lock_nonce(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn header_value(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn certs(pem: &str) -> Result<Vec<reqwest::Certificate>, ClientError> {
    reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))
}

/// How long `sign_dsse` keeps retrying a request whose outcome is unknown.
pub const SIGN_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Attempts of one signing request at most (a 503 that persists — a key back-end down — is
/// answered after a few seconds, not after the whole budget).
const MAX_ATTEMPTS: u32 = 5;
/// Pause before retrying after a transport error.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A response's `Retry-After` in seconds (1 s when absent or not a number).
fn retry_after(response: &Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds)
}

pub fn decode<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, ClientError> {
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

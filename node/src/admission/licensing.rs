//! The licensing service client: OAuth 2.0 token introspection (RFC 7662) of a PoE.
//!
//! `POST {url}` with `token=<PoE value>&token_type_hint=<format>` and HTTP Basic client
//! authentication; the answer is `{active, license_id, plan, tenant, exp, revoked}`.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::http_client::{self, HttpsSource};

/// What the licensing service says about a PoE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(default)]
    pub license_id: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    /// The installation the license is bound to (`inst`), if the licensing service says.
    #[serde(default)]
    pub inst: Option<String>,
}

impl Introspection {
    /// `active: false` and nothing else: an unknown or altered PoE, or a licensing service that
    /// refused to answer about it.
    pub fn inactive() -> Introspection {
        Introspection {
            active: false,
            license_id: None,
            plan: None,
            tenant: None,
            exp: None,
            revoked: false,
            inst: None,
        }
    }
}

/// A PoE as presented: `format` is `jwt` (a license token) or `mtls` (the thumbprint of the
/// client certificate the license was issued to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Poe {
    pub format: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("licensing service unavailable: {0}")]
pub struct LicensingUnavailable(pub String);

pub type IntrospectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Introspection, LicensingUnavailable>> + Send + 'a>>;

/// The seam the entitlement cache calls (the HTTP client below in production).
pub trait Licensing: Send + Sync + 'static {
    fn introspect<'a>(&'a self, poe: &'a Poe) -> IntrospectFuture<'a>;
}

pub struct LicensingClient {
    pub endpoint: HttpsSource,
    pub client_id: String,
    /// Wiped from memory when dropped.
    pub client_secret: zeroize::Zeroizing<String>,
}

impl Licensing for LicensingClient {
    fn introspect<'a>(&'a self, poe: &'a Poe) -> IntrospectFuture<'a> {
        Box::pin(async move {
            let hint = match poe.format.as_str() {
                "mtls" => "mtls_thumbprint",
                _ => "license_jwt",
            };
            let response = self
                .endpoint
                .http
                .post(self.endpoint.url.clone())
                .basic_auth(&self.client_id, Some(self.client_secret.as_str()))
                .form(&[("token", poe.value.as_str()), ("token_type_hint", hint)])
                .send()
                .await
                .map_err(|e| LicensingUnavailable(e.to_string()))?;
            // Only transport errors and 5xx are outages (served from the cache within grace).
            // A 4xx is the licensing service's answer — our client refused, the endpoint gone —
            // so nothing cached may stand in for it: the PoE is not active.
            if response.status().is_client_error() {
                tracing::warn!(status = %response.status(), "the licensing service refused the introspection; treating the PoE as not active");
                return Ok(Introspection::inactive());
            }
            let body = http_client::read_ok(response, 64 * 1024)
                .await
                .map_err(LicensingUnavailable)?;
            serde_json::from_slice(&body)
                .map_err(|e| LicensingUnavailable(format!("undecodable introspection: {e}")))
        })
    }
}

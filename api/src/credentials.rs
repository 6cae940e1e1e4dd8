//! The client credentials file (`credentials.json`) a node writes for its callers in dev mode
//! and an operator hands out otherwise.
//!
//! A caller proves who it is with an OpTok from the Authority, obtained with the OAuth 2.0
//! client-credentials grant, and binds it to itself with a DPoP key (RFC 9449) or a client
//! certificate (RFC 8705). It proves it is entitled with a PoE, attached to every signing
//! request that does not carry one of its own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::ProofOfEntitlement;

pub const CREDENTIALS_FILE: &str = "credentials.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// Base URL of the signer, e.g. `http://127.0.0.1:8443`.
    pub server: String,
    pub tenant: String,
    /// Where and how to obtain access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<AuthorityClient>,
    /// A token obtained elsewhere (used as is until it expires; no refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// PKCS#8 PEM P-256 key that makes DPoP proofs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key_pem: Option<String>,
    /// Client certificate and key (PEM) for mTLS-bound tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// Proof of entitlement added to signing requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poe: Option<ProofOfEntitlement>,
    /// PEM CA certificate to trust for the server's TLS certificate (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

/// OAuth 2.0 client-credentials access to the Authority's token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityClient {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Space-separated scopes to ask for (default: all the Authority grants this client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Extra PEM CA for the Authority's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

impl Credentials {
    /// Loads `credentials.json` from a directory (or the file itself).
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let file: PathBuf = if path.is_dir() {
            path.join(CREDENTIALS_FILE)
        } else {
            path.to_owned()
        };
        let bytes = std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))
    }
}

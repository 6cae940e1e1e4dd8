//! The client credentials file (`credentials.json`) a node writes for its callers in dev mode
//! and an operator hands out otherwise.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CREDENTIALS_FILE: &str = "credentials.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// Base URL of the signer, e.g. `http://127.0.0.1:8443`.
    pub server: String,
    pub tenant: String,
    /// Bearer token presented in `Authorization`.
    pub token: String,
    /// PEM CA certificate to trust for the server's TLS certificate (optional).
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

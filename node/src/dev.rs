//! Dev mode: everything a single developer needs, created under the data directory on first
//! start and kept across restarts:
//! - `keys/signing-key.pem` — the dev signing key (PKCS#8, mode 0600),
//! - `dev/signing-key.pub.pem` — its public key, for `stella verify --key`,
//! - `dev/credentials.json` — server URL, tenant and bearer token for the `stella` CLI.

use std::path::Path;

use stella_api::Credentials;

use crate::Error;
use crate::auth::token_sha256_hex;
use crate::keys::{write_atomically, write_secret_atomically};

pub const DEV_TENANT: &str = "dev";

/// Returns the dev tenant's token hash, creating the token on first start.
pub fn dev_token_hash(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir
        .join("dev")
        .join(stella_api::credentials::CREDENTIALS_FILE);
    if path.exists() {
        let creds = Credentials::load(&path).map_err(Error::Config)?;
        return Ok(token_sha256_hex(&creds.token));
    }
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw)
        .map_err(|_| Error::Key("no randomness for the dev token".into()))?;
    let token = format!("stella-dev-{}", hex::encode(raw));
    write_credentials(
        data_dir,
        &Credentials {
            server: String::new(),
            tenant: DEV_TENANT.into(),
            token: token.clone(),
            ca_cert_pem: None,
        },
    )?;
    Ok(token_sha256_hex(&token))
}

/// Writes the client files once the server URL is known.
pub fn publish(data_dir: &Path, server_url: &str, public_key_pem: &str) -> Result<(), Error> {
    let dir = data_dir.join("dev");
    let path = dir.join(stella_api::credentials::CREDENTIALS_FILE);
    let mut creds = Credentials::load(&path).map_err(Error::Config)?;
    creds.server = server_url.to_owned();
    write_credentials(data_dir, &creds)?;
    write_atomically(
        &dir.join("signing-key.pub.pem"),
        public_key_pem.as_bytes(),
        0o644,
    )
}

fn write_credentials(data_dir: &Path, creds: &Credentials) -> Result<(), Error> {
    let path = data_dir
        .join("dev")
        .join(stella_api::credentials::CREDENTIALS_FILE);
    let bytes = serde_json::to_vec_pretty(creds).map_err(|e| Error::Config(e.to_string()))?;
    write_secret_atomically(&path, &bytes)
}

//! Dev mode: everything a single developer needs, created under the data directory on first
//! start and kept across restarts:
//! - `keys/signing-key.pem` — the dev signing key (PKCS#8, mode 0600),
//! - `dev/signing-key.pub.pem` — its public key, for `stella verify --key`,
//! - `dev/authority-key.pem`, `dev/licensing-key.pem` — keys of the embedded dev Authority and
//!   dev licensing service (mounted under `/dev/` on the node's own listener),
//! - `dev/credentials.json` — server URL, the Authority client, a DPoP key and a license (PoE)
//!   for the `stella` CLI, which obtains tokens and makes proofs from it transparently;
//! - keyless signing against stand-ins of Sigstore's services, mounted under `/dev/` too: a
//!   Fulcio-protocol CA (`dev/fulcio-ca-key.pem`, `dev/fulcio-ca.pem`) and an RFC 3161 TSA
//!   (`dev/tsa-key.pem`, `dev/tsa-chain.pem`), with the node's own OIDC identity token for
//!   [`DEV_KEYLESS_IDENTITY`] (`dev/identity.jwt`, from the dev Authority, re-issued at every
//!   start). Their chains are the node's published keyless trust (`stella trust export`).
//!   Dev-only: nothing outside dev mode mounts them or trusts them.

pub mod authority;
pub mod fulcio;
pub mod licensing;
mod routes;
pub mod tsa;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use stella_api::credentials::AuthorityClient;
use stella_api::{Credentials, ProofOfEntitlement};
use stella_signer::FileKeySigner;

pub use self::authority::{DevAuthority, DevClient};
pub use self::fulcio::DevFulcio;
pub use self::licensing::DevLicensing;
pub use self::routes::{DevServices, StandIn, services};
pub use self::tsa::DevTsa;
use crate::Error;
use crate::clock::Clock;
use crate::config::{AdmissionConfig, EntitlementConfig, KeylessSection, PlanConfig, TsaSection};
use crate::keys::{write_atomically, write_secret_atomically};

pub const DEV_TENANT: &str = "dev";
pub const DEV_PLAN: &str = "dev";
const DEV_CLI_CLIENT: &str = "stella-cli";
const DEV_SIGNER_CLIENT: &str = "stella-signer";
/// Who a dev node's keyless certificates name (an e-mail SAN; `.invalid` is reserved, RFC 2606).
/// Its OIDC issuer is the dev Authority, `{url}/dev/authority`.
pub const DEV_KEYLESS_IDENTITY: &str = "stella-signer@dev.invalid";
pub const FULCIO_CA_FILE: &str = "fulcio-ca.pem";
pub const TSA_CHAIN_FILE: &str = "tsa-chain.pem";
/// Where a dev node's stand-ins answer, under its own URL.
pub const FULCIO_PATH: &str = "/dev/fulcio";
pub const TSA_PATH: &str = "/dev/tsa/api/v1/timestamp";

/// Dev-mode admission and keyless signing, wired to the services the dev node embeds.
pub struct DevSetup {
    pub services: DevServices,
    pub admission: AdmissionConfig,
    pub entitlement: EntitlementConfig,
    pub plans: Vec<PlanConfig>,
    /// `[signing.keyless]` against the dev Fulcio and TSA.
    pub keyless: KeylessSection,
}

/// Creates (or reuses) the dev Authority, licensing service and CLI credentials for a node
/// serving at `url`.
pub fn prepare(
    data_dir: &Path,
    url: &str,
    max_body_bytes: usize,
    clock: Arc<dyn Clock>,
) -> Result<DevSetup, Error> {
    let dir = data_dir.join("dev");
    let authority_key = secret_file(&dir.join("authority-key.pem"), || {
        Ok(FileKeySigner::generate()?.to_pkcs8_pem())
    })?;
    let licensing_key = secret_file(&dir.join("licensing-key.pem"), || {
        Ok(FileKeySigner::generate()?.to_pkcs8_pem())
    })?;
    let licensing_secret_path = dir.join("licensing-client-secret");
    let licensing_secret = secret_file(&licensing_secret_path, || Ok(random_hex()))?;
    let nonce_secret_path = dir.join("dpop-nonce.key");
    secret_file(&nonce_secret_path, || Ok(random_hex()))?;

    let creds_path = dir.join(stella_api::credentials::CREDENTIALS_FILE);
    let existing = creds_path
        .exists()
        .then(|| Credentials::load(&creds_path).map_err(Error::Config))
        .transpose()?
        .filter(|c| c.authority.is_some() && c.dpop_key_pem.is_some());
    let (cli_secret, dpop_key_pem) = match &existing {
        Some(c) => (
            c.authority
                .as_ref()
                .map(|a| a.client_secret.clone())
                .unwrap_or_default(),
            c.dpop_key_pem.clone().unwrap_or_default(),
        ),
        None => (random_hex(), FileKeySigner::generate()?.to_pkcs8_pem()),
    };

    let issuer = format!("{url}/dev/authority");
    let authority = Arc::new(DevAuthority::new(
        &issuer,
        &authority_key,
        vec![DevClient {
            client_id: DEV_CLI_CLIENT.into(),
            secret_sha256: hex::encode(Sha256::digest(cli_secret.as_bytes())),
            tenant: DEV_TENANT.into(),
            scopes: vec![
                crate::admission::optok::SCOPE_SIGN.into(),
                crate::admission::optok::SCOPE_AUDIT.into(),
                crate::admission::optok::SCOPE_AUDIT_ALL.into(),
            ],
            plan: None,
        }],
        clock.clone(),
    )?);
    let licensing = DevLicensing::new(
        &licensing_key,
        DEV_SIGNER_CLIENT,
        &licensing_secret,
        clock.clone(),
    )?;
    // A year-long dev license, re-issued at every start (the key, and so old ones, stay valid).
    let license = licensing.issue(
        "dev-license",
        DEV_TENANT,
        DEV_PLAN,
        clock.now().unix_timestamp() + 365 * 24 * 3600,
    )?;
    let token_url = format!("{issuer}/token");
    write_credentials(
        &creds_path,
        &Credentials {
            server: url.to_owned(),
            tenant: DEV_TENANT.into(),
            authority: Some(AuthorityClient {
                token_url: token_url.clone(),
                client_id: DEV_CLI_CLIENT.into(),
                client_secret: cli_secret,
                scope: None,
                ca_cert_pem: None,
            }),
            access_token: None,
            dpop_key_pem: Some(dpop_key_pem),
            client_cert_pem: None,
            client_key_pem: None,
            poe: Some(ProofOfEntitlement {
                format: "jwt".into(),
                value: license,
            }),
            ca_cert_pem: None,
        },
    )?;
    let fulcio = DevFulcio::load_or_create(&dir, authority.clone(), clock.clone())?;
    let tsa = DevTsa::load_or_create(&dir, clock.clone())?;
    let keyless = keyless_setup(&dir, url, &authority, clock.as_ref())?;
    Ok(DevSetup {
        services: DevServices {
            authority,
            licensing: Arc::new(licensing),
            fulcio: Some(Arc::new(fulcio)),
            tsa: Some(Arc::new(tsa)),
            token_url,
        },
        keyless,
        admission: AdmissionConfig {
            issuer,
            audience: "signer".into(),
            auditor_tenants: vec![DEV_TENANT.into()],
            jwks_url: Some(format!("{url}/dev/authority/jwks.json")),
            jwks_file: None,
            ca_cert: None,
            clock_skew_seconds: 60,
            max_token_lifetime_seconds: 24 * 3600,
            jwks_min_refresh_seconds: 30,
            jwks_max_age_seconds: 600,
            jwks_max_stale_seconds: 24 * 3600,
            public_urls: Vec::new(),
            dpop_max_age_seconds: 300,
            dpop_nonce_secret_file: Some(nonce_secret_path),
            dpop_nonce_lifetime_seconds: 300,
            failed_auth_per_second: crate::config::default_failed_auth_per_second(),
            failed_auth_burst: crate::config::default_failed_auth_burst(),
            preauth_summary_seconds: crate::config::default_preauth_summary_seconds(),
        },
        entitlement: EntitlementConfig {
            introspection_url: format!("{url}/dev/licensing/introspect"),
            client_id: DEV_SIGNER_CLIENT.into(),
            client_secret_file: licensing_secret_path,
            ca_cert: None,
            cache_ttl_seconds: 300,
            negative_cache_ttl_seconds: 30,
            grace_seconds: 3600,
            bypass_plan: DEV_PLAN.into(),
        },
        plans: vec![PlanConfig {
            name: DEV_PLAN.into(),
            signatures_per_window: 1_000_000_000,
            window_seconds: 3600,
            max_concurrent: 100_000,
            max_artifact_bytes: max_body_bytes,
            // The dev tenant signs with the dev key.
            shared_default_key: true,
            require_hardware_backed: false,
            max_key_age_seconds: None,
            key_age_grace_seconds: 0,
        }],
    })
}

/// `[signing.keyless]` for the dev Fulcio and TSA at `url`, with a year-long identity token
/// from the dev Authority (re-issued at every start, like the dev license; only the dev Fulcio
/// accepts it: its audience is `sigstore`, not the signer's).
fn keyless_setup(
    dir: &Path,
    url: &str,
    authority: &DevAuthority,
    clock: &dyn Clock,
) -> Result<KeylessSection, Error> {
    let now = clock.now().unix_timestamp();
    let token = authority.mint(&serde_json::json!({
        "iss": authority.issuer(),
        "sub": DEV_KEYLESS_IDENTITY,
        "email": DEV_KEYLESS_IDENTITY,
        "aud": fulcio::IDENTITY_AUDIENCE,
        "iat": now,
        "exp": now + 365 * 24 * 3600,
    }))?;
    let identity_token_file = dir.join("identity.jwt");
    write_secret_atomically(&identity_token_file, token.as_bytes())?;
    Ok(KeylessSection {
        fulcio_url: format!("{url}{FULCIO_PATH}"),
        identity_token_file,
        ca_cert: None,
        ca_chain: Some(dir.join(FULCIO_CA_FILE)),
        tsa: Some(TsaSection {
            url: format!("{url}{TSA_PATH}"),
            ca_cert: None,
            chain: dir.join(TSA_CHAIN_FILE),
        }),
    })
}

/// A key and a certificate (chain) kept as PEM files, made by `make` when either is missing:
/// the key a secret (mode 0600), the certificates public.
fn kept_pair(
    key_path: &Path,
    cert_path: &Path,
    make: impl FnOnce() -> Result<(String, String), Error>,
) -> Result<(String, String), Error> {
    if key_path.exists() && cert_path.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
        };
        return Ok((read(key_path)?, read(cert_path)?));
    }
    let (key, cert) = make()?;
    write_secret_atomically(key_path, key.as_bytes())?;
    write_atomically(cert_path, cert.as_bytes(), 0o644)?;
    Ok((key, cert))
}

/// Writes the verification key next to the credentials once the node is up.
pub fn publish_public_key(data_dir: &Path, public_key_pem: &str) -> Result<(), Error> {
    write_atomically(
        &data_dir.join("dev").join("signing-key.pub.pem"),
        public_key_pem.as_bytes(),
        0o644,
    )
}

/// Reads a secret file, creating it with `make` on first use.
fn secret_file(
    path: &PathBuf,
    make: impl FnOnce() -> Result<String, stella_signer::Error>,
) -> Result<String, Error> {
    if path.exists() {
        return std::fs::read_to_string(path)
            .map_err(Error::io(format!("reading {}", path.display())));
    }
    let value = make().map_err(|e| Error::Key(e.to_string()))?;
    write_secret_atomically(path, value.as_bytes())?;
    Ok(value)
}

fn random_hex() -> String {
    let mut raw = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut raw);
    hex::encode(raw)
}

fn write_credentials(path: &Path, creds: &Credentials) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(creds).map_err(|e| Error::Config(e.to_string()))?;
    write_secret_atomically(path, &bytes)
}

//! The test suite's stand-ins for the services that cannot run here — the Authority (OpToks,
//! JWKS) and the cloud licensing service (PoE introspection) — served together over HTTPS by a
//! server of their own. They speak the real protocols (JWKS, OAuth 2.0 client credentials with
//! DPoP, RFC 7662 introspection), so the nodes' production clients are what the tests exercise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use sha2::Digest;
use stella_api::credentials::AuthorityClient;
use stella_api::{Credentials, ProofOfEntitlement};
use stella_node::clock::{Clock, SystemClock};
use stella_node::dev::{DevAuthority, DevClient, DevFulcio, DevLicensing, DevServices, StandIn};

pub const TENANT_A: &str = "tenant-a";
pub const PLAN: &str = "team";
pub const LICENSING_CLIENT: &str = "stella-signer";

pub struct Services {
    pub authority: Arc<DevAuthority>,
    pub licensing: Arc<DevLicensing>,
    /// A Fulcio-protocol test CA (`{url}/fulcio/api/v2/signingCert`).
    pub fulcio: Arc<DevFulcio>,
    /// Directory with the stand-ins' PKI: `ca.pem` (trust anchor of their TLS certificate and
    /// of client certificates), `admin.pem`/`admin.key` (a client certificate for mTLS).
    pub pki: PathBuf,
    pub licensing_secret_file: PathBuf,
    pub standin: StandIn,
}

/// One caller known to the Authority.
pub struct TestClient {
    pub client_id: String,
    pub tenant: String,
    pub scopes: Vec<&'static str>,
}

/// Tenants with their own small quota, for quota-pressure tests.
pub const QUOTA_TENANTS: usize = 6;

/// The test plan that does not use the node's shared default key.
pub const OWN_KEYS_PLAN: &str = "own-keys";
/// A plan whose keys must be hardware-backed (PKCS#11, KMS, threshold).
pub const HARDWARE_PLAN: &str = "hardware-only";
/// A plan with a rotation cadence: keys are due after 2 s and stop signing 20 s later.
pub const ROTATING_PLAN: &str = "rotating";
/// `ROTATING_PLAN`'s `max_key_age_seconds` and `key_age_grace_seconds`.
pub const ROTATING_AGE_SECONDS: u64 = 2;
pub const ROTATING_GRACE_SECONDS: u64 = 20;

/// Every client the stand-in Authority knows.
pub fn clients() -> Vec<TestClient> {
    let client = |id: &str, tenant: &str, scopes: &[&'static str]| TestClient {
        client_id: id.to_owned(),
        tenant: tenant.to_owned(),
        scopes: scopes.to_vec(),
    };
    let mut all = vec![
        client(
            "tenant-a-ci",
            TENANT_A,
            &["signer.sign", "signer.audit", "signer.audit.all"],
        ),
        client("tenant-b-ci", "tenant-b", &["signer.sign", "signer.audit"]),
        client("operator", "ops", &["signer.admin", "signer.audit.all"]),
    ];
    for i in 1..=QUOTA_TENANTS {
        all.push(client(
            &format!("quota-{i}-ci"),
            &format!("quota-{i}"),
            &["signer.sign", "signer.audit"],
        ));
    }
    all
}

fn secret_of(client_id: &str) -> String {
    format!("{client_id}-secret")
}

impl Services {
    pub fn start(dir: &Path) -> Services {
        let pki = dir.join("standin-pki");
        stella_cluster::pki::generate_dev_pki(
            &pki,
            stella_cluster::identity::DEFAULT_CLUSTER_ID,
            1,
            &[],
        )
        .expect("stand-in PKI");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let authority_key = stella_signer::FileKeySigner::generate()
            .expect("key")
            .to_pkcs8_pem();
        let licensing_key = stella_signer::FileKeySigner::generate()
            .expect("key")
            .to_pkcs8_pem();
        let licensing_secret = "licensing-client-secret";
        let licensing_secret_file = dir.join("licensing-secret");
        crate::write_secret(&licensing_secret_file, licensing_secret);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = format!("https://{addr}/authority");
        let clients = clients()
            .iter()
            .map(|c| DevClient {
                client_id: c.client_id.clone(),
                secret_sha256: hex::encode(sha2::Sha256::digest(secret_of(&c.client_id))),
                tenant: c.tenant.clone(),
                scopes: c.scopes.iter().map(|s| (*s).to_owned()).collect(),
                plan: None,
            })
            .collect();
        let authority = Arc::new(
            DevAuthority::new(&issuer, &authority_key, clients, clock.clone()).expect("authority"),
        );
        let licensing = Arc::new(
            DevLicensing::new(&licensing_key, LICENSING_CLIENT, licensing_secret, clock)
                .expect("licensing"),
        );
        let fulcio =
            Arc::new(DevFulcio::new(authority.clone(), Arc::new(SystemClock)).expect("fulcio"));
        let tls = server_tls(&pki);
        let (a, l, f) = (authority.clone(), licensing.clone(), fulcio.clone());
        let standin = StandIn::start(listener, tls, move |url| DevServices {
            authority: a,
            licensing: l,
            fulcio: Some(f),
            tsa: None,
            token_url: format!("{url}/authority/token"),
        })
        .expect("stand-in server");
        Services {
            authority,
            licensing,
            fulcio,
            pki,
            licensing_secret_file,
            standin,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.pki.join("ca.pem")
    }

    pub fn fulcio_url(&self) -> String {
        format!("{}/fulcio", self.standin.url)
    }

    /// An OIDC identity token for `email` (audience `sigstore`), as a workload would hold.
    pub fn identity_token(&self, email: &str) -> String {
        let now = stella_api::dpop::unix_now();
        self.authority
            .mint(&serde_json::json!({
                "iss": self.authority.issuer(),
                "sub": email,
                "email": email,
                "aud": "sigstore",
                "iat": now,
                "exp": now + 600,
            }))
            .expect("identity token")
    }

    pub fn token_url(&self) -> String {
        format!("{}/authority/token", self.standin.url)
    }

    /// `[admission]`, `[entitlement]` and `[[plans]]` for a node using these services.
    /// `extra_admission`: more lines for `[admission]` (e.g. `public_urls`).
    pub fn node_toml(&self, plans: &[(&str, u64, u32, usize)], extra_admission: &str) -> String {
        self.node_toml_with(plans, extra_admission, "")
    }

    /// As [`Services::node_toml`], with more lines for `[entitlement]` (cache TTLs, grace).
    pub fn node_toml_with(
        &self,
        plans: &[(&str, u64, u32, usize)],
        extra_admission: &str,
        extra_entitlement: &str,
    ) -> String {
        let ca = self.ca_path();
        let mut toml = format!(
            "[admission]\nissuer = \"{url}/authority\"\njwks_url = \"{url}/authority/jwks.json\"\nca_cert = \"{ca}\"\njwks_min_refresh_seconds = 1\nauditor_tenants = [\"ops\"]\n{extra_admission}\n\
             [entitlement]\nintrospection_url = \"{url}/licensing/introspect\"\nclient_id = \"{LICENSING_CLIENT}\"\nclient_secret_file = \"{secret}\"\nca_cert = \"{ca}\"\nbypass_plan = \"{bypass}\"\n{extra_entitlement}\n",
            url = self.standin.url,
            ca = ca.display(),
            secret = self.licensing_secret_file.display(),
            bypass = plans.first().map(|p| p.0).unwrap_or(PLAN),
        );
        for (name, per_window, concurrent, max_bytes) in plans {
            // Test plans share the node's key, but these: their tenants need keys of their own.
            let shared = ![OWN_KEYS_PLAN, HARDWARE_PLAN, ROTATING_PLAN].contains(name);
            let policy = match *name {
                HARDWARE_PLAN => "require_hardware_backed = true\n".to_owned(),
                ROTATING_PLAN => format!(
                    "max_key_age_seconds = {ROTATING_AGE_SECONDS}\nkey_age_grace_seconds = {ROTATING_GRACE_SECONDS}\n"
                ),
                _ => String::new(),
            };
            toml.push_str(&format!(
                "[[plans]]\nname = \"{name}\"\nsignatures_per_window = {per_window}\nwindow_seconds = 3600\nmax_concurrent = {concurrent}\nmax_artifact_bytes = {max_bytes}\nshared_default_key = {shared}\n{policy}"
            ));
        }
        toml
    }

    /// Credentials for `client_id` (see [`CLIENTS`]) with a fresh DPoP key and a license for
    /// `plan`, talking to `server`.
    pub fn credentials(&self, client_id: &str, plan: &str, server: &str) -> Credentials {
        let client = clients()
            .into_iter()
            .find(|c| c.client_id == client_id)
            .expect("known client");
        let license = self
            .licensing
            .issue(
                &format!("lic-{client_id}-{}", stella_api::dpop::random_id()),
                &client.tenant,
                plan,
                stella_api::dpop::unix_now() + 3600,
            )
            .expect("license");
        Credentials {
            server: server.to_owned(),
            tenant: client.tenant.clone(),
            authority: Some(AuthorityClient {
                token_url: self.token_url(),
                client_id: client_id.to_owned(),
                client_secret: secret_of(client_id),
                scope: None,
                ca_cert_pem: Some(std::fs::read_to_string(self.ca_path()).expect("ca")),
            }),
            access_token: None,
            dpop_key_pem: Some(
                stella_signer::FileKeySigner::generate()
                    .expect("key")
                    .to_pkcs8_pem(),
            ),
            client_cert_pem: None,
            client_key_pem: None,
            poe: Some(ProofOfEntitlement {
                format: "jwt".into(),
                value: license,
            }),
            ca_cert_pem: None,
        }
    }
}

fn server_tls(pki: &Path) -> rustls::ServerConfig {
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(pki.join("node-1.pem"))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join("node-1.key")).expect("key");
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("tls")
}

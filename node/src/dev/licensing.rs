//! A dev licensing service: issues license tokens (the PoE) and answers RFC 7662 introspection
//! for them. Embedded in the dev node; the test suite runs it as a separate HTTPS server
//! standing in for the cloud licensing service, with switches for revocation and outages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::admission::jose;
use crate::admission::licensing::Introspection;
use crate::clock::Clock;

pub struct DevLicensing {
    key: EncodingKey,
    jwk: Jwk,
    client_id: String,
    secret_sha256: String,
    revoked: std::sync::Mutex<HashSet<String>>,
    outage: AtomicBool,
    reject_client: AtomicBool,
    calls: AtomicUsize,
    clock: Arc<dyn Clock>,
}

impl DevLicensing {
    pub fn new(
        key_pem: &str,
        client_id: &str,
        client_secret: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<DevLicensing, Error> {
        let key = EncodingKey::from_ec_pem(key_pem.as_bytes())
            .map_err(|e| Error::Key(format!("licensing key: {e}")))?;
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| Error::Key(format!("licensing key: {e}")))?;
        Ok(DevLicensing {
            key,
            jwk,
            client_id: client_id.to_owned(),
            secret_sha256: hex::encode(Sha256::digest(client_secret.as_bytes())),
            revoked: std::sync::Mutex::new(HashSet::new()),
            outage: AtomicBool::new(false),
            reject_client: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            clock,
        })
    }

    /// A license token (the PoE value) for `tenant` on `plan`, valid until `exp`.
    pub fn issue(
        &self,
        license_id: &str,
        tenant: &str,
        plan: &str,
        exp: i64,
    ) -> Result<String, Error> {
        self.issue_for(license_id, tenant, plan, exp, None)
    }

    /// As [`DevLicensing::issue`], bound to an installation (`inst`) when given.
    pub fn issue_for(
        &self,
        license_id: &str,
        tenant: &str,
        plan: &str,
        exp: i64,
        installation: Option<&str>,
    ) -> Result<String, Error> {
        let mut claims = json!({
            "license_id": license_id,
            "tenant": tenant,
            "plan": plan,
            "iat": self.clock.now().unix_timestamp(),
            "exp": exp,
        });
        if let Some(installation) = installation {
            claims["inst"] = json!(installation);
        }
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
            .map_err(|e| Error::Key(e.to_string()))
    }

    pub fn revoke(&self, license_id: &str) {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(license_id.to_owned());
    }

    /// While on, introspection answers 503.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    pub fn in_outage(&self) -> bool {
        self.outage.load(Ordering::SeqCst)
    }

    /// While on, the signer's client credentials are refused (401 `invalid_client`), as when
    /// the licensing service has withdrawn the signer's client: an answer, not an outage.
    pub fn set_rejecting_client(&self, on: bool) {
        self.reject_client.store(on, Ordering::SeqCst);
    }

    /// Introspection requests answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn authenticate(&self, basic: Option<(String, String)>) -> bool {
        if self.reject_client.load(Ordering::SeqCst) {
            return false;
        }
        basic.is_some_and(|(id, secret)| {
            id == self.client_id
                && hex::encode(Sha256::digest(secret.as_bytes())) == self.secret_sha256
        })
    }

    /// RFC 7662: anything this service did not issue (or that was altered) is `active: false`.
    pub fn introspect(&self, token: &str) -> Introspection {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let inactive = Introspection::inactive();
        let Ok(header) = jose::header(token) else {
            return inactive;
        };
        let Ok(claims) = jose::verify(token, &header, &self.jwk) else {
            return inactive;
        };
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
        let exp = claims.get("exp").and_then(Value::as_i64);
        let license_id = text("license_id");
        let revoked = license_id.as_ref().is_some_and(|id| {
            self.revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(id)
        });
        let now = self.clock.now().unix_timestamp();
        Introspection {
            active: !revoked && exp.is_some_and(|e| e > now),
            license_id,
            plan: text("plan"),
            tenant: text("tenant"),
            exp,
            revoked,
            inst: text("inst"),
        }
    }
}

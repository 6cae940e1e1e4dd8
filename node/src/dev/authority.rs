//! A dev Authority: issues OpToks (OAuth 2.0 client-credentials grant, DPoP-bound) and serves
//! its JWKS. The dev node embeds it; the test suite runs it as a separate HTTPS server standing
//! in for the real Authority. It speaks the real protocols, so the node's production JWKS and
//! token checks are what run against it.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::admission::dpop::{self, ProofPolicy, ProofTarget};
use crate::clock::Clock;

/// A client allowed to use the token endpoint.
#[derive(Debug, Clone)]
pub struct DevClient {
    pub client_id: String,
    pub secret_sha256: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    pub plan: Option<String>,
}

pub struct DevAuthority {
    issuer: String,
    audience: String,
    keys: std::sync::RwLock<Vec<(EncodingKey, Jwk)>>,
    clients: HashMap<String, DevClient>,
    token_lifetime_seconds: i64,
    clock: Arc<dyn Clock>,
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl DevAuthority {
    /// `key_pem`: the PKCS#8 P-256 signing key.
    pub fn new(
        issuer: &str,
        key_pem: &str,
        clients: Vec<DevClient>,
        clock: Arc<dyn Clock>,
    ) -> Result<DevAuthority, Error> {
        let authority = DevAuthority {
            issuer: issuer.to_owned(),
            audience: "signer".into(),
            keys: std::sync::RwLock::new(Vec::new()),
            clients: clients
                .into_iter()
                .map(|c| (c.client_id.clone(), c))
                .collect(),
            token_lifetime_seconds: 600,
            clock,
        };
        authority.add_key(key_pem)?;
        Ok(authority)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Adds a signing key, which signs from now on (rotation); older keys stay in the JWKS.
    pub fn add_key(&self, key_pem: &str) -> Result<String, Error> {
        let key = EncodingKey::from_ec_pem(key_pem.as_bytes())
            .map_err(|e| Error::Key(format!("authority key: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| Error::Key(format!("authority key: {e}")))?;
        let kid = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .map_err(|e| Error::Key(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((key, jwk));
        Ok(kid)
    }

    pub fn jwks(&self) -> Value {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        json!({"keys": keys.iter().map(|(_, jwk)| jwk).collect::<Vec<_>>()})
    }

    /// Signs `claims` with the newest key (header `typ: at+jwt`, `kid`). Tests use this to make
    /// tokens of every shape; the token endpoint uses it for well-formed ones.
    pub fn mint(&self, claims: &Value) -> Result<String, Error> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (key, jwk) = keys
            .last()
            .ok_or_else(|| Error::Key("the authority has no key".into()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = jwk.common.key_id.clone();
        jsonwebtoken::encode(&header, claims, key).map_err(|e| Error::Key(e.to_string()))
    }

    /// Standard claims for `tenant`, valid now for the token lifetime; callers add `cnf`.
    pub fn claims(&self, subject: &str, tenant: &str, scope: &str) -> Value {
        let now = self.clock.now().unix_timestamp();
        json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime_seconds,
            "jti": stella_api::dpop::random_id(),
            "scope": scope,
            "tid": tenant,
        })
    }

    /// The token endpoint: client credentials (HTTP Basic) + a DPoP proof for `token_url`.
    pub fn token(
        &self,
        basic: Option<(String, String)>,
        form: &HashMap<String, String>,
        dpop_proof: Option<&str>,
        token_url: &str,
    ) -> Result<Value, OAuthError> {
        let bad = |status, error, d: &str| OAuthError {
            status,
            error,
            description: d.to_owned(),
        };
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Err(bad(400, "unsupported_grant_type", "use client_credentials"));
        }
        let (id, secret) = basic
            .or_else(|| {
                Some((
                    form.get("client_id")?.clone(),
                    form.get("client_secret")?.clone(),
                ))
            })
            .ok_or_else(|| bad(401, "invalid_client", "client authentication required"))?;
        let client = self
            .clients
            .get(&id)
            .filter(|c| c.secret_sha256 == hex::encode(Sha256::digest(secret.as_bytes())))
            .ok_or_else(|| bad(401, "invalid_client", "unknown client or wrong secret"))?;
        let proof = dpop_proof.ok_or_else(|| {
            bad(
                400,
                "invalid_dpop_proof",
                "this Authority issues DPoP-bound tokens only",
            )
        })?;
        let urls = [token_url.to_owned()];
        let proof = dpop::verify(
            proof,
            &ProofTarget {
                method: "POST",
                urls: &urls,
                access_token: None,
            },
            &ProofPolicy {
                max_age_seconds: 300,
                skew_seconds: 60,
            },
            self.clock.now().unix_timestamp(),
        )
        .map_err(|e| bad(400, "invalid_dpop_proof", &e.to_string()))?;
        let requested: Vec<&str> = form
            .get("scope")
            .map(|s| s.split_ascii_whitespace().collect())
            .unwrap_or_default();
        let granted: Vec<&str> = client
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| requested.is_empty() || requested.contains(s))
            .collect();
        if granted.is_empty() {
            return Err(bad(
                400,
                "invalid_scope",
                "none of the requested scopes is allowed",
            ));
        }
        let mut claims = self.claims(&client.client_id, &client.tenant, &granted.join(" "));
        claims["cnf"] = json!({"jkt": proof.jkt});
        if let Some(plan) = &client.plan {
            claims["plan"] = json!(plan);
        }
        let token = self
            .mint(&claims)
            .map_err(|e| bad(500, "server_error", &e.to_string()))?;
        Ok(json!({
            "access_token": token,
            "token_type": "DPoP",
            "expires_in": self.token_lifetime_seconds,
            "scope": granted.join(" "),
        }))
    }
}

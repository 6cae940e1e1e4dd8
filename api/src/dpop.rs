//! The client side of DPoP (RFC 9449): a P-256 key that signs one proof per request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

pub struct DpopKey {
    key: EncodingKey,
    jwk: Jwk,
}

impl DpopKey {
    /// From a PKCS#8 PEM P-256 private key.
    pub fn from_pem(pem: &str) -> Result<DpopKey, String> {
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| format!("DPoP key: {e}"))?;
        let mut jwk =
            Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|e| format!("DPoP key: {e}"))?;
        // The proof carries the bare public key (RFC 9449 §4.2).
        jwk.common.key_algorithm = None;
        Ok(DpopKey { key, jwk })
    }

    /// RFC 7638 thumbprint: what a token bound to this key carries as `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        self.jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap_or_default()
    }

    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// A proof for `method url` at `iat` (Unix seconds), for `access_token` if given.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        iat: i64,
    ) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = json!({
            "jti": random_id(),
            "htm": method,
            "htu": htu,
            "iat": iat,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("DPoP proof: {e}"))
    }
}

pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

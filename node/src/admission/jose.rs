//! JWS verification shared by OpToks and DPoP proofs, on top of `jsonwebtoken`.
//!
//! The library checks the signature and the algorithm family of the key; this module adds what
//! both token kinds need before that: a size bound, an explicit algorithm allow-list (ES256 and
//! EdDSA — `none` does not parse, HMAC is never allowed, so a public key can never be used as an
//! HMAC secret), and a key whose type matches the algorithm. Time claims are checked by the
//! callers against the node's clock, never against the library's system-time reads.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;

/// Longest token or proof accepted (a JWT is a header line, not a document).
pub const MAX_JWT_BYTES: usize = 8 * 1024;

pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::EdDSA];

/// Why a JWS was refused; the caller turns it into a problem detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("malformed JWT: {0}")]
    Malformed(String),
    #[error("algorithm `{0}` is not allowed (ES256 or EdDSA)")]
    Algorithm(String),
    #[error("the key does not fit the algorithm `{0:?}`")]
    KeyMismatch(Algorithm),
    #[error("bad signature")]
    Signature,
}

/// Parses the protected header after checking the shape and size of the compact JWS.
pub fn header(jwt: &str) -> Result<Header, JoseError> {
    if jwt.len() > MAX_JWT_BYTES {
        return Err(JoseError::Malformed(format!(
            "longer than {MAX_JWT_BYTES} bytes"
        )));
    }
    if jwt.split('.').count() != 3 {
        return Err(JoseError::Malformed("not a compact JWS".into()));
    }
    // An `alg` the library does not know (`none`, `HS1`, …) fails to parse: report it by name.
    let raw = raw_header(jwt)?;
    let alg = raw.get("alg").and_then(Value::as_str).unwrap_or("");
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| {
        if alg.is_empty() {
            JoseError::Malformed("the header has no `alg`".into())
        } else {
            JoseError::Algorithm(alg.to_owned())
        }
    })?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(JoseError::Algorithm(format!("{:?}", header.alg)));
    }
    Ok(header)
}

/// The protected header as JSON (to look at members `Header` does not model).
pub fn raw_header(jwt: &str) -> Result<serde_json::Map<String, Value>, JoseError> {
    use base64::Engine;
    let encoded = jwt.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| JoseError::Malformed("header is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| JoseError::Malformed("header is not JSON".into()))
}

/// Verifies the signature of `jwt` (whose header is `header`) with `jwk` and returns the claims.
pub fn verify(jwt: &str, header: &Header, jwk: &Jwk) -> Result<Value, JoseError> {
    let fits = match (&jwk.algorithm, header.alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    // A key that names its algorithm must name this one.
    let named = jwk
        .common
        .key_algorithm
        .is_none_or(|a| Algorithm::try_from(a).ok() == Some(header.alg));
    if !fits || !named {
        return Err(JoseError::KeyMismatch(header.alg));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| JoseError::KeyMismatch(header.alg))?;
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(JoseError::Signature),
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                Err(JoseError::KeyMismatch(header.alg))
            }
            _ => Err(JoseError::Malformed(e.to_string())),
        },
    }
}

/// RFC 7638 SHA-256 thumbprint, base64url.
pub fn thumbprint(jwk: &Jwk) -> Result<String, JoseError> {
    jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .map_err(|e| JoseError::Malformed(format!("key thumbprint: {e}")))
}

/// base64url (no padding) SHA-256 of `bytes`: DPoP `ath`, `x5t#S256`.
pub fn sha256_b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

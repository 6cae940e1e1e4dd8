//! DPoP proofs (RFC 9449 §4.3) and server nonces (§8), checked without I/O.
//!
//! Replay of a proof's `jti` is not decided here: the caller claims it in the replicated proof
//! set (signing) or in the node's local set (reads), so this module only says which proof it was.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::jose::{self, JoseError};

pub const DPOP_TYP: &str = "dpop+jwt";
const MAX_JTI_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub struct ProofPolicy {
    /// A proof is accepted for this long after its `iat` (and this much before, for skew).
    pub max_age_seconds: i64,
    pub skew_seconds: i64,
}

/// What the proof must match: the request as the client addressed it.
#[derive(Debug, Clone)]
pub struct ProofTarget<'a> {
    pub method: &'a str,
    /// Every URL the client may legitimately have used for this request (the node's own and the
    /// load balancer's), without query or fragment.
    pub urls: &'a [String],
    /// The access token the proof accompanies (`ath`), absent at the token endpoint.
    pub access_token: Option<&'a str>,
}

/// A valid proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof key: the token's `cnf.jkt` must equal it.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    pub nonce: Option<String>,
}

impl Proof {
    /// The replay-set key: the `jti` scoped to the key that made it, hashed.
    pub fn replay_key(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            format!("{}.{}", self.jkt, self.jti).as_bytes(),
        ))
    }

    /// Until when a second use of this proof counts as a replay (later it is stale anyway).
    /// Saturating: `iat` came from the caller.
    pub fn replay_window_end(&self, policy: &ProofPolicy) -> i64 {
        self.iat
            .saturating_add(policy.max_age_seconds)
            .saturating_add(policy.skew_seconds)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("DPoP proof: {0}")]
    Jose(#[from] JoseError),
    #[error("DPoP proof: `typ` must be `dpop+jwt`")]
    Type,
    #[error("DPoP proof: the header must carry a public `jwk`")]
    Key,
    #[error("DPoP proof: claims: {0}")]
    Claims(String),
    #[error("DPoP proof: `htm` does not match the request method")]
    Method,
    #[error("DPoP proof: `htu` does not match the request URL")]
    Url,
    #[error("DPoP proof: `iat` is outside the accepted window")]
    Stale,
    #[error("DPoP proof: `ath` is missing")]
    MissingAth,
    #[error("DPoP proof: `ath` does not match the access token")]
    Ath,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Verifies a proof against the request it came with. `now` is Unix seconds.
pub fn verify(
    proof: &str,
    target: &ProofTarget<'_>,
    policy: &ProofPolicy,
    now: i64,
) -> Result<Proof, ProofError> {
    let header = jose::header(proof)?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(DPOP_TYP))
    {
        return Err(ProofError::Type);
    }
    let jwk: Jwk = header.jwk.clone().ok_or(ProofError::Key)?;
    // A private key in the header means the client leaked it: refuse rather than use it.
    let raw = jose::raw_header(proof)?;
    if raw
        .get("jwk")
        .and_then(|k| k.as_object())
        .is_none_or(|k| k.contains_key("d"))
    {
        return Err(ProofError::Key);
    }
    let claims = jose::verify(proof, &header, &jwk)?;
    let claims: Claims =
        serde_json::from_value(claims).map_err(|e| ProofError::Claims(e.to_string()))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_BYTES {
        return Err(ProofError::Claims("`jti` must be 1 to 256 bytes".into()));
    }
    if claims.htm != target.method {
        return Err(ProofError::Method);
    }
    let htu = normalize_url(&claims.htu).ok_or(ProofError::Url)?;
    if !target
        .urls
        .iter()
        .filter_map(|u| normalize_url(u))
        .any(|u| u == htu)
    {
        return Err(ProofError::Url);
    }
    if !iat_in_window(claims.iat, policy, now) {
        return Err(ProofError::Stale);
    }
    if let Some(token) = target.access_token {
        let ath = claims.ath.as_deref().ok_or(ProofError::MissingAth)?;
        if ath != jose::sha256_b64url(token.as_bytes()) {
            return Err(ProofError::Ath);
        }
    }
    Ok(Proof {
        jkt: jose::thumbprint(&jwk)?,
        jti: claims.jti,
        iat: claims.iat,
        nonce: claims.nonce,
    })
}

/// `iat` is the caller's number: compared without arithmetic on it (no `now - iat`, which
/// wraps at `i64::MIN`), and a time at or before the epoch is never a fresh proof.
fn iat_in_window(iat: i64, policy: &ProofPolicy, now: i64) -> bool {
    iat > 0
        && iat <= now.saturating_add(policy.skew_seconds)
        && iat >= now.saturating_sub(policy.max_age_seconds)
}

/// RFC 9449 §4.3 compares `htu` without query and fragment, after syntax normalization
/// (scheme and host case, default port).
pub fn normalize_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?;
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!(
        "{}://{}{}{}",
        parsed.scheme(),
        host.to_ascii_lowercase(),
        port,
        parsed.path()
    ))
}

/// Server-provided nonces (RFC 9449 §8), stateless so that every node accepts every node's
/// nonce: `base64url(issued_at_be64 ‖ HMAC-SHA256(secret, issued_at)[..16])`. The secret is
/// shared by the nodes through their configuration.
pub struct NonceIssuer {
    key: hmac::Key,
    lifetime_seconds: i64,
}

impl NonceIssuer {
    pub fn new(secret: &[u8], lifetime_seconds: i64) -> NonceIssuer {
        NonceIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime_seconds,
        }
    }

    pub fn issue(&self, now: i64) -> String {
        let issued = now.to_be_bytes();
        let tag = hmac::sign(&self.key, &issued);
        let mut raw = issued.to_vec();
        raw.extend_from_slice(&tag.as_ref()[..16]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// `true` if `nonce` came from a node with the same secret within the lifetime.
    pub fn is_valid(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 24 {
            return false;
        }
        let (issued, tag) = raw.split_at(8);
        let tag_ok = hmac::sign(&self.key, issued)
            .as_ref()
            .get(..16)
            .is_some_and(|t| aws_lc_rs::constant_time::verify_slices_are_equal(t, tag).is_ok());
        let Ok(issued) = <[u8; 8]>::try_from(issued) else {
            return false;
        };
        let issued = i64::from_be_bytes(issued);
        tag_ok
            && issued <= now.saturating_add(5)
            && issued >= now.saturating_sub(self.lifetime_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_accepted_by_any_holder_of_the_secret_within_their_lifetime_only() {
        let a = NonceIssuer::new(&[1u8; 32], 300);
        let b = NonceIssuer::new(&[1u8; 32], 300);
        let other = NonceIssuer::new(&[2u8; 32], 300);
        let nonce = a.issue(1_000);
        assert!(
            b.is_valid(&nonce, 1_000),
            "another node with the same secret"
        );
        assert!(b.is_valid(&nonce, 1_300));
        assert!(!b.is_valid(&nonce, 1_301), "expired");
        assert!(!b.is_valid(&nonce, 990), "issued in the future");
        assert!(!other.is_valid(&nonce, 1_000), "another secret");
        let mut forged = URL_SAFE_NO_PAD.decode(&nonce).expect("b64");
        forged[7] ^= 1;
        assert!(
            !b.is_valid(&URL_SAFE_NO_PAD.encode(forged), 1_000),
            "tampered time"
        );
        assert!(!b.is_valid("", 1_000) && !b.is_valid("not base64!", 1_000));
    }

    #[test]
    fn iat_at_the_ends_of_i64_is_stale_not_wrapped_into_the_window() {
        let policy = ProofPolicy {
            max_age_seconds: 60,
            skew_seconds: 5,
        };
        let now = 1_700_000_000;
        for iat in [
            i64::MIN,
            i64::MIN + 1_000,
            -1,
            0,
            i64::MAX,
            i64::MAX - 3,
            now - 61,
            now + 6,
        ] {
            assert!(!iat_in_window(iat, &policy, now), "iat {iat}");
        }
        for iat in [now, now - 60, now + 5] {
            assert!(iat_in_window(iat, &policy, now), "iat {iat}");
        }
        // Even a clock at the ends of the range neither panics nor wraps.
        assert!(!iat_in_window(i64::MIN, &policy, i64::MAX));
        assert!(iat_in_window(i64::MAX, &policy, i64::MAX));
        let proof = Proof {
            jkt: "k".into(),
            jti: "j".into(),
            iat: i64::MAX,
            nonce: None,
        };
        assert_eq!(proof.replay_window_end(&policy), i64::MAX);
        let nonces = NonceIssuer::new(&[1u8; 32], 300);
        assert!(!nonces.is_valid(&nonces.issue(i64::MIN), 1_000));
        assert!(!nonces.is_valid(&nonces.issue(1_000), i64::MIN));
    }

    #[test]
    fn htu_is_compared_without_query_fragment_case_or_default_port() {
        let n = |u| normalize_url(u);
        assert_eq!(
            n("HTTPS://Signer.Example:443/a/b?x=1#f"),
            n("https://signer.example/a/b")
        );
        assert_ne!(
            n("https://signer.example/a/b"),
            n("https://signer.example/a/c")
        );
        assert_ne!(
            n("https://signer.example:8443/a"),
            n("https://signer.example/a")
        );
        assert_eq!(n("ftp://signer.example/a"), None);
        assert_eq!(n("not a url"), None);
    }
}

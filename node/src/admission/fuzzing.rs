//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the corpus test below:
//! the parsers of everything a caller sends to admission — OpToks, DPoP proofs and PoEs — fed
//! arbitrary bytes. They must answer `Err`, never panic, whatever the input.

use std::sync::OnceLock;

use jsonwebtoken::jwk::Jwk;

use super::dpop::{self, ProofPolicy, ProofTarget};
use super::licensing::{Introspection, Poe};
use super::optok::{self, TokenPolicy};

/// A fixed P-256 public key (RFC 7515 appendix A.3) to verify tokens against.
fn key() -> Option<&'static Jwk> {
    static KEY: OnceLock<Option<Jwk>> = OnceLock::new();
    KEY.get_or_init(|| {
        serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "fuzz",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRjGWnM-G7_uKkTmA5twXwpwiAnSFvwHqs9DKdA"
        }))
        .ok()
    })
    .as_ref()
}

/// An OpTok as presented in `Authorization`.
pub fn optok(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = TokenPolicy {
        issuer: "https://authority.test".into(),
        audience: "signer".into(),
        skew_seconds: 60,
        max_lifetime_seconds: 3600,
    };
    if let (Ok((header, _kid)), Some(key)) = (optok::parse_header(text), key()) {
        let _ = optok::verify(text, &header, key, &policy, 1_800_000_000);
    }
}

/// A DPoP proof as presented in the `DPoP` header.
pub fn dpop(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let urls = ["https://signer.test/api/v1/signer/sign/dsse".to_owned()];
    let target = ProofTarget {
        method: "POST",
        urls: &urls,
        access_token: Some("token"),
    };
    let policy = ProofPolicy {
        max_age_seconds: 300,
        skew_seconds: 60,
    };
    let _ = dpop::verify(text, &target, &policy, 1_800_000_000);
    let _ = dpop::normalize_url(text);
    let nonces = dpop::NonceIssuer::new(&[7u8; 32], 300);
    let _ = nonces.is_valid(text, 1_800_000_000);
}

/// A PoE as presented in the request body, and the licensing service's answer about it.
pub fn poe(data: &[u8]) {
    if let Ok(answer) = serde_json::from_slice::<Introspection>(data) {
        let token = optok::OpTok {
            issuer: "i".into(),
            subject: "s".into(),
            tenant: "t".into(),
            scopes: Vec::new(),
            plan: None,
            jti: "j".into(),
            expires_at: 0,
            binding: optok::Binding::Dpop { jkt: "k".into() },
            installation: None,
        };
        let _ = super::decide(&answer, &token, 1_800_000_000);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (format, value) = text.split_once(':').unwrap_or(("jwt", text));
        let poe = Poe {
            format: format.to_owned(),
            value: value.to_owned(),
        };
        let _ = super::check_poe_shape(&poe, Some(value));
    }
    let _ = serde_json::from_slice::<stella_api::ProofOfEntitlement>(data);
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// Seeds shaped like the real inputs (so mutations reach deep into the parsers), then
    /// deterministic mutations of them: what the fuzzers start from, run on every test pass.
    fn corpus() -> Vec<Vec<u8>> {
        let enc = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let header = enc(
            serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "kid": "fuzz",
            "jwk": {"kty": "EC", "crv": "P-256",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRjGWnM-G7_uKkTmA5twXwpwiAnSFvwHqs9DKdA"}}),
        );
        let claims = enc(
            serde_json::json!({"iss": "https://authority.test", "sub": "s", "aud": ["signer"],
            "exp": 1_800_000_100, "iat": 1_800_000_000, "jti": "j", "tid": "t", "scope": "signer.sign",
            "cnf": {"jkt": "x"}, "htm": "POST", "htu": "https://signer.test/api/v1/signer/sign/dsse", "ath": "a"}),
        );
        let seeds = vec![
            format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([1u8; 64])).into_bytes(),
            format!(
                "{}.{claims}.",
                enc(serde_json::json!({"alg": "none", "kid": "fuzz"}))
            )
            .into_bytes(),
            format!(
                "{}.{claims}.AAAA",
                enc(serde_json::json!({"alg": "HS256", "kid": "fuzz"}))
            )
            .into_bytes(),
            br#"{"active":true,"license_id":"l","plan":"p","tenant":"t","exp":9,"revoked":false}"#
                .to_vec(),
            br#"{"active":"yes","exp":-1e308}"#.to_vec(),
            b"mtls:abc".to_vec(),
            b"jwt:a.b.c".to_vec(),
            b"https://signer.test:443/x?y#z".to_vec(),
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
            Vec::new(),
        ];
        let mut corpus = seeds.clone();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for seed in &seeds {
            corpus.extend(crate::fuzzing::mutations(seed, 300, &mut state));
        }
        corpus
    }

    #[test]
    fn the_admission_parsers_never_panic_on_the_corpus() {
        assert!(super::key().is_some(), "the fixed key parses");
        for input in corpus() {
            super::optok(&input);
            super::dpop(&input);
            super::poe(&input);
        }
    }
}

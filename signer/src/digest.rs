//! SHA-256 helpers and the `sha256:<hex>` digest notation used on the wire.

use sha2::{Digest, Sha256};

use crate::Error;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// `sha256:<lowercase hex>` of `bytes`.
pub fn sha256_ref(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// True for exactly 64 lowercase hex characters (in-toto and OCI want lowercase).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses `sha256:<64 lowercase hex>` and returns the hex part.
pub fn parse_sha256_ref(s: &str) -> Result<&str, Error> {
    let Some(hex) = s.strip_prefix("sha256:") else {
        return Err(Error::InvalidInput(format!(
            "digest `{s}` must start with `sha256:`"
        )));
    };
    if !is_sha256_hex(hex) {
        return Err(Error::InvalidInput(format!(
            "digest `{s}` must have 64 lowercase hex characters"
        )));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_refs() {
        assert_eq!(
            sha256_ref(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_sha256_ref(&sha256_ref(b"x")).is_ok());
        assert!(parse_sha256_ref("sha256:ABC").is_err());
        assert!(parse_sha256_ref("sha512:00").is_err());
        assert!(parse_sha256_ref(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}

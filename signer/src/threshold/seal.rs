//! AES-256-GCM with a random 96-bit nonce (aws-lc-rs), the one AEAD of this module.
//!
//! Layout of a sealed blob: `nonce (12) ‖ ciphertext ‖ tag (16)`. Callers put their own
//! version byte and binding into the AAD and in front of the blob.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

pub(crate) const TAG_LEN: usize = 16;

/// Why a blob did not open. Deliberately uninformative: wrong key, wrong AAD and tampering
/// look the same to an AEAD.
#[derive(Debug)]
pub(crate) struct OpenFailed;

pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let key = aead_key(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no randomness for the nonce".to_string())?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut in_out,
    )
    .map_err(|_| "AES-256-GCM sealing failed".to_string())?;
    let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&in_out);
    Ok(out)
}

pub(crate) fn open(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenFailed);
    }
    let key = aead_key(key).map_err(|_| OpenFailed)?;
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut in_out)
        .map_err(|_| OpenFailed)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| "bad AES-256 key".to_string())
}

/// HKDF-SHA256(salt, ikm) expanded with `info` into a 32-byte key.
pub(crate) fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; 32]>, String> {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, Len32)
        .map_err(|_| "HKDF expand failed".to_string())?;
    let mut key = Zeroizing::new([0u8; 32]);
    okm.fill(&mut key[..])
        .map_err(|_| "HKDF fill failed".to_string())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"aad", b"secret").expect("seal");
        assert_eq!(&open(&key, b"aad", &sealed).expect("open")[..], b"secret");
        assert!(open(&key, b"other", &sealed).is_err());
        assert!(open(&[8u8; 32], b"aad", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(open(&key, b"aad", &flipped).is_err());
        assert!(open(&key, b"aad", &sealed[..10]).is_err());
    }
}

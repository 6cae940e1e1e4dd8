//! Keys: the [`KeySigner`] trait and the file-key back-end.
//!
//! A `KeySigner` is the *long-lived* key (a file key, an HSM object, a keyless issuer, a
//! threshold group); [`KeySigner::sign`] is *one signing operation* and returns a
//! [`SignedOperation`] that carries the verification material of that operation only (a keyless
//! signer mints a fresh certificate per operation, so material cannot live on the key).
//!
//! Byte contract of `sign(message)`:
//! - `message` is the exact DSSE PAE byte string. Back-ends hash it themselves; callers never
//!   pre-hash.
//! - For [`SignatureAlgorithm::EcdsaP256Sha256`] the result is an ASN.1 DER `ECDSA-Sig-Value`
//!   over SHA-256(message), which is what DSSE, cosign, sigstore-js and `openssl dgst -sha256
//!   -verify` expect. Signatures may be randomized: verifiers must not compare them byte-wise.
//! - `key_id` is `sha256:<hex of SHA-256(SubjectPublicKeyInfo DER)>`; the Sigstore bundle hint
//!   is the standard base64 of the same digest.

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ED25519, EcdsaKeyPair, KeyPair,
    ParsedPublicKey, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::digest::{sha256, sha256_hex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureAlgorithm {
    #[serde(rename = "ECDSA_P256_SHA256")]
    EcdsaP256Sha256,
    /// BIP-340 Schnorr over secp256k1 of SHA-256(message): the 64-byte signature of a
    /// threshold (FROST) key, valid under its 32-byte x-only key (see [`crate::threshold`]).
    #[serde(rename = "BIP340_SECP256K1_SHA256")]
    Bip340Secp256k1Sha256,
    /// RFC 8032 Ed25519 over the message itself (no pre-hash): the 64-byte signature of an
    /// Ed25519 threshold (FROST) key, what Sigstore verifiers and `openssl pkeyutl -rawin` check.
    #[serde(rename = "ED25519")]
    Ed25519,
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureAlgorithm::EcdsaP256Sha256 => "ECDSA_P256_SHA256",
            SignatureAlgorithm::Bip340Secp256k1Sha256 => "BIP340_SECP256K1_SHA256",
            SignatureAlgorithm::Ed25519 => "ED25519",
        })
    }
}

/// Where the long-lived key lives; recorded in every audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    File,
    Pkcs11,
    /// An ephemeral key with a short-lived Fulcio certificate.
    Keyless,
    /// A FROST group key whose shares are spread over `t`-of-`n` nodes.
    Threshold,
    /// A non-extractable key in a cloud KMS (AWS KMS `ECC_NIST_P256`, `SIGN_VERIFY`).
    Kms,
}

impl KeySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeySource::File => "file",
            KeySource::Pkcs11 => "pkcs11",
            KeySource::Keyless => "keyless",
            KeySource::Threshold => "threshold",
            KeySource::Kms => "kms",
        }
    }
}

/// What a caller may know about a long-lived key without touching its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescriptor {
    pub key_id: String,
    pub algorithm: SignatureAlgorithm,
    pub source: KeySource,
    pub public_key: PublicKey,
}

/// The result of one signing operation.
#[derive(Debug, Clone)]
pub struct SignedOperation {
    pub key_id: String,
    pub algorithm: SignatureAlgorithm,
    pub signature: Vec<u8>,
    /// SubjectPublicKeyInfo DER of the key that produced `signature`.
    pub public_key: PublicKey,
    /// Leaf first; empty for keyful signatures.
    pub certificate_chain_der: Vec<Vec<u8>>,
    /// RFC 3161 timestamps (DER `TimeStampResp`) over `signature`; empty unless a TSA was asked.
    pub timestamps: Vec<Vec<u8>>,
    /// What the back-end wants on the record about this operation (e.g. threshold share
    /// holders that were left out, and why); empty for most.
    pub remarks: Vec<String>,
}

/// A long-lived signing key. See the module documentation for the byte contract.
pub trait KeySigner: Send + Sync {
    fn descriptor(&self) -> &KeyDescriptor;
    fn sign(&self, message: &[u8]) -> Result<SignedOperation, Error>;
}

/// A public key as a DER SubjectPublicKeyInfo, validated on construction: ECDSA P-256 (file,
/// HSM, KMS, keyless keys), Ed25519 (threshold group keys of the Ed25519 suite, RFC 8410) or
/// secp256k1 for BIP-340 (threshold group keys of the secp256k1 suite, encoded as the even-Y
/// point of the x-only key, uncompressed — what openssl and other SPKI readers accept).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki_der: Vec<u8>,
}

/// The fixed DER prefix of an uncompressed secp256k1 SubjectPublicKeyInfo
/// (id-ecPublicKey, secp256k1, BIT STRING of 65 bytes).
const SECP256K1_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
];

/// The fixed DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410: id-Ed25519, BIT STRING
/// of 32 bytes).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, Error> {
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX) {
            let raw: &[u8; 32] = raw
                .try_into()
                .map_err(|_| Error::Key("an Ed25519 key is 32 bytes".into()))?;
            return PublicKey::from_ed25519(raw);
        }
        if der.starts_with(&SECP256K1_SPKI_PREFIX) {
            let point = &der[SECP256K1_SPKI_PREFIX.len()..];
            let x: [u8; 32] = point
                .get(1..33)
                .and_then(|x| x.try_into().ok())
                .ok_or_else(|| Error::Key("secp256k1 key must be uncompressed".into()))?;
            // Only the even-Y point stands for an x-only BIP-340 key.
            if PublicKey::from_bip340_x_only(&x)?.spki_der != der {
                return Err(Error::Key(
                    "a secp256k1 key must be the even-Y point of a BIP-340 key".into(),
                ));
            }
            return Ok(PublicKey {
                spki_der: der.to_vec(),
            });
        }
        // Reject anything that is not a valid point on P-256 before it is used anywhere.
        ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der)
            .map_err(|e| Error::Key(format!("not a P-256 public key: {e}")))?;
        if der.first() != Some(&0x30) {
            return Err(Error::Key(
                "public key must be a DER SubjectPublicKeyInfo".into(),
            ));
        }
        Ok(PublicKey {
            spki_der: der.to_vec(),
        })
    }

    /// The SPKI of a BIP-340 x-only key (secp256k1, its even-Y point).
    pub fn from_bip340_x_only(x_only: &[u8; 32]) -> Result<PublicKey, Error> {
        let verifying = k256::schnorr::VerifyingKey::from_bytes(x_only)
            .map_err(|_| Error::Key("not a BIP-340 public key".into()))?;
        let point = k256::PublicKey::from(&verifying);
        let mut der = SECP256K1_SPKI_PREFIX.to_vec();
        der.extend_from_slice(
            k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&point, false).as_bytes(),
        );
        Ok(PublicKey { spki_der: der })
    }

    /// The SPKI of a raw 32-byte Ed25519 public key. Refuses bytes that do not decode to a
    /// point of the curve (curve25519-dalek's decompression, through frost-ed25519), so the
    /// check happens here and not first at verification.
    pub fn from_ed25519(raw: &[u8; 32]) -> Result<PublicKey, Error> {
        frost_ed25519::VerifyingKey::deserialize(raw)
            .map_err(|e| Error::Key(format!("not an Ed25519 public key: {e}")))?;
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(raw);
        Ok(PublicKey { spki_der: der })
    }

    /// The raw 32-byte key of an Ed25519 public key; `None` for other keys.
    pub fn ed25519_raw(&self) -> Option<[u8; 32]> {
        self.spki_der
            .strip_prefix(&ED25519_SPKI_PREFIX)?
            .try_into()
            .ok()
    }

    /// The x-only key of a BIP-340 (secp256k1) public key; `None` for P-256 keys.
    pub fn bip340_x_only(&self) -> Option<[u8; 32]> {
        let point = self.spki_der.strip_prefix(&SECP256K1_SPKI_PREFIX)?;
        point.get(1..33)?.try_into().ok()
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        if self.bip340_x_only().is_some() {
            SignatureAlgorithm::Bip340Secp256k1Sha256
        } else if self.ed25519_raw().is_some() {
            SignatureAlgorithm::Ed25519
        } else {
            SignatureAlgorithm::EcdsaP256Sha256
        }
    }

    pub fn from_pem(pem: &str) -> Result<PublicKey, Error> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::Key(format!("expected a PEM `PUBLIC KEY`: {e}")))?;
        PublicKey::from_spki_der(der.as_ref())
    }

    pub fn from_pem_file(path: &Path) -> Result<PublicKey, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?;
        PublicKey::from_pem(&text)
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki_der)
    }

    pub fn key_id(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.spki_der))
    }

    /// Sigstore bundle `publicKey.hint`: standard base64 of SHA-256(SPKI DER).
    pub fn hint(&self) -> String {
        STANDARD.encode(sha256(&self.spki_der))
    }

    /// Checks a signature over `message`: ASN.1 DER ECDSA over SHA-256(message) for a P-256
    /// key; for a secp256k1 key, a 64-byte BIP-340 signature of SHA-256(message) (the threshold
    /// keys' byte contract, see [`crate::threshold`]); for an Ed25519 key, RFC 8032 Ed25519 over
    /// `message` itself.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if let Some(raw) = self.ed25519_raw() {
            return UnparsedPublicKey::new(&ED25519, raw)
                .verify(message, signature)
                .is_ok();
        }
        if let Some(x_only) = self.bip340_x_only() {
            let Ok(signature) = <[u8; 64]>::try_from(signature) else {
                return false;
            };
            return crate::threshold::verify_bip340(
                &x_only,
                &crate::threshold::threshold_message(message),
                &signature,
            );
        }
        match ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.spki_der) {
            Ok(key) => key.verify_sig(message, signature).is_ok(),
            Err(_) => false,
        }
    }
}

/// ECDSA P-256 key held in a PKCS#8 file (or memory). Signing uses aws-lc-rs (see
/// `docs/adr/0002-ecdsa-backend.md`).
pub struct FileKeySigner {
    key_pair: EcdsaKeyPair,
    pkcs8_der: Vec<u8>,
    descriptor: KeyDescriptor,
    rng: SystemRandom,
}

impl fmt::Debug for FileKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeySigner")
            .field("key_id", &self.descriptor.key_id)
            .finish_non_exhaustive()
    }
}

impl FileKeySigner {
    pub fn generate() -> Result<FileKeySigner, Error> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|_| Error::Key("P-256 key generation failed".into()))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| Error::Key("PKCS#8 encoding failed".into()))?;
        FileKeySigner::from_pkcs8_der(pkcs8.as_ref())
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<FileKeySigner, Error> {
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|e| Error::Key(format!("not a PKCS#8 P-256 private key: {e}")))?;
        let spki = key_pair
            .public_key()
            .as_der()
            .map_err(|_| Error::Key("public key encoding failed".into()))?;
        let public_key = PublicKey::from_spki_der(spki.as_ref())?;
        let descriptor = KeyDescriptor {
            key_id: public_key.key_id(),
            algorithm: SignatureAlgorithm::EcdsaP256Sha256,
            source: KeySource::File,
            public_key,
        };
        Ok(FileKeySigner {
            key_pair,
            pkcs8_der: der.to_vec(),
            descriptor,
            rng: SystemRandom::new(),
        })
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<FileKeySigner, Error> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::Key(format!("expected a PEM `PRIVATE KEY` (PKCS#8): {e}")))?;
        FileKeySigner::from_pkcs8_der(der.secret_pkcs8_der())
    }

    pub fn from_pem_file(path: &Path) -> Result<FileKeySigner, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?;
        FileKeySigner::from_pkcs8_pem(&text)
    }

    pub fn to_pkcs8_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.pkcs8_der)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.descriptor.public_key
    }
}

impl KeySigner for FileKeySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    fn sign(&self, message: &[u8]) -> Result<SignedOperation, Error> {
        let signature = self
            .key_pair
            .sign(&self.rng, message)
            .map_err(|_| Error::Signing("ECDSA signing failed".into()))?;
        Ok(SignedOperation {
            key_id: self.descriptor.key_id.clone(),
            algorithm: self.descriptor.algorithm,
            signature: signature.as_ref().to_vec(),
            public_key: self.descriptor.public_key.clone(),
            certificate_chain_der: Vec::new(),
            timestamps: Vec::new(),
            remarks: Vec::new(),
        })
    }
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem_and_signs() {
        let key = FileKeySigner::generate().expect("generate");
        let again = FileKeySigner::from_pkcs8_pem(&key.to_pkcs8_pem()).expect("reload");
        assert_eq!(key.descriptor(), again.descriptor());
        let public = PublicKey::from_pem(&key.public_key().to_pem()).expect("public pem");
        let op = again.sign(b"message").expect("sign");
        assert!(public.verify(b"message", &op.signature));
        assert!(!public.verify(b"messagf", &op.signature));
        assert!(op.key_id.starts_with("sha256:") && op.key_id.len() == 71);
    }

    #[test]
    fn garbage_keys_are_errors_not_panics() {
        assert!(FileKeySigner::from_pkcs8_pem("nope").is_err());
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        assert!(PublicKey::from_spki_der(&[0x30, 0x00]).is_err());
    }
}

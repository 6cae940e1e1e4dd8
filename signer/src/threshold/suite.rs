//! The ciphersuites a threshold key can use, and what differs between them: the bytes a
//! signature covers, how the group key is published, and the independent verifier that checks
//! every aggregated signature. Everything else (DKG, sealing, signing rounds, refresh) is one
//! implementation generic over [`Suite`].
//!
//! - [`SuiteId::Ed25519`] (FROST(Ed25519, SHA-512), RFC 9591): the group key is an ordinary
//!   Ed25519 key and a signature is a plain RFC 8032 Ed25519 signature over the DSSE PAE itself,
//!   so every Sigstore verifier, `openssl pkeyutl -verify -rawin` and cosign accept it. The
//!   default for new keys.
//! - [`SuiteId::Secp256k1Tr`] (FROST(secp256k1, SHA-256) in its BIP-340 variant): a signature
//!   is BIP-340 over SHA-256(PAE), checked by libsecp256k1-compatible verifiers only. Kept for
//!   the keys made with it.

use std::fmt;

use frost_core::{Ciphersuite, VerifyingKey};
/// The two suites' FROST ciphersuite types, for callers of the generic API.
pub use frost_ed25519::Ed25519Sha512;
pub use frost_secp256k1_tr::Secp256K1Sha256TR;
use serde::{Deserialize, Serialize};

use super::ThresholdError;
use crate::{PublicKey, SignatureAlgorithm};

/// A threshold ciphersuite by name, as it travels in requests and the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SuiteId {
    /// FROST(Ed25519, SHA-512): plain Ed25519 signatures over the PAE.
    #[default]
    #[serde(rename = "ed25519")]
    Ed25519,
    /// FROST(secp256k1, SHA-256), BIP-340 (taproot) variant.
    #[serde(rename = "secp256k1-tr")]
    Secp256k1Tr,
}

impl SuiteId {
    pub const ALL: [SuiteId; 2] = [SuiteId::Ed25519, SuiteId::Secp256k1Tr];

    pub fn name(self) -> &'static str {
        match self {
            SuiteId::Ed25519 => "ed25519",
            SuiteId::Secp256k1Tr => "secp256k1-tr",
        }
    }

    pub fn parse(name: &str) -> Result<SuiteId, ThresholdError> {
        SuiteId::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                ThresholdError::InvalidParams(format!(
                    "unknown threshold suite `{name}` (known: ed25519, secp256k1-tr)"
                ))
            })
    }

    /// The leading byte of this suite's group keys and sealed shares. `1` is what the
    /// secp256k1 keys made before the suite existed carry, so their bytes keep their meaning.
    pub fn tag(self) -> u8 {
        match self {
            SuiteId::Secp256k1Tr => 1,
            SuiteId::Ed25519 => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Option<SuiteId> {
        SuiteId::ALL.into_iter().find(|s| s.tag() == tag)
    }

    /// The algorithm of the signatures this suite's keys make.
    pub fn algorithm(self) -> SignatureAlgorithm {
        match self {
            SuiteId::Ed25519 => SignatureAlgorithm::Ed25519,
            SuiteId::Secp256k1Tr => SignatureAlgorithm::Bip340Secp256k1Sha256,
        }
    }

    /// The message a signature of this suite covers, for the DSSE PAE `pae`.
    pub fn message(self, pae: &[u8]) -> Vec<u8> {
        match self {
            SuiteId::Ed25519 => Ed25519Sha512::message(pae),
            SuiteId::Secp256k1Tr => Secp256K1Sha256TR::message(pae),
        }
    }
}

impl fmt::Display for SuiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the generic threshold code needs to know about a FROST ciphersuite.
pub trait Suite: Ciphersuite + Send + Sync + 'static {
    const SUITE: SuiteId;

    /// The message a signature covers for the DSSE PAE `pae`.
    fn message(pae: &[u8]) -> Vec<u8>;

    /// Whether `message` has the shape this suite signs (holders refuse anything else).
    fn message_ok(message: &[u8]) -> bool;

    /// The group key as the [`PublicKey`] that is published and verifies the signatures.
    fn public_key(key: &VerifyingKey<Self>) -> Result<PublicKey, ThresholdError>;

    /// Checks a 64-byte signature over `message` with an implementation other than FROST's.
    fn verify_independently(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool;
}

impl Suite for Ed25519Sha512 {
    const SUITE: SuiteId = SuiteId::Ed25519;

    fn message(pae: &[u8]) -> Vec<u8> {
        pae.to_vec()
    }

    fn message_ok(_: &[u8]) -> bool {
        true
    }

    fn public_key(key: &VerifyingKey<Self>) -> Result<PublicKey, ThresholdError> {
        let raw: [u8; 32] = key
            .serialize()?
            .as_slice()
            .try_into()
            .map_err(|_| malformed_key("an Ed25519 key is 32 bytes"))?;
        PublicKey::from_ed25519(&raw).map_err(|e| malformed_key(&e.to_string()))
    }

    /// aws-lc-rs's RFC 8032 verifier (what [`PublicKey::verify`] uses for Ed25519 keys).
    fn verify_independently(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        key.algorithm() == SignatureAlgorithm::Ed25519 && key.verify(message, signature)
    }
}

impl Suite for Secp256K1Sha256TR {
    const SUITE: SuiteId = SuiteId::Secp256k1Tr;

    /// SHA-256 of the PAE: 32 bytes, what every BIP-340 verifier takes.
    fn message(pae: &[u8]) -> Vec<u8> {
        super::threshold_message(pae).to_vec()
    }

    fn message_ok(message: &[u8]) -> bool {
        message.len() == 32
    }

    /// The secp256k1 SPKI of the even-Y point of the x-only key (see [`super`]'s byte contract).
    fn public_key(key: &VerifyingKey<Self>) -> Result<PublicKey, ThresholdError> {
        let sec1 = key.serialize()?;
        let x: [u8; 32] = sec1
            .get(1..33)
            .and_then(|x| x.try_into().ok())
            .ok_or_else(|| malformed_key("a compressed secp256k1 key is 33 bytes"))?;
        PublicKey::from_bip340_x_only(&x).map_err(|e| malformed_key(&e.to_string()))
    }

    /// k256's BIP-340 implementation.
    fn verify_independently(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        let (Some(x_only), Ok(message)) = (key.bip340_x_only(), <[u8; 32]>::try_from(message))
        else {
            return false;
        };
        super::verify_bip340(&x_only, &message, signature)
    }
}

fn malformed_key(reason: &str) -> ThresholdError {
    ThresholdError::Malformed {
        what: "verifying key",
        reason: reason.to_owned(),
    }
}

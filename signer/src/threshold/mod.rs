//! Threshold signing core: FROST (RFC 9591) over two ciphersuites, as pure share math and
//! protocol state machines. There is no network, no runtime and no file here. The node drives
//! these types over its peer transport and keeps sealed shares on disk; this module only turns
//! bytes into bytes. See `docs/adr/0011-threshold-keys.md` and `docs/adr/0020-threshold-suites.md`.
//!
//! # One implementation, two suites
//! The protocol code (DKG with sealed round-2 packages, refresh, commit, sign, aggregate, the
//! coordinator) is written once, generic over [`Suite`]: [`DkgParticipantOf`],
//! [`KeyShareOf`], [`GroupKeyOf`], [`SigningNoncesOf`] and the functions in [`generic`]. What
//! differs per suite is only in [`suite`]. The node works with the suite-tagged types of this
//! module ([`GroupKey`], [`KeyShare`], [`DkgParticipant`], [`SigningNonces`], [`commit`], …),
//! which carry the suite in their bytes and dispatch to the generic code.
//!
//! # Byte contract
//! - **Ed25519** ([`SuiteId::Ed25519`], the default): the message a signature covers is the
//!   DSSE PAE itself, the signature is a plain 64-byte RFC 8032 Ed25519 signature, the group key
//!   is published as an Ed25519 SubjectPublicKeyInfo (RFC 8410). Any Sigstore verifier checks it
//!   like a keyful signature; aggregated signatures are checked with aws-lc-rs's Ed25519.
//! - **secp256k1-tr** ([`SuiteId::Secp256k1Tr`]): the message is [`threshold_message`]`(pae)`
//!   = SHA-256(DSSE PAE): 32 bytes, so that every BIP-340 verifier (libsecp256k1, coincurve,
//!   k256, …) can check it; holders refuse anything that is not 32 bytes. The signature is the
//!   64-byte BIP-340 signature `R.x ‖ s`, valid under the group's 32-byte x-only key; the group
//!   key is published as the secp256k1 SubjectPublicKeyInfo of the even-Y point of the x-only
//!   key. Aggregated signatures are checked with [`verify_bip340`] (k256), not FROST's verifier.
//!   The published x-only key is the *taproot output key* that `frost-secp256k1-tr` produces:
//!   its DKG post-processing adds the BIP-341 "unspendable script path" tweak,
//!   `Q = P + H_TapTweak(P)·G`, to the group key and to every share. Plain (un-tweaked) FROST
//!   signing with those shares yields signatures valid under `x(Q)`, which is what we publish.
//! - Either way the key id is `sha256:` + hex SHA-256 of the published SPKI, like every key's.
//! - All other messages (round-1 messages, sealed round-2 packages, commitments, signing
//!   packages, signature shares) are opaque bytes with a leading format-version byte where this
//!   module defines the framing, and FROST's own serialization (which carries a ciphersuite
//!   header) where FROST does. Group keys and sealed shares lead with the suite's tag.
//!
//! # Invariants
//! - No node ever sees the whole key: the DKG leader only relays round-1 messages (public) and
//!   round-2 packages sealed for one recipient each; the signing coordinator sees commitments,
//!   the signing package and signature shares, never a share or a nonce.
//! - Signing nonces never leave the holder, are never serialized or persisted, and are used
//!   once: [`SigningNonces`] is neither `Clone` nor serializable and [`sign_share`] consumes it.
//!   A retry always starts from fresh commitments.
//! - Every signature leaving [`generic::aggregate`] (and so [`threshold_sign`]) has been checked
//!   against the group key with a verifier other than FROST's ([`Suite::verify_independently`]).

mod any;
mod coordinator;
mod dkg;
mod seal;
mod share;
mod sign;
pub mod suite;

use std::fmt;

use frost_core::{Ciphersuite, Identifier};

pub use any::{
    DkgParticipant, GroupKey, KeyShare, SigningNonces, commit, dkg_in_process, in_process_sign,
    sign_share, signing_package_message, threshold_sign,
};
pub use coordinator::{ExclusionReason, ShareTransport, ThresholdSignature};
pub use dkg::{DkgParticipantOf, Round1Message};
pub use share::{GroupKeyOf, KeyShareOf};
pub use sign::SigningNoncesOf;
pub use suite::{Suite, SuiteId};

/// The protocol functions for one statically known suite (the node uses the suite-tagged
/// wrappers at this module's top level instead).
pub mod generic {
    pub use super::coordinator::threshold_sign;
    pub use super::dkg::dkg_in_process;
    pub use super::sign::{
        aggregate, commit, in_process_sign, sign_share, signing_package, signing_package_message,
    };
}

/// Largest group this module accepts. FROST allows up to 65535 participants; a cluster has a
/// handful of nodes, and a DKG moves `n·(n−1)` sealed packages, so the bound is kept well below
/// anything that could make one DKG expensive.
pub const MAX_PARTICIPANTS: u16 = 255;

/// The 32-byte message a threshold signature covers: SHA-256 of the DSSE PAE bytes.
pub fn threshold_message(pae: &[u8]) -> [u8; 32] {
    crate::digest::sha256(pae)
}

/// BIP-340 verification with k256's Schnorr implementation, independent of FROST's verifier.
///
/// `message` is the 32-byte message as signed (see [`threshold_message`]), not a PAE.
pub fn verify_bip340(x_only: &[u8; 32], message: &[u8; 32], signature: &[u8; 64]) -> bool {
    let Ok(key) = k256::schnorr::VerifyingKey::from_bytes(x_only) else {
        return false;
    };
    let Ok(signature) = k256::schnorr::Signature::try_from(&signature[..]) else {
        return false;
    };
    key.verify_raw(message, &signature).is_ok()
}

/// A participant of one threshold group, `1..=n`. The node maps these to its node ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub u16);

impl ParticipantId {
    pub fn get(self) -> u16 {
        self.0
    }

    pub(crate) fn identifier<C: Ciphersuite>(self) -> Result<Identifier<C>, ThresholdError> {
        Identifier::try_from(self.0).map_err(|_| ThresholdError::InvalidParticipant(self.0))
    }

    /// The id whose FROST identifier is `identifier`, searched among `1..=max`.
    pub(crate) fn from_identifier<C: Ciphersuite>(
        identifier: &Identifier<C>,
        max: u16,
    ) -> Option<ParticipantId> {
        (1..=max)
            .map(ParticipantId)
            .find(|p| p.identifier::<C>().is_ok_and(|id| id == *identifier))
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Threshold `t` (signers needed) and group size `n`, validated: `2 <= t <= n <=`
/// [`MAX_PARTICIPANTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThresholdParams {
    min_signers: u16,
    max_signers: u16,
}

impl ThresholdParams {
    pub fn new(min_signers: u16, max_signers: u16) -> Result<ThresholdParams, ThresholdError> {
        if min_signers < 2 {
            return Err(ThresholdError::InvalidParams(format!(
                "threshold {min_signers} is below 2"
            )));
        }
        if min_signers > max_signers {
            return Err(ThresholdError::InvalidParams(format!(
                "threshold {min_signers} exceeds the group size {max_signers}"
            )));
        }
        if max_signers > MAX_PARTICIPANTS {
            return Err(ThresholdError::InvalidParams(format!(
                "group size {max_signers} exceeds {MAX_PARTICIPANTS}"
            )));
        }
        Ok(ThresholdParams {
            min_signers,
            max_signers,
        })
    }

    /// `t`: how many holders must take part in a signature.
    pub fn min_signers(&self) -> u16 {
        self.min_signers
    }

    /// `n`: how many holders the group has.
    pub fn max_signers(&self) -> u16 {
        self.max_signers
    }

    /// `1..=n`.
    pub fn participants(&self) -> impl Iterator<Item = ParticipantId> + use<> {
        (1..=self.max_signers).map(ParticipantId)
    }

    pub(crate) fn check_participant(&self, p: ParticipantId) -> Result<(), ThresholdError> {
        if p.0 == 0 || p.0 > self.max_signers {
            return Err(ThresholdError::InvalidParticipant(p.0));
        }
        Ok(())
    }
}

/// The threshold layer's one error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("invalid threshold parameters: {0}")]
    InvalidParams(String),
    #[error("participant id {0} is outside 1..=n")]
    InvalidParticipant(u16),
    #[error("participant {0} is not part of this group or session")]
    UnknownParticipant(ParticipantId),
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("protocol misuse: {0}")]
    Protocol(String),
    #[error("DKG failed ({}): {reason}", ids(.culprits))]
    Dkg {
        culprits: Vec<ParticipantId>,
        reason: String,
    },
    #[error("sealed round-2 package from participant {sender} could not be opened: {reason}")]
    SealedPackage {
        sender: ParticipantId,
        reason: String,
    },
    #[error("sealed key share could not be opened: {0}")]
    ShareSeal(String),
    #[error("signing package refused by participant {participant}: {reason}")]
    CommitmentMismatch {
        participant: ParticipantId,
        reason: &'static str,
    },
    #[error("invalid signature shares from participants {}", ids(.culprits))]
    BadShare { culprits: Vec<ParticipantId> },
    #[error("only {have} of the {need} required share holders are available")]
    Unavailable { have: usize, need: usize },
    #[error("share holder {holder}: {reason}")]
    Transport {
        holder: ParticipantId,
        reason: String,
    },
    #[error("the aggregated signature does not verify under the group key")]
    InvalidSignature,
    #[error("{0} material used with {1} material")]
    SuiteMismatch(SuiteId, SuiteId),
    #[error("FROST: {0}")]
    Frost(String),
}

fn ids(list: &[ParticipantId]) -> String {
    if list.is_empty() {
        return "none identified".into();
    }
    list.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl<C: Ciphersuite> From<frost_core::Error<C>> for ThresholdError {
    fn from(e: frost_core::Error<C>) -> Self {
        ThresholdError::Frost(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_validated() {
        assert!(ThresholdParams::new(1, 3).is_err());
        assert!(ThresholdParams::new(4, 3).is_err());
        assert!(ThresholdParams::new(2, 256).is_err());
        assert!(ThresholdParams::new(2, 2).is_ok());
        assert!(ThresholdParams::new(255, 255).is_ok());
    }

    #[test]
    fn participant_identifiers_round_trip() {
        for p in 1..=20u16 {
            let id = ParticipantId(p)
                .identifier::<frost_ed25519::Ed25519Sha512>()
                .expect("non-zero");
            assert_eq!(
                ParticipantId::from_identifier(&id, 20),
                Some(ParticipantId(p))
            );
        }
        assert!(
            ParticipantId(0)
                .identifier::<frost_ed25519::Ed25519Sha512>()
                .is_err()
        );
    }

    #[test]
    fn holder_state_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DkgParticipant>();
        send_sync::<KeyShare>();
        send_sync::<GroupKey>();
        send_sync::<SigningNonces>();
        send_sync::<ThresholdError>();
    }

    #[test]
    fn bip340_rejects_garbage() {
        assert!(!verify_bip340(&[0u8; 32], &[0u8; 32], &[0u8; 64]));
    }
}

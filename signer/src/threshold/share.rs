//! The long-lived halves of a threshold key: one holder's secret [`KeyShareOf`] and the group's
//! public [`GroupKeyOf`], for any [`Suite`].
//!
//! Both serialize with a leading byte that names the suite ([`SuiteId::tag`]): `1` for
//! secp256k1 (what every key made before Ed25519 existed carries), `2` for Ed25519.

use std::fmt;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use zeroize::Zeroizing;

use super::seal;
use super::suite::{Suite, SuiteId};
use super::{ParticipantId, ThresholdError, ThresholdParams};
use crate::PublicKey;

const SHARE_AAD_LABEL: &[u8] = b"stella/threshold-share";

/// One holder's secret share of a threshold key (wraps FROST's `KeyPackage`).
///
/// Lives in memory; at rest it exists only as [`KeyShareOf::seal`] output. `Debug` prints the
/// participant and the key id, never the share.
pub struct KeyShareOf<C: Suite> {
    participant: ParticipantId,
    package: KeyPackage<C>,
    public_key: PublicKey,
}

impl<C: Suite> fmt::Debug for KeyShareOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("suite", &C::SUITE)
            .field("participant", &self.participant)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl<C: Suite> KeyShareOf<C> {
    pub(crate) fn new(
        participant: ParticipantId,
        package: KeyPackage<C>,
    ) -> Result<KeyShareOf<C>, ThresholdError> {
        if *package.identifier() != participant.identifier::<C>()? {
            return Err(ThresholdError::Protocol(format!(
                "key package does not belong to participant {participant}"
            )));
        }
        let public_key = C::public_key(package.verifying_key())?;
        Ok(KeyShareOf {
            participant,
            package,
            public_key,
        })
    }

    pub fn participant(&self) -> ParticipantId {
        self.participant
    }

    /// `t`: how many holders a signature needs.
    pub fn min_signers(&self) -> u16 {
        *self.package.min_signers()
    }

    /// The group key this share signs for.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Same as [`GroupKeyOf::key_id`].
    pub fn key_id(&self) -> String {
        self.public_key.key_id()
    }

    /// This share's verifying share (public), serialized; compare with
    /// [`GroupKeyOf::verifying_share`] to tell whether the share is the group's current one.
    pub fn verifying_share(&self) -> Result<Vec<u8>, ThresholdError> {
        Ok(self.package.verifying_share().serialize()?)
    }

    pub(crate) fn package(&self) -> &KeyPackage<C> {
        &self.package
    }

    /// Seals the share for storage: `tag ‖ nonce (12) ‖ AES-256-GCM(participant u16 BE ‖ FROST
    /// KeyPackage bytes) ‖ GCM tag`, with AAD = `"stella/threshold-share" ‖ tag ‖ aad`, where
    /// `tag` is the suite's [`SuiteId::tag`].
    ///
    /// `kek` is the node-local key-encryption key; `aad` should bind where the share belongs
    /// (e.g. node id and key id) so a sealed share cannot be swapped for another one.
    pub fn seal(&self, kek: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, ThresholdError> {
        let package = Zeroizing::new(
            self.package
                .serialize()
                .map_err(|e| ThresholdError::ShareSeal(e.to_string()))?,
        );
        let mut plaintext = Zeroizing::new(Vec::with_capacity(2 + package.len()));
        plaintext.extend_from_slice(&self.participant.0.to_be_bytes());
        plaintext.extend_from_slice(&package);
        let blob = seal::seal(kek, &share_aad(C::SUITE, aad), &plaintext)
            .map_err(ThresholdError::ShareSeal)?;
        let mut out = Vec::with_capacity(1 + blob.len());
        out.push(C::SUITE.tag());
        out.extend_from_slice(&blob);
        Ok(out)
    }

    /// Opens [`KeyShareOf::seal`] output. A wrong KEK, a wrong AAD, another suite's share or
    /// any flipped byte fails.
    pub fn open(
        sealed: &[u8],
        kek: &[u8; 32],
        aad: &[u8],
    ) -> Result<KeyShareOf<C>, ThresholdError> {
        let Some((&tag, blob)) = sealed.split_first() else {
            return Err(ThresholdError::ShareSeal("empty".into()));
        };
        if tag != C::SUITE.tag() {
            return Err(ThresholdError::ShareSeal(format!(
                "format tag {tag} is not a {} share",
                C::SUITE
            )));
        }
        let plaintext = seal::open(kek, &share_aad(C::SUITE, aad), blob).map_err(|_| {
            ThresholdError::ShareSeal("wrong key-encryption key, wrong AAD or tampered".into())
        })?;
        if plaintext.len() < 2 {
            return Err(ThresholdError::ShareSeal("truncated plaintext".into()));
        }
        let participant = ParticipantId(u16::from_be_bytes([plaintext[0], plaintext[1]]));
        let package = KeyPackage::<C>::deserialize(&plaintext[2..])
            .map_err(|e| ThresholdError::ShareSeal(format!("key package: {e}")))?;
        KeyShareOf::new(participant, package)
    }
}

fn share_aad(suite: SuiteId, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARE_AAD_LABEL.len() + 1 + aad.len());
    out.extend_from_slice(SHARE_AAD_LABEL);
    out.push(suite.tag());
    out.extend_from_slice(aad);
    out
}

/// The public side of a threshold key: FROST's `PublicKeyPackage` (group key and every
/// holder's verifying share) plus `t` and `n`. Safe to replicate and publish.
pub struct GroupKeyOf<C: Suite> {
    package: PublicKeyPackage<C>,
    params: ThresholdParams,
    /// The holders, by identifier (`1..=n` after a DKG; a subset after a refresh left some out).
    participants: Vec<ParticipantId>,
    public_key: PublicKey,
}

// Written out: a derive would demand `C: Clone + PartialEq`, which the suites' marker types
// need not be.
impl<C: Suite> Clone for GroupKeyOf<C> {
    fn clone(&self) -> Self {
        GroupKeyOf {
            package: self.package.clone(),
            params: self.params,
            participants: self.participants.clone(),
            public_key: self.public_key.clone(),
        }
    }
}

impl<C: Suite> PartialEq for GroupKeyOf<C> {
    fn eq(&self, other: &Self) -> bool {
        self.package == other.package
            && self.params == other.params
            && self.participants == other.participants
    }
}

impl<C: Suite> Eq for GroupKeyOf<C> {}

/// The participant ids (within `1..=MAX_PARTICIPANTS`) that have a verifying share.
fn holders_of<C: Suite>(
    package: &PublicKeyPackage<C>,
) -> Result<Vec<ParticipantId>, ThresholdError> {
    let shares = package.verifying_shares();
    let mut found = Vec::new();
    for p in (1..=super::MAX_PARTICIPANTS).map(ParticipantId) {
        if shares.contains_key(&p.identifier::<C>()?) {
            found.push(p);
        }
    }
    Ok(found)
}

impl<C: Suite> fmt::Debug for GroupKeyOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("suite", &C::SUITE)
            .field("key_id", &self.key_id())
            .field("min_signers", &self.params.min_signers())
            .field("max_signers", &self.params.max_signers())
            .finish()
    }
}

impl<C: Suite> GroupKeyOf<C> {
    pub(crate) fn new(
        package: PublicKeyPackage<C>,
        params: ThresholdParams,
    ) -> Result<GroupKeyOf<C>, ThresholdError> {
        if let Some(t) = package.min_signers()
            && t != params.min_signers()
        {
            return Err(ThresholdError::Malformed {
                what: "group key",
                reason: format!(
                    "threshold {t} in the key package, {} declared",
                    params.min_signers()
                ),
            });
        }
        let participants = holders_of(&package)?;
        if participants.len() != usize::from(params.max_signers())
            || participants.len() != package.verifying_shares().len()
        {
            return Err(ThresholdError::Malformed {
                what: "group key",
                reason: format!(
                    "{} verifying shares for {} participants",
                    package.verifying_shares().len(),
                    params.max_signers()
                ),
            });
        }
        let public_key = C::public_key(package.verifying_key())?;
        Ok(GroupKeyOf {
            package,
            params,
            participants,
            public_key,
        })
    }

    /// `tag ‖ t (u16 BE) ‖ n (u16 BE) ‖ FROST PublicKeyPackage bytes`, where `tag` is the
    /// suite's [`SuiteId::tag`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, ThresholdError> {
        let package = self.package.serialize()?;
        let mut out = Vec::with_capacity(5 + package.len());
        out.push(C::SUITE.tag());
        out.extend_from_slice(&self.params.min_signers().to_be_bytes());
        out.extend_from_slice(&self.params.max_signers().to_be_bytes());
        out.extend_from_slice(&package);
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<GroupKeyOf<C>, ThresholdError> {
        let malformed = |reason: String| ThresholdError::Malformed {
            what: "group key",
            reason,
        };
        if bytes.len() < 5 {
            return Err(malformed("truncated".into()));
        }
        if bytes[0] != C::SUITE.tag() {
            return Err(malformed(format!(
                "format tag {} is not a {} key",
                bytes[0],
                C::SUITE
            )));
        }
        let t = u16::from_be_bytes([bytes[1], bytes[2]]);
        let n = u16::from_be_bytes([bytes[3], bytes[4]]);
        let params = ThresholdParams::new(t, n)?;
        let package = PublicKeyPackage::<C>::deserialize(&bytes[5..])
            .map_err(|e| malformed(e.to_string()))?;
        GroupKeyOf::new(package, params)
    }

    /// The registry key id: `sha256:` and the hex SHA-256 of the group key's SubjectPublicKeyInfo,
    /// like every other key's.
    pub fn key_id(&self) -> String {
        self.public_key.key_id()
    }

    /// The group key as a [`PublicKey`]: an Ed25519 SPKI, or the secp256k1 SPKI of the BIP-340
    /// key (see [`Suite::public_key`]).
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    pub fn params(&self) -> ThresholdParams {
        self.params
    }

    pub fn min_signers(&self) -> u16 {
        self.params.min_signers()
    }

    pub fn max_signers(&self) -> u16 {
        self.params.max_signers()
    }

    /// Every holder of the group, by identifier.
    pub fn participants(&self) -> Vec<ParticipantId> {
        self.participants.clone()
    }

    /// Whether `holder` is one of the group's participants.
    pub(crate) fn check_holder(&self, holder: ParticipantId) -> Result<(), ThresholdError> {
        if self.participants.contains(&holder) {
            Ok(())
        } else {
            Err(ThresholdError::UnknownParticipant(holder))
        }
    }

    /// The verifying share (public) of `holder`, serialized: what a holder compares with its
    /// own share to tell whether it is current.
    pub fn verifying_share(&self, holder: ParticipantId) -> Option<Vec<u8>> {
        let id = holder.identifier::<C>().ok()?;
        self.package
            .verifying_shares()
            .get(&id)
            .and_then(|v| v.serialize().ok())
    }

    /// FROST's own verification of a 64-byte signature (the independent one is
    /// [`Suite::verify_independently`]).
    pub fn frost_verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(signature) = frost_core::Signature::<C>::deserialize(signature) else {
            return false;
        };
        self.package
            .verifying_key()
            .verify(message, &signature)
            .is_ok()
    }

    pub(crate) fn package(&self) -> &PublicKeyPackage<C> {
        &self.package
    }
}

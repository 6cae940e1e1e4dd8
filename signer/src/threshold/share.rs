//! The long-lived halves of a threshold key: one holder's secret [`KeyShare`] and the group's
//! public [`GroupKey`].

use std::fmt;

use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use zeroize::Zeroizing;

use super::seal;
use super::{ParticipantId, ThresholdError, ThresholdParams};
use crate::digest::sha256_hex;

const SHARE_VERSION: u8 = 1;
const SHARE_AAD_LABEL: &[u8] = b"stella/threshold-share";
const GROUP_VERSION: u8 = 1;

/// One holder's secret share of a threshold key (wraps FROST's `KeyPackage`).
///
/// Lives in memory; at rest it exists only as [`KeyShare::seal`] output. `Debug` prints the
/// participant and the key id, never the share.
pub struct KeyShare {
    participant: ParticipantId,
    package: KeyPackage,
    x_only: [u8; 32],
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("participant", &self.participant)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl KeyShare {
    pub(crate) fn new(
        participant: ParticipantId,
        package: KeyPackage,
    ) -> Result<KeyShare, ThresholdError> {
        if *package.identifier() != participant.identifier()? {
            return Err(ThresholdError::Protocol(format!(
                "key package does not belong to participant {participant}"
            )));
        }
        let x_only = x_only_of(package.verifying_key())?;
        Ok(KeyShare {
            participant,
            package,
            x_only,
        })
    }

    pub fn participant(&self) -> ParticipantId {
        self.participant
    }

    /// `t`: how many holders a signature needs.
    pub fn min_signers(&self) -> u16 {
        *self.package.min_signers()
    }

    /// The group's x-only key this share signs for.
    pub fn x_only(&self) -> [u8; 32] {
        self.x_only
    }

    /// Same as [`GroupKey::key_id`].
    pub fn key_id(&self) -> String {
        crate::PublicKey::from_bip340_x_only(&self.x_only())
            .map(|k| k.key_id())
            .unwrap_or_else(|_| format!("sha256:{}", sha256_hex(&self.x_only())))
    }

    /// This share's verifying share (public), serialized; compare with
    /// [`GroupKey::verifying_share`] to tell whether the share is the group's current one.
    pub fn verifying_share(&self) -> Result<Vec<u8>, ThresholdError> {
        Ok(self.package.verifying_share().serialize()?)
    }

    pub(crate) fn package(&self) -> &KeyPackage {
        &self.package
    }

    /// Seals the share for storage: `0x01 ‖ nonce (12) ‖ AES-256-GCM(participant u16 BE ‖ FROST
    /// KeyPackage bytes) ‖ tag`, with AAD = `"stella/threshold-share" ‖ 0x01 ‖ aad`.
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
        let blob =
            seal::seal(kek, &share_aad(aad), &plaintext).map_err(ThresholdError::ShareSeal)?;
        let mut out = Vec::with_capacity(1 + blob.len());
        out.push(SHARE_VERSION);
        out.extend_from_slice(&blob);
        Ok(out)
    }

    /// Opens [`KeyShare::seal`] output. A wrong KEK, a wrong AAD or any flipped byte fails.
    pub fn open(sealed: &[u8], kek: &[u8; 32], aad: &[u8]) -> Result<KeyShare, ThresholdError> {
        let Some((&version, blob)) = sealed.split_first() else {
            return Err(ThresholdError::ShareSeal("empty".into()));
        };
        if version != SHARE_VERSION {
            return Err(ThresholdError::ShareSeal(format!(
                "unknown format version {version}"
            )));
        }
        let plaintext = seal::open(kek, &share_aad(aad), blob).map_err(|_| {
            ThresholdError::ShareSeal("wrong key-encryption key, wrong AAD or tampered".into())
        })?;
        if plaintext.len() < 2 {
            return Err(ThresholdError::ShareSeal("truncated plaintext".into()));
        }
        let participant = ParticipantId(u16::from_be_bytes([plaintext[0], plaintext[1]]));
        let package = KeyPackage::deserialize(&plaintext[2..])
            .map_err(|e| ThresholdError::ShareSeal(format!("key package: {e}")))?;
        KeyShare::new(participant, package)
    }
}

fn share_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARE_AAD_LABEL.len() + 1 + aad.len());
    out.extend_from_slice(SHARE_AAD_LABEL);
    out.push(SHARE_VERSION);
    out.extend_from_slice(aad);
    out
}

/// The public side of a threshold key: FROST's `PublicKeyPackage` (group key and every
/// holder's verifying share) plus `t` and `n`. Safe to replicate and publish.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey {
    package: PublicKeyPackage,
    params: ThresholdParams,
    /// The holders, by identifier (`1..=n` after a DKG; a subset after a refresh left some out).
    participants: Vec<ParticipantId>,
    x_only: [u8; 32],
}

/// The participant ids (within `1..=MAX_PARTICIPANTS`) that have a verifying share.
fn holders_of(package: &PublicKeyPackage) -> Result<Vec<ParticipantId>, ThresholdError> {
    let shares = package.verifying_shares();
    let mut found = Vec::new();
    for p in (1..=super::MAX_PARTICIPANTS).map(ParticipantId) {
        if shares.contains_key(&p.identifier()?) {
            found.push(p);
        }
    }
    Ok(found)
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("key_id", &self.key_id())
            .field("min_signers", &self.params.min_signers())
            .field("max_signers", &self.params.max_signers())
            .finish()
    }
}

impl GroupKey {
    pub(crate) fn new(
        package: PublicKeyPackage,
        params: ThresholdParams,
    ) -> Result<GroupKey, ThresholdError> {
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
        let x_only = x_only_of(package.verifying_key())?;
        Ok(GroupKey {
            package,
            params,
            participants,
            x_only,
        })
    }

    /// `0x01 ‖ t (u16 BE) ‖ n (u16 BE) ‖ FROST PublicKeyPackage bytes`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ThresholdError> {
        let package = self.package.serialize()?;
        let mut out = Vec::with_capacity(5 + package.len());
        out.push(GROUP_VERSION);
        out.extend_from_slice(&self.params.min_signers().to_be_bytes());
        out.extend_from_slice(&self.params.max_signers().to_be_bytes());
        out.extend_from_slice(&package);
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<GroupKey, ThresholdError> {
        let malformed = |reason: String| ThresholdError::Malformed {
            what: "group key",
            reason,
        };
        if bytes.len() < 5 {
            return Err(malformed("truncated".into()));
        }
        if bytes[0] != GROUP_VERSION {
            return Err(malformed(format!("unknown format version {}", bytes[0])));
        }
        let t = u16::from_be_bytes([bytes[1], bytes[2]]);
        let n = u16::from_be_bytes([bytes[3], bytes[4]]);
        let params = ThresholdParams::new(t, n)?;
        let package =
            PublicKeyPackage::deserialize(&bytes[5..]).map_err(|e| malformed(e.to_string()))?;
        GroupKey::new(package, params)
    }

    /// The 32-byte BIP-340 (x-only) group key that signatures verify under.
    pub fn x_only(&self) -> [u8; 32] {
        self.x_only
    }

    /// The registry key id: `sha256:` and the hex SHA-256 of the group key's SubjectPublicKeyInfo
    /// ([`crate::PublicKey::from_bip340_x_only`]), like every other key's id.
    pub fn key_id(&self) -> String {
        self.public_key()
            .map(|k| k.key_id())
            .unwrap_or_else(|_| format!("sha256:{}", sha256_hex(&self.x_only)))
    }

    /// The group key as a [`crate::PublicKey`] (secp256k1 SPKI, verifies BIP-340 signatures).
    pub fn public_key(&self) -> Result<crate::PublicKey, crate::Error> {
        crate::PublicKey::from_bip340_x_only(&self.x_only)
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
        let id = holder.identifier().ok()?;
        self.package
            .verifying_shares()
            .get(&id)
            .and_then(|v| v.serialize().ok())
    }

    /// FROST's own verification of a 64-byte signature (the independent one is
    /// [`super::verify_bip340`]).
    pub fn frost_verify(&self, message: &[u8; 32], signature: &[u8; 64]) -> bool {
        let Ok(signature) = frost_secp256k1_tr::Signature::deserialize(signature) else {
            return false;
        };
        self.package
            .verifying_key()
            .verify(message, &signature)
            .is_ok()
    }

    pub(crate) fn package(&self) -> &PublicKeyPackage {
        &self.package
    }
}

/// The x coordinate of a FROST verifying key (SEC1 compressed encoding without its prefix).
fn x_only_of(key: &frost_secp256k1_tr::VerifyingKey) -> Result<[u8; 32], ThresholdError> {
    let sec1 = key.serialize()?;
    let Some(x) = sec1.get(1..33) else {
        return Err(ThresholdError::Malformed {
            what: "verifying key",
            reason: format!("{} bytes, expected 33", sec1.len()),
        });
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(x);
    Ok(out)
}

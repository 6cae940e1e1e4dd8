//! One threshold signature: the holder side ([`commit`], [`sign_share`]) and the coordinator
//! side ([`signing_package`], [`aggregate`]), all as bytes.
//!
//! Wire formats are FROST's own serializations: commitments = `SigningCommitments`, signing
//! package = `SigningPackage` (commitments of exactly the chosen holders + the 32-byte
//! message), signature share = `SignatureShare`.

use std::collections::BTreeMap;
use std::fmt;

use frost_core::CheaterDetection;
use frost_secp256k1_tr::round1::SigningCommitments;
use frost_secp256k1_tr::round2::SignatureShare;
use frost_secp256k1_tr::{Secp256K1Sha256TR, SigningPackage, round1, round2};
use rand::rngs::OsRng;

use super::{GroupKey, KeyShare, ParticipantId, ThresholdError, verify_bip340};

/// A holder's secret nonces for exactly one signature.
///
/// Not `Clone`, not serializable, never persisted: it lives in the holder's memory between
/// [`commit`] and [`sign_share`], which consumes it. FROST zeroizes the nonces on drop. A
/// holder that restarts between the two rounds simply cannot sign that session.
pub struct SigningNonces {
    participant: ParticipantId,
    x_only: [u8; 32],
    nonces: round1::SigningNonces,
    commitments: SigningCommitments,
}

impl fmt::Debug for SigningNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningNonces")
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl SigningNonces {
    pub fn participant(&self) -> ParticipantId {
        self.participant
    }
}

/// Holder, round 1: fresh nonces and the commitments to send to the coordinator.
pub fn commit(share: &KeyShare) -> Result<(SigningNonces, Vec<u8>), ThresholdError> {
    let (nonces, commitments) = round1::commit(share.package().signing_share(), &mut OsRng);
    let bytes = commitments.serialize()?;
    let nonces = SigningNonces {
        participant: share.participant(),
        x_only: share.x_only(),
        nonces,
        commitments,
    };
    Ok((nonces, bytes))
}

/// Holder, round 2: the signature share for `signing_package`, consuming the nonces.
///
/// Refuses a package that does not carry this holder's own commitment exactly as issued, a
/// message that is not 32 bytes, and nonces that were made for another share.
///
/// Single use is enforced by the compiler. This compiles:
/// ```no_run
/// # use stella_signer::threshold::*;
/// # fn f(share: &KeyShare, package: &[u8]) -> Result<(), ThresholdError> {
/// let (nonces, _commitments) = commit(share)?;
/// sign_share(share, nonces, package)?;
/// # Ok(()) }
/// ```
/// and signing twice with the same nonces does not:
/// ```compile_fail,E0382
/// # use stella_signer::threshold::*;
/// # fn f(share: &KeyShare, package: &[u8]) -> Result<(), ThresholdError> {
/// let (nonces, _commitments) = commit(share)?;
/// sign_share(share, nonces, package)?;
/// sign_share(share, nonces, package)?;
/// # Ok(()) }
/// ```
/// nor does keeping a copy of them:
/// ```compile_fail,E0599
/// # use stella_signer::threshold::*;
/// # fn f(share: &KeyShare) -> Result<(), ThresholdError> {
/// let (nonces, _commitments) = commit(share)?;
/// let _copy = nonces.clone();
/// # Ok(()) }
/// ```
pub fn sign_share(
    share: &KeyShare,
    nonces: SigningNonces,
    signing_package: &[u8],
) -> Result<Vec<u8>, ThresholdError> {
    let me = share.participant();
    if nonces.participant != me || nonces.x_only != share.x_only() {
        return Err(ThresholdError::Protocol(
            "nonces were committed for another share".into(),
        ));
    }
    let package =
        SigningPackage::deserialize(signing_package).map_err(|e| ThresholdError::Malformed {
            what: "signing package",
            reason: e.to_string(),
        })?;
    if package.message().len() != 32 {
        return Err(ThresholdError::Malformed {
            what: "signing package",
            reason: format!("message is {} bytes, expected 32", package.message().len()),
        });
    }
    match package.signing_commitment(&me.identifier()?) {
        None => {
            return Err(ThresholdError::CommitmentMismatch {
                participant: me,
                reason: "it does not contain our commitment",
            });
        }
        Some(c) if c != nonces.commitments => {
            return Err(ThresholdError::CommitmentMismatch {
                participant: me,
                reason: "it carries a commitment we did not issue for these nonces",
            });
        }
        Some(_) => {}
    }
    let signature_share = round2::sign(&package, &nonces.nonces, share.package())?;
    // `nonces` is dropped (and zeroized) here: it can never sign again.
    Ok(signature_share.serialize())
}

/// Holder: the 32-byte message a coordinator's signing package asks to sign (checked against
/// the admitted statement before a share is released).
pub fn signing_package_message(signing_package: &[u8]) -> Result<Vec<u8>, ThresholdError> {
    let package =
        SigningPackage::deserialize(signing_package).map_err(|e| ThresholdError::Malformed {
            what: "signing package",
            reason: e.to_string(),
        })?;
    Ok(package.message().to_vec())
}

/// Coordinator: the signing package for the chosen holders' commitments and the message.
pub fn signing_package(
    commitments: &BTreeMap<ParticipantId, Vec<u8>>,
    message: &[u8; 32],
) -> Result<Vec<u8>, ThresholdError> {
    let mut map = BTreeMap::new();
    for (&holder, bytes) in commitments {
        let c = SigningCommitments::deserialize(bytes).map_err(|e| ThresholdError::Transport {
            holder,
            reason: format!("malformed commitments: {e}"),
        })?;
        map.insert(holder.identifier()?, c);
    }
    Ok(SigningPackage::new(map, message).serialize()?)
}

/// Coordinator: checks every share (naming all cheaters), aggregates, and verifies the result
/// with [`verify_bip340`] before returning the 64-byte BIP-340 signature.
pub fn aggregate(
    group: &GroupKey,
    signing_package: &[u8],
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
) -> Result<[u8; 64], ThresholdError> {
    let package =
        SigningPackage::deserialize(signing_package).map_err(|e| ThresholdError::Malformed {
            what: "signing package",
            reason: e.to_string(),
        })?;
    let message: [u8; 32] =
        package
            .message()
            .as_slice()
            .try_into()
            .map_err(|_| ThresholdError::Malformed {
                what: "signing package",
                reason: "message is not 32 bytes".into(),
            })?;
    let mut map = BTreeMap::new();
    let mut malformed = Vec::new();
    for (&holder, bytes) in shares {
        group.check_holder(holder)?;
        match SignatureShare::deserialize(bytes) {
            Ok(s) => {
                map.insert(holder.identifier()?, s);
            }
            Err(_) => malformed.push(holder),
        }
    }
    if !malformed.is_empty() {
        return Err(ThresholdError::BadShare {
            culprits: malformed,
        });
    }
    let signature = frost_core::aggregate_custom::<Secp256K1Sha256TR>(
        &package,
        &map,
        group.package(),
        CheaterDetection::AllCheaters,
    )
    .map_err(|e| match e {
        frost_core::Error::InvalidSignatureShare { culprits } => ThresholdError::BadShare {
            culprits: culprits
                .iter()
                .filter_map(|id| ParticipantId::from_identifier(id, group.max_signers()))
                .collect(),
        },
        other => ThresholdError::Frost(other.to_string()),
    })?;
    let signature: [u8; 64] = signature
        .serialize()?
        .as_slice()
        .try_into()
        .map_err(|_| ThresholdError::InvalidSignature)?;
    if !verify_bip340(&group.x_only(), &message, &signature) {
        return Err(ThresholdError::InvalidSignature);
    }
    Ok(signature)
}

/// Commit, sign and aggregate with the first `t` of `shares`, entirely in memory.
///
/// This is the in-process baseline for goal G5: the same math as a cluster signature with no
/// transport, so a benchmark can report the distributed cost as a ratio against it.
pub fn in_process_sign(
    shares: &[KeyShare],
    group: &GroupKey,
    message: &[u8; 32],
) -> Result<[u8; 64], ThresholdError> {
    let need = usize::from(group.min_signers());
    let signers = shares.get(..need).ok_or(ThresholdError::Unavailable {
        have: shares.len(),
        need,
    })?;
    let mut nonces = Vec::with_capacity(need);
    let mut commitments = BTreeMap::new();
    for share in signers {
        let (n, c) = commit(share)?;
        nonces.push(n);
        commitments.insert(share.participant(), c);
    }
    let package = signing_package(&commitments, message)?;
    let mut signature_shares = BTreeMap::new();
    for (share, n) in signers.iter().zip(nonces) {
        signature_shares.insert(share.participant(), sign_share(share, n, &package)?);
    }
    aggregate(group, &package, &signature_shares)
}

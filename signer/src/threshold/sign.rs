//! One threshold signature: the holder side ([`commit`], [`sign_share`]) and the coordinator
//! side ([`signing_package`], [`aggregate`]), all as bytes.
//!
//! Wire formats are FROST's own serializations (which carry the ciphersuite): commitments =
//! `SigningCommitments`, signing package = `SigningPackage` (commitments of exactly the chosen
//! holders + the message of [`Suite::message`]), signature share = `SignatureShare`.

use std::collections::BTreeMap;
use std::fmt;

use frost_core::round1::SigningCommitments;
use frost_core::round2::SignatureShare;
use frost_core::{CheaterDetection, SigningPackage, round1, round2};
use rand::rngs::OsRng;

use super::suite::Suite;
use super::{GroupKeyOf, KeyShareOf, ParticipantId, ThresholdError};

/// A holder's secret nonces for exactly one signature.
///
/// Not `Clone`, not serializable, never persisted: it lives in the holder's memory between
/// [`commit`] and [`sign_share`], which consumes it. FROST zeroizes the nonces on drop. A
/// holder that restarts between the two rounds simply cannot sign that session.
pub struct SigningNoncesOf<C: Suite> {
    participant: ParticipantId,
    key_id: String,
    nonces: round1::SigningNonces<C>,
    commitments: SigningCommitments<C>,
}

impl<C: Suite> fmt::Debug for SigningNoncesOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningNonces")
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl<C: Suite> SigningNoncesOf<C> {
    pub fn participant(&self) -> ParticipantId {
        self.participant
    }
}

/// Holder, round 1: fresh nonces and the commitments to send to the coordinator.
pub fn commit<C: Suite>(
    share: &KeyShareOf<C>,
) -> Result<(SigningNoncesOf<C>, Vec<u8>), ThresholdError> {
    let (nonces, commitments) = round1::commit(share.package().signing_share(), &mut OsRng);
    let bytes = commitments.serialize()?;
    let nonces = SigningNoncesOf {
        participant: share.participant(),
        key_id: share.key_id(),
        nonces,
        commitments,
    };
    Ok((nonces, bytes))
}

/// Holder, round 2: the signature share for `signing_package`, consuming the nonces.
///
/// Refuses a package that does not carry this holder's own commitment exactly as issued, a
/// message of a shape the suite does not sign, and nonces that were made for another share.
///
/// Single use is enforced by the compiler; see [`super::sign_share`].
pub fn sign_share<C: Suite>(
    share: &KeyShareOf<C>,
    nonces: SigningNoncesOf<C>,
    signing_package: &[u8],
) -> Result<Vec<u8>, ThresholdError> {
    let me = share.participant();
    if nonces.participant != me || nonces.key_id != share.key_id() {
        return Err(ThresholdError::Protocol(
            "nonces were committed for another share".into(),
        ));
    }
    let package = parse_package::<C>(signing_package)?;
    if !C::message_ok(package.message()) {
        return Err(ThresholdError::Malformed {
            what: "signing package",
            reason: format!(
                "a {}-byte message is not what a {} key signs",
                package.message().len(),
                C::SUITE
            ),
        });
    }
    match package.signing_commitment(&me.identifier::<C>()?) {
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

/// Holder: the message a coordinator's signing package asks to sign (checked against the
/// admitted statement before a share is released).
pub fn signing_package_message<C: Suite>(
    signing_package: &[u8],
) -> Result<Vec<u8>, ThresholdError> {
    Ok(parse_package::<C>(signing_package)?.message().to_vec())
}

fn parse_package<C: Suite>(bytes: &[u8]) -> Result<SigningPackage<C>, ThresholdError> {
    SigningPackage::<C>::deserialize(bytes).map_err(|e| ThresholdError::Malformed {
        what: "signing package",
        reason: e.to_string(),
    })
}

/// Coordinator: the signing package for the chosen holders' commitments and the message.
pub fn signing_package<C: Suite>(
    commitments: &BTreeMap<ParticipantId, Vec<u8>>,
    message: &[u8],
) -> Result<Vec<u8>, ThresholdError> {
    let mut map = BTreeMap::new();
    for (&holder, bytes) in commitments {
        let c =
            SigningCommitments::<C>::deserialize(bytes).map_err(|e| ThresholdError::Transport {
                holder,
                reason: format!("malformed commitments: {e}"),
            })?;
        map.insert(holder.identifier::<C>()?, c);
    }
    Ok(SigningPackage::new(map, message).serialize()?)
}

/// Coordinator: checks every share (naming all cheaters), aggregates, and verifies the result
/// with the suite's independent verifier ([`Suite::verify_independently`]) before returning
/// the 64-byte signature.
pub fn aggregate<C: Suite>(
    group: &GroupKeyOf<C>,
    signing_package: &[u8],
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
) -> Result<[u8; 64], ThresholdError> {
    let package = parse_package::<C>(signing_package)?;
    let mut map = BTreeMap::new();
    let mut malformed = Vec::new();
    for (&holder, bytes) in shares {
        group.check_holder(holder)?;
        match SignatureShare::<C>::deserialize(bytes) {
            Ok(s) => {
                map.insert(holder.identifier::<C>()?, s);
            }
            Err(_) => malformed.push(holder),
        }
    }
    if !malformed.is_empty() {
        return Err(ThresholdError::BadShare {
            culprits: malformed,
        });
    }
    let signature = frost_core::aggregate_custom::<C>(
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
    if !C::verify_independently(group.public_key(), package.message(), &signature) {
        return Err(ThresholdError::InvalidSignature);
    }
    Ok(signature)
}

/// Commit, sign and aggregate with the first `t` of `shares`, entirely in memory.
///
/// This is the in-process baseline for goal G5: the same math as a cluster signature with no
/// transport, so a benchmark can report the distributed cost as a ratio against it.
pub fn in_process_sign<C: Suite>(
    shares: &[&KeyShareOf<C>],
    group: &GroupKeyOf<C>,
    message: &[u8],
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
    let package = signing_package::<C>(&commitments, message)?;
    let mut signature_shares = BTreeMap::new();
    for (share, n) in signers.iter().zip(nonces) {
        signature_shares.insert(share.participant(), sign_share(share, n, &package)?);
    }
    aggregate(group, &package, &signature_shares)
}

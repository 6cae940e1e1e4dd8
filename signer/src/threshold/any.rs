//! The suite-tagged face of the threshold code: each type holds the generic value of the
//! suite its bytes name, and each call dispatches to the one generic implementation. Mixing
//! suites (an Ed25519 share with secp256k1 nonces, a signing package of the other suite) is a
//! [`ThresholdError::SuiteMismatch`] or a parse error, never a silent conversion.

use std::collections::BTreeMap;

use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;

use super::coordinator::{ShareTransport, ThresholdSignature};
use super::dkg::DkgParticipantOf;
use super::share::{GroupKeyOf, KeyShareOf};
use super::sign::SigningNoncesOf;
use super::suite::SuiteId;
use super::{ParticipantId, ThresholdError, ThresholdParams, generic};
use crate::PublicKey;

/// Declares an enum with one variant per suite, holding `$generic<Suite>`.
macro_rules! per_suite {
    ($(#[$meta:meta])* $name:ident wraps $generic:ident) => {
        $(#[$meta])*
        pub enum $name {
            Ed25519($generic<Ed25519Sha512>),
            Secp256k1Tr($generic<Secp256K1Sha256TR>),
        }

        impl $name {
            pub fn suite(&self) -> SuiteId {
                match self {
                    $name::Ed25519(_) => SuiteId::Ed25519,
                    $name::Secp256k1Tr(_) => SuiteId::Secp256k1Tr,
                }
            }
        }
    };
}

/// `each!(value, inner => expression)`: the expression for whichever suite `value` holds.
macro_rules! each {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            Self::Ed25519($inner) => $body,
            Self::Secp256k1Tr($inner) => $body,
        }
    };
}

/// `pair!(A::X(a), B::Y(b) => expression)`: the expression when both hold the same suite.
macro_rules! pair {
    ($left:expr, $right:expr, $a:ident, $b:ident => $body:expr) => {
        match ($left, $right) {
            (KeyShare::Ed25519($a), SigningNonces::Ed25519($b)) => $body,
            (KeyShare::Secp256k1Tr($a), SigningNonces::Secp256k1Tr($b)) => $body,
            (share, nonces) => Err(ThresholdError::SuiteMismatch(share.suite(), nonces.suite())),
        }
    };
}

per_suite!(
    /// The public side of a threshold key, of either suite (see [`GroupKeyOf`]).
    #[derive(Clone, PartialEq, Eq, Debug)]
    GroupKey wraps GroupKeyOf
);
per_suite!(
    /// One holder's secret share, of either suite (see [`KeyShareOf`]).
    #[derive(Debug)]
    KeyShare wraps KeyShareOf
);
per_suite!(
    /// A holder's nonces for one signature (see [`SigningNoncesOf`]): neither `Clone` nor
    /// serializable, consumed by [`sign_share`].
    #[derive(Debug)]
    SigningNonces wraps SigningNoncesOf
);
per_suite!(
    /// One participant's side of a DKG or refresh run (see [`DkgParticipantOf`]).
    #[derive(Debug)]
    DkgParticipant wraps DkgParticipantOf
);

fn unknown_tag(what: &'static str, tag: Option<&u8>) -> ThresholdError {
    ThresholdError::Malformed {
        what,
        reason: match tag {
            Some(tag) => format!("unknown suite tag {tag}"),
            None => "empty".into(),
        },
    }
}

impl GroupKey {
    /// Parses group-key bytes of whichever suite their first byte names.
    pub fn from_bytes(bytes: &[u8]) -> Result<GroupKey, ThresholdError> {
        match bytes.first().copied().and_then(SuiteId::from_tag) {
            Some(SuiteId::Ed25519) => Ok(GroupKey::Ed25519(GroupKeyOf::from_bytes(bytes)?)),
            Some(SuiteId::Secp256k1Tr) => Ok(GroupKey::Secp256k1Tr(GroupKeyOf::from_bytes(bytes)?)),
            None => Err(unknown_tag("group key", bytes.first())),
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ThresholdError> {
        each!(self, g => g.to_bytes())
    }

    pub fn key_id(&self) -> String {
        each!(self, g => g.key_id())
    }

    pub fn public_key(&self) -> &PublicKey {
        each!(self, g => g.public_key())
    }

    pub fn params(&self) -> ThresholdParams {
        each!(self, g => g.params())
    }

    pub fn min_signers(&self) -> u16 {
        each!(self, g => g.min_signers())
    }

    pub fn max_signers(&self) -> u16 {
        each!(self, g => g.max_signers())
    }

    pub fn participants(&self) -> Vec<ParticipantId> {
        each!(self, g => g.participants())
    }

    pub fn verifying_share(&self, holder: ParticipantId) -> Option<Vec<u8>> {
        each!(self, g => g.verifying_share(holder))
    }

    /// FROST's own verification of a signature over `message` (as the suite signs it).
    pub fn frost_verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        each!(self, g => g.frost_verify(message, signature))
    }
}

impl KeyShare {
    /// Opens a sealed share of whichever suite its first byte names.
    pub fn open(sealed: &[u8], kek: &[u8; 32], aad: &[u8]) -> Result<KeyShare, ThresholdError> {
        match sealed.first().copied().and_then(SuiteId::from_tag) {
            Some(SuiteId::Ed25519) => Ok(KeyShare::Ed25519(KeyShareOf::open(sealed, kek, aad)?)),
            Some(SuiteId::Secp256k1Tr) => {
                Ok(KeyShare::Secp256k1Tr(KeyShareOf::open(sealed, kek, aad)?))
            }
            None => Err(ThresholdError::ShareSeal(match sealed.first() {
                Some(tag) => format!("unknown suite tag {tag}"),
                None => "empty".into(),
            })),
        }
    }

    pub fn seal(&self, kek: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, ThresholdError> {
        each!(self, s => s.seal(kek, aad))
    }

    pub fn participant(&self) -> ParticipantId {
        each!(self, s => s.participant())
    }

    pub fn min_signers(&self) -> u16 {
        each!(self, s => s.min_signers())
    }

    pub fn public_key(&self) -> &PublicKey {
        each!(self, s => s.public_key())
    }

    pub fn key_id(&self) -> String {
        each!(self, s => s.key_id())
    }

    pub fn verifying_share(&self) -> Result<Vec<u8>, ThresholdError> {
        each!(self, s => s.verifying_share())
    }
}

impl SigningNonces {
    pub fn participant(&self) -> ParticipantId {
        each!(self, n => n.participant())
    }
}

impl DkgParticipant {
    /// Round 1 of a new key of `suite` (see [`DkgParticipantOf::start`]).
    pub fn start(
        suite: SuiteId,
        session: &[u8],
        me: ParticipantId,
        params: ThresholdParams,
    ) -> Result<(DkgParticipant, Vec<u8>), ThresholdError> {
        Ok(match suite {
            SuiteId::Ed25519 => {
                let (p, m) = DkgParticipantOf::start(session, me, params)?;
                (DkgParticipant::Ed25519(p), m)
            }
            SuiteId::Secp256k1Tr => {
                let (p, m) = DkgParticipantOf::start(session, me, params)?;
                (DkgParticipant::Secp256k1Tr(p), m)
            }
        })
    }

    /// Round 1 of a refresh (see [`DkgParticipantOf::start_refresh`]); share and group must be
    /// of one suite.
    pub fn start_refresh(
        session: &[u8],
        old_share: &KeyShare,
        old_group: &GroupKey,
        participants: Vec<ParticipantId>,
    ) -> Result<(DkgParticipant, Vec<u8>), ThresholdError> {
        Ok(match (old_share, old_group) {
            (KeyShare::Ed25519(s), GroupKey::Ed25519(g)) => {
                let (p, m) = DkgParticipantOf::start_refresh(session, s, g, participants)?;
                (DkgParticipant::Ed25519(p), m)
            }
            (KeyShare::Secp256k1Tr(s), GroupKey::Secp256k1Tr(g)) => {
                let (p, m) = DkgParticipantOf::start_refresh(session, s, g, participants)?;
                (DkgParticipant::Secp256k1Tr(p), m)
            }
            (s, g) => return Err(ThresholdError::SuiteMismatch(s.suite(), g.suite())),
        })
    }

    pub fn participant(&self) -> ParticipantId {
        each!(self, p => p.participant())
    }

    pub fn round2(
        &mut self,
        round1: &BTreeMap<ParticipantId, Vec<u8>>,
    ) -> Result<BTreeMap<ParticipantId, Vec<u8>>, ThresholdError> {
        each!(self, p => p.round2(round1))
    }

    pub fn finish(
        self,
        round2_for_me: &BTreeMap<ParticipantId, Vec<u8>>,
    ) -> Result<(KeyShare, GroupKey), ThresholdError> {
        match self {
            DkgParticipant::Ed25519(p) => {
                let (s, g) = p.finish(round2_for_me)?;
                Ok((KeyShare::Ed25519(s), GroupKey::Ed25519(g)))
            }
            DkgParticipant::Secp256k1Tr(p) => {
                let (s, g) = p.finish(round2_for_me)?;
                Ok((KeyShare::Secp256k1Tr(s), GroupKey::Secp256k1Tr(g)))
            }
        }
    }

    pub fn transcript_hash(&self) -> Option<[u8; 32]> {
        each!(self, p => p.transcript_hash())
    }
}

/// Holder, round 1: fresh nonces and the commitments to send to the coordinator.
pub fn commit(share: &KeyShare) -> Result<(SigningNonces, Vec<u8>), ThresholdError> {
    Ok(match share {
        KeyShare::Ed25519(s) => {
            let (n, c) = generic::commit(s)?;
            (SigningNonces::Ed25519(n), c)
        }
        KeyShare::Secp256k1Tr(s) => {
            let (n, c) = generic::commit(s)?;
            (SigningNonces::Secp256k1Tr(n), c)
        }
    })
}

/// Holder, round 2: the signature share for `signing_package`, consuming the nonces (see
/// [`generic::sign_share`] for what is refused).
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
    pair!(share, nonces, s, n => generic::sign_share(s, n, signing_package))
}

/// Holder: the suite and message of a coordinator's signing package (FROST's serialization
/// names its ciphersuite, so only one suite parses it).
pub fn signing_package_message(
    signing_package: &[u8],
) -> Result<(SuiteId, Vec<u8>), ThresholdError> {
    if let Ok(message) = generic::signing_package_message::<Ed25519Sha512>(signing_package) {
        return Ok((SuiteId::Ed25519, message));
    }
    generic::signing_package_message::<Secp256K1Sha256TR>(signing_package)
        .map(|message| (SuiteId::Secp256k1Tr, message))
}

/// Signs `pae` (the DSSE PAE; the suite decides what exactly is signed, see
/// [`SuiteId::message`]) with `t` of the `available` holders (see [`generic::threshold_sign`]).
pub async fn threshold_sign<T: ShareTransport>(
    transport: &T,
    group: &GroupKey,
    available: &[ParticipantId],
    pae: &[u8],
) -> Result<ThresholdSignature, ThresholdError> {
    let message = group.suite().message(pae);
    match group {
        GroupKey::Ed25519(g) => generic::threshold_sign(transport, g, available, &message).await,
        GroupKey::Secp256k1Tr(g) => {
            generic::threshold_sign(transport, g, available, &message).await
        }
    }
}

/// A whole DKG in one process (see [`generic::dkg_in_process`]).
pub fn dkg_in_process(
    suite: SuiteId,
    session: &[u8],
    params: ThresholdParams,
) -> Result<(Vec<KeyShare>, GroupKey), ThresholdError> {
    Ok(match suite {
        SuiteId::Ed25519 => {
            let (shares, group) = generic::dkg_in_process(session, params)?;
            (
                shares.into_iter().map(KeyShare::Ed25519).collect(),
                GroupKey::Ed25519(group),
            )
        }
        SuiteId::Secp256k1Tr => {
            let (shares, group) = generic::dkg_in_process(session, params)?;
            (
                shares.into_iter().map(KeyShare::Secp256k1Tr).collect(),
                GroupKey::Secp256k1Tr(group),
            )
        }
    })
}

/// Commit, sign and aggregate over `pae` with the first `t` of `shares`, in memory (the
/// in-process baseline of the G5 benchmark). Shares of another suite than `group`'s are refused.
pub fn in_process_sign(
    shares: &[KeyShare],
    group: &GroupKey,
    pae: &[u8],
) -> Result<[u8; 64], ThresholdError> {
    let message = group.suite().message(pae);
    let mismatch = |s: &KeyShare| ThresholdError::SuiteMismatch(s.suite(), group.suite());
    match group {
        GroupKey::Ed25519(g) => {
            let typed = shares
                .iter()
                .map(|s| match s {
                    KeyShare::Ed25519(s) => Ok(s),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            generic::in_process_sign(&typed, g, &message)
        }
        GroupKey::Secp256k1Tr(g) => {
            let typed = shares
                .iter()
                .map(|s| match s {
                    KeyShare::Secp256k1Tr(s) => Ok(s),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            generic::in_process_sign(&typed, g, &message)
        }
    }
}

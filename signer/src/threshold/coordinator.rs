//! The generic signing coordinator: picks `t` holders, runs both FROST rounds through a
//! [`ShareTransport`] the node implements, and retries once around holders that fail or cheat.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;

use frost_core::round1::SigningCommitments;
use futures_util::future::join_all;
use rand::RngCore;
use rand::rngs::OsRng;

use super::sign::{aggregate, signing_package};
use super::suite::Suite;
use super::{GroupKeyOf, ParticipantId, ThresholdError};

/// How many signing attempts [`threshold_sign`] makes: the first, and one retry with the
/// holders that failed or cheated left out.
const MAX_ATTEMPTS: usize = 2;

/// How the coordinator reaches share holders. The node implements it over its peer transport;
/// the holder side answers with [`super::commit`] and [`super::sign_share`].
///
/// - `commit(holder, key_id, session)`: the holder makes fresh nonces, keeps them in memory
///   under `(key_id, session)` and returns its commitment bytes.
/// - `sign(holder, key_id, session, package)`: the holder takes (removes) the nonces of that
///   session and returns its signature-share bytes. A session's nonces are used at most once;
///   an unknown session is an error.
///
/// Implementations bound the time of every call themselves (the coordinator has no timer):
/// a holder that does not answer must turn into an `Err`, not a pending future. A coordinator
/// may abandon a session after `commit` (too few holders, a retry), so holders drop the nonces
/// of sessions that are not signed within a short time.
pub trait ShareTransport {
    fn commit(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, ThresholdError>> + Send;

    fn sign(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
        signing_package: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, ThresholdError>> + Send;
}

/// Why a holder was left out of a signature; reported so the node can audit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusionReason {
    /// The transport failed for this holder (commit or sign round); the message says how.
    Unreachable(String),
    /// It answered with bytes that are not FROST signing commitments.
    MalformedCommitments(String),
    /// Its signature share did not verify against its verifying share (or did not parse).
    BadShare,
}

/// A verified threshold signature and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdSignature {
    /// The 64-byte signature over the message, valid under the group key (Ed25519, or BIP-340
    /// under the x-only key).
    pub signature: [u8; 64],
    /// The `t` holders whose shares make up `signature`.
    pub signers: Vec<ParticipantId>,
    /// Holders that were tried and left out, in the order it happened.
    pub excluded: Vec<(ParticipantId, ExclusionReason)>,
}

/// Signs `message` with `t` of the `available` holders.
///
/// Commits with `t` holders concurrently; a holder that fails to commit is replaced by the
/// next available one. Fewer than `t` reachable → [`ThresholdError::Unavailable`]. A sign
/// round with invalid shares is retried once, with fresh nonces and a fresh session id,
/// without the culprits; if too few holders remain, [`ThresholdError::BadShare`] names them.
/// Every returned signature has been checked with the suite's independent verifier.
pub async fn threshold_sign<C: Suite, T: ShareTransport>(
    transport: &T,
    group: &GroupKeyOf<C>,
    available: &[ParticipantId],
    message: &[u8],
) -> Result<ThresholdSignature, ThresholdError> {
    let need = usize::from(group.min_signers());
    let key_id = group.key_id();
    let mut pool: Vec<ParticipantId> = Vec::new();
    for &holder in available {
        group.check_holder(holder)?;
        if !pool.contains(&holder) {
            pool.push(holder);
        }
    }
    let mut excluded: Vec<(ParticipantId, ExclusionReason)> = Vec::new();
    let mut culprits: Vec<ParticipantId> = Vec::new();
    let mut last_failure: Option<ThresholdError> = None;
    let shortfall = |have: usize, culprits: &[ParticipantId]| {
        if culprits.is_empty() {
            ThresholdError::Unavailable { have, need }
        } else {
            ThresholdError::BadShare {
                culprits: culprits.to_vec(),
            }
        }
    };

    for _ in 0..MAX_ATTEMPTS {
        let mut queue: VecDeque<ParticipantId> = pool
            .iter()
            .filter(|p| !excluded.iter().any(|(e, _)| e == *p))
            .copied()
            .collect();
        if queue.len() < need {
            // Holders that refused to sign say why better than a count does.
            return Err(match last_failure.take() {
                Some(refusal) if culprits.is_empty() => refusal,
                _ => shortfall(queue.len(), &culprits),
            });
        }
        let session = fresh_session();

        // Round 1: commitments from exactly `t` holders, replacing those that fail.
        let mut commitments: BTreeMap<ParticipantId, Vec<u8>> = BTreeMap::new();
        while commitments.len() < need && queue.len() >= need - commitments.len() {
            let batch: Vec<ParticipantId> = queue.drain(..need - commitments.len()).collect();
            let results = join_all(
                batch
                    .iter()
                    .map(|&h| transport.commit(h, &key_id, &session)),
            )
            .await;
            for (holder, result) in batch.into_iter().zip(results) {
                match result.map(|c| (SigningCommitments::<C>::deserialize(&c), c)) {
                    Ok((Ok(_), c)) => {
                        commitments.insert(holder, c);
                    }
                    Ok((Err(e), _)) => excluded
                        .push((holder, ExclusionReason::MalformedCommitments(e.to_string()))),
                    Err(e) => excluded.push((holder, ExclusionReason::Unreachable(e.to_string()))),
                }
            }
        }
        if commitments.len() < need {
            return Err(shortfall(commitments.len() + queue.len(), &culprits));
        }

        // Round 2: signature shares from the same holders, then aggregation.
        let package = signing_package::<C>(&commitments, message)?;
        let holders: Vec<ParticipantId> = commitments.keys().copied().collect();
        let results = join_all(
            holders
                .iter()
                .map(|&h| transport.sign(h, &key_id, &session, &package)),
        )
        .await;
        let mut shares = BTreeMap::new();
        let mut failed = false;
        for (holder, result) in holders.iter().copied().zip(results) {
            match result {
                Ok(s) => {
                    shares.insert(holder, s);
                }
                Err(e) => {
                    failed = true;
                    excluded.push((holder, ExclusionReason::Unreachable(e.to_string())));
                    last_failure = Some(ThresholdError::Transport {
                        holder,
                        reason: e.to_string(),
                    });
                }
            }
        }
        if failed {
            continue;
        }
        match aggregate(group, &package, &shares) {
            Ok(signature) => {
                return Ok(ThresholdSignature {
                    signature,
                    signers: holders,
                    excluded,
                });
            }
            Err(ThresholdError::BadShare { culprits: found }) => {
                for c in found {
                    excluded.push((c, ExclusionReason::BadShare));
                    culprits.push(c);
                }
            }
            Err(other) => return Err(other),
        }
    }
    if !culprits.is_empty() {
        return Err(ThresholdError::BadShare { culprits });
    }
    let remaining = pool
        .iter()
        .filter(|p| !excluded.iter().any(|(e, _)| e == *p))
        .count();
    Err(last_failure.unwrap_or(ThresholdError::Unavailable {
        have: remaining,
        need,
    }))
}

/// A fresh 128-bit session id per attempt, so that no holder is ever asked to sign twice
/// with the same nonces.
fn fresh_session() -> Vec<u8> {
    let mut session = vec![0u8; 16];
    OsRng.fill_bytes(&mut session);
    session
}

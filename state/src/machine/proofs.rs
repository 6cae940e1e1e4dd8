//! The one-time identities the cluster has seen (DPoP proofs, idempotency keys) and what each
//! is bound to, kept apart from the state's encoding (storage mirrors [`ProofChange`]s).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{Outcome, ProofClaim};

/// A change to the proof set, for storage to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofChange {
    Claimed { key: String, claim: Claim },
    Forgotten { key: String },
}

/// One identity the cluster has seen within its window: a one-time DPoP proof or an
/// idempotency key (format v5; a format-v2–v4 proof is a bare `Used` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub expires_at_ms: u64,
    /// What the identity is bound to; `None` for a proof claimed without one (`Admit`).
    pub binding: Option<String>,
    pub status: ClaimStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimStatus {
    /// Claimed by an `Admit` (no outcome kept: any second use is a replay).
    Used,
    /// An attempt holds it: the leader term that admitted it and its reservation.
    Pending { term: u64, reservation_id: String },
    /// The last attempt failed without an outcome: the next one takes it.
    Open,
    /// Decided: every later ask gets this.
    Done(Outcome),
}

impl Claim {
    pub(crate) fn used(expires_at_ms: u64) -> Claim {
        Claim {
            expires_at_ms,
            binding: None,
            status: ClaimStatus::Used,
        }
    }
}

/// Seen one-time proofs and idempotency keys by key, with an expiry index so pruning is
/// proportional to what expires.
#[derive(Debug, Clone, Default)]
pub struct ProofSet {
    by_key: BTreeMap<String, Claim>,
    by_expiry: std::collections::BTreeSet<(u64, String)>,
    /// Changes since storage last took them (not part of the set's value).
    changes: Vec<ProofChange>,
}

impl PartialEq for ProofSet {
    fn eq(&self, other: &ProofSet) -> bool {
        self.by_key == other.by_key
    }
}

impl Eq for ProofSet {}

/// Bare proofs with the end of their window (formats 2–4).
impl FromIterator<(String, u64)> for ProofSet {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(entries: I) -> ProofSet {
        entries
            .into_iter()
            .map(|(k, e)| (k, Claim::used(e)))
            .collect()
    }
}

impl FromIterator<(String, Claim)> for ProofSet {
    fn from_iter<I: IntoIterator<Item = (String, Claim)>>(entries: I) -> ProofSet {
        let by_key: BTreeMap<String, Claim> = entries.into_iter().collect();
        let by_expiry = by_key
            .iter()
            .map(|(k, c)| (c.expires_at_ms, k.clone()))
            .collect();
        ProofSet {
            by_key,
            by_expiry,
            changes: Vec::new(),
        }
    }
}

impl ProofSet {
    /// Every held claim.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &Claim)> {
        self.by_key.iter().map(|(k, c)| (k.as_str(), c))
    }

    /// Whether the cluster has claimed proof `key` (and it is still within its window).
    pub fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Claim> {
        self.by_key.get(key)
    }

    /// Changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<ProofChange> {
        std::mem::take(&mut self.changes)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Forgets claims whose window ended at or before `now_ms`.
    pub(super) fn prune(&mut self, now_ms: u64) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now_ms {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.by_key.remove(&key);
                self.changes.push(ProofChange::Forgotten { key });
            }
        }
    }

    /// Records a proof; `false` if it is already recorded (a replay).
    pub(super) fn claim(&mut self, claim: &ProofClaim, now_ms: u64) -> bool {
        self.prune(now_ms);
        if self.by_key.contains_key(&claim.key) {
            return false;
        }
        self.put(claim.key.clone(), Claim::used(claim.expires_at_ms));
        true
    }

    /// Inserts or replaces the claim of `key` (its window never changes once claimed).
    pub(super) fn put(&mut self, key: String, claim: Claim) {
        if let Some(old) = self.by_key.get(&key) {
            self.by_expiry.remove(&(old.expires_at_ms, key.clone()));
        }
        self.by_expiry.insert((claim.expires_at_ms, key.clone()));
        self.changes.push(ProofChange::Claimed {
            key: key.clone(),
            claim: claim.clone(),
        });
        self.by_key.insert(key, claim);
    }

    /// Sets the status of a held claim.
    pub(super) fn set_status(&mut self, key: &str, status: ClaimStatus) {
        if let Some(mut claim) = self.by_key.get(key).cloned() {
            claim.status = status;
            self.put(key.to_owned(), claim);
        }
    }
}

//! Threshold keys across the cluster: FROST (BIP-340) shares held by different nodes.
//!
//! - [`shard`]: each node's key-shard actor (its shares, sealed at rest; DKG state and signing
//!   nonces in memory only).
//! - [`Holders`]: reaches a holder's shard — the local actor directly, other nodes over the peer
//!   listener (mutual TLS). It implements the signing core's [`ShareTransport`].
//! - [`generate`]: the leader's distributed key generation. Round-1 messages are fetched by
//!   every participant **directly from each other holder** (addresses from its own view of the
//!   membership), not relayed by the leader: a leader that swapped the participants' ephemeral
//!   keys could otherwise read the round-2 packages it relays. Round-2 packages go through the
//!   leader sealed for their recipient.
//! - [`ThresholdKeySigner`]: a [`KeySigner`] whose `sign` runs the two FROST rounds with `t`
//!   holders (the leader's coordinator), verifies the aggregate and reports left-out holders.
//!
//! Shares never enter Raft; the registry holds the group key and who holds which share
//! (`stella_state::command::ThresholdGroup`).

mod dkg;
pub mod gate;
mod holders;
pub mod shard;
mod signer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stella_cluster::ClusterHandle;
use stella_signer::KeySigner;
use stella_signer::threshold::SuiteId;
use stella_state::command::ThresholdGroup;

pub use dkg::{generate, refresh};
pub use holders::{Directory, GroupKeys, Holders};
pub use shard::{Shard, ShardConfig, share_key};
pub use signer::ThresholdKeySigner;

pub const PEER_DKG_START: &str = "/peer/v1/threshold/dkg/start";
pub const PEER_DKG_ROUND1: &str = "/peer/v1/threshold/dkg/round1";
pub const PEER_DKG_ROUND2: &str = "/peer/v1/threshold/dkg/round2";
pub const PEER_DKG_FINISH: &str = "/peer/v1/threshold/dkg/finish";
pub const PEER_COMMIT: &str = "/peer/v1/threshold/commit";
pub const PEER_SIGN_SHARE: &str = "/peer/v1/threshold/sign";

/// Each signing round trip to a holder is bounded: a holder that does not answer is replaced
/// (or the signature fails fast), it never holds the request.
const SIGN_CALL_TIMEOUT: Duration = Duration::from_secs(2);
const DKG_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgStart {
    pub session: Vec<u8>,
    /// The suite of a new key (a refresh keeps its key's). Absent from a peer that predates
    /// the suites: that peer only makes secp256k1 keys.
    #[serde(default = "legacy_suite")]
    pub suite: SuiteId,
    pub me: u16,
    pub min_signers: u16,
    pub max_signers: u16,
    /// A refresh of this key (the holder takes the group from its own registry) among
    /// `participants`, instead of a new key.
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub participants: Vec<u16>,
}

fn legacy_suite() -> SuiteId {
    SuiteId::Secp256k1Tr
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgSession {
    pub session: Vec<u8>,
}

/// Round 2: the participant fetches every holder's round-1 message itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound2 {
    pub session: Vec<u8>,
    /// `(participant, node id)` of every holder.
    pub holders: Vec<(u16, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgFinish {
    pub session: Vec<u8>,
    pub sealed_for_me: BTreeMap<u16, Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub key_id: String,
    pub session: Vec<u8>,
    /// The reservation id of the Raft-committed admission this signature is for.
    #[serde(default)]
    pub admission: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignShareRequest {
    pub key_id: String,
    pub session: Vec<u8>,
    pub signing_package: Vec<u8>,
    /// The reservation id of the Raft-committed admission this signature is for.
    #[serde(default)]
    pub admission: String,
    /// The PAE the coordinator says the message is of (the holder checks it against the
    /// admitted statement and the signing package).
    #[serde(default)]
    pub pae: Vec<u8>,
}

/// What a peer answers: the value, or why not.
pub type PeerAnswer<T> = Result<T, String>;

/// How often a node looks for shares of revoked keys to destroy.
pub const SHARE_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Destroys, every [`SHARE_SWEEP_INTERVAL`], this node's shares of keys its own applied
/// registry says are revoked, or that a refresh left this node out of: a revoked threshold key is gone from every live holder within
/// seconds, and from a holder that was down once it has caught up. (Retired keys keep their
/// shares: retirement is not compromise.)
pub fn spawn_share_sweeper(shard: Shard, shares_dir: std::path::PathBuf, cluster: ClusterHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SHARE_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let me = cluster.node_id();
            let revoked: Vec<String> = Shard::held_keys(&shares_dir)
                .into_iter()
                .filter(|key_id| {
                    cluster.view().with_state(|s| {
                        let revoked = s
                            .keys
                            .get(key_id)
                            .is_some_and(|k| k.state == stella_state::command::KeyState::Revoked);
                        // Left out by a refresh: this node's share no longer combines.
                        let dropped = s
                            .threshold_groups
                            .get(key_id)
                            .is_some_and(|g| !g.holders.iter().any(|(_, node)| *node == me));
                        revoked || dropped
                    })
                })
                .collect();
            for key_id in revoked {
                match shard.destroy(key_id.clone()).await {
                    Ok(true) => {
                        tracing::info!(key_id = %key_id, "destroyed this node's share of a revoked or refreshed-away threshold key")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(key_id = %key_id, error = %e, "could not destroy a revoked key's share")
                    }
                }
            }
        }
    });
}

/// Builds threshold signers for registry entries (the keyring keeps one per key).
#[derive(Clone)]
pub struct ThresholdBackend {
    pub holders: Holders,
    /// Chaos drills only (`[threshold] drill_tamper_as_coordinator`).
    pub tamper: bool,
}

impl ThresholdBackend {
    /// A signer of `group`'s key for one admitted request.
    pub fn signer(
        &self,
        group: &ThresholdGroup,
        admission: &str,
    ) -> Result<Arc<dyn KeySigner>, String> {
        Ok(Arc::new(ThresholdKeySigner::new(
            self.holders.clone(),
            group,
            admission,
            self.tamper,
        )?))
    }
}

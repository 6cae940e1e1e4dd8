//! Reaching the holders of threshold shares: this node's shard directly, the others over the
//! peer listener (mutual TLS), found through a [`Directory`] of the node's own membership view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stella_cluster::{ClusterHandle, PeerClient};
use stella_signer::threshold::{GroupKey, ParticipantId, ThresholdParams};
use stella_state::command::ThresholdGroup;

use super::*;

/// How a holder finds the others: its own id, each member's peer URL, and the mutual-TLS peer
/// client. A clustered node answers from its own view of the Raft membership — never from
/// addresses a leader sends.
pub trait Directory: Send + Sync {
    fn me(&self) -> u64;
    fn peer_url(&self, node: u64) -> Option<String>;
    fn peers(&self) -> &PeerClient;
    /// Whether `key_id` may sign, in this node's own applied registry: a holder commits only
    /// for active keys, so a retired or revoked threshold key cannot be used even by a peer
    /// that asks the holders directly.
    fn may_sign(&self, key_id: &str) -> bool;
    /// The share holders of a threshold key, in this node's own applied registry.
    fn threshold_group(&self, key_id: &str) -> Option<ThresholdGroup>;
}

impl Directory for ClusterHandle {
    fn me(&self) -> u64 {
        self.node_id()
    }

    fn peer_url(&self, node: u64) -> Option<String> {
        self.member_addr(node).map(|a| a.peer_url)
    }

    fn peers(&self) -> &PeerClient {
        ClusterHandle::peers(self)
    }

    fn may_sign(&self, key_id: &str) -> bool {
        self.view().with_state(|s| {
            s.keys
                .get(key_id)
                .is_some_and(|k| k.state == stella_state::command::KeyState::Active)
        })
    }

    fn threshold_group(&self, key_id: &str) -> Option<ThresholdGroup> {
        self.view()
            .with_state(|s| s.threshold_groups.get(key_id).cloned())
    }
}

/// The holders' shards, local or remote.
#[derive(Clone)]
pub struct Holders {
    pub shard: Shard,
    pub directory: Arc<dyn Directory>,
    pub groups: GroupKeys,
    /// This holder's own decision before committing or signing (every clustered node has one;
    /// `None` only in the bench's fixed directory, which has no admissions).
    pub gate: Option<Arc<dyn gate::ShareGate>>,
}

/// Parsed group keys by the SHA-256 of their bytes. Parsing a FROST public key package
/// (decompressing every verifying share) costs about as much as a loopback round trip, and is
/// needed on every signature (the coordinator's signer, each holder's share check); a group's
/// bytes change with every refresh, so the cache never serves a stale group.
#[derive(Clone, Default)]
pub struct GroupKeys(Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<GroupKey>>>>);

impl GroupKeys {
    const LIMIT: usize = 256;

    pub fn parse(&self, bytes: &[u8]) -> Result<Arc<GroupKey>, String> {
        let digest = stella_signer::digest::sha256(bytes);
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(group) = cache.get(&digest) {
            return Ok(group.clone());
        }
        let group = Arc::new(GroupKey::from_bytes(bytes).map_err(|e| e.to_string())?);
        if cache.len() >= Self::LIMIT {
            cache.clear();
        }
        cache.insert(digest, group.clone());
        Ok(group)
    }
}

impl Holders {
    /// Calls `path` on `node` — or, for this node, `local` — with a bound on the time.
    pub(super) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node: u64,
        path: &str,
        request: &Req,
        timeout: Duration,
        local: impl Future<Output = Result<Resp, String>>,
    ) -> Result<Resp, String> {
        if node == self.directory.me() {
            return tokio::time::timeout(timeout, local)
                .await
                .unwrap_or_else(|_| Err("the local key shard did not answer in time".into()));
        }
        let peer_url = self
            .directory
            .peer_url(node)
            .ok_or_else(|| format!("node {node} is not a cluster member"))?;
        let answer: PeerAnswer<Resp> = self
            .directory
            .peers()
            .post(&peer_url, path, request, timeout)
            .await
            .map_err(|e| format!("node {node}: {e}"))?;
        answer.map_err(|e| format!("node {node}: {e}"))
    }

    // ---- the holder side, as the peer handlers call it ----

    pub async fn dkg_start(&self, request: DkgStart) -> PeerAnswer<Vec<u8>> {
        if let Some(key_id) = request.refresh {
            // The group comes from this holder's registry, never from the coordinator.
            if !self.directory.may_sign(&key_id) {
                return Err(format!("{key_id} is not an active key here"));
            }
            let group = self
                .directory
                .threshold_group(&key_id)
                .ok_or_else(|| format!("{key_id} is not a threshold key here"))?;
            let group = GroupKey::clone(&*self.groups.parse(&group.public_key_package)?);
            return self
                .shard
                .refresh_start(request.session, key_id, group, request.participants)
                .await;
        }
        let params = ThresholdParams::new(request.min_signers, request.max_signers)
            .map_err(|e| e.to_string())?;
        self.shard
            .dkg_start(request.session, request.suite, request.me, params)
            .await
    }

    pub async fn dkg_round1(&self, request: DkgSession) -> PeerAnswer<Vec<u8>> {
        self.shard.dkg_round1(request.session).await
    }

    /// Fetches every holder's round-1 message directly (never through the leader), then makes
    /// this node's sealed round-2 packages.
    pub async fn dkg_round2(&self, request: DkgRound2) -> PeerAnswer<BTreeMap<u16, Vec<u8>>> {
        // One participant per node and this node among them: a coordinator cannot send us to
        // itself for another participant's round-1 message.
        let mut nodes: Vec<u64> = request.holders.iter().map(|(_, node)| *node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.len() != request.holders.len() {
            return Err("the assignment gives a node more than one participant".into());
        }
        if !nodes.contains(&self.directory.me()) {
            return Err("the assignment does not include this node".into());
        }
        let fetched = join_all(request.holders.iter().map(|&(participant, node)| {
            let body = DkgSession {
                session: request.session.clone(),
            };
            async move {
                let bytes = self
                    .call(
                        node,
                        PEER_DKG_ROUND1,
                        &body,
                        DKG_CALL_TIMEOUT,
                        self.shard.dkg_round1(body.session.clone()),
                    )
                    .await?;
                Ok::<_, String>((participant, bytes))
            }
        }))
        .await;
        let round1 = fetched.into_iter().collect::<Result<BTreeMap<_, _>, _>>()?;
        self.shard.dkg_round2(request.session, round1).await
    }

    pub async fn dkg_finish(&self, request: DkgFinish) -> PeerAnswer<Vec<u8>> {
        self.shard
            .dkg_finish(request.session, request.sealed_for_me)
            .await
    }

    pub async fn commit(&self, request: CommitRequest) -> PeerAnswer<Vec<u8>> {
        if let Some(gate) = &self.gate {
            gate.commit(&request).await?;
        }
        if !self.directory.may_sign(&request.key_id) {
            return Err(format!(
                "{} is not an active key in this holder's registry",
                request.key_id
            ));
        }
        let current = self.current_verifying_share(&request.key_id)?;
        self.shard
            .commit(request.key_id, request.session, current)
            .await
    }

    /// The verifying share this node's registry expects its share of `key_id` to have (`None`
    /// where no registry says: the bench's fixed directory).
    fn current_verifying_share(&self, key_id: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(group) = self.directory.threshold_group(key_id) else {
            return Ok(None);
        };
        let me = self.directory.me();
        let participant = group
            .holders
            .iter()
            .find(|(_, node)| *node == me)
            .map(|(p, _)| ParticipantId(*p))
            .ok_or_else(|| format!("this node holds no share of {key_id}"))?;
        let key = self.groups.parse(&group.public_key_package)?;
        Ok(key.verifying_share(participant))
    }

    pub async fn sign_share(&self, request: SignShareRequest) -> PeerAnswer<Vec<u8>> {
        if let Some(gate) = &self.gate {
            gate.share(&request).await?;
        }
        self.shard
            .sign(request.key_id, request.session, request.signing_package)
            .await
    }
}

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

pub mod gate;
pub mod shard;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stella_cluster::{ClusterHandle, PeerClient};
use stella_signer::threshold::{
    ExclusionReason, GroupKey, ParticipantId, ShareTransport, SuiteId, ThresholdError,
    ThresholdParams, threshold_sign,
};
use stella_signer::{Error as SignerError, KeyDescriptor, KeySigner, KeySource, SignedOperation};
use stella_state::command::ThresholdGroup;

pub use shard::{Shard, ShardConfig, share_key};

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
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
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

/// The distributed key generation, driven by the leader: `t`-of-`nodes.len()`, participant
/// `i + 1` on `nodes[i]`. Returns the group key and the holders; no node, the leader included,
/// ever holds more than its own share.
pub async fn generate(
    holders: &Holders,
    suite: SuiteId,
    min_signers: u16,
    nodes: &[u64],
) -> Result<(GroupKey, Vec<(u16, u64)>), String> {
    let max_signers = u16::try_from(nodes.len()).map_err(|_| "too many holders")?;
    ThresholdParams::new(min_signers, max_signers).map_err(|e| e.to_string())?;
    let assignment: Vec<(u16, u64)> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (i as u16 + 1, *node))
        .collect();
    let group = rounds(holders, &assignment, |session, participant| DkgStart {
        session,
        suite,
        me: participant,
        min_signers,
        max_signers,
        refresh: None,
        participants: Vec::new(),
    })
    .await?;
    Ok((group, assignment))
}

/// A refresh of `key_id` among the holders on `nodes` (a subset of `group`'s, keeping their
/// participant ids): the group key stays, every share changes, holders left out are out.
pub async fn refresh(
    holders: &Holders,
    key_id: &str,
    group: &ThresholdGroup,
    nodes: &[u64],
) -> Result<(GroupKey, Vec<(u16, u64)>), String> {
    let assignment: Vec<(u16, u64)> = group
        .holders
        .iter()
        .filter(|(_, node)| nodes.contains(node))
        .copied()
        .collect();
    if let Some(stranger) = nodes
        .iter()
        .find(|n| !assignment.iter().any(|(_, node)| node == *n))
    {
        return Err(format!("node {stranger} holds no share of {key_id}"));
    }
    let participants: Vec<u16> = assignment.iter().map(|(p, _)| *p).collect();
    let max_signers = u16::try_from(participants.len()).map_err(|_| "too many holders")?;
    let new_group = rounds(holders, &assignment, |session, participant| DkgStart {
        session,
        suite: SuiteId::from_tag(group.public_key_package.first().copied().unwrap_or(0))
            .unwrap_or_else(legacy_suite),
        me: participant,
        min_signers: group.min_signers,
        max_signers,
        refresh: Some(key_id.to_owned()),
        participants: participants.clone(),
    })
    .await?;
    if new_group.key_id() != key_id {
        return Err("the refresh produced another group key".into());
    }
    Ok((new_group, assignment))
}

/// The three rounds of a key generation or refresh over `assignment` (participant, node).
async fn rounds(
    holders: &Holders,
    assignment: &[(u16, u64)],
    start: impl Fn(Vec<u8>, u16) -> DkgStart,
) -> Result<GroupKey, String> {
    let mut session = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut session).map_err(|_| "no randomness")?;

    // Round 1: every holder starts; its round-1 message stays with it for the others to fetch.
    let started = join_all(assignment.iter().map(|&(participant, node)| {
        let request = start(session.clone(), participant);
        async move {
            holders
                .call::<_, Vec<u8>>(
                    node,
                    PEER_DKG_START,
                    &request,
                    DKG_CALL_TIMEOUT,
                    holders.dkg_start(request.clone()),
                )
                .await
        }
    }))
    .await;
    for (result, (_, node)) in started.iter().zip(assignment) {
        if let Err(e) = result {
            return Err(format!("key generation round 1 on node {node}: {e}"));
        }
    }

    // Round 2: each holder returns packages sealed for each other holder.
    let round2 = join_all(assignment.iter().map(|&(_, node)| {
        let request = DkgRound2 {
            session: session.clone(),
            holders: assignment.to_vec(),
        };
        async move {
            holders
                .call::<_, BTreeMap<u16, Vec<u8>>>(
                    node,
                    PEER_DKG_ROUND2,
                    &request,
                    DKG_CALL_TIMEOUT,
                    holders.dkg_round2(request.clone()),
                )
                .await
        }
    }))
    .await;
    let mut for_recipient: BTreeMap<u16, BTreeMap<u16, Vec<u8>>> = BTreeMap::new();
    for (result, &(sender, node)) in round2.into_iter().zip(assignment) {
        let sealed = result.map_err(|e| format!("key generation round 2 on node {node}: {e}"))?;
        for (recipient, package) in sealed {
            for_recipient
                .entry(recipient)
                .or_default()
                .insert(sender, package);
        }
    }

    // Round 3: each holder opens its packages, seals its share and answers the group key.
    let finished = join_all(assignment.iter().map(|&(participant, node)| {
        let request = DkgFinish {
            session: session.clone(),
            sealed_for_me: for_recipient.remove(&participant).unwrap_or_default(),
        };
        async move {
            holders
                .call::<_, Vec<u8>>(
                    node,
                    PEER_DKG_FINISH,
                    &request,
                    DKG_CALL_TIMEOUT,
                    holders.dkg_finish(request.clone()),
                )
                .await
        }
    }))
    .await;
    let mut group: Option<Vec<u8>> = None;
    for (result, (_, node)) in finished.into_iter().zip(assignment) {
        let bytes = result.map_err(|e| format!("key generation round 3 on node {node}: {e}"))?;
        match &group {
            None => group = Some(bytes),
            Some(first) if *first == bytes => {}
            Some(_) => return Err(format!("node {node} ended with another group key")),
        }
    }
    GroupKey::from_bytes(&group.ok_or("no holder")?).map_err(|e| e.to_string())
}

/// The coordinator's transport for one key: participant → node.
struct KeyTransport<'a> {
    holders: &'a Holders,
    nodes: BTreeMap<ParticipantId, u64>,
    /// The admission (reservation id) and the PAE every holder checks.
    admission: &'a str,
    pae: &'a [u8],
}

impl KeyTransport<'_> {
    fn node(&self, holder: ParticipantId) -> Result<u64, ThresholdError> {
        self.nodes
            .get(&holder)
            .copied()
            .ok_or(ThresholdError::UnknownParticipant(holder))
    }
}

impl ShareTransport for KeyTransport<'_> {
    async fn commit(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let node = self.node(holder)?;
        let request = CommitRequest {
            key_id: key_id.to_owned(),
            session: session.to_vec(),
            admission: self.admission.to_owned(),
        };
        self.holders
            .call(
                node,
                PEER_COMMIT,
                &request,
                SIGN_CALL_TIMEOUT,
                self.holders.commit(request.clone()),
            )
            .await
            .map_err(|reason| ThresholdError::Transport { holder, reason })
    }

    async fn sign(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
        signing_package: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let node = self.node(holder)?;
        let request = SignShareRequest {
            key_id: key_id.to_owned(),
            session: session.to_vec(),
            signing_package: signing_package.to_vec(),
            admission: self.admission.to_owned(),
            pae: self.pae.to_vec(),
        };
        self.holders
            .call(
                node,
                PEER_SIGN_SHARE,
                &request,
                SIGN_CALL_TIMEOUT,
                self.holders.sign_share(request.clone()),
            )
            .await
            .map_err(|reason| ThresholdError::Transport { holder, reason })
    }
}

/// A registered threshold key, signing through `t` of its holders.
pub struct ThresholdKeySigner {
    holders: Holders,
    group: Arc<GroupKey>,
    nodes: BTreeMap<ParticipantId, u64>,
    runtime: tokio::runtime::Handle,
    descriptor: KeyDescriptor,
    /// The admission (reservation id) this signer signs for: holders sign nothing else.
    admission: String,
    /// Chaos drills only: coordinate a signature over a statement nobody admitted.
    tamper: bool,
}

impl ThresholdKeySigner {
    /// A signer for one admitted request (`admission`: its reservation id).
    pub fn new(
        holders: Holders,
        group: &ThresholdGroup,
        admission: &str,
        tamper: bool,
    ) -> Result<ThresholdKeySigner, String> {
        let key = holders.groups.parse(&group.public_key_package)?;
        let public_key = key.public_key().clone();
        Ok(ThresholdKeySigner {
            holders,
            nodes: group
                .holders
                .iter()
                .map(|(p, n)| (ParticipantId(*p), *n))
                .collect(),
            runtime: tokio::runtime::Handle::current(),
            descriptor: KeyDescriptor {
                key_id: key.key_id(),
                algorithm: key.suite().algorithm(),
                source: KeySource::Threshold,
                public_key,
            },
            group: key,
            admission: admission.to_owned(),
            tamper,
        })
    }

    /// Signs `message` (the PAE) through the holders; async, for the leader's pipeline.
    pub async fn sign_async(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        // A tampering coordinator (a drill) asks for a statement of its own choosing.
        let forged;
        let message = if self.tamper {
            forged = stella_signer::pae(
                stella_signer::IN_TOTO_PAYLOAD_TYPE,
                br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"forged"}"#,
            );
            tracing::warn!(key_id = %self.descriptor.key_id, "[threshold] drill_tamper_as_coordinator is on: asking the holders to sign a forged statement");
            &forged[..]
        } else {
            message
        };
        let transport = KeyTransport {
            holders: &self.holders,
            nodes: self.nodes.clone(),
            admission: &self.admission,
            pae: message,
        };
        let available: Vec<ParticipantId> = self.nodes.keys().copied().collect();
        let name = |p: &ParticipantId| {
            format!(
                "holder {p} (node {})",
                self.nodes.get(p).copied().unwrap_or_default()
            )
        };
        let signed = threshold_sign(&transport, &self.group, &available, message)
            .await
            .map_err(|e| match e {
                ThresholdError::BadShare { culprits } => SignerError::Signing(format!(
                    "invalid signature shares from {}",
                    culprits.iter().map(name).collect::<Vec<_>>().join(", ")
                )),
                other => SignerError::Threshold(other),
            })?;
        let remarks = signed
            .excluded
            .iter()
            .map(|(p, why)| match why {
                ExclusionReason::BadShare => format!("{} sent an invalid signature share", name(p)),
                ExclusionReason::MalformedCommitments(e) => {
                    format!("{} sent malformed commitments: {e}", name(p))
                }
                ExclusionReason::Unreachable(e) => format!("{} unreachable: {e}", name(p)),
            })
            .collect::<Vec<_>>();
        for remark in &remarks {
            tracing::warn!(key_id = %self.descriptor.key_id, "threshold signing: {remark}");
        }
        Ok(SignedOperation {
            key_id: self.descriptor.key_id.clone(),
            algorithm: self.descriptor.algorithm,
            signature: signed.signature.to_vec(),
            public_key: self.descriptor.public_key.clone(),
            certificate_chain_der: Vec::new(),
            timestamps: Vec::new(),
            remarks,
        })
    }
}

impl KeySigner for ThresholdKeySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    /// Runs on the blocking pool (the pipeline signs there): waits on the async rounds.
    fn sign(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        self.runtime.block_on(self.sign_async(message))
    }
}

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

//! The key-shard actor: this node's side of every threshold key.
//!
//! It holds, in memory only, the DKG participants of key generations in progress and the
//! signing nonces of sessions between commit and sign; on disk, one sealed share per threshold
//! key (`DATA_DIR/threshold/shares/<hex of key id>.share`, AES-256-GCM under the node's share
//! key, bound to the key id and node id). Nonces are taken out of the map before use, so a
//! session signs at most once, and a crash forgets them: a restarted holder can only commit
//! afresh. No I/O besides reading and writing its own share files happens here; peers are
//! reached by the handlers in [`super`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use stella_signer::threshold::{
    DkgParticipant, GroupKey, KeyShare, ParticipantId, SigningNonces, SuiteId, ThresholdParams,
    commit, sign_share,
};

use crate::Error;

mod store;

pub use store::share_key;

/// Nonces of a session that is not signed within this time are dropped.
const NONCE_TTL: Duration = Duration::from_secs(30);
/// A key generation that does not finish within this time is dropped.
const DKG_TTL: Duration = Duration::from_secs(120);

type Reply<T> = RpcReplyPort<Result<T, String>>;

pub enum ShardMsg {
    DkgStart {
        session: Vec<u8>,
        suite: SuiteId,
        me: u16,
        params: ThresholdParams,
        reply: Reply<Vec<u8>>,
    },
    /// Round 1 of a refresh of `key_id` (the group as this node's registry has it) among
    /// `participants`.
    RefreshStart {
        session: Vec<u8>,
        key_id: String,
        group: Box<GroupKey>,
        participants: Vec<u16>,
        reply: Reply<Vec<u8>>,
    },
    /// This node's round-1 message of a session (peers fetch it directly, over mutual TLS).
    DkgRound1 {
        session: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    DkgRound2 {
        session: Vec<u8>,
        round1: BTreeMap<u16, Vec<u8>>,
        reply: Reply<BTreeMap<u16, Vec<u8>>>,
    },
    /// Opens the round-2 packages sealed for this node, seals the share to disk and answers
    /// the group key (bytes).
    DkgFinish {
        session: Vec<u8>,
        sealed_for_me: BTreeMap<u16, Vec<u8>>,
        reply: Reply<Vec<u8>>,
    },
    /// `current`: the verifying share this holder's registry expects (after a refresh, the
    /// pending share becomes current when it matches).
    Commit {
        key_id: String,
        session: Vec<u8>,
        current: Option<Vec<u8>>,
        reply: Reply<Vec<u8>>,
    },
    Sign {
        key_id: String,
        session: Vec<u8>,
        signing_package: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    /// Destroys this node's share of a revoked key: the file and the opened copy.
    Destroy { key_id: String, reply: Reply<bool> },
}

/// Where shares live and how they are sealed.
#[derive(Clone)]
pub struct ShardConfig {
    pub node_id: u64,
    pub shares_dir: PathBuf,
    /// The share-sealing key (wiped from memory when the last copy is dropped).
    pub kek: zeroize::Zeroizing<[u8; 32]>,
    /// Chaos drills only: answer every sign request with a corrupted share.
    pub corrupt_shares: bool,
}

#[derive(Clone)]
pub struct Shard {
    actor: crate::supervise::Supervised<ShardMsg>,
}

impl Shard {
    pub async fn start(config: ShardConfig) -> Result<Shard, Error> {
        if config.corrupt_shares {
            tracing::warn!(
                "[threshold] drill_corrupt_shares is on: this node answers threshold signing with corrupted shares"
            );
        }
        // A restarted shard actor reads the sealed shares from disk again; DKG or refresh
        // rounds in progress are lost (their driver fails and can be run again).
        let actor =
            crate::supervise::Supervised::start("key-shard", move || (ShardActor, config.clone()))
                .await?;
        Ok(Shard { actor })
    }

    pub fn health(&self) -> crate::supervise::ActorHealth {
        self.actor.health()
    }

    async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> ShardMsg,
    ) -> Result<T, String> {
        match self
            .actor
            .actor()
            .call(make, Some(Duration::from_secs(10)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(_) => Err("the key-shard actor did not answer".into()),
            Err(e) => Err(format!("the key-shard actor is gone: {e}")),
        }
    }

    pub async fn dkg_start(
        &self,
        session: Vec<u8>,
        suite: SuiteId,
        me: u16,
        params: ThresholdParams,
    ) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::DkgStart {
            session,
            suite,
            me,
            params,
            reply,
        })
        .await
    }

    pub async fn refresh_start(
        &self,
        session: Vec<u8>,
        key_id: String,
        group: GroupKey,
        participants: Vec<u16>,
    ) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::RefreshStart {
            session,
            key_id,
            group: Box::new(group),
            participants,
            reply,
        })
        .await
    }

    pub async fn dkg_round1(&self, session: Vec<u8>) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::DkgRound1 { session, reply })
            .await
    }

    pub async fn dkg_round2(
        &self,
        session: Vec<u8>,
        round1: BTreeMap<u16, Vec<u8>>,
    ) -> Result<BTreeMap<u16, Vec<u8>>, String> {
        self.ask(|reply| ShardMsg::DkgRound2 {
            session,
            round1,
            reply,
        })
        .await
    }

    pub async fn dkg_finish(
        &self,
        session: Vec<u8>,
        sealed_for_me: BTreeMap<u16, Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::DkgFinish {
            session,
            sealed_for_me,
            reply,
        })
        .await
    }

    pub async fn commit(
        &self,
        key_id: String,
        session: Vec<u8>,
        current: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::Commit {
            key_id,
            session,
            current,
            reply,
        })
        .await
    }

    /// Destroys this node's share of `key_id`; `true` if there was one.
    pub async fn destroy(&self, key_id: String) -> Result<bool, String> {
        self.ask(|reply| ShardMsg::Destroy { key_id, reply }).await
    }

    /// The key ids this node holds a share of (from the share files).
    pub fn held_keys(shares_dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(shares_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let hex = name.strip_suffix(".share")?;
                        Some(format!("sha256:{hex}"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn sign(
        &self,
        key_id: String,
        session: Vec<u8>,
        signing_package: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        self.ask(|reply| ShardMsg::Sign {
            key_id,
            session,
            signing_package,
            reply,
        })
        .await
    }
}

struct ShardActor;

/// A key generation or refresh in progress on this node.
struct Run {
    participant: DkgParticipant,
    round1: Vec<u8>,
    started: Instant,
    /// For a refresh: the key whose new share is kept pending until the registry switches.
    refreshing: Option<String>,
}

pub struct ShardState {
    config: ShardConfig,
    dkg: HashMap<Vec<u8>, Run>,
    nonces: HashMap<(String, Vec<u8>), (SigningNonces, Instant)>,
    shares: HashMap<String, Arc<KeyShare>>,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        config: ShardConfig,
    ) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            config,
            dkg: HashMap::new(),
            nonces: HashMap::new(),
            shares: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state.prune();
        // A caller that gave up is no reason to stop the actor: ignore failed replies.
        match message {
            ShardMsg::DkgStart {
                session,
                suite,
                me,
                params,
                reply,
            } => {
                let _ = reply.send(state.dkg_start(session, suite, me, params));
            }
            ShardMsg::RefreshStart {
                session,
                key_id,
                group,
                participants,
                reply,
            } => {
                let _ = reply.send(state.refresh_start(session, key_id, &group, participants));
            }
            ShardMsg::DkgRound1 { session, reply } => {
                let answer = state
                    .dkg
                    .get(&session)
                    .map(|run| run.round1.clone())
                    .ok_or_else(|| "no key generation with this session here".to_owned());
                let _ = reply.send(answer);
            }
            ShardMsg::DkgRound2 {
                session,
                round1,
                reply,
            } => {
                let _ = reply.send(state.dkg_round2(&session, &round1));
            }
            ShardMsg::DkgFinish {
                session,
                sealed_for_me,
                reply,
            } => {
                let _ = reply.send(state.dkg_finish(&session, &sealed_for_me));
            }
            ShardMsg::Commit {
                key_id,
                session,
                current,
                reply,
            } => {
                let _ = reply.send(state.commit(key_id, session, current));
            }
            ShardMsg::Sign {
                key_id,
                session,
                signing_package,
                reply,
            } => {
                let _ = reply.send(state.sign(key_id, session, &signing_package));
            }
            ShardMsg::Destroy { key_id, reply } => {
                let _ = reply.send(state.destroy(&key_id));
            }
        }
        Ok(())
    }
}

impl ShardState {
    fn prune(&mut self) {
        self.nonces.retain(|_, (_, at)| at.elapsed() < NONCE_TTL);
        self.dkg.retain(|_, run| run.started.elapsed() < DKG_TTL);
    }

    fn dkg_start(
        &mut self,
        session: Vec<u8>,
        suite: SuiteId,
        me: u16,
        params: ThresholdParams,
    ) -> Result<Vec<u8>, String> {
        if self.dkg.contains_key(&session) {
            return Err("this key generation session is already running".into());
        }
        let (participant, round1) =
            DkgParticipant::start(suite, &session, ParticipantId(me), params)
                .map_err(|e| e.to_string())?;
        self.begin(session, participant, round1, None)
    }

    fn refresh_start(
        &mut self,
        session: Vec<u8>,
        key_id: String,
        group: &GroupKey,
        participants: Vec<u16>,
    ) -> Result<Vec<u8>, String> {
        if self.dkg.contains_key(&session) {
            return Err("this refresh session is already running".into());
        }
        if group.key_id() != key_id {
            return Err("the group does not belong to this key".into());
        }
        let me = self.share(&key_id, None)?.participant();
        let share = self.share(&key_id, group.verifying_share(me))?;
        let participants = participants.into_iter().map(ParticipantId).collect();
        let (participant, round1) =
            DkgParticipant::start_refresh(&session, &share, group, participants)
                .map_err(|e| e.to_string())?;
        self.begin(session, participant, round1, Some(key_id))
    }

    fn begin(
        &mut self,
        session: Vec<u8>,
        participant: DkgParticipant,
        round1: Vec<u8>,
        refreshing: Option<String>,
    ) -> Result<Vec<u8>, String> {
        self.dkg.insert(
            session,
            Run {
                participant,
                round1: round1.clone(),
                started: Instant::now(),
                refreshing,
            },
        );
        Ok(round1)
    }

    fn dkg_round2(
        &mut self,
        session: &[u8],
        round1: &BTreeMap<u16, Vec<u8>>,
    ) -> Result<BTreeMap<u16, Vec<u8>>, String> {
        let participant = &mut self
            .dkg
            .get_mut(session)
            .ok_or("no key generation with this session here")?
            .participant;
        let round1: BTreeMap<ParticipantId, Vec<u8>> = round1
            .iter()
            .map(|(id, bytes)| (ParticipantId(*id), bytes.clone()))
            .collect();
        let sealed = participant.round2(&round1).map_err(|e| e.to_string())?;
        Ok(sealed.into_iter().map(|(id, b)| (id.get(), b)).collect())
    }

    fn dkg_finish(
        &mut self,
        session: &[u8],
        sealed_for_me: &BTreeMap<u16, Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let run = self
            .dkg
            .remove(session)
            .ok_or("no key generation with this session here")?;
        let sealed: BTreeMap<ParticipantId, Vec<u8>> = sealed_for_me
            .iter()
            .map(|(id, bytes)| (ParticipantId(*id), bytes.clone()))
            .collect();
        let (share, group) = run.participant.finish(&sealed).map_err(|e| e.to_string())?;
        let key_id = group.key_id();
        let sealed_share = share
            .seal(&self.config.kek, &self.aad(&key_id))
            .map_err(|e| e.to_string())?;
        // A refreshed share waits beside the current one until the registry names it.
        let path = match run.refreshing {
            Some(_) => self.pending_path(&key_id),
            None => self.share_path(&key_id),
        };
        crate::secret_files::write_secret_atomically(&path, &sealed_share)
            .map_err(|e| format!("storing the share: {e}"))?;
        if run.refreshing.is_none() {
            self.shares.insert(key_id, Arc::new(share));
        }
        group.to_bytes().map_err(|e| e.to_string())
    }

    fn commit(
        &mut self,
        key_id: String,
        session: Vec<u8>,
        current: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let share = self.share(&key_id, current)?;
        let (nonces, commitments) = commit(&share).map_err(|e| e.to_string())?;
        self.nonces
            .insert((key_id, session), (nonces, Instant::now()));
        Ok(commitments)
    }

    fn sign(
        &mut self,
        key_id: String,
        session: Vec<u8>,
        signing_package: &[u8],
    ) -> Result<Vec<u8>, String> {
        let share = self.share(&key_id, None)?;
        // Taken out before use: whatever happens next, these nonces never sign again.
        let (nonces, _) = self
            .nonces
            .remove(&(key_id, session))
            .ok_or("no commitment for this session here (expired, used, or this node restarted)")?;
        let mut signature_share =
            sign_share(&share, nonces, signing_package).map_err(|e| e.to_string())?;
        if self.config.corrupt_shares
            && let Some(last) = signature_share.last_mut()
        {
            *last = last.wrapping_add(1);
        }
        Ok(signature_share)
    }
}

//! Distributed key generation (FROST `keys::dkg::part1/2/3`), one participant's side, with the
//! round-2 packages sealed per recipient so that the leader that relays them cannot read them.
//!
//! Flow, driven by the node (the leader relays every message):
//! 1. every participant calls [`DkgParticipant::start`] and sends its round-1 message bytes
//!    to the leader;
//! 2. the leader sends the *same* map of all `n` round-1 messages (including each recipient's
//!    own) to everybody; each calls [`DkgParticipant::round2`], which returns one sealed
//!    package per other participant, and sends them to the leader;
//! 3. the leader hands each participant the `n − 1` packages addressed to it; each calls
//!    [`DkgParticipant::finish`] and gets its [`KeyShare`] and the [`GroupKey`]. Every honest
//!    participant of one run ends with the same group key.
//!
//! Sealing of a round-2 package from `s` to `r`: X25519(ephemeral key of `s`, ephemeral key of
//! `r` as published in round 1) → HKDF-SHA256 (salt = the round-1 transcript hash, info =
//! binding) → AES-256-GCM with AAD = header ‖ binding, where binding = `"stella/frost-dkg/
//! round2" ‖ SHA-256(session) ‖ s ‖ r ‖ transcript hash`. A package that was tampered with,
//! addressed to someone else, or produced under a different view of round 1 (a leader that
//! equivocated) fails to open with [`ThresholdError::SealedPackage`] naming the sender.
//!
//! What the relay does *not* get from this module alone: the X25519 keys arrive through the
//! leader too, so a leader that replaces them consistently in every view could sit in the
//! middle. The node must therefore authenticate each round-1 message as coming from the
//! participant's node (sign it with the node's peer identity, or fetch it over the direct
//! mutual-TLS link); see ADR 0011.
//!
//! Any error leaves the participant unusable: a failed DKG is restarted from `start` with a
//! new session id.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use frost_core::Identifier;
use frost_core::keys::{dkg, refresh};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use super::seal;
use super::suite::Suite;
use super::{GroupKeyOf, KeyShareOf, ParticipantId, ThresholdError, ThresholdParams};

const ROUND1_VERSION: u8 = 1;
const ROUND2_VERSION: u8 = 1;
const ROUND1_HEADER_LEN: usize = 1 + 2 + 32 + 32;
const ROUND2_HEADER_LEN: usize = 1 + 2 + 2;

/// What a participant publishes in round 1: its FROST round-1 package (commitments and proof
/// of knowledge) and the X25519 public key that round-2 packages for it are sealed to.
///
/// Bytes: `0x01 ‖ sender (u16 BE) ‖ SHA-256(session) ‖ X25519 public key (32) ‖ FROST
/// round-1 package`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round1Message {
    pub sender: ParticipantId,
    pub session_hash: [u8; 32],
    pub x25519_public: [u8; 32],
    pub package: Vec<u8>,
}

impl Round1Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROUND1_HEADER_LEN + self.package.len());
        out.push(ROUND1_VERSION);
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        out.extend_from_slice(&self.session_hash);
        out.extend_from_slice(&self.x25519_public);
        out.extend_from_slice(&self.package);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Round1Message, ThresholdError> {
        let malformed = |reason: String| ThresholdError::Malformed {
            what: "DKG round-1 message",
            reason,
        };
        if bytes.len() <= ROUND1_HEADER_LEN {
            return Err(malformed("truncated".into()));
        }
        if bytes[0] != ROUND1_VERSION {
            return Err(malformed(format!("unknown format version {}", bytes[0])));
        }
        let sender = ParticipantId(u16::from_be_bytes([bytes[1], bytes[2]]));
        let mut session_hash = [0u8; 32];
        session_hash.copy_from_slice(&bytes[3..35]);
        let mut x25519_public = [0u8; 32];
        x25519_public.copy_from_slice(&bytes[35..67]);
        Ok(Round1Message {
            sender,
            session_hash,
            x25519_public,
            package: bytes[ROUND1_HEADER_LEN..].to_vec(),
        })
    }
}

enum DkgState<C: Suite> {
    AwaitingRound1 {
        secret: Box<dkg::round1::SecretPackage<C>>,
    },
    AwaitingRound2 {
        secret: Box<dkg::round2::SecretPackage<C>>,
        others: BTreeMap<Identifier<C>, dkg::round1::Package<C>>,
        x25519_public: BTreeMap<ParticipantId, [u8; 32]>,
        transcript: [u8; 32],
    },
    Spent,
}

/// What a run produces: a new key, or new shares of an existing key (proactive refresh, which
/// can also leave holders out: their old shares stop combining with the new ones).
enum DkgMode<C: Suite> {
    Fresh,
    Refresh {
        old_share: Box<KeyShareOf<C>>,
        old_group: Box<GroupKeyOf<C>>,
    },
}

/// One participant's side of a DKG run. Its secret packages and X25519 key live in memory
/// only and are dropped with it.
pub struct DkgParticipantOf<C: Suite> {
    me: ParticipantId,
    params: ThresholdParams,
    /// Everyone taking part, by identifier (`1..=n` for a new key; for a refresh, the holders
    /// that keep their identifiers).
    participants: Vec<ParticipantId>,
    mode: DkgMode<C>,
    session_hash: [u8; 32],
    x25519: agreement::PrivateKey,
    my_round1: Vec<u8>,
    state: DkgState<C>,
}

impl<C: Suite> fmt::Debug for DkgParticipantOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            DkgState::AwaitingRound1 { .. } => "awaiting round 1",
            DkgState::AwaitingRound2 { .. } => "awaiting round 2",
            DkgState::Spent => "spent",
        };
        f.debug_struct("DkgParticipant")
            .field("suite", &C::SUITE)
            .field("me", &self.me)
            .field("params", &self.params)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<C: Suite> DkgParticipantOf<C> {
    /// Round 1. `session` is the DKG session id chosen by the leader (unique per run); `me`
    /// must be in `1..=n`. Returns the participant and its round-1 message bytes.
    pub fn start(
        session: &[u8],
        me: ParticipantId,
        params: ThresholdParams,
    ) -> Result<(DkgParticipantOf<C>, Vec<u8>), ThresholdError> {
        params.check_participant(me)?;
        let participants = params.participants().collect();
        let (secret, package) = dkg::part1::<C, _>(
            me.identifier::<C>()?,
            params.max_signers(),
            params.min_signers(),
            OsRng,
        )?;
        Self::begin(
            session,
            me,
            params,
            participants,
            DkgMode::Fresh,
            secret,
            package,
        )
    }

    /// Round 1 of a proactive refresh of `old_group`'s key among `participants` (a subset of
    /// its holders, at least `t`, keeping their identifiers): the group key stays, every share
    /// changes, and holders left out keep shares that no longer combine with the new ones.
    pub fn start_refresh(
        session: &[u8],
        old_share: &KeyShareOf<C>,
        old_group: &GroupKeyOf<C>,
        participants: Vec<ParticipantId>,
    ) -> Result<(DkgParticipantOf<C>, Vec<u8>), ThresholdError> {
        let me = old_share.participant();
        let old_share = KeyShareOf::new(me, old_share.package().clone())?;
        let old_group = old_group.clone();
        let mut participants = participants;
        participants.sort();
        participants.dedup();
        let n = u16::try_from(participants.len())
            .map_err(|_| ThresholdError::InvalidParams("too many participants".into()))?;
        let params = ThresholdParams::new(old_group.min_signers(), n)?;
        if !participants.contains(&me) {
            return Err(ThresholdError::UnknownParticipant(me));
        }
        if let Some(stranger) = participants
            .iter()
            .find(|p| !old_group.participants().contains(p))
        {
            return Err(ThresholdError::UnknownParticipant(*stranger));
        }
        if old_share.public_key() != old_group.public_key() {
            return Err(ThresholdError::Protocol(
                "the share to refresh belongs to another group".into(),
            ));
        }
        let (secret, package) = refresh::refresh_dkg_part1::<C, _>(
            me.identifier::<C>()?,
            params.max_signers(),
            params.min_signers(),
            OsRng,
        )?;
        let mode = DkgMode::Refresh {
            old_share: Box::new(old_share),
            old_group: Box::new(old_group),
        };
        Self::begin(session, me, params, participants, mode, secret, package)
    }

    fn begin(
        session: &[u8],
        me: ParticipantId,
        params: ThresholdParams,
        participants: Vec<ParticipantId>,
        mode: DkgMode<C>,
        secret: dkg::round1::SecretPackage<C>,
        package: dkg::round1::Package<C>,
    ) -> Result<(DkgParticipantOf<C>, Vec<u8>), ThresholdError> {
        let x25519 = agreement::PrivateKey::generate(&X25519)
            .map_err(|_| ThresholdError::Frost("X25519 key generation failed".into()))?;
        let public = x25519
            .compute_public_key()
            .map_err(|_| ThresholdError::Frost("X25519 public key failed".into()))?;
        let x25519_public: [u8; 32] =
            public
                .as_ref()
                .try_into()
                .map_err(|_| ThresholdError::Malformed {
                    what: "X25519 public key",
                    reason: "not 32 bytes".into(),
                })?;
        let session_hash = crate::digest::sha256(session);
        let message = Round1Message {
            sender: me,
            session_hash,
            x25519_public,
            package: package.serialize()?,
        }
        .to_bytes();
        let participant = DkgParticipantOf {
            me,
            params,
            participants,
            mode,
            session_hash,
            x25519,
            my_round1: message.clone(),
            state: DkgState::AwaitingRound1 {
                secret: Box::new(secret),
            },
        };
        Ok((participant, message))
    }

    pub fn participant(&self) -> ParticipantId {
        self.me
    }

    /// Round 2. `round1` holds the round-1 message bytes of **all** `n` participants, the
    /// caller's own included (it must be byte-identical to what `start` returned). Returns one
    /// sealed package per other participant, keyed by recipient.
    pub fn round2(
        &mut self,
        round1: &BTreeMap<ParticipantId, Vec<u8>>,
    ) -> Result<BTreeMap<ParticipantId, Vec<u8>>, ThresholdError> {
        let DkgState::AwaitingRound1 { secret } =
            std::mem::replace(&mut self.state, DkgState::Spent)
        else {
            return Err(ThresholdError::Protocol(
                "round2 called out of order".into(),
            ));
        };
        self.check_participant_set(round1.keys().copied(), "round-1 messages", true)?;
        if round1.get(&self.me) != Some(&self.my_round1) {
            return Err(ThresholdError::Protocol(
                "the relayed copy of our own round-1 message differs from the one we sent".into(),
            ));
        }

        let mut others = BTreeMap::new();
        let mut x25519_public = BTreeMap::new();
        for (&sender, bytes) in round1 {
            let message = Round1Message::from_bytes(bytes)?;
            if message.sender != sender {
                return Err(ThresholdError::Dkg {
                    culprits: vec![sender],
                    reason: format!("round-1 message names sender {}", message.sender),
                });
            }
            if message.session_hash != self.session_hash {
                return Err(ThresholdError::Dkg {
                    culprits: vec![sender],
                    reason: "round-1 message belongs to another DKG session".into(),
                });
            }
            if x25519_public.values().any(|k| *k == message.x25519_public) {
                return Err(ThresholdError::Dkg {
                    culprits: vec![sender],
                    reason: "X25519 key reused from another participant".into(),
                });
            }
            x25519_public.insert(sender, message.x25519_public);
            if sender == self.me {
                continue;
            }
            let package =
                dkg::round1::Package::<C>::deserialize(&message.package).map_err(|e| {
                    ThresholdError::Dkg {
                        culprits: vec![sender],
                        reason: format!("round-1 package: {e}"),
                    }
                })?;
            others.insert(sender.identifier::<C>()?, package);
        }
        let transcript = transcript_hash(&self.session_hash, round1);

        let (secret2, packages) = match self.mode {
            DkgMode::Fresh => dkg::part2(*secret, &others),
            DkgMode::Refresh { .. } => refresh::refresh_dkg_part2(*secret, &others),
        }
        .map_err(|e| self.dkg_error(e))?;
        let mut sealed = BTreeMap::new();
        let recipients: Vec<ParticipantId> = self
            .participants
            .iter()
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        for recipient in recipients {
            let package = packages.get(&recipient.identifier::<C>()?).ok_or_else(|| {
                ThresholdError::Frost(format!("no round-2 package for {recipient}"))
            })?;
            let plaintext = zeroize::Zeroizing::new(package.serialize()?);
            let peer = x25519_public
                .get(&recipient)
                .ok_or(ThresholdError::UnknownParticipant(recipient))?;
            let header = round2_header(self.me, recipient);
            let binding = binding(&self.session_hash, self.me, recipient, &transcript);
            let key = self
                .pair_key(peer, &transcript, &binding)
                .map_err(|reason| {
                    ThresholdError::Frost(format!("sealing for {recipient}: {reason}"))
                })?;
            let blob = seal::seal(&key, &aad(&header, &binding), &plaintext).map_err(|reason| {
                ThresholdError::Frost(format!("sealing for {recipient}: {reason}"))
            })?;
            let mut out = header.to_vec();
            out.extend_from_slice(&blob);
            sealed.insert(recipient, out);
        }
        self.state = DkgState::AwaitingRound2 {
            secret: Box::new(secret2),
            others,
            x25519_public,
            transcript,
        };
        Ok(sealed)
    }

    /// Round 3. `round2_for_me` holds the sealed packages addressed to this participant, keyed
    /// by sender: exactly the `n − 1` others.
    pub fn finish(
        mut self,
        round2_for_me: &BTreeMap<ParticipantId, Vec<u8>>,
    ) -> Result<(KeyShareOf<C>, GroupKeyOf<C>), ThresholdError> {
        let DkgState::AwaitingRound2 {
            secret,
            others,
            x25519_public,
            transcript,
        } = std::mem::replace(&mut self.state, DkgState::Spent)
        else {
            return Err(ThresholdError::Protocol(
                "finish called out of order".into(),
            ));
        };
        self.check_participant_set(round2_for_me.keys().copied(), "round-2 packages", false)?;

        let mut packages = BTreeMap::new();
        for (&sender, sealed) in round2_for_me {
            let fail = |reason: String| ThresholdError::SealedPackage { sender, reason };
            if sealed.len() < ROUND2_HEADER_LEN || sealed[0] != ROUND2_VERSION {
                return Err(fail("truncated or unknown format version".into()));
            }
            let named_sender = ParticipantId(u16::from_be_bytes([sealed[1], sealed[2]]));
            let named_recipient = ParticipantId(u16::from_be_bytes([sealed[3], sealed[4]]));
            if named_sender != sender {
                return Err(fail(format!("its header names sender {named_sender}")));
            }
            if named_recipient != self.me {
                return Err(fail(format!(
                    "misaddressed: it is for participant {named_recipient}, not {}",
                    self.me
                )));
            }
            let peer = x25519_public
                .get(&sender)
                .ok_or(ThresholdError::UnknownParticipant(sender))?;
            let binding = binding(&self.session_hash, sender, self.me, &transcript);
            let key = self.pair_key(peer, &transcript, &binding).map_err(fail)?;
            let plaintext = seal::open(
                &key,
                &aad(&sealed[..ROUND2_HEADER_LEN], &binding),
                &sealed[ROUND2_HEADER_LEN..],
            )
            .map_err(|_| {
                fail("decryption failed (tampered, not for us, or a different round-1 view)".into())
            })?;
            let package = dkg::round2::Package::<C>::deserialize(&plaintext)
                .map_err(|e| fail(format!("round-2 package: {e}")))?;
            packages.insert(sender.identifier::<C>()?, package);
        }

        let (key_package, public_package) = match &self.mode {
            DkgMode::Fresh => dkg::part3(&secret, &others, &packages),
            DkgMode::Refresh {
                old_share,
                old_group,
            } => refresh::refresh_dkg_shares(
                &secret,
                &others,
                &packages,
                old_group.package().clone(),
                old_share.package().clone(),
            ),
        }
        .map_err(|e| self.dkg_error(e))?;
        let group = GroupKeyOf::new(public_package, self.params)?;
        if let DkgMode::Refresh { old_group, .. } = &self.mode
            && old_group.public_key() != group.public_key()
        {
            return Err(ThresholdError::Protocol(
                "the refresh changed the group key".into(),
            ));
        }
        let share = KeyShareOf::new(self.me, key_package)?;
        if share.public_key() != group.public_key() {
            return Err(ThresholdError::Protocol(
                "share and group disagree on the group key".into(),
            ));
        }
        Ok((share, group))
    }

    /// The hash of the round-1 transcript this participant accepted (available after
    /// `round2`). Nodes may compare it over direct links as an extra equivocation check.
    pub fn transcript_hash(&self) -> Option<[u8; 32]> {
        match &self.state {
            DkgState::AwaitingRound2 { transcript, .. } => Some(*transcript),
            _ => None,
        }
    }

    fn check_participant_set(
        &self,
        got: impl Iterator<Item = ParticipantId>,
        what: &str,
        include_me: bool,
    ) -> Result<(), ThresholdError> {
        let got: Vec<ParticipantId> = got.collect();
        let expected: Vec<ParticipantId> = self
            .participants
            .iter()
            .copied()
            .filter(|p| include_me || *p != self.me)
            .collect();
        if got == expected {
            return Ok(());
        }
        let missing: Vec<ParticipantId> = expected
            .iter()
            .filter(|p| !got.contains(p))
            .copied()
            .collect();
        if let Some(extra) = got.iter().find(|p| !expected.contains(p)) {
            return Err(ThresholdError::UnknownParticipant(*extra));
        }
        Err(ThresholdError::Dkg {
            culprits: missing,
            reason: format!("{what} missing"),
        })
    }

    fn dkg_error(&self, e: frost_core::Error<C>) -> ThresholdError {
        let culprits = e
            .culprits()
            .iter()
            .filter_map(|id| ParticipantId::from_identifier(id, self.params.max_signers()))
            .collect();
        ThresholdError::Dkg {
            culprits,
            reason: e.to_string(),
        }
    }

    fn pair_key(
        &self,
        peer_public: &[u8; 32],
        transcript: &[u8; 32],
        binding: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
        agreement::agree(
            &self.x25519,
            UnparsedPublicKey::new(&X25519, peer_public),
            "X25519 agreement failed".to_string(),
            |shared| seal::hkdf_sha256(transcript, shared, binding),
        )
    }
}

fn round2_header(sender: ParticipantId, recipient: ParticipantId) -> [u8; ROUND2_HEADER_LEN] {
    let s = sender.0.to_be_bytes();
    let r = recipient.0.to_be_bytes();
    [ROUND2_VERSION, s[0], s[1], r[0], r[1]]
}

fn binding(
    session_hash: &[u8; 32],
    sender: ParticipantId,
    recipient: ParticipantId,
    transcript: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + 32 + 4 + 32);
    out.extend_from_slice(b"stella/frost-dkg/round2");
    out.extend_from_slice(session_hash);
    out.extend_from_slice(&sender.0.to_be_bytes());
    out.extend_from_slice(&recipient.0.to_be_bytes());
    out.extend_from_slice(transcript);
    out
}

fn aad(header: &[u8], binding: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + binding.len());
    out.extend_from_slice(header);
    out.extend_from_slice(binding);
    out
}

/// SHA-256 over the session hash and every round-1 message in participant order, each
/// length-prefixed.
fn transcript_hash(session_hash: &[u8; 32], round1: &BTreeMap<ParticipantId, Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stella/frost-dkg/transcript");
    h.update(session_hash);
    for (id, bytes) in round1 {
        h.update(id.0.to_be_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

/// Runs a whole DKG in one process (every participant, the relay being a map). For tests,
/// benchmarks and dev clusters; a real deployment runs one [`DkgParticipantOf`] per node.
pub fn dkg_in_process<C: Suite>(
    session: &[u8],
    params: ThresholdParams,
) -> Result<(Vec<KeyShareOf<C>>, GroupKeyOf<C>), ThresholdError> {
    let mut participants = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for p in params.participants() {
        let (participant, message) = DkgParticipantOf::<C>::start(session, p, params)?;
        participants.insert(p, participant);
        round1.insert(p, message);
    }
    let mut inbox: BTreeMap<ParticipantId, BTreeMap<ParticipantId, Vec<u8>>> = BTreeMap::new();
    for (&sender, participant) in participants.iter_mut() {
        for (recipient, sealed) in participant.round2(&round1)? {
            inbox.entry(recipient).or_default().insert(sender, sealed);
        }
    }
    let mut shares = Vec::new();
    let mut group: Option<GroupKeyOf<C>> = None;
    for (p, participant) in participants {
        let (share, g) = participant.finish(&inbox.remove(&p).unwrap_or_default())?;
        if group.as_ref().is_some_and(|known| *known != g) {
            return Err(ThresholdError::Protocol(
                "participants disagree on the group key".into(),
            ));
        }
        group = Some(g);
        shares.push(share);
    }
    let group = group.ok_or_else(|| ThresholdError::Protocol("no participants".into()))?;
    Ok((shares, group))
}

//! Threshold (FROST) core, every protocol test run for both suites (Ed25519 and secp256k1
//! BIP-340): DKG, leader-blind relay, signing with cheater detection, sealed shares, refresh,
//! and verify-only golden vectors per suite.
//!
//! Regenerate the golden vector (only on a deliberate format change):
//! `STELLA_REGENERATE_GOLDEN=1 cargo test -p stella-signer-core --test threshold`

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use futures_executor::block_on;
use serde_json::{Value, json};
use stella_signer::digest::sha256_hex;
use stella_signer::threshold::suite::{Ed25519Sha512, Secp256K1Sha256TR};
use stella_signer::threshold::{
    DkgParticipant, ExclusionReason, GroupKey, KeyShare, ParticipantId, ShareTransport,
    SigningNonces, SuiteId, ThresholdError, ThresholdParams, commit, dkg_in_process, generic,
    in_process_sign, sign_share, threshold_message, threshold_sign, verify_bip340,
};
use stella_signer::{IN_TOTO_PAYLOAD_TYPE, PublicKey, pae};

/// Every protocol test, once per suite.
macro_rules! for_both_suites {
    ($($name:ident),* $(,)?) => {
        mod ed25519 {
            $(#[test]
            fn $name() {
                super::$name(super::SuiteId::Ed25519)
            })*
        }
        mod secp256k1_tr {
            $(#[test]
            fn $name() {
                super::$name(super::SuiteId::Secp256k1Tr)
            })*
        }
    };
}

for_both_suites!(
    dkg_2_of_3_every_pair_signs,
    dkg_3_of_5_every_triple_signs,
    group_key_bytes_round_trip,
    round2_packages_open_only_for_their_recipient,
    a_leader_that_equivocates_in_round_one_is_caught_in_round_three,
    round2_refuses_a_altered_copy_of_our_own_message_and_missing_peers,
    threshold_sign_happy_path,
    the_coordinator_future_is_send_for_a_sync_transport,
    a_faulty_holder_is_named_and_the_others_sign,
    two_faulty_holders_of_three_are_both_named,
    an_unreachable_holder_is_replaced,
    a_holder_with_malformed_commitments_is_replaced,
    fewer_than_t_holders_is_unavailable,
    a_holder_refuses_a_package_without_its_own_commitment,
    sealed_share_round_trip_and_failures,
    a_threshold_signature_verifies_in_an_envelope_with_the_group_spki,
    a_refresh_leaves_a_holder_out_and_keeps_the_group_key,
);

/// The coordinator's signing package for `group`'s suite (a generic-only step of the protocol).
fn signing_package(
    group: &GroupKey,
    commitments: &BTreeMap<ParticipantId, Vec<u8>>,
    message: &[u8],
) -> Result<Vec<u8>, ThresholdError> {
    match group {
        GroupKey::Ed25519(_) => generic::signing_package::<Ed25519Sha512>(commitments, message),
        GroupKey::Secp256k1Tr(_) => {
            generic::signing_package::<Secp256K1Sha256TR>(commitments, message)
        }
    }
}

fn aggregate(
    group: &GroupKey,
    package: &[u8],
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
) -> Result<[u8; 64], ThresholdError> {
    match group {
        GroupKey::Ed25519(g) => generic::aggregate(g, package, shares),
        GroupKey::Secp256k1Tr(g) => generic::aggregate(g, package, shares),
    }
}

fn p(id: u16) -> ParticipantId {
    ParticipantId(id)
}

fn params(t: u16, n: u16) -> ThresholdParams {
    ThresholdParams::new(t, n).expect("params")
}

/// Runs the three DKG rounds with explicit participants, the "leader" being these maps.
/// Returns every participant's share and group key (not deduplicated).
fn run_dkg(suite: SuiteId, t: u16, n: u16) -> Vec<(KeyShare, GroupKey)> {
    let (participants, sealed) = dkg_to_round2(suite, t, n);
    participants
        .into_iter()
        .map(|(me, participant)| participant.finish(&inbox(&sealed, me)).expect("finish"))
        .collect()
}

type Sealed = BTreeMap<ParticipantId, BTreeMap<ParticipantId, Vec<u8>>>;

/// Rounds 1 and 2: the participants, and `sealed[sender][recipient]`.
fn dkg_to_round2(
    suite: SuiteId,
    t: u16,
    n: u16,
) -> (BTreeMap<ParticipantId, DkgParticipant>, Sealed) {
    let params = params(t, n);
    let session = b"dkg-session-test";
    let mut participants = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for id in 1..=n {
        let (participant, message) =
            DkgParticipant::start(suite, session, p(id), params).expect("start");
        participants.insert(p(id), participant);
        round1.insert(p(id), message);
    }
    let mut sealed = BTreeMap::new();
    for (&id, participant) in participants.iter_mut() {
        let out = participant.round2(&round1).expect("round2");
        assert_eq!(out.len(), usize::from(n - 1));
        assert!(!out.contains_key(&id));
        sealed.insert(id, out);
    }
    (participants, sealed)
}

fn inbox(sealed: &Sealed, me: ParticipantId) -> BTreeMap<ParticipantId, Vec<u8>> {
    sealed
        .iter()
        .filter_map(|(&sender, out)| out.get(&me).map(|bytes| (sender, bytes.clone())))
        .collect()
}

fn subsets(n: u16, t: u16) -> Vec<Vec<u16>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() == u32::from(t) {
            out.push((1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect());
        }
    }
    out
}

fn check_dkg_and_every_subset(suite: SuiteId, t: u16, n: u16) {
    let results = run_dkg(suite, t, n);
    let group = results[0].1.clone();
    for (share, g) in &results {
        assert_eq!(*g, group, "every participant ends with the same group key");
        assert_eq!(share.public_key(), group.public_key());
        assert_eq!(share.suite(), suite);
        assert_eq!(share.key_id(), group.key_id());
        assert_eq!(share.min_signers(), t);
    }
    // The registry id is the SPKI id every key has, and the SPKI is of the suite's algorithm.
    let public = group.public_key().clone();
    assert_eq!(group.key_id(), public.key_id());
    assert_eq!(public.algorithm(), suite.algorithm());
    assert_eq!(
        stella_signer::PublicKey::from_pem(&public.to_pem()).expect("pem round trip"),
        public
    );
    assert_eq!(group.participants(), (1..=n).map(p).collect::<Vec<_>>());
    let shares: BTreeMap<u16, KeyShare> = results
        .into_iter()
        .map(|(share, _)| (share.participant().get(), share))
        .collect();

    let message: &[u8] = b"DSSEv1 28 application/vnd.in-toto+json 2 {}";
    for subset in subsets(n, t) {
        let chosen: Vec<KeyShare> = subset
            .iter()
            .map(|i| {
                // Each share goes through seal/open so the subset uses independent copies.
                let kek = [9u8; 32];
                KeyShare::open(&shares[i].seal(&kek, b"t").expect("seal"), &kek, b"t")
                    .expect("open")
            })
            .collect();
        let signature = in_process_sign(&chosen, &group, message).expect("sign");
        assert!(
            public.verify(message, &signature),
            "subset {subset:?}: independent verification with the published key"
        );
        assert!(
            group.frost_verify(&suite.message(message), &signature),
            "subset {subset:?}: FROST's own verification"
        );
        let mut other = message.to_vec();
        other[0] ^= 1;
        assert!(!public.verify(&other, &signature));
    }

    // Fewer than t shares cannot produce a signature.
    let too_few: Vec<KeyShare> = (1..t)
        .map(|i| {
            let kek = [1u8; 32];
            KeyShare::open(&shares[&i].seal(&kek, b"").expect("seal"), &kek, b"").expect("open")
        })
        .collect();
    assert!(matches!(
        in_process_sign(&too_few, &group, message),
        Err(ThresholdError::Unavailable { .. })
    ));
    // And a coordinator that builds a package from t-1 commitments gets no signature either.
    let mut commitments = BTreeMap::new();
    let mut nonces = Vec::new();
    for share in &too_few {
        let (n, c) = commit(share).expect("commit");
        commitments.insert(share.participant(), c);
        nonces.push(n);
    }
    let package = signing_package(&group, &commitments, &suite.message(message)).expect("package");
    for (share, n) in too_few.iter().zip(nonces) {
        assert!(
            sign_share(share, n, &package).is_err(),
            "a holder refuses a package with fewer than t commitments"
        );
    }
    assert!(aggregate(&group, &package, &BTreeMap::new()).is_err());
}

fn dkg_2_of_3_every_pair_signs(suite: SuiteId) {
    check_dkg_and_every_subset(suite, 2, 3);
}

fn dkg_3_of_5_every_triple_signs(suite: SuiteId) {
    check_dkg_and_every_subset(suite, 3, 5);
}

fn group_key_bytes_round_trip(suite: SuiteId) {
    let (_, group) = dkg_in_process(suite, b"s", params(2, 3)).expect("dkg");
    let bytes = group.to_bytes().expect("bytes");
    assert_eq!(GroupKey::from_bytes(&bytes).expect("parse"), group);
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    let mut other_suite = bytes.clone();
    other_suite[0] = match suite {
        SuiteId::Ed25519 => SuiteId::Secp256k1Tr.tag(),
        SuiteId::Secp256k1Tr => SuiteId::Ed25519.tag(),
    };
    assert!(
        GroupKey::from_bytes(&other_suite).is_err(),
        "a key's bytes never parse as the other suite's"
    );
    assert!(GroupKey::from_bytes(&wrong_version).is_err());
    let mut wrong_n = bytes.clone();
    wrong_n[4] = 4; // declares n = 4 for a 3-share package
    assert!(GroupKey::from_bytes(&wrong_n).is_err());
    assert!(GroupKey::from_bytes(&bytes[..4]).is_err());
}

fn round2_packages_open_only_for_their_recipient(suite: SuiteId) {
    let (mut participants, sealed) = dkg_to_round2(suite, 2, 3);
    let for_two = sealed[&p(1)][&p(2)].clone();

    // The relay hands participant 3 the package meant for 2: refused as misaddressed.
    let mut box3 = inbox(&sealed, p(3));
    box3.insert(p(1), for_two.clone());
    let three = participants.remove(&p(3)).expect("3");
    match three.finish(&box3) {
        Err(ThresholdError::SealedPackage { sender, reason }) => {
            assert_eq!(sender, p(1));
            assert!(reason.contains("misaddressed"), "{reason}");
        }
        other => panic!("expected a misaddressed package error, got {other:?}"),
    }

    // Rewriting the header to name 3 does not help: 3 cannot decrypt it.
    let (mut participants, sealed) = dkg_to_round2(suite, 2, 3);
    let mut readdressed = sealed[&p(1)][&p(2)].clone();
    readdressed[3..5].copy_from_slice(&3u16.to_be_bytes());
    let mut box3 = inbox(&sealed, p(3));
    box3.insert(p(1), readdressed);
    let three = participants.remove(&p(3)).expect("3");
    match three.finish(&box3) {
        Err(ThresholdError::SealedPackage { sender, reason }) => {
            assert_eq!(sender, p(1));
            assert!(reason.contains("decryption failed"), "{reason}");
        }
        other => panic!("expected a decryption failure, got {other:?}"),
    }

    // A tampered package is refused by its real recipient, naming the sender.
    let mut tampered = sealed[&p(3)][&p(2)].clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0x01;
    let mut box2 = inbox(&sealed, p(2));
    box2.insert(p(3), tampered);
    let two = participants.remove(&p(2)).expect("2");
    let err = two.finish(&box2).expect_err("tampered");
    assert!(
        matches!(&err, ThresholdError::SealedPackage { sender, .. } if *sender == p(3)),
        "{err:?}"
    );
    assert!(err.to_string().contains("participant 3"), "{err}");

    // The untouched participant still completes.
    let one = participants.remove(&p(1)).expect("1");
    one.finish(&inbox(&sealed, p(1)))
        .expect("participant 1 completes");
}

fn a_leader_that_equivocates_in_round_one_is_caught_in_round_three(suite: SuiteId) {
    let params = params(2, 3);
    let mut participants = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for id in 1..=3 {
        let (participant, message) =
            DkgParticipant::start(suite, b"s", p(id), params).expect("start");
        participants.insert(p(id), participant);
        round1.insert(p(id), message);
    }
    // Participant 2 is shown a different (but individually valid) round-1 message from 3:
    // one from a second run of participant 3 in the same session.
    let (_, other3) = DkgParticipant::start(suite, b"s", p(3), params).expect("start");
    let mut view2 = round1.clone();
    view2.insert(p(3), other3);
    let mut sealed: Sealed = BTreeMap::new();
    for (&id, participant) in participants.iter_mut() {
        let view = if id == p(2) { &view2 } else { &round1 };
        sealed.insert(id, participant.round2(view).expect("round2"));
    }
    let one = participants.remove(&p(1)).expect("1");
    let err = one.finish(&inbox(&sealed, p(1))).expect_err("views differ");
    assert!(
        matches!(err, ThresholdError::SealedPackage { sender, .. } if sender == p(2)),
        "{err:?}"
    );
}

fn round2_refuses_a_altered_copy_of_our_own_message_and_missing_peers(suite: SuiteId) {
    let params = params(2, 3);
    let mut round1 = BTreeMap::new();
    let mut participants = BTreeMap::new();
    for id in 1..=3 {
        let (participant, message) =
            DkgParticipant::start(suite, b"s", p(id), params).expect("start");
        participants.insert(p(id), participant);
        round1.insert(p(id), message);
    }
    let mut altered = round1.clone();
    altered.get_mut(&p(1)).expect("1")[40] ^= 1;
    let one = participants.get_mut(&p(1)).expect("1");
    assert!(matches!(
        one.round2(&altered),
        Err(ThresholdError::Protocol(_))
    ));

    let mut missing = round1.clone();
    missing.remove(&p(3));
    let two = participants.get_mut(&p(2)).expect("2");
    match two.round2(&missing) {
        Err(ThresholdError::Dkg { culprits, .. }) => assert_eq!(culprits, vec![p(3)]),
        other => panic!("expected the missing participant named, got {other:?}"),
    }
}

/// An in-memory stand-in for the node's peer transport.
struct MemoryTransport {
    shares: BTreeMap<ParticipantId, KeyShare>,
    down: BTreeSet<ParticipantId>,
    faulty: BTreeSet<ParticipantId>,
    garbled_commitments: BTreeSet<ParticipantId>,
    nonces: Mutex<BTreeMap<(ParticipantId, Vec<u8>), SigningNonces>>,
    sessions: Mutex<Vec<Vec<u8>>>,
}

impl MemoryTransport {
    fn new(shares: Vec<KeyShare>) -> MemoryTransport {
        MemoryTransport {
            shares: shares.into_iter().map(|s| (s.participant(), s)).collect(),
            down: BTreeSet::new(),
            faulty: BTreeSet::new(),
            garbled_commitments: BTreeSet::new(),
            nonces: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(Vec::new()),
        }
    }

    fn share(&self, holder: ParticipantId, key_id: &str) -> Result<&KeyShare, ThresholdError> {
        if self.down.contains(&holder) {
            return Err(ThresholdError::Transport {
                holder,
                reason: "connection refused".into(),
            });
        }
        let share = self
            .shares
            .get(&holder)
            .ok_or(ThresholdError::UnknownParticipant(holder))?;
        assert_eq!(share.key_id(), key_id);
        Ok(share)
    }
}

impl ShareTransport for MemoryTransport {
    async fn commit(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let share = self.share(holder, key_id)?;
        let (nonces, commitments) = commit(share)?;
        self.sessions.lock().expect("lock").push(session.to_vec());
        let previous = self
            .nonces
            .lock()
            .expect("lock")
            .insert((holder, session.to_vec()), nonces);
        assert!(previous.is_none(), "a session id is never reused");
        if self.garbled_commitments.contains(&holder) {
            return Ok(b"garbage".to_vec());
        }
        Ok(commitments)
    }

    async fn sign(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
        signing_package: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let share = self.share(holder, key_id)?;
        let nonces = self
            .nonces
            .lock()
            .expect("lock")
            .remove(&(holder, session.to_vec()))
            .ok_or_else(|| ThresholdError::Protocol("no nonces for this session".into()))?;
        let mut out = sign_share(share, nonces, signing_package)?;
        if self.faulty.contains(&holder) {
            // A well-formed but wrong share: z + 1 (big-endian scalar, carry propagated).
            // Adding, not flipping a bit: two flipped bits can cancel out in the sum of shares
            // and make a valid signature, which the coordinator rightly accepts.
            for byte in out.iter_mut().rev() {
                let (next, carry) = byte.overflowing_add(1);
                *byte = next;
                if !carry {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn transport(suite: SuiteId, t: u16, n: u16) -> (MemoryTransport, GroupKey) {
    let (shares, group) = dkg_in_process(suite, b"transport", params(t, n)).expect("dkg");
    (MemoryTransport::new(shares), group)
}

fn all(n: u16) -> Vec<ParticipantId> {
    (1..=n).map(p).collect()
}

fn threshold_sign_happy_path(suite: SuiteId) {
    let (transport, group) = transport(suite, 3, 5);
    let message: &[u8] = b"payload";
    let out = block_on(threshold_sign(&transport, &group, &all(5), message)).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
    assert_eq!(out.signers, vec![p(1), p(2), p(3)]);
    assert!(out.excluded.is_empty());
    assert!(
        transport.nonces.lock().expect("lock").is_empty(),
        "every nonce was consumed"
    );
}

fn the_coordinator_future_is_send_for_a_sync_transport(suite: SuiteId) {
    fn send<F: Send>(f: F) -> F {
        f
    }
    let (transport, group) = transport(suite, 2, 3);
    let message: &[u8] = b"payload";
    let out = block_on(send(threshold_sign(&transport, &group, &all(3), message))).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
}

fn a_faulty_holder_is_named_and_the_others_sign(suite: SuiteId) {
    let (mut transport, group) = transport(suite, 2, 3);
    transport.faulty.insert(p(1));
    let message: &[u8] = b"payload";
    let out = block_on(threshold_sign(&transport, &group, &all(3), message)).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
    assert_eq!(out.signers, vec![p(2), p(3)]);
    assert_eq!(out.excluded, vec![(p(1), ExclusionReason::BadShare)]);
    let sessions = transport.sessions.lock().expect("lock").clone();
    assert_eq!(
        sessions.iter().collect::<BTreeSet<_>>().len(),
        2,
        "the retry ran under a fresh session id"
    );

    let (mut transport, group) = self::transport(suite, 3, 5);
    transport.faulty.insert(p(2));
    let out = block_on(threshold_sign(&transport, &group, &all(5), message)).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
    assert!(!out.signers.contains(&p(2)));
    assert_eq!(out.excluded, vec![(p(2), ExclusionReason::BadShare)]);
}

fn two_faulty_holders_of_three_are_both_named(suite: SuiteId) {
    let (mut transport, group) = transport(suite, 2, 3);
    transport.faulty.insert(p(1));
    transport.faulty.insert(p(2));
    let message: &[u8] = b"payload";
    match block_on(threshold_sign(&transport, &group, &all(3), message)) {
        Err(ThresholdError::BadShare { culprits }) => assert_eq!(culprits, vec![p(1), p(2)]),
        other => panic!("expected BadShare naming 1 and 2, got {other:?}"),
    }
}

fn an_unreachable_holder_is_replaced(suite: SuiteId) {
    let (mut transport, group) = transport(suite, 2, 3);
    transport.down.insert(p(1));
    let message: &[u8] = b"payload";
    let out = block_on(threshold_sign(&transport, &group, &all(3), message)).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
    assert_eq!(out.signers, vec![p(2), p(3)]);
    assert!(matches!(
        out.excluded.as_slice(),
        [(holder, ExclusionReason::Unreachable(_))] if *holder == p(1)
    ));
}

fn a_holder_with_malformed_commitments_is_replaced(suite: SuiteId) {
    let (mut transport, group) = transport(suite, 2, 3);
    transport.garbled_commitments.insert(p(2));
    let message: &[u8] = b"payload";
    let out = block_on(threshold_sign(&transport, &group, &all(3), message)).expect("sign");
    assert!(group.public_key().verify(message, &out.signature));
    assert_eq!(out.signers, vec![p(1), p(3)]);
    assert!(matches!(
        out.excluded.as_slice(),
        [(holder, ExclusionReason::MalformedCommitments(_))] if *holder == p(2)
    ));
}

fn fewer_than_t_holders_is_unavailable(suite: SuiteId) {
    let (mut transport, group) = transport(suite, 3, 5);
    transport.down.extend([p(1), p(3), p(5)]);
    let message: &[u8] = b"payload";
    match block_on(threshold_sign(&transport, &group, &all(5), message)) {
        Err(ThresholdError::Unavailable { have, need }) => {
            assert_eq!((have, need), (2, 3));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Too few listed as available: refused before any call.
    let (transport, group) = self::transport(suite, 3, 5);
    match block_on(threshold_sign(&transport, &group, &[p(1), p(2)], message)) {
        Err(ThresholdError::Unavailable { have, need }) => assert_eq!((have, need), (2, 3)),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(transport.sessions.lock().expect("lock").is_empty());
    // An id outside the group is a caller bug, not a holder to try.
    assert!(matches!(
        block_on(threshold_sign(&transport, &group, &[p(1), p(9)], message)),
        Err(ThresholdError::UnknownParticipant(ParticipantId(9)))
    ));
}

fn a_holder_refuses_a_package_without_its_own_commitment(suite: SuiteId) {
    let (shares, group) = dkg_in_process(suite, b"s", params(2, 3)).expect("dkg");
    let message: &[u8] = b"payload";

    // The package carries 2 and 3, not 1.
    let (nonces1, _) = commit(&shares[0]).expect("commit");
    let mut commitments = BTreeMap::new();
    for share in &shares[1..] {
        commitments.insert(share.participant(), commit(share).expect("commit").1);
    }
    let package = signing_package(&group, &commitments, &suite.message(message)).expect("package");
    assert!(matches!(
        sign_share(&shares[0], nonces1, &package),
        Err(ThresholdError::CommitmentMismatch { participant, .. }) if participant == p(1)
    ));

    // The package carries a commitment for 1, but not the one these nonces belong to.
    let (nonces1, _) = commit(&shares[0]).expect("commit");
    let (_, other1) = commit(&shares[0]).expect("commit");
    let mut commitments = BTreeMap::new();
    commitments.insert(p(1), other1);
    commitments.insert(p(2), commit(&shares[1]).expect("commit").1);
    let package = signing_package(&group, &commitments, &suite.message(message)).expect("package");
    assert!(matches!(
        sign_share(&shares[0], nonces1, &package),
        Err(ThresholdError::CommitmentMismatch { participant, .. }) if participant == p(1)
    ));

    // Nonces committed with one share cannot be used with another.
    let (nonces2, c2) = commit(&shares[1]).expect("commit");
    let (_, c1) = commit(&shares[0]).expect("commit");
    let package = signing_package(
        &group,
        &BTreeMap::from([(p(1), c1), (p(2), c2)]),
        &suite.message(message),
    )
    .expect("package");
    assert!(matches!(
        sign_share(&shares[0], nonces2, &package),
        Err(ThresholdError::Protocol(_))
    ));

    // Bytes that are not a signing package are refused.
    let (nonces1, _) = commit(&shares[0]).expect("commit");
    assert!(sign_share(&shares[0], nonces1, b"not a package").is_err());
    // For secp256k1, a message that is not 32 bytes is refused (the contract is SHA-256(PAE)).
    if suite == SuiteId::Secp256k1Tr {
        let (nonces1, c1) = commit(&shares[0]).expect("commit");
        let (_, c2) = commit(&shares[1]).expect("commit");
        let package = signing_package(&group, &BTreeMap::from([(p(1), c1), (p(2), c2)]), b"a PAE")
            .expect("package");
        assert!(matches!(
            sign_share(&shares[0], nonces1, &package),
            Err(ThresholdError::Malformed { .. })
        ));
    }
}

fn sealed_share_round_trip_and_failures(suite: SuiteId) {
    let (shares, group) = dkg_in_process(suite, b"s", params(2, 3)).expect("dkg");
    let kek = [42u8; 32];
    let aad = b"node-1/key";
    let sealed = shares[0].seal(&kek, aad).expect("seal");
    assert_eq!(sealed[0], suite.tag(), "the suite's tag leads");
    let opened = KeyShare::open(&sealed, &kek, aad).expect("open");
    assert_eq!(opened.participant(), shares[0].participant());
    assert_eq!(opened.key_id(), group.key_id());
    let message: &[u8] = b"x";
    let signature = in_process_sign(
        &[
            opened,
            KeyShare::open(&shares[1].seal(&kek, aad).expect("s"), &kek, aad).expect("o"),
        ],
        &group,
        message,
    )
    .expect("sign with opened shares");
    assert!(group.public_key().verify(message, &signature));

    assert!(
        KeyShare::open(&sealed, &[43u8; 32], aad).is_err(),
        "wrong KEK"
    );
    assert!(
        KeyShare::open(&sealed, &kek, b"node-2/key").is_err(),
        "wrong AAD"
    );
    for i in [0, 1, 13, sealed.len() / 2, sealed.len() - 1] {
        let mut flipped = sealed.clone();
        flipped[i] ^= 0x80;
        assert!(
            KeyShare::open(&flipped, &kek, aad).is_err(),
            "flipped byte {i}"
        );
    }
    assert!(
        KeyShare::open(&sealed[..20], &kek, aad).is_err(),
        "truncated"
    );
    assert!(KeyShare::open(&[], &kek, aad).is_err(), "empty");

    // Two seals of the same share differ (random nonce).
    assert_ne!(sealed, shares[0].seal(&kek, aad).expect("seal"));

    let debug = format!("{:?}", shares[0]);
    assert!(debug.contains(&group.key_id()), "{debug}");
    assert!(!debug.to_lowercase().contains("signing_share"), "{debug}");
}

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/vectors/golden")
    .join(name)
}

fn hex32(v: &Value, field: &str) -> [u8; 32] {
    hex::decode(v[field].as_str().expect(field))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn read_vector(name: &str) -> (Value, Vec<u8>, [u8; 64], GroupKey) {
    let vector: Value =
        serde_json::from_slice(&fs::read(vector_path(name)).expect("vector file")).expect("json");
    let pae = pae(
        vector["payloadType"].as_str().expect("type"),
        vector["payload"].as_str().expect("payload").as_bytes(),
    );
    let signature: [u8; 64] = hex::decode(vector["signature_hex"].as_str().expect("sig"))
        .expect("hex")
        .try_into()
        .expect("64 bytes");
    let group = GroupKey::from_bytes(
        &hex::decode(vector["group_key_hex"].as_str().expect("group")).expect("hex"),
    )
    .expect("group key");
    (vector, pae, signature, group)
}

const GOLDEN_PAYLOAD: &str = r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{},"predicateType":"stella.ops/sbom@v1","subject":[{"digest":{"sha256":"5b3d0a47f4bd1ec2b6f2e5a9be1b5d4e01e6cf8e3ab3e8f3c9c1c7e2b5a4d3c2"},"name":"registry.example/app"}]}"#;

/// The secp256k1 vector predates the Ed25519 suite: its group-key bytes (tag 1) still parse,
/// so keys made before the suites existed keep working.
#[test]
fn golden_bip340_threshold_vector() {
    if std::env::var_os("STELLA_REGENERATE_GOLDEN").is_some() {
        regenerate_bip340_vector();
    }
    let (vector, pae, signature, group) = read_vector("bip340-threshold.json");
    let message = threshold_message(&pae);
    assert_eq!(
        hex::encode(message),
        vector["message_hex"].as_str().expect("message")
    );
    let x_only = hex32(&vector, "x_only_hex");
    assert_eq!(
        sha256_hex(&x_only),
        vector["key_id"].as_str().expect("key id")
    );
    assert!(verify_bip340(&x_only, &message, &signature));
    assert_eq!(group.suite(), SuiteId::Secp256k1Tr);
    assert_eq!(group.public_key().bip340_x_only(), Some(x_only));
    assert!(group.frost_verify(&message, &signature));
    assert!(group.public_key().verify(&pae, &signature));
    let mut tampered = signature;
    tampered[63] ^= 1;
    assert!(!verify_bip340(&x_only, &message, &tampered));
}

fn regenerate_bip340_vector() {
    let (shares, group) =
        dkg_in_process(SuiteId::Secp256k1Tr, b"golden", params(2, 3)).expect("dkg");
    let pae = pae(IN_TOTO_PAYLOAD_TYPE, GOLDEN_PAYLOAD.as_bytes());
    let signature = in_process_sign(&shares[1..], &group, &pae).expect("sign");
    write_vector(
        "bip340-threshold.json",
        json!({
            "description": "BIP-340 signature by a 2-of-3 FROST group (participants 2 and 3) over SHA-256(DSSE PAE); verify-only, signatures are randomized",
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": GOLDEN_PAYLOAD,
            "message_hex": hex::encode(threshold_message(&pae)),
            "x_only_hex": hex::encode(group.public_key().bip340_x_only().expect("x-only")),
            "key_id": sha256_hex(&group.public_key().bip340_x_only().expect("x-only")),
            "signature_hex": hex::encode(signature),
            "group_key_hex": hex::encode(group.to_bytes().expect("bytes")),
        }),
    );
}

/// An Ed25519 FROST signature is a plain RFC 8032 signature over the PAE: the vector's raw
/// public key and signature verify with aws-lc-rs, and the key id is the SPKI's like any key's.
#[test]
fn golden_ed25519_threshold_vector() {
    if std::env::var_os("STELLA_REGENERATE_GOLDEN").is_some() {
        regenerate_ed25519_vector();
    }
    let (vector, pae, signature, group) = read_vector("ed25519-threshold.json");
    let public = PublicKey::from_ed25519(&hex32(&vector, "public_key_hex")).expect("ed25519 key");
    assert_eq!(public.key_id(), vector["key_id"].as_str().expect("key id"));
    assert_eq!(
        public.to_pem(),
        vector["public_key_pem"].as_str().expect("pem")
    );
    assert!(public.verify(&pae, &signature));
    assert_eq!(group.suite(), SuiteId::Ed25519);
    assert_eq!(group.public_key(), &public);
    assert!(group.frost_verify(&pae, &signature));
    let mut tampered = signature;
    tampered[63] ^= 1;
    assert!(!public.verify(&pae, &tampered));
    let mut other = pae.clone();
    other[10] ^= 1;
    assert!(!public.verify(&other, &signature));
}

fn regenerate_ed25519_vector() {
    let (shares, group) = dkg_in_process(SuiteId::Ed25519, b"golden", params(2, 3)).expect("dkg");
    let pae = pae(IN_TOTO_PAYLOAD_TYPE, GOLDEN_PAYLOAD.as_bytes());
    let signature = in_process_sign(&shares[1..], &group, &pae).expect("sign");
    write_vector(
        "ed25519-threshold.json",
        json!({
            "description": "Ed25519 signature by a 2-of-3 FROST(Ed25519, SHA-512) group (participants 2 and 3) over the DSSE PAE itself; verify-only, signatures are randomized",
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": GOLDEN_PAYLOAD,
            "public_key_hex": hex::encode(group.public_key().ed25519_raw().expect("ed25519")),
            "public_key_pem": group.public_key().to_pem(),
            "key_id": group.key_id(),
            "signature_hex": hex::encode(signature),
            "group_key_hex": hex::encode(group.to_bytes().expect("bytes")),
        }),
    );
}

fn write_vector(name: &str, vector: Value) {
    let mut text = serde_json::to_string_pretty(&vector).expect("json");
    text.push('\n');
    fs::write(vector_path(name), text).expect("write vector");
}

/// A threshold signature in a DSSE envelope verifies offline like any other: the group's SPKI
/// (secp256k1, even-Y point of the x-only key) checks BIP-340 over SHA-256(PAE); P-256 keys and
/// other groups do not.
fn a_threshold_signature_verifies_in_an_envelope_with_the_group_spki(suite: SuiteId) {
    use stella_signer::{Envelope, EnvelopeSignature};
    let (shares, group) = dkg_in_process(
        suite,
        b"envelope",
        ThresholdParams::new(2, 3).expect("params"),
    )
    .expect("dkg");
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1","predicate":{},"predicateType":"stella.ops/sbom@v1","subject":[{"digest":{"sha256":"aa"},"name":"x"}]}"#.to_vec();
    let pae = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let signature = in_process_sign(&shares[..2], &group, &pae).expect("sign");
    let envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: vec![EnvelopeSignature {
            keyid: Some(group.key_id()),
            sig: signature.to_vec(),
        }],
    };
    let public = group.public_key().clone();
    let verified = stella_signer::verify::verify_envelope(&envelope, &public).expect("verifies");
    assert_eq!(verified.key_id, group.key_id());
    let p256 = stella_signer::FileKeySigner::generate().expect("p256");
    assert!(stella_signer::verify::verify_envelope(&envelope, p256.public_key()).is_err());
    let (_, other) =
        dkg_in_process(suite, b"other", ThresholdParams::new(2, 3).expect("params")).expect("dkg");
    assert!(stella_signer::verify::verify_envelope(&envelope, other.public_key()).is_err());
}

/// A proactive refresh among holders 1 and 2 of a 2-of-3 key: same group key, new shares that
/// sign; holder 3 is out — its old share no longer combines with a new one; the group lists
/// only 1 and 2. Round-2 packages travel sealed, as in a DKG.
fn a_refresh_leaves_a_holder_out_and_keeps_the_group_key(suite: SuiteId) {
    let (shares, group) = dkg_in_process(suite, b"before", params(2, 3)).expect("dkg");
    let keep = vec![p(1), p(2)];
    let mut running = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for share in shares.iter().take(2) {
        let (participant, message) = stella_signer::threshold::DkgParticipant::start_refresh(
            b"refresh",
            share,
            &group,
            keep.clone(),
        )
        .expect("start refresh");
        round1.insert(share.participant(), message);
        running.insert(share.participant(), participant);
    }
    let mut inbox: BTreeMap<ParticipantId, BTreeMap<ParticipantId, Vec<u8>>> = BTreeMap::new();
    for (&sender, participant) in running.iter_mut() {
        for (recipient, sealed) in participant.round2(&round1).expect("round 2") {
            inbox.entry(recipient).or_default().insert(sender, sealed);
        }
    }
    let mut fresh = Vec::new();
    let mut new_group = None;
    for (id, participant) in running {
        let (share, g) = participant
            .finish(&inbox.remove(&id).unwrap_or_default())
            .expect("finish");
        fresh.push(share);
        new_group = Some(g);
    }
    let new_group = new_group.expect("group");
    assert_eq!(
        new_group.public_key(),
        group.public_key(),
        "the key is unchanged"
    );
    assert_eq!(new_group.key_id(), group.key_id());
    assert_eq!(new_group.participants(), keep);
    assert_ne!(
        fresh[0].verifying_share().expect("vs"),
        shares[0].verifying_share().expect("vs"),
        "every share changed"
    );
    assert_eq!(
        new_group.verifying_share(p(1)),
        Some(fresh[0].verifying_share().expect("vs"))
    );
    let message: &[u8] = b"after the refresh";
    let signature = in_process_sign(&fresh, &new_group, message).expect("new shares sign");
    assert!(group.public_key().verify(message, &signature));
    // The left-out holder's old share does not combine with a refreshed one.
    let kek = [9u8; 32];
    let copy = |s: &KeyShare| {
        KeyShare::open(&s.seal(&kek, b"t").expect("seal"), &kek, b"t").expect("open")
    };
    assert!(in_process_sign(&[copy(&fresh[0]), copy(&shares[2])], &group, message).is_err());
    // And fewer than t holders cannot refresh.
    assert!(
        stella_signer::threshold::DkgParticipant::start_refresh(
            b"x",
            &shares[0],
            &group,
            vec![p(1)]
        )
        .is_err()
    );
}

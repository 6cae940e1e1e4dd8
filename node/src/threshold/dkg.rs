//! Distributed key generation and share refresh, driven by the leader (see the module docs
//! of [`crate::threshold`] for why round-1 messages go directly between holders).

use std::collections::BTreeMap;

use futures_util::future::join_all;
use stella_signer::threshold::{GroupKey, SuiteId, ThresholdParams};
use stella_state::command::ThresholdGroup;

use super::*;

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

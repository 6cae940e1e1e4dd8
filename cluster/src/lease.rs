//! Who may act for clients, and when a node is ready: pure decisions over Raft's metrics.
//!
//! openraft 0.9 keeps a partitioned leader in the leader state until it hears a higher term,
//! and a restarted node may believe in an old leader for a moment. Neither may serve clients:
//!
//! - **Leader lease (check-quorum).** A leader serves only while a quorum acknowledged it within
//!   the longest election timeout (openraft's `millis_since_quorum_ack`). openraft's followers
//!   refuse votes for that long after a heartbeat, so no other leader can exist inside the
//!   window; past it the old leader answers 503 at once instead of letting requests wait for a
//!   commit that cannot come.
//! - **Follower contact.** A follower is ready only while it accepted an AppendEntries from the
//!   leader of its current term within the longest election timeout, and has applied what that
//!   leader had committed (less a small lag): a restarted node is not ready until it caught up
//!   with the current term.
//!
//! ADR 0015 records the choice.

use std::time::Duration;

use stella_state::raft_types::NodeId;

/// How often waits on the lease look at the metrics again.
pub const POLL: Duration = Duration::from_millis(25);

/// Entries a ready follower may trail the leader's commit index by (two AppendEntries batches:
/// under load a follower always has some in flight).
pub const MAX_APPLY_LAG: u64 = 2 * crate::MAX_PAYLOAD_ENTRIES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
}

/// An AppendEntries this node accepted.
#[derive(Debug, Clone)]
pub struct Contact {
    pub at: std::time::Instant,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub leader_commit: Option<u64>,
}

/// What the decisions read, gathered from the metrics at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub node_id: NodeId,
    pub member: bool,
    pub single_voter: bool,
    pub leader: bool,
    pub term: u64,
    pub current_leader: Option<NodeId>,
    pub millis_since_quorum_ack: Option<u64>,
    /// `(term, index)` of the last applied entry.
    pub applied: Option<(u64, u64)>,
    pub since_contact: Option<Duration>,
    pub contact_term: Option<u64>,
    pub contact_leader_commit: Option<u64>,
}

/// Whether this node may act as leader for clients now.
pub fn serving_leader(facts: &Facts, timing: &Timing) -> bool {
    facts.leader
        && (facts.single_voter
            || facts
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) <= timing.election_max))
}

/// Whether this node leads but its lease lapsed: a quorum acknowledged it once, and not within
/// the longest election timeout since (cut off, or frozen). A leader not yet acknowledged at all
/// (just elected) has not lapsed: its first heartbeat round is a moment away.
pub fn lease_lapsed(facts: &Facts, timing: &Timing) -> bool {
    facts.leader
        && !facts.single_voter
        && facts
            .millis_since_quorum_ack
            .is_some_and(|ms| Duration::from_millis(ms) > timing.election_max)
}

/// One readiness check and, when it fails, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: Option<String>,
}

impl Check {
    fn new(name: &'static str, ok: bool, why: impl FnOnce() -> String) -> Check {
        Check {
            name,
            ok,
            detail: (!ok).then(why),
        }
    }
}

/// The cluster's readiness checks: member, leader known and in contact (with a commit within
/// the lease), caught up with the current term.
pub fn checks(facts: &Facts, timing: &Timing) -> Vec<Check> {
    let member = Check::new("cluster_member", facts.member, || {
        "not a member yet: run `stella-signer cluster init` or `join`".into()
    });
    let leader_known = Check::new("leader_known", facts.current_leader.is_some(), || {
        "no leader: the cluster has no quorum or is electing one".into()
    });
    let in_contact = if facts.leader {
        Check::new("leader_lease", serving_leader(facts, timing), || {
            format!(
                "this node leads term {} but no quorum acknowledged it within {} ms",
                facts.term,
                timing.election_max.as_millis()
            )
        })
    } else {
        let fresh = facts
            .since_contact
            .is_some_and(|d| d <= timing.election_max)
            && facts.contact_term == Some(facts.term);
        Check::new(
            "leader_contact",
            fresh || facts.single_voter,
            || match facts.since_contact {
                Some(d) => format!(
                    "no AppendEntries from the leader of term {} for {} ms",
                    facts.term,
                    d.as_millis()
                ),
                None => "no AppendEntries from a leader since this node started".into(),
            },
        )
    };
    let caught_up = {
        let applied_term = facts.applied.map(|(t, _)| t);
        let applied_index = facts.applied.map_or(0, |(_, i)| i);
        let of_term = applied_term == Some(facts.term);
        let close = facts.leader
            || facts.single_voter
            || facts
                .contact_leader_commit
                .is_none_or(|c| applied_index.saturating_add(MAX_APPLY_LAG) >= c);
        Check::new("caught_up", of_term && close, || {
            format!(
                "applied {applied_index} (term {}), the leader of term {} has committed {}",
                applied_term.unwrap_or(0),
                facts.term,
                facts
                    .contact_leader_commit
                    .map_or_else(|| "?".into(), |c| c.to_string())
            )
        })
    };
    vec![member, leader_known, in_contact, caught_up]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(250),
            election_max: Duration::from_millis(500),
        }
    }

    fn leader() -> Facts {
        Facts {
            node_id: 1,
            member: true,
            leader: true,
            term: 3,
            current_leader: Some(1),
            millis_since_quorum_ack: Some(40),
            applied: Some((3, 10)),
            ..Facts::default()
        }
    }

    fn follower() -> Facts {
        Facts {
            node_id: 2,
            member: true,
            term: 3,
            current_leader: Some(1),
            applied: Some((3, 10)),
            since_contact: Some(Duration::from_millis(80)),
            contact_term: Some(3),
            contact_leader_commit: Some(12),
            ..Facts::default()
        }
    }

    fn failing(facts: &Facts) -> Vec<&'static str> {
        checks(facts, &timing())
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_leader_serves_only_within_its_lease() {
        assert!(serving_leader(&leader(), &timing()));
        assert!(failing(&leader()).is_empty());
        let partitioned = Facts {
            millis_since_quorum_ack: Some(501),
            ..leader()
        };
        assert!(!serving_leader(&partitioned, &timing()));
        assert!(lease_lapsed(&partitioned, &timing()));
        assert_eq!(failing(&partitioned), ["leader_lease"]);
        let never_acked = Facts {
            millis_since_quorum_ack: None,
            ..leader()
        };
        assert!(!serving_leader(&never_acked, &timing()));
        // Just elected: not ready yet, but not cut off either.
        assert!(!lease_lapsed(&never_acked, &timing()));
        let alone = Facts {
            single_voter: true,
            millis_since_quorum_ack: None,
            ..leader()
        };
        assert!(serving_leader(&alone, &timing()));
        // A new leader serves clients once its own term's first entry applied.
        let fresh = Facts {
            applied: Some((2, 9)),
            ..leader()
        };
        assert_eq!(failing(&fresh), ["caught_up"]);
    }

    #[test]
    fn a_follower_is_ready_in_contact_and_caught_up() {
        assert!(failing(&follower()).is_empty());
        let silent = Facts {
            since_contact: Some(Duration::from_millis(900)),
            ..follower()
        };
        assert_eq!(failing(&silent), ["leader_contact"]);
        // Restarted: it remembers the term and the leader, but heard nothing yet.
        let restarted = Facts {
            since_contact: None,
            contact_term: None,
            contact_leader_commit: None,
            ..follower()
        };
        assert_eq!(failing(&restarted), ["leader_contact"]);
        // Catching up after a restart: in contact, far behind the leader's commit.
        let behind = Facts {
            applied: Some((3, 10)),
            contact_leader_commit: Some(10 + MAX_APPLY_LAG + 1),
            ..follower()
        };
        assert_eq!(failing(&behind), ["caught_up"]);
        let old_term = Facts {
            applied: Some((2, 10)),
            ..follower()
        };
        assert_eq!(failing(&old_term), ["caught_up"]);
        let electing = Facts {
            current_leader: None,
            ..follower()
        };
        assert_eq!(failing(&electing), ["leader_known"]);
    }
}

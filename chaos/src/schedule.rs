//! The nemesis schedule: which fault, when, for how long — generated from a seed alone, so
//! `--seed` reproduces a drill's plan exactly (pure; the nodes a selector names are resolved
//! when the fault is injected, from a second seeded stream).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One kind of fault. Selectors (`leader`, `follower`, `random`) are resolved at injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader, restart it when the fault ends.
    KillLeader,
    KillFollower,
    KillRandom,
    /// SIGSTOP the leader, SIGCONT when the fault ends.
    PauseLeader,
    PauseFollower,
    /// Cut the leader's peer links to every other node.
    IsolateLeader,
    /// A random minority (one node of three, two of five) cut off from the majority.
    SplitMinority,
    /// Non-transitive: two nodes cannot reach each other, but both reach a third (the bridge).
    Bridge,
    /// Kill and restart one follower several times in a row, without waiting for it to catch up.
    RestartLoop,
    /// Restart a random node with its clock off by up to ±40 s (libfaketime), back to the true
    /// clock when the fault ends — within the nodes' default 60 s tolerance, so honest clients
    /// must not notice beyond the restart.
    ClockSkew,
    /// Fill the filesystem under a random node's data directory (it must fail closed), and
    /// free it when the fault ends (it must recover without a restart).
    DiskFull,
    /// Add latency (100–400 ms each way, seeded) to every peer link of a random node, through
    /// the TCP fault proxy.
    LinkDelay,
    /// Black-hole every peer link of a random node (accepted, nothing passes) through the
    /// proxy; what waited flows again when the fault ends.
    LinkDrop,
    /// Reset every peer connection of the leader and refuse new ones (the proxy resets them).
    LinkReset,
    /// Remove a follower from the cluster (operator CLI) and stop it; when the fault ends a
    /// fresh node (empty data directory) joins in its place, under load.
    Membership,
    /// Stop a follower until the others have compacted their logs past its position, then
    /// start it again: it must catch up by installing a snapshot, under load.
    SnapshotCatchup,
}

pub const ALL_KINDS: [FaultKind; 16] = [
    FaultKind::KillLeader,
    FaultKind::KillFollower,
    FaultKind::KillRandom,
    FaultKind::PauseLeader,
    FaultKind::PauseFollower,
    FaultKind::IsolateLeader,
    FaultKind::SplitMinority,
    FaultKind::Bridge,
    FaultKind::RestartLoop,
    FaultKind::ClockSkew,
    FaultKind::DiskFull,
    FaultKind::LinkDelay,
    FaultKind::LinkDrop,
    FaultKind::LinkReset,
    FaultKind::Membership,
    FaultKind::SnapshotCatchup,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillRandom => "kill-random",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseFollower => "pause-follower",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitMinority => "split-minority",
            FaultKind::Bridge => "bridge",
            FaultKind::RestartLoop => "restart-loop",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::DiskFull => "disk-full",
            FaultKind::LinkDelay => "link-delay",
            FaultKind::LinkDrop => "link-drop",
            FaultKind::LinkReset => "link-reset",
            FaultKind::Membership => "membership",
            FaultKind::SnapshotCatchup => "snapshot-catchup",
        }
    }

    /// Needs the TCP fault proxy in front of the peer listeners (`--local`).
    pub fn is_link(self) -> bool {
        matches!(
            self,
            FaultKind::LinkDelay | FaultKind::LinkDrop | FaultKind::LinkReset
        )
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        ALL_KINDS.iter().copied().find(|k| k.name() == name)
    }

    /// Needs peer links that can be cut (firewall rules or the operator's partition command).
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader | FaultKind::SplitMinority | FaultKind::Bridge
        )
    }
}

/// One planned fault: injected `at_s` seconds into the drill (or as soon after as the previous
/// fault has healed and the cluster recovered), held for `hold_s` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFault {
    pub at_s: f64,
    pub kind: FaultKind,
    pub hold_s: f64,
}

/// Shape of a schedule.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub duration_s: f64,
    pub kinds: Vec<FaultKind>,
    /// Load before the first fault.
    pub warmup_s: f64,
    /// Load after the last heal, before the drill ends.
    pub cooldown_s: f64,
    /// Fault length bounds.
    pub hold_s: (f64, f64),
    /// Quiet time between a heal and the next fault.
    pub quiet_s: (f64, f64),
}

impl Plan {
    pub fn new(seed: u64, duration_s: f64, kinds: Vec<FaultKind>) -> Plan {
        Plan {
            seed,
            duration_s,
            kinds,
            warmup_s: 5.0,
            cooldown_s: 8.0,
            hold_s: (3.0, 8.0),
            quiet_s: (4.0, 8.0),
        }
    }
}

/// The schedule of `plan`: every kind once first (in a seeded order), then kinds at random,
/// while a fault and its quiet time still fit before the cool-down.
pub fn generate(plan: &Plan) -> Vec<PlannedFault> {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut first: Vec<FaultKind> = plan.kinds.clone();
    // Fisher–Yates with the seeded stream.
    for i in (1..first.len()).rev() {
        let j = rng.gen_range(0..=i);
        first.swap(i, j);
    }
    let mut out = Vec::new();
    let mut t = plan.warmup_s;
    let end = plan.duration_s - plan.cooldown_s;
    let mut n = 0usize;
    loop {
        if plan.kinds.is_empty() {
            break;
        }
        let kind = match first.get(n) {
            Some(k) => *k,
            None => plan.kinds[rng.gen_range(0..plan.kinds.len())],
        };
        let hold = round_tenth(rng.gen_range(plan.hold_s.0..=plan.hold_s.1));
        let quiet = round_tenth(rng.gen_range(plan.quiet_s.0..=plan.quiet_s.1));
        if t + hold > end {
            break;
        }
        out.push(PlannedFault {
            at_s: round_tenth(t),
            kind,
            hold_s: hold,
        });
        t += hold + quiet;
        n += 1;
    }
    out
}

fn round_tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The stream that picks nodes for selectors (`follower`, `random`, the bridge), seeded from the
/// drill's seed so that the same cluster history picks the same nodes.
pub fn picker(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0fc_4a05_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_every_kind_first() {
        let plan = Plan::new(7, 300.0, ALL_KINDS.to_vec());
        let a = generate(&plan);
        assert_eq!(a, generate(&plan));
        assert_ne!(a, generate(&Plan::new(8, 300.0, ALL_KINDS.to_vec())));
        let mut kinds: Vec<FaultKind> = a.iter().take(ALL_KINDS.len()).map(|f| f.kind).collect();
        kinds.sort();
        let mut all = ALL_KINDS.to_vec();
        all.sort();
        assert_eq!(kinds, all);
    }

    #[test]
    fn faults_fit_the_drill_and_do_not_overlap() {
        let plan = Plan::new(1, 60.0, vec![FaultKind::KillLeader, FaultKind::PauseLeader]);
        let s = generate(&plan);
        assert!(!s.is_empty());
        assert!(s[0].at_s >= plan.warmup_s);
        for w in s.windows(2) {
            assert!(w[0].at_s + w[0].hold_s + plan.quiet_s.0 <= w[1].at_s + 0.11);
        }
        let last = s.last().expect("a fault");
        assert!(last.at_s + last.hold_s <= plan.duration_s - plan.cooldown_s);
    }

    #[test]
    fn no_kinds_no_faults() {
        assert!(generate(&Plan::new(1, 60.0, Vec::new())).is_empty());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in ALL_KINDS {
            assert_eq!(FaultKind::parse(k.name()), Some(k));
        }
        assert_eq!(FaultKind::parse("meteor"), None);
    }
}

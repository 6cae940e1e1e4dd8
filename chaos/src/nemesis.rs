//! The nemesis: injects the planned faults one at a time, heals each after its hold, waits for
//! the cluster to be ready again, and records what it did. Selectors are resolved when a fault
//! is injected (the leader then; followers and random nodes from the seeded picker).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::FaultEvent;
use crate::proxy::LinkFault;
use crate::schedule::{FaultKind, PlannedFault};
use crate::target::{Probe, Target};
use crate::workload::Recorder;

/// How long the cluster may take to be ready on every node after a heal.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the nemesis holds broken right now, so that the final heal can undo all of it.
#[derive(Default)]
pub struct Damage {
    killed: BTreeSet<usize>,
    paused: BTreeSet<usize>,
    skewed: BTreeSet<usize>,
    full: BTreeSet<usize>,
    cut: bool,
    /// Link faults are set on the proxy.
    links: bool,
    /// Nodes removed and not yet replaced by a fresh one.
    removed: usize,
}

pub struct Nemesis<'a> {
    pub target: &'a mut dyn Target,
    pub probe: &'a Probe,
    pub recorder: &'a Recorder,
    pub picker: ChaCha8Rng,
    pub damage: Damage,
    /// Fresh nodes that joined (the membership fault's heal), in order.
    pub joined: Vec<usize>,
}

/// How long the snapshot catch-up fault waits, beyond its hold, for the leader to compact its
/// log past the stopped follower.
const COMPACTION_WAIT: Duration = Duration::from_secs(60);

impl Nemesis<'_> {
    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.picker.gen_range(0..from.len())])
    }

    /// Injects `fault`, holds it (calling `tick` meanwhile), heals it and waits until every node
    /// is ready again.
    pub fn run(
        &mut self,
        index: usize,
        fault: &PlannedFault,
        tick: &mut dyn FnMut(&str),
    ) -> FaultEvent {
        let ids = self.target.node_ids();
        let leader = self.probe.leader();
        let followers: Vec<usize> = ids.iter().copied().filter(|n| Some(*n) != leader).collect();
        let leader_or_any = match leader {
            Some(l) => Some(l),
            None => self.pick(&ids),
        };
        let mut errors = Vec::new();
        let mut nodes = Vec::new();
        let mut cuts = Vec::new();
        let mut skew = None;
        let mut observed = None;
        let mut link_delay_ms = None;
        let mut purged_past_follower = None;
        let mut notes = Vec::new();
        let joined_before = self.joined.len();
        match fault.kind {
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader => {
                nodes.extend(leader_or_any)
            }
            FaultKind::KillFollower | FaultKind::PauseFollower | FaultKind::RestartLoop => {
                nodes.extend(self.pick(&followers))
            }
            FaultKind::KillRandom
            | FaultKind::ClockSkew
            | FaultKind::DiskFull
            | FaultKind::LinkDelay
            | FaultKind::LinkDrop => nodes.extend(self.pick(&ids)),
            FaultKind::LinkReset => nodes.extend(leader_or_any),
            FaultKind::Membership | FaultKind::SnapshotCatchup => {
                nodes.extend(self.pick(&followers))
            }
            FaultKind::SplitMinority => {
                let mut pool = ids.clone();
                for _ in 0..(ids.len().saturating_sub(1) / 2) {
                    if let Some(n) = self.pick(&pool) {
                        pool.retain(|x| *x != n);
                        nodes.push(n);
                    }
                }
            }
            FaultKind::Bridge => {
                // The bridge is a random node; the cut is between two of the others.
                let bridge = self.pick(&ids);
                let rest: Vec<usize> = ids.iter().copied().filter(|n| Some(*n) != bridge).collect();
                if rest.len() >= 2 {
                    cuts.push((rest[0], rest[1]));
                    nodes.extend([rest[0], rest[1]]);
                }
            }
        }
        nodes.sort_unstable();
        let start_ms = self.recorder.now_ms();
        let label = format!("{} {:?}", fault.kind.name(), nodes);
        tick(&label);
        let hold = Duration::from_secs_f64(fault.hold_s);
        let started = Instant::now();
        match fault.kind {
            FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::KillRandom => {
                for n in &nodes {
                    note(&mut errors, self.target.kill(*n));
                    self.damage.killed.insert(*n);
                }
                self.hold(started, hold, tick, &label);
            }
            FaultKind::PauseLeader | FaultKind::PauseFollower => {
                for n in &nodes {
                    note(&mut errors, self.target.pause(*n));
                    self.damage.paused.insert(*n);
                }
                self.hold(started, hold, tick, &label);
            }
            FaultKind::IsolateLeader | FaultKind::SplitMinority => {
                for a in &nodes {
                    for b in ids.iter().filter(|b| !nodes.contains(b)) {
                        cuts.push((*a, *b));
                    }
                }
                self.cut(&cuts, &mut errors);
                self.hold(started, hold, tick, &label);
            }
            FaultKind::Bridge => {
                self.cut(&cuts, &mut errors);
                self.hold(started, hold, tick, &label);
            }
            FaultKind::ClockSkew => {
                let magnitude = self.picker.gen_range(10..=40i64);
                let seconds = if self.picker.gen_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                };
                skew = Some(seconds);
                for n in &nodes {
                    note(&mut errors, self.target.skew_clock(*n, seconds));
                    self.damage.skewed.insert(*n);
                    observed = self.probe.clock_offset(*n);
                }
                self.hold(started, hold, tick, &label);
            }
            FaultKind::DiskFull => {
                for n in &nodes {
                    note(&mut errors, self.target.fill_disk(*n));
                    self.damage.full.insert(*n);
                }
                self.hold(started, hold, tick, &label);
            }
            FaultKind::LinkDelay | FaultKind::LinkDrop | FaultKind::LinkReset => {
                let link = match fault.kind {
                    FaultKind::LinkDelay => {
                        let ms = self.picker.gen_range(100..=400u64);
                        link_delay_ms = Some(ms);
                        LinkFault::Delay(Duration::from_millis(ms))
                    }
                    FaultKind::LinkDrop => LinkFault::Drop,
                    _ => LinkFault::Reset,
                };
                self.damage.links = true;
                for n in &nodes {
                    note(&mut errors, self.target.link_fault(*n, Some(link)));
                }
                self.hold(started, hold, tick, &label);
                notes.extend(self.target.link_stats());
            }
            FaultKind::Membership => {
                for n in &nodes {
                    match self.remove(*n) {
                        Ok(()) => self.damage.removed += 1,
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                self.hold(started, hold, tick, &label);
            }
            FaultKind::SnapshotCatchup => {
                for n in &nodes {
                    let last = self.last_log_index(*n);
                    note(&mut errors, self.target.kill(*n));
                    self.damage.killed.insert(*n);
                    self.hold(started, hold, tick, &label);
                    // Down until the others compacted past what it has: only a snapshot can
                    // bring it back.
                    let until = Instant::now() + COMPACTION_WAIT;
                    let mut purged = self.purged_index();
                    while Instant::now() < until && !past(purged, last) {
                        std::thread::sleep(Duration::from_millis(500));
                        tick(&format!("{label} (waiting for compaction)"));
                        purged = self.purged_index();
                    }
                    purged_past_follower = Some(past(purged, last));
                    notes.push(format!(
                        "node {n} stopped at log index {}; the others purged up to {} before it restarted",
                        show(last),
                        show(purged)
                    ));
                }
            }
            FaultKind::RestartLoop => {
                // Kill and restart, over and over, for the hold: the node never settles.
                while started.elapsed() < hold {
                    for n in &nodes {
                        note(&mut errors, self.target.kill(*n));
                        note(&mut errors, self.target.restart(*n));
                    }
                    tick(&label);
                }
            }
        }
        let heal_ms = self.recorder.now_ms();
        errors.extend(self.heal_all());
        let ids = self.target.node_ids();
        let settled = self
            .probe
            .wait(SETTLE_TIMEOUT, |p| ids.iter().all(|id| p.ready(*id)));
        let joined = self.joined.get(joined_before).copied();
        nodes.extend(joined);
        if fault.kind == FaultKind::SnapshotCatchup {
            for n in nodes.clone() {
                notes.push(format!(
                    "after the restart node {n} reports snapshot index {} and applied index {}",
                    show(self.member(n).and_then(|m| m.snapshot_index)),
                    show(self.member(n).and_then(|m| m.applied_index)),
                ));
            }
        }
        if !settled {
            errors.push(format!(
                "not every node was ready {} s after the heal",
                SETTLE_TIMEOUT.as_secs()
            ));
        }
        FaultEvent {
            index,
            kind: fault.kind,
            planned_at_s: fault.at_s,
            hold_s: fault.hold_s,
            nodes,
            cuts,
            skew_seconds: skew,
            observed_skew_seconds: observed,
            link_delay_ms,
            joined,
            purged_past_follower,
            notes,
            leader,
            start_ms,
            heal_ms,
            settled_ms: settled.then(|| self.recorder.now_ms()),
            errors,
        }
    }

    fn cut(&mut self, cuts: &[(usize, usize)], errors: &mut Vec<String>) {
        self.damage.cut = true;
        for (a, b) in cuts {
            note(errors, self.target.cut(*a, *b));
        }
    }

    fn hold(&self, started: Instant, hold: Duration, tick: &mut dyn FnMut(&str), label: &str) {
        while started.elapsed() < hold {
            std::thread::sleep(Duration::from_millis(200));
            tick(label);
        }
    }

    /// Undoes every fault still in place: restarts killed nodes, resumes paused ones, removes
    /// every cut. Returns what failed.
    pub fn heal_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for n in std::mem::take(&mut self.damage.full) {
            note(&mut errors, self.target.free_disk(n));
        }
        for n in std::mem::take(&mut self.damage.paused) {
            note(&mut errors, self.target.resume(n));
        }
        if std::mem::take(&mut self.damage.cut) {
            note(&mut errors, self.target.heal());
        }
        for n in std::mem::take(&mut self.damage.killed) {
            note(&mut errors, self.target.restart(n));
        }
        for n in std::mem::take(&mut self.damage.skewed) {
            note(&mut errors, self.target.skew_clock(n, 0));
        }
        if std::mem::take(&mut self.damage.links) {
            note(&mut errors, self.target.heal_links());
        }
        // Last: a fresh node joins a cluster whose other faults are healed.
        for _ in 0..std::mem::take(&mut self.damage.removed) {
            match self.join_fresh() {
                Ok(id) => self.joined.push(id),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        errors
    }

    /// The leader, waiting for one (up to 30 s).
    fn wait_leader(&self) -> Option<usize> {
        self.probe
            .wait(Duration::from_secs(30), |p| p.leader().is_some());
        self.probe.leader()
    }

    /// Removes node `n` through the leader (a few tries: leadership may move meanwhile).
    fn remove(&mut self, n: usize) -> anyhow::Result<()> {
        let mut outcome = Err(anyhow::anyhow!("no leader to remove node {n} through"));
        for _ in 0..3 {
            let Some(leader) = self.wait_leader() else {
                continue;
            };
            outcome = self.target.remove_node(n, leader);
            if outcome.is_ok() {
                break;
            }
        }
        self.sync_members();
        outcome
    }

    /// Joins a fresh node through the leader (a few tries).
    fn join_fresh(&mut self) -> anyhow::Result<usize> {
        let mut outcome = Err(anyhow::anyhow!("no leader to join a fresh node through"));
        for _ in 0..3 {
            let Some(leader) = self.wait_leader() else {
                continue;
            };
            outcome = self.target.add_node(leader);
            if outcome.is_ok() {
                break;
            }
        }
        self.sync_members();
        outcome
    }

    /// Tells the probe and the callers' pool who the members are now.
    fn sync_members(&self) {
        let ids = self.target.node_ids();
        self.recorder.set_nodes(
            ids.iter()
                .map(|id| (*id, self.target.api_url(*id)))
                .collect(),
        );
        self.probe.set_members(ids);
    }

    /// Member `n` as the leader reports it.
    fn member(&self, n: usize) -> Option<stella_api::MemberStatus> {
        let leader = self.probe.leader()?;
        self.probe
            .status(leader)?
            .members
            .into_iter()
            .find(|m| m.node_id == n as u64)
    }

    fn last_log_index(&self, n: usize) -> Option<u64> {
        self.member(n).and_then(|m| m.last_log_index)
    }

    /// The lowest index any running member purged its log to (the leader's is what counts,
    /// but a follower the leader would send a snapshot from is the leader).
    fn purged_index(&self) -> Option<u64> {
        let leader = self.probe.leader()?;
        self.member(leader).and_then(|m| m.purged_index)
    }
}

/// The log was purged past `last` (a follower whose log ends at `last` needs a snapshot).
fn past(purged: Option<u64>, last: Option<u64>) -> bool {
    match (purged, last) {
        (Some(p), Some(l)) => p > l,
        _ => false,
    }
}

fn show(index: Option<u64>) -> String {
    index.map_or_else(|| "-".to_owned(), |i| i.to_string())
}

fn note(errors: &mut Vec<String>, result: anyhow::Result<()>) {
    if let Err(e) = result {
        errors.push(format!("{e:#}"));
    }
}

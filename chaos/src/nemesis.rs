//! The nemesis: injects the planned faults one at a time, heals each after its hold, waits for
//! the cluster to be ready again, and records what it did. Selectors are resolved when a fault
//! is injected (the leader then; followers and random nodes from the seeded picker).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::FaultEvent;
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
}

pub struct Nemesis<'a> {
    pub target: &'a mut dyn Target,
    pub probe: &'a Probe,
    pub recorder: &'a Recorder,
    pub picker: ChaCha8Rng,
    pub damage: Damage,
}

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
        match fault.kind {
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader => {
                nodes.extend(leader_or_any)
            }
            FaultKind::KillFollower | FaultKind::PauseFollower | FaultKind::RestartLoop => {
                nodes.extend(self.pick(&followers))
            }
            FaultKind::KillRandom | FaultKind::ClockSkew | FaultKind::DiskFull => {
                nodes.extend(self.pick(&ids))
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
        let settled = self
            .probe
            .wait(SETTLE_TIMEOUT, |p| ids.iter().all(|id| p.ready(*id)));
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
        errors
    }
}

fn note(errors: &mut Vec<String>, result: anyhow::Result<()>) {
    if let Err(e) = result {
        errors.push(format!("{e:#}"));
    }
}

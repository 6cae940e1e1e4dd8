//! `stella-chaos`: chaos drills in the spirit of Jepsen — a real workload of honest clients, a
//! seeded nemesis, a checker of this system's invariants, and a report people can read.
//! `docs/runbooks/chaos-drills.md` tells an operator how to run one; ADR 0024 why it is built
//! this way.

pub mod checker;
pub mod cluster_file;
pub mod drill;
pub mod history;
pub mod local;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod schedule;
pub mod target;
pub mod workload;

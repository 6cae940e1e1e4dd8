//! `/readyz`: 200 only when this node can serve a signing now.
//!
//! The checks: the cluster's (member, leader known, in contact within the lease, caught up with
//! the current term: `stella_cluster::lease`), every supervised actor alive, Raft running and
//! the data directory writable, the Authority's keys loaded, and the node not shutting down.
//! [`decide`] is the decision, free of I/O; [`NodeHealth::report`] gathers the facts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use stella_api::{Health, HealthCheck};
use stella_cluster::ClusterHandle;
use stella_cluster::lease;

use crate::Error;
use crate::admission::Admission;
use crate::supervise::ActorHealth;

/// What readiness watches besides the cluster.
#[derive(Clone)]
pub struct NodeHealth {
    pub actors: Vec<ActorHealth>,
    pub data_dir: PathBuf,
    /// Set first thing on SIGTERM: the load balancer drains this node.
    pub shutting_down: Arc<AtomicBool>,
    /// Chaos drills only (`[drill] kill_actors`): operators may kill a supervised actor.
    pub drill_kill_actors: bool,
    /// The last storage probe: `/readyz` is unauthenticated, so a flood of it writes the disk
    /// at most once per [`PROBE_EVERY`].
    pub last_probe: Arc<std::sync::Mutex<Option<Probe>>>,
}

/// A storage probe's time and answer.
pub type Probe = (std::time::Instant, Result<(), String>);

/// How long a storage probe's answer is reused.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The gathered facts, one instant.
pub struct Facts {
    pub cluster: Vec<lease::Check>,
    pub actors: Vec<(&'static str, bool)>,
    pub raft_running: bool,
    pub storage: Result<(), String>,
    pub trust: Result<(), String>,
    pub shutting_down: bool,
}

/// Ready iff every check passes; the checks name what failed.
pub fn decide(facts: Facts) -> Health {
    let mut checks: Vec<HealthCheck> = vec![HealthCheck {
        name: "accepting".into(),
        ok: !facts.shutting_down,
        detail: facts
            .shutting_down
            .then(|| "shutting down: finishing requests in flight".into()),
    }];
    checks.extend(facts.cluster.into_iter().map(|c| HealthCheck {
        name: c.name.into(),
        ok: c.ok,
        detail: c.detail,
    }));
    let dead: Vec<&str> = facts
        .actors
        .iter()
        .filter(|(_, alive)| !alive)
        .map(|(name, _)| *name)
        .collect();
    checks.push(HealthCheck {
        name: "actors".into(),
        ok: dead.is_empty(),
        detail: (!dead.is_empty()).then(|| format!("restarting: {}", dead.join(", "))),
    });
    let storage = if facts.raft_running {
        facts.storage
    } else {
        Err("Raft stopped after a storage error".into())
    };
    checks.push(HealthCheck {
        name: "storage".into(),
        ok: storage.is_ok(),
        detail: storage.err(),
    });
    checks.push(HealthCheck {
        name: "trust_material".into(),
        ok: facts.trust.is_ok(),
        detail: facts.trust.err(),
    });
    let ready = checks.iter().all(|c| c.ok);
    Health {
        status: if ready { "ready" } else { "not_ready" }.into(),
        checks,
    }
}

impl NodeHealth {
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Gathers the facts and decides.
    pub async fn report(&self, cluster: &ClusterHandle, admission: &Admission) -> Health {
        let storage = self.storage_probe().await;
        decide(Facts {
            cluster: lease::checks(&cluster.lease_facts(), &cluster.timing()),
            actors: self.actors.iter().map(|a| (a.name, a.alive())).collect(),
            raft_running: cluster.raft_running(),
            storage,
            trust: admission.trust_loaded().await,
            shutting_down: self.shutting_down(),
        })
    }

    /// The data directory takes a write (probed at most once per [`PROBE_EVERY`]).
    async fn storage_probe(&self) -> Result<(), String> {
        let recent = self
            .last_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < PROBE_EVERY)
            .map(|(_, result)| result.clone());
        if let Some(result) = recent {
            return result;
        }
        let dir = self.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || probe_write(&dir))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        *self
            .last_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// Drills: kills the supervised actor called `name` (its restart waits at least `hold`).
    pub fn drill_kill(&self, name: &str, hold: std::time::Duration) -> Result<&'static str, Error> {
        if !self.drill_kill_actors {
            return Err(Error::InvalidRequest(
                "actor kills are a drill: set `[drill] kill_actors = true` on this node".into(),
            ));
        }
        let actor = self.actors.iter().find(|a| a.name == name).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "no supervised actor `{}`",
                crate::error::clip(name)
            ))
        })?;
        tracing::warn!(actor = actor.name, "drill: killing a supervised actor");
        actor.kill(hold);
        Ok(actor.name)
    }
}

/// The data directory takes a write.
fn probe_write(dir: &std::path::Path) -> Result<(), String> {
    let probe = dir.join(".readyz-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("the data directory is not writable: {}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            cluster: vec![lease::Check {
                name: "leader_known",
                ok: true,
                detail: None,
            }],
            actors: vec![("quota-ledger", true), ("entitlement-cache", true)],
            raft_running: true,
            storage: Ok(()),
            trust: Ok(()),
            shutting_down: false,
        }
    }

    fn failing(h: &Health) -> Vec<String> {
        h.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn ready_only_when_every_check_passes_and_failures_are_named() {
        assert_eq!(decide(facts()).status, "ready");
        let dead = decide(Facts {
            actors: vec![("quota-ledger", false), ("entitlement-cache", true)],
            ..facts()
        });
        assert_eq!(dead.status, "not_ready");
        assert_eq!(failing(&dead), ["actors"]);
        assert!(
            dead.checks
                .iter()
                .any(|c| c.detail.as_deref() == Some("restarting: quota-ledger"))
        );
        let stopping = decide(Facts {
            shutting_down: true,
            ..facts()
        });
        assert_eq!(failing(&stopping), ["accepting"]);
        let broken = decide(Facts {
            raft_running: false,
            trust: Err("keys".into()),
            ..facts()
        });
        assert_eq!(failing(&broken), ["storage", "trust_material"]);
        let partitioned = decide(Facts {
            cluster: vec![lease::Check {
                name: "leader_lease",
                ok: false,
                detail: Some("no quorum".into()),
            }],
            ..facts()
        });
        assert_eq!(failing(&partitioned), ["leader_lease"]);
    }
}

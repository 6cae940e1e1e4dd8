//! Supervision of the node's long-lived actors (quota ledger, entitlement cache, key shard).
//!
//! Each runs under a supervisor task that restarts it with back-off when it dies (a panic in a
//! handler, a drill's kill); the restarted actor rebuilds what it needs from the committed
//! state and its files — none of them holds anything Raft or disk does not (the ledger's queue
//! belongs to callers who got an error; the entitlement cache refills; shares are sealed on
//! disk). Callers always reach the current actor through the handle, and `/readyz` reports
//! a dead one, so a load balancer stops sending traffic until it is back.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};

use crate::Error;

/// First restart delay; doubles per quick successive crash.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An actor that ran this long before dying restarts after the first delay again.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The restart delay after `crashes` quick successive crashes.
pub fn backoff(crashes: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(crashes.min(16)))
        .min(MAX_BACKOFF)
}

/// A supervised actor: its current reference, and whether it is alive.
pub struct Supervised<M: ractor::Message> {
    name: &'static str,
    current: Arc<RwLock<ActorRef<M>>>,
    alive: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    /// Drills: the next restart waits at least until then.
    hold_until: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl<M: ractor::Message> Clone for Supervised<M> {
    fn clone(&self) -> Self {
        Supervised {
            name: self.name,
            current: self.current.clone(),
            alive: self.alive.clone(),
            stopping: self.stopping.clone(),
            restarts: self.restarts.clone(),
            hold_until: self.hold_until.clone(),
        }
    }
}

impl<M: ractor::Message> Supervised<M> {
    /// Starts the actor `make` builds, and a supervisor that builds and starts a new one each
    /// time it dies (until [`Supervised::stop`]).
    pub async fn start<A, F>(name: &'static str, make: F) -> Result<Supervised<M>, Error>
    where
        A: Actor<Msg = M>,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let (actor, args) = make();
        let (first, mut join) = Actor::spawn(None, actor, args)
            .await
            .map_err(|e| Error::Config(format!("starting the {name} actor: {e}")))?;
        let supervised = Supervised {
            name,
            current: Arc::new(RwLock::new(first)),
            alive: Arc::new(AtomicBool::new(true)),
            stopping: Arc::new(AtomicBool::new(false)),
            restarts: Arc::new(AtomicU32::new(0)),
            hold_until: Arc::new(std::sync::Mutex::new(None)),
        };
        let me = supervised.clone();
        tokio::spawn(async move {
            let mut crashes = 0u32;
            let mut started = Instant::now();
            loop {
                let _ = join.await;
                if me.stopping.load(Ordering::Acquire) {
                    return;
                }
                me.alive.store(false, Ordering::Release);
                if started.elapsed() >= STABLE_AFTER {
                    crashes = 0;
                }
                let held = me
                    .hold_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .map(|until| until.saturating_duration_since(Instant::now()));
                let delay = backoff(crashes).max(held.unwrap_or_default());
                crashes = crashes.saturating_add(1);
                metrics::counter!(crate::telemetry::ACTOR_RESTARTS, "actor" => name).increment(1);
                tracing::error!(
                    actor = name,
                    delay_ms = delay.as_millis() as u64,
                    "actor died; restarting"
                );
                loop {
                    tokio::time::sleep(delay).await;
                    if me.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    let (actor, args) = make();
                    match Actor::spawn(None, actor, args).await {
                        Ok((actor, handle)) => {
                            *me.current
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
                            join = handle;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(actor = name, error = %e, "actor restart failed; trying again");
                        }
                    }
                }
                started = Instant::now();
                me.restarts.fetch_add(1, Ordering::AcqRel);
                me.alive.store(true, Ordering::Release);
                tracing::warn!(actor = name, "actor restarted");
            }
        });
        Ok(supervised)
    }

    /// The current actor.
    pub fn actor(&self) -> ActorRef<M> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.actor().stop(None);
    }

    /// What readiness and the drill hook see of it.
    pub fn health(&self) -> ActorHealth {
        let me = self.clone();
        ActorHealth {
            name: self.name,
            alive: self.alive.clone(),
            restarts: self.restarts.clone(),
            kill: Arc::new(move |hold: Duration| {
                *me.hold_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Instant::now() + hold);
                me.alive.store(false, Ordering::Release);
                me.actor().kill();
            }),
        }
    }
}

/// A supervised actor as readiness and drills see it.
#[derive(Clone)]
pub struct ActorHealth {
    pub name: &'static str,
    alive: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    kill: Arc<dyn Fn(Duration) + Send + Sync>,
}

impl ActorHealth {
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }

    /// Drills only (`[drill] kill_actors`): kills the actor as a crash would; its restart
    /// waits at least `hold` (so the not-ready window can be watched).
    pub fn kill(&self, hold: Duration) {
        (self.kill)(hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_bound() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    struct Echo;

    impl Actor for Echo {
        type Msg = ractor::RpcReplyPort<u32>;
        type State = u32;
        type Arguments = u32;

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            start: u32,
        ) -> Result<u32, ractor::ActorProcessingErr> {
            Ok(start)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            reply: Self::Msg,
            state: &mut u32,
        ) -> Result<(), ractor::ActorProcessingErr> {
            *state += 1;
            let _ = reply.send(*state);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_killed_actor_comes_back_with_fresh_state() {
        let supervised = Supervised::start("echo", || (Echo, 10))
            .await
            .expect("start");
        let ask = |s: &Supervised<ractor::RpcReplyPort<u32>>| {
            let actor = s.actor();
            async move { ractor::call!(actor, |reply| reply).ok() }
        };
        assert_eq!(ask(&supervised).await, Some(11));
        let health = supervised.health();
        health.kill(Duration::ZERO);
        // Not alive until the supervisor restarted it; then served again, from fresh state.
        let deadline = Instant::now() + Duration::from_secs(30);
        while health.restarts() == 0 {
            assert!(Instant::now() < deadline, "the actor was not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(health.alive());
        assert_eq!(ask(&supervised).await, Some(11));
        supervised.stop();
    }
}

//! Load shedding at the front door: a bound on the signing requests a node works on at once.
//!
//! Past saturation, work queued behind the node's capacity only grows everyone's latency: the
//! admitted signings slow down until callers' deadlines pass, and a caller that gave up still
//! costs a DPoP check, a signature and a Raft entry. So every signing request takes a permit
//! *before* any work is done for it (no token check, no body read, no signature); when this
//! node already has `limit` signing requests in progress it answers at once with 503
//! `signing_unavailable` and `Retry-After: 1` — a refusal that costs a few microseconds, is
//! never audited (it names nobody) and that honest clients retry, ideally on another node.
//! The deeper bounds (the leader's session count, the proposal queue) stay as a last line.
//!
//! Once the caller is authenticated, its tenant also takes a share of the door: at most
//! `[limits] max_inflight_per_tenant` places (default half the door), past which it gets 429
//! `plan_throttled` with `Retry-After: 1` — one tenant's many or slow requests leave room for
//! the others.
//!
//! The bound is a fixed, configured number (`[limits] max_inflight_signings`), not an adaptive
//! one: it is predictable for an operator sizing a balancer, and the benchmarks (`stella-load
//! --overload`) show how it behaves at three times the saturation rate. ADR 0030.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::Error;

pub use crate::config::DEFAULT_MAX_INFLIGHT_SIGNINGS;

/// The front door's counter. Cheap to clone; all clones share the bound.
#[derive(Clone, Debug)]
pub struct FrontDoor {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
    /// Places one tenant may hold at once, once it is known (after authentication).
    per_tenant: usize,
    /// Places held per tenant; a tenant leaves the map when it holds none, so the map never
    /// has more entries than requests in progress.
    tenants: Arc<Mutex<HashMap<String, usize>>>,
}

/// A tenant's place among its share of the door; given back when dropped.
#[derive(Debug)]
pub struct Share {
    tenant: String,
    tenants: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut tenants = lock(&self.tenants);
        if let Some(n) = tenants.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A signing request's place inside the bound; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl FrontDoor {
    /// A door of `limit` places, of which one tenant may hold `per_tenant`.
    pub fn new(limit: usize, per_tenant: usize) -> FrontDoor {
        FrontDoor {
            limit: limit.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
            per_tenant: per_tenant.max(1),
            tenants: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Once the caller is known: a share of the door for `tenant`, or 429 `plan_throttled`
    /// (`Retry-After: 1`) when it already holds `per_tenant` places on this node — so one
    /// tenant's slow or numerous requests cannot take every place from the others.
    pub fn enter_tenant(&self, tenant: &str) -> Result<Share, Error> {
        let mut tenants = lock(&self.tenants);
        let held = tenants.entry(tenant.to_owned()).or_insert(0);
        if *held >= self.per_tenant {
            crate::telemetry::record_shed();
            return Err(Error::Throttled {
                retry_after_seconds: 1,
                reason: format!(
                    "{} signing requests of this tenant are in progress on this node",
                    self.per_tenant
                ),
            });
        }
        *held += 1;
        Ok(Share {
            tenant: tenant.to_owned(),
            tenants: self.tenants.clone(),
        })
    }

    /// A permit, or `Overloaded` (503 + `Retry-After`) when `limit` requests are in progress.
    pub fn enter(&self) -> Result<Permit, Error> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            crate::telemetry::record_shed();
            return Err(Error::Overloaded);
        }
        Ok(Permit {
            in_flight: self.in_flight.clone(),
        })
    }

    /// Signing requests in progress now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_holds_at_most_its_share_and_others_still_get_in() {
        let door = FrontDoor::new(10, 2);
        let a1 = door.enter_tenant("a").expect("a 1");
        let _a2 = door.enter_tenant("a").expect("a 2");
        let refused = door.enter_tenant("a").expect_err("a 3");
        assert!(matches!(
            refused,
            Error::Throttled {
                retry_after_seconds: 1,
                ..
            }
        ));
        assert_eq!(refused.code(), stella_api::ProblemCode::PlanThrottled);
        let _b = door.enter_tenant("b").expect("b is not a's");
        drop(a1);
        assert!(door.enter_tenant("a").is_ok(), "a's place came back");
    }

    #[test]
    fn tenants_holding_nothing_leave_the_map() {
        let door = FrontDoor::new(4, 4);
        for i in 0..1_000 {
            drop(door.enter_tenant(&format!("t-{i}")).expect("in"));
        }
        assert!(lock(&door.tenants).is_empty());
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_with_a_retryable_503_and_frees_on_drop() {
        let door = FrontDoor::new(3, 3);
        let permits: Vec<Permit> = (0..3).map(|_| door.enter().expect("within")).collect();
        assert_eq!(door.in_flight(), 3);
        let refused = door.enter().expect_err("over the limit");
        assert!(matches!(refused, Error::Overloaded));
        assert_eq!(refused.retry_after_seconds(), Some(1));
        assert_eq!(refused.code(), stella_api::ProblemCode::SigningUnavailable);
        assert_eq!(door.in_flight(), 3, "a refusal holds nothing");
        drop(permits);
        assert_eq!(door.in_flight(), 0);
        assert!(door.enter().is_ok());
    }

    #[test]
    fn a_zero_limit_still_admits_one_request() {
        let door = FrontDoor::new(0, 0);
        let only = door.enter().expect("one");
        assert!(door.enter().is_err());
        drop(only);
        assert!(door.enter().is_ok());
    }

    #[test]
    fn many_threads_never_exceed_the_limit() {
        let door = FrontDoor::new(8, 8);
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (door, peak) = (door.clone(), peak.clone());
                s.spawn(move || {
                    for _ in 0..2_000 {
                        if let Ok(p) = door.enter() {
                            peak.fetch_max(door.in_flight(), Ordering::AcqRel);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 8);
        assert_eq!(door.in_flight(), 0);
    }
}

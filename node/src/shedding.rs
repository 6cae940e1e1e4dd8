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
//! The bound is a fixed, configured number (`[limits] max_inflight_signings`), not an adaptive
//! one: it is predictable for an operator sizing a balancer, and the benchmarks (`stella-load
//! --overload`) show how it behaves at three times the saturation rate. ADR 0030.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;

pub use crate::config::DEFAULT_MAX_INFLIGHT_SIGNINGS;

/// The front door's counter. Cheap to clone; all clones share the bound.
#[derive(Clone, Debug)]
pub struct FrontDoor {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
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
    pub fn new(limit: usize) -> FrontDoor {
        FrontDoor {
            limit: limit.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
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
    fn admits_up_to_the_limit_then_refuses_with_a_retryable_503_and_frees_on_drop() {
        let door = FrontDoor::new(3);
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
        let door = FrontDoor::new(0);
        let only = door.enter().expect("one");
        assert!(door.enter().is_err());
        drop(only);
        assert!(door.enter().is_ok());
    }

    #[test]
    fn many_threads_never_exceed_the_limit() {
        let door = FrontDoor::new(8);
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

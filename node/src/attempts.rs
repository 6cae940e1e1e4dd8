//! The leader's knowledge of the signing attempts running on it (their count per plan and the
//! units promised to them, the two-round attempts that are alive), and the guard that releases a
//! reservation its session left open.

use stella_state::Command;

use crate::ledger::Ledger;

/// The reservations of the signing sessions running on this node (the leader's own knowledge
/// of which admitted attempts are still alive).
#[derive(Default)]
pub struct LiveAttempts {
    running: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl LiveAttempts {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn contains(&self, reservation_id: &str) -> bool {
        self.set().contains(reservation_id)
    }

    /// Marks `reservation_id` running until the returned guard drops.
    pub fn enter(&self, reservation_id: &str) -> LiveAttempt<'_> {
        self.set().insert(reservation_id.to_owned());
        LiveAttempt {
            attempts: self,
            reservation_id: reservation_id.to_owned(),
        }
    }
}

pub struct LiveAttempt<'a> {
    attempts: &'a LiveAttempts,
    reservation_id: String,
}

impl Drop for LiveAttempt<'_> {
    fn drop(&mut self) {
        self.attempts.set().remove(&self.reservation_id);
    }
}

/// Releases a reservation whose session ended without committing or releasing it.
pub(crate) struct ReservationGuard {
    pub(crate) ledger: Ledger,
    pub(crate) reservation_id: Option<String>,
    pub(crate) now_ms: u64,
}

impl Drop for ReservationGuard {
    fn drop(&mut self) {
        if let Some(reservation_id) = self.reservation_id.take() {
            let ledger = self.ledger.clone();
            let now_ms = self.now_ms;
            tokio::spawn(async move {
                let _ = ledger
                    .propose(Command::Release {
                        reservation_id,
                        now_ms,
                    })
                    .await;
            });
        }
    }
}

/// The leader's own count of the signings under way for each tenant and plan (ADR 0028): the
/// plan's concurrent-signings limit is held here, in memory, because only the leader signs — a
/// new leader starts from zero in flight — and so are the units promised to speculative
/// signings whose entries have not applied yet, which the pre-check counts as spent.
#[derive(Default)]
pub struct InFlight {
    by_ledger: std::sync::Mutex<std::collections::HashMap<(String, String), Counts>>,
}

#[derive(Default)]
struct Counts {
    running: u32,
    promised: u64,
}

impl InFlight {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), Counts>> {
        self.by_ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place among the plan's concurrent signings, or `None` when `max` are under way.
    pub fn enter(&self, tenant: &str, plan: &str, max: u32) -> Option<Slot<'_>> {
        let key = (tenant.to_owned(), plan.to_owned());
        let mut map = self.map();
        let counts = map.entry(key.clone()).or_default();
        if counts.running >= max {
            return None;
        }
        counts.running += 1;
        Some(Slot {
            in_flight: self,
            key,
            promised: false,
        })
    }

    /// Signings under way for `tenant` and `plan` (for tests and metrics).
    pub fn running(&self, tenant: &str, plan: &str) -> u32 {
        self.map()
            .get(&(tenant.to_owned(), plan.to_owned()))
            .map_or(0, |c| c.running)
    }
}

/// One signing's place; given back when it drops, with its promised unit.
pub struct Slot<'a> {
    in_flight: &'a InFlight,
    key: (String, String),
    promised: bool,
}

impl Slot<'_> {
    /// Decides with the units promised to the other signings of the same tenant and plan, and
    /// promises this one a unit if the decision is to go ahead — atomically, so two signings
    /// cannot both be promised the last unit on this leader.
    pub fn decide(
        &mut self,
        decide: impl FnOnce(u64) -> crate::pipeline::Precheck,
    ) -> crate::pipeline::Precheck {
        let mut map = self.in_flight.map();
        let counts = map.entry(self.key.clone()).or_default();
        let decision = decide(counts.promised);
        if decision == crate::pipeline::Precheck::Proceed && !self.promised {
            counts.promised = counts.promised.saturating_add(1);
            self.promised = true;
        }
        decision
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.in_flight.map();
        if let Some(counts) = map.get_mut(&self.key) {
            counts.running = counts.running.saturating_sub(1);
            if self.promised {
                counts.promised = counts.promised.saturating_sub(1);
            }
            if counts.running == 0 && counts.promised == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Precheck;

    #[test]
    fn slots_bound_concurrency_and_promises_are_given_back() {
        let in_flight = InFlight::default();
        let mut a = in_flight.enter("t", "p", 2).expect("first");
        let mut b = in_flight.enter("t", "p", 2).expect("second");
        assert!(in_flight.enter("t", "p", 2).is_none(), "the third waits");
        assert!(in_flight.enter("t", "other", 2).is_some(), "per plan");
        assert_eq!(
            a.decide(|promised| {
                assert_eq!(promised, 0);
                Precheck::Proceed
            }),
            Precheck::Proceed
        );
        b.decide(|promised| {
            assert_eq!(promised, 1, "a's unit counts for b");
            Precheck::Throttled { retry_after_ms: 1 }
        });
        drop(a);
        b.decide(|promised| {
            assert_eq!(promised, 0, "a gave its unit back");
            Precheck::Proceed
        });
        drop(b);
        assert_eq!(in_flight.running("t", "p"), 0);
        assert!(in_flight.map().is_empty(), "nothing is left behind");
    }
}

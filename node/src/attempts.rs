//! The leader's knowledge of the signing attempts running on it, and the guard that releases a
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

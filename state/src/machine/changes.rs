//! What one apply batch changed, taken from the [`Tracked`](crate::tracked::Tracked) maps of
//! [`State`] for storage to write (ADR 0027).

use super::{Ledger, LedgerKey, Reservation, State};
use crate::command::{Approval, KeyEntry, ThresholdGroup, Toggle};

/// The rows one apply batch changed, per kind: `(key, value now)`, `None` for a removed row.
/// The audit tail and the log tree are single values storage writes with every batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateChanges {
    pub ledgers: Vec<(LedgerKey, Option<Ledger>)>,
    pub reservations: Vec<(String, Option<Reservation>)>,
    pub keys: Vec<(String, Option<KeyEntry>)>,
    pub toggles: Vec<(String, Option<Toggle>)>,
    pub approvals: Vec<(String, Option<Approval>)>,
    pub threshold_groups: Vec<(String, Option<ThresholdGroup>)>,
}

impl StateChanges {
    /// Rows changed, over every kind.
    pub fn len(&self) -> usize {
        self.ledgers.len()
            + self.reservations.len()
            + self.keys.len()
            + self.toggles.len()
            + self.approvals.len()
            + self.threshold_groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// The entities changed since the last call (storage writes these rows and no others).
    pub fn take_changes(&mut self) -> StateChanges {
        StateChanges {
            ledgers: self.ledgers.take_changes(),
            reservations: self.reservations.take_changes(),
            keys: self.keys.take_changes(),
            toggles: self.toggles.take_changes(),
            approvals: self.approvals.take_changes(),
            threshold_groups: self.threshold_groups.take_changes(),
        }
    }
}

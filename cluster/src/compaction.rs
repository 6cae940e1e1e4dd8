//! When to build a snapshot (and so compact the log): after `snapshot_every` entries, or after a
//! quarter as many entries as the audit log holds records, whichever is more.
//!
//! A snapshot carries every audit record, so building one costs time proportional to the whole
//! log. With a fixed interval that cost, paid every `snapshot_every` entries, grows without
//! bound as the log does: at 10^6 records a build takes ~9 s (docs/benchmarks.md) and would
//! come every few seconds of full load — a node would spend more and more of its two cores on
//! snapshots the longer it ran. Spacing snapshots in proportion to the log keeps the amortized
//! cost per entry constant (each build is paid for by at least a 25 % larger log), at the price
//! of a log that keeps up to a quarter of the records' entries between snapshots, which also
//! lets more lagging followers catch up from the log instead of a snapshot. openraft's own
//! policies are fixed intervals only, so the node triggers snapshots itself (ADR 0031).

use std::time::Duration;

use stella_state::raft_types::Raft;
use stella_state::storage::StateView;

/// Entries between snapshots as a fraction of the records: one in `GROWTH_DIVISOR`.
pub const GROWTH_DIVISOR: u64 = 4;
/// How often the pacer looks at the applied index.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A trigger that produced no snapshot (a build still running, a failed one) is repeated
/// after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a snapshot is due: pure, so the rule is tested directly.
pub fn snapshot_due(applied: u64, last_snapshot: Option<u64>, records: u64, every: u64) -> bool {
    let since = match last_snapshot {
        Some(at) => applied.saturating_sub(at),
        // Nothing built yet: index 0 is the initial membership entry.
        None => applied.saturating_add(1),
    };
    since >= every.max(1).max(records / GROWTH_DIVISOR)
}

/// Watches the applied index and asks Raft for a snapshot when [`snapshot_due`]; ends when the
/// Raft core stops.
pub(crate) fn spawn(raft: Raft, view: StateView, every: u64) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut asked: Option<(Option<u64>, tokio::time::Instant)> = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if metrics.has_changed().is_err() {
                return; // the core is gone
            }
            let (applied, snapshot) = {
                let m = metrics.borrow_and_update();
                if m.running_state.is_err() {
                    return;
                }
                (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
            };
            let Some(applied) = applied else { continue };
            let records = view.with_state(|s| s.log.head().size);
            if !snapshot_due(applied, snapshot, records, every) {
                continue;
            }
            if let Some((at, when)) = asked
                && at == snapshot
                && when.elapsed() < RETRY_AFTER
            {
                continue; // asked already; the build has not finished
            }
            asked = Some((snapshot, tokio::time::Instant::now()));
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "could not trigger a snapshot");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_log_snapshots_every_snapshot_every_entries() {
        assert!(!snapshot_due(4_999, Some(0), 1_000, 5_000));
        assert!(snapshot_due(5_000, Some(0), 1_000, 5_000));
        assert!(snapshot_due(4_999, None, 0, 5_000));
        assert!(!snapshot_due(4_998, None, 0, 5_000));
    }

    #[test]
    fn a_large_log_waits_for_a_quarter_of_its_records() {
        // 10^6 records: not before 250,000 entries.
        assert!(!snapshot_due(1_249_999, Some(1_000_000), 1_000_000, 5_000));
        assert!(snapshot_due(1_250_000, Some(1_000_000), 1_000_000, 5_000));
    }

    #[test]
    fn extreme_numbers_neither_overflow_nor_snapshot_without_cause() {
        assert!(!snapshot_due(0, Some(u64::MAX), u64::MAX, 5_000));
        assert!(snapshot_due(u64::MAX, None, 0, 0));
        assert!(!snapshot_due(10, Some(10), 0, 0), "nothing applied since");
    }
}

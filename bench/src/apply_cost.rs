//! `stella-load --apply-cost 1,1000,100000`: what one applied entry costs the state machine as
//! the number of ledgers (tenants) grows — wall time per entry and state-machine file growth
//! per entry, through the production store (`StateMachineStore::apply`, one entry per call as a
//! lightly loaded node applies them). Each measured signing is a `Reserve` on one existing
//! ledger and its `Commit`: two entries that change one ledger and one reservation.

use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId};
use stella_state::Command;
use stella_state::command::Reserve;
use stella_state::raft_types::Entry;
use stella_state::storage::StateMachineStore;

pub struct Row {
    pub ledgers: u64,
    pub apply_us: f64,
    pub file_growth_bytes_per_entry: f64,
    pub file_mib: f64,
    /// Resident memory of the in-memory `State` holding these ledgers (a pure `State` built
    /// by `apply`, measured as the process's RSS growth).
    pub state_mib: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// RSS growth of a `State` with `ledgers` ledgers, applied in memory (MiB).
fn state_memory(ledgers: u64) -> f64 {
    let before = rss_kib();
    let mut state = stella_state::State::default();
    let mut emitted = Vec::new();
    for t in 0..ledgers {
        let id = format!("m-{t}");
        state.apply(&reserve(t, &id, 1_000), &mut emitted);
        state.apply(
            &Command::Commit {
                reservation_id: id,
                now_ms: 1_000,
            },
            &mut emitted,
        );
        state.take_changes();
    }
    let after = rss_kib();
    drop(state);
    after.saturating_sub(before) as f64 / 1024.0
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn reserve(tenant: u64, id: &str, now_ms: u64) -> Command {
    Command::Reserve(Reserve {
        reservation_id: id.into(),
        tenant: format!("tenant-{tenant:06}"),
        plan: "team".into(),
        limit: 1_000_000,
        window_ms: 3_600_000,
        max_concurrent: 1_000,
        now_ms,
        ttl_ms: 60_000,
    })
}

pub async fn measure(sizes: &[u64], entries: u64) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &ledgers in sizes {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state-machine.redb");
        let mut sm = StateMachineStore::open(&path)?;
        let mut index = 0u64;
        // One ledger per tenant, its reservation committed (no open reservations remain).
        let mut setup = Vec::new();
        for t in 0..ledgers {
            setup.push(reserve(t, &format!("setup-{t}"), 1_000));
            setup.push(Command::Commit {
                reservation_id: format!("setup-{t}"),
                now_ms: 1_000,
            });
        }
        for chunk in setup.chunks(2_000) {
            let batch: Vec<Entry> = chunk
                .iter()
                .map(|c| {
                    index += 1;
                    entry(index, c.clone())
                })
                .collect();
            sm.apply(batch).await?;
        }
        let size_before = std::fs::metadata(&path)?.len();
        let started = Instant::now();
        let pairs = entries / 2;
        for i in 0..pairs {
            // Spread over the ledgers with a fixed stride (deterministic, no RNG).
            let tenant = (i * 7_919) % ledgers.max(1);
            let id = format!("sign-{i}");
            index += 1;
            sm.apply([entry(index, reserve(tenant, &id, 2_000 + i))])
                .await?;
            index += 1;
            sm.apply([entry(
                index,
                Command::Commit {
                    reservation_id: id,
                    now_ms: 2_000 + i,
                },
            )])
            .await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let size_after = std::fs::metadata(&path)?.len();
        rows.push(Row {
            ledgers,
            apply_us: elapsed * 1e6 / (pairs * 2) as f64,
            file_growth_bytes_per_entry: size_after.saturating_sub(size_before) as f64
                / (pairs * 2) as f64,
            file_mib: size_after as f64 / (1024.0 * 1024.0),
            state_mib: state_memory(ledgers),
        });
    }
    Ok(rows)
}

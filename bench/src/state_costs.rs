//! State-machine cost per entry as the state grows, in process, through `stella-state`'s public
//! API (`storage::open` + `RaftStateMachine::apply`, as a node's Raft core calls it): for each
//! tenant count N, a fresh store is seeded with N tenants' ledgers (one reserved-and-committed
//! signature each, 1,000 tenants per entry), and then one signing's entries are applied one
//! per call for the measurement period — the quota entry (`Batch([Reserve, Commit])`) and the
//! audit entry (`Audit`) — and timed. Goal of issue 18: flat as the state grows.

use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId};
use serde_json::json;
use stella_state::Command;
use stella_state::command::Reserve;
use stella_state::raft_types::Entry;

use crate::tenants::{PER_ENTRY, now_ms, seed_batch};

struct Row {
    tenants: u64,
    seed_s: f64,
    apply_us: f64,
    entries: u64,
    file_mib: f64,
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

async fn measure(tenants: u64, duration: Duration) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) =
        stella_state::storage::open(dir.path()).map_err(|e| anyhow::anyhow!("open: {e}"))?;
    let mut index = 0u64;
    let started = Instant::now();
    let mut done = 0;
    while done < tenants {
        let to = (done + PER_ENTRY).min(tenants);
        index += 1;
        sm.apply(vec![entry(index, seed_batch(done, to, now_ms()))])
            .await
            .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
        done = to;
    }
    let seed_s = started.elapsed().as_secs_f64();
    let (mut applied, mut spent) = (0u64, Duration::ZERO);
    let mut i = 0u64;
    while spent < duration {
        i += 1;
        let reservation_id = format!("bench-{i}");
        let now = now_ms();
        let quota = Command::Batch(vec![
            Command::Reserve(Reserve {
                reservation_id: reservation_id.clone(),
                tenant: "seeded-tenant-0".into(),
                plan: "team".into(),
                limit: u64::MAX / 2,
                window_ms: 3_600_000,
                max_concurrent: 1_000,
                now_ms: now,
                ttl_ms: 60_000,
            }),
            Command::Commit {
                reservation_id,
                now_ms: now,
            },
        ]);
        for command in [quota, Command::Audit(crate::tlog_cost::draft(i))] {
            index += 1;
            let e = entry(index, command);
            let t0 = Instant::now();
            sm.apply(vec![e])
                .await
                .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
            spent += t0.elapsed();
            applied += 1;
        }
    }
    let file_mib = std::fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>() as f64
        / 1024.0
        / 1024.0;
    Ok(Row {
        tenants,
        seed_s,
        apply_us: spent.as_secs_f64() * 1e6 / applied.max(1) as f64,
        entries: applied,
        file_mib,
    })
}

pub fn report(sizes: &[u64], duration: Duration) -> anyhow::Result<()> {
    let runtime = crate::runtime_n()?;
    println!(
        "{:>9} {:>8} {:>14} {:>9} {:>10} {:>7}",
        "tenants", "seed s", "apply µs/entry", "entries", "file MiB", "ratio"
    );
    let mut rows = Vec::new();
    for &n in sizes {
        let r = runtime.block_on(measure(n.max(1), duration))?;
        let base = rows.first().map_or(r.apply_us, |b: &Row| b.apply_us);
        println!(
            "{:>9} {:>8.1} {:>14.1} {:>9} {:>10.1} {:>7.2}",
            r.tenants,
            r.seed_s,
            r.apply_us,
            r.entries,
            r.file_mib,
            r.apply_us / base
        );
        rows.push(r);
    }
    println!(
        "{}",
        json!({"state_costs": rows.iter().map(|r| json!({"tenants": r.tenants, "seed_s": r.seed_s, "apply_us": r.apply_us, "entries": r.entries, "file_mib": r.file_mib})).collect::<Vec<_>>()})
    );
    Ok(())
}

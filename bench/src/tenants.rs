//! Signing throughput of a dev node whose state holds N tenants with a ledger each.
//!
//! Seeding 10^5 tenants by real signings would need 10^5 tenants' tokens and licences and take
//! minutes per size, so the tenants are seeded through the real replicated command instead:
//! the dev node is started once (it makes its data directory, keys and credentials) and
//! stopped with SIGTERM; its Raft group (`data/raft`, node 1, as the node opens it) is then
//! started in this process with the production `ClusterHandle`, and every tenant gets one
//! reserved-and-committed signature through `Command::Batch([Reserve, Commit])` proposals
//! (1,000 tenants per entry) — the same commands, log, fsync and state machine a signing's
//! quota goes through, minus HTTP, admission and the signature. The node is then started again
//! on that directory and loaded from outside as usual.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stella_cluster::{ClusterConfig, ClusterHandle};
use stella_state::Command;
use stella_state::command::Reserve;
use stella_state::raft_types::NodeAddr;

use crate::load::{self, LoadAuth, http_load, start_node};
use crate::runtime_1;

/// Tenants per seeding entry.
pub const PER_ENTRY: u64 = 1000;

/// One reserved-and-committed signature for each tenant in `from..to`, as one log entry.
pub fn seed_batch(from: u64, to: u64, now_ms: u64) -> Command {
    let mut commands = Vec::new();
    for i in from..to {
        let reservation_id = format!("seed-{i}");
        commands.push(Command::Reserve(Reserve {
            reservation_id: reservation_id.clone(),
            tenant: format!("seeded-tenant-{i}"),
            plan: "team".into(),
            limit: 1_000,
            window_ms: 3_600_000,
            max_concurrent: 10,
            now_ms,
            ttl_ms: 60_000,
        }));
        commands.push(Command::Commit {
            reservation_id,
            now_ms,
        });
    }
    Command::Batch(commands)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seeds `tenants` tenants into the stopped dev node's Raft group under `data`.
async fn seed(data: &Path, tenants: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let cluster = ClusterHandle::start(ClusterConfig::new(
        1,
        data.join("raft"),
        NodeAddr::default(),
        None,
    ))
    .await?;
    cluster.initialize().await?;
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow::anyhow!("the dev node's Raft group elected no leader"))?;
    let mut done = 0;
    while done < tenants {
        let to = (done + PER_ENTRY).min(tenants);
        cluster.propose(seed_batch(done, to, now_ms())).await?;
        done = to;
    }
    cluster.shutdown().await;
    Ok(started.elapsed())
}

fn dir_mib(dir: &Path) -> f64 {
    let mut total = 0u64;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total as f64 / 1024.0 / 1024.0
}

pub fn report(
    node_bin: &PathBuf,
    request: &Value,
    sizes: &[u64],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    println!(
        "{:>9} {:>9} {:>10} {:>8} {:>8} {:>10} {:>7}",
        "tenants", "seed s", "req/s", "p50 ms", "p99 ms", "raft MiB", "ratio"
    );
    let mut rows = Vec::new();
    let mut first = None;
    for &n in sizes {
        let data = tempfile::tempdir()?;
        let (mut child, _, _) = start_node(node_bin, data.path())?;
        load::terminate(&mut child);
        // The dev tenant signs too, so N - 1 more make N tenants with a ledger.
        let seeded = runtime_1()?.block_on(seed(data.path(), n.saturating_sub(1)))?;
        let (mut child, url, creds) = start_node(node_bin, data.path())?;
        let auth = Arc::new(LoadAuth::new(&url, creds)?);
        let row = runtime_1()?.block_on(http_load(&url, auth, request, clients, duration))?;
        load::terminate(&mut child);
        let base = *first.get_or_insert(row.throughput);
        let mib = dir_mib(&data.path().join("raft"));
        println!(
            "{n:>9} {:>9.1} {:>10.0} {:>8.2} {:>8.2} {mib:>10.1} {:>7.3}   {}",
            seeded.as_secs_f64(),
            row.throughput,
            row.p50_ms,
            row.p99_ms,
            row.throughput / base,
            row.series_summary()
        );
        rows.push(json!({"tenants": n, "seed_s": seeded.as_secs_f64(), "raft_mib": mib, "row": row.to_json(clients), "ratio": row.throughput / base}));
    }
    if let (Some(a), Some(b)) = (rows.first(), rows.last()) {
        println!(
            "throughput at {} tenants / at {} tenant(s) = {:.3} (goal >= 0.9 at 10^5)",
            b["tenants"],
            a["tenants"],
            b["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    println!("{}", json!({ "tenants": rows }));
    Ok(())
}

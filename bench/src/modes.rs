//! The older single-purpose modes of `stella-load`: snapshot costs, transparency-log costs and
//! the flood comparison.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::load::{LoadAuth, http_load, start_node};
use crate::{flood, snapshot_cost, tlog_cost};

/// Snapshot build and install at growing log sizes, with the memory each step adds.
pub fn snapshot_costs(sizes: &[u64], cache_mib: Option<usize>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(snapshot_cost::measure(sizes, cache_mib))?;
    println!(
        "{:>9} {:>10} {:>9} {:>15} {:>11} {:>17} {:>9}",
        "records",
        "file MiB",
        "build s",
        "build +RSS MiB",
        "install s",
        "install +RSS MiB",
        "RSS MiB"
    );
    for r in &rows {
        println!(
            "{:>9} {:>10.1} {:>9.2} {:>15.1} {:>11.2} {:>17.1} {:>9.1}",
            r.records,
            r.file_mib,
            r.build_s,
            r.build_extra_mib,
            r.install_s,
            r.install_extra_mib,
            r.rss_mib
        );
    }
    println!(
        "{}",
        json!({"snapshot": rows.iter().map(|r| json!({"records": r.records, "file_mib": r.file_mib, "build_s": r.build_s, "build_extra_mib": r.build_extra_mib, "install_s": r.install_s, "install_extra_mib": r.install_extra_mib, "rss_mib": r.rss_mib})).collect::<Vec<_>>()})
    );
    Ok(())
}

/// Proof, look-up and apply costs at growing log sizes, and the tree's share of end-to-end
/// signing (its CPU per record times the signings per second a dev node sustains, in one run).
pub fn tlog_costs(
    node_bin: &PathBuf,
    request: &Value,
    sizes: &[u64],
    duration: Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(tlog_cost::measure(sizes))?;
    println!(
        "{:>9} {:>10} {:>12} {:>12} {:>12} {:>11} {:>11}",
        "records",
        "apply µs",
        "incl p50 µs",
        "incl p99 µs",
        "cons p50 µs",
        "look p50 µs",
        "look p99 µs"
    );
    for r in &rows {
        println!(
            "{:>9} {:>10.1} {:>12.1} {:>12.1} {:>12.1} {:>11.1} {:>11.1}",
            r.records,
            r.apply_us,
            r.inclusion_p50_us,
            r.inclusion_p99_us,
            r.consistency_p50_us,
            r.lookup_p50_us,
            r.lookup_p99_us
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "from {} to {} records (x{:.0}): inclusion p50 x{:.2}, look-up p50 x{:.2}, apply per record x{:.2}",
            first.records,
            last.records,
            last.records as f64 / first.records as f64,
            last.inclusion_p50_us / first.inclusion_p50_us,
            last.lookup_p50_us / first.lookup_p50_us,
            last.apply_us / first.apply_us
        );
    }
    let (tree_cpu_us, tree_us) = tlog_cost::tree_cost_per_record(100_000, Duration::from_secs(1))?;
    let data = tempfile::tempdir()?;
    let (mut child, url, creds) = start_node(node_bin, data.path())?;
    let auth = Arc::new(LoadAuth::new(&url, creds)?);
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let row = load.block_on(http_load(&url, auth, request, 16, duration))?;
    let _ = child.kill();
    let _ = child.wait();
    let share = tree_us * row.throughput / 1e6;
    println!(
        "tree per record: {tree_cpu_us:.2} µs CPU, {tree_us:.2} µs with its hashes stored; dev node at 16 clients {:.0} signatures/s (p50 {:.2} ms); \
         the tree costs {:.2}% of one core at that rate (goal: ≤ 5% of signing throughput)",
        row.throughput,
        row.p50_ms,
        share * 100.0
    );
    println!(
        "{}",
        json!({"tlog": rows.iter().map(|r| json!({"records": r.records, "apply_us": r.apply_us, "inclusion_p50_us": r.inclusion_p50_us, "inclusion_p99_us": r.inclusion_p99_us, "consistency_p50_us": r.consistency_p50_us, "lookup_p50_us": r.lookup_p50_us, "lookup_p99_us": r.lookup_p99_us})).collect::<Vec<_>>(), "tree_cpu_us": tree_cpu_us, "tree_stored_us": tree_us, "signatures_per_s": row.throughput, "tree_share": share})
    );
    Ok(())
}

/// The honest caller's figures without and with a flood, on one dev node.
pub fn flood_comparison(
    node_bin: &PathBuf,
    request: &Value,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (mut child, url, creds) = start_node(node_bin, data.path())?;
    let status = stella_api::Client::new(stella_api::ClientConfig {
        server: url.clone(),
        credentials: creds.clone(),
        timeout: Duration::from_secs(30),
    })?;
    let commit_index =
        || -> anyhow::Result<u64> { Ok(status.cluster_status()?.commit_index.unwrap_or(0)) };
    let auth = Arc::new(LoadAuth::new(&url, creds)?);
    let (quiet, flooded) = flood::measure(&url, auth, request, rate, duration, &commit_index)?;
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{:>22} {:>9} {:>9} {:>9} {:>8} {:>11} {:>8} {:>8} {:>12}",
        "honest client (c=1)",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "flood req/s",
        "401",
        "429",
        "Raft entries"
    );
    for (name, p) in [
        ("no flood", &quiet),
        (&*format!("flood {rate}/s"), &flooded),
    ] {
        println!(
            "{:>22} {:>9.0} {:>9.2} {:>9.2} {:>8} {:>11.0} {:>8} {:>8} {:>12}",
            name,
            p.honest.throughput,
            p.honest.p50_ms,
            p.honest.p99_ms,
            p.honest.errors,
            p.flood_per_second,
            p.flood_401,
            p.flood_429,
            p.raft_entries
        );
    }
    println!(
        "flood / no flood: honest p99 {:.2}x, honest throughput {:.3}; flood answers other than 401/429: {}",
        flooded.honest.p99_ms / quiet.honest.p99_ms,
        flooded.honest.throughput / quiet.honest.throughput,
        flooded.flood_other
    );
    Ok(())
}

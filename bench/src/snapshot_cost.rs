//! What a snapshot costs as the audit log grows (issue 15: snapshots and catch-up stream the
//! log instead of loading it): build time, file size, install time on a fresh node, and the
//! process's resident memory above its level before each step, sampled every 5 ms. A snapshot
//! that held the log in memory would need at least the file's size on top.
//!
//! Note: redb keeps a page cache (up to 1 GiB by default) that reading the records and writing
//! the receiver's database fill as they go; that is part of the memory measured here, bounded
//! however big the log (`--cache-mib` bounds it lower, to see what the snapshot itself costs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use stella_state::Command;
use stella_state::raft_types::Entry;

pub struct Row {
    pub records: u64,
    pub file_mib: f64,
    pub build_s: f64,
    pub build_extra_mib: f64,
    pub install_s: f64,
    pub install_extra_mib: f64,
    /// The process's resident memory with the log built to `records` (the state machine open,
    /// as on a node that has applied them).
    pub rss_mib: f64,
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

/// Runs `step`, returning its result and the peak resident memory above the level before it (MiB).
async fn with_peak<T>(step: impl std::future::Future<Output = T>) -> (T, f64) {
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = step.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    peak.fetch_max(rss_kib(), Ordering::Relaxed);
    let extra = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1024.0;
    (out, extra)
}

pub async fn measure(sizes: &[u64], cache_mib: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let cache = cache_mib.map(|m| m * 1024 * 1024);
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = stella_state::storage::open_with_cache(dir.path(), cache)
        .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
    let mut built = 0u64;
    let mut rows = Vec::new();
    for &size in sizes {
        while built < size {
            let batch = (size - built).min(1000);
            let entries: Vec<Entry> = (0..batch)
                .map(|k| Entry {
                    log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), built + k + 1),
                    payload: EntryPayload::Normal(Command::Audit(crate::tlog_cost::draft(
                        built + k,
                    ))),
                })
                .collect();
            sm.apply(entries)
                .await
                .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
            built += batch;
        }
        let rss_mib = rss_kib() as f64 / 1024.0;
        let started = Instant::now();
        let mut builder = sm.get_snapshot_builder().await;
        let (snapshot, build_extra_mib) = with_peak(builder.build_snapshot()).await;
        let snapshot = snapshot.map_err(|e| anyhow::anyhow!("build: {e}"))?;
        let build_s = started.elapsed().as_secs_f64();
        let file_mib = snapshot
            .snapshot
            .metadata()
            .await
            .map(|m| m.len() as f64 / 1024.0 / 1024.0)
            .unwrap_or(0.0);

        let other = tempfile::tempdir()?;
        let (_l, mut fresh) = stella_state::storage::open_with_cache(other.path(), cache)
            .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
        let started = Instant::now();
        let (installed, install_extra_mib) =
            with_peak(fresh.install_snapshot(&snapshot.meta, snapshot.snapshot)).await;
        installed.map_err(|e| anyhow::anyhow!("install: {e}"))?;
        let install_s = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            fresh.view().log_tree() == sm.view().log_tree(),
            "the installed tree differs"
        );
        rows.push(Row {
            records: size,
            file_mib,
            build_s,
            build_extra_mib,
            install_s,
            install_extra_mib,
            rss_mib,
        });
    }
    Ok(rows)
}

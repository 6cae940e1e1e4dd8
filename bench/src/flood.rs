//! An honest caller's latency with and without a flood of unauthenticated requests (issue 13,
//! finding 5), against the same dev node in the same run.
//!
//! The flood comes from the same address as the honest caller (loopback), as it would through a
//! load balancer: every request carries a 480-byte bogus `Authorization` scheme, so the node
//! refuses it before any token is known. Reported per phase: the honest caller's p50/p99 and
//! error rate, the flood's achieved rate and its answers by status, and how much the node's
//! Raft directory grew (refusals must not buy replicated state).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{LoadAuth, Row, http_load};

pub struct Phase {
    pub honest: Row,
    /// Flood requests answered per second, and how many got 401 / 429 / anything else.
    pub flood_per_second: f64,
    pub flood_401: u64,
    pub flood_429: u64,
    pub flood_other: u64,
    pub raft_growth_bytes: u64,
}

/// Runs the honest load for `duration` without a flood, then with `rate` flood requests/s.
pub async fn measure(
    url: &str,
    data_dir: &Path,
    auth: Arc<LoadAuth>,
    request: &Value,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(Phase, Phase)> {
    let quiet = phase(url, data_dir, auth.clone(), request, 0, duration).await?;
    let flooded = phase(url, data_dir, auth, request, rate, duration).await?;
    Ok((quiet, flooded))
}

async fn phase(
    url: &str,
    data_dir: &Path,
    auth: Arc<LoadAuth>,
    request: &Value,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let before = dir_bytes(&data_dir.join("raft"));
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    // The flood runs on its own runtime and threads, like a separate client machine would.
    let flood = (rate > 0).then(|| {
        let (url, stop, counts) = (url.to_owned(), stop.clone(), counts.clone());
        std::thread::spawn(move || flood(&url, rate, &stop, &counts))
    });
    let started = Instant::now();
    let honest = http_load(url, auth, request, 1, duration).await?;
    stop.store(true, Ordering::Relaxed);
    if let Some(flood) = flood {
        flood
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let [sent_401, sent_429, other, answered] = counts.as_ref();
    Ok(Phase {
        honest,
        flood_per_second: answered.load(Ordering::Relaxed) as f64 / elapsed,
        flood_401: sent_401.load(Ordering::Relaxed),
        flood_429: sent_429.load(Ordering::Relaxed),
        flood_other: other.load(Ordering::Relaxed),
        raft_growth_bytes: dir_bytes(&data_dir.join("raft")).saturating_sub(before),
    })
}

/// Sends bogus-scheme requests at about `rate` per second until `stop`; counts the answers as
/// [401, 429, other, all].
fn flood(url: &str, rate: u64, stop: &AtomicBool, counts: &[AtomicU64; 4]) -> anyhow::Result<()> {
    const SENDERS: u64 = 32;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let endpoint = format!("{url}/api/v1/signer/sign/dsse");
    let junk = format!("{} token", "x".repeat(480));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(SENDERS as usize)
        .build()?;
    let interval = Duration::from_secs_f64(SENDERS as f64 / rate.max(1) as f64);
    runtime.block_on(async {
        let senders = (0..SENDERS).map(|_| {
            let (client, endpoint, junk) = (client.clone(), endpoint.clone(), junk.clone());
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let answer = client
                        .post(&endpoint)
                        .header("authorization", &junk)
                        .header("content-type", "application/json")
                        .body("{}")
                        .send()
                        .await;
                    let slot = match answer.as_ref().map(|r| r.status().as_u16()) {
                        Ok(401) => 0,
                        Ok(429) => 1,
                        _ => 2,
                    };
                    if let Ok(r) = answer {
                        let _ = r.bytes().await;
                    }
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    counts[3].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        futures_util::future::join_all(senders).await;
    });
    Ok(())
}

/// Bytes of the files directly in `dir` (the Raft log and state-machine files).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

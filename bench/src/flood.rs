//! An honest caller's latency with and without a flood of unauthenticated requests (issue 13,
//! finding 5), against the same dev node in the same run.
//!
//! The flood comes from the same address as the honest caller (loopback), as it would through a
//! load balancer: every request carries a 480-byte bogus `Authorization` scheme, so the node
//! refuses it before any token is known. Reported per phase: the honest caller's p50/p99 and
//! error rate, the flood's achieved rate and its answers by status, and how many Raft entries
//! the phase committed beside the honest signings (refusals must not buy replicated state).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::load::{LoadAuth, Row, http_load};

pub struct Phase {
    pub honest: Row,
    /// Flood requests answered per second, and how many got 401 / 429 / anything else.
    pub flood_per_second: f64,
    pub flood_401: u64,
    pub flood_429: u64,
    pub flood_other: u64,
    /// Raft entries committed during the phase.
    pub raft_entries: u64,
}

/// Runs the honest load for `duration` without a flood, then with `rate` flood requests/s;
/// `commit_index` reads the node's committed Raft index (a blocking call, between phases).
pub fn measure(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    rate: u64,
    duration: Duration,
    commit_index: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<(Phase, Phase)> {
    let quiet = phase(url, auth.clone(), request, 0, duration, commit_index)?;
    let flooded = phase(url, auth, request, rate, duration, commit_index)?;
    Ok((quiet, flooded))
}

fn phase(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    rate: u64,
    duration: Duration,
    commit_index: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<Phase> {
    let before = commit_index()?;
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
    let honest = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(http_load(url, auth, request, 1, duration));
    stop.store(true, Ordering::Relaxed);
    if let Some(flood) = flood {
        flood
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    }
    let honest = honest?;
    let elapsed = started.elapsed().as_secs_f64();
    let [sent_401, sent_429, other, answered] = counts.as_ref();
    Ok(Phase {
        honest,
        flood_per_second: answered.load(Ordering::Relaxed) as f64 / elapsed,
        flood_401: sent_401.load(Ordering::Relaxed),
        flood_429: sent_429.load(Ordering::Relaxed),
        flood_other: other.load(Ordering::Relaxed),
        raft_entries: commit_index()?.saturating_sub(before),
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

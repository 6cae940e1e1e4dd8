//! `stella-load --steady SECS`: signing throughput per second over a long run on one dev node
//! (a node without a `[cluster]` section), so a rate that falls as the node runs shows up —
//! an average hides it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::LoadAuth;

/// Successful signings in each second of the run.
pub async fn per_second(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let mut request = request.clone();
    if let Some(poe) = &auth.poe {
        request["poe"] = serde_json::to_value(poe)?;
    }
    let body = Arc::new(serde_json::to_vec(&request)?);
    let endpoint = Arc::new(format!("{url}/api/v1/signer/sign/dsse"));
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, body, endpoint, auth, buckets, errors) = (
                client.clone(),
                body.clone(),
                endpoint.clone(),
                auth.clone(),
                buckets.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let Ok(headers) = auth.headers(endpoint.as_str()) else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let mut post = client
                        .post(endpoint.as_str())
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone());
                    for (name, value) in headers {
                        post = post.header(name, value);
                    }
                    match post.send().await {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.bytes().await;
                            let second = started.elapsed().as_secs() as usize;
                            if let Some(b) = buckets.get(second) {
                                b.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(resp) if resp.status() == 401 && auth.remember_nonce(&resp) => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in futures_util::future::join_all(tasks).await {
        t?;
    }
    let series = buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    Ok((series, errors.load(Ordering::Relaxed)))
}

/// Prints the series and its summary: the first and last 5 s, min, max, last ÷ first.
pub fn report(series: &[u64], errors: u64, clients: usize) {
    let line: Vec<String> = series.iter().map(u64::to_string).collect();
    println!(
        "signatures per second ({clients} clients): {}",
        line.join(" ")
    );
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
    let window = series.len().min(5);
    let first = mean(&series[..window]);
    let last = mean(&series[series.len() - window..]);
    let min = series.iter().min().copied().unwrap_or(0);
    let max = series.iter().max().copied().unwrap_or(0);
    println!(
        "steady: mean {:.0}/s, first 5 s {first:.0}/s, last 5 s {last:.0}/s, min {min}, max {max}, last/first {:.3}, errors {errors}",
        mean(series),
        last / first.max(1.0)
    );
    println!(
        "{}",
        json!({"steady": {"clients": clients, "per_second": series, "first5": first, "last5": last, "min": min, "max": max, "errors": errors}})
    );
}

/// The sizes of the node's Raft files after the run (what grew while it ran).
pub fn files(raft_dir: &std::path::Path) {
    let mut out = Vec::new();
    for name in ["raft-log.redb", "state-machine.redb"] {
        let size = std::fs::metadata(raft_dir.join(name)).map_or(0, |m| m.len());
        out.push(format!("{name} {:.1} MiB", size as f64 / 1048576.0));
    }
    if let Ok(entries) = std::fs::read_dir(raft_dir.join("snapshots")) {
        for e in entries.flatten() {
            let size = e.metadata().map_or(0, |m| m.len());
            out.push(format!(
                "{} {:.1} MiB",
                e.file_name().to_string_lossy(),
                size as f64 / 1048576.0
            ));
        }
    }
    println!("files after the run: {}", out.join(", "));
}

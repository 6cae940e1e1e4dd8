//! G6: overload. A dev node's saturation rate is measured first (closed loop, 64 clients), and
//! a single client's signing latency with the node idle; then requests are offered open-loop at
//! 3× the saturation rate (each with a fresh DPoP proof, as honest clients send them) for the
//! overload period, at most `MAX_IN_FLIGHT` outstanding (beyond that the generator counts the
//! request as not sent: the generator, not the node, is then the limit, and it says so).
//!
//! Reported: goodput (signatures/s, per second) ÷ saturation (goal ≥ 0.9); every rejection's
//! status and whether it carried `Retry-After` (goal: all 429/503 with it); the rejections'
//! latency against a signing's latency (goal: a rejection costs ≤ 5 % of a signing — measured
//! here from the client as latency, which includes any queueing before the rejection).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{self, LoadAuth, http_load, percentile_ms, start_node};
use crate::runtime_1;

const MAX_IN_FLIGHT: u64 = 512;

#[derive(Default)]
struct Outcome {
    signed: Vec<Duration>,
    rejected: Vec<Duration>,
    rejected_with_retry_after: u64,
    rejected_429: u64,
    rejected_503: u64,
    other: u64,
}

pub fn report(
    node_bin: &PathBuf,
    request: &Value,
    duration: Duration,
    overload: Duration,
) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (mut child, url, creds) = start_node(node_bin, data.path())?;
    let auth = Arc::new(LoadAuth::new(&url, creds)?);
    let runtime = runtime_1()?;
    let idle = runtime.block_on(http_load(&url, auth.clone(), request, 1, duration))?;
    let saturated = runtime.block_on(http_load(&url, auth.clone(), request, 64, duration))?;
    let saturation = saturated.throughput;
    println!(
        "saturation (64 clients, closed loop): {saturation:.0} signatures/s (p50 {:.2} ms); one client, idle node: p50 {:.2} ms",
        saturated.p50_ms, idle.p50_ms
    );
    let rate = 3.0 * saturation;
    let (outcome, per_second, offered, not_sent) =
        runtime.block_on(open_loop(&url, auth, request, rate, overload))?;
    load::terminate(&mut child);

    let secs = overload.as_secs_f64();
    // Signatures completed within the overload period (the tail answered after it is not
    // goodput of the period).
    let in_period: u64 = per_second.iter().sum();
    let goodput = in_period as f64 / secs;
    let rejected = outcome.rejected.len() as u64;
    let mut rejected_lat = outcome.rejected.clone();
    rejected_lat.sort_unstable();
    let mut signed_lat = outcome.signed.clone();
    signed_lat.sort_unstable();
    let (rej_p50, rej_p99) = (
        percentile_ms(&rejected_lat, 0.5),
        percentile_ms(&rejected_lat, 0.99),
    );
    let cost = rej_p50 / idle.p50_ms;
    let series = crate::load::Row {
        throughput: goodput,
        p50_ms: percentile_ms(&signed_lat, 0.5),
        p90_ms: percentile_ms(&signed_lat, 0.9),
        p99_ms: percentile_ms(&signed_lat, 0.99),
        errors: 0,
        per_second: per_second.clone(),
        error_kinds: Default::default(),
    };
    println!(
        "offered {:.0}/s for {secs:.0} s (3 × saturation = {rate:.0}/s asked; {not_sent} not sent: {MAX_IN_FLIGHT} already outstanding)",
        offered as f64 / secs
    );
    println!(
        "signed {} ({in_period} within the period: goodput {goodput:.0}/s, p50 {:.2} ms, p99 {:.2} ms; {}), rejected {rejected} (429: {}, 503: {}, with Retry-After: {}), other answers or transport errors {}",
        outcome.signed.len(),
        series.p50_ms,
        series.p99_ms,
        series.series_summary(),
        outcome.rejected_429,
        outcome.rejected_503,
        outcome.rejected_with_retry_after,
        outcome.other
    );
    let g6 = goodput / saturation;
    println!(
        "G6 = goodput under 3× overload / saturation = {goodput:.0} / {saturation:.0} = {g6:.3} (goal >= 0.9); \
         rejections with Retry-After {}/{rejected}; rejection p50 {rej_p50:.2} ms (p99 {rej_p99:.2} ms) = {:.1}% of a signing's p50 on an idle node ({:.2} ms; goal <= 5%)",
        outcome.rejected_with_retry_after,
        cost * 100.0,
        idle.p50_ms
    );
    println!(
        "{}",
        json!({"saturation": saturation, "offered_per_s": offered as f64 / secs, "not_sent": not_sent, "goodput": goodput, "g6": g6, "per_second": per_second,
               "rejected": rejected, "rejected_429": outcome.rejected_429, "rejected_503": outcome.rejected_503, "with_retry_after": outcome.rejected_with_retry_after,
               "other": outcome.other, "rejection_p50_ms": rej_p50, "rejection_p99_ms": rej_p99, "signing_idle_p50_ms": idle.p50_ms, "rejection_cost": cost})
    );
    Ok(())
}

/// Offers `rate` requests per second for `period`, open loop. Returns the outcomes, signatures
/// per second, requests sent, and requests not sent for the in-flight cap.
async fn open_loop(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    rate: f64,
    period: Duration,
) -> anyhow::Result<(Outcome, Vec<u64>, u64, u64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT as usize)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut body = request.clone();
    if let Some(poe) = &auth.poe {
        body["poe"] = serde_json::to_value(poe)?;
    }
    let body = Arc::new(serde_json::to_vec(&body)?);
    let endpoint = Arc::new(format!("{url}/api/v1/signer/sign/dsse"));
    let in_flight = Arc::new(AtomicU64::new(0));
    let outcome = Arc::new(std::sync::Mutex::new(Outcome::default()));
    let seconds = period.as_secs() as usize;
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..=seconds).map(|_| AtomicU64::new(0)).collect());
    let (mut sent, mut not_sent) = (0u64, 0u64);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::new();
    while started.elapsed() < period {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent + not_sent < due {
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                not_sent += 1;
                continue;
            }
            sent += 1;
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, body, endpoint, auth, in_flight, outcome, buckets) = (
                client.clone(),
                body.clone(),
                endpoint.clone(),
                auth.clone(),
                in_flight.clone(),
                outcome.clone(),
                buckets.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let answer = match auth.headers(&endpoint) {
                    Ok(headers) => {
                        let mut post = client
                            .post(endpoint.as_str())
                            .header("content-type", "application/json")
                            .body(body.as_ref().clone());
                        for (name, value) in headers {
                            post = post.header(name, value);
                        }
                        post.send().await.ok()
                    }
                    Err(_) => None,
                };
                let status = answer.as_ref().map(|r| r.status().as_u16());
                let retry_after = answer
                    .as_ref()
                    .is_some_and(|r| r.headers().contains_key("retry-after"));
                if let Some(r) = answer {
                    if r.status() == 401 {
                        auth.remember_nonce(&r);
                    }
                    let _ = r.bytes().await;
                }
                let took = t0.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let Ok(mut o) = outcome.lock() else { return };
                match status {
                    Some(200) => {
                        o.signed.push(took);
                        if let Some(b) = buckets.get(started.elapsed().as_secs() as usize) {
                            b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(s @ (429 | 503)) => {
                        o.rejected.push(took);
                        o.rejected_with_retry_after += u64::from(retry_after);
                        if s == 429 {
                            o.rejected_429 += 1;
                        } else {
                            o.rejected_503 += 1;
                        }
                    }
                    _ => o.other += 1,
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let per_second = buckets
        .iter()
        .take(seconds)
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let outcome = Arc::try_unwrap(outcome)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    Ok((outcome, per_second, sent, not_sent))
}

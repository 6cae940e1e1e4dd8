//! `stella-load`: end-to-end signing throughput of a dev node against the raw signing speed of
//! the key back-end, measured in the same run on the same machine (goal G1: ≥ 0.5 of B_sign with
//! the audit fsync included).
//!
//! 1. B_sign: two threads sign a typical PAE message in a loop with the file-key back-end.
//! 2. A dev node (`stella-signer serve --dev`, from the same build) is started on a fresh data
//!    directory, and HTTP clients sign through it at several concurrency levels.
//!
//! The load generator runs on a single-threaded runtime so it takes at most one core from the
//! node; on a 2-core machine that is a real handicap and the ratio should be read with it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use stella_signer::{
    FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PredicateType, Statement, Subject,
};

mod admission_cost;
mod apply_cost;
mod flood;
mod key_backends;
mod raft_writes;
mod snapshot_cost;
mod steady;
mod threshold_net;
mod tlog_cost;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stella-load",
    about = "End-to-end signing throughput vs. the raw signing loop"
)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrency levels (in-flight requests).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Short run for CI smoke tests: 0.5 s per step, concurrency 1 and 8.
    #[arg(long)]
    quick: bool,
    /// The stella-signer binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Only the Raft-vs-redb write comparison, at these client counts (e.g. 1,4,64).
    #[arg(long, value_delimiter = ',')]
    g3_only: Vec<usize>,
    /// Only the flood comparison: one honest DPoP client with no flood, then under this many
    /// unauthenticated requests per second from the same address (issue 13, finding 5).
    #[arg(long)]
    flood: Option<u64>,
    /// Only the transparency log's costs, at these log sizes (e.g. 10000,100000,1000000):
    /// proof and look-up times, apply cost per record, and the tree's share of end-to-end
    /// signing on a dev node.
    #[arg(long, value_delimiter = ',')]
    tlog: Vec<u64>,
    /// Only snapshot costs at these log sizes (e.g. 100000,1000000): build and install time,
    /// file size, and the memory each step adds.
    #[arg(long, value_delimiter = ',')]
    snapshot: Vec<u64>,
    /// With --snapshot: bound redb's page cache to this many MiB (default: redb's 1 GiB).
    #[arg(long)]
    cache_mib: Option<usize>,
    /// Only throughput per second over this many seconds on one dev node, at the first
    /// --concurrency level (flat over time, issue 18).
    #[arg(long)]
    steady: Option<u64>,
    /// Only the state machine's apply cost per entry with this many ledgers (e.g.
    /// 1,1000,100000), over 2,000 entries each.
    #[arg(long, value_delimiter = ',')]
    apply_cost: Vec<u64>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 0.5;
        args.concurrency = vec![1, 8];
    }
    let duration = Duration::from_secs_f64(args.duration);
    if !args.g3_only.is_empty() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for clients in &args.g3_only {
            let g3 = runtime.block_on(raft_writes::measure(*clients, duration))?;
            println!(
                "{clients:>4} clients: Raft {:.0} writes/s, redb group commit {:.0} writes/s, ratio {:.3}",
                g3.raft,
                g3.baseline,
                g3.raft / g3.baseline
            );
        }
        return Ok(());
    }
    if !args.snapshot.is_empty() {
        return snapshot_costs(&args.snapshot, args.cache_mib);
    }
    if !args.apply_cost.is_empty() {
        let rows = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(apply_cost::measure(&args.apply_cost, 2_000))?;
        println!(
            "{:>9} {:>14} {:>17} {:>9} {:>10}",
            "ledgers", "apply µs/entry", "file bytes/entry", "file MiB", "state MiB"
        );
        for r in &rows {
            println!(
                "{:>9} {:>14.1} {:>17.0} {:>9.1} {:>10.1}",
                r.ledgers, r.apply_us, r.file_growth_bytes_per_entry, r.file_mib, r.state_mib
            );
        }
        println!(
            "{}",
            json!({"apply_cost": rows.iter().map(|r| json!({"ledgers": r.ledgers, "apply_us": r.apply_us, "file_bytes_per_entry": r.file_growth_bytes_per_entry, "file_mib": r.file_mib, "state_mib": r.state_mib})).collect::<Vec<_>>()})
        );
        return Ok(());
    }
    let request = sample_request();
    let node_bin = match &args.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("stella-signer"),
    };
    if let Some(rate) = args.flood {
        return flood_comparison(&node_bin, &request, rate, duration);
    }
    if !args.tlog.is_empty() {
        return tlog_costs(&node_bin, &request, &args.tlog, duration);
    }
    if let Some(seconds) = args.steady {
        let clients = args.concurrency.first().copied().unwrap_or(8);
        let data = tempfile::tempdir()?;
        let (mut child, url, creds) = start_node(&node_bin, data.path())?;
        let auth = Arc::new(LoadAuth::new(&url, creds)?);
        let (series, errors) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(steady::per_second(&url, auth, &request, clients, seconds))?;
        steady::report(&series, errors, clients);
        steady::files(&data.path().join("raft"));
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }

    let b_sign = raw_sign_loop(&request, duration)?;
    println!("B_sign (file key, aws-lc-rs, 2 threads): {b_sign:.0} signatures/s");

    let pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, &serde_json::to_vec(&request)?);
    let backends = key_backends::compare(&pae, duration)?;
    for b in &backends {
        println!(
            "G5: {:<18} {:>8.0} signatures/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
            b.name, b.per_second, b.p50_us, b.p99_us
        );
    }
    if let Some(file) = backends.first() {
        for other in &backends[1..] {
            println!(
                "G5 {} / file: throughput {:.3}, p99 {:.2}x",
                other.name,
                other.per_second / file.per_second,
                other.p99_us / file.p99_us
            );
        }
    }

    let mut g5_frost = serde_json::Map::new();
    for suite in stella_signer::threshold::SuiteId::ALL {
        let (in_process, network) = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(threshold_net::measure(suite, &pae, duration))?;
        for r in [&in_process, &network] {
            println!(
                "G5: {:<30} {:>8.0} signatures/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
                r.name, r.per_second, r.p50_us, r.p99_us
            );
        }
        println!(
            "G5 FROST {suite} network / in process (2-of-3): p50 {:.2}x (goal ≤ 5x), p99 {:.2}x",
            network.p50_us / in_process.p50_us,
            network.p99_us / in_process.p99_us
        );
        g5_frost.insert(
            suite.name().to_owned(),
            json!({"in_process_p50_us": in_process.p50_us, "network_p50_us": network.p50_us, "p50_ratio": network.p50_us / in_process.p50_us}),
        );
    }

    let cost = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admission_cost::measure(&request, duration))?;
    println!(
        "admission per request (in process, 1 thread): {:.1} µs (OpTok + DPoP + PoE cache) vs signing {:.1} µs; \
         signing alone {:.0}/s, admitted signing {:.0}/s, ratio {:.3}",
        cost.admission_us,
        cost.sign_us,
        cost.sign_per_s,
        cost.admitted_sign_per_s,
        cost.admitted_sign_per_s / cost.sign_per_s
    );

    let data = tempfile::tempdir()?;
    let (mut child, url, creds) = start_node(&node_bin, data.path())?;
    let auth = Arc::new(LoadAuth::new(&url, creds)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    println!(
        "{:>11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "ratio"
    );
    for &c in &args.concurrency {
        let row = runtime.block_on(http_load(&url, auth.clone(), &request, c, duration))?;
        let ratio = row.throughput / b_sign;
        println!(
            "{:>11} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>7.3}",
            c, row.throughput, row.p50_ms, row.p90_ms, row.p99_ms, row.errors, ratio
        );
        rows.push(json!({"concurrency": c, "throughput": row.throughput, "p50_ms": row.p50_ms, "p90_ms": row.p90_ms, "p99_ms": row.p99_ms, "errors": row.errors, "ratio_to_b_sign": ratio}));
    }
    let _ = child.kill();
    let _ = child.wait();
    let best = rows
        .iter()
        .filter_map(|r| r["throughput"].as_f64())
        .fold(0.0, f64::max);
    let g1 = best / b_sign;
    println!("G1 = best end-to-end / B_sign = {best:.0} / {b_sign:.0} = {g1:.3} (goal >= 0.5)");

    let g3_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let g3 = g3_runtime.block_on(raft_writes::measure(64, duration))?;
    let g3_ratio = g3.raft / g3.baseline;
    println!(
        "G3 = Raft-committed audit writes/s at 64 clients / redb group-commit baseline = {:.0} / {:.0} = {g3_ratio:.3}",
        g3.raft, g3.baseline
    );
    println!(
        "{}",
        json!({"b_sign": b_sign, "admission": {"admission_us": cost.admission_us, "sign_us": cost.sign_us, "sign_per_s": cost.sign_per_s, "admitted_sign_per_s": cost.admitted_sign_per_s}, "levels": rows, "g1": g1, "g3": {"raft": g3.raft, "baseline": g3.baseline, "ratio": g3_ratio}, "g5_frost": g5_frost})
    );
    if rows.iter().any(|r| r["errors"].as_u64() != Some(0)) {
        bail!("some requests failed");
    }
    Ok(())
}

/// Snapshot build and install at growing log sizes, with the memory each step adds.
fn snapshot_costs(sizes: &[u64], cache_mib: Option<usize>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(snapshot_cost::measure(sizes, cache_mib))?;
    println!(
        "{:>9} {:>10} {:>9} {:>15} {:>11} {:>17}",
        "records", "file MiB", "build s", "build +RSS MiB", "install s", "install +RSS MiB"
    );
    for r in &rows {
        println!(
            "{:>9} {:>10.1} {:>9.2} {:>15.1} {:>11.2} {:>17.1}",
            r.records, r.file_mib, r.build_s, r.build_extra_mib, r.install_s, r.install_extra_mib
        );
    }
    println!(
        "{}",
        json!({"snapshot": rows.iter().map(|r| json!({"records": r.records, "file_mib": r.file_mib, "build_s": r.build_s, "build_extra_mib": r.build_extra_mib, "install_s": r.install_s, "install_extra_mib": r.install_extra_mib})).collect::<Vec<_>>()})
    );
    Ok(())
}

/// Proof, look-up and apply costs at growing log sizes, and the tree's share of end-to-end
/// signing (its CPU per record times the signings per second a dev node sustains, in one run).
fn tlog_costs(
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
fn flood_comparison(
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

fn sample_request() -> Value {
    let sbom = include_bytes!("../../examples/sbom.cdx.json");
    json!({
        "subject": [{"name": "registry.example/acme/payments", "digest": {"sha256": "8d3c9f1e2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f"}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": stella_signer::digest::sha256_ref(sbom), "componentCount": 5},
    })
}

/// Signatures per second of the file-key back-end over the PAE of the same statement, 2 threads.
fn raw_sign_loop(request: &Value, duration: Duration) -> anyhow::Result<f64> {
    let subjects: Vec<Subject> = serde_json::from_value(request["subject"].clone())?;
    let statement = Statement::build(subjects, PredicateType::Sbom, request["predicate"].clone())?;
    let pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, &statement.to_canonical_bytes()?);
    let key = Arc::new(FileKeySigner::generate()?);
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (key, count, stop, pae) = (key.clone(), count.clone(), stop.clone(), pae.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if key.sign(&pae).is_ok() {
                        n += 1;
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn start_node(
    bin: &PathBuf,
    data: &std::path::Path,
) -> anyhow::Result<(std::process::Child, String, stella_api::Credentials)> {
    let mut child = Command::new(bin)
        .args(["serve", "--dev", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("STELLA_LOG", "warn,stella_node::app=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let Some(line) = lines.next() else {
            bail!("the node exited before it was ready")
        };
        let line = line?;
        if line.contains("stella-signer listening") {
            let v: Value = serde_json::from_str(&line)?;
            break v["url"].as_str().context("url")?.to_owned();
        }
    };
    // Keep draining the node's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let creds = stella_api::Credentials::load(&data.join("dev")).map_err(anyhow::Error::msg)?;
    Ok((child, url, creds))
}

/// What the load generator needs to authenticate like the CLI does: an access token, the DPoP
/// key (one fresh proof per request, as RFC 9449 requires) and the server's current nonce.
struct LoadAuth {
    token: String,
    key: stella_api::dpop::DpopKey,
    nonce: std::sync::RwLock<Option<String>>,
    poe: Option<stella_api::ProofOfEntitlement>,
}

impl LoadAuth {
    /// Obtains the token and a first nonce with the blocking client (before any runtime).
    fn new(url: &str, creds: stella_api::Credentials) -> anyhow::Result<LoadAuth> {
        let client = stella_api::Client::new(stella_api::ClientConfig {
            server: url.to_owned(),
            credentials: creds.clone(),
            timeout: Duration::from_secs(30),
        })?;
        client.audit(&[("limit", "1".to_owned())])?;
        let key = stella_api::dpop::DpopKey::from_pem(
            creds
                .dpop_key_pem
                .as_deref()
                .context("no DPoP key in the credentials")?,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(LoadAuth {
            token: client.access_token()?,
            key,
            nonce: std::sync::RwLock::new(client.dpop_nonce()),
            poe: creds.poe,
        })
    }

    fn headers(&self, url: &str) -> anyhow::Result<[(&'static str, String); 2]> {
        let nonce = self.nonce.read().map(|n| n.clone()).unwrap_or_default();
        let proof = self
            .key
            .proof(
                "POST",
                url,
                Some(&self.token),
                nonce.as_deref(),
                stella_api::dpop::unix_now(),
            )
            .map_err(anyhow::Error::msg)?;
        Ok([
            ("authorization", format!("DPoP {}", self.token)),
            ("dpop", proof),
        ])
    }

    fn remember_nonce(&self, response: &reqwest::Response) -> bool {
        let Some(nonce) = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Ok(mut slot) = self.nonce.write() {
            *slot = Some(nonce.to_owned());
        }
        true
    }
}

struct Row {
    throughput: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn http_load(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let mut request = request.clone();
    if let Some(poe) = &auth.poe {
        request["poe"] = serde_json::to_value(poe)?;
    }
    let body = Arc::new(serde_json::to_vec(&request)?);
    let endpoint = Arc::new(format!("{url}/api/v1/signer/sign/dsse"));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, endpoint, auth) =
                (client.clone(), body.clone(), endpoint.clone(), auth.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let Ok(headers) = auth.headers(endpoint.as_str()) else {
                        errors += 1;
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
                            latencies.push(t0.elapsed());
                        }
                        // A nonce rotation is part of the protocol: retry, do not count it.
                        Ok(resp) if resp.status() == 401 && auth.remember_nonce(&resp) => {}
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in futures_util::future::join_all(tasks).await {
        let (l, e) = t?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i].as_secs_f64() * 1000.0
    };
    Ok(Row {
        throughput: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        errors,
    })
}

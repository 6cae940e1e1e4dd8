//! The end-to-end load generator's parts: the sample request, the raw signing loop, a dev
//! node, DPoP authentication like the CLI's, and closed-loop HTTP load over one or several
//! nodes with a per-second series of completions.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stella_signer::{
    FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PredicateType, Statement, Subject,
};

pub fn sample_request() -> Value {
    let sbom = include_bytes!("../../examples/sbom.cdx.json");
    json!({
        "subject": [{"name": "registry.example/acme/payments", "digest": {"sha256": "8d3c9f1e2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f"}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": stella_signer::digest::sha256_ref(sbom), "componentCount": 5},
    })
}

/// Signatures per second of the file-key back-end over the PAE of the same statement, 2 threads.
pub fn raw_sign_loop(request: &Value, duration: Duration) -> anyhow::Result<f64> {
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

pub fn start_node(
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
pub struct LoadAuth {
    pub token: String,
    pub key: stella_api::dpop::DpopKey,
    pub nonce: std::sync::RwLock<Option<String>>,
    pub poe: Option<stella_api::ProofOfEntitlement>,
}

impl LoadAuth {
    /// Obtains the token and a first nonce with the blocking client (before any runtime).
    pub fn new(url: &str, creds: stella_api::Credentials) -> anyhow::Result<LoadAuth> {
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

    pub fn headers(&self, url: &str) -> anyhow::Result<[(&'static str, String); 2]> {
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

    pub fn remember_nonce(&self, response: &reqwest::Response) -> bool {
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

/// Where a load client sends its requests: a node's URL and the caller's authentication there.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub auth: Arc<LoadAuth>,
}

pub struct Row {
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Signatures completed in each second of the run.
    pub per_second: Vec<u64>,
    /// What the errors were: `status 503`, `transport`, … and how many of each.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
}

impl Row {
    /// The per-second series as `min / median / max` and the last second's share of the
    /// first full second (flat over time reads ~1.0).
    pub fn series_summary(&self) -> String {
        let full: Vec<u64> = self.per_second.clone();
        if full.is_empty() {
            return "no full second".into();
        }
        let mut sorted = full.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let (first, last) = (full[0].max(1), full[full.len() - 1]);
        let errors = if self.error_kinds.is_empty() {
            String::new()
        } else {
            format!("; errors {:?}", self.error_kinds)
        };
        format!(
            "per second min {} / median {} / max {}, last ÷ first {:.2}{errors}",
            sorted[0],
            median,
            sorted[sorted.len() - 1],
            last as f64 / first as f64
        )
    }

    pub fn to_json(&self, concurrency: usize) -> Value {
        json!({"concurrency": concurrency, "throughput": self.throughput, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "errors": self.errors, "error_kinds": self.error_kinds, "per_second": self.per_second})
    }
}

/// Closed-loop load on one node.
pub async fn http_load(
    url: &str,
    auth: Arc<LoadAuth>,
    request: &Value,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let target = Target {
        url: url.to_owned(),
        auth,
    };
    http_load_spread(&[target], request, concurrency, duration).await
}

/// Closed-loop load: `concurrency` clients, client `i` on `targets[i % n]` (as a balancer
/// spreading connections would), each signing back to back for `duration`.
pub async fn http_load_spread(
    targets: &[Target],
    request: &Value,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    anyhow::ensure!(!targets.is_empty(), "no target");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let seconds = duration.as_secs_f64().ceil() as usize + 1;
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let target = &targets[i % targets.len()];
        let mut body = request.clone();
        if let Some(poe) = &target.auth.poe {
            body["poe"] = serde_json::to_value(poe)?;
        }
        let body = serde_json::to_vec(&body)?;
        let endpoint = format!("{}/api/v1/signer/sign/dsse", target.url);
        let (client, auth, buckets) = (client.clone(), target.auth.clone(), buckets.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = std::collections::BTreeMap::<String, u64>::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let Ok(headers) = auth.headers(&endpoint) else {
                    *errors.entry("proof".into()).or_default() += 1;
                    continue;
                };
                let mut post = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(body.clone());
                for (name, value) in headers {
                    post = post.header(name, value);
                }
                match post.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        latencies.push(t0.elapsed());
                        let second = started.elapsed().as_secs() as usize;
                        if let Some(b) = buckets.get(second) {
                            b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A nonce rotation is part of the protocol: retry, do not count it.
                    Ok(resp) if resp.status() == 401 && auth.remember_nonce(&resp) => {}
                    Ok(resp) => {
                        let kind = format!("status {}", resp.status().as_u16());
                        *errors.entry(kind).or_default() += 1;
                    }
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport"
                        };
                        *errors.entry(kind.into()).or_default() += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut error_kinds = std::collections::BTreeMap::<String, u64>::new();
    for t in futures_util::future::join_all(tasks).await {
        let (l, e) = t?;
        all.extend(l);
        for (k, n) in e {
            *error_kinds.entry(k).or_default() += n;
        }
    }
    let errors = error_kinds.values().sum();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let full = duration.as_secs() as usize;
    let per_second = buckets
        .iter()
        .take(full)
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    Ok(Row {
        throughput: all.len() as f64 / elapsed,
        p50_ms: percentile_ms(&all, 0.50),
        p90_ms: percentile_ms(&all, 0.90),
        p99_ms: percentile_ms(&all, 0.99),
        errors,
        per_second,
        error_kinds,
    })
}

/// The `p` quantile of sorted durations, in milliseconds (0 when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// fdatasync p50 of the disk under `dir`, in milliseconds: `n` appends of 4 KiB, each followed
/// by `File::sync_data` (fdatasync on Linux), as a log append would be.
pub fn fdatasync_p50_ms(dir: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        file.write_all(&block)?;
        let t0 = Instant::now();
        file.sync_data()?;
        times.push(t0.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    Ok(percentile_ms(&times, 0.5))
}

/// G4: single-client signing p50 against fdatasync p50 of the same disk; goal ≤ 2 × fsync + 1 ms.
pub fn print_g4(c1_p50_ms: f64, fsync_p50_ms: f64) -> Value {
    let bound = 2.0 * fsync_p50_ms + 1.0;
    println!(
        "G4 = single-client signing p50 / fdatasync p50 = {c1_p50_ms:.2} ms / {fsync_p50_ms:.3} ms = {:.1}x; goal p50 ≤ 2 × fsync + 1 ms = {bound:.2} ms: {}",
        c1_p50_ms / fsync_p50_ms.max(1e-6),
        if c1_p50_ms <= bound { "met" } else { "missed" }
    );
    json!({"c1_p50_ms": c1_p50_ms, "fdatasync_p50_ms": fsync_p50_ms, "bound_ms": bound, "met": c1_p50_ms <= bound})
}

/// Jiffies (busy, total) of the whole machine from /proc/stat, to tell how much of the CPU a
/// run used: `busy_share(before, after)`.
pub fn cpu_jiffies() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The machine's busy share between two `cpu_jiffies` readings (0..1).
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// Stops a node with SIGTERM (a clean shutdown) and waits for it.
pub fn terminate(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}

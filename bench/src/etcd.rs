//! The G3 baseline: a 3-node etcd (Debian's `etcd-server`, fsync on — etcd's default; nothing
//! here passes `--unsafe-no-fsync`) on loopback, loaded through its JSON gateway with one
//! `/v3/kv/put` per request, from the same load generator and runtime as the signer's clients.
//! Each put carries a 1 KiB value, the order of a signing's audit record.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::load::{Row, percentile_ms};

/// The etcd members; killed (by their own child handles) on drop.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Puts per second at `clients` concurrent clients spread over the three members; `None` when
/// etcd is not installed.
pub async fn measure(clients: usize, duration: Duration) -> anyhow::Result<Option<Row>> {
    if !installed() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let initial = (0..3)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Members(Vec::new());
    for i in 0..3 {
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.path().join(format!("e{i}")))
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", peers[i]),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", peers[i]),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", client_ports[i]),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", client_ports[i]),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "stella-bench",
                "--logger",
                "zap",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        members.0.push(child);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let urls: Vec<String> = client_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    // Healthy = every member answers a linearizable put (a leader exists and a quorum commits).
    let ready_by = Instant::now() + Duration::from_secs(60);
    for url in &urls {
        loop {
            let ok = http
                .post(format!("{url}/v3/kv/put"))
                .body(r#"{"key":"cmVhZHk=","value":"MQ=="}"#)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            anyhow::ensure!(
                Instant::now() < ready_by,
                "etcd did not become ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let b64 = &base64::engine::general_purpose::STANDARD;
    let value = b64.encode(vec![b'v'; 1024]);
    let seconds = duration.as_secs_f64().ceil() as usize + 1;
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let endpoint = format!("{}/v3/kv/put", urls[c % urls.len()]);
            let (http, value, buckets) = (http.clone(), value.clone(), buckets.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < deadline {
                    n += 1;
                    let key = b64.encode(format!("bench/{c}/{n}"));
                    let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                    let t0 = Instant::now();
                    match http.post(&endpoint).body(body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t0.elapsed());
                            if let Some(b) = buckets.get(started.elapsed().as_secs() as usize) {
                                b.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in futures_util::future::join_all(tasks).await {
        let (l, e) = t?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(members);
    all.sort_unstable();
    Ok(Some(Row {
        throughput: all.len() as f64 / elapsed,
        p50_ms: percentile_ms(&all, 0.5),
        p90_ms: percentile_ms(&all, 0.9),
        p99_ms: percentile_ms(&all, 0.99),
        errors,
        per_second: buckets
            .iter()
            .take(duration.as_secs() as usize)
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        error_kinds: Default::default(),
    }))
}

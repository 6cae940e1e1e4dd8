//! The local deployment (`deploy/local/up.sh`): three nodes behind a real HAProxy, scraped by a
//! real Prometheus. Under steady signing load through the balancer, the leader is killed (and
//! Prometheus's node-down alert fires), then every node is restarted in turn; what clients saw
//! is counted attempt by attempt. The goal: no request fails except retryable 503s with
//! `Retry-After` (and connections the killed node dropped, which an honest caller retries
//! with the same idempotency key), every signature is in the audit log, none twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stella_api::{Client, ClientConfig, Credentials};
use stella_tests::{bin_dir, repo_root, sbom_request_json};

/// A base port with the 25 ports above it free (balancer, identity, Prometheus, APIs, peers).
fn free_base() -> u16 {
    let start = 30_000 + (std::process::id() % 300) as u16 * 25;
    (0..200)
        .map(|k| 30_000 + (start - 30_000 + k * 25) % 7_500)
        .find(|base| (0..25).all(|p| std::net::TcpListener::bind(("127.0.0.1", base + p)).is_ok()))
        .expect("a free port range")
}

struct Deployment {
    dir: tempfile::TempDir,
    base: u16,
    /// Nodes this test restarted (up.sh's own are in pid files).
    restarted: BTreeMap<u64, Child>,
    http: reqwest::blocking::Client,
}

impl Deployment {
    fn up() -> Deployment {
        let dir = tempfile::tempdir().expect("tmp");
        let base = free_base();
        let out = Command::new("bash")
            .arg(repo_root().join("deploy/local/up.sh"))
            .arg(dir.path())
            .env("STELLA_PORT_BASE", base.to_string())
            .env("STELLA_BIN_DIR", bin_dir())
            .output()
            .expect("run up.sh");
        assert!(
            out.status.success(),
            "up.sh: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = std::fs::read(dir.path().join("pki/ca.pem")).expect("ca");
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http");
        Deployment {
            dir,
            base,
            restarted: BTreeMap::new(),
            http,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn api(&self, id: u64) -> String {
        format!("https://127.0.0.1:{}", self.base + 10 + id as u16 - 1)
    }

    fn prometheus(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 2)
    }

    fn client(&self) -> Client {
        let credentials = Credentials::load(&self.path().join("client")).expect("credentials");
        Client::new(ClientConfig {
            server: credentials.server.clone(),
            credentials,
            timeout: Duration::from_secs(10),
        })
        .expect("client")
    }

    fn pid(&self, id: u64) -> Option<u32> {
        if let Some(child) = self.restarted.get(&id) {
            return Some(child.id());
        }
        std::fs::read_to_string(self.path().join(format!("node-{id}.pid")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Signals node `id` through the OS interface (a minimal system has no `kill` program)
    /// and waits until it has exited.
    fn signal(&mut self, id: u64, signal: rustix::process::Signal) {
        let pid = self.pid(id).expect("a running node");
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a process id");
        rustix::process::kill_process(target, signal).expect("deliver the signal");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "node {id} did not exit");
            if let Some(child) = self.restarted.get_mut(&id) {
                let _ = child.try_wait();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut child) = self.restarted.remove(&id) {
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.path().join(format!("node-{id}.pid")));
    }

    fn start(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.path().join(format!("node-{id}/node.log")))
            .expect("log");
        let child = Command::new(bin_dir().join("stella-signer"))
            .arg("serve")
            .arg("--config")
            .arg(self.path().join(format!("node-{id}/node.toml")))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start node");
        self.restarted.insert(id, child);
    }

    fn wait_ready(&self, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = format!("{}/readyz", self.api(id));
        while !self
            .http
            .get(&url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "node {id} never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for id in 1..=3 {
                let leads = self
                    .http
                    .get(format!("{}/metrics", self.api(id)))
                    .send()
                    .and_then(|r| r.text())
                    .is_ok_and(|text| text.contains("stella_signer_raft_is_leader 1"));
                if leads {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until Prometheus reports `alert` firing for the instance of node `id`.
    fn wait_alert(&self, alert: &str, id: u64) -> Duration {
        let started = Instant::now();
        let instance = format!("127.0.0.1:{}", self.base + 10 + id as u16 - 1);
        loop {
            let alerts: Value = self
                .http
                .get(format!("{}/api/v1/alerts", self.prometheus()))
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            let firing = alerts["data"]["alerts"].as_array().is_some_and(|all| {
                all.iter().any(|a| {
                    a["labels"]["alertname"] == alert
                        && a["labels"]["instance"] == instance.as_str()
                        && a["state"] == "firing"
                })
            });
            if firing {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{alert} never fired for {instance}: {alerts}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.restarted.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("bash")
            .arg(repo_root().join("deploy/local/down.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// What one attempt of one logical request met.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Signed,
    /// 503 with `Retry-After`: retried.
    Unavailable,
    /// 503 without `Retry-After` (a contract violation).
    UnavailableBare,
    /// The connection failed or was dropped (the node behind it died): retried.
    Transport,
    Other(u16),
}

#[derive(Default)]
struct Tally {
    attempts: BTreeMap<Seen, u64>,
    /// Logical requests that ended without a signature.
    failed: Vec<String>,
    /// (request id, bundle hash) of each signed request, and when it was answered.
    signed: Vec<(String, String, Instant)>,
}

/// One logical request: the same idempotency key, request id and DPoP proof on every attempt
/// (`Client::send_idempotent`'s rule), retrying 503s and dropped connections for up to 60 s.
fn sign_once(client: &Client, http: &reqwest::blocking::Client, tally: &Mutex<Tally>) {
    let url = format!("{}{}", client.base_url(), stella_api::SIGN_DSSE_PATH);
    let mut body = sbom_request_json();
    body["poe"] = serde_json::to_value(&client.credentials().poe).expect("poe");
    let body = serde_json::to_vec(&body).expect("json");
    let key = stella_api::dpop::random_id();
    let request_id = format!("req-{key}");
    let mut headers = client.auth_headers("POST", &url).expect("auth");
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = |seen: Seen| {
        *tally
            .lock()
            .expect("tally")
            .attempts
            .entry(seen)
            .or_default() += 1;
    };
    loop {
        let mut request = http
            .post(&url)
            .header("idempotency-key", &key)
            .header("x-request-id", &request_id)
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        match request.send() {
            Ok(response) if response.status() == 200 => {
                let answer: Value = response.json().unwrap_or(Value::Null);
                record(Seen::Signed);
                let hash = answer["bundleSha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                tally
                    .lock()
                    .expect("tally")
                    .signed
                    .push((request_id, hash, Instant::now()));
                return;
            }
            Ok(response) if response.status() == 503 => {
                let retry = response.headers().get("retry-after").is_some();
                record(if retry {
                    Seen::Unavailable
                } else {
                    Seen::UnavailableBare
                });
            }
            Ok(response)
                if response.status() == 401 && response.headers().get("dpop-nonce").is_some() =>
            {
                headers = client.auth_headers("POST", &url).expect("auth");
                record(Seen::Other(401));
            }
            Ok(response) => {
                record(Seen::Other(response.status().as_u16()));
                let status = response.status();
                let text = response.text().unwrap_or_default();
                tally
                    .lock()
                    .expect("tally")
                    .failed
                    .push(format!("{request_id}: {status} {text}"));
                return;
            }
            Err(_) => record(Seen::Transport),
        }
        if Instant::now() > deadline {
            tally
                .lock()
                .expect("tally")
                .failed
                .push(format!("{request_id}: no signature within 60 s"));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    tally: Arc<Mutex<Tally>>,
}

impl Load {
    fn start(deployment: &Deployment, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                let client = deployment.client();
                let http = deployment.http.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sign_once(&client, &http, &tally);
                    }
                })
            })
            .collect();
        Load {
            stop,
            workers,
            tally,
        }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.join();
        }
        Arc::try_unwrap(self.tally)
            .ok()
            .expect("the workers are done")
            .into_inner()
            .expect("tally")
    }

    fn signed(&self) -> usize {
        self.tally.lock().expect("tally").signed.len()
    }
}

/// The longest time between two consecutive signatures, seen from the clients.
fn max_gap(tally: &Tally) -> Duration {
    let mut times: Vec<Instant> = tally.signed.iter().map(|(_, _, t)| *t).collect();
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn report(phase: &str, tally: &Tally) -> Value {
    let attempts: BTreeMap<String, u64> = tally
        .attempts
        .iter()
        .map(|(k, v)| (format!("{k:?}"), *v))
        .collect();
    json!({
        "phase": phase,
        "requests": tally.signed.len() + tally.failed.len(),
        "signed": tally.signed.len(),
        "failed": tally.failed.len(),
        "attempts": attempts,
        "max_gap_ms": max_gap(tally).as_millis(),
    })
}

fn wait_for_signatures(load: &Load, more_than: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.signed() <= more_than {
        assert!(Instant::now() < deadline, "the load makes no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(phase: &str, tally: &Tally) -> Value {
    let report = report(phase, tally);
    println!("deploy {report}");
    assert!(
        tally.failed.is_empty(),
        "{phase}: failed requests: {:?}",
        tally.failed
    );
    assert_eq!(
        tally.attempts.get(&Seen::UnavailableBare),
        None,
        "{phase}: a 503 without Retry-After"
    );
    assert!(
        tally.attempts.keys().all(|k| matches!(
            k,
            Seen::Signed | Seen::Unavailable | Seen::Transport | Seen::Other(401)
        )),
        "{phase}: {report}"
    );
    report
}

#[test]
fn behind_haproxy_a_leader_kill_and_a_rolling_restart_lose_nothing_and_fail_nothing() {
    let mut deployment = Deployment::up();
    let client = deployment.client();

    // Phase 1: the leader is killed under load; Prometheus sees it down; it comes back.
    let load = Load::start(&deployment, 4);
    wait_for_signatures(&load, 20);
    let leader = deployment.leader();
    deployment.signal(leader, rustix::process::Signal::KILL);
    let before = load.signed();
    wait_for_signatures(&load, before + 20);
    let alert_after = deployment.wait_alert("StellaSignerNodeDown", leader);
    deployment.start(leader);
    deployment.wait_ready(leader);
    let killed = load.finish();
    let kill_report = check("leader kill", &killed);

    // Phase 2: every node in turn stops gracefully (SIGTERM) and starts again, under load.
    let load = Load::start(&deployment, 4);
    wait_for_signatures(&load, 20);
    for id in 1..=3 {
        deployment.signal(id, rustix::process::Signal::TERM);
        let before = load.signed();
        wait_for_signatures(&load, before + 10);
        deployment.start(id);
        deployment.wait_ready(id);
    }
    let rolled = load.finish();
    let roll_report = check("rolling restart", &rolled);

    // Nothing acknowledged is lost, nothing is signed twice: every signature's bundle is in the
    // audit log once, under the request id that asked for it.
    let mut logged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page = client.audit(&query).expect("audit page");
        for record in &page.records {
            if record["decision"] == "signed" {
                logged
                    .entry(
                        record["bundleSha256"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                    .or_default()
                    .push(record["requestId"].as_str().unwrap_or_default().to_owned());
            }
        }
        match page.next {
            Some(next) if !page.records.is_empty() => after = Some(next),
            _ => break,
        }
    }
    let mut requests = BTreeSet::new();
    for (request_id, hash, _) in killed.signed.iter().chain(&rolled.signed) {
        let ids = logged
            .get(hash)
            .unwrap_or_else(|| panic!("{hash} is not in the audit log"));
        assert_eq!(ids, &vec![request_id.clone()], "bundle {hash}");
        assert!(
            requests.insert(request_id.clone()),
            "{request_id} signed twice"
        );
    }
    println!(
        "deploy {}",
        json!({"leader_kill": kill_report, "rolling_restart": roll_report,
               "node_down_alert_after_ms": alert_after.as_millis()})
    );
}

/// A node started from `cluster plan`'s configuration says "listening" at once, but "ready"
/// only once it is a member that can sign — and its `/readyz` agrees.
#[test]
fn a_planned_node_says_ready_only_after_it_is_a_member() {
    let tmp = tempfile::tempdir().expect("tmp");
    let identity = stella_tests::NodeProcess::start_dev(&tmp.path().join("identity"));
    let base = free_base();
    let plan = tmp.path().join("plan");
    let out = Command::new(bin_dir().join("stella-signer"))
        .args(["cluster", "plan", "--nodes", "1", "--out"])
        .arg(&plan)
        .arg("--identity-dir")
        .arg(tmp.path().join("identity"))
        .args(["--identity-url", &identity.url])
        .args(["--lb-port", &base.to_string()])
        .args(["--api-port", &(base + 10).to_string()])
        .args(["--peer-port", &(base + 20).to_string()])
        .output()
        .expect("plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = plan.join("node-1/node.toml");
    let node = stella_tests::NodeProcess::start(
        &["serve", "--config", config.to_str().expect("utf8")],
        &plan.join("node-1/data"),
    );
    let ca = std::fs::read(plan.join("pki/ca.pem")).expect("ca");
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .build()
        .expect("http");
    let readyz = || {
        http.get(format!("{}/readyz", node.url))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let said_ready = |node: &stella_tests::NodeProcess| {
        node.logs()
            .iter()
            .any(|l| l.contains("\"stella-signer ready\""))
    };
    // Listening, not a member: not ready, and not saying so (checked for a while).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(readyz(), 503);
        assert!(!said_ready(&node), "ready before it is a member");
        std::thread::sleep(Duration::from_millis(100));
    }
    let init = Command::new(bin_dir().join("stella-signer"))
        .args(["cluster", "init", "--config"])
        .arg(&config)
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !said_ready(&node) {
        assert!(
            Instant::now() < deadline,
            "never said ready: {:?}",
            node.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(readyz(), 200);
}

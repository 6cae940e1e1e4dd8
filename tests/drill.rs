//! Honest callers for failover tests and the failover drill (`stella-drill`): each logical
//! signing request gets one DPoP proof (for the balancer's URL) and one `X-Request-Id`, and is
//! retried with exactly those on the next node after a transport error or a 503 — what a
//! careful client behind a load balancer does. Every attempt is logged as the caller saw it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Client, ClientConfig, PUBLIC_URL, TestCluster, audit_records, audit_verify};

/// The deadline the nodes of these tests give a signing request.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// What a busy machine may add to a deadline before the answer reaches the caller.
pub const SLACK: Duration = Duration::from_secs(3);

/// Cluster options for failover runs: every node answers a signing within [`DEADLINE`], plus
/// `extra` TOML appended to each node's `[cluster]` section (then any further sections).
pub fn options(distinct_addresses: bool, extra: &str) -> crate::ClusterOptions {
    crate::ClusterOptions {
        distinct_addresses,
        node_extra: (1..=3)
            .map(|id| {
                (
                    id,
                    format!(
                        "{extra}\n[limits]\nrequest_deadline_seconds = {}",
                        DEADLINE.as_secs()
                    ),
                )
            })
            .collect(),
        ..crate::ClusterOptions::default()
    }
}

/// One HTTP attempt of a logical request, as its caller saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub request: String,
    pub node: usize,
    /// `None`: no HTTP answer (transport error or client timeout).
    pub status: Option<u16>,
    pub code: Option<String>,
    /// The problem's detail (what a 503 says about why).
    pub detail: Option<String>,
    pub audit_id: Option<String>,
    pub bundle_sha256: Option<String>,
    pub sent: Instant,
    pub took: Duration,
}

#[derive(Default)]
struct Log {
    attempts: Vec<Attempt>,
}

impl Log {
    fn acked(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.status == Some(200))
            .count()
    }
}

/// Honest callers: each logical request gets one DPoP proof (for the balancer's URL, as a
/// client behind it would make) and one `X-Request-Id`, and is retried with exactly those on
/// the next node after a transport error or a 503, until it has another answer.
pub struct Callers {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    /// Nodes the callers may use (a balancer's view: updated by the test).
    targets: Arc<Mutex<Vec<usize>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Callers {
    pub fn start(cluster: &TestCluster, threads: usize) -> Callers {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let targets = Arc::new(Mutex::new((1..=cluster.len()).collect::<Vec<_>>()));
        let urls: Vec<String> = (1..=cluster.len()).map(|id| cluster.api_url(id)).collect();
        let threads = (0..threads)
            .map(|t| {
                let (stop, log, targets, urls) =
                    (stop.clone(), log.clone(), targets.clone(), urls.clone());
                let credentials = cluster.credentials.clone();
                std::thread::spawn(move || {
                    let client = Client::new(ClientConfig {
                        server: urls[0].clone(),
                        credentials,
                        timeout: Duration::from_secs(15),
                    })
                    .expect("client");
                    let http = reqwest::blocking::Client::builder()
                        .timeout(DEADLINE + SLACK + Duration::from_secs(4))
                        .build()
                        .expect("http");
                    let body = serde_json::to_vec(&crate::sbom_request_for(&client)).expect("json");
                    let public = format!("{PUBLIC_URL}{}", stella_api::SIGN_DSSE_PATH);
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let request = format!("caller-{t}-{n}");
                        let headers = client.auth_headers("POST", &public).expect("credentials");
                        let started = Instant::now();
                        let mut turn = t + n;
                        loop {
                            let node = {
                                let targets = targets.lock().expect("targets");
                                targets[turn % targets.len()]
                            };
                            turn += 1;
                            let mut call = http
                                .post(format!("{}{}", urls[node - 1], stella_api::SIGN_DSSE_PATH))
                                .header("x-request-id", &request)
                                .header("content-type", "application/json")
                                .body(body.clone());
                            for (name, value) in &headers {
                                call = call.header(*name, value);
                            }
                            let sent = Instant::now();
                            let answer = call.send();
                            let took = sent.elapsed();
                            let (status, json) = match answer {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    (Some(status), r.json::<Value>().unwrap_or(Value::Null))
                                }
                                Err(_) => (None, Value::Null),
                            };
                            let text = |k: &str| json[k].as_str().map(str::to_owned);
                            log.lock().expect("log").attempts.push(Attempt {
                                request: request.clone(),
                                node,
                                status,
                                code: text("code"),
                                detail: text("detail"),
                                audit_id: text("auditId"),
                                bundle_sha256: text("bundleSha256"),
                                sent,
                                took,
                            });
                            let retry = matches!(status, None | Some(503));
                            if !retry || started.elapsed() > Duration::from_secs(40) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
            })
            .collect();
        Callers {
            stop,
            log,
            targets,
            threads,
        }
    }

    pub fn target(&self, nodes: &[usize]) {
        *self.targets.lock().expect("targets") = nodes.to_vec();
    }

    /// How many attempts ended how: (status, problem code) → count.
    pub fn tally(&self) -> std::collections::BTreeMap<(Option<u16>, Option<String>), usize> {
        let mut tally = std::collections::BTreeMap::new();
        for a in &self.log.lock().expect("log").attempts {
            let why = match a.status {
                Some(503) => a.detail.clone(),
                _ => a.code.clone(),
            };
            *tally.entry((a.status, why)).or_insert(0) += 1;
        }
        tally
    }

    /// Waits until `n` more signings were acknowledged (a condition, not a timer).
    pub fn wait_acked(&self, n: usize, what: &str) {
        let goal = self.log.lock().expect("log").acked() + n;
        self.wait_acked_total(goal, what);
    }

    /// Waits until `total` signings were acknowledged since the callers started.
    pub fn wait_acked_total(&self, goal: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.log.lock().expect("log").acked() < goal {
            assert!(
                Instant::now() < deadline,
                "no signing got through: {what}; attempts so far: {:?}",
                self.tally()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `n` more attempts (of any outcome) were answered or gave up.
    pub fn wait_attempts(&self, n: usize, what: &str) {
        let goal = self.log.lock().expect("log").attempts.len() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.log.lock().expect("log").attempts.len() < goal {
            assert!(
                Instant::now() < deadline,
                "callers stopped answering: {what}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The first acknowledged signing after `since` on each of `nodes` (waits for it).
    pub fn recovered(&self, since: Instant, nodes: &[usize]) -> Vec<(usize, Duration)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let first: Vec<Option<Duration>> = {
                let log = self.log.lock().expect("log");
                nodes
                    .iter()
                    .map(|node| {
                        log.attempts
                            .iter()
                            .filter(|a| a.node == *node && a.sent >= since && a.status == Some(200))
                            .map(|a| (a.sent + a.took) - since)
                            .min()
                    })
                    .collect()
            };
            if first.iter().all(Option::is_some) {
                return nodes
                    .iter()
                    .zip(first)
                    .map(|(n, d)| (*n, d.unwrap_or_default()))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "signing did not resume on {nodes:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("caller");
        }
        Arc::try_unwrap(self.log)
            .ok()
            .expect("log")
            .into_inner()
            .expect("log")
            .attempts
    }
}

/// Per logical request, its attempts in order.
pub fn by_request(attempts: &[Attempt]) -> HashMap<&str, Vec<&Attempt>> {
    let mut map: HashMap<&str, Vec<&Attempt>> = HashMap::new();
    for a in attempts {
        map.entry(a.request.as_str()).or_default().push(a);
    }
    map
}

/// What every honest caller must have seen, whatever the fault: no authentication or
/// conflict error, one outcome per request however often it was asked, a signature in the end.
pub fn assert_honest_outcomes(attempts: &[Attempt]) -> HashMap<String, (String, String)> {
    let refused: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(a.status, Some(401 | 403 | 409)))
        .collect();
    assert!(
        refused.is_empty(),
        "honest callers were refused: {refused:#?}"
    );
    let mut outcomes = HashMap::new();
    let mut audit_ids = HashSet::new();
    for (request, tries) in by_request(attempts) {
        let last = tries.last().expect("an attempt");
        assert_eq!(
            last.status,
            Some(200),
            "{request} ended without a signature: {tries:#?}"
        );
        let signed: HashSet<(&str, &str)> = tries
            .iter()
            .filter(|a| a.status == Some(200))
            .map(|a| {
                (
                    a.audit_id.as_deref().unwrap_or(""),
                    a.bundle_sha256.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            signed.len(),
            1,
            "{request}: every answer is the one committed outcome: {tries:#?}"
        );
        let (audit_id, bundle) = signed.into_iter().next().unwrap_or_default();
        assert!(
            audit_ids.insert(audit_id.to_owned()),
            "{audit_id} answered two different requests"
        );
        outcomes.insert(request.to_owned(), (audit_id.to_owned(), bundle.to_owned()));
    }
    outcomes
}

/// Stops every node and checks the committed log against what callers were told: each
/// acknowledged signing committed with its bundle hash, one signed record per request, no
/// refusal of an honest request.
pub fn assert_log_matches(cluster: &mut TestCluster, outcomes: &HashMap<String, (String, String)>) {
    for id in 1..=cluster.len() {
        cluster.stop(id);
    }
    let records = audit_records(&cluster.data_dir(1));
    audit_verify(&cluster.data_dir(1)).expect("the chain verifies");
    for id in 2..=cluster.len() {
        assert_eq!(
            audit_records(&cluster.data_dir(id)),
            records,
            "node {id} holds the same audit chain"
        );
    }
    let mut signed: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in &records {
        let request = r["requestId"].as_str().unwrap_or_default();
        if request.starts_with("caller-") {
            assert_ne!(
                r["decision"], "denied",
                "an honest request was refused: {r}"
            );
            if r["decision"] == "signed" {
                signed.entry(request).or_default().push(r);
            }
        }
    }
    for (request, (audit_id, bundle)) in outcomes {
        let mine = signed.get(request.as_str()).cloned().unwrap_or_default();
        assert_eq!(mine.len(), 1, "{request} is signed exactly once: {mine:?}");
        assert_eq!(mine[0]["auditId"], audit_id.as_str());
        assert_eq!(mine[0]["bundleSha256"], bundle.as_str());
    }
}

//! Failover as a client behind a load balancer meets it: exactly-once signing across retries,
//! bounded waits while the leader is dead, paused or cut off, readiness that tells the truth,
//! and supervised actors. Every test asserts what the callers saw.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stella_tests::{
    Client, ClientConfig, ClusterOptions, PUBLIC_URL, TestCluster, audit_records, audit_verify,
};

/// The deadline the nodes of these tests give a signing request.
const DEADLINE: Duration = Duration::from_secs(5);
/// What a busy machine may add to a deadline before the answer reaches the caller.
const SLACK: Duration = Duration::from_secs(3);

/// One HTTP attempt of a logical request, as its caller saw it.
#[derive(Debug, Clone)]
struct Attempt {
    request: String,
    node: usize,
    /// `None`: no HTTP answer (transport error or client timeout).
    status: Option<u16>,
    code: Option<String>,
    audit_id: Option<String>,
    bundle_sha256: Option<String>,
    sent: Instant,
    took: Duration,
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
struct Callers {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    /// Nodes the callers may use (a balancer's view: updated by the test).
    targets: Arc<Mutex<Vec<usize>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Callers {
    fn start(cluster: &TestCluster, threads: usize) -> Callers {
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
                    let body =
                        serde_json::to_vec(&stella_tests::sbom_request_for(&client)).expect("json");
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

    fn target(&self, nodes: &[usize]) {
        *self.targets.lock().expect("targets") = nodes.to_vec();
    }

    /// Waits until `n` more signings were acknowledged (a condition, not a timer).
    fn wait_acked(&self, n: usize, what: &str) {
        let goal = self.log.lock().expect("log").acked() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.log.lock().expect("log").acked() < goal {
            assert!(Instant::now() < deadline, "no signing got through: {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The first acknowledged signing after `since` on each of `nodes` (waits for it).
    fn recovered(&self, since: Instant, nodes: &[usize]) -> Vec<(usize, Duration)> {
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

    fn finish(self) -> Vec<Attempt> {
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
fn by_request(attempts: &[Attempt]) -> HashMap<&str, Vec<&Attempt>> {
    let mut map: HashMap<&str, Vec<&Attempt>> = HashMap::new();
    for a in attempts {
        map.entry(a.request.as_str()).or_default().push(a);
    }
    map
}

/// What every honest caller must have seen, whatever the fault: no authentication or
/// conflict error, one outcome per request however often it was asked, a signature in the end.
fn assert_honest_outcomes(attempts: &[Attempt]) -> HashMap<String, (String, String)> {
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
fn assert_log_matches(cluster: &mut TestCluster, outcomes: &HashMap<String, (String, String)>) {
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

#[test]
fn a_leader_killed_under_load_costs_honest_callers_nothing_but_a_retry() {
    let mut cluster = TestCluster::start(ClusterOptions {
        node_extra: (1..=3)
            .map(|id| {
                (
                    id,
                    format!(
                        "[limits]\nrequest_deadline_seconds = {}",
                        DEADLINE.as_secs()
                    ),
                )
            })
            .collect(),
        ..ClusterOptions::default()
    });
    let callers = Callers::start(&cluster, 6);
    callers.wait_acked(30, "before the kill");
    let leader = cluster.leader().expect("a leader");
    let killed = Instant::now();
    cluster.kill(leader);
    let survivors: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let recovery = callers.recovered(killed, &survivors);
    println!("leader {leader} killed; first signing after it per node: {recovery:?}");
    callers.wait_acked(30, "after the kill");
    let attempts = callers.finish();
    let retried = by_request(&attempts)
        .values()
        .filter(|tries| tries.len() > 1)
        .count();
    println!(
        "{} attempts, {} logical requests, {retried} retried",
        attempts.len(),
        by_request(&attempts).len()
    );
    let outcomes = assert_honest_outcomes(&attempts);
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(60));
    assert_log_matches(&mut cluster, &outcomes);
}

#[test]
fn a_partitioned_or_paused_leader_bounds_every_wait_and_says_it_is_not_ready() {
    let mut cluster = TestCluster::start(ClusterOptions {
        distinct_addresses: true,
        node_extra: (1..=3)
            .map(|id| {
                (
                    id,
                    format!(
                        "[limits]\nrequest_deadline_seconds = {}",
                        DEADLINE.as_secs()
                    ),
                )
            })
            .collect(),
        ..ClusterOptions::default()
    });
    cluster.wait_converged(Duration::from_secs(60));
    for id in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.readiness(id).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "node {id} never became ready: {:?}",
                cluster.readiness(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let callers = Callers::start(&cluster, 4);

    // 1. The leader is cut off from its peers (clients still reach it).
    let old = cluster.leader().expect("a leader");
    let others: Vec<usize> = (1..=3).filter(|id| *id != old).collect();
    callers.target(&others);
    callers.wait_acked(10, "before the partition");
    let cut = Instant::now();
    let partition = cluster.partition(&[old], &others);
    // It stops saying "ready" once its lease lapses.
    let not_ready = loop {
        if let Some((503, failing)) = cluster.readiness(old) {
            assert!(
                failing
                    .iter()
                    .any(|f| f == "leader_lease" || f == "leader_known" || f == "leader_contact"),
                "{failing:?}"
            );
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "the isolated leader kept saying ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A request that reaches it is answered 503 at once, with Retry-After — not held.
    let sent = Instant::now();
    let answer = cluster.sign(old).expect("the isolated node answers");
    let held = sent.elapsed();
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(
        held < Duration::from_secs(3),
        "the isolated leader held a request {held:?}"
    );
    let recovery = callers.recovered(cut, &others);
    println!(
        "partition: old leader {old} not ready after {not_ready:?}, answered in {held:?}; first signings after the cut {recovery:?}"
    );
    drop(partition);
    cluster.wait_converged(Duration::from_secs(60));

    // 2. The leader freezes for 5 s (SIGSTOP): requests to the others do not wait for it.
    let frozen = cluster.leader().expect("a leader");
    let others: Vec<usize> = (1..=3).filter(|id| *id != frozen).collect();
    callers.target(&others);
    callers.wait_acked(10, "before the pause");
    let paused = Instant::now();
    cluster.pause(frozen);
    let recovery = callers.recovered(paused, &others);
    let until = paused + Duration::from_secs(5);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    cluster.resume(frozen);
    println!("pause: leader {frozen} frozen 5 s; first signings after it {recovery:?}");
    // Thawed, it learns the new term and is ready again once caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.readiness(frozen).map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the thawed node never became ready: {:?}",
            cluster.readiness(frozen)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    callers.target(&[1, 2, 3]);
    callers.wait_acked(10, "after the pause");
    let attempts = callers.finish();

    // No caller waited past the deadline for an answer from a node that was running.
    let slow: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.took > DEADLINE + SLACK)
        .collect();
    assert!(
        slow.is_empty(),
        "requests waited past their deadline: {slow:#?}"
    );
    let unavailable = attempts.iter().filter(|a| a.status == Some(503)).count();
    println!(
        "{} attempts, {unavailable} answered 503 and retried",
        attempts.len()
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.code.as_deref() != Some("invalid_token"))
    );
    let outcomes = assert_honest_outcomes(&attempts);
    cluster.wait_converged(Duration::from_secs(60));
    assert_log_matches(&mut cluster, &outcomes);
}

#[test]
fn each_supervised_actor_killed_is_restarted_and_readiness_says_so_meanwhile() {
    let cluster = TestCluster::start(ClusterOptions {
        node_extra: vec![(2, "[drill]\nkill_actors = true".into())],
        ..ClusterOptions::default()
    });
    cluster.wait_converged(Duration::from_secs(60));
    let pki = cluster.dir.path().join("pki");
    let operator = {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.pem")).expect("ca"))
            .expect("ca");
        let identity = reqwest::Identity::from_pem(
            &[
                std::fs::read(pki.join("admin.pem")).expect("pem"),
                std::fs::read(pki.join("admin.key")).expect("key"),
            ]
            .concat(),
        )
        .expect("identity");
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    };
    let kill = |node: usize, actor: &str| {
        let response = operator
            .post(format!(
                "{}/admin/v1/drill/kill-actor",
                cluster.peer_url(node)
            ))
            .json(&serde_json::json!({"actor": actor, "restartAfterMs": 1500}))
            .send()
            .expect("peer listener answers");
        response.status().as_u16()
    };
    // Off unless the node's configuration says it is a drill.
    assert_eq!(kill(1, "quota-ledger"), 400);
    let ready = |node: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match cluster.readiness(node) {
                Some((200, _)) => return,
                other => assert!(
                    Instant::now() < deadline,
                    "node {node} not ready: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    ready(2);
    for actor in ["quota-ledger", "entitlement-cache", "key-shard"] {
        assert_eq!(kill(2, actor), 202, "{actor}");
        // Not ready while it is down, naming the actors check…
        let (status, failing) = cluster.readiness(2).expect("readyz answers");
        assert_eq!(status, 503, "{actor}: {failing:?}");
        assert!(
            failing.contains(&"actors".to_owned()),
            "{actor}: {failing:?}"
        );
        // …ready again once its supervisor restarted it, and signing through it works.
        ready(2);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match cluster.sign(2) {
                Ok((200, _)) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{actor}: signing through node 2: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{actor}: killed, not ready, restarted, signing again");
    }
    let metrics = reqwest::blocking::get(format!("{}/metrics", cluster.api_url(2)))
        .and_then(|r| r.text())
        .expect("metrics");
    for actor in ["quota-ledger", "entitlement-cache", "key-shard"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("stella_signer_actor_restarts_total")
                    && l.contains(&format!("actor=\"{actor}\""))),
            "{actor} restart counted"
        );
    }
}

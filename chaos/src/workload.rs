//! The workload: honest signing clients of several tenants (one DPoP proof and one
//! `X-Request-Id` per logical request, retried with exactly those on the next node after a
//! transport error or a 503 — as a client behind a load balancer does), a replayer that sends an
//! acknowledged request's proof again with another body, and audit readers (linearizable and
//! stale). Every attempt is recorded as the caller saw it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sha2::Digest;
use stella_api::{Client, ClientConfig, Credentials};
use stella_signer::{Bundle, PublicKey};

use crate::history::{Attempt, Kind, Outcome, ReadResult};
use crate::target::{Target, Tenant};

/// How long one logical signing request is retried before its caller gives up.
pub const REQUEST_BUDGET: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Signing requests per second, over all tenants.
    pub rate: f64,
    pub seed: u64,
    /// The nodes' deadline plus what a busy machine may add: the caller's timeout per attempt.
    pub attempt_timeout: Duration,
}

/// Shared between the callers.
pub struct Recorder {
    pub t0: Instant,
    attempts: Mutex<Vec<Attempt>>,
    /// Acknowledged signings (audit id, bundle hash, acknowledged at ms, proof headers, body).
    acked: Mutex<Vec<Acked>>,
    /// The members' (id, client URL) the callers spread over, as a load balancer's pool; the
    /// nemesis changes it when it changes the membership.
    nodes: Mutex<Vec<(usize, String)>>,
}

#[derive(Clone)]
struct Acked {
    audit_id: String,
    bundle: String,
    at_ms: u64,
    tenant: String,
    headers: Vec<(&'static str, String)>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            t0: Instant::now(),
            attempts: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// The nodes callers send to now (never empty once the workload started).
    pub fn nodes(&self) -> Vec<(usize, String)> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Replaces the pool (an empty one is ignored).
    pub fn set_nodes(&self, nodes: Vec<(usize, String)>) {
        if nodes.is_empty() {
            return;
        }
        if let Ok(mut n) = self.nodes.lock() {
            *n = nodes;
        }
    }

    /// One of the nodes: (id, URL).
    fn pick(&self, rng: &mut ChaCha8Rng, turn: Option<usize>) -> (usize, String) {
        let nodes = self.nodes();
        if nodes.is_empty() {
            return (0, String::new());
        }
        let i = turn.unwrap_or_else(|| rng.gen_range(0..nodes.len())) % nodes.len();
        nodes[i].clone()
    }

    pub fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_millis()).unwrap_or(u64::MAX)
    }

    pub fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    fn push(&self, attempt: Attempt) {
        if let Ok(mut a) = self.attempts.lock() {
            a.push(attempt);
        }
    }

    /// A copy of what was recorded so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// (signings acknowledged, attempts that were not) so far.
    pub fn counts(&self) -> (usize, usize) {
        self.attempts
            .lock()
            .map(|a| {
                let ok = a
                    .iter()
                    .filter(|x| x.kind == Kind::Sign && x.outcome == Outcome::Ok)
                    .count();
                (ok, a.len() - ok)
            })
            .unwrap_or_default()
    }

    /// The first acknowledged signing sent at or after `ms`: when it was acknowledged.
    pub fn first_ok_after(&self, ms: u64) -> Option<u64> {
        self.attempts.lock().ok().and_then(|a| {
            a.iter()
                .filter(|x| x.kind == Kind::Sign && x.outcome == Outcome::Ok && x.start_ms >= ms)
                .map(|x| x.end_ms)
                .min()
        })
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// The running callers.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub recorder: Arc<Recorder>,
}

/// What every caller thread needs.
#[derive(Clone)]
struct Env {
    public_url: String,
    key: Arc<PublicKey>,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    http: reqwest::blocking::Client,
}

impl Workload {
    pub fn start(target: &dyn Target, options: &WorkloadOptions) -> Result<Workload> {
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Arc::new(Recorder::new());
        let key = PublicKey::from_pem(&target.verify_key_pem()?).context("verification key")?;
        recorder.set_nodes(
            target
                .node_ids()
                .into_iter()
                .map(|id| (id, target.api_url(id)))
                .collect(),
        );
        let env = Env {
            public_url: target.public_url(),
            key: Arc::new(key),
            stop: stop.clone(),
            recorder: recorder.clone(),
            http: reqwest::blocking::Client::builder()
                .timeout(options.attempt_timeout)
                .build()
                .context("http client")?,
        };
        let tenants = target.tenants();
        let workers: usize = tenants.iter().map(|t| t.workers).sum::<usize>().max(1);
        let interval = Duration::from_secs_f64(workers as f64 / options.rate.max(0.1));
        let mut threads = Vec::new();
        let mut n = 0u64;
        for tenant in &tenants {
            for w in 0..tenant.workers {
                n += 1;
                let (env, tenant) = (env.clone(), tenant.clone());
                let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(n);
                threads.push(std::thread::spawn(move || {
                    signer(env, tenant, w, interval, seed)
                }));
            }
        }
        let auditor = target.auditor();
        for (i, kind) in [Kind::Replay, Kind::ReadLinearizable, Kind::ReadStale]
            .into_iter()
            .enumerate()
        {
            let (env, auditor) = (env.clone(), auditor.clone());
            let replayer = tenants.first().map(|t| t.credentials.clone());
            let seed = options.seed.wrapping_add(7_777 + i as u64);
            threads.push(std::thread::spawn(move || match kind {
                Kind::Replay => {
                    if let Some(c) = replayer {
                        replay(env, c, seed)
                    }
                }
                _ => reader(env, auditor, kind, seed),
            }));
        }
        Ok(Workload {
            stop,
            threads,
            recorder,
        })
    }

    /// Stops the callers (each finishes its logical request) and returns what they saw.
    pub fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut attempts = self.recorder.attempts();
        attempts.sort_by_key(|a| (a.start_ms, a.end_ms));
        attempts
    }
}

fn client(credentials: Credentials, server: &str) -> Option<Client> {
    Client::new(ClientConfig {
        server: server.to_owned(),
        credentials,
        timeout: Duration::from_secs(10),
    })
    .ok()
}

/// Sleeps up to `d`, waking early when the drill stops.
fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// A signing body whose subject differs per request (an SBOM of a different image each time).
pub fn sign_body(request_id: &str, poe: Option<&stella_api::ProofOfEntitlement>) -> Vec<u8> {
    let subject = hex::encode(sha2::Sha256::digest(request_id.as_bytes()));
    let sbom = hex::encode(sha2::Sha256::digest(
        format!("sbom {request_id}").as_bytes(),
    ));
    let mut body = serde_json::json!({
        "subject": [{"name": format!("registry.example/chaos/{request_id}"), "digest": {"sha256": subject}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": format!("sha256:{sbom}"), "componentCount": 7}
    });
    if let Some(poe) = poe {
        body["poe"] = serde_json::to_value(poe).unwrap_or(Value::Null);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The `jti` of a DPoP proof (its payload is the JWT's second part).
pub fn proof_jti(headers: &[(&'static str, String)]) -> Option<String> {
    let proof = headers.iter().find(|(n, _)| *n == "dpop")?.1.as_str();
    let payload = proof.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["jti"].as_str().map(str::to_owned)
}

struct Sent<'a> {
    kind: Kind,
    request_id: &'a str,
    tenant: &'a str,
    node: usize,
    headers: &'a [(&'static str, String)],
}

/// One HTTP attempt, recorded; returns it and the JSON body.
fn attempt(
    env: &Env,
    sent: &Sent<'_>,
    request: reqwest::blocking::RequestBuilder,
) -> (Attempt, Value) {
    let mut request = request.header("x-request-id", sent.request_id);
    for (name, value) in sent.headers {
        request = request.header(*name, value);
    }
    let start = Instant::now();
    let answer = request.send();
    let (outcome, status, retry_after, problem_json, json) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let header = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header("retry-after");
            let problem =
                header("content-type").is_some_and(|c| c.starts_with("application/problem+json"));
            let json = r.json::<Value>().unwrap_or(Value::Null);
            (
                Outcome::of_status(status),
                Some(status),
                retry_after,
                problem,
                json,
            )
        }
        Err(e) if e.is_timeout() => (Outcome::Timeout, None, None, false, Value::Null),
        Err(_) => (Outcome::Transport, None, None, false, Value::Null),
    };
    let end = Instant::now();
    let text = |k: &str| json[k].as_str().map(str::to_owned);
    let record = Attempt {
        kind: sent.kind,
        request_id: sent.request_id.to_owned(),
        tenant: sent.tenant.to_owned(),
        node: sent.node,
        start_ms: env.recorder.ms(start),
        end_ms: env.recorder.ms(end),
        outcome,
        status,
        code: if outcome == Outcome::Ok {
            None
        } else {
            text("code")
        },
        retry_after,
        problem_json,
        audit_id: text("auditId"),
        bundle_sha256: text("bundleSha256"),
        proof_jti: proof_jti(sent.headers),
        bundle_check: None,
        read: None,
    };
    (record, json)
}

/// The first bundle of a 200 signing verifies offline with `key` and hashes to what the
/// response says.
fn check_bundle(json: &Value, key: &PublicKey) -> Result<(), String> {
    let first = json["bundles"]
        .get(0)
        .ok_or_else(|| "the response has no bundle".to_owned())?;
    let raw = serde_json::to_vec(&first["bundle"]).map_err(|e| e.to_string())?;
    let bundle = Bundle::from_json(&raw).map_err(|e| format!("bundle: {e}"))?;
    stella_signer::verify::verify_bundle(&bundle, key).map_err(|e| format!("verify: {e}"))?;
    let hash = bundle.sha256().map_err(|e| e.to_string())?;
    if Some(hash.as_str()) != json["bundleSha256"].as_str() {
        return Err(format!(
            "the bundle hashes to {hash}, the response says {}",
            json["bundleSha256"]
        ));
    }
    Ok(())
}

fn signer(env: Env, tenant: Tenant, worker: usize, interval: Duration, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(client) = client(
        tenant.credentials.clone(),
        &env.recorder.pick(&mut rng, Some(0)).1,
    ) else {
        return;
    };
    let sign_url = format!("{}{}", env.public_url, stella_api::SIGN_DSSE_PATH);
    // Spread the workers' first requests over one interval.
    nap(&env.stop, interval.mul_f64(rng.gen_range(0.0..1.0)));
    let mut next = Instant::now();
    let mut n = 0u64;
    while !env.stop.load(Ordering::Relaxed) {
        next = (next + interval).max(Instant::now());
        n += 1;
        let request_id = format!("chaos-{}-{worker}-{n}", tenant.name);
        let Ok(headers) = client.auth_headers("POST", &sign_url) else {
            nap(&env.stop, Duration::from_millis(500));
            continue;
        };
        let body = sign_body(&request_id, tenant.credentials.poe.as_ref());
        let started = Instant::now();
        let mut turn = rng.gen_range(0..env.recorder.nodes().len().max(1));
        loop {
            let (node, url) = &env.recorder.pick(&mut rng, Some(turn));
            turn += 1;
            let request = env
                .http
                .post(format!("{url}{}", stella_api::SIGN_DSSE_PATH))
                .header("content-type", "application/json")
                .body(body.clone());
            let sent = Sent {
                kind: Kind::Sign,
                request_id: &request_id,
                tenant: &tenant.name,
                node: *node,
                headers: &headers,
            };
            let (mut record, json) = attempt(&env, &sent, request);
            let outcome = record.outcome;
            let retry_after = record
                .retry_after
                .as_deref()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if outcome == Outcome::Ok {
                record.bundle_check = Some(check_bundle(&json, &env.key));
                if let (Some(audit_id), Some(bundle), Ok(mut acked)) = (
                    record.audit_id.clone(),
                    record.bundle_sha256.clone(),
                    env.recorder.acked.lock(),
                ) {
                    acked.push(Acked {
                        audit_id,
                        bundle,
                        at_ms: record.end_ms,
                        tenant: tenant.name.clone(),
                        headers: headers.clone(),
                    });
                }
            }
            env.recorder.push(record);
            let retry = matches!(
                outcome,
                Outcome::Unavailable | Outcome::Transport | Outcome::Timeout
            );
            if !retry || started.elapsed() > REQUEST_BUDGET {
                break;
            }
            // An honest client honours Retry-After (capped: the next node may be fine).
            let pause = retry_after
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_secs(1));
            std::thread::sleep(pause);
        }
        nap(&env.stop, next.saturating_duration_since(Instant::now()));
    }
}

/// Every ~2 s: an acknowledged signing's proof and token, sent again with another body and
/// request id to a random node — a replay that must never be signed.
fn replay(env: Env, credentials: Credentials, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0u64;
    while !env.stop.load(Ordering::Relaxed) {
        nap(&env.stop, Duration::from_millis(2000));
        let victim = env.recorder.acked.lock().ok().and_then(|a| {
            a.iter()
                .rev()
                .take(20)
                .find(|x| x.tenant == credentials.tenant)
                .cloned()
        });
        let Some(victim) = victim else { continue };
        n += 1;
        let request_id = format!("replay-{n}");
        let (node, url) = &env.recorder.pick(&mut rng, None);
        let request = env
            .http
            .post(format!("{url}{}", stella_api::SIGN_DSSE_PATH))
            .header("content-type", "application/json")
            .body(sign_body(&request_id, credentials.poe.as_ref()));
        let sent = Sent {
            kind: Kind::Replay,
            request_id: &request_id,
            tenant: &credentials.tenant,
            node: *node,
            headers: &victim.headers,
        };
        let (mut record, _) = attempt(&env, &sent, request);
        record.read = Some(ReadResult {
            wanted_audit_id: Some(victim.audit_id),
            found: None,
            seen: Vec::new(),
        });
        env.recorder.push(record);
    }
}

/// Every ~1 s: a linearizable read of one signing acknowledged before the read started (it
/// must be there), or a stale read of the newest records (they must be committed ones).
fn reader(env: Env, auditor: Credentials, kind: Kind, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(client) = client(auditor.clone(), &env.recorder.pick(&mut rng, Some(0)).1) else {
        return;
    };
    let audit_url = format!("{}{}", env.public_url, stella_api::AUDIT_PATH);
    let mut n = 0u64;
    while !env.stop.load(Ordering::Relaxed) {
        nap(&env.stop, Duration::from_millis(1000));
        let now = env.recorder.now_ms();
        let acked: Vec<Acked> = env
            .recorder
            .acked
            .lock()
            .map(|a| a.iter().filter(|x| x.at_ms < now).cloned().collect())
            .unwrap_or_default();
        let Some(wanted) =
            (!acked.is_empty()).then(|| acked[rng.gen_range(0..acked.len())].clone())
        else {
            continue;
        };
        let Ok(headers) = client.auth_headers("GET", &audit_url) else {
            continue;
        };
        n += 1;
        let request_id = format!(
            "read-{}-{n}",
            if kind == Kind::ReadStale {
                "stale"
            } else {
                "lin"
            }
        );
        let query: Vec<(&str, String)> = if kind == Kind::ReadStale {
            let seq: u64 = wanted
                .audit_id
                .trim_start_matches("aud-")
                .parse()
                .unwrap_or(0);
            vec![
                ("consistency", "stale".into()),
                ("limit", "50".into()),
                (
                    "after",
                    stella_state::audit::audit_id(seq.saturating_sub(25).max(1)),
                ),
            ]
        } else {
            vec![
                ("consistency", "linearizable".into()),
                ("bundleHash", wanted.bundle.clone()),
            ]
        };
        let (node, url) = &env.recorder.pick(&mut rng, None);
        let request = env
            .http
            .get(format!("{url}{}", stella_api::AUDIT_PATH))
            .query(&query);
        let sent = Sent {
            kind,
            request_id: &request_id,
            tenant: &auditor.tenant,
            node: *node,
            headers: &headers,
        };
        let (mut record, json) = attempt(&env, &sent, request);
        let records = json["records"].as_array().cloned().unwrap_or_default();
        record.audit_id = None;
        record.read = Some(if kind == Kind::ReadStale {
            ReadResult {
                wanted_audit_id: None,
                found: None,
                seen: records
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r["auditId"].as_str()?.to_owned(),
                            r["hash"].as_str()?.to_owned(),
                        ))
                    })
                    .collect(),
            }
        } else {
            ReadResult {
                found: (record.outcome == Outcome::Ok).then(|| {
                    records
                        .iter()
                        .any(|r| r["auditId"] == wanted.audit_id.as_str())
                }),
                wanted_audit_id: Some(wanted.audit_id),
                seen: Vec::new(),
            }
        });
        env.recorder.push(record);
    }
}

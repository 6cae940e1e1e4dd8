//! The published contract: the node serves its OpenAPI 3.1 document, the document is the
//! checked-in `docs/openapi.json`, and real responses of every documented operation — successes
//! and problems — validate against it with an independent validator
//! (`tests/verifiers/openapi-check.mjs`: `@seriousme/openapi-schema-validator` and Ajv).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use stella_api::Client;
use stella_tests::{ClusterOptions, PLAN, TestCluster, client_for, repo_root, sbom_request_for};

/// One exchange as the validator reads it.
struct Samples {
    lines: Vec<Value>,
}

impl Samples {
    fn record(
        &mut self,
        method: &Method,
        path: &str,
        response: reqwest::blocking::Response,
    ) -> Value {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().expect("response body");
        self.lines.push(json!({
            "method": method.as_str(), "path": path, "status": status,
            "contentType": content_type, "body": body,
        }));
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// An authenticated call through `client` (retrying a 503, as an honest caller would).
    fn call(
        &mut self,
        client: &Client,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let bytes = body.as_ref().map(|b| serde_json::to_vec(b).expect("json"));
            let response = client
                .send(method.clone(), path, query, bytes)
                .expect("request");
            if response.status() == 503 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return self.record(&method, path, response);
        }
    }

    fn covered(&self) -> BTreeSet<(String, String)> {
        self.lines
            .iter()
            .filter(|l| l.get("undocumented").is_none())
            .map(|l| {
                (
                    l["method"].as_str().unwrap_or_default().to_owned(),
                    l["path"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

#[test]
fn every_operation_is_documented_and_real_responses_validate_against_the_served_document() {
    let cluster = TestCluster::start(ClusterOptions {
        nodes: 1,
        ..Default::default()
    });
    let base = cluster.api_url(1);
    let tenant = cluster.client(1);
    let operator = &client_for(&base, cluster.services.credentials("operator", PLAN, &base));
    let anonymous = reqwest::blocking::Client::new();
    let mut samples = Samples { lines: Vec::new() };

    // The served document is the checked-in one, byte for byte.
    let served = anonymous
        .get(format!("{base}/api/v1/signer/openapi.json"))
        .send()
        .expect("openapi.json");
    assert_eq!(served.status(), 200);
    let served = served.text().expect("document");
    let checked_in =
        std::fs::read_to_string(repo_root().join("docs/openapi.json")).expect("docs/openapi.json");
    assert_eq!(served, checked_in, "the node serves docs/openapi.json");
    let doc: Value = serde_json::from_str(&served).expect("document is JSON");

    // Public routes.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/signer/openapi.json",
    ] {
        let response = anonymous.get(format!("{base}{path}")).send().expect("get");
        samples.record(&Method::GET, path, response);
    }

    // Signing: evidence and an export manifest.
    let signed = samples.call(
        tenant,
        Method::POST,
        stella_api::SIGN_DSSE_PATH,
        &[],
        Some(sbom_request_for(tenant)),
    );
    let bundle_hash = signed["bundleSha256"].as_str().expect("signed").to_owned();
    let mut export = json!({"manifest": {
        "exportId": "run-1",
        "files": [{"path": "sbom.json", "digest": format!("sha256:{}", "ab".repeat(32)),
                   "mediaType": "application/vnd.cyclonedx+json", "size": 10}],
        "metadata": {"profile": "mirror"}}});
    if let Some(poe) = &tenant.credentials().poe {
        export["poe"] = serde_json::to_value(poe).expect("poe");
    }
    samples.call(
        tenant,
        Method::POST,
        stella_api::SIGN_EXPORT_PATH,
        &[],
        Some(export),
    );

    // The audit log and the transparency log (a checkpoint covering both records first).
    let deadline = Instant::now() + Duration::from_secs(60);
    let size = loop {
        let note = anonymous
            .get(format!("{base}{}", stella_api::AUDIT_CHECKPOINT_PATH))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_default();
        let size: u64 = note
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if size >= 2 {
            break size;
        }
        assert!(Instant::now() < deadline, "no checkpoint of both records");
        std::thread::sleep(Duration::from_millis(100));
    };
    let checkpoint = anonymous
        .get(format!("{base}{}", stella_api::AUDIT_CHECKPOINT_PATH))
        .send()
        .expect("checkpoint");
    samples.record(&Method::GET, stella_api::AUDIT_CHECKPOINT_PATH, checkpoint);
    let page = samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_PATH,
        &[("limit", "5".into())],
        None,
    );
    assert!(
        page["records"].as_array().is_some_and(|r| !r.is_empty()),
        "{page}"
    );
    samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_PATH,
        &[("bundleHash", bundle_hash.clone())],
        None,
    );
    samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_EXPORT_PATH,
        &[],
        None,
    );
    samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_INCLUSION_PATH,
        &[("bundleHash", bundle_hash)],
        None,
    );
    samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_CONSISTENCY_PATH,
        &[("from", "1".into()), ("to", size.to_string())],
        None,
    );

    // Keys, trust, release trust, cluster status, the bypass toggle.
    samples.call(tenant, Method::GET, stella_api::KEYS_PATH, &[], None);
    samples.call(tenant, Method::GET, stella_api::TRUST_PATH, &[], None);
    samples.call(
        tenant,
        Method::GET,
        stella_api::CLUSTER_STATUS_PATH,
        &[],
        None,
    );
    let digest = format!("sha256:{}", "cd".repeat(32));
    samples.call(
        tenant,
        Method::GET,
        stella_api::REFERRERS_PATH,
        &[("imageDigest", digest.clone())],
        None,
    );
    samples.call(
        operator,
        Method::GET,
        stella_api::POE_BYPASS_PATH,
        &[],
        None,
    );
    samples.call(
        operator,
        Method::PUT,
        stella_api::POE_BYPASS_PATH,
        &[],
        Some(json!({"enabled": false, "reason": "contract test"})),
    );
    samples.call(
        operator,
        Method::POST,
        stella_api::RELEASE_ALLOWLIST_PATH,
        &[],
        Some(json!({"imageDigest": digest, "allowed": true, "reason": "contract test"})),
    );
    let asked = samples.call(
        operator,
        Method::POST,
        stella_api::RELEASE_APPROVALS_PATH,
        &[],
        Some(json!({"imageDigest": format!("sha256:{}", "ef".repeat(32)),
                    "reason": "contract test", "expiresInSeconds": 3600})),
    );
    let approval = asked["approvalId"]
        .as_str()
        .expect("approval id")
        .to_owned();
    samples.call(
        operator,
        Method::POST,
        stella_api::RELEASE_DECISIONS_PATH,
        &[],
        Some(json!({"approvalId": approval, "verdict": "approved", "reason": "ok"})),
    );
    let (key_id, _) = cluster.register_key("contract-key");
    samples.call(
        operator,
        Method::POST,
        stella_api::KEYS_REVOKE_PATH,
        &[],
        Some(json!({"keyId": key_id, "reason": "contract test"})),
    );
    // Operations refused by the node answer problems, which validate too.
    samples.call(
        operator,
        Method::POST,
        stella_api::KEYS_ADMIN_PATH,
        &[],
        Some(
            json!({"tenant": "tenant-a", "plan": PLAN, "publicKeyPem": "not a key",
                    "reason": "contract test"}),
        ),
    );
    samples.call(
        operator,
        Method::POST,
        stella_api::KEYS_THRESHOLD_PATH,
        &[],
        Some(json!({"tenant": "tenant-a", "plan": PLAN, "minSigners": 0, "reason": "r"})),
    );
    samples.call(
        operator,
        Method::POST,
        stella_api::KEYS_THRESHOLD_REFRESH_PATH,
        &[],
        Some(json!({"keyId": "no-such-key", "reason": "r"})),
    );
    samples.call(
        tenant,
        Method::PUT,
        stella_api::POE_BYPASS_PATH,
        &[],
        Some(json!({})),
    );
    samples.call(
        tenant,
        Method::GET,
        stella_api::AUDIT_PATH,
        &[("limit", "ten".into())],
        None,
    );
    let raw = |method: Method, path: &str, content_type: &str, body: &str| {
        anonymous
            .request(method, format!("{base}{path}"))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .expect("raw request")
    };
    let unauthenticated = raw(
        Method::POST,
        stella_api::SIGN_DSSE_PATH,
        "application/json",
        "{}",
    );
    assert_eq!(unauthenticated.status(), 401);
    samples.record(&Method::POST, stella_api::SIGN_DSSE_PATH, unauthenticated);
    // Routes the API does not have answer the document's shared problem response.
    for (method, path, status) in [
        (Method::DELETE, stella_api::SIGN_DSSE_PATH, 405),
        (Method::GET, "/api/v1/signer/no-such-route", 404),
    ] {
        let response = raw(method.clone(), path, "text/plain", "");
        assert_eq!(response.status(), status);
        samples.record(&method, path, response);
        if let Some(last) = samples.lines.last_mut() {
            last["undocumented"] = json!(true);
        }
    }

    // Every documented operation was exercised.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let covered = samples.covered();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "operations without a sample: {missing:?}"
    );

    // A response that breaks the contract is caught (the check is not vacuous).
    let mut broken = samples.lines[0].clone();
    broken["body"] = json!(r#"{"status": 5}"#);
    broken["expect"] = json!("invalid");
    samples.lines.push(broken);

    let dir = tempfile::tempdir().expect("tmp");
    let (spec, file) = (
        dir.path().join("openapi.json"),
        dir.path().join("samples.ndjson"),
    );
    std::fs::write(&spec, &served).expect("spec");
    let text: String = samples.lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).expect("samples");
    let (ok, out) = stella_tests::Verifiers::openapi(&spec, Some(&file));
    assert!(ok, "openapi-check: {out}");
    assert!(out.contains("document valid"), "{out}");
}

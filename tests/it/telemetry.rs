//! Telemetry: request ids and W3C trace context on every response, structured decision logs,
//! Prometheus metrics for latency, outcomes and key usage.

use serde_json::Value;
use stella_tests::{NodeProcess, authed, sbom_request_for};

#[test]
fn traces_logs_and_metrics_describe_each_signing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let client = reqwest::blocking::Client::new();
    let caller = node.client();
    let sign_url = format!("{}/api/v1/signer/sign/dsse", node.url);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = authed(&caller, client.post(&sign_url), "POST", &sign_url)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "ci-build-42")
        .json(&sbom_request_for(&caller))
        .send()
        .expect("sign");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-request-id"], "ci-build-42");
    let traceparent = resp.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")) && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    let body: Value = resp.json().expect("json");
    assert_eq!(body["requestId"], "ci-build-42");
    let key_id = body["signerIdentity"]["keyId"]
        .as_str()
        .expect("key id")
        .to_owned();

    // A rejected request is counted under its problem code.
    let rejected = authed(&caller, client.post(&sign_url), "POST", &sign_url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .expect("bad");
    assert_eq!(rejected.status().as_u16(), 400);

    let metrics = client
        .get(format!("{}/metrics", node.url))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("stella_signer_sign_latency_seconds_bucket{outcome=\"signed\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("stella_signer_sign_requests_total{outcome=\"signed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stella_signer_sign_requests_total{outcome=\"invalid_request\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "stella_signer_key_usage_total{{key_id=\"{key_id}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("stella_signer_raft_is_leader 1"),
        "{metrics}"
    );
    assert!(metrics.contains("stella_signer_raft_voters 1"), "{metrics}");
    // The transparency log: a checkpoint that covers the signing is served and measured.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let metrics = client
            .get(format!("{}/metrics", node.url))
            .send()
            .expect("metrics")
            .text()
            .expect("text");
        let gauge = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tree = gauge("stella_signer_audit_tree_size");
        let checkpoint = gauge("stella_signer_audit_checkpoint_size");
        if tree.is_some_and(|t| t >= 1.0) && checkpoint == tree {
            assert!(
                gauge("stella_signer_audit_checkpoint_age_seconds").is_some(),
                "{metrics}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint gauges: {metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let ready: Value = client
        .get(format!("{}/readyz", node.url))
        .send()
        .expect("readyz")
        .json()
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        client
            .get(format!("{}/healthz", node.url))
            .send()
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );

    // One structured decision line with the fields operators filter on.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let logs = node.logs();
    let decision: Value = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "signing decision" && l["decision"] == "signed")
        .expect("a decision log line");
    assert_eq!(decision["tenant"], "dev");
    assert_eq!(decision["predicate_type"], "stella.ops/sbom@v1");
    assert_eq!(decision["key_id"], key_id.as_str());
    assert_eq!(
        decision["subject_digest"],
        format!("sha256:{}", "a".repeat(64))
    );
    assert_eq!(decision["span"]["request_id"], "ci-build-42");
    assert_eq!(decision["span"]["trace_id"], trace_id);
    assert!(decision["latency_ms"].as_f64().is_some());
}

/// Every metric the alert rules (`deploy/prometheus/`) and the dashboard (`deploy/grafana/`)
/// read is one a running three-node cluster exports, so no alert or panel watches a name
/// that never appears.
#[test]
fn every_metric_an_alert_or_a_panel_reads_is_exported_by_a_running_cluster() {
    use stella_tests::{ClusterOptions, TestCluster, repo_root};
    let mut used = std::collections::BTreeSet::new();
    for file in [
        "deploy/prometheus/stella-signer.rules.yml",
        "deploy/grafana/stella-signer.json",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("stella_signer_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    assert!(
        used.len() >= 15,
        "the rules and panels read metrics: {used:?}"
    );

    let cluster = TestCluster::start(ClusterOptions::default());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match cluster.sign(1) {
            Ok((200, _)) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "no signature: {other:?}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let http = reqwest::blocking::Client::new();
    // A refusal before authentication.
    let refused = http
        .post(format!(
            "{}{}",
            cluster.api_url(1),
            stella_api::SIGN_DSSE_PATH
        ))
        .body("{}")
        .send()
        .expect("unauthenticated");
    assert_eq!(refused.status(), 401);
    // Some series appear with their first event (a checkpoint cut after the signing, a scrape
    // on the leader): scrape until every one is there, with a generous deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let missing = loop {
        let exported: String = (1..=3)
            .map(|id| {
                http.get(format!("{}/metrics", cluster.api_url(id)))
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default()
            })
            .collect();
        let missing: Vec<_> = used
            .iter()
            .filter(|name| {
                !exported
                    .lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(name.as_str()))
            })
            .cloned()
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(missing.is_empty(), "read but not exported: {missing:?}");
}

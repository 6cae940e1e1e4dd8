//! Key policy per plan (ADR 0022) on a three-node cluster: a hardware-only plan refuses a file
//! key at registration and takes a threshold key; a node whose configuration contradicts the
//! rule does not start; a key past its plan's age signs through the grace (with the rotation
//! gauge showing it due), then is refused with a 503 naming it, audited, until rotated.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use stella_api::{ClientError, SignDsseRequest, SignDsseResponse};
use stella_tests::{
    ClusterOptions, HARDWARE_PLAN, PLAN, ROTATING_GRACE_SECONDS, ROTATING_PLAN, TestCluster,
    client_for, sbom_request_for, stella, stella_ok,
};

fn s(p: &Path) -> String {
    p.to_str().expect("utf8").to_owned()
}

fn operator(cluster: &TestCluster) -> String {
    let mut ops = cluster
        .services
        .credentials("operator", PLAN, &cluster.api_url(1));
    ops.server = cluster.api_url(1);
    let path = cluster.dir.path().join("ops.json");
    std::fs::write(&path, serde_json::to_vec(&ops).expect("json")).expect("ops");
    s(&path)
}

/// `stella keys create`, installed on every node; returns (key id, private key path).
fn file_key(cluster: &TestCluster, name: &str) -> (String, PathBuf) {
    let out = stella_ok(&[
        "keys",
        "create",
        "--out",
        &s(&cluster.dir.path().join(name)),
    ]);
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = line.split_whitespace();
    let key_id = parts.next().expect("key id").to_owned();
    let path = PathBuf::from(parts.next().expect("path"));
    for id in 1..=cluster.len() {
        let keys = cluster.data_dir(id).join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        std::fs::copy(&path, keys.join(path.file_name().expect("name"))).expect("install");
    }
    (key_id, path)
}

fn register(ops: &str, verb: &str, plan: &str, key: &Path) -> std::process::Output {
    stella(&[
        "keys",
        verb,
        "--tenant",
        "tenant-a",
        "--plan",
        plan,
        "--key",
        &s(key),
        "--reason",
        "policy test",
        "--credentials",
        ops,
    ])
}

fn sign(cluster: &TestCluster, plan: &str) -> Result<SignDsseResponse, ClientError> {
    let client = client_for(
        &cluster.api_url(2),
        cluster
            .services
            .credentials("tenant-a-ci", plan, &cluster.api_url(2)),
    );
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(&client)).expect("request");
    client.sign_dsse(&request)
}

fn metric(cluster: &TestCluster, line_start: &str) -> Option<f64> {
    let text = reqwest::blocking::get(format!("{}/metrics", cluster.api_url(1)))
        .and_then(|r| r.text())
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn plans_enforce_hardware_keys_and_rotation_cadence() {
    let cluster = TestCluster::start(ClusterOptions {
        plans: vec![
            (HARDWARE_PLAN, 1000, 100, 1024 * 1024),
            (ROTATING_PLAN, 1000, 100, 1024 * 1024),
        ],
        ..ClusterOptions::default()
    });
    let ops = operator(&cluster);

    // --- require_hardware_backed ---
    let (_, file) = file_key(&cluster, "soft");
    let refused = register(&ops, "register", HARDWARE_PLAN, &file);
    let text = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "a file key is refused");
    assert!(text.contains("requires hardware-backed keys"), "{text}");
    // Without a key of its own the tenant is not signed for on this plan (no shared key).
    assert!(sign(&cluster, HARDWARE_PLAN).is_err());
    // A threshold key (shares on the nodes, never a file) is hardware-backed: it registers and
    // signs for the plan.
    let change = stella_ok(&[
        "keys",
        "create-threshold",
        "--tenant",
        "tenant-a",
        "--plan",
        HARDWARE_PLAN,
        "--threshold",
        "2",
        "--reason",
        "hardware-only plan",
        "--credentials",
        &ops,
    ]);
    let change: Value = serde_json::from_slice(&change.stdout).expect("change");
    let signed = sign(&cluster, HARDWARE_PLAN).expect("the threshold key signs");
    assert_eq!(
        signed.signer_identity.key_id,
        change["keyId"].as_str().expect("id")
    );
    assert_eq!(signed.signer_identity.key_source, "threshold");

    // A configuration that would sign a hardware-only plan with the node's file default key
    // does not start.
    let config = std::fs::read_to_string(cluster.config_path(1)).expect("config");
    let marker = format!("name = \"{HARDWARE_PLAN}\"");
    let at = config.find(&marker).expect("hardware plan in the config");
    let contradiction = format!(
        "{}{}",
        &config[..at],
        config[at..].replacen("shared_default_key = false", "shared_default_key = true", 1)
    );
    let bad = cluster.dir.path().join("contradiction.toml");
    std::fs::write(&bad, contradiction).expect("write");
    let out = std::process::Command::new(stella_tests::bin("stella-signer"))
        .args(["serve", "--config", &s(&bad)])
        .output()
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the node must not start");
    assert!(text.contains("require_hardware_backed"), "{text}");

    // --- max_key_age_seconds + key_age_grace_seconds ---
    let (old_id, old) = file_key(&cluster, "old");
    let registered = register(&ops, "register", ROTATING_PLAN, &old);
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let created = Instant::now();
    // Within age + grace it signs (the rotation gauge says when it became due).
    let signed = sign(&cluster, ROTATING_PLAN).expect("signs within the grace");
    assert_eq!(signed.signer_identity.key_id, old_id);
    let gauge =
        format!("stella_signer_key_rotation_due_timestamp_seconds{{plan=\"{ROTATING_PLAN}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let due = loop {
        if let Some(due) = metric(&cluster, &gauge)
            && due.is_finite()
        {
            break due;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation gauge for {ROTATING_PLAN}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs_f64();
    assert!(due < now + 5.0, "due {due} is about now ({now})");

    // After age + grace: refused, 503 naming the key, audited — until rotated.
    let deadline = created + Duration::from_secs(ROTATING_GRACE_SECONDS + 60);
    let problem = loop {
        match sign(&cluster, ROTATING_PLAN) {
            Ok(r) => assert_eq!(r.signer_identity.key_id, old_id),
            Err(ClientError::Problem(p)) if p.code.as_str() == "signing_unavailable" => break p,
            Err(other) => panic!("unexpected answer: {other}"),
        }
        assert!(Instant::now() < deadline, "the old key kept signing");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(problem.status, 503);
    assert!(problem.detail.contains(&old_id), "{}", problem.detail);
    assert!(
        problem.retry_after_seconds.unwrap_or_default() >= 60,
        "no tight retry loop: {:?}",
        problem.retry_after_seconds
    );
    let audit = stella_tests::audit_api(
        &client_for(
            &cluster.api_url(1),
            cluster
                .services
                .credentials("operator", PLAN, &cluster.api_url(1)),
        ),
        "limit=1000",
    );
    assert!(
        audit["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["decision"] != "signed"
                && r["reason"].as_str().is_some_and(|t| t.contains(&old_id))),
        "the refusal is audited naming the key"
    );
    let (new_id, new) = file_key(&cluster, "new");
    let rotated = register(&ops, "rotate", ROTATING_PLAN, &new);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let signed = sign(&cluster, ROTATING_PLAN).expect("the rotated key signs");
    assert_eq!(signed.signer_identity.key_id, new_id);
}

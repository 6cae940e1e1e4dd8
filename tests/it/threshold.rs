//! Threshold keys across processes: a distributed key generation makes a t-of-n FROST key whose
//! shares sit on different nodes; signatures need t of them. Each signature is checked by
//! `stella verify` and independently: an Ed25519 key's bundle by sigstore-js and its envelope by
//! `openssl pkeyutl -verify -rawin`; a secp256k1 (BIP-340) key's signature by libsecp256k1
//! through Python's coincurve (`tests/verifiers/bip340_verify.py`, a venv made by
//! `scripts/test.sh`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use stella_api::{SignDsseRequest, SignDsseResponse};
use stella_tests::{
    ClusterOptions, PLAN, TestCluster, Verifiers, client_for, repo_root, stella, stella_ok,
};

fn s(p: &Path) -> String {
    p.to_str().expect("utf8").to_owned()
}

/// Operator credentials (scope `signer.admin`) for the CLI, talking to node 1.
fn operator(cluster: &TestCluster) -> String {
    let mut ops = cluster
        .services
        .credentials("operator", PLAN, &cluster.api_url(1));
    ops.server = cluster.api_url(1);
    let path = cluster.dir.path().join("ops.json");
    std::fs::write(&path, serde_json::to_vec(&ops).expect("json")).expect("ops");
    s(&path)
}

/// `stella keys create-threshold`; returns the key change. `suite` empty: the default (Ed25519).
fn create(ops: &str, tenant: &str, t: u16, nodes: &str, suite: &str) -> Value {
    let t = t.to_string();
    let mut args = vec![
        "keys",
        "create-threshold",
        "--tenant",
        tenant,
        "--plan",
        PLAN,
        "--threshold",
        &t,
        "--reason",
        "high-assurance releases",
        "--credentials",
        ops,
    ];
    if !nodes.is_empty() {
        args.extend(["--nodes", nodes]);
    }
    if !suite.is_empty() {
        args.extend(["--suite", suite]);
    }
    let out = stella_ok(&args);
    serde_json::from_slice(&out.stdout).expect("key change")
}

fn sign(
    cluster: &TestCluster,
    node: usize,
    client_id: &str,
) -> Result<SignDsseResponse, stella_api::ClientError> {
    let client = client_for(
        &cluster.api_url(node),
        cluster
            .services
            .credentials(client_id, PLAN, &cluster.api_url(node)),
    );
    let request: SignDsseRequest =
        serde_json::from_value(stella_tests::sbom_request_for(&client)).expect("request");
    client.sign_dsse(&request)
}

/// The signature verifies with `stella verify` and independently: Ed25519 with sigstore-js (the
/// bundle) and openssl (the envelope), BIP-340 with libsecp256k1 (coincurve).
fn check_independently(response: &SignDsseResponse, key_id: &str, dir: &Path, name: &str) {
    assert_eq!(response.signer_identity.key_source, "threshold");
    assert_eq!(response.signer_identity.key_id, key_id);
    let envelope_path = dir.join(format!("{name}.dsse.json"));
    std::fs::write(&envelope_path, response.envelope.get()).expect("envelope");
    let key_path = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&key_path, &response.signer_identity.public_key_pem).expect("key");
    let envelope: stella_signer::Envelope =
        serde_json::from_str(response.envelope.get()).expect("envelope");
    let statement: Value = serde_json::from_slice(&envelope.payload).expect("statement");
    let digest = format!(
        "sha256:{}",
        statement["subject"][0]["digest"]["sha256"]
            .as_str()
            .expect("digest")
    );
    let out = stella(&[
        "verify",
        &digest,
        "--envelope",
        &s(&envelope_path),
        "--key",
        &s(&key_path),
    ]);
    assert!(
        out.status.success(),
        "stella verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match response.signer_identity.algorithm.as_str() {
        "ED25519" => check_ed25519(response, &envelope_path, &key_path, dir, name),
        "BIP340_SECP256K1_SHA256" => {
            assert!(
                response.bundles.is_empty(),
                "no Sigstore bundle for a BIP-340 signature"
            );
            check_bip340(response, &envelope);
        }
        other => panic!("unexpected threshold algorithm {other}"),
    }
}

/// An Ed25519 threshold signature is an ordinary keyful Sigstore signature: sigstore-js accepts
/// its bundle with the group's public key, `openssl pkeyutl -verify -rawin` its envelope, and
/// both refuse a tampered payload.
fn check_ed25519(
    response: &SignDsseResponse,
    envelope_path: &Path,
    key_path: &Path,
    dir: &Path,
    name: &str,
) {
    let [bundle] = response.bundles.as_slice() else {
        panic!(
            "one bundle for one Ed25519 signature: {:?}",
            response.bundles
        );
    };
    assert_eq!(bundle.key_id, response.signer_identity.key_id);
    let bundle_path = dir.join(format!("{name}.sigstore.json"));
    std::fs::write(&bundle_path, bundle.bundle.get()).expect("bundle");
    let (ok, detail) = Verifiers::sigstore_js(&bundle_path, key_path, None);
    assert!(
        ok,
        "sigstore-js accepts the Ed25519 threshold bundle: {detail}"
    );
    let (ok, detail) = Verifiers::openssl(envelope_path, key_path);
    assert!(
        ok,
        "openssl accepts the Ed25519 threshold envelope: {detail}"
    );

    let tamper = |text: &str| {
        let mut value: Value = serde_json::from_str(text).expect("json");
        let field = if value.get("dsseEnvelope").is_some() {
            &mut value["dsseEnvelope"]["payload"]
        } else {
            &mut value["payload"]
        };
        let payload = field.as_str().expect("payload").to_owned();
        let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
            .expect("b64");
        bytes[10] ^= 1;
        *field = Value::String(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            bytes,
        ));
        serde_json::to_vec(&value).expect("json")
    };
    let bad_bundle = dir.join(format!("{name}.tampered.sigstore.json"));
    std::fs::write(&bad_bundle, tamper(bundle.bundle.get())).expect("write");
    let (ok, detail) = Verifiers::sigstore_js(&bad_bundle, key_path, None);
    assert!(!ok, "sigstore-js refuses a tampered payload: {detail}");
    let bad_envelope = dir.join(format!("{name}.tampered.dsse.json"));
    std::fs::write(&bad_envelope, tamper(response.envelope.get())).expect("write");
    let (ok, detail) = Verifiers::openssl(&bad_envelope, key_path);
    assert!(!ok, "openssl refuses a tampered payload: {detail}");
}

fn check_bip340(response: &SignDsseResponse, envelope: &stella_signer::Envelope) {
    let public = stella_signer::PublicKey::from_pem(&response.signer_identity.public_key_pem)
        .expect("group key");
    let x_only = public.bip340_x_only().expect("a BIP-340 key");
    let message = stella_signer::threshold::threshold_message(&envelope.pae());
    let signature = &envelope.signatures[0].sig;
    let Some(python) = std::env::var_os("STELLA_BIP340_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI checks threshold signatures with coincurve: scripts/test.sh sets STELLA_BIP340_PYTHON"
        );
        eprintln!("STELLA_BIP340_PYTHON unset: libsecp256k1 check skipped");
        return;
    };
    let check = |sig: &[u8]| {
        std::process::Command::new(&python)
            .arg(repo_root().join("tests/verifiers/bip340_verify.py"))
            .args([hex::encode(x_only), hex::encode(message), hex::encode(sig)])
            .output()
            .expect("python")
    };
    let out = check(signature);
    assert!(
        out.status.success(),
        "libsecp256k1 verifies the threshold signature: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tampered = signature.clone();
    tampered[63] ^= 1;
    assert!(
        !check(&tampered).status.success(),
        "and refuses a tampered one"
    );
}

fn audit_records(cluster: &TestCluster, node: usize) -> Vec<Value> {
    let page = stella_tests::audit_api(
        &client_for(
            &cluster.api_url(node),
            cluster
                .services
                .credentials("operator", PLAN, &cluster.api_url(node)),
        ),
        "limit=1000",
    );
    page["records"].as_array().expect("records").clone()
}

fn share_files(cluster: &TestCluster, node: usize) -> Vec<PathBuf> {
    std::fs::read_dir(cluster.data_dir(node).join("threshold/shares"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_2_of_3_key_signs_with_one_node_down_and_no_node_holds_the_key() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let dir = cluster.dir.path().to_path_buf();
    let ops = operator(&cluster);

    // Bad requests to the threshold endpoints answer problem+json with a stable code.
    let admin = client_for(
        &cluster.api_url(1),
        cluster
            .services
            .credentials("operator", PLAN, &cluster.api_url(1)),
    );
    let post = |client: &stella_api::Client, path: &str, body: &[u8]| {
        let response = client
            .send(reqwest::Method::POST, path, &[], Some(body.to_vec()))
            .expect("answer");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let problem: Value = response.json().unwrap_or(Value::Null);
        assert_eq!(content_type, "application/problem+json", "{problem}");
        (
            status,
            problem["code"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let create_path = stella_api::KEYS_THRESHOLD_PATH;
    let refresh_path = stella_api::KEYS_THRESHOLD_REFRESH_PATH;
    for (path, body) in [
        (create_path, &b"{not json"[..]),
        (
            create_path,
            br#"{"tenant":"tenant-a","plan":"p","minSigners":2,"reason":"r","extra":1}"#,
        ),
        (
            create_path,
            br#"{"tenant":"tenant-a","plan":"p","minSigners":5,"reason":"too many"}"#,
        ),
        (
            create_path,
            br#"{"tenant":"tenant-a","plan":"p","minSigners":2,"nodes":[9],"reason":"stranger"}"#,
        ),
        (
            refresh_path,
            br#"{"keyId":"sha256:00","reason":"no such key"}"#,
        ),
    ] {
        let (status, code) = post(&admin, path, body);
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let (status, _) = post(
        cluster.client(1),
        create_path,
        br#"{"tenant":"tenant-a","plan":"p","minSigners":2,"reason":"not an operator"}"#,
    );
    assert!(
        status == 401 || status == 403,
        "a tenant cannot make keys: {status}"
    );

    let change = create(&ops, "tenant-a", 2, "", "");
    let key_id = change["keyId"].as_str().expect("key id").to_owned();

    // Each node holds one sealed share of it, and nothing else: no share in Raft, no key file.
    for node in 1..=3 {
        let files = share_files(&cluster, node);
        assert_eq!(files.len(), 1, "node {node} holds exactly one share");
        let sealed = std::fs::read(&files[0]).expect("share");
        let other = share_files(&cluster, node % 3 + 1);
        assert_ne!(sealed, std::fs::read(&other[0]).expect("share"));
    }
    let listed = stella_ok(&["keys", "list", "--credentials", &ops, "--output", "json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("keys");
    let entry = listed
        .iter()
        .find(|k| k["keyId"] == key_id.as_str())
        .expect("registered");
    assert_eq!(entry["source"], "threshold");
    assert_eq!(entry["threshold"]["minSigners"], 2);
    assert_eq!(entry["threshold"]["holders"], serde_json::json!([1, 2, 3]));

    // Signs through any node (followers route to the leader, which coordinates).
    for node in 1..=3 {
        let response = sign(&cluster, node, "tenant-a-ci").expect("threshold signature");
        check_independently(&response, &key_id, &dir, &format!("all-up-{node}"));
    }
    // One node down (n − t = 1): still signs.
    cluster.kill(3);
    let response = sign(&cluster, 1, "tenant-a-ci").expect("signs with two of three");
    check_independently(&response, &key_id, &dir, "one-down");
    let records = audit_records(&cluster, 1);
    let signed: Vec<&Value> = records
        .iter()
        .filter(|r| r["keyId"] == key_id.as_str() && r["decision"] == "signed")
        .collect();
    assert_eq!(signed.len(), 4);
    assert!(signed.iter().all(|r| r["keySource"] == "threshold"));
    // Another tenant is never signed for with tenant-a's threshold key.
    let other = sign(&cluster, 1, "tenant-b-ci").expect("tenant-b signs");
    assert_ne!(other.signer_identity.key_id, key_id);

    // A tenant policy of two keys: a second threshold key (on the two live nodes) signs
    // alongside the first, one envelope, each signature under its own key id.
    // The second key is of the other suite: one envelope carries an Ed25519 and a BIP-340
    // signature, and only the Ed25519 one gets a Sigstore bundle.
    let second = create(&ops, "tenant-a", 2, "1,2", "secp256k1-tr");
    let second_id = second["keyId"].as_str().expect("key id").to_owned();
    let both = sign(&cluster, 2, "tenant-a-ci").expect("two threshold signatures");
    let envelope: stella_signer::Envelope =
        serde_json::from_str(both.envelope.get()).expect("envelope");
    let ids: Vec<_> = envelope
        .signatures
        .iter()
        .map(|s| s.keyid.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, vec![key_id.clone(), second_id.clone()]);
    assert_eq!(
        both.bundles
            .iter()
            .map(|b| b.key_id.clone())
            .collect::<Vec<_>>(),
        vec![key_id.clone()]
    );
    let listed = stella_ok(&["keys", "list", "--credentials", &ops, "--output", "json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("keys");
    for (i, id) in ids.iter().enumerate() {
        let pem = listed
            .iter()
            .find(|k| k["keyId"] == id.as_str())
            .and_then(|k| k["publicKeyPem"].as_str())
            .expect("listed");
        let key = stella_signer::PublicKey::from_pem(pem).expect("key");
        let verified = stella_signer::verify::verify_envelope(&envelope, &key).expect("verifies");
        assert_eq!(verified.signature_index, i);
    }

    // Revocation holds at the holders too: a peer that asks a holder directly (here with node
    // 2's own cluster certificate) gets commitments for an active key, none for a revoked one.
    stella_ok(&[
        "keys",
        "revoke",
        &second_id,
        "--reason",
        "drill",
        "--credentials",
        &ops,
    ]);
    let pki = cluster.dir.path().join("pki");
    let identity = reqwest::Identity::from_pem(
        &[
            std::fs::read(pki.join("node-2.pem")).expect("pem"),
            std::fs::read(pki.join("node-2.key")).expect("key"),
        ]
        .concat(),
    )
    .expect("identity");
    let peer = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(pki.join("ca.pem")).expect("ca"),
        )
        .expect("ca")])
        .identity(identity)
        .build()
        .expect("peer client");
    let commit = |key: &str| -> Value {
        peer.post(format!("{}/peer/v1/threshold/commit", cluster.peer_url(1)))
            .json(&serde_json::json!({"key_id": key, "session": [7, 7, 7]}))
            .send()
            .expect("peer call")
            .json()
            .expect("answer")
    };
    // A member asking a holder directly, with no admitted request behind it, gets nothing —
    // for an active key as for a revoked one.
    for key in [&key_id, &second_id] {
        let refused = commit(key);
        assert!(
            refused["Err"]
                .as_str()
                .is_some_and(|e| e.contains("no open admission")),
            "{refused}"
        );
    }
    // And its shares are destroyed on the holders (the first key's stay).
    let file_of = |id: &str| format!("{}.share", id.trim_start_matches("sha256:"));
    let holds = |node: usize, id: &str| {
        share_files(&cluster, node).iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == file_of(id))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (holds(1, &second_id) || holds(2, &second_id)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !holds(1, &second_id) && !holds(2, &second_id),
        "revoked shares destroyed"
    );
    assert!(
        holds(1, &key_id) && holds(2, &key_id),
        "the active key's shares stay"
    );
}

#[test]
fn a_3_of_5_key_survives_two_nodes_down_and_fewer_than_t_fails_fast() {
    let mut cluster = TestCluster::start(ClusterOptions {
        nodes: 5,
        ..ClusterOptions::default()
    });
    let dir = cluster.dir.path().to_path_buf();
    let ops = operator(&cluster);
    let three = create(&ops, "tenant-a", 3, "", "secp256k1-tr");
    let three_id = three["keyId"].as_str().expect("key id").to_owned();
    // tenant-b's key needs four of its five holders.
    let four = create(&ops, "tenant-b", 4, "1,2,3,4,5", "");
    let four_id = four["keyId"].as_str().expect("key id").to_owned();
    check_independently(
        &sign(&cluster, 2, "tenant-a-ci").expect("3-of-5"),
        &three_id,
        &dir,
        "five-up",
    );
    check_independently(
        &sign(&cluster, 2, "tenant-b-ci").expect("4-of-5"),
        &four_id,
        &dir,
        "five-up-b",
    );

    // Two nodes down (n − t = 2): the 3-of-5 key signs; the 4-of-5 key has 3 shares left.
    let leader = cluster
        .client(1)
        .cluster_status()
        .expect("status")
        .leader
        .unwrap_or(1) as usize;
    let down: Vec<usize> = (1..=5).filter(|n| *n != leader).take(2).collect();
    for node in &down {
        cluster.kill(*node);
    }
    let up = (1..=5).find(|n| !down.contains(n)).expect("a live node");
    let response = sign(&cluster, up, "tenant-a-ci").expect("3-of-5 with two nodes down");
    check_independently(&response, &three_id, &dir, "two-down");
    let started = std::time::Instant::now();
    let refused =
        stella_tests::refused_with(sign(&cluster, up, "tenant-b-ci"), "signing_unavailable");
    assert!(
        refused.detail.contains("3 of the 4"),
        "names the shortfall: {}",
        refused.detail
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );
    let records = audit_records(&cluster, up);
    assert!(
        records
            .iter()
            .any(|r| r["keyId"] == four_id.as_str() && r["decision"] == "failed"),
        "the failure is audited"
    );
}

#[test]
fn a_node_sending_bad_signature_shares_is_named_and_routed_around() {
    let cluster = TestCluster::start(ClusterOptions {
        node_extra: vec![(2, "[threshold]\ndrill_corrupt_shares = true".into())],
        ..ClusterOptions::default()
    });
    let dir = cluster.dir.path().to_path_buf();
    let ops = operator(&cluster);
    let key = create(&ops, "tenant-a", 2, "", "");
    let key_id = key["keyId"].as_str().expect("key id").to_owned();
    for round in 0..3 {
        let response = sign(&cluster, 1, "tenant-a-ci").expect("signs around the faulty node");
        check_independently(&response, &key_id, &dir, &format!("faulty-{round}"));
    }
    let records = audit_records(&cluster, 1);
    let named = records
        .iter()
        .filter(|r| r["keyId"] == key_id.as_str() && r["decision"] == "signed")
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|t| t.contains("(node 2) sent an invalid signature share"))
        })
        .count();
    assert!(
        named >= 1,
        "the faulty holder is named in the audit log: {records:?}"
    );

    // A 2-of-2 key on nodes 1 and 2 cannot route around node 2: refused, naming it.
    let pair = create(&ops, "tenant-b", 2, "1,2", "");
    let pair_id = pair["keyId"].as_str().expect("key id").to_owned();
    let refused =
        stella_tests::refused_with(sign(&cluster, 1, "tenant-b-ci"), "signing_unavailable");
    assert!(
        refused
            .detail
            .contains("invalid signature shares from holder 2 (node 2)"),
        "{}",
        refused.detail
    );
    let records = audit_records(&cluster, 1);
    assert!(
        records
            .iter()
            .any(|r| r["keyId"] == pair_id.as_str() && r["decision"] == "failed")
    );
}

#[test]
fn a_refresh_takes_a_leaving_node_out_and_the_same_key_signs_on() {
    let cluster = TestCluster::start(ClusterOptions::default());
    let dir = cluster.dir.path().to_path_buf();
    let ops = operator(&cluster);
    let key = create(&ops, "tenant-a", 2, "", "");
    let key_id = key["keyId"].as_str().expect("key id").to_owned();
    check_independently(
        &sign(&cluster, 1, "tenant-a-ci").expect("before"),
        &key_id,
        &dir,
        "before-refresh",
    );
    let share_of = |node: usize| {
        share_files(&cluster, node)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "share"))
            .map(|p| std::fs::read(p).expect("share"))
    };
    let old_shares: Vec<_> = (1..=2).map(share_of).collect();

    // Node 3 is leaving: new shares for 1 and 2, the same key; node 3's share is destroyed.
    let out = stella_ok(&[
        "keys",
        "refresh-threshold",
        &key_id,
        "--nodes",
        "1,2",
        "--reason",
        "node 3 leaves",
        "--credentials",
        &ops,
    ]);
    let change: Value = serde_json::from_slice(&out.stdout).expect("change");
    assert_eq!(change["keyId"], key_id.as_str());
    let listed = stella_ok(&["keys", "list", "--credentials", &ops, "--output", "json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("keys");
    let entry = listed
        .iter()
        .find(|k| k["keyId"] == key_id.as_str())
        .expect("still registered");
    assert_eq!(entry["threshold"]["holders"], serde_json::json!([1, 2]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !share_files(&cluster, 3).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        share_files(&cluster, 3).is_empty(),
        "the left-out node's share is destroyed"
    );
    for round in 0..3 {
        let response = sign(&cluster, 1 + round % 2, "tenant-a-ci").expect("after the refresh");
        check_independently(&response, &key_id, &dir, &format!("after-refresh-{round}"));
    }
    // The holders switched to their new shares (the pending ones became current).
    for node in 1..=2 {
        let files = share_files(&cluster, node);
        assert_eq!(files.len(), 1, "node {node}: {files:?}");
        assert_ne!(
            share_of(node),
            old_shares[node - 1],
            "node {node} has a new share"
        );
    }
    let records = audit_records(&cluster, 1);
    assert!(
        records.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|t| t.contains("refreshed: holders [1, 2], left out [3]"))),
        "the refresh is audited"
    );
}

#[test]
fn holders_refuse_a_coordinator_that_asks_for_a_statement_nobody_admitted() {
    // Every node tampers when it coordinates, so whichever leads asks its holders to sign a
    // forged statement for a real caller's admission.
    let cluster = TestCluster::start(ClusterOptions {
        node_extra: (1..=3)
            .map(|id| {
                (
                    id,
                    "[threshold]\ndrill_tamper_as_coordinator = true".to_owned(),
                )
            })
            .collect(),
        ..ClusterOptions::default()
    });
    let ops = operator(&cluster);
    let key = create(&ops, "tenant-a", 2, "", "");
    let key_id = key["keyId"].as_str().expect("key id").to_owned();
    let refused =
        stella_tests::refused_with(sign(&cluster, 1, "tenant-a-ci"), "signing_unavailable");
    assert!(
        refused.detail.contains("not of the admitted statement"),
        "the holders name why: {}",
        refused.detail
    );
    // Nothing was signed with the key; the failure is audited.
    let records = audit_records(&cluster, 1);
    assert!(
        !records
            .iter()
            .any(|r| r["keyId"] == key_id.as_str() && r["decision"] == "signed"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["keyId"] == key_id.as_str() && r["decision"] == "failed"),
        "{records:?}"
    );
}

//! The replicated key registry on a three-node cluster: per-tenant keys, rotation (new active
//! and old retired in one entry), revocation in force on every node before the command
//! returns, no fallback to another key, and the public keys exported for offline checks.

use serde_json::Value;
use stella_api::{ClientError, SignDsseRequest};
use stella_tests::{
    ClusterOptions, PLAN, TestCluster, client_for, sbom_request_for, stella, stella_ok,
};

fn sign_key_id(client: &stella_api::Client) -> Result<String, stella_api::Problem> {
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(client)).expect("request");
    match client.sign_dsse(&request) {
        Ok(r) => Ok(r.signer_identity.key_id),
        Err(ClientError::Problem(p)) => Err(p),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn keys_are_per_tenant_rotate_atomically_and_revocation_holds_everywhere() {
    let cluster = TestCluster::start(ClusterOptions::default());
    let dir = cluster.dir.path();
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();
    let default_key = stella_signer::PublicKey::from_pem_file(&cluster.public_key_path())
        .expect("default key")
        .key_id();
    let tenant_a = cluster.client(2);
    let tenant_b = client_for(
        &cluster.api_url(3),
        cluster
            .services
            .credentials("tenant-b-ci", PLAN, &cluster.api_url(3)),
    );
    let mut ops = cluster
        .services
        .credentials("operator", PLAN, &cluster.api_url(1));
    ops.server = cluster.api_url(1);
    let ops_file = dir.join("ops.json");
    std::fs::write(&ops_file, serde_json::to_vec(&ops).expect("json")).expect("ops");
    let ops = s(&ops_file);
    assert_eq!(
        sign_key_id(tenant_a).expect("signed"),
        default_key,
        "no registered key yet"
    );

    // A key for tenant-a: created by the operator, installed on every node, then registered.
    let create = |name: &str| {
        let out = stella_ok(&["keys", "create", "--out", &s(&dir.join(name))]);
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let mut parts = line.split_whitespace();
        let key_id = parts.next().expect("key id").to_owned();
        let path = std::path::PathBuf::from(parts.next().expect("path"));
        (key_id, path)
    };
    let install = |path: &std::path::Path| {
        for id in 1..=cluster.len() {
            let keys = cluster.data_dir(id).join("keys");
            std::fs::create_dir_all(&keys).expect("keys dir");
            std::fs::copy(path, keys.join(path.file_name().expect("name"))).expect("install");
        }
    };
    let (k1, k1_path) = create("k1");
    // Not installed yet: registering it would stop tenant-a's signing, so it is refused.
    let early = stella(&[
        "keys",
        "register",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--key",
        &s(&k1_path),
        "--reason",
        "too early",
        "--credentials",
        &ops,
    ]);
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("install the private key"));
    install(&k1_path);
    stella_ok(&[
        "keys",
        "register",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--key",
        &s(&k1_path),
        "--reason",
        "tenant key",
        "--credentials",
        &ops,
    ]);
    assert_eq!(sign_key_id(tenant_a).expect("signed"), k1);
    assert_eq!(
        sign_key_id(&tenant_b).expect("signed"),
        default_key,
        "never another tenant's key"
    );

    // A tenant policy of two keys: a second active key adds a second signature — one DSSE
    // envelope with both, one Sigstore bundle per signature, each verified by sigstore-js.
    let (k3, k3_path) = create("k3");
    install(&k3_path);
    stella_ok(&[
        "keys",
        "register",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--key",
        &s(&k3_path),
        "--reason",
        "second signer",
        "--credentials",
        &ops,
    ]);
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(tenant_a)).expect("request");
    let response = tenant_a.sign_dsse(&request).expect("multi-signed");
    let k1_bundle = dir.join("k1-signed.bundle.json");
    std::fs::write(&k1_bundle, response.bundles[0].bundle.get()).expect("bundle");
    let k1_audit_id = response.audit_id.clone();
    let envelope: Value = serde_json::from_str(response.envelope.get()).expect("envelope");
    assert_eq!(envelope["signatures"].as_array().expect("sigs").len(), 2);
    let key_ids: Vec<&str> = response.bundles.iter().map(|b| b.key_id.as_str()).collect();
    assert_eq!(key_ids, [k1.as_str(), k3.as_str()]);
    assert_eq!(response.bundle_sha256, response.bundles[0].bundle_sha256);
    for (bundle, key_path) in response.bundles.iter().zip([&k1_path, &k3_path]) {
        let bundle_file = dir.join(format!("{}.bundle.json", &bundle.key_id[7..15]));
        std::fs::write(&bundle_file, bundle.bundle.get()).expect("bundle");
        let public = dir.join(format!("{}.pub.pem", &bundle.key_id[7..15]));
        let key = stella_signer::FileKeySigner::from_pem_file(key_path).expect("key");
        std::fs::write(&public, key.public_key().to_pem()).expect("pub");
        let (ok, out) = stella_tests::Verifiers::sigstore_js(&bundle_file, &public, None);
        assert!(ok, "{out}");
    }

    // Rotation: k2 becomes active and k1 and k3 retired in one replicated entry.
    let (k2, k2_path) = create("k2");
    install(&k2_path);
    let out = stella_ok(&[
        "keys",
        "rotate",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--key",
        &s(&k2_path),
        "--reason",
        "yearly rotation",
        "--credentials",
        &ops,
    ]);
    let change: Value = serde_json::from_slice(&out.stdout).expect("json");
    let retired: Vec<&str> = change["retired"]
        .as_array()
        .expect("retired")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        retired.contains(&k1.as_str()) && retired.contains(&k3.as_str()),
        "{change}"
    );
    for id in 1..=cluster.len() {
        let client = client_for(&cluster.api_url(id), cluster.credentials.clone());
        assert_eq!(
            sign_key_id(&client).expect("signed"),
            k2,
            "node {id} signs with the new key"
        );
    }

    let k2_response = tenant_a.sign_dsse(&request).expect("signed with k2");
    let k2_bundle = dir.join("k2-signed.bundle.json");
    std::fs::write(&k2_bundle, k2_response.bundles[0].bundle.get()).expect("bundle");

    // Revocation: in force on every node when the command returns; no fallback to any key.
    let out = stella_ok(&[
        "keys",
        "revoke",
        &k2,
        "--reason",
        "key compromise",
        "--credentials",
        &ops,
    ]);
    let change: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        change["appliedOn"].as_array().expect("nodes").len(),
        cluster.len()
    );
    for id in 1..=cluster.len() {
        let client = client_for(&cluster.api_url(id), cluster.credentials.clone());
        let refused = sign_key_id(&client).expect_err("no active key");
        assert_eq!(
            refused.code.as_str(),
            "signing_unavailable",
            "{}",
            refused.detail
        );
    }

    // Listing: tenants see their own keys; the export has the retired key, not the revoked one.
    let list = |creds: &str| {
        let out = stella_ok(&["keys", "list", "--credentials", creds, "--output", "json"]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("json")
    };
    let all = list(&ops);
    let state_of = |k: &str| {
        all.iter()
            .find(|e| e["keyId"] == k)
            .map(|e| e["state"].clone())
    };
    assert_eq!(state_of(&k1), Some("retired".into()));
    assert_eq!(state_of(&k2), Some("revoked".into()));
    let b_file = dir.join("b.json");
    std::fs::write(
        &b_file,
        serde_json::to_vec(tenant_b.credentials()).expect("json"),
    )
    .expect("b");
    assert!(
        list(&s(&b_file)).is_empty(),
        "tenant-b sees none of tenant-a's keys"
    );
    let export = dir.join("export");
    stella_ok(&[
        "keys",
        "export-public",
        "-o",
        &s(&export),
        "--credentials",
        &ops,
    ]);
    assert!(export.join(format!("{}.pub.pem", &k1[7..])).exists());
    assert!(!export.join(format!("{}.pub.pem", &k2[7..])).exists());

    // The Offline Kit judges signatures by their signing time: k1 signed while active verifies;
    // the same signature claimed after k1's retirement does not; k2 (revoked) is not in the kit.
    let kit = dir.join("kit");
    stella_ok(&["trust", "export", "-o", &s(&kit), "--credentials", &ops]);
    let audit_page = stella_tests::audit_api(
        &client_for(
            &cluster.api_url(1),
            cluster
                .services
                .credentials("operator", PLAN, &cluster.api_url(1)),
        ),
        "limit=1000",
    );
    let signed_at = audit_page["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["auditId"] == k1_audit_id.as_str())
        .and_then(|r| r["time"].as_str())
        .expect("the signing's audit time")
        .to_owned();
    let digest = format!(
        "sha256:{}",
        sbom_request_for(tenant_a)["subject"][0]["digest"]["sha256"]
            .as_str()
            .expect("digest")
    );
    let verify = |bundle: &std::path::Path, at: &str| {
        stella(&[
            "verify",
            &digest,
            "--bundle",
            &s(bundle),
            "--trust",
            &s(&kit),
            "--signed-at",
            at,
            "--output",
            "json",
        ])
    };
    let ok = verify(&k1_bundle, &signed_at);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let late = verify(&k1_bundle, "2099-01-01T00:00:00Z");
    assert_eq!(late.status.code(), Some(1));
    let late: Value = serde_json::from_slice(&late.stdout).expect("json");
    assert_eq!(late["kind"], "key_not_valid_at_signing_time", "{late}");
    let revoked = verify(&k2_bundle, &signed_at);
    assert_eq!(
        revoked.status.code(),
        Some(1),
        "a revoked key is not in the kit"
    );

    // Every change is audited.
    let page = stella_tests::audit_api(
        &client_for(
            &cluster.api_url(1),
            cluster
                .services
                .credentials("operator", PLAN, &cluster.api_url(1)),
        ),
        "limit=1000",
    );
    let changes: Vec<&str> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["decision"] == "configured")
        .filter_map(|r| r["poeState"].as_str())
        .collect();
    assert_eq!(
        changes,
        [
            "key_registered",
            "key_registered",
            "key_rotated",
            "key_revoked"
        ]
    );
}

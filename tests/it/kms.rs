//! AWS KMS keys, against moto in server mode (the KMS-protocol stand-in, `stella_tests::moto`):
//! the KeySigner conformance suite on the KMS back-end, and a real node that has a KMS key
//! registered for a tenant and plan (`stella keys register --kms ARN`), signs an SBOM through
//! the HTTP API with it — the bundle verified by sigstore-js, the envelope by openssl, a
//! tampered payload refused by both — and answers 503 `signing_unavailable` while KMS is down;
//! with a standby key registered, the standby signs (audited as `fallback`) while KMS does not
//! answer, and never once it answers again (ADR 0022).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use stella_api::SignDsseRequest;
use stella_node::kms::{Credentials, KmsClient, KmsKeySigner, KmsSettings};
use stella_signer::conformance::{Options, conformance_with};
use stella_signer::{KeySigner, PublicKey};
use stella_tests::moto::{ACCESS_KEY_ID, MotoServer, REGION, SECRET_ACCESS_KEY};
use stella_tests::{
    NodeProcess, PLAN, Services, Verifiers, client_for, refused_with, sbom_request_for, stella,
    stella_ok,
};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn client(moto: &MotoServer) -> Arc<KmsClient> {
    let settings = KmsSettings {
        endpoint_url: Some(moto.url.clone()),
        ..KmsSettings::new(REGION)
    };
    KmsClient::connect_with_credentials(
        settings,
        Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test"),
    )
    .expect("client")
}

#[test]
fn the_kms_key_conforms() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let key = moto.create_key("ECC_NIST_P256", "SIGN_VERIFY");
    let signer = KmsKeySigner::open(client(&moto), &key.arn).expect("open the KMS key");
    let public_key = PublicKey::from_spki_der(&key.spki_der).expect("moto's SPKI");
    assert_eq!(signer.descriptor().key_id, public_key.key_id());
    assert_eq!(signer.descriptor().source.as_str(), "kms");
    // 1 to 4,096 bytes (KMS's RAW range): what moto signs correctly — it hashes a DIGEST
    // request again.
    conformance_with(
        "kms (moto)",
        Arc::new(signer),
        Options {
            largest_message: 4096,
            empty_message: false,
            threads: 4,
        },
    );
    // Otherwise the back-end sends the digest; moto signs its hash instead, and the back-end's
    // own check keeps that wrong signature from leaving (the request itself is proven in
    // node/src/kms/tests.rs).
    let signer = KmsKeySigner::open(client(&moto), &key.arn).expect("open");
    for message in [&[][..], &[7u8; 4097][..]] {
        let e = signer.sign(message).expect_err("moto's DIGEST answer");
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    for (spec, usage) in [
        ("RSA_2048", "SIGN_VERIFY"),
        ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
    ] {
        let other = moto.create_key(spec, usage);
        let e = KmsKeySigner::open(client(&moto), &other.arn).expect_err(spec);
        assert!(
            e.to_string().contains("cannot sign here"),
            "{spec}/{usage}: {e}"
        );
    }
}

fn tamper_payload(doc: &mut Value) {
    let payload = STANDARD
        .decode(doc["payload"].as_str().expect("payload"))
        .expect("b64");
    let mut statement: Value = serde_json::from_slice(&payload).expect("statement");
    statement["subject"][0]["digest"]["sha256"] = Value::String("0".repeat(64));
    doc["payload"] = Value::String(STANDARD.encode(serde_json::to_vec(&statement).expect("json")));
}

/// A one-node signer (TLS off, loopback) with `[signing.kms]` pointing at `moto`, the AWS
/// credentials in its environment only, and operator credentials in `ops.json`.
struct KmsNode {
    tmp: tempfile::TempDir,
    services: Services,
    node: NodeProcess,
    ops: stella_api::Credentials,
    ops_file: std::path::PathBuf,
}

fn kms_node(moto: &MotoServer) -> KmsNode {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    let default_key = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), default_key.to_pkcs8_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\n[tls]\ndisabled = true\n\
         [signing]\nkey_file = \"{d}/signing.pem\"\n{kms}\n{admission}",
        d = dir.display(),
        kms = moto.node_toml(),
        admission = services.node_toml(&[(PLAN, 1000, 100, 1024 * 1024)], ""),
    );
    std::fs::write(dir.join("node.toml"), config).expect("config");
    // Credentials reach the node only through the SDK's standard chain (its environment).
    let node = NodeProcess::start_with_env(
        &["serve", "--config", s(&dir.join("node.toml"))],
        &dir.join("data"),
        &MotoServer::env(),
    );
    let mut ops = services.credentials("operator", PLAN, &node.url);
    ops.server = node.url.clone();
    let ops_file = dir.join("ops.json");
    std::fs::write(&ops_file, serde_json::to_vec(&ops).expect("json")).expect("ops");
    KmsNode {
        tmp,
        services,
        node,
        ops,
        ops_file,
    }
}

#[test]
fn a_node_signs_with_a_registered_kms_key_and_sigstore_js_and_openssl_accept_it() {
    let Some(mut moto) = MotoServer::start() else {
        return;
    };
    let key = moto.create_key("ECC_NIST_P256", "SIGN_VERIFY");
    let rsa = moto.create_key("RSA_2048", "SIGN_VERIFY");
    let expected = PublicKey::from_spki_der(&key.spki_der).expect("SPKI");

    let KmsNode {
        tmp,
        services,
        node,
        ops,
        ops_file,
    } = kms_node(&moto);
    let dir = tmp.path();
    let register = |arn: &str| {
        stella(&[
            "keys",
            "register",
            "--tenant",
            "tenant-a",
            "--plan",
            PLAN,
            "--kms",
            arn,
            "--reason",
            "tenant key in KMS",
            "--credentials",
            s(&ops_file),
        ])
    };
    // An RSA key cannot give the ECDSA P-256 signatures every verifier here expects.
    let refused = register(&rsa.arn);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ECC_NIST_P256"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = stella_ok(&[
        "keys",
        "register",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--kms",
        &key.arn,
        "--reason",
        "tenant key in KMS",
        "--credentials",
        s(&ops_file),
    ]);
    let change: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        change["keyId"],
        expected.key_id(),
        "the key id is KMS's SPKI's"
    );
    let out = stella_ok(&["keys", "list", "--credentials", s(&ops_file)]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.contains("kms"), "{listed}");

    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(&client)).expect("request");
    let response = client.sign_dsse(&request).expect("signed through KMS");
    assert_eq!(response.signer_identity.key_source, "kms");
    assert_eq!(response.signer_identity.key_id, expected.key_id());

    let key_path = dir.join("kms.pub.pem");
    std::fs::write(&key_path, expected.to_pem()).expect("key");
    let bundle = dir.join("bundle.json");
    std::fs::write(&bundle, response.bundles[0].bundle.get()).expect("bundle");
    let envelope = dir.join("envelope.json");
    std::fs::write(&envelope, response.envelope.get()).expect("envelope");
    let (ok, msg) = Verifiers::sigstore_js(&bundle, &key_path, None);
    assert!(ok, "sigstore-js accepts the KMS-signed bundle: {msg}");
    let (ok, msg) = Verifiers::openssl(&envelope, &key_path);
    assert!(ok, "openssl accepts the KMS-signed envelope: {msg}");
    let mut b: Value = serde_json::from_str(response.bundles[0].bundle.get()).expect("json");
    tamper_payload(&mut b["dsseEnvelope"]);
    let tampered = dir.join("tampered.bundle.json");
    std::fs::write(&tampered, serde_json::to_vec(&b).expect("json")).expect("write");
    let (ok, msg) = Verifiers::sigstore_js(&tampered, &key_path, None);
    assert!(!ok, "sigstore-js refuses a tampered payload: {msg}");
    let mut e: Value = serde_json::from_str(response.envelope.get()).expect("json");
    tamper_payload(&mut e);
    let tampered = dir.join("tampered.dsse.json");
    std::fs::write(&tampered, serde_json::to_vec(&e).expect("json")).expect("write");
    let (ok, msg) = Verifiers::openssl(&tampered, &key_path);
    assert!(!ok, "openssl refuses a tampered payload: {msg}");

    // KMS down: a retryable 503 within the signing bound, audited — never a 500, never
    // another key.
    moto.stop();
    let started = Instant::now();
    let problem = refused_with(client.sign_dsse(&request), "signing_unavailable");
    assert_eq!(problem.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let operator = client_for(&node.url, ops);
    let page = stella_tests::audit_api(&operator, "limit=100");
    let records = page["records"].as_array().expect("records");
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "signed" && r["keySource"] == "kms"),
        "{page}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "failed" && r["keyId"] == expected.key_id().as_str()),
        "{page}"
    );
}

#[test]
fn the_standby_key_signs_while_kms_is_down_and_not_after_it_returns() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let key = moto.create_key("ECC_NIST_P256", "SIGN_VERIFY");
    let kms_key_id = PublicKey::from_spki_der(&key.spki_der)
        .expect("SPKI")
        .key_id();
    let KmsNode {
        tmp,
        services,
        node,
        ops,
        ops_file,
    } = kms_node(&moto);
    let dir = tmp.path();
    stella_ok(&[
        "keys",
        "register",
        "--tenant",
        "tenant-a",
        "--plan",
        PLAN,
        "--kms",
        &key.arn,
        "--reason",
        "tenant key in KMS",
        "--credentials",
        s(&ops_file),
    ]);
    // The standby: a file key on the node, registered with --standby.
    let standby = stella_signer::FileKeySigner::generate().expect("standby");
    let standby_id = standby.public_key().key_id();
    let keys_dir = dir.join("data").join("keys");
    std::fs::create_dir_all(&keys_dir).expect("keys dir");
    let standby_pem = keys_dir.join(format!("{}.pem", standby_id.trim_start_matches("sha256:")));
    stella_tests::write_secret(&standby_pem, standby.to_pkcs8_pem());
    let register_standby = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            "keys",
            verb,
            "--tenant",
            "tenant-a",
            "--plan",
            PLAN,
            "--key",
            s(&standby_pem),
            "--reason",
            "standby for KMS outages",
            "--credentials",
            s(&ops_file),
        ];
        args.extend_from_slice(extra);
        stella_ok(&args)
    };
    register_standby("register", &["--standby"]);

    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let sign = || {
        let request: SignDsseRequest =
            serde_json::from_value(sbom_request_for(&client)).expect("request");
        client.sign_dsse(&request)
    };
    // KMS answers: the active key signs, never the standby.
    for _ in 0..3 {
        let r = sign().expect("signed through KMS");
        assert_eq!(
            (
                r.signer_identity.key_id.as_str(),
                r.signer_identity.key_source.as_str()
            ),
            (kms_key_id.as_str(), "kms")
        );
    }
    // KMS stops answering: the standby signs, audited as fallback, within the request bound.
    moto.pause();
    let started = Instant::now();
    let r = sign().expect("the standby signs while KMS is down");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.signer_identity.key_id, standby_id);
    assert_eq!(r.signer_identity.key_source, "fallback");
    let key_path = dir.join("standby.pub.pem");
    std::fs::write(&key_path, standby.public_key().to_pem()).expect("key");
    let bundle = dir.join("fallback.bundle.json");
    std::fs::write(&bundle, r.bundles[0].bundle.get()).expect("bundle");
    let (ok, msg) = Verifiers::sigstore_js(&bundle, &key_path, None);
    assert!(ok, "sigstore-js accepts the standby's bundle: {msg}");
    // KMS answers again: the active key signs again, never the standby.
    moto.resume();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = sign().expect("signed");
        if r.signer_identity.key_source == "kms" {
            assert_eq!(r.signer_identity.key_id, kms_key_id);
            break;
        }
        assert!(Instant::now() < deadline, "KMS never took over again");
        std::thread::sleep(Duration::from_millis(500));
    }
    for _ in 0..3 {
        let r = sign().expect("signed through KMS");
        assert_eq!(
            r.signer_identity.key_source, "kms",
            "no fallback once KMS answers"
        );
    }
    let operator = client_for(&node.url, ops);
    let page = stella_tests::audit_api(&operator, "limit=100");
    let records = page["records"].as_array().expect("records");
    let fallback: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "signed" && r["keySource"] == "fallback")
        .collect();
    assert!(!fallback.is_empty(), "{page}");
    assert!(fallback.iter().all(|r| {
        r["keyId"] == standby_id.as_str()
            && r["reason"]
                .as_str()
                .is_some_and(|t| t.contains(&kms_key_id))
    }));
    // The operator promotes the standby: it is the active key from now on.
    register_standby("rotate", &[]);
    let r = sign().expect("signed by the promoted key");
    assert_eq!(
        (
            r.signer_identity.key_id.as_str(),
            r.signer_identity.key_source.as_str()
        ),
        (standby_id.as_str(), "file")
    );
}

//! Independent verification: sigstore-js (`@sigstore/verify`) checks the node's bundles and
//! `openssl dgst` checks the raw envelope signature over the PAE bytes. Both must also reject a
//! tampered payload and a wrong key — a verifier that accepts everything proves nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use stella_tests::{NodeProcess, Verifiers, repo_root, stella};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn tamper_payload(doc: &mut Value) {
    let payload = STANDARD
        .decode(doc["payload"].as_str().expect("payload"))
        .expect("b64");
    let mut statement: Value = serde_json::from_slice(&payload).expect("statement");
    statement["subject"][0]["digest"]["sha256"] = Value::String("0".repeat(64));
    doc["payload"] = Value::String(STANDARD.encode(serde_json::to_vec(&statement).expect("json")));
}

#[test]
fn sigstore_js_and_openssl_accept_our_output_and_reject_tampering() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let sbom = repo_root().join("examples/sbom.cdx.json");
    let (bundle, envelope) = (tmp.path().join("b.json"), tmp.path().join("e.json"));
    let out = stella(&[
        "sign",
        "sbom",
        s(&sbom),
        "--credentials",
        s(&node.dev_dir()),
        "--bundle",
        s(&bundle),
        "--envelope",
        s(&envelope),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = node.public_key_path();

    let (ok, msg) = Verifiers::sigstore_js(&bundle, &key, Some(&sbom));
    assert!(ok, "sigstore-js must accept the node's bundle: {msg}");
    let (ok, msg) = Verifiers::openssl(&envelope, &key);
    assert!(ok, "openssl must accept the node's envelope: {msg}");

    // Tampered payload.
    let mut b: Value =
        serde_json::from_slice(&std::fs::read(&bundle).expect("read")).expect("json");
    tamper_payload(&mut b["dsseEnvelope"]);
    let tampered_bundle = tmp.path().join("tampered.bundle.json");
    std::fs::write(&tampered_bundle, serde_json::to_vec(&b).expect("json")).expect("write");
    let (ok, msg) = Verifiers::sigstore_js(&tampered_bundle, &key, None);
    assert!(
        !ok && msg.contains("SIGNATURE"),
        "sigstore-js must reject a tampered payload: {msg}"
    );

    let mut e: Value =
        serde_json::from_slice(&std::fs::read(&envelope).expect("read")).expect("json");
    tamper_payload(&mut e);
    let tampered_envelope = tmp.path().join("tampered.dsse.json");
    std::fs::write(&tampered_envelope, serde_json::to_vec(&e).expect("json")).expect("write");
    let (ok, msg) = Verifiers::openssl(&tampered_envelope, &key);
    assert!(!ok, "openssl must reject a tampered payload: {msg}");
    // Our own verifier agrees with both.
    assert_eq!(
        stella(&[
            "verify",
            s(&sbom),
            "--bundle",
            s(&tampered_bundle),
            "--key",
            s(&key)
        ])
        .status
        .code(),
        Some(1)
    );

    // Wrong key (also with the bundle's hint rewritten, so the signature check itself must fail).
    let other = stella_signer::FileKeySigner::generate().expect("key");
    let other_key = tmp.path().join("other.pub.pem");
    std::fs::write(&other_key, other.public_key().to_pem()).expect("write");
    let (ok, msg) = Verifiers::sigstore_js(&bundle, &other_key, None);
    assert!(!ok, "sigstore-js must reject a wrong key: {msg}");
    let mut rehinted: Value =
        serde_json::from_slice(&std::fs::read(&bundle).expect("read")).expect("json");
    rehinted["verificationMaterial"]["publicKey"]["hint"] =
        Value::String(other.public_key().hint());
    let rehinted_path = tmp.path().join("rehinted.json");
    std::fs::write(&rehinted_path, serde_json::to_vec(&rehinted).expect("json")).expect("write");
    let (ok, msg) = Verifiers::sigstore_js(&rehinted_path, &other_key, None);
    assert!(
        !ok && msg.contains("SIGNATURE"),
        "sigstore-js must reject a signature by another key: {msg}"
    );
    let (ok, msg) = Verifiers::openssl(&envelope, &other_key);
    assert!(!ok, "openssl must reject a wrong key: {msg}");
}

#[test]
fn the_golden_vector_bundle_verifies_with_sigstore_js() {
    // The byte-pinned golden bundle is also a valid Sigstore bundle for an independent verifier.
    let vector: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("signer/tests/vectors/golden/sbom-file-key.json"))
            .expect("vector"),
    )
    .expect("json");
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("golden.bundle.json");
    std::fs::write(
        &bundle,
        vector["expected"]["bundleCanonical"]
            .as_str()
            .expect("bundle"),
    )
    .expect("write");
    let key =
        stella_signer::FileKeySigner::from_pkcs8_pem(vector["keyPkcs8Pem"].as_str().expect("key"))
            .expect("key");
    let key_path = tmp.path().join("golden.pub.pem");
    std::fs::write(&key_path, key.public_key().to_pem()).expect("write");
    let (ok, msg) = Verifiers::sigstore_js(&bundle, &key_path, None);
    assert!(ok, "{msg}");
}

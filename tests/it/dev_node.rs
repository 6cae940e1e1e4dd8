//! The main job: a dev node signs SBOMs and reports through the CLI; `stella verify` checks them
//! offline; the key and the audit chain survive restarts.

use stella_tests::{NodeProcess, audit_records, audit_verify, repo_root, stella};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn sign_sbom_and_verify_offline_with_the_cli() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let sbom = repo_root().join("examples/sbom.cdx.json");
    let (bundle, envelope) = (
        tmp.path().join("sbom.bundle.json"),
        tmp.path().join("sbom.dsse.json"),
    );
    let creds = node.dev_dir();

    let out = stella(&[
        "sign",
        "sbom",
        s(&sbom),
        "--credentials",
        s(&creds),
        "--bundle",
        s(&bundle),
        "--envelope",
        s(&envelope),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json response");
    assert_eq!(response["signerIdentity"]["mode"], "keyful");
    assert_eq!(response["signerIdentity"]["algorithm"], "ECDSA_P256_SHA256");
    assert!(
        response["auditId"]
            .as_str()
            .is_some_and(|id| id.starts_with("aud-"))
    );
    assert_eq!(response["bundles"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        response["bundleSha256"],
        response["bundles"][0]["bundleSha256"]
    );

    let key = node.public_key_path();
    let ok = stella(&[
        "verify",
        s(&sbom),
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
        "--predicate-type",
        "stella.ops/sbom@v1",
        "--output",
        "json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(report["verified"], true);
    assert_eq!(
        report["bundleSha256"], response["bundleSha256"],
        "the bundle hash is reproducible from the file"
    );
    assert!(
        stella(&[
            "verify",
            s(&sbom),
            "--envelope",
            s(&envelope),
            "--key",
            s(&key)
        ])
        .status
        .success()
    );

    // The predicate describes the SBOM: format, digest, component count (nested included).
    let bundle_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).expect("bundle")).expect("json");
    let payload = base64_decode(
        bundle_json["dsseEnvelope"]["payload"]
            .as_str()
            .expect("payload"),
    );
    let statement: serde_json::Value = serde_json::from_slice(&payload).expect("statement");
    assert_eq!(statement["predicate"]["format"], "cyclonedx-1.6");
    assert_eq!(statement["predicate"]["componentCount"], 5);
    assert_eq!(statement["subject"][0]["name"], "sbom.cdx.json");

    // Wrong artifact, wrong predicate type, wrong key: exit 1 with a reason.
    let report_file = repo_root().join("examples/report.json");
    let wrong = stella(&[
        "verify",
        s(&report_file),
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not a subject"));
    let wrong_type = stella(&[
        "verify",
        s(&sbom),
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
        "--predicate-type",
        "stella.ops/report@v1",
    ]);
    assert_eq!(wrong_type.status.code(), Some(1));
    let other_key = tmp.path().join("other.pub.pem");
    std::fs::write(
        &other_key,
        stella_signer::FileKeySigner::generate()
            .expect("key")
            .public_key()
            .to_pem(),
    )
    .expect("write");
    let wrong_key = stella(&[
        "verify",
        s(&sbom),
        "--bundle",
        s(&bundle),
        "--key",
        s(&other_key),
        "--output",
        "json",
    ]);
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_key.stdout).contains("hint_mismatch"));
    // Missing files are a different failure (exit 2), not a verification verdict.
    assert_eq!(
        stella(&[
            "verify",
            s(&sbom),
            "--bundle",
            "/nonexistent",
            "--key",
            s(&key)
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn sign_report_with_explicit_subject_and_policy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let report = repo_root().join("examples/report.json");
    let bundle = tmp.path().join("report.bundle.json");
    let digest = format!("sha256:{}", "9".repeat(64));
    let policy = format!("sha256:{}", "4".repeat(64));
    let subject = format!("registry.example/acme/payments@{digest}");
    let out = stella(&[
        "sign",
        "report",
        s(&report),
        "--subject",
        &subject,
        "--policy-digest",
        &policy,
        "--view-set",
        "ops,audit",
        "--credentials",
        s(&node.dev_dir()),
        "--bundle",
        s(&bundle),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = node.public_key_path();
    let ok = stella(&[
        "verify",
        &digest,
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
        "--predicate-type",
        "stella.ops/report@v1",
        "--output",
        "json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let page = stella_tests::audit_api(&node.client(), "limit=1000");
    let last = page["records"]
        .as_array()
        .and_then(|r| r.last())
        .expect("an audit record")
        .clone();
    assert_eq!(last["predicateType"], "stella.ops/report@v1");
    assert_eq!(last["subjectDigests"][0], digest);
    assert_eq!(last["decision"], "signed");
    // A report without any policy metadata is refused by the CLI before it reaches the node.
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, "{}").expect("write");
    let refused = stella(&[
        "sign",
        "report",
        s(&bare),
        "--credentials",
        s(&node.dev_dir()),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("policy digest"));
}

#[test]
fn key_and_audit_chain_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let sbom = repo_root().join("examples/sbom.cdx.json");

    let node = NodeProcess::start_dev(&data);
    let first_key = std::fs::read_to_string(node.public_key_path()).expect("pub key");
    let first = node.credentials();
    for _ in 0..3 {
        assert!(
            stella(&[
                "sign",
                "sbom",
                s(&sbom),
                "--credentials",
                s(&node.dev_dir())
            ])
            .status
            .success()
        );
    }
    assert!(node.stop().success(), "SIGTERM is a clean shutdown");

    let node = NodeProcess::start_dev(&data);
    assert_eq!(
        std::fs::read_to_string(node.public_key_path()).expect("pub key"),
        first_key,
        "the dev key is kept"
    );
    let again = node.credentials();
    let secret = |c: &stella_tests::Credentials| {
        c.authority
            .as_ref()
            .map(|a| (a.client_id.clone(), a.client_secret.clone()))
    };
    assert_eq!(
        secret(&again),
        secret(&first),
        "the dev client secret is kept"
    );
    assert_eq!(
        again.dpop_key_pem, first.dpop_key_pem,
        "the DPoP key is kept"
    );
    let out = stella(&[
        "sign",
        "sbom",
        s(&sbom),
        "--credentials",
        s(&node.dev_dir()),
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        response["auditId"], "aud-0000000000000004",
        "the chain continues after a restart"
    );
    assert!(node.stop().success());

    let summary = audit_verify(&data).expect("chain verifies");
    assert_eq!(summary["records"], 4);
    let records = audit_records(&data);
    assert_eq!(records[3]["prevHash"], records[2]["hash"]);
    for field in [
        "time",
        "tenant",
        "callerSubject",
        "issuer",
        "subjectDigests",
        "predicateType",
        "keyId",
        "keySource",
        "signingMode",
        "poeState",
        "decision",
        "reason",
        "bundleSha256",
    ] {
        assert!(
            !records[3][field].is_null(),
            "audit records carry `{field}`"
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[test]
fn an_export_manifest_is_signed_deterministically_and_verifies_offline() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let creds = node.dev_dir();
    let sbom = std::fs::read(repo_root().join("examples/sbom.cdx.json")).expect("sbom");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&sbom));
    let manifest = tmp.path().join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&serde_json::json!({
            "metadata": {"profile": "mirror", "source": "scanner-7"},
            "files": [{"path": "sboms/sbom.cdx.json", "digest": format!("sha256:{digest}"),
                       "mediaType": "application/vnd.cyclonedx+json", "size": sbom.len()}],
            "exportId": "run-1",
            "createdAt": "2026-12-01T10:00:00Z"
        }))
        .expect("json"),
    )
    .expect("manifest");
    let sign_into = |out: &std::path::Path| {
        let signed = stella(&[
            "sign",
            "export",
            s(&manifest),
            "--out",
            s(out),
            "--credentials",
            s(&creds),
        ]);
        assert!(
            signed.status.success(),
            "{}",
            String::from_utf8_lossy(&signed.stderr)
        );
    };
    let (first, second) = (tmp.path().join("out-1"), tmp.path().join("out-2"));
    sign_into(&first);
    sign_into(&second);

    // export.json is the canonical manifest, byte for byte the same each time.
    let export = std::fs::read(first.join("export.json")).expect("export.json");
    assert_eq!(
        export,
        std::fs::read(second.join("export.json")).expect("again")
    );
    assert!(
        export.starts_with(br#"{"createdAt":"2026-12-01T10:00:00Z","exportId":"run-1","files":"#)
    );
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("provenance.json")).expect("prov"))
            .expect("provenance json");
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("provenance.json")).expect("prov"))
            .expect("provenance json");
    assert_eq!(
        provenance["manifestSha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&export))
    );
    assert_eq!(
        provenance["statementSha256"], again["statementSha256"],
        "same statement"
    );
    assert_eq!(provenance["exportId"], "run-1");
    assert_eq!(provenance["keySource"], "file");
    assert!(provenance["logIndex"].is_u64(), "{provenance}");
    assert!(
        provenance["auditId"]
            .as_str()
            .is_some_and(|a| a.starts_with("aud-"))
    );

    // Offline: `stella verify` over export.json, and sigstore-js over the bundle.
    let key = node.public_key_path();
    let bundle = first.join("export.sigstore.json");
    let ok = stella(&[
        "verify",
        s(&first.join("export.json")),
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
        "--predicate-type",
        "stella.ops/export@v1",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let (ok, out) = stella_tests::Verifiers::sigstore_js(&bundle, &key, None);
    assert!(ok, "sigstore-js: {out}");
    let tampered = tmp.path().join("export-tampered.json");
    std::fs::write(
        &tampered,
        String::from_utf8_lossy(&export).replace("run-1", "run-2"),
    )
    .expect("tampered");
    let refused = stella(&[
        "verify",
        s(&tampered),
        "--bundle",
        s(&bundle),
        "--key",
        s(&key),
    ]);
    assert!(
        !refused.status.success(),
        "a changed manifest does not verify"
    );

    // A manifest that escapes its directory is refused before anything is signed.
    std::fs::write(
        &manifest,
        serde_json::json!({"exportId": "run-x", "files": [{"path": "../etc/passwd",
            "digest": format!("sha256:{digest}"), "mediaType": "text/plain"}]})
        .to_string(),
    )
    .expect("bad manifest");
    let bad = stella(&[
        "sign",
        "export",
        s(&manifest),
        "--out",
        s(&tmp.path().join("out-bad")),
        "--credentials",
        s(&creds),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_request"));
}

/// `stella offline-kit build`: the archive is byte-identical from the same inputs, the signer
/// signs its manifest, and `stella verify` (and sigstore-js) check the archive offline; a
/// changed archive fails.
#[test]
fn the_offline_kit_is_deterministic_and_verifies_offline() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let creds = node.dev_dir();
    // Small stand-ins for the binaries keep the test fast; the packing is the same.
    let bins = tmp.path().join("bin");
    std::fs::create_dir_all(&bins).expect("bin");
    for name in ["stella-signer", "stella"] {
        std::fs::write(bins.join(name), format!("#!/bin/sh\necho {name}\n")).expect("bin");
    }
    let deploy = repo_root().join("deploy");
    let build = |out: &std::path::Path, unsigned: bool| {
        let mut args = vec![
            "offline-kit",
            "build",
            "--out",
            s(out),
            "--bin-dir",
            s(&bins),
            "--deploy-dir",
            s(&deploy),
            "--credentials",
            s(&creds),
        ];
        if unsigned {
            args.push("--unsigned");
        }
        let built = stella(&args);
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
    };
    let (first, second) = (tmp.path().join("kit-1"), tmp.path().join("kit-2"));
    build(&first, false);
    build(&second, true);
    let tar = |dir: &std::path::Path| dir.join("stella-signer-offline-kit.tar");
    assert_eq!(
        std::fs::read(tar(&first)).expect("kit"),
        std::fs::read(tar(&second)).expect("kit again"),
        "byte-identical archives"
    );

    let key = node.public_key_path();
    let bundle = first.join("export.sigstore.json");
    let verify = |artifact: &std::path::Path| {
        stella(&[
            "verify",
            s(artifact),
            "--bundle",
            s(&bundle),
            "--key",
            s(&key),
            "--predicate-type",
            "stella.ops/export@v1",
        ])
    };
    let ok = verify(&tar(&first));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let (ok, out) = stella_tests::Verifiers::sigstore_js(&bundle, &key, Some(&tar(&first)));
    assert!(ok, "sigstore-js: {out}");
    // A changed archive is not the signed one.
    let mut bytes = std::fs::read(tar(&first)).expect("kit");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tampered = tmp.path().join("tampered.tar");
    std::fs::write(&tampered, bytes).expect("write");
    assert!(!verify(&tampered).status.success());
}

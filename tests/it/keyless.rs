//! Keyless signing: an ephemeral key per request, a short-lived certificate from a
//! Fulcio-protocol test CA (a separate HTTPS server speaking `POST /api/v2/signingCert`), the
//! leaf in the Sigstore bundle. Checked independently with openssl: the leaf chains to the CA,
//! carries the identity and the issuer extension, and its key verifies the DSSE signature.
//! Every keyless signature is timestamped by an RFC 3161 TSA (OpenSSL's `ts -reply` in the
//! test), so sigstore-js and `stella verify --trusted-root` check the bundle offline against the
//! exported `trusted_root.json`: chain at the vouched-for time, identity and issuer.

use serde_json::Value;
use stella_api::SignDsseRequest;
use stella_tests::{
    NodeProcess, PLAN, Services, TsaProcess, Verifiers, audit_api, client_for, sbom_request_for,
    start_configured_node, stella, stella_ok,
};

#[test]
fn keyless_bundles_carry_a_fulcio_leaf_that_independent_verifiers_accept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    let identity = "signer@stella.test";
    std::fs::write(dir.join("identity.jwt"), services.identity_token(identity)).expect("token");
    let key = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), key.to_pkcs8_pem());
    std::fs::write(dir.join("fulcio-chain.pem"), services.fulcio.ca_pem()).expect("chain");
    let tsa = TsaProcess::start();
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing]\nkey_file = \"{d}/signing.pem\"\n\
             [signing.keyless]\nfulcio_url = \"{fulcio}\"\nidentity_token_file = \"{d}/identity.jwt\"\nca_cert = \"{ca}\"\nca_chain = \"{d}/fulcio-chain.pem\"\n\
             [signing.keyless.tsa]\nurl = \"{tsa}\"\nchain = \"{chain}\"\n",
            d = dir.display(),
            fulcio = services.fulcio_url(),
            ca = services.ca_path().display(),
            tsa = tsa.url,
            chain = tsa.chain_path.display(),
        ),
    );
    let http = reqwest::blocking::Client::new();
    for path in [
        "/dev/fulcio/api/v2/signingCert",
        "/dev/tsa/api/v1/timestamp",
    ] {
        let answer = http.post(format!("{}{path}", node.url)).body("x").send();
        assert_eq!(
            answer.expect("post").status().as_u16(),
            404,
            "no dev stand-in outside dev mode: {path}"
        );
    }
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let mut body = sbom_request_for(&client);
    body["options"] = serde_json::json!({"signingMode": "keyless"});
    let request: SignDsseRequest = serde_json::from_value(body).expect("request");
    let first = client.sign_dsse(&request).expect("keyless signature");
    let second = client.sign_dsse(&request).expect("another");
    assert_eq!(first.signer_identity.mode, "keyless");
    assert_eq!(first.signer_identity.key_source, "keyless");
    assert_eq!(
        first.signer_identity.certificate_chain.len(),
        2,
        "leaf and CA"
    );
    assert_ne!(
        first.signer_identity.key_id, second.signer_identity.key_id,
        "a fresh key per signature"
    );
    let bundle: Value = serde_json::from_str(first.bundles[0].bundle.get()).expect("bundle");
    assert!(bundle["verificationMaterial"]["certificate"]["rawBytes"].is_string());
    assert!(bundle["verificationMaterial"].get("publicKey").is_none());

    let chain = &first.signer_identity.certificate_chain;
    std::fs::write(dir.join("leaf.pem"), &chain[0]).expect("leaf");
    std::fs::write(dir.join("ca.pem"), &chain[1]).expect("ca");
    std::fs::write(dir.join("fulcio-root.pem"), services.fulcio.ca_pem()).expect("root");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = openssl(&["verify", "-CAfile", "fulcio-root.pem", "leaf.pem"]);
    assert!(ok, "the leaf chains to the test Fulcio CA: {out}");
    let (_, text) = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains(&format!("email:{identity}")), "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
    assert!(text.contains("Code Signing"), "{text}");
    assert!(text.contains("1.3.6.1.4.1.57264.1.8"), "{text}");
    assert!(
        text.contains(services.authority.issuer()),
        "the OIDC issuer is in the leaf: {text}"
    );
    let (ok, pubkey) = openssl(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    assert!(ok);
    std::fs::write(dir.join("leaf.pub.pem"), pubkey).expect("pub");
    let envelope = dir.join("envelope.json");
    std::fs::write(&envelope, first.envelope.get()).expect("envelope");
    let (ok, out) = Verifiers::openssl(&envelope, &dir.join("leaf.pub.pem"));
    assert!(
        ok,
        "openssl verifies the DSSE signature with the leaf's key: {out}"
    );
    let other = tempfile::tempdir().expect("tmp");
    let stranger = Services::start(other.path());
    std::fs::write(dir.join("other-root.pem"), stranger.fulcio.ca_pem()).expect("root");
    let (ok, _) = openssl(&["verify", "-CAfile", "other-root.pem", "leaf.pem"]);
    assert!(!ok, "another CA does not vouch for the leaf");

    // Offline, with the exported trust root: sigstore-js and `stella verify` both need the RFC
    // 3161 timestamp, the chain at its time, and the identity and issuer asked for.
    let mut operator = services.credentials("operator", PLAN, &node.url);
    operator.server = node.url.clone();
    let ops = dir.join("operator.json");
    std::fs::write(&ops, serde_json::to_vec(&operator).expect("json")).expect("ops");
    let kit = dir.join("kit");
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();
    stella_ok(&["trust", "export", "-o", &s(&kit), "--credentials", &s(&ops)]);
    let root_path = kit.join("trusted_root.json");
    let root: Value =
        serde_json::from_slice(&std::fs::read(&root_path).expect("root")).expect("json");
    assert_eq!(
        root["timestampAuthorities"].as_array().map(Vec::len),
        Some(1),
        "{root}"
    );
    let bundle_path = dir.join("keyless.bundle.json");
    std::fs::write(&bundle_path, first.bundles[0].bundle.get()).expect("bundle");
    let token = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
        ["signedTimestamp"]
        .as_str()
        .map(|t| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t));
    assert!(
        matches!(&token, Some(Ok(t)) if stella_signer::timestamp::is_canonical(t)),
        "OpenSSL's token is embedded, in strict DER: {bundle}"
    );
    let issuer = services.authority.issuer().to_owned();
    let (ok, out) =
        Verifiers::sigstore_js_keyless(&bundle_path, &root_path, identity, &issuer, None);
    assert!(ok, "sigstore-js verifies the keyless bundle: {out}");
    let (ok, out) = Verifiers::sigstore_js_keyless(
        &bundle_path,
        &root_path,
        "mallory@stella.test",
        &issuer,
        None,
    );
    assert!(!ok, "another identity is refused: {out}");
    let digest = format!("sha256:{}", request.subject[0].digest["sha256"].clone());
    let verify = |bundle: &std::path::Path, root: &std::path::Path, who: &str, iss: &str| {
        let out = stella(&[
            "verify",
            &digest,
            "--bundle",
            &s(bundle),
            "--trusted-root",
            &s(root),
            "--certificate-identity",
            who,
            "--certificate-oidc-issuer",
            iss,
            "--output",
            "json",
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), report)
    };
    let (code, report) = verify(&bundle_path, &root_path, identity, &issuer);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["certificateIdentity"], identity);
    assert!(report["signedAt"].is_string(), "{report}");
    let (code, report) = verify(&bundle_path, &root_path, "mallory@stella.test", &issuer);
    assert_eq!(
        (code, report["kind"].as_str()),
        (Some(1), Some("certificate")),
        "{report}"
    );
    let (code, report) = verify(&bundle_path, &root_path, identity, "https://evil.example");
    assert_eq!(
        (code, report["kind"].as_str()),
        (Some(1), Some("certificate")),
        "{report}"
    );
    // As a user asks for it: `stella sign sbom --mode keyless`, then `stella verify` offline.
    let mut tenant = services.credentials("tenant-a-ci", PLAN, &node.url);
    tenant.server = node.url.clone();
    let tenant_file = dir.join("tenant.json");
    std::fs::write(&tenant_file, serde_json::to_vec(&tenant).expect("json")).expect("tenant");
    let sbom = stella_tests::repo_root().join("examples/sbom.cdx.json");
    let cli_bundle = dir.join("cli-keyless.bundle.json");
    stella_ok(&[
        "sign",
        "sbom",
        &s(&sbom),
        "--mode",
        "keyless",
        "--credentials",
        &s(&tenant_file),
        "--bundle",
        &s(&cli_bundle),
    ]);
    let cli_verified = stella(&[
        "verify",
        &s(&sbom),
        "--bundle",
        &s(&cli_bundle),
        "--trusted-root",
        &s(&root_path),
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        &issuer,
    ]);
    assert!(
        cli_verified.status.success(),
        "{}",
        String::from_utf8_lossy(&cli_verified.stdout)
    );
    let (ok, out) =
        Verifiers::sigstore_js_keyless(&cli_bundle, &root_path, identity, &issuer, Some(&sbom));
    assert!(ok, "sigstore-js verifies the CLI's keyless bundle: {out}");

    // A trust root whose TSA is someone else's: no trusted time, so no verdict on the chain.
    let stranger_tsa = TsaProcess::start();
    let mut foreign = root.clone();
    foreign["timestampAuthorities"][0]["certChain"]["certificates"] =
        serde_json::json!(pem_chain(&stranger_tsa.chain_path));
    let foreign_path = dir.join("foreign_root.json");
    std::fs::write(&foreign_path, serde_json::to_vec(&foreign).expect("json")).expect("root");
    let (code, report) = verify(&bundle_path, &foreign_path, identity, &issuer);
    assert_eq!(
        (code, report["kind"].as_str()),
        (Some(1), Some("timestamp")),
        "{report}"
    );
    let (ok, out) =
        Verifiers::sigstore_js_keyless(&bundle_path, &foreign_path, identity, &issuer, None);
    assert!(
        !ok,
        "sigstore-js refuses a timestamp from an untrusted TSA: {out}"
    );
    // A bundle without its timestamp cannot be judged offline.
    let mut bare = bundle.clone();
    bare["verificationMaterial"]
        .as_object_mut()
        .expect("material")
        .remove("timestampVerificationData");
    let bare_path = dir.join("bare.bundle.json");
    std::fs::write(&bare_path, serde_json::to_vec(&bare).expect("json")).expect("bundle");
    let (code, report) = verify(&bare_path, &root_path, identity, &issuer);
    assert_eq!(
        (code, report["kind"].as_str()),
        (Some(1), Some("timestamp")),
        "{report}"
    );

    // A request may ask for both: the node's key and a keyless signature in one envelope, one
    // bundle per signature, each verified by sigstore-js its own way.
    let mut both = request.clone();
    both.options.signing_mode = Some("keyful+keyless".into());
    let mixed = client.sign_dsse(&both).expect("keyful+keyless");
    let envelope: Value = serde_json::from_str(mixed.envelope.get()).expect("envelope");
    assert_eq!(
        envelope["signatures"].as_array().map(Vec::len),
        Some(2),
        "{envelope}"
    );
    assert_eq!(mixed.bundles.len(), 2);
    assert_eq!(mixed.bundles[0].key_id, key.public_key().key_id());
    let keyful_path = dir.join("mixed-keyful.bundle.json");
    std::fs::write(&keyful_path, mixed.bundles[0].bundle.get()).expect("bundle");
    std::fs::write(dir.join("node.pub.pem"), key.public_key().to_pem()).expect("key");
    let (ok, out) = Verifiers::sigstore_js(&keyful_path, &dir.join("node.pub.pem"), None);
    assert!(ok, "the keyful bundle of a mixed signing: {out}");
    let keyless_path = dir.join("mixed-keyless.bundle.json");
    std::fs::write(&keyless_path, mixed.bundles[1].bundle.get()).expect("bundle");
    let (ok, out) =
        Verifiers::sigstore_js_keyless(&keyless_path, &root_path, identity, &issuer, None);
    assert!(ok, "the keyless bundle of a mixed signing: {out}");

    // A rejected identity (Fulcio answers 401: no retry) makes keyless signing unavailable;
    // the failure is audited and the quota it reserved is given back.
    std::fs::write(dir.join("identity.jwt"), "not.a.token").expect("token");
    stella_tests::refused_with(client.sign_dsse(&request), "signing_unavailable");
    std::fs::write(dir.join("identity.jwt"), services.identity_token(identity)).expect("token");
    client
        .sign_dsse(&request)
        .expect("a valid identity signs again");

    // Audited with the certificate serial; keyful requests still use the node's key.
    let keyful: SignDsseRequest =
        serde_json::from_value(sbom_request_for(&client)).expect("request");
    assert_eq!(
        client
            .sign_dsse(&keyful)
            .expect("keyful")
            .signer_identity
            .key_id,
        key.public_key().key_id()
    );
    let page = audit_api(&client_for(&node.url, operator), "limit=100");
    let record = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["auditId"] == first.audit_id.as_str())
        .cloned()
        .expect("record");
    assert_eq!(record["signingMode"], "keyless");
    assert_eq!(record["keySource"], "keyless");
    assert!(
        record["certificateSerial"]
            .as_str()
            .is_some_and(|s| s.len() >= 16),
        "{record}"
    );
}

/// As a new user meets keyless: a fresh `serve --dev` signs keyless through the CLI with no
/// set-up (its dev Fulcio and dev TSA answer on its own listener), its trust export holds both
/// stand-ins, and `stella verify --trusted-root` and sigstore-js accept the bundle. What the
/// stand-ins issue is checked from outside as a strict verifier would: the leaf and the token
/// re-encode byte for byte, the leaf has Fulcio's extensions, openssl verifies the token.
#[test]
fn a_fresh_dev_node_signs_keyless_and_independent_verifiers_accept_it() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use stella_node::dev::DEV_KEYLESS_IDENTITY;

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();
    let data = dir.join("data");
    let node = NodeProcess::start_dev(&data);
    let issuer = format!("{}/dev/authority", node.url);
    let creds = s(&node.dev_dir());
    let sbom = stella_tests::repo_root().join("examples/sbom.cdx.json");
    let (bundle_path, envelope_path) = (
        dir.join("keyless.bundle.json"),
        dir.join("keyless.dsse.json"),
    );
    let out = stella_ok(&[
        "sign",
        "sbom",
        &s(&sbom),
        "--mode",
        "keyless",
        "--credentials",
        &creds,
        "--bundle",
        &s(&bundle_path),
        "--envelope",
        &s(&envelope_path),
        "--output",
        "json",
    ]);
    let response: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(response["signerIdentity"]["mode"], "keyless", "{response}");
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(&envelope_path).expect("envelope")).expect("json");
    assert_eq!(envelope["signatures"].as_array().map(Vec::len), Some(1));
    assert!(
        envelope["signatures"][0].get("keyid").is_none(),
        "a keyless signature names no key, in the envelope as in the bundle: {envelope}"
    );
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(&bundle_path).expect("bundle")).expect("json");
    assert!(
        bundle["dsseEnvelope"]["signatures"][0]
            .get("keyid")
            .is_none()
    );
    assert!(
        node.logs()
            .iter()
            .any(|l| l.contains("dev mode: keyless signing") && l.contains("WARN")),
        "the node says the stand-ins are dev-only"
    );

    // Offline, with the node's own trust export.
    let kit = dir.join("kit");
    stella_ok(&["trust", "export", "-o", &s(&kit), "--credentials", &creds]);
    let root_path = kit.join("trusted_root.json");
    let root: Value =
        serde_json::from_slice(&std::fs::read(&root_path).expect("root")).expect("json");
    assert_eq!(
        root["certificateAuthorities"].as_array().map(Vec::len),
        Some(1),
        "{root}"
    );
    assert_eq!(
        root["timestampAuthorities"].as_array().map(Vec::len),
        Some(1),
        "{root}"
    );
    let verified = stella(&[
        "verify",
        &s(&sbom),
        "--bundle",
        &s(&bundle_path),
        "--trusted-root",
        &s(&root_path),
        "--certificate-identity",
        DEV_KEYLESS_IDENTITY,
        "--certificate-oidc-issuer",
        &issuer,
        "--predicate-type",
        "stella.ops/sbom@v1",
    ]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let (ok, out) = Verifiers::sigstore_js_keyless(
        &bundle_path,
        &root_path,
        DEV_KEYLESS_IDENTITY,
        &issuer,
        Some(&sbom),
    );
    assert!(
        ok,
        "sigstore-js verifies the dev node's keyless bundle: {out}"
    );
    let (ok, out) = Verifiers::sigstore_js_keyless(
        &bundle_path,
        &root_path,
        "mallory@dev.invalid",
        &issuer,
        Some(&sbom),
    );
    assert!(!ok, "and refuses another identity: {out}");

    // The leaf, strictly: DER that re-encodes byte for byte, Fulcio's extensions.
    let b64 = |v: &Value| {
        STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("base64")
    };
    let leaf = b64(&bundle["verificationMaterial"]["certificate"]["rawBytes"]);
    let parsed = <x509_cert::Certificate as der::Decode>::from_der(&leaf).expect("leaf");
    assert_eq!(
        der::Encode::to_der(&parsed).expect("der"),
        leaf,
        "the leaf is strict DER"
    );
    let oids: Vec<String> = parsed
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .map(|e| e.extn_id.to_string())
        .collect();
    for (oid, what) in [
        ("2.5.29.14", "subject key identifier"),
        ("2.5.29.35", "authority key identifier"),
        ("2.5.29.15", "key usage"),
        ("2.5.29.37", "extended key usage"),
        ("2.5.29.17", "subject alternative name"),
        ("1.3.6.1.4.1.57264.1.8", "OIDC issuer"),
    ] {
        assert!(
            oids.iter().any(|o| o == oid),
            "the leaf has a {what}: {oids:?}"
        );
    }
    assert!(
        !oids.iter().any(|o| o == "2.5.29.19"),
        "no basic constraints, as Sigstore's Fulcio leaves: {oids:?}"
    );
    let pem = |der: &[u8]| {
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(der)
        )
    };
    std::fs::write(dir.join("leaf.pem"), pem(&leaf)).expect("leaf");
    let certs = |entry: &Value| -> String {
        entry["certChain"]["certificates"]
            .as_array()
            .expect("chain")
            .iter()
            .map(|c| pem(&b64(&c["rawBytes"])))
            .collect()
    };
    std::fs::write(
        dir.join("fulcio-ca.pem"),
        certs(&root["certificateAuthorities"][0]),
    )
    .expect("ca");
    let tsa_chain = certs(&root["timestampAuthorities"][0]);
    let tsa_root = tsa_chain
        .rsplit_once("-----BEGIN")
        .map(|(_, r)| format!("-----BEGIN{r}"))
        .expect("root");
    std::fs::write(dir.join("tsa-root.pem"), tsa_root).expect("tsa root");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = openssl(&["verify", "-CAfile", "fulcio-ca.pem", "leaf.pem"]);
    assert!(
        ok,
        "openssl chains the leaf to the exported dev Fulcio CA: {out}"
    );

    // The timestamp token, strictly: canonical DER, and a valid RFC 3161 token for openssl.
    let reply = b64(
        &bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"],
    );
    assert!(
        stella_signer::timestamp::is_canonical(&reply),
        "the token decodes and re-encodes byte for byte (every SET OF sorted)"
    );
    std::fs::write(dir.join("token.tsr"), &reply).expect("token");
    let signature = b64(&envelope["signatures"][0]["sig"]);
    let imprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&signature));
    let (ok, out) = openssl(&[
        "ts",
        "-verify",
        "-in",
        "token.tsr",
        "-digest",
        &imprint,
        "-CAfile",
        "tsa-root.pem",
    ]);
    assert!(ok, "openssl ts -verify accepts the dev TSA's token: {out}");

    // A restart keeps both stand-ins' keys: the old bundle verifies with a new export.
    node.stop();
    let node = NodeProcess::start_dev(&data);
    let again = dir.join("kit-again");
    stella_ok(&[
        "trust",
        "export",
        "-o",
        &s(&again),
        "--credentials",
        &s(&node.dev_dir()),
    ]);
    let root_again: Value =
        serde_json::from_slice(&std::fs::read(again.join("trusted_root.json")).expect("root"))
            .expect("json");
    assert_eq!(root_again, root, "the same trust root after a restart");
}

/// The certificates of a PEM file as trusted-root `rawBytes` entries.
fn pem_chain(path: &std::path::Path) -> Vec<Value> {
    use base64::Engine;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).expect("chain");
    rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|c| {
            let der = c.expect("certificate");
            serde_json::json!({"rawBytes": base64::engine::general_purpose::STANDARD.encode(der.as_ref())})
        })
        .collect()
}

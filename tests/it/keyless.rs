//! Keyless signing: an ephemeral key per request, a short-lived certificate from a
//! Fulcio-protocol test CA (a separate HTTPS server speaking `POST /api/v2/signingCert`), the
//! leaf in the Sigstore bundle. Checked independently with openssl: the leaf chains to the CA,
//! carries the identity and the issuer extension, and its key verifies the DSSE signature.
//! (sigstore-js also needs a trusted timestamp for certificate bundles — a Rekor entry or an
//! RFC 3161 token — which this signer does not obtain yet; see ADR 0010.)

use serde_json::Value;
use stella_api::SignDsseRequest;
use stella_tests::{
    PLAN, Services, Verifiers, audit_api, client_for, sbom_request_for, start_configured_node,
};

#[test]
fn keyless_bundles_carry_a_fulcio_leaf_that_independent_verifiers_accept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    let identity = "signer@stella.test";
    std::fs::write(dir.join("identity.jwt"), services.identity_token(identity)).expect("token");
    let key = stella_signer::FileKeySigner::generate().expect("key");
    std::fs::write(dir.join("signing.pem"), key.to_pkcs8_pem()).expect("key");
    std::fs::write(dir.join("fulcio-chain.pem"), services.fulcio.ca_pem()).expect("chain");
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing]\nkey_file = \"{d}/signing.pem\"\n\
             [signing.keyless]\nfulcio_url = \"{fulcio}\"\nidentity_token_file = \"{d}/identity.jwt\"\nca_cert = \"{ca}\"\nca_chain = \"{d}/fulcio-chain.pem\"\n",
            d = dir.display(),
            fulcio = services.fulcio_url(),
            ca = services.ca_path().display(),
        ),
    );
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

    // A rejected identity (Fulcio answers 401: no retry) makes keyless signing unavailable;
    // the failure is audited and the quota it reserved is given back.
    std::fs::write(dir.join("identity.jwt"), "not.a.token").expect("token");
    let refused = match client.sign_dsse(&request) {
        Err(stella_api::ClientError::Problem(p)) => p,
        other => panic!("expected a problem, got {other:?}"),
    };
    assert_eq!(
        refused.code.as_str(),
        "signing_unavailable",
        "{}",
        refused.detail
    );
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
    let mut operator = services.credentials("operator", PLAN, &node.url);
    operator.server = node.url.clone();
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

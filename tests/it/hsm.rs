//! A node whose signing key lives on a PKCS#11 token (SoftHSM2, created fresh per run by
//! `scripts/softhsm-token.sh`): it signs through the same pipeline, the audit log names the key
//! source, and the bundle verifies with sigstore-js against the token's public key.

use stella_api::SignDsseRequest;
use stella_tests::{
    PLAN, Services, Verifiers, client_for, sbom_request_for, start_configured_node,
    start_node_config,
};

#[test]
fn a_node_signs_with_a_non_extractable_key_on_a_pkcs11_token() {
    let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("STELLA_TEST_PKCS11_MODULE"),
        std::env::var("STELLA_TEST_PKCS11_TOKEN"),
        std::env::var("STELLA_TEST_PKCS11_PIN"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the HSM test: scripts/test.sh creates the SoftHSM2 token"
        );
        eprintln!("no SoftHSM2 token (run scripts/test.sh): HSM node test skipped");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    std::fs::write(dir.join("pin"), &pin).expect("pin");
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing.pkcs11]\nmodule = \"{module}\"\ntoken_label = \"{token}\"\npin_file = \"{d}/pin\"\nkey_label = \"node-{suffix}\"\ncreate = true\nmax_sessions = 4\n",
            d = dir.display(),
            suffix = std::process::id(),
        ),
    );
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(&client)).expect("request");
    let response = client.sign_dsse(&request).expect("signed with the HSM key");
    assert_eq!(response.signer_identity.key_source, "pkcs11");
    let bundle = dir.join("bundle.json");
    std::fs::write(&bundle, response.bundles[0].bundle.get()).expect("bundle");
    let key = dir.join("hsm.pub.pem");
    std::fs::write(&key, &response.signer_identity.public_key_pem).expect("key");
    let (ok, out) = Verifiers::sigstore_js(&bundle, &key, None);
    assert!(ok, "sigstore-js accepts the HSM-signed bundle: {out}");
    // The same key after a restart: it lives on the token, not in the node.
    let key_id = response.signer_identity.key_id.clone();
    assert!(node.stop().success());
    let node = start_node_config(dir);
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let again = client.sign_dsse(&request).expect("signed again");
    assert_eq!(again.signer_identity.key_id, key_id);
    let mut operator = services.credentials("operator", PLAN, &node.url);
    operator.server = node.url.clone();
    let page = stella_tests::audit_api(&client_for(&node.url, operator), "limit=100");
    let records = page["records"].as_array().expect("records");
    assert!(
        records
            .iter()
            .filter(|r| r["decision"] == "signed")
            .all(|r| r["keySource"] == "pkcs11" && r["keyId"] == key_id.as_str())
    );
}

//! A node whose signing key lives on a PKCS#11 token (SoftHSM2, created fresh per run by
//! `scripts/softhsm-token.sh`): it signs through the same pipeline, the audit log names the key
//! source, and the bundle verifies with sigstore-js against the token's public key.

use stella_api::SignDsseRequest;
use stella_tests::{
    PLAN, Services, Verifiers, client_for, sbom_request_for, start_configured_node,
    start_node_config,
};

/// The run's SoftHSM2 token store is shared: one test removes a token of its own from it, and
/// SoftHSM2 fails `C_GetTokenInfo` in a process that lists slots while a token directory goes
/// away. The HSM tests therefore take turns.
static TOKEN_STORE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn token_store() -> std::sync::MutexGuard<'static, ()> {
    TOKEN_STORE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The SoftHSM2 environment `scripts/test.sh` exports, by variable name; `None` (the test is
/// skipped) outside CI when it is missing — CI must have it.
fn softhsm<const N: usize>(names: [&str; N]) -> Option<[String; N]> {
    let values: Vec<String> = names
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    if let Ok(all) = <[String; N]>::try_from(values) {
        return Some(all);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the HSM tests: scripts/test.sh creates the SoftHSM2 token"
    );
    eprintln!("no SoftHSM2 token (run scripts/test.sh): HSM node test skipped");
    None
}

#[test]
fn a_node_signs_with_a_non_extractable_key_on_a_pkcs11_token() {
    let _store = token_store();
    let Some([module, token, pin]) = softhsm([
        "STELLA_TEST_PKCS11_MODULE",
        "STELLA_TEST_PKCS11_TOKEN",
        "STELLA_TEST_PKCS11_PIN",
    ]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    stella_tests::write_secret(dir.join("pin"), &pin);
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

/// A token that disappears under a running node (its object store removed, as when an HSM
/// partition is deleted or a card pulled) makes HSM signing fail fast with
/// `signing_unavailable` — audited, never a hang, never a fall-back to another key.
#[test]
fn a_token_that_disappears_makes_signing_unavailable_not_a_hang() {
    let _store = token_store();
    let Some([module, conf]) = softhsm(["STELLA_TEST_PKCS11_MODULE", "SOFTHSM2_CONF"]) else {
        return;
    };
    // A token of its own in the run's SoftHSM2 store, so removing it touches no other test.
    let store = std::fs::read_to_string(&conf)
        .expect("softhsm2.conf")
        .lines()
        .find_map(|l| l.strip_prefix("directories.tokendir = ").map(str::to_owned))
        .expect("tokendir");
    let before: Vec<_> = std::fs::read_dir(&store)
        .expect("store")
        .flatten()
        .map(|e| e.path())
        .collect();
    let label = format!("gone-{}", std::process::id());
    let init = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .output()
        .expect("softhsm2-util");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let token_dir = std::fs::read_dir(&store)
        .expect("store")
        .flatten()
        .map(|e| e.path())
        .find(|p| !before.contains(p))
        .expect("the new token's directory");

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    stella_tests::write_secret(dir.join("pin"), "1234");
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing.pkcs11]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{d}/pin\"\nkey_label = \"node\"\ncreate = true\nmax_sessions = 2\n",
            d = dir.display(),
        ),
    );
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let request: SignDsseRequest =
        serde_json::from_value(sbom_request_for(&client)).expect("request");
    client
        .sign_dsse(&request)
        .expect("signs while the token is there");

    std::fs::remove_dir_all(&token_dir).expect("remove the token");
    let started = std::time::Instant::now();
    let refused = stella_tests::refused_with(client.sign_dsse(&request), "signing_unavailable");
    assert_eq!(refused.status, 503);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "answered within the signing bound, took {:?}",
        started.elapsed()
    );
    let mut operator = services.credentials("operator", PLAN, &node.url);
    operator.server = node.url.clone();
    let page = stella_tests::audit_api(&client_for(&node.url, operator), "limit=100");
    // The client retried the 503 with the same proof (a failed attempt leaves the request
    // open): every attempt is audited as failed, under the one request id the client sent.
    let failed: Vec<&serde_json::Value> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["decision"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "the failed signing is audited: {page}");
    assert!(
        failed
            .iter()
            .all(|r| r["requestId"] == failed[0]["requestId"]),
        "one request, retried: {failed:?}"
    );
}

/// The audit log's checkpoint key on the token: an Ed25519 key that never leaves it signs the
/// checkpoints, which Go's `sumdb/note` verifies with the key the node publishes, and the same
/// key signs after a restart.
#[test]
fn checkpoints_are_signed_by_an_ed25519_key_on_the_token() {
    let _store = token_store();
    let Some([module, token, pin]) = softhsm([
        "STELLA_TEST_PKCS11_MODULE",
        "STELLA_TEST_PKCS11_TOKEN",
        "STELLA_TEST_PKCS11_PIN",
    ]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    stella_tests::write_secret(dir.join("pin"), &pin);
    let signing = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), signing.to_pkcs8_pem());
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing]\nkey_file = \"{d}/signing.pem\"\n[audit_log]\ncheckpoint_interval_ms = 100\n\
             [audit_log.pkcs11]\nmodule = \"{module}\"\ntoken_label = \"{token}\"\npin_file = \"{d}/pin\"\nkey_label = \"log-{suffix}\"\ncreate = true\n",
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
    let signed = client.sign_dsse(&request).expect("signed");
    let index = signed.log_entry.as_ref().expect("log entry").log_index;
    let vkey = client
        .trust()
        .expect("trust")
        .audit_log
        .expect("the log key is published")
        .verifier_key;
    let checkpoint = |client: &stella_api::Client| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(note) = client.checkpoint()
                && note
                    .lines()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > index)
            {
                return note;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint covers {index}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let note = checkpoint(&client);
    let (ok, out) =
        Verifiers::tlog_verify(&serde_json::json!({"verifierKey": vkey, "checkpoint": note}));
    assert!(
        ok,
        "Go's sumdb/note accepts the token-signed checkpoint: {out}"
    );

    // Restarted, the node signs with the same key: it lives on the token.
    assert!(node.stop().success());
    let node = start_node_config(dir);
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    assert_eq!(
        client
            .trust()
            .expect("trust")
            .audit_log
            .map(|l| l.verifier_key),
        Some(vkey.clone())
    );
    let signed = client.sign_dsse(&request).expect("signed again");
    let index = signed.log_entry.expect("log entry").log_index;
    let note = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let note = checkpoint(&client);
            if note.lines().nth(1).and_then(|n| n.parse::<u64>().ok()) > Some(index) {
                break note;
            }
            assert!(std::time::Instant::now() < deadline);
        }
    };
    let (ok, out) =
        Verifiers::tlog_verify(&serde_json::json!({"verifierKey": vkey, "checkpoint": note}));
    assert!(ok, "{out}");
}

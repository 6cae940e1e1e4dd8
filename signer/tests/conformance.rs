//! The one conformance suite (`stella_signer::conformance`) on this crate's back-ends: the file
//! key always, the PKCS#11 key against the SoftHSM2 token that `scripts/softhsm-token.sh`
//! creates (`scripts/test.sh` does; under CI a missing token is a failure, elsewhere the
//! PKCS#11 half is skipped with a note). The node's AWS KMS key runs it in `tests/it/kms.rs`.

use std::sync::Arc;

use stella_signer::conformance::conformance;
use stella_signer::pkcs11::{Pkcs11Config, Pkcs11KeySigner};
use stella_signer::{FileKeySigner, KeySigner};

#[test]
fn the_file_key_conforms() {
    conformance("file", Arc::new(FileKeySigner::generate().expect("key")));
}

#[test]
fn the_pkcs11_key_conforms_and_stays_on_the_token() {
    let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("STELLA_TEST_PKCS11_MODULE"),
        std::env::var("STELLA_TEST_PKCS11_TOKEN"),
        std::env::var("STELLA_TEST_PKCS11_PIN"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the PKCS#11 conformance suite: scripts/test.sh creates the SoftHSM2 token"
        );
        eprintln!("no SoftHSM2 token (run scripts/test.sh): PKCS#11 conformance skipped");
        return;
    };
    let config = |key: &str| Pkcs11Config {
        module: module.clone().into(),
        token_label: token.clone(),
        pin: pin.clone().into(),
        key_label: key.into(),
        max_sessions: 4,
    };
    let missing = Pkcs11KeySigner::open(&config("conformance-absent"), false);
    assert!(
        missing.is_err(),
        "without create, a missing key is an error"
    );
    let signer =
        Pkcs11KeySigner::open(&config("conformance"), true).expect("generate on the token");
    let key_id = signer.descriptor().key_id.clone();
    conformance("pkcs11", Arc::new(signer));
    // Opened again (as after a restart), the key is the same one on the token.
    let again = Pkcs11KeySigner::open(&config("conformance"), false).expect("reopen");
    assert_eq!(again.descriptor().key_id, key_id);
    assert_eq!(again.descriptor().source.as_str(), "pkcs11");
    let no_token = Pkcs11Config {
        token_label: "no-such-token".into(),
        ..config("conformance")
    };
    assert!(Pkcs11KeySigner::open(&no_token, false).is_err());
    // The PIN never shows in a log line or panic message.
    let printed = format!("{:?}", config("conformance"));
    assert!(
        !printed.contains(pin.as_str()) && printed.contains("<redacted>"),
        "{printed}"
    );
}

//! One conformance suite for every `KeySigner` back-end: the file key always, the PKCS#11 key
//! against the SoftHSM2 token that `scripts/softhsm-token.sh` creates (`scripts/test.sh` does;
//! under CI a missing token is a failure, elsewhere the PKCS#11 half is skipped with a note).

use std::sync::Arc;

use stella_signer::pkcs11::{Pkcs11Config, Pkcs11KeySigner};
use stella_signer::verify::verify_bundle;
use stella_signer::{Bundle, Envelope, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PublicKey};

fn conformance(name: &str, signer: Arc<dyn KeySigner>) {
    let descriptor = signer.descriptor().clone();
    assert_eq!(
        descriptor.key_id,
        descriptor.public_key.key_id(),
        "{name}: key id"
    );
    assert_eq!(
        PublicKey::from_pem(&descriptor.public_key.to_pem()).expect("pem"),
        descriptor.public_key,
        "{name}: the public key exports and re-imports"
    );
    let big = vec![7u8; 1 << 20];
    for message in [&b""[..], b"abc", &big] {
        let op = signer.sign(message).expect("sign");
        assert_eq!(op.key_id, descriptor.key_id, "{name}");
        assert_eq!(op.public_key, descriptor.public_key, "{name}");
        assert_eq!(op.signature[0], 0x30, "{name}: DER signature");
        assert!(
            op.public_key.verify(message, &op.signature),
            "{name}: verifies"
        );
        assert!(
            !op.public_key.verify(b"other", &op.signature),
            "{name}: binds the message"
        );
        assert!(op.certificate_chain_der.is_empty(), "{name}: keyful");
    }
    // ECDSA is randomized: two signatures of one message differ and both verify.
    let (a, b) = (signer.sign(b"x").expect("a"), signer.sign(b"x").expect("b"));
    assert_ne!(a.signature, b.signature, "{name}");
    // Concurrent signing (the HSM back-end pools sessions).
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let signer = signer.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let message = format!("{t}-{i}");
                    let op = signer.sign(message.as_bytes()).expect("sign");
                    assert!(op.public_key.verify(message.as_bytes(), &op.signature));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // A DSSE envelope and Sigstore bundle made with the back-end verify offline.
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1","predicate":{},"predicateType":"x","subject":[{"digest":{"sha256":"aa"},"name":"n"}]}"#;
    let (envelope, ops) =
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload.to_vec(), &[signer.as_ref()]).expect("dsse");
    let bundle = Bundle::for_signature(&envelope, 0, &ops[0]).expect("bundle");
    verify_bundle(&bundle, &descriptor.public_key).expect("the bundle verifies");
}

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

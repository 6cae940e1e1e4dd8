//! Golden vectors: a fixed key and a fixed request always give the same payload, PAE bytes,
//! key id, hint and, for a fixed signature, the same bundle hash. ECDSA signatures themselves
//! are randomized, so the vector stores one signature that must keep verifying.
//!
//! Regenerate (only on a deliberate format change):
//! `STELLA_REGENERATE_GOLDEN=1 cargo test -p stella-signer-core --test golden`

use std::fs;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use stella_signer::digest::sha256_hex;
use stella_signer::{
    Bundle, Envelope, EnvelopeSignature, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, Statement,
    Subject,
};

fn path() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/vectors/golden/sbom-file-key.json")
}

fn statement(vector: &Value) -> Statement {
    let subjects: Vec<Subject> =
        serde_json::from_value(vector["subject"].clone()).expect("subjects");
    let ty = vector["predicateType"]
        .as_str()
        .expect("type")
        .parse()
        .expect("allowed type");
    Statement::build(subjects, ty, vector["predicate"].clone()).expect("statement")
}

#[test]
fn golden_sbom_vector() {
    if std::env::var_os("STELLA_REGENERATE_GOLDEN").is_some() {
        regenerate();
    }
    let vector: Value =
        serde_json::from_slice(&fs::read(path()).expect("vector file")).expect("json");
    let key =
        FileKeySigner::from_pkcs8_pem(vector["keyPkcs8Pem"].as_str().expect("key")).expect("key");
    let expected = &vector["expected"];

    let payload = statement(&vector).to_canonical_bytes().expect("payload");
    assert_eq!(
        String::from_utf8(payload.clone()).expect("utf8"),
        expected["payload"].as_str().expect("payload")
    );
    let pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    assert_eq!(
        STANDARD.encode(&pae),
        expected["paeBase64"].as_str().expect("pae")
    );
    assert_eq!(
        sha256_hex(&pae),
        expected["paeSha256"].as_str().expect("pae hash")
    );
    assert_eq!(
        key.descriptor().key_id,
        expected["keyId"].as_str().expect("key id")
    );
    assert_eq!(
        key.public_key().hint(),
        expected["hint"].as_str().expect("hint")
    );

    let sig = STANDARD
        .decode(expected["signature"].as_str().expect("sig"))
        .expect("b64");
    assert!(
        key.public_key().verify(&pae, &sig),
        "the stored signature must verify over the PAE bytes"
    );

    let envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: vec![EnvelopeSignature {
            keyid: Some(key.descriptor().key_id.clone()),
            sig: sig.clone(),
        }],
    };
    let mut op = key.sign(b"unused").expect("sign");
    op.signature = sig;
    let bundle = Bundle::for_signature(&envelope, 0, &op).expect("bundle");
    assert_eq!(
        bundle.sha256().expect("hash"),
        expected["bundleSha256"].as_str().expect("bundle hash")
    );
    assert_eq!(
        String::from_utf8(bundle.canonical_bytes().expect("bytes")).expect("utf8"),
        expected["bundleCanonical"].as_str().expect("bundle bytes")
    );
}

fn regenerate() {
    let key = FileKeySigner::generate().expect("key");
    let mut vector = json!({
        "description": "stella.ops/sbom@v1 statement signed by a fixed P-256 file key (test key, never use it elsewhere)",
        "keyPkcs8Pem": key.to_pkcs8_pem(),
        "subject": [{"name": "registry.example/app", "digest": {"sha256": "5b3d0a47f4bd1ec2b6f2e5a9be1b5d4e01e6cf8e3ab3e8f3c9c1c7e2b5a4d3c2"}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": "sha256:1f3870be274f6c49b3e31a0c6728957f1ff26cfd05d8a8d7e1b5c0f2e3d4a5b6", "componentCount": 42},
    });
    let payload = statement(&vector).to_canonical_bytes().expect("payload");
    let (envelope, ops) =
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload.clone(), &[&key]).expect("sign");
    let bundle = Bundle::for_signature(&envelope, 0, &ops[0]).expect("bundle");
    let pae = envelope.pae();
    vector["expected"] = json!({
        "payload": String::from_utf8(payload).expect("utf8"),
        "paeBase64": STANDARD.encode(&pae),
        "paeSha256": sha256_hex(&pae),
        "keyId": key.descriptor().key_id,
        "hint": key.public_key().hint(),
        "signature": STANDARD.encode(&envelope.signatures[0].sig),
        "bundleSha256": bundle.sha256().expect("hash"),
        "bundleCanonical": String::from_utf8(bundle.canonical_bytes().expect("bytes")).expect("utf8"),
    });
    fs::write(path(), serde_json::to_vec_pretty(&vector).expect("json")).expect("write vector");
}

//! The one conformance suite every [`KeySigner`] back-end runs (feature `conformance`, for
//! tests only): the file and PKCS#11 keys in `signer/tests/conformance.rs`, the node's AWS KMS
//! key against a KMS-protocol server in the integration tests. It panics on the first
//! deviation from the byte contract in [`crate::key`].

use std::sync::Arc;

use crate::verify::verify_bundle;
use crate::{Bundle, Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner, PublicKey};

/// What a back-end's test environment can prove.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The largest message signed (default 1 MiB). A stand-in that cannot sign every size
    /// correctly (moto hashes a KMS `DIGEST` request again) lowers it and proves the rest by
    /// other means.
    pub largest_message: usize,
    /// Whether the empty message is signed too (a KMS takes it only as a digest, which moto
    /// hashes again; a real PAE is never empty).
    pub empty_message: bool,
    /// Threads signing at once in the concurrency check (× 25 signatures each).
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            largest_message: 1 << 20,
            empty_message: true,
            threads: 8,
        }
    }
}

/// Runs the suite with the default [`Options`].
pub fn conformance(name: &str, signer: Arc<dyn KeySigner>) {
    conformance_with(name, signer, Options::default());
}

pub fn conformance_with(name: &str, signer: Arc<dyn KeySigner>, options: Options) {
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
    let big = vec![7u8; options.largest_message];
    let messages: Vec<&[u8]> = [&b""[..], b"abc", &big]
        .into_iter()
        .filter(|m| options.empty_message || !m.is_empty())
        .collect();
    for message in messages {
        let op = signer.sign(message).expect("sign");
        assert_eq!(op.key_id, descriptor.key_id, "{name}");
        assert_eq!(op.public_key, descriptor.public_key, "{name}");
        assert_eq!(op.signature.first(), Some(&0x30), "{name}: DER signature");
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
    // Concurrent signing (the HSM back-end pools sessions, the KMS back-end shares a client).
    let threads: Vec<_> = (0..options.threads)
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

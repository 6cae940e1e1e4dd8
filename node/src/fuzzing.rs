//! Fuzz entry points beyond admission (those are in `admission::fuzzing`): everything else a
//! caller, a registry, a TSA or Fulcio can hand the signer — the sign request body, in-toto
//! statements and predicates, DSSE envelopes and Sigstore bundles on the verify path, OCI
//! indexes and manifests, RFC 3161 responses and Fulcio answers. Each must answer `Err` (or a
//! refusal), never panic, whatever the bytes.
//!
//! The same functions run three ways: cargo-fuzz targets in `fuzz/` (`scripts/fuzz.sh`), a
//! corpus test on every `cargo test` (the committed seeds in `fuzz/seeds/<target>/` plus
//! deterministic mutations of them), and the seeds themselves are real outputs — a signed
//! envelope and bundle, an OpenSSL TSA reply, a dev-Fulcio-shaped answer.

use std::sync::OnceLock;

use stella_signer::timestamp::{TimestampAuthority, check_response, verify_timestamp};
use stella_signer::verify::{TrustedRoot, verify_bundle, verify_envelope};
use stella_signer::{Bundle, Envelope, FileKeySigner, KeySigner, PublicKey, Statement};

/// The fuzz targets, by name (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: [&str; 6] = [
    "sign_request",
    "statement",
    "envelope",
    "oci",
    "tsa",
    "fulcio",
];

fn key() -> &'static FileKeySigner {
    static KEY: OnceLock<FileKeySigner> = OnceLock::new();
    KEY.get_or_init(|| FileKeySigner::generate().expect("a P-256 key"))
}

fn public_key() -> PublicKey {
    key().public_key().clone()
}

/// Runs `target` on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "sign_request" => sign_request(data),
        "statement" => statement(data),
        "envelope" => envelope(data),
        "oci" => oci(data),
        "tsa" => tsa(data),
        "fulcio" => fulcio(data),
        _ => {}
    }
}

/// The body of `POST /api/v1/signer/sign/dsse`, through to the statement that would be signed.
pub fn sign_request(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<stella_api::SignDsseRequest>(data) {
        let _ = crate::pipeline::plan(request);
    }
}

/// An in-toto statement (a DSSE payload) and, as a predicate, for every predicate type.
pub fn statement(data: &[u8]) {
    if let Ok(statement) = Statement::from_payload(data) {
        let _ = statement.to_canonical_bytes();
        let _ = statement.has_subject_digest(&"a".repeat(64));
    }
    if let Ok(predicate) = serde_json::from_slice::<serde_json::Value>(data) {
        for predicate_type in stella_signer::PredicateType::ALL {
            let _ = predicate_type.validate(&predicate);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<stella_signer::PredicateType>();
        let _ = stella_signer::Subject::parse_reference(text);
    }
}

/// The verify path: a DSSE envelope or a Sigstore bundle, and a trusted root.
pub fn envelope(data: &[u8]) {
    let key = public_key();
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(data) {
        let _ = verify_envelope(&envelope, &key);
        let _ = envelope.pae();
    }
    if let Ok(bundle) = Bundle::from_json(data) {
        let _ = verify_bundle(&bundle, &key);
        let _ = bundle.rfc3161_timestamps();
        let _ = bundle.leaf_certificate_b64();
        let _ = bundle.sha256();
    }
    let _ = TrustedRoot::from_json(data);
    let _ = stella_signer::parse_pae(data);
}

/// A registry's answer: an OCI index, an image manifest or a blob.
pub fn oci(data: &[u8]) {
    stella_release::fuzz_registry_document(data, &public_key());
}

/// A TSA's `TimeStampResp`, as checked when signing and when verifying offline.
pub fn tsa(data: &[u8]) {
    static AUTHORITY: OnceLock<Vec<TimestampAuthority>> = OnceLock::new();
    let authorities = AUTHORITY.get_or_init(|| {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let chain_der = CertificateDer::pem_slice_iter(SEED_TSA_CHAIN.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect();
        vec![TimestampAuthority { chain_der }]
    });
    let _ = check_response(data, SEED_TSA_SIGNATURE, &[7; 8]);
    let _ = verify_timestamp(data, SEED_TSA_SIGNATURE, authorities);
}

/// A Fulcio `/api/v2/signingCert` answer, and the leaf's serial number.
pub fn fulcio(data: &[u8]) {
    if let Ok(chain) = crate::keyless::chain_of_fulcio_answer(data) {
        for der in &chain {
            let _ = crate::keyless::certificate_serial(der);
        }
    }
    let _ = crate::keyless::certificate_serial(data);
}

/// The bytes the committed TSA seed timestamps, and the TSA's chain (`fuzz/seeds/tsa/`).
const SEED_TSA_SIGNATURE: &[u8] = b"signature-bytes";
const SEED_TSA_CHAIN: &str = include_str!("../../fuzz/seeds/tsa/chain.pem");

/// Real inputs for each target: what the fuzzers and the corpus test start from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let request = serde_json::json!({
        "subject": [{"name": "registry.example/app", "digest": {"sha256": "a".repeat(64)}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": format!("sha256:{}", "b".repeat(64)), "componentCount": 3},
        "scannerImageDigest": format!("sha256:{}", "c".repeat(64)),
        "poe": {"format": "jwt", "value": "a.b.c"},
        "options": {"signingMode": "keyful"}
    });
    let signed = || -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let plan = crate::pipeline::plan(serde_json::from_value(request.clone()).ok()?).ok()?;
        let signer: &dyn KeySigner = key();
        let (envelope, ops) = Envelope::sign(
            stella_signer::IN_TOTO_PAYLOAD_TYPE,
            plan.payload.clone(),
            &[signer],
        )
        .ok()?;
        let bundle = Bundle::for_signature(&envelope, 0, ops.first()?).ok()?;
        Some((
            plan.payload,
            serde_json::to_vec(&envelope).ok()?,
            bundle.to_json_pretty().ok()?,
        ))
    };
    let (statement, envelope, bundle) = signed().unwrap_or_default();
    match target {
        "sign_request" => vec![
            request.to_string().into_bytes(),
            br#"{"subject":[],"predicateType":"x","predicate":null}"#.to_vec(),
        ],
        "statement" => vec![
            statement,
            br#"{"format":"cyclonedx-1.6","digest":"sha256:00","componentCount":-1}"#.to_vec(),
            b"registry.example/app@sha256:0000".to_vec(),
        ],
        "envelope" => vec![envelope, bundle],
        "oci" => {
            let digest = format!("sha256:{}", "d".repeat(64));
            vec![
                serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 512,
                        "artifactType": stella_release::BUNDLE_MEDIA_TYPE}]})
                .to_string()
                .into_bytes(),
                serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest, "size": 2},
                    "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": digest, "size": 9,
                        "annotations": {"dev.cosignproject.cosign/signature": "AAAA"}}]})
                .to_string()
                .into_bytes(),
                bundle,
            ]
        }
        "tsa" => vec![include_bytes!("../../fuzz/seeds/tsa/openssl-granted.tsr").to_vec()],
        "fulcio" => {
            let leaf = rcgen::generate_simple_self_signed(vec!["fuzz.test".to_owned()])
                .map(|c| c.cert.pem())
                .unwrap_or_default();
            vec![
                serde_json::json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf, leaf]}}})
                    .to_string()
                    .into_bytes(),
                serde_json::json!({"signedCertificateDetachedSct": {"chain": {"certificates": []}}})
                    .to_string()
                    .into_bytes(),
            ]
        }
        _ => Vec::new(),
    }
}

/// `seed` mutated deterministically (byte flips, insertions of structural characters,
/// deletions, truncations): `count` variants.
pub fn mutations(seed: &[u8], count: usize, state: &mut u64) -> Vec<Vec<u8>> {
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    (0..count)
        .map(|_| {
            let mut input = seed.to_vec();
            for _ in 0..=(next() % 4) {
                let at = if input.is_empty() {
                    0
                } else {
                    (next() as usize) % input.len()
                };
                match next() % 4 {
                    0 if !input.is_empty() => input[at] = next() as u8,
                    1 => input.insert(at, b".\"{}[]:=,-_AZaz09\\\0\xff"[(next() % 18) as usize]),
                    2 if !input.is_empty() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            input
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target on its seeds and 300 mutations of each, on every test run (CI included).
    /// With `STELLA_WRITE_FUZZ_SEEDS=1`, writes the seeds to `fuzz/seeds/<target>/` for
    /// cargo-fuzz to start from.
    #[test]
    fn every_fuzz_target_survives_its_corpus() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for target in TARGETS {
            let seeds = seeds(target);
            assert!(
                seeds.iter().any(|s| !s.is_empty()),
                "{target} has real seeds"
            );
            if std::env::var_os("STELLA_WRITE_FUZZ_SEEDS").is_some() {
                let dir = std::path::PathBuf::from(
                    std::env::var_os("CARGO_MANIFEST_DIR")
                        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
                )
                .join("../fuzz/seeds")
                .join(target);
                std::fs::create_dir_all(&dir).expect("seed dir");
                for (i, seed) in seeds.iter().enumerate() {
                    let name = dir.join(format!("seed-{i}"));
                    if target != "tsa" {
                        std::fs::write(name, seed).expect("seed");
                    }
                }
            }
            for seed in &seeds {
                run(target, seed);
                for input in mutations(seed, 300, &mut state) {
                    run(target, &input);
                }
            }
        }
    }

    #[test]
    fn the_seeds_are_what_they_claim_to_be() {
        let key = public_key();
        let bundle = Bundle::from_json(&seeds("envelope")[1]).expect("a bundle");
        assert!(
            verify_bundle(&bundle, &key).is_ok(),
            "the bundle seed verifies"
        );
        let chain = crate::keyless::chain_of_fulcio_answer(&seeds("fulcio")[0]).expect("chain");
        assert_eq!(chain.len(), 2);
        // Once a crash of the `fulcio` target: a DER length that overflowed the serial reader.
        let crash = include_bytes!("../../fuzz/seeds/fulcio/regression-length-overflow");
        fulcio(crash);
        let mut huge_length = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30, 0x88];
        huge_length.extend([0xff; 8]);
        assert_eq!(crate::keyless::certificate_serial(&huge_length), None);
        let leaf = rcgen::generate_simple_self_signed(vec!["fuzz.test".to_owned()])
            .expect("cert")
            .cert;
        assert!(
            crate::keyless::certificate_serial(leaf.der()).is_some_and(|s| !s.is_empty()),
            "a real certificate's serial is read"
        );
        let tsr = &seeds("tsa")[0];
        assert!(
            check_response(tsr, SEED_TSA_SIGNATURE, &[7; 8]).is_err_and(|e| e.contains("nonce")),
            "the TSA seed parses all the way to the nonce check"
        );
    }
}

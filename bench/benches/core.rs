//! Criterion micro-benchmarks of the signing core: PAE, canonical JSON, P-256 signing, bundle
//! hashing. Run with `cargo bench -p stella-bench --bench core`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stella_signer::{
    Bundle, Envelope, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PredicateType, Statement,
    Subject, canonical,
};

fn statement() -> Statement {
    Statement::build(
        vec![Subject::sha256("registry.example/acme/payments", "8d3c9f1e2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f")],
        PredicateType::Sbom,
        json!({"format": "cyclonedx-1.6", "digest": format!("sha256:{}", "ab".repeat(32)), "componentCount": 412}),
    )
    .expect("statement")
}

fn benches(c: &mut Criterion) {
    let st = statement();
    let payload = st.to_canonical_bytes().expect("payload");
    let key = FileKeySigner::generate().expect("key");
    let pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let (envelope, ops) =
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload.clone(), &[&key]).expect("sign");
    let bundle = Bundle::for_signature(&envelope, 0, &ops[0]).expect("bundle");

    c.bench_function("pae", |b| {
        b.iter(|| stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, std::hint::black_box(&payload)))
    });
    c.bench_function("canonical_json_statement", |b| {
        b.iter(|| canonical::to_vec(std::hint::black_box(&st)))
    });
    c.bench_function("sign_p256_file_key", |b| {
        b.iter(|| key.sign(std::hint::black_box(&pae)))
    });
    c.bench_function("bundle_sha256", |b| {
        b.iter(|| std::hint::black_box(&bundle).sha256())
    });
}

criterion_group!(core, benches);
criterion_main!(core);

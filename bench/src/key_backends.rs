//! Key back-ends compared in one run (goal G5, keyful half): the file key against the PKCS#11
//! key on a SoftHSM2 token, each signing the same PAE bytes from 2 threads, with throughput and
//! p99 latency per operation. The token comes from `scripts/softhsm-token.sh` (its exported
//! `STELLA_TEST_PKCS11_*` variables); without it only the file key is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stella_signer::KeySigner;
use stella_signer::pkcs11::{Pkcs11Config, Pkcs11KeySigner};

pub struct BackendFigures {
    pub name: &'static str,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

fn measure(
    name: &'static str,
    signer: Arc<dyn KeySigner>,
    message: &[u8],
    duration: Duration,
) -> BackendFigures {
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (signer, message) = (signer.clone(), message.to_vec());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let t0 = Instant::now();
                    if signer.sign(&message).is_ok() {
                        latencies.push(t0.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    BackendFigures {
        name,
        per_second: all.len() as f64 / elapsed,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

pub fn compare(message: &[u8], duration: Duration) -> anyhow::Result<Vec<BackendFigures>> {
    let mut figures = vec![measure(
        "file",
        Arc::new(stella_signer::FileKeySigner::generate()?),
        message,
        duration,
    )];
    if let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("STELLA_TEST_PKCS11_MODULE"),
        std::env::var("STELLA_TEST_PKCS11_TOKEN"),
        std::env::var("STELLA_TEST_PKCS11_PIN"),
    ) {
        let hsm = Pkcs11KeySigner::open(
            &Pkcs11Config {
                module: module.into(),
                token_label: token,
                pin,
                key_label: "bench".into(),
                max_sessions: 4,
            },
            true,
        )?;
        figures.push(measure(
            "pkcs11 (SoftHSM2)",
            Arc::new(hsm),
            message,
            duration,
        ));
    }
    Ok(figures)
}

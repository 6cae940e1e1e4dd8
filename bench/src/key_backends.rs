//! Key back-ends compared in one run (goal G5): the file key, the PKCS#11 key on a SoftHSM2
//! token, an AWS KMS key through moto (the KMS-protocol stand-in, a Python server on loopback:
//! the figure is the SDK client path plus moto, not AWS) and keyless signing (ephemeral key + a
//! certificate from a Fulcio-protocol CA over HTTPS on loopback), each signing the same PAE
//! bytes from 2 threads, with throughput and p99 latency per operation. The token comes from
//! `scripts/softhsm-token.sh` (its exported `STELLA_TEST_PKCS11_*` variables); without it the
//! HSM row is skipped, and without moto in the project venv the KMS row.

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
                let mut reported = false;
                while started.elapsed() < duration {
                    let t0 = Instant::now();
                    match signer.sign(&message) {
                        Ok(_) => latencies.push(t0.elapsed()),
                        Err(e) if !reported => {
                            eprintln!("{name}: {e}");
                            reported = true;
                        }
                        Err(_) => {}
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

/// A keyless signer against the dev Fulcio served over HTTPS on loopback (its own runtime).
fn keyless(
    dir: &std::path::Path,
) -> anyhow::Result<(
    Arc<dyn KeySigner>,
    stella_node::dev::StandIn,
    tokio::runtime::Runtime,
)> {
    use rustls_pki_types::pem::PemObject;
    use stella_node::clock::{Clock, SystemClock};
    use stella_node::dev::{DevAuthority, DevFulcio, DevLicensing, DevServices, StandIn};
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let pki = dir.join("pki");
    stella_cluster::pki::generate_dev_pki(
        &pki,
        stella_cluster::identity::DEFAULT_CLUSTER_ID,
        1,
        &[],
    )?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("https://{}", listener.local_addr()?);
    let authority = Arc::new(DevAuthority::new(
        &format!("{url}/authority"),
        &stella_signer::FileKeySigner::generate()?.to_pkcs8_pem(),
        Vec::new(),
        clock.clone(),
    )?);
    let fulcio = Arc::new(DevFulcio::new(authority.clone(), clock.clone())?);
    let licensing = Arc::new(DevLicensing::new(
        &stella_signer::FileKeySigner::generate()?.to_pkcs8_pem(),
        "bench",
        "bench",
        clock,
    )?);
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(pki.join("node-1.pem"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join("node-1.key"))?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let a = authority.clone();
    let standin = StandIn::start(listener, tls, move |base| DevServices {
        authority: a,
        licensing,
        fulcio: Some(fulcio),
        tsa: None,
        token_url: format!("{base}/authority/token"),
    })?;
    let now = stella_api::dpop::unix_now();
    let token = authority.mint(&serde_json::json!({
        "iss": authority.issuer(), "sub": "bench@stella.test", "email": "bench@stella.test",
        "aud": "sigstore", "iat": now, "exp": now + 3600,
    }))?;
    std::fs::write(dir.join("identity.jwt"), token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ca = std::fs::read_to_string(pki.join("ca.pem"))?;
    let signer = runtime.block_on(async {
        stella_node::keyless::KeylessSigner::new(
            &format!("{}/fulcio", standin.url),
            Some(&ca),
            dir.join("identity.jwt"),
            None,
        )
    })?;
    Ok((Arc::new(signer), standin, runtime))
}

/// A KMS key made in a fresh moto server, and the server (stopped when dropped); `None` with a
/// note when moto is not installed.
fn kms() -> anyhow::Result<Option<(Arc<dyn KeySigner>, stella_tests::moto::MotoServer)>> {
    use stella_node::kms::{Credentials, KmsClient, KmsKeySigner, KmsSettings};
    use stella_tests::moto::{ACCESS_KEY_ID, MotoServer, REGION, SECRET_ACCESS_KEY};
    if !MotoServer::installed() {
        eprintln!(
            "G5: kms (moto) skipped: moto is not installed in the project venv (scripts/install-deps.sh)"
        );
        return Ok(None);
    }
    let moto = MotoServer::start().ok_or_else(|| anyhow::anyhow!("moto did not start"))?;
    let key = moto.create_key("ECC_NIST_P256", "SIGN_VERIFY");
    let client = KmsClient::connect_with_credentials(
        KmsSettings {
            endpoint_url: Some(moto.url.clone()),
            ..KmsSettings::new(REGION)
        },
        Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "bench"),
    )?;
    let signer = KmsKeySigner::open(client, &key.arn)?;
    Ok(Some((Arc::new(signer), moto)))
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
                pin: pin.into(),
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
    if let Some((signer, _moto)) = kms()? {
        figures.push(measure("kms (moto)", signer, message, duration));
    }
    let dir = tempfile::tempdir()?;
    let (signer, _standin, _runtime) = keyless(dir.path())?;
    figures.push(measure("keyless (Fulcio)", signer, message, duration));
    Ok(figures)
}

//! The cost of admission per request, in process, against the signing work it guards: the same
//! request is signed (canonical statement → DSSE → bundle) with and without being admitted
//! first (OpTok ES256 check, DPoP proof ES256 check and thumbprint, PoE from the entitlement
//! cache), on one thread, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stella_api::SignDsseRequest;
use stella_api::dpop::{DpopKey, unix_now};
use stella_node::admission::dpop::ProofPolicy;
use stella_node::admission::entitlement::{CacheConfig, EntitlementCache};
use stella_node::admission::jwks::{JwksCache, JwksSource};
use stella_node::admission::licensing::{IntrospectFuture, Licensing, Poe};
use stella_node::admission::optok::{SCOPE_SIGN, TokenPolicy};
use stella_node::admission::{Admission, AdmissionParts, RequestFacts};
use stella_node::clock::{Clock, SystemClock};
use stella_node::config::PlanConfig;
use stella_node::dev::{DevAuthority, DevClient, DevLicensing};
use stella_signer::{Envelope, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner};

pub struct AdmissionCost {
    pub sign_per_s: f64,
    pub admitted_sign_per_s: f64,
    pub admission_us: f64,
    pub sign_us: f64,
}

/// The dev licensing service, called in process (only the first look-up reaches it; the rest
/// are entitlement-cache hits, as in steady state on a node).
struct InProcess(Arc<DevLicensing>);

impl Licensing for InProcess {
    fn introspect<'a>(&'a self, poe: &'a Poe) -> IntrospectFuture<'a> {
        Box::pin(async move { Ok(self.0.introspect(&poe.value)) })
    }
}

/// What both measurements share: an admission with the dev Authority and licensing, one
/// request's facts (OpTok + DPoP proof), the request with its PoE, and a file key.
struct Setup {
    _dir: tempfile::TempDir,
    admission: Admission,
    facts: RequestFacts,
    request: SignDsseRequest,
    signer: FileKeySigner,
}

async fn setup(request: &Value) -> anyhow::Result<Setup> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dir = tempfile::tempdir()?;
    let issuer = "https://authority.bench";
    let authority = DevAuthority::new(
        issuer,
        &FileKeySigner::generate()?.to_pkcs8_pem(),
        Vec::<DevClient>::new(),
        clock.clone(),
    )?;
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, authority.jwks().to_string())?;
    let licensing = Arc::new(DevLicensing::new(
        &FileKeySigner::generate()?.to_pkcs8_pem(),
        "bench",
        "bench",
        clock.clone(),
    )?);
    let license = licensing.issue("lic-bench", "bench", "team", unix_now() + 3600)?;
    let admission = Admission::new(AdmissionParts {
        token_policy: TokenPolicy {
            issuer: issuer.into(),
            audience: "signer".into(),
            skew_seconds: 60,
            max_lifetime_seconds: 3600,
        },
        proof_policy: ProofPolicy {
            max_age_seconds: 300,
            skew_seconds: 60,
        },
        jwks: JwksCache::new(
            JwksSource::File(jwks),
            Duration::from_secs(30),
            Duration::from_secs(600),
            Duration::from_secs(24 * 3600),
        ),
        nonces: None,
        entitlements: EntitlementCache::start(
            Arc::new(InProcess(licensing)),
            CacheConfig {
                ttl_seconds: 300,
                negative_ttl_seconds: 30,
                grace_seconds: 3600,
            },
            clock.clone(),
        )
        .await?,
        plans: vec![PlanConfig {
            name: "team".into(),
            signatures_per_window: u64::MAX,
            window_seconds: 3600,
            max_concurrent: u32::MAX,
            max_artifact_bytes: 1 << 20,
            shared_default_key: true,
            require_hardware_backed: false,
            max_key_age_seconds: None,
            key_age_grace_seconds: 0,
        }],
        bypass_plan: "team".into(),
        auditor_tenants: Vec::new(),
        clock,
        preauth: Default::default(),
    });

    let key = DpopKey::from_pem(&FileKeySigner::generate()?.to_pkcs8_pem())
        .map_err(anyhow::Error::msg)?;
    let mut claims = authority.claims("bench-ci", "bench", SCOPE_SIGN);
    claims["cnf"] = json!({"jkt": key.thumbprint()});
    let token = authority.mint(&claims)?;
    let url = "https://signer.bench/api/v1/signer/sign/dsse";
    let proof = key
        .proof("POST", url, Some(&token), None, unix_now())
        .map_err(anyhow::Error::msg)?;
    let facts = RequestFacts {
        method: "POST".into(),
        urls: vec![url.into()],
        authorization: vec![format!("DPoP {token}")],
        dpop: vec![proof],
        idempotency_key: Vec::new(),
        source: None,
        client_cert_sha256: None,
    };
    let mut request: SignDsseRequest = serde_json::from_value(request.clone())?;
    request.poe = Some(stella_api::ProofOfEntitlement {
        format: "jwt".into(),
        value: license,
    });
    let signer = FileKeySigner::generate()?;
    Ok(Setup {
        _dir: dir,
        admission,
        facts,
        request,
        signer,
    })
}

/// Admission (OpTok, DPoP, PoE from the cache), plan, DSSE and bundles for one request.
async fn admitted_sign(s: &Setup) -> anyhow::Result<()> {
    let authn = s.admission.authenticate(&s.facts, &[SCOPE_SIGN]).await?;
    s.admission
        .entitle(&authn, s.request.poe.as_ref(), None, false)
        .await?;
    let plan = stella_node::pipeline::plan(s.request.clone())?;
    let refs: [&dyn KeySigner; 1] = [&s.signer];
    let (envelope, ops) = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, plan.payload, &refs)?;
    stella_node::pipeline::bundles(&envelope, &ops)?;
    Ok(())
}

/// The same admitted pipeline as a node runs it minus HTTP and Raft, on two threads (two tasks
/// on a two-worker runtime, one per core of this machine): requests per second. G1's
/// denominator.
pub async fn two_threads(request: &Value, duration: Duration) -> anyhow::Result<f64> {
    let s = Arc::new(setup(request).await?);
    admitted_sign(&s).await?;
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < duration {
                    if admitted_sign(&s).await.is_ok() {
                        n += 1;
                    }
                    tokio::task::yield_now().await;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await?;
    }
    s.admission.stop();
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub async fn measure(request: &Value, duration: Duration) -> anyhow::Result<AdmissionCost> {
    let Setup {
        _dir,
        admission,
        facts,
        request,
        signer,
    } = setup(request).await?;
    let sign = |request: &SignDsseRequest| -> anyhow::Result<()> {
        let plan = stella_node::pipeline::plan(request.clone())?;
        let refs: [&dyn KeySigner; 1] = [&signer];
        let (envelope, ops) = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, plan.payload, &refs)?;
        stella_node::pipeline::bundles(&envelope, &ops)?;
        Ok(())
    };
    // Warm up (JWKS load, first introspection), then alternate the two loops twice each so
    // that drift of the machine affects both alike.
    let authn = admission.authenticate(&facts, &[SCOPE_SIGN]).await?;
    admission
        .entitle(&authn, request.poe.as_ref(), None, false)
        .await?;
    let (mut plain, mut plain_time, mut admitted, mut admitted_time) =
        (0u64, Duration::ZERO, 0u64, Duration::ZERO);
    let (mut admission_time, mut sign_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        let started = Instant::now();
        while started.elapsed() < duration / 4 {
            sign(&request)?;
            plain += 1;
        }
        plain_time += started.elapsed();
        let started = Instant::now();
        while started.elapsed() < duration / 4 {
            let t0 = Instant::now();
            let authn = admission.authenticate(&facts, &[SCOPE_SIGN]).await?;
            admission
                .entitle(&authn, request.poe.as_ref(), None, false)
                .await?;
            let t1 = Instant::now();
            sign(&request)?;
            admission_time += t1 - t0;
            sign_time += t1.elapsed();
            admitted += 1;
        }
        admitted_time += started.elapsed();
    }
    admission.stop();
    Ok(AdmissionCost {
        sign_per_s: plain as f64 / plain_time.as_secs_f64(),
        admitted_sign_per_s: admitted as f64 / admitted_time.as_secs_f64(),
        admission_us: admission_time.as_secs_f64() * 1e6 / admitted.max(1) as f64,
        sign_us: sign_time.as_secs_f64() * 1e6 / admitted.max(1) as f64,
    })
}

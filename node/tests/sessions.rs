//! Session failure semantics against a real one-node Raft: a key back-end that fails is audited
//! and its reservation released; one that panics takes down only its own session, and the
//! reservation it held is released as well.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stella_api::{SignDsseRequest, SignOptions, SubjectWire};
use stella_cluster::{ClusterConfig, ClusterHandle};
use stella_node::clock::FixedClock;
use stella_node::config::{PlanConfig, QuotaConfig};
use stella_node::keys::Keyring;
use stella_node::ledger::Ledger;
use stella_node::session::Sessions;
use stella_node::signing::{SignJob, SigningParts, SigningService};
use stella_signer::{
    Error as SignerError, FileKeySigner, KeyDescriptor, KeySigner, SignedOperation,
};
use stella_state::raft_types::NodeAddr;

enum Fault {
    Fails,
    Panics,
    Slow,
    /// Hangs until the flag is set (an HSM that stopped answering).
    Hangs(Arc<std::sync::atomic::AtomicBool>),
}

struct FaultySigner {
    inner: FileKeySigner,
    fault: Fault,
}

impl KeySigner for FaultySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        self.inner.descriptor()
    }

    fn sign(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        match &self.fault {
            Fault::Fails => Err(SignerError::Signing("HSM session lost".into())),
            Fault::Panics => panic!("back-end bug"),
            Fault::Slow => {
                std::thread::sleep(Duration::from_millis(300));
                self.inner.sign(message)
            }
            Fault::Hangs(released) => {
                let started = std::time::Instant::now();
                while !released.load(std::sync::atomic::Ordering::SeqCst)
                    && started.elapsed() < Duration::from_secs(120)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(SignerError::Signing("the token came back".into()))
            }
        }
    }
}

fn request() -> SignDsseRequest {
    SignDsseRequest {
        subject: vec![SubjectWire {
            name: "app".into(),
            digest: [("sha256".to_owned(), "a".repeat(64))].into(),
        }],
        predicate_type: "stella.ops/sbom@v1".into(),
        predicate: json!({"format": "cyclonedx-1.6", "digest": format!("sha256:{}", "b".repeat(64)), "componentCount": 1}),
        scanner_image_digest: None,
        poe: None,
        options: SignOptions::default(),
    }
}

async fn service(dir: &std::path::Path, fault: Fault) -> (SigningService, ClusterHandle) {
    service_with(dir, fault, 16).await
}

async fn service_with(
    dir: &std::path::Path,
    fault: Fault,
    max_sessions: usize,
) -> (SigningService, ClusterHandle) {
    let cluster = ClusterHandle::start(ClusterConfig::new(
        1,
        dir.to_path_buf(),
        NodeAddr::default(),
        None,
    ))
    .await
    .expect("raft");
    cluster.initialize().await.expect("init");
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let ledger = Ledger::start(cluster.clone(), 1024).await.expect("ledger");
    let sessions = Sessions::start(max_sessions).await.expect("sessions");
    let signer = FaultySigner {
        inner: FileKeySigner::generate().expect("key"),
        fault,
    };
    let service = SigningService::new(SigningParts {
        keyring: Keyring::single(Arc::new(signer)),
        ledger,
        sessions,
        cluster: cluster.clone(),
        clock: Arc::new(FixedClock::new(
            time::macros::datetime!(2026-11-28 12:00:00 UTC),
        )),
        quota: QuotaConfig::default(),
        admission: Arc::new(admission().await),
        provenance: None,
        // The file back-end (the faulty signer's) runs at most two signings at once.
        backends: stella_node::signing::Backends::new(&[("file", 2)]),
        request_deadline: std::time::Duration::from_secs(10),
        live: Default::default(),
        in_flight: Default::default(),
    });
    (service, cluster)
}

/// These tests start at the leader's side, after admission; the service still needs one.
async fn admission() -> stella_node::admission::Admission {
    use stella_node::admission::*;
    let clock = Arc::new(FixedClock::new(
        time::macros::datetime!(2026-11-28 12:00:00 UTC),
    ));
    let licensing = licensing::LicensingClient {
        endpoint: stella_node::http_client::HttpsSource::new(
            "https://127.0.0.1:1/introspect",
            None,
            Duration::from_secs(1),
        )
        .expect("endpoint"),
        client_id: "unused".into(),
        client_secret: String::from("unused").into(),
    };
    Admission::new(AdmissionParts {
        token_policy: optok::TokenPolicy {
            issuer: "https://authority.test".into(),
            audience: "signer".into(),
            skew_seconds: 60,
            max_lifetime_seconds: 3600,
        },
        proof_policy: dpop::ProofPolicy {
            max_age_seconds: 300,
            skew_seconds: 60,
        },
        jwks: jwks::JwksCache::new(
            jwks::JwksSource::File("/nonexistent/jwks.json".into()),
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        ),
        nonces: None,
        entitlements: entitlement::EntitlementCache::start(
            Arc::new(licensing),
            entitlement::CacheConfig {
                ttl_seconds: 60,
                negative_ttl_seconds: 5,
                grace_seconds: 60,
            },
            clock.clone(),
        )
        .await
        .expect("cache"),
        plans: vec![PlanConfig {
            name: "team".into(),
            signatures_per_window: 1,
            window_seconds: 3600,
            max_concurrent: 10,
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
    })
}

async fn reservations_drain(cluster: &ClusterHandle) -> bool {
    for _ in 0..100 {
        if cluster.view().with_state(|s| {
            s.reservations.is_empty() && s.ledgers.values().all(|l| l.in_flight == 0 && l.used == 0)
        }) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An admitted job for tenant `t` on a plan with a quota of one signature.
fn job(request_id: &str) -> SignJob {
    SignJob {
        tenant: "t".into(),
        caller_subject: "s".into(),
        issuer: "i".into(),
        request_id: request_id.into(),
        plan: "team".into(),
        poe_state: "valid".into(),
        proof: None,
        provenance: None,
        credentials: stella_node::signing::Credentials {
            authorization: "DPoP token".into(),
            dpop: None,
            client_cert_sha256: None,
        },
        idempotency_key: None,
        request: request(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_back_end_is_audited_and_refunded() {
    let dir = tempfile::tempdir().expect("tmp");
    let (service, cluster) = service(dir.path(), Fault::Fails).await;
    let err = service
        .sign_as_leader(job("req-1"))
        .await
        .expect_err("signing fails");
    assert_eq!(err.code().as_str(), "signing_unavailable");
    assert!(
        reservations_drain(&cluster).await,
        "the quota of 1 is refunded"
    );
    let records = cluster.view().audit_after(0, 10).expect("audit");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].draft.decision, stella_state::Decision::Failed);
    assert!(records[0].draft.reason.contains("HSM session lost"));
    assert_eq!(
        records[0].draft.time, "2026-11-28T12:00:00Z",
        "audit time comes from the node's clock"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_releases_its_reservation_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let (service, cluster) = service(dir.path(), Fault::Panics).await;
    for i in 0..3 {
        // With a quota of 1, the second and third attempts only get this far if the first
        // session's reservation came back.
        let err = service
            .sign_as_leader(job(&format!("req-{i}")))
            .await
            .expect_err("the session dies");
        assert_eq!(err.code().as_str(), "signing_unavailable", "{err}");
        assert!(
            reservations_drain(&cluster).await,
            "attempt {i}: the dead session's reservation is released"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_overload_is_a_retryable_503() {
    let dir = tempfile::tempdir().expect("tmp");
    let (service, cluster) = service_with(dir.path(), Fault::Slow, 1).await;
    let busy = {
        let service = service.clone();
        tokio::spawn(async move { service.sign_as_leader(job("req-slow")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = service
        .sign_as_leader(job("req-2"))
        .await
        .expect_err("no session left");
    assert_eq!(err.code().as_str(), "signing_unavailable");
    assert_eq!(
        err.retry_after_seconds(),
        Some(1),
        "overload tells the client when to retry"
    );
    assert!(
        busy.await.expect("task").is_ok(),
        "the running session finishes normally"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_back_end_fills_only_its_own_bound_and_later_requests_get_a_retryable_503() {
    let dir = tempfile::tempdir().expect("tmp");
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (service, cluster) = service(dir.path(), Fault::Hangs(released.clone())).await;
    // Each tenant has its own quota of one: three tenants, three signings.
    let for_tenant = |t: &str| SignJob {
        tenant: t.into(),
        request_id: format!("req-{t}"),
        ..job("unused")
    };
    // Two signings hang on the token: each gets 503 at the signing deadline...
    let hung: Vec<_> = ["t1", "t2"]
        .into_iter()
        .map(|t| {
            let (service, job) = (service.clone(), for_tenant(t));
            tokio::spawn(async move { service.sign_as_leader(job).await })
        })
        .collect();
    for h in hung {
        let e = h.await.expect("join").expect_err("the token hangs");
        assert_eq!(e.code().as_str(), "signing_unavailable");
        assert!(e.to_string().contains("did not answer"), "{e}");
    }
    // ...but their calls still hold the token, and the file back-end runs two at a time: a
    // third signing is refused as busy instead of starting a third hung call.
    let e = service
        .sign_as_leader(for_tenant("t3"))
        .await
        .expect_err("busy");
    assert_eq!(e.code().as_str(), "signing_unavailable");
    assert!(e.to_string().contains("busy"), "{e}");
    assert!(e.retry_after_seconds().is_some(), "retryable");
    released.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        reservations_drain(&cluster).await,
        "every reservation came back"
    );
}

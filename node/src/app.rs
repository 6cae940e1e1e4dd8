//! Composition root: config → keys → listener → admission (JWKS cache, entitlement-cache
//! actor; the embedded dev Authority and licensing service in dev mode) → cluster (Raft on
//! redb) → ledger actor → signing service → client listener (+ peer listener with mutual TLS
//! in cluster mode).

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stella_cluster::{ClusterConfig, ClusterHandle, PeerTls};
use stella_state::raft_types::NodeAddr;

use crate::admission::dpop::{NonceIssuer, ProofPolicy};
use crate::admission::entitlement::{CacheConfig, EntitlementCache};
use crate::admission::jwks::{JwksCache, JwksSource};
use crate::admission::licensing::LicensingClient;
use crate::admission::optok::TokenPolicy;
use crate::admission::{Admission, AdmissionParts};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AppState, ClientCert};
use crate::http_client::HttpsSource;
use crate::keys::{self, Keyring};
use crate::ledger::Ledger;
use crate::session::Sessions;
use crate::signing::{SigningParts, SigningService};
use crate::{Error, dev, telemetry};

/// A node that is bound and ready; `run` serves until SIGINT/SIGTERM.
pub struct Node {
    url: String,
    server: actix_web::dev::Server,
    peer_server: Option<actix_web::dev::Server>,
    cluster: ClusterHandle,
    ledger: Ledger,
    sessions: Sessions,
    admission: Arc<Admission>,
    checkpointer: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until shutdown, then stops the ledger actor and Raft.
    pub async fn run(self) -> Result<(), Error> {
        match self.peer_server {
            Some(peer) => {
                let (a, b) = tokio::join!(self.server, peer);
                a.map_err(Error::io("HTTP server"))?;
                b.map_err(Error::io("peer server"))?;
            }
            None => self.server.await.map_err(Error::io("HTTP server"))?,
        }
        if let Some(task) = &self.checkpointer {
            task.abort();
        }
        self.sessions.stop();
        self.admission.stop();
        self.ledger.stop();
        self.cluster.shutdown().await;
        tracing::info!("stella-signer stopped");
        Ok(())
    }
}

pub async fn build(config: Config) -> Result<Node, Error> {
    build_with_clock(config, Arc::new(SystemClock)).await
}

/// As [`build`], with an injected time source (tests lock it).
pub async fn build_with_clock(mut config: Config, clock: Arc<dyn Clock>) -> Result<Node, Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(Error::io(format!("creating {}", config.data_dir.display())))?;
    let key = keys::load_signing_key(&config.signing, config.dev)?;
    let descriptor = key.descriptor().clone();
    // A plan that demands hardware-backed keys must not fall back to a file default key.
    crate::key_policy::check_config(&config.plans, descriptor.source.as_str())?;

    // Bind first: the URL is part of the admission set-up (DPoP `htu`, the dev services).
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(Error::io(format!("binding {}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(Error::io("reading the listening address"))?;
    let scheme = if config.tls.disabled { "http" } else { "https" };
    let url = format!("{scheme}://{addr}");
    let dev_services = if config.dev {
        let setup = dev::prepare(
            &config.data_dir,
            &url,
            config.limits.max_body_bytes,
            clock.clone(),
        )?;
        config.admission = Some(setup.admission);
        config.entitlement = Some(setup.entitlement);
        config.plans = setup.plans;
        tracing::warn!(
            fulcio = %setup.keyless.fulcio_url,
            identity = dev::DEV_KEYLESS_IDENTITY,
            oidc_issuer = %setup.services.authority.issuer(),
            "dev mode: keyless signing goes to the embedded dev Fulcio and dev TSA, stand-ins with test CAs of their own (never Sigstore's services); their signatures verify only with this node's trust root (stella trust export)"
        );
        config.signing.keyless = Some(setup.keyless);
        Some(setup.services)
    } else {
        None
    };
    if config.drill.extra_grants_per_window > 0 {
        tracing::warn!(
            extra = config.drill.extra_grants_per_window,
            "[drill] extra_grants_per_window is on: this node grants signatures beyond every plan's quota (a deliberately broken build for chaos drills)"
        );
        config.drill.break_quotas(&mut config.plans);
    }
    let admission = Arc::new(build_admission(&config, clock.clone()).await?);
    let mut base_urls = vec![url.clone()];
    if let Some(section) = &config.cluster {
        base_urls.push(section.api_url.clone());
    }
    if let Some(a) = &config.admission {
        base_urls.extend(a.public_urls.iter().cloned());
    }

    let clock_for_provenance = clock.clone();
    let log_key = crate::transparency::load_log_key(&config)?.map(Arc::new);
    let cluster = start_cluster(&config).await?;
    let checkpointer = log_key.clone().map(|key| {
        crate::transparency::spawn_checkpointer(
            cluster.clone(),
            key,
            crate::transparency::Policy {
                every_records: config.audit_log.checkpoint_every_records,
                interval_ms: config.audit_log.checkpoint_interval_ms,
            },
            clock.clone(),
        )
    });
    let ledger = Ledger::start(cluster.clone(), config.limits.proposal_queue).await?;
    let sessions = Sessions::start(config.limits.max_sessions).await?;
    let threshold = threshold_backend(&config, &cluster, &admission, &base_urls).await?;
    let holders = web::Data::new(threshold.holders.clone());
    let health = crate::readiness::NodeHealth {
        actors: vec![
            ledger.health(),
            admission.entitlement_health(),
            threshold.holders.shard.health(),
        ],
        data_dir: config.data_dir.clone(),
        shutting_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        drill_kill_actors: config.drill.kill_actors,
        last_probe: Default::default(),
    };
    let signing = SigningService::new(SigningParts {
        keyring: keyring(key, &config)?.with_threshold(threshold),
        ledger: ledger.clone(),
        sessions: sessions.clone(),
        cluster: cluster.clone(),
        clock,
        quota: config.quota.clone(),
        admission: admission.clone(),
        provenance: build_provenance(&config, clock_for_provenance)?.map(Arc::new),
        backends: crate::signing::Backends::new(
            &[
                config
                    .signing
                    .pkcs11
                    .as_ref()
                    .map(|hsm| ("pkcs11", hsm.max_sessions)),
                config
                    .signing
                    .kms
                    .as_ref()
                    .map(|kms| ("kms", kms.max_concurrent)),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        ),
        request_deadline: Duration::from_secs(config.limits.request_deadline_seconds.max(1)),
        live: Default::default(),
        in_flight: Default::default(),
    });
    let preauth_every = config
        .admission
        .as_ref()
        .map_or(crate::config::default_preauth_summary_seconds(), |a| {
            a.preauth_summary_seconds
        });
    spawn_preauth_summaries(signing.clone(), Duration::from_secs(preauth_every.max(1)));
    spawn_fail_closed(signing.cluster().clone());
    let keyless = keyless_trust(&config)?;
    let metrics = telemetry::init_metrics();
    telemetry::record_certificates(&certificates(&config, &keyless));
    telemetry::zero_series(&config.plans);
    let state = web::Data::new(AppState {
        signing,
        metrics,
        body: http::body::BodyLimits {
            max_bytes: config.limits.max_body_bytes,
            deadline: Duration::from_secs(config.limits.request_deadline_seconds.max(1)),
        },
        keyless_trust: keyless,
        base_urls,
        health: health.clone(),
        audit_log: log_key.as_deref().map(crate::transparency::published),
        front_door: crate::shedding::FrontDoor::new(config.limits.max_inflight_signings),
    });

    let client_state = state.clone();
    let factory = move || {
        let app = App::new()
            .app_data(client_state.clone())
            .wrap(from_fn(http::request_context));
        match &dev_services {
            Some(dev) => app
                .service(dev::services("/dev", dev.clone()))
                .configure(http::routes),
            None => app.configure(http::routes),
        }
    };
    let server = HttpServer::new(factory)
        .shutdown_timeout(10)
        // A request's head must arrive within this bound (slow-header senders are cut off).
        // actix-web's 5 s default answered a bare 408 — no problem+json — to callers whose
        // request reached a node frozen for a few seconds (SIGSTOP in the chaos drill, a VM
        // pause, a long GC-like stall): the timer ran while the process could not read.
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .disable_signals()
        .on_connect(remember_client_certificate);
    let server = if config.tls.disabled {
        server
            .listen(listener)
            .map_err(Error::io(format!("listening on {addr}")))?
    } else {
        let tls = tls_config(&config)?;
        server
            .listen_rustls_0_23(listener, tls)
            .map_err(Error::io(format!("listening on {addr}")))?
    };

    let peer_server = match &config.cluster {
        Some(section) => {
            let tls = stella_cluster::tls::peer_server_config(&peer_tls(section)?)
                .map_err(|e| Error::Config(e.to_string()))?;
            let peer_state = state.clone();
            let cluster_id = section.cluster_id.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(peer_state.clone())
                    .app_data(holders.clone())
                    .wrap(from_fn(http::peer_access::guard))
                    .configure(http::peer_routes)
            })
            .shutdown_timeout(5)
            .disable_signals()
            .on_connect(move |conn, data| http::peer_access::remember_peer(&cluster_id, conn, data))
            .bind_rustls_0_23(section.peer_listen, tls)
            .map_err(Error::io(format!(
                "binding the peer listener {}",
                section.peer_listen
            )))?;
            Some(server.run())
        }
        None => None,
    };

    if config.dev {
        dev::publish_public_key(&config.data_dir, &descriptor.public_key.to_pem())?;
    }
    let server = server.run();
    // Signals are ours, registered before the ready line: a SIGTERM that arrives right after
    // start-up still shuts down gracefully (flushing the state machine) instead of killing.
    stop_on_signal(Shutdown {
        client: server.handle(),
        peer: peer_server.as_ref().map(|s| s.handle()),
        cluster: cluster.clone(),
        shutting_down: health.shutting_down.clone(),
        grace: Duration::from_millis(config.cluster.as_ref().map_or(0, |c| c.shutdown_grace_ms)),
    })?;
    if config.cluster.is_none()
        && cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .is_none()
    {
        return Err(Error::Unavailable(
            "the single-node cluster elected no leader".into(),
        ));
    }
    tracing::info!(url = %url, key_id = %descriptor.key_id, dev = config.dev, node_id = cluster.node_id(), "stella-signer listening");
    announce_ready(
        health.clone(),
        cluster.clone(),
        admission.clone(),
        url.clone(),
    );
    Ok(Node {
        url,
        server,
        peer_server,
        cluster,
        ledger,
        sessions,
        admission,
        checkpointer,
    })
}

/// Logs "stella-signer ready" once, when readiness first says so: a node of a cluster is ready
/// only after it was made a member (`cluster init`/`join`) and caught up, not when it listens.
fn announce_ready(
    health: crate::readiness::NodeHealth,
    cluster: ClusterHandle,
    admission: Arc<Admission>,
    url: String,
) {
    tokio::spawn(async move {
        loop {
            let report = health.report(&cluster, &admission).await;
            if report.status == "ready" {
                tracing::info!(url = %url, node_id = cluster.node_id(), "stella-signer ready");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// How long a client may take to send a request's head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code of a node whose Raft stopped on a storage error (EX_TEMPFAIL: try again later).
pub const EXIT_STORAGE_FAILED: i32 = 75;

/// Fails closed when Raft stops for good (openraft's core quits on a storage error, e.g. a full
/// disk): a node that can neither append nor apply must not linger answering 408s and slow
/// 503s. It exits at once — everything it acknowledged is already durable — and its supervisor
/// (systemd `Restart=on-failure`, `deploy/systemd/`) starts it again; it serves once its disk
/// has room, catching up from the log and its peers like any restarted node.
fn spawn_fail_closed(cluster: stella_cluster::ClusterHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            // An orderly shutdown stops Raft too: that is not a failure.
            if let Some(failure) = cluster.raft_failure() {
                tracing::error!(
                    exit_code = EXIT_STORAGE_FAILED,
                    failure = %failure,
                    "Raft stopped on a storage error (is the disk full?): failing closed; the supervisor restarts this node"
                );
                std::process::exit(EXIT_STORAGE_FAILED);
            }
        }
    });
}

/// Every `every`, the refusals before authentication this node counted go into one audit record.
fn spawn_preauth_summaries(signing: SigningService, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            signing.audit_preauth_summary().await;
        }
    });
}

/// Stores the client certificate's thumbprint with the connection (mTLS-bound tokens).
fn remember_client_certificate(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>()
        && let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
    {
        data.insert(ClientCert(crate::admission::jose::sha256_b64url(
            cert.as_ref(),
        )));
    }
}

/// The default key, the stores of registered keys and, if configured, the keyless back-end.
fn keyring(key: Arc<dyn stella_signer::KeySigner>, config: &Config) -> Result<Keyring, Error> {
    let keyring = Keyring::new(key, keys::key_stores(config)?);
    let Some(keyless) = &config.signing.keyless else {
        return Ok(keyring);
    };
    let ca = keyless
        .ca_cert
        .as_deref()
        .map(|p| std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display()))))
        .transpose()?;
    let tsa = keyless
        .tsa
        .as_ref()
        .map(|tsa| -> Result<crate::keyless::Tsa, Error> {
            let ca = tsa
                .ca_cert
                .as_deref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .map_err(Error::io(format!("reading {}", p.display())))
                })
                .transpose()?;
            let chain_der = pem_chain(&tsa.chain)?
                .iter()
                .map(|pem| {
                    CertificateDer::from_pem_slice(pem.as_bytes())
                        .map(|c| c.to_vec())
                        .map_err(|e| Error::Config(format!("{}: {e}", tsa.chain.display())))
                })
                .collect::<Result<_, _>>()?;
            Ok(crate::keyless::Tsa {
                source: crate::http_client::HttpsSource::new(
                    &tsa.url,
                    ca.as_deref(),
                    std::time::Duration::from_secs(10),
                )?,
                authorities: vec![stella_signer::timestamp::TimestampAuthority { chain_der }],
            })
        })
        .transpose()?;
    let signer = crate::keyless::KeylessSigner::new(
        &keyless.fulcio_url,
        ca.as_deref(),
        keyless.identity_token_file.clone(),
        tsa,
    )?;
    Ok(keyring.with_keyless(Arc::new(signer)))
}

/// This node's key-shard actor and the way to its peers' shards.
async fn threshold_backend(
    config: &Config,
    cluster: &stella_cluster::ClusterHandle,
    admission: &Arc<Admission>,
    base_urls: &[String],
) -> Result<crate::threshold::ThresholdBackend, Error> {
    let dir = config.data_dir.join("threshold");
    let key_file = config
        .threshold
        .share_key_file
        .clone()
        .unwrap_or_else(|| dir.join("share.key"));
    let shard = crate::threshold::Shard::start(crate::threshold::ShardConfig {
        node_id: cluster.node_id(),
        shares_dir: dir.join("shares"),
        kek: zeroize::Zeroizing::new(crate::threshold::share_key(&key_file)?),
        corrupt_shares: config.threshold.drill_corrupt_shares,
    })
    .await?;
    crate::threshold::spawn_share_sweeper(shard.clone(), dir.join("shares"), cluster.clone());
    if config.threshold.drill_tamper_as_coordinator {
        tracing::warn!(
            "[threshold] drill_tamper_as_coordinator is on: as leader, this node asks holders to sign forged statements"
        );
    }
    Ok(crate::threshold::ThresholdBackend {
        holders: crate::threshold::Holders {
            shard,
            directory: Arc::new(cluster.clone()),
            groups: Default::default(),
            gate: Some(Arc::new(crate::threshold::gate::AdmissionGate::new(
                cluster.clone(),
                admission.clone(),
                base_urls.to_vec(),
            ))),
        },
        tamper: config.threshold.drill_tamper_as_coordinator,
    })
}

/// The certificates whose expiry an alert watches: the client listener's and the peer
/// listener's chains, the CAs they trust, and the keyless CA and TSA chains.
fn certificates(
    config: &Config,
    keyless: &crate::http::KeylessTrust,
) -> Vec<(&'static str, Vec<u8>)> {
    let read =
        |path: &Option<std::path::PathBuf>| path.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut out = Vec::new();
    let files = [
        ("api_tls", read(&config.tls.cert)),
        ("client_ca", read(&config.tls.client_ca)),
        (
            "peer_tls",
            read(&config.cluster.as_ref().map(|c| c.cert.clone())),
        ),
        (
            "cluster_ca",
            read(&config.cluster.as_ref().map(|c| c.ca_cert.clone())),
        ),
    ];
    for (name, bytes) in files {
        if let Some(bytes) = bytes {
            out.push((name, bytes));
        }
    }
    let joined = |chains: &[Vec<String>]| chains.iter().flatten().cloned().collect::<String>();
    if !keyless.certificate_authorities.is_empty() {
        out.push((
            "fulcio_ca",
            joined(&keyless.certificate_authorities).into_bytes(),
        ));
    }
    if !keyless.timestamp_authorities.is_empty() {
        out.push(("tsa", joined(&keyless.timestamp_authorities).into_bytes()));
    }
    out
}

/// The keyless trust to publish: the Fulcio CA chain (`[signing.keyless] ca_chain`) and the
/// TSA chain (`[signing.keyless.tsa] chain`), PEM.
fn keyless_trust(config: &Config) -> Result<crate::http::KeylessTrust, Error> {
    let mut trust = crate::http::KeylessTrust::default();
    let Some(keyless) = &config.signing.keyless else {
        return Ok(trust);
    };
    if let Some(path) = &keyless.ca_chain {
        trust.certificate_authorities.push(pem_chain(path)?);
    }
    if let Some(tsa) = &keyless.tsa {
        trust.timestamp_authorities.push(pem_chain(&tsa.chain)?);
    }
    Ok(trust)
}

/// The certificates of a PEM file, each re-encoded as one PEM block; at least one.
fn pem_chain(path: &std::path::Path) -> Result<Vec<String>, Error> {
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let chain: Vec<String> = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map(|der| crate::pipeline::pem_certificate(der.as_ref())))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!("{}: no certificate", path.display())));
    }
    Ok(chain)
}

/// Release provenance from configuration (`None`: not enforced).
fn build_provenance(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Option<crate::admission::provenance::Provenance>, Error> {
    use crate::admission::provenance::{Provenance, ProvenanceParts};
    let Some(p) = &config.provenance else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))
    };
    let keys = p
        .trusted_keys
        .iter()
        .map(|path| {
            stella_signer::PublicKey::from_pem(&read(path)?)
                .map_err(|e| Error::Config(format!("release key {}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if keys.is_empty() {
        return Err(Error::Config(
            "[provenance] trusted_keys must name at least one release key".into(),
        ));
    }
    let mut registry = stella_release::RegistryConfig::new(&p.repository);
    registry.insecure = p.insecure_registry;
    registry.ca_pem = p.ca_cert.as_deref().map(read).transpose()?;
    registry.max_manifest_bytes = p.max_manifest_bytes;
    let registry = stella_release::Registry::new(registry)
        .map_err(|e| Error::Config(format!("[provenance] {e}")))?;
    Ok(Some(Provenance::new(ProvenanceParts {
        registry,
        keys,
        positive_cache_seconds: p.positive_cache_seconds,
        negative_cache_seconds: p.negative_cache_seconds,
        required_for: p.required_for.clone(),
        clock,
    })))
}

/// Admission from configuration: the Authority's keys, DPoP rules, the licensing client behind
/// the entitlement-cache actor, and the plans.
async fn build_admission(config: &Config, clock: Arc<dyn Clock>) -> Result<Admission, Error> {
    let (Some(a), Some(e)) = (&config.admission, &config.entitlement) else {
        return Err(Error::Config(
            "[admission] and [entitlement] are required".into(),
        ));
    };
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
    };
    let timeout = Duration::from_secs(5);
    let authority_ca = a.ca_cert.as_deref().map(read).transpose()?;
    let jwks_source = match (&a.jwks_url, &a.jwks_file) {
        (Some(url), _) => JwksSource::Url(HttpsSource::new(url, authority_ca.as_deref(), timeout)?),
        (None, Some(path)) => JwksSource::File(path.clone()),
        (None, None) => {
            return Err(Error::Config(
                "[admission] needs jwks_url or jwks_file".into(),
            ));
        }
    };
    let nonces = match &a.dpop_nonce_secret_file {
        Some(path) => {
            let secret = keys::read_secret(path)?;
            if secret.len() < 32 {
                return Err(Error::Config(format!(
                    "{}: the DPoP nonce secret must be at least 32 bytes",
                    path.display()
                )));
            }
            Some(NonceIssuer::new(&secret, a.dpop_nonce_lifetime_seconds))
        }
        None => None,
    };
    let licensing_ca = e.ca_cert.as_deref().map(read).transpose()?;
    let licensing = LicensingClient {
        endpoint: HttpsSource::new(&e.introspection_url, licensing_ca.as_deref(), timeout)?,
        client_id: e.client_id.clone(),
        client_secret: zeroize::Zeroizing::new(
            String::from_utf8(keys::read_secret(&e.client_secret_file)?)
                .map_err(|_| Error::Config("the licensing client secret is not UTF-8".into()))?
                .trim()
                .to_owned(),
        ),
    };
    let entitlements = EntitlementCache::start(
        Arc::new(licensing),
        CacheConfig {
            ttl_seconds: e.cache_ttl_seconds,
            negative_ttl_seconds: e.negative_cache_ttl_seconds,
            grace_seconds: e.grace_seconds,
        },
        clock.clone(),
    )
    .await?;
    Ok(Admission::new(AdmissionParts {
        token_policy: TokenPolicy {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            skew_seconds: a.clock_skew_seconds,
            max_lifetime_seconds: a.max_token_lifetime_seconds,
        },
        proof_policy: ProofPolicy {
            max_age_seconds: a.dpop_max_age_seconds,
            skew_seconds: a.clock_skew_seconds,
        },
        jwks: JwksCache::new(
            jwks_source,
            Duration::from_secs(a.jwks_min_refresh_seconds),
            Duration::from_secs(a.jwks_max_age_seconds),
            Duration::from_secs(a.jwks_max_stale_seconds),
        ),
        nonces,
        entitlements,
        plans: config.plans.clone(),
        bypass_plan: e.bypass_plan.clone(),
        auditor_tenants: a.auditor_tenants.clone(),
        clock,
        preauth: crate::admission::preauth::PreAuthPolicy::of(a),
    }))
}

fn peer_tls(section: &crate::config::ClusterSection) -> Result<PeerTls, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
    };
    Ok(PeerTls {
        ca_pem: read(&section.ca_cert)?,
        cert_pem: read(&section.cert)?,
        key_pem: {
            keys::owner_only(&section.key)?;
            read(&section.key)?
        },
    })
}

/// Starts Raft. A node without a `[cluster]` section is a cluster of one and initializes itself.
async fn start_cluster(config: &Config) -> Result<ClusterHandle, Error> {
    let raft_dir = config.data_dir.join("raft");
    let cluster_config = match &config.cluster {
        Some(section) => {
            let mut c = ClusterConfig::new(
                section.node_id,
                raft_dir,
                NodeAddr {
                    peer_url: section.peer_url.clone(),
                    api_url: section.api_url.clone(),
                },
                Some(peer_tls(section)?),
            );
            c.snapshot_every = section.snapshot_every;
            c.heartbeat_ms = section.heartbeat_ms;
            c.election_timeout_ms = (
                section.election_timeout_ms[0],
                section.election_timeout_ms[1],
            );
            let ip = section.peer_listen.ip();
            c.local_address = (!ip.is_unspecified()).then_some(ip);
            c
        }
        None => ClusterConfig::new(1, raft_dir, NodeAddr::default(), None),
    };
    let cluster = ClusterHandle::start(cluster_config)
        .await
        .map_err(|e| Error::Config(format!("starting Raft: {e}")))?;
    if config.cluster.is_none() {
        cluster
            .initialize()
            .await
            .map_err(|e| Error::Config(format!("initializing the single-node cluster: {e}")))?;
    }
    Ok(cluster)
}

fn tls_config(config: &Config) -> Result<rustls::ServerConfig, Error> {
    let (Some(cert_path), Some(key_path)) = (&config.tls.cert, &config.tls.key) else {
        return Err(Error::Config("[tls] cert and key are required".into()));
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("TLS certificate {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "no certificate in {}",
            cert_path.display()
        )));
    }
    keys::owner_only(key_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Config(format!("TLS key {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    // With a client CA, a certificate is asked for but optional: DPoP callers present none;
    // a token bound to a certificate (`cnf.x5t#S256`) is refused without the matching one.
    let builder = match &config.tls.client_ca {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_path)
                .map_err(|e| Error::Config(format!("client CA {}: {e}", ca_path.display())))?
            {
                let cert = cert
                    .map_err(|e| Error::Config(format!("client CA {}: {e}", ca_path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("client CA {}: {e}", ca_path.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("TLS certificate/key: {e}")))
}

/// What a graceful shutdown stops, in order.
struct Shutdown {
    client: actix_web::dev::ServerHandle,
    peer: Option<actix_web::dev::ServerHandle>,
    cluster: ClusterHandle,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
    grace: Duration,
}

/// On SIGTERM/SIGINT: not ready first (the balancer drains the node), then stop accepting and
/// finish the requests in flight (bounded by the server's shutdown timeout) while the peer
/// listener still carries Raft, then hand leadership to a caught-up voter, then stop the peer
/// listener. `Node::run` then stops the actors and Raft.
fn stop_on_signal(shutdown: Shutdown) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(Error::io("installing the SIGTERM handler"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(Error::io("installing the SIGINT handler"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: not ready, draining");
        shutdown
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        tokio::time::sleep(shutdown.grace).await;
        shutdown.client.stop(true).await;
        if shutdown.peer.is_some() {
            transfer_leadership(&shutdown.cluster).await;
        }
        if let Some(peer) = shutdown.peer {
            peer.stop(true).await;
        }
    });
    Ok(())
}

/// If this node leads: stop campaigning, let the most caught-up voter have the whole log, and
/// ask it to campaign at once (openraft 0.9 has no transfer call; this is Raft's TimeoutNow,
/// done from outside). Its vote request wins with this node's vote: the other followers still
/// hold this leader's lease and refuse, but this node's own vote was last renewed when it was
/// elected, so it grants a caught-up candidate of a newer term and steps down. Heartbeats go on
/// meanwhile, so no follower starts a competing election. Bounded; on any failure the cluster
/// elects a leader by timeout as after a crash.
async fn transfer_leadership(cluster: &ClusterHandle) {
    // A leader without a quorum cannot hand over (nobody could win); its followers elect.
    if !cluster.serving_leader() || cluster.voter_ids().len() < 2 {
        return;
    }
    cluster.begin_handover();
    let Some((target, addr)) = cluster.most_caught_up_voter() else {
        return;
    };
    // A candidacy can fail (a vote request that timed out on a busy machine, or a target that
    // fell behind again): ask up to three times. Before each ask the target's log must be as
    // long as this node's, or this node refuses its vote — signings that were running still
    // append their entries, so compare with the newest last index each time.
    let mut asks = 0;
    let mut moved = false;
    let mut caught_up = false;
    while asks < 3 && !moved {
        asks += 1;
        caught_up = cluster
            .raft()
            .wait(Some(Duration::from_secs(2)))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&target).cloned().flatten())
                        .map(|l| l.index)
                        >= m.last_log_index
                },
                "target caught up",
            )
            .await
            .is_ok();
        let _: Result<serde_json::Value, _> = cluster
            .peers()
            .post(
                &addr.peer_url,
                crate::http::peer_access::PEER_ELECT,
                &serde_json::json!({}),
                Duration::from_secs(2),
            )
            .await;
        moved = cluster
            .raft()
            .wait(Some(Duration::from_secs(1)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != cluster.node_id()),
                "leadership moved",
            )
            .await
            .is_ok();
    }
    tracing::info!(target, caught_up, asks, moved, "leadership transfer");
}

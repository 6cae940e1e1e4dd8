//! Composition root: config → keys → listener → admission (JWKS cache, entitlement-cache
//! actor; the embedded dev Authority and licensing service in dev mode) → cluster (Raft on
//! redb) → ledger actor → signing service → client listener (+ peer listener with mutual TLS
//! in cluster mode).

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use stella_cluster::ClusterHandle;

use crate::admission::Admission;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::keys;
use crate::ledger::Ledger;
use crate::session::Sessions;
use crate::signing::{SigningParts, SigningService};
use crate::{Error, dev, telemetry};

mod admission;
mod key_backends;
mod lifecycle;
mod listeners;

use admission::{build_admission, build_provenance};
use key_backends::{certificates, keyless_trust, keyring, threshold_backend};
use lifecycle::{
    Shutdown, announce_ready, spawn_fail_closed, spawn_preauth_summaries, stop_on_signal,
};
use listeners::{peer_tls, remember_client_certificate, start_cluster, tls_config};

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
        front_door: crate::shedding::FrontDoor::new(
            config.limits.max_inflight_signings,
            config.limits.per_tenant(),
        ),
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

/// How long a client may take to send a request's head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code of a node whose Raft stopped on a storage error (EX_TEMPFAIL: try again later).
pub const EXIT_STORAGE_FAILED: i32 = 75;

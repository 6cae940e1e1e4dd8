//! Composition root: config → keys → authenticator → cluster (Raft on redb) → ledger actor →
//! signing service → client listener (+ peer listener with mutual TLS in cluster mode).

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stella_cluster::{ClusterConfig, ClusterHandle, PeerTls};
use stella_signer::KeySigner;
use stella_state::raft_types::NodeAddr;

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AppState};
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
        self.sessions.stop();
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
pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Node, Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(Error::io(format!("creating {}", config.data_dir.display())))?;
    let (key, auth) = if config.dev {
        let (key, created) = keys::load_or_create_file_key(&config.signing.key_file)?;
        if created {
            tracing::info!(key_id = %key.descriptor().key_id, path = %config.signing.key_file.display(), "created dev signing key");
        }
        let hash = dev::dev_token_hash(&config.data_dir)?;
        (
            key,
            Authenticator::new([(dev::DEV_TENANT, hash.as_str(), true)])?,
        )
    } else {
        let key = keys::load_file_key(&config.signing.key_file)?;
        let tenants = config
            .tenants
            .iter()
            .map(|t| (t.id.as_str(), t.token_sha256.as_str(), t.auditor));
        (key, Authenticator::new(tenants)?)
    };
    let descriptor = key.descriptor().clone();

    let cluster = start_cluster(&config).await?;
    let ledger = Ledger::start(cluster.clone(), config.limits.proposal_queue).await?;
    let sessions = Sessions::start(config.limits.max_sessions).await?;
    let signing = SigningService::new(SigningParts {
        keyring: Keyring::single(Arc::new(key)),
        ledger: ledger.clone(),
        sessions: sessions.clone(),
        cluster: cluster.clone(),
        clock,
        quota: config.quota.clone(),
    });
    let state = web::Data::new(AppState {
        signing,
        auth,
        metrics: telemetry::init_metrics(),
        max_body_bytes: config.limits.max_body_bytes,
    });

    let client_state = state.clone();
    let factory = move || {
        App::new()
            .app_data(client_state.clone())
            .wrap(from_fn(http::request_context))
            .configure(http::routes)
    };
    let server = HttpServer::new(factory)
        .shutdown_timeout(10)
        .disable_signals();
    let (server, scheme) = if config.tls.disabled {
        (
            server
                .bind(config.listen)
                .map_err(Error::io(format!("binding {}", config.listen)))?,
            "http",
        )
    } else {
        let tls = tls_config(&config)?;
        (
            server
                .bind_rustls_0_23(config.listen, tls)
                .map_err(Error::io(format!("binding {}", config.listen)))?,
            "https",
        )
    };
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Config("no listening address".into()))?;
    let url = format!("{scheme}://{addr}");

    let peer_server = match &config.cluster {
        Some(section) => {
            let tls = stella_cluster::tls::peer_server_config(&peer_tls(section)?)
                .map_err(|e| Error::Config(e.to_string()))?;
            let peer_state = state.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(peer_state.clone())
                    .configure(http::peer_routes)
            })
            .shutdown_timeout(5)
            .disable_signals()
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
        dev::publish(&config.data_dir, &url, &descriptor.public_key.to_pem())?;
    }
    let server = server.run();
    // Signals are ours, registered before the ready line: a SIGTERM that arrives right after
    // start-up still shuts down gracefully (flushing the state machine) instead of killing.
    stop_on_signal(server.handle(), peer_server.as_ref().map(|s| s.handle()))?;
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
    tracing::info!(url = %url, key_id = %descriptor.key_id, dev = config.dev, node_id = cluster.node_id(), "stella-signer ready");
    Ok(Node {
        url,
        server,
        peer_server,
        cluster,
        ledger,
        sessions,
    })
}

fn peer_tls(section: &crate::config::ClusterSection) -> Result<PeerTls, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
    };
    Ok(PeerTls {
        ca_pem: read(&section.ca_cert)?,
        cert_pem: read(&section.cert)?,
        key_pem: read(&section.key)?,
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
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Config(format!("TLS key {}: {e}", key_path.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Config(format!("TLS certificate/key: {e}")))
}

fn stop_on_signal(
    client: actix_web::dev::ServerHandle,
    peer: Option<actix_web::dev::ServerHandle>,
) -> Result<(), Error> {
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
        tracing::info!("shutting down");
        if let Some(peer) = peer {
            peer.stop(true).await;
        }
        client.stop(true).await;
    });
    Ok(())
}

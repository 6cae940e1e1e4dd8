//! Composition root: config → keys → authenticator → audit log → services → HTTP server.

use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stella_signer::KeySigner;

use crate::audit_log::AuditLog;
use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::keys::{self, Keyring};
use crate::signing::SigningService;
use crate::{Error, dev, telemetry};

/// A node that is bound and ready; `run` serves until SIGINT/SIGTERM.
pub struct Node {
    url: String,
    server: actix_web::dev::Server,
    audit_writer: JoinHandle<()>,
}

impl Node {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until shutdown, then waits for the audit writer to flush and stop.
    pub async fn run(self) -> Result<(), Error> {
        self.server.await.map_err(Error::io("HTTP server"))?;
        let _ = tokio::task::spawn_blocking(move || self.audit_writer.join()).await;
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
        (key, Authenticator::new([(dev::DEV_TENANT, hash.as_str())])?)
    } else {
        let key = keys::load_file_key(&config.signing.key_file)?;
        (
            key,
            Authenticator::new(
                config
                    .tenants
                    .iter()
                    .map(|t| (t.id.as_str(), t.token_sha256.as_str())),
            )?,
        )
    };
    let descriptor = key.descriptor().clone();

    let (audit, recovered, audit_writer) =
        AuditLog::open(&config.data_dir.join("audit"), config.limits.audit_queue)?;
    tracing::info!(
        records = recovered.records,
        truncated_bytes = recovered.truncated_bytes,
        "audit log verified"
    );

    let keyring = Keyring::single(Arc::new(key));
    let state = web::Data::new(AppState {
        signing: SigningService::new(keyring, audit, clock),
        auth,
        metrics: telemetry::init_metrics(),
        max_body_bytes: config.limits.max_body_bytes,
    });

    let factory = move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(http::request_context))
            .configure(http::routes)
    };
    let server = HttpServer::new(factory).shutdown_timeout(10);
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
    if config.dev {
        dev::publish(&config.data_dir, &url, &descriptor.public_key.to_pem())?;
    }
    let server = server.run();
    tracing::info!(url = %url, key_id = %descriptor.key_id, dev = config.dev, "stella-signer ready");
    Ok(Node {
        url,
        server,
        audit_writer,
    })
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

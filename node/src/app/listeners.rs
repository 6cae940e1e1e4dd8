//! The transports: the client listener's TLS (and the client certificate it remembers per
//! connection), and Raft with its peer TLS.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stella_cluster::{ClusterConfig, ClusterHandle, PeerTls};
use stella_state::raft_types::NodeAddr;

use crate::config::Config;
use crate::http::ClientCert;
use crate::{Error, keys};

/// Stores the client certificate's thumbprint with the connection (mTLS-bound tokens).
pub(super) fn remember_client_certificate(
    conn: &dyn std::any::Any,
    data: &mut actix_web::dev::Extensions,
) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>()
        && let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
    {
        data.insert(ClientCert(crate::admission::jose::sha256_b64url(
            cert.as_ref(),
        )));
    }
}

pub(super) fn peer_tls(section: &crate::config::ClusterSection) -> Result<PeerTls, Error> {
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
pub(super) async fn start_cluster(config: &Config) -> Result<ClusterHandle, Error> {
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

pub(super) fn tls_config(config: &Config) -> Result<rustls::ServerConfig, Error> {
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

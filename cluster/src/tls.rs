//! rustls configuration of the peer listener: TLS 1.3/1.2 with a client certificate from the
//! cluster CA required. A peer without one never gets past the handshake.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ClusterError, PeerTls};

pub fn peer_server_config(tls: &PeerTls) -> Result<rustls::ServerConfig, ClusterError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| ClusterError::Tls(format!("cluster CA: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| ClusterError::Tls(format!("cluster CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClusterError::Tls(format!("client verifier: {e}")))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ClusterError::Tls(format!("node certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| ClusterError::Tls(format!("node key: {e}")))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ClusterError::Tls(format!("node certificate/key: {e}")))
}

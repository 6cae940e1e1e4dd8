//! The signing back-ends from configuration: the keyring (default key, key stores, keyless),
//! the threshold shard and its peers, and the certificates and keyless trust the node
//! publishes and watches.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;
use crate::admission::Admission;
use crate::config::Config;
use crate::keys::{self, Keyring};

/// The default key, the stores of registered keys and, if configured, the keyless back-end.
pub(super) fn keyring(
    key: Arc<dyn stella_signer::KeySigner>,
    config: &Config,
) -> Result<Keyring, Error> {
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
pub(super) async fn threshold_backend(
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
pub(super) fn certificates(
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
pub(super) fn keyless_trust(config: &Config) -> Result<crate::http::KeylessTrust, Error> {
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
pub(super) fn pem_chain(path: &std::path::Path) -> Result<Vec<String>, Error> {
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

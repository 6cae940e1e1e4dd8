//! G5 for threshold keys, per suite (Ed25519, secp256k1 BIP-340): FROST signing over the
//! network against the FROST protocol run in memory, measured in the same run (goal: network
//! p50 ≤ 5× in-process p50).
//!
//! - In process: the three holders' shares in one address space; commit, sign and aggregate
//!   (with every share verified and the result checked by an independent verifier)
//!   back to back — [`stella_signer::threshold::in_process_sign`].
//! - Over the network: the production path. Three key-shard actors, each behind its own peer
//!   listener (mutual TLS with the cluster PKI, JSON over HTTP/1.1 on loopback, the node's own
//!   routes), a distributed key generation between them, then the leader's
//!   [`ThresholdKeySigner`] running both FROST rounds with `t = 2` holders — one local, one
//!   remote — exactly as a node does for a signing request (the signer built from the group
//!   per signature, holders checking their share against the group's verifying share).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stella_cluster::{PeerClient, PeerTls};
use stella_node::threshold::{
    Directory, Holders, Shard, ShardConfig, ThresholdKeySigner, generate,
};
use stella_signer::threshold::{SuiteId, ThresholdParams, dkg_in_process, in_process_sign};
use stella_state::command::ThresholdGroup;

pub struct Row {
    pub name: String,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Peer addresses fixed for the bench (a node takes them from its Raft membership), and the
/// key's group once generated (a node reads it from its registry on every commit).
struct StaticDirectory {
    me: u64,
    urls: BTreeMap<u64, String>,
    peers: PeerClient,
    group: Arc<std::sync::OnceLock<ThresholdGroup>>,
}

impl Directory for StaticDirectory {
    fn me(&self) -> u64 {
        self.me
    }

    fn peer_url(&self, node: u64) -> Option<String> {
        self.urls.get(&node).cloned()
    }

    fn peers(&self) -> &PeerClient {
        &self.peers
    }

    /// The bench's one key is active by construction.
    fn may_sign(&self, _key_id: &str) -> bool {
        true
    }

    fn threshold_group(&self, _key_id: &str) -> Option<ThresholdGroup> {
        self.group.get().cloned()
    }
}

pub async fn measure(suite: SuiteId, pae: &[u8], duration: Duration) -> anyhow::Result<(Row, Row)> {
    let in_process = in_process_row(suite, pae, duration)?;
    let network = network_row(suite, pae, duration).await?;
    Ok((in_process, network))
}

fn in_process_row(suite: SuiteId, pae: &[u8], duration: Duration) -> anyhow::Result<Row> {
    let (shares, group) = dkg_in_process(suite, b"bench", ThresholdParams::new(2, 3)?)?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        in_process_sign(&shares[..2], &group, pae)?;
        latencies.push(t.elapsed());
    }
    Ok(row(
        format!("FROST {suite} in process"),
        latencies,
        started.elapsed(),
    ))
}

async fn network_row(suite: SuiteId, pae: &[u8], duration: Duration) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    stella_cluster::pki::generate_dev_pki(
        &pki,
        stella_cluster::identity::DEFAULT_CLUSTER_ID,
        3,
        &["127.0.0.1".to_owned()],
    )?;
    let read = |name: &str| std::fs::read_to_string(pki.join(name));
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let urls: BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Ok((i as u64 + 1, format!("https://{}", l.local_addr()?))))
        .collect::<std::io::Result<_>>()?;
    let mut holders = Vec::new();
    let registry = Arc::new(std::sync::OnceLock::new());
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let tls = PeerTls {
            ca_pem: read("ca.pem")?,
            cert_pem: read(&format!("node-{id}.pem"))?,
            key_pem: read(&format!("node-{id}.key"))?,
        };
        let node = Holders {
            shard: Shard::start(ShardConfig {
                node_id: id,
                shares_dir: dir.path().join(format!("node-{id}")),
                kek: zeroize::Zeroizing::new([id as u8; 32]),
                corrupt_shares: false,
            })
            .await?,
            directory: Arc::new(StaticDirectory {
                me: id,
                urls: urls.clone(),
                peers: PeerClient::new(Some(&tls), None)?,
                group: registry.clone(),
            }),
            groups: Default::default(),
            // No admissions here: this measures the FROST rounds and their transport.
            gate: None,
        };
        let data = actix_web::web::Data::new(node.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .configure(stella_node::http::threshold_peer_routes)
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, stella_cluster::tls::peer_server_config(&tls)?)?
        .run();
        tokio::spawn(server);
        holders.push(node);
    }
    let (group, assignment) = generate(&holders[0], suite, 2, &[1, 2, 3])
        .await
        .map_err(anyhow::Error::msg)?;
    let group = ThresholdGroup {
        min_signers: 2,
        holders: assignment,
        public_key_package: group.to_bytes()?,
    };
    let _ = registry.set(group.clone());
    // As on a node: the signer is built from the registry's group for every signature, and
    // every holder checks its share against the group's verifying share on commit.
    let sign_once = || async {
        let signer = ThresholdKeySigner::new(holders[0].clone(), &group, "bench", false)
            .map_err(anyhow::Error::msg)?;
        signer.sign_async(pae).await?;
        anyhow::Ok(())
    };
    // Warm the peer connections before measuring.
    sign_once().await?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        sign_once().await?;
        latencies.push(t.elapsed());
    }
    Ok(row(
        format!("FROST {suite} over network"),
        latencies,
        started.elapsed(),
    ))
}

fn row(name: String, mut latencies: Vec<Duration>, elapsed: Duration) -> Row {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Row {
        name,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

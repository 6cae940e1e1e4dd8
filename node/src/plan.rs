//! `stella-signer cluster plan`: everything a cluster needs before its first start — PKI,
//! shared keys, one configuration per node, the load balancer's and Prometheus's
//! configuration, and the client credentials — so nobody has to find a value in the code.
//!
//! The identity services (Authority, licensing) are a dev node's stand-ins (`serve --dev` with
//! its own data directory, `--identity-dir`/`--identity-url`): the plan takes their issuer,
//! JWKS, introspection client and the plan hidden in the dev license from the same code that
//! sets them up (`dev::prepare`). [`render`] decides every file's content without I/O; [`write`]
//! makes keys and certificates and writes the files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::config::{AdmissionConfig, EntitlementConfig, PlanConfig};

/// What the operator chose.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: u64,
    /// The address the balancer and Prometheus use, and every node's when `hosts` is empty
    /// (loopback for a local cluster).
    pub host: String,
    /// One host per node (`--hosts a,b,c`): node `i` binds and is named by `hosts[i-1]`, on
    /// the same ports as the others. Empty: every node on `host`, ports offset by node.
    pub hosts: Vec<String>,
    /// Node `i` serves clients on `api_port + i - 1` and peers on `peer_port + i - 1`.
    pub api_port: u16,
    pub peer_port: u16,
    /// The load balancer's client port, and Prometheus's.
    pub lb_port: u16,
    pub prometheus_port: u16,
    pub cluster_id: String,
}

/// The identity services' side of every node's configuration.
pub struct Identity {
    pub admission: AdmissionConfig,
    pub entitlement: EntitlementConfig,
    pub plans: Vec<PlanConfig>,
}

impl Layout {
    fn offset(&self, id: u64) -> u16 {
        if self.hosts.is_empty() {
            (id - 1) as u16
        } else {
            0
        }
    }

    fn api(&self, id: u64) -> u16 {
        self.api_port.saturating_add(self.offset(id))
    }

    fn peer(&self, id: u64) -> u16 {
        self.peer_port.saturating_add(self.offset(id))
    }

    /// The host node `id` binds and is named by.
    pub fn node_host(&self, id: u64) -> &str {
        self.hosts
            .get((id - 1) as usize)
            .map_or(self.host.as_str(), String::as_str)
    }

    /// Every name the node certificates must carry.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.host.clone()];
        names.extend(self.hosts.iter().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// The URL clients use: the load balancer's.
    pub fn public_url(&self) -> String {
        format!("https://{}:{}", self.host, self.lb_port)
    }
}

fn quote(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Every file of the plan but the PKI and the keys, as (path under the plan directory,
/// content). `dir` is the plan directory as the nodes will see it (absolute).
pub fn render(layout: &Layout, identity: &Identity, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let admission = &identity.admission;
    let entitlement = &identity.entitlement;
    let plans: String = identity
        .plans
        .iter()
        .map(|p| {
            format!(
                "[[plans]]\nname = {name}\nsignatures_per_window = {per}\nwindow_seconds = {win}\nmax_concurrent = {conc}\nmax_artifact_bytes = {bytes}\nshared_default_key = {shared}\n",
                name = toml::Value::String(p.name.clone()),
                per = p.signatures_per_window,
                win = p.window_seconds,
                conc = p.max_concurrent,
                bytes = p.max_artifact_bytes,
                shared = p.shared_default_key,
            )
        })
        .collect();
    let auditors = toml::Value::Array(
        admission
            .auditor_tenants
            .iter()
            .cloned()
            .map(toml::Value::String)
            .collect(),
    );
    for id in 1..=layout.nodes {
        let host = layout.node_host(id);
        let node_dir = dir.join(format!("node-{id}"));
        let config = format!(
            "# Node {id} of {n} (written by `stella-signer cluster plan`; docs/configuration.md).\n\
             listen = \"{host}:{api}\"\n\
             data_dir = {data}\n\n\
             # Clients reach the node through the balancer, which passes TLS through: the node\n\
             # terminates it (mTLS-bound tokens need the caller's certificate here).\n\
             [tls]\ncert = {cert}\nkey = {key}\n\n\
             [signing]\nkey_file = {signing}\n\n\
             [audit_log]\nkey_file = {log_key}\n\n\
             # The identity services (here: a dev node's stand-ins at {identity}).\n\
             [admission]\nissuer = {issuer}\naudience = {audience}\njwks_url = {jwks}\n\
             auditor_tenants = {auditors}\n\
             # DPoP proofs name the URL the client used: the balancer's.\n\
             public_urls = [{public}]\n\n\
             [entitlement]\nintrospection_url = {introspect}\nclient_id = {client}\n\
             client_secret_file = {secret}\nbypass_plan = {bypass}\n\n\
             {plans}\n\
             [cluster]\ncluster_id = {cluster_id}\nnode_id = {id}\n\
             peer_listen = \"{host}:{peer}\"\npeer_url = \"https://{host}:{peer}\"\n\
             api_url = \"https://{host}:{api}\"\n\
             ca_cert = {ca}\ncert = {cert}\nkey = {key}\n",
            n = layout.nodes,
            api = layout.api(id),
            peer = layout.peer(id),
            data = quote(&node_dir.join("data")),
            cert = quote(&dir.join(format!("pki/node-{id}.pem"))),
            key = quote(&dir.join(format!("pki/node-{id}.key"))),
            ca = quote(&dir.join("pki/ca.pem")),
            signing = quote(&dir.join("keys/signing.pem")),
            log_key = quote(&dir.join("keys/log-key.pem")),
            identity = admission.issuer,
            issuer = toml::Value::String(admission.issuer.clone()),
            audience = toml::Value::String(admission.audience.clone()),
            jwks = toml::Value::String(admission.jwks_url.clone().unwrap_or_default()),
            public = toml::Value::String(layout.public_url()),
            introspect = toml::Value::String(entitlement.introspection_url.clone()),
            client = toml::Value::String(entitlement.client_id.clone()),
            secret = quote(&entitlement.client_secret_file),
            bypass = toml::Value::String(entitlement.bypass_plan.clone()),
            cluster_id = toml::Value::String(layout.cluster_id.clone()),
        );
        files.push((PathBuf::from(format!("node-{id}/node.toml")), config));
    }
    files.push((PathBuf::from("haproxy.cfg"), haproxy(layout, dir)));
    files.push((
        PathBuf::from("prometheus/prometheus.yml"),
        prometheus(layout, dir),
    ));
    files
}

/// HAProxy in TCP mode (TLS passes through to the nodes), health-checking `/readyz` over TLS:
/// a node that is not ready (no leader, not a member, shutting down) gets no new connections.
fn haproxy(layout: &Layout, dir: &Path) -> String {
    let servers: String = (1..=layout.nodes)
        .map(|id| {
            format!(
                "    server node-{id} {host}:{api} check check-ssl verify required ca-file {ca} inter 1s fall 2 rise 2\n",
                host = layout.node_host(id),
                api = layout.api(id),
                ca = dir.join("pki/ca.pem").display(),
            )
        })
        .collect();
    format!(
        "# Written by `stella-signer cluster plan` (docs/runbooks/deploy.md).\n\
         global\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    \
         option redispatch\n    retries 2\n\n\
         frontend stella_signer\n    bind {host}:{lb}\n    default_backend stella_signer_nodes\n\n\
         backend stella_signer_nodes\n    balance roundrobin\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n{servers}",
        host = layout.host,
        lb = layout.lb_port,
    )
}

fn prometheus(layout: &Layout, dir: &Path) -> String {
    let targets: Vec<String> = (1..=layout.nodes)
        .map(|id| format!("\"{}:{}\"", layout.node_host(id), layout.api(id)))
        .collect();
    format!(
        "# Written by `stella-signer cluster plan`; the rules are deploy/prometheus's.\n\
         global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
         rule_files:\n  - stella-signer.rules.yml\n\
         scrape_configs:\n  - job_name: stella-signer\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    \
         static_configs:\n      - targets: [{targets}]\n",
        ca = dir.join("pki/ca.pem").display(),
        targets = targets.join(", "),
    )
}

/// Writes the plan into `dir`: PKI (cluster CA, node and operator certificates naming
/// `layout.host`), the shared signing and log keys, the rendered files, and
/// `client/credentials.json` — the identity dev node's client, pointed at the balancer and
/// trusting the cluster CA (`stella … --credentials DIR/client`).
pub fn write(
    layout: &Layout,
    dir: &Path,
    identity_dir: &Path,
    identity_url: &str,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(Error::io(format!("resolving {}", dir.display())))?;
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let setup = crate::dev::prepare(
        identity_dir,
        identity_url,
        crate::config::DEFAULT_MAX_BODY_BYTES,
        clock,
    )?;
    let identity = Identity {
        admission: setup.admission,
        entitlement: setup.entitlement,
        plans: setup.plans,
    };
    stella_cluster::pki::generate_dev_pki(
        &dir.join("pki"),
        &layout.cluster_id,
        layout.nodes,
        &layout.names(),
    )
    .map_err(|e| Error::Config(format!("generating the PKI: {e}")))?;
    let keys = dir.join("keys");
    let signing = stella_signer::FileKeySigner::generate()?;
    crate::keys::write_secret_atomically(
        &keys.join("signing.pem"),
        signing.to_pkcs8_pem().as_bytes(),
    )?;
    crate::keys::write_atomically(
        &keys.join("signing.pub.pem"),
        signing.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    crate::keys::write_secret_atomically(
        &keys.join("log-key.pem"),
        stella_signer::note::LogKey::generate_pkcs8_pem()?.as_bytes(),
    )?;
    for (path, content) in render(layout, &identity, &dir) {
        crate::keys::write_atomically(&dir.join(path), content.as_bytes(), 0o644)?;
    }
    let creds_path = identity_dir
        .join("dev")
        .join(stella_api::credentials::CREDENTIALS_FILE);
    let mut creds = stella_api::Credentials::load(&creds_path).map_err(Error::Config)?;
    creds.server = layout.public_url();
    creds.ca_cert_pem = Some(
        std::fs::read_to_string(dir.join("pki/ca.pem"))
            .map_err(Error::io("reading the cluster CA".to_owned()))?,
    );
    let json = serde_json::to_vec_pretty(&creds)
        .map_err(|e| Error::Config(format!("credentials: {e}")))?;
    crate::keys::write_secret_atomically(&dir.join("client").join("credentials.json"), &json)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            nodes: 3,
            host: "127.0.0.1".into(),
            hosts: Vec::new(),
            api_port: 18443,
            peer_port: 19443,
            lb_port: 18440,
            prometheus_port: 19090,
            cluster_id: "local".into(),
        }
    }

    fn identity() -> Identity {
        let toml = r#"
            [admission]
            issuer = "http://127.0.0.1:18400/dev/authority"
            jwks_url = "http://127.0.0.1:18400/dev/authority/jwks.json"
            auditor_tenants = ["dev"]
            [entitlement]
            introspection_url = "http://127.0.0.1:18400/dev/licensing/introspect"
            client_id = "stella-signer"
            client_secret_file = "/x/licensing-client-secret"
            bypass_plan = "dev"
        "#;
        #[derive(serde::Deserialize)]
        struct Parts {
            admission: AdmissionConfig,
            entitlement: EntitlementConfig,
        }
        let parts: Parts = toml::from_str(toml).expect("identity");
        Identity {
            admission: parts.admission,
            entitlement: parts.entitlement,
            plans: vec![PlanConfig {
                name: "dev".into(),
                signatures_per_window: 1000,
                window_seconds: 3600,
                max_concurrent: 10,
                max_artifact_bytes: 1 << 20,
                shared_default_key: true,
                require_hardware_backed: false,
                max_key_age_seconds: None,
                key_age_grace_seconds: 0,
            }],
        }
    }

    #[test]
    fn every_node_configuration_parses_and_names_its_own_ports_and_the_balancer() {
        let files = render(&layout(), &identity(), Path::new("/plan"));
        for id in 1..=3u16 {
            let (_, text) = files
                .iter()
                .find(|(p, _)| p == Path::new(&format!("node-{id}/node.toml")))
                .expect("node config");
            let config: crate::config::Config = toml::from_str(text).expect("a valid config");
            assert_eq!(config.listen.port(), 18442 + id);
            let cluster = config.cluster.expect("cluster");
            assert_eq!(
                cluster.peer_url,
                format!("https://127.0.0.1:{}", 19442 + id)
            );
            assert_eq!(cluster.api_url, format!("https://127.0.0.1:{}", 18442 + id));
            let admission = config.admission.expect("admission");
            assert_eq!(admission.public_urls, vec!["https://127.0.0.1:18440"]);
            assert_eq!(config.plans[0].name, "dev");
        }
        let (_, lb) = files
            .iter()
            .find(|(p, _)| p == Path::new("haproxy.cfg"))
            .expect("haproxy");
        assert!(lb.contains("bind 127.0.0.1:18440"));
        assert!(lb.contains("option httpchk GET /readyz"));
        assert_eq!(lb.matches("server node-").count(), 3);
    }

    #[test]
    fn the_shipped_example_configuration_parses() {
        let text = include_str!("../../deploy/config/node.example.toml");
        let config: crate::config::Config = toml::from_str(text).expect("example config");
        assert_eq!(config.cluster.expect("cluster").node_id, 1);
        let kms = config.signing.kms.expect("[signing.kms]");
        assert_eq!(kms.settings().expect("valid").region, "eu-west-1");
    }

    #[test]
    fn one_host_per_node_keeps_the_ports_and_names_each_host() {
        let layout = Layout {
            hosts: vec!["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.3".into()],
            ..layout()
        };
        let files = render(&layout, &identity(), Path::new("/plan"));
        let (_, text) = files
            .iter()
            .find(|(p, _)| p == Path::new("node-2/node.toml"))
            .expect("node 2");
        let config: crate::config::Config = toml::from_str(text).expect("config");
        assert_eq!(config.listen.to_string(), "10.0.0.2:18443");
        assert_eq!(
            config.cluster.expect("cluster").peer_url,
            "https://10.0.0.2:19443"
        );
        let (_, lb) = files
            .iter()
            .find(|(p, _)| p == Path::new("haproxy.cfg"))
            .expect("haproxy");
        assert!(lb.contains("server node-3 10.0.0.3:18443"));
        assert_eq!(
            layout.names(),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "127.0.0.1"]
        );
    }
}

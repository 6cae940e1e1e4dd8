//! Test harness: runs the real `stella-signer` and `stella` binaries as processes on loopback.
//!
//! Binaries are found next to the test executable (`target/<profile>/`, also for the drill), or in
//! `STELLA_BIN_DIR`; `scripts/test.sh` builds them before the tests run.

pub mod drill;
pub mod moto;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

mod services;
pub use services::{
    HARDWARE_PLAN, OWN_KEYS_PLAN, PLAN, QUOTA_TENANTS, ROTATING_AGE_SECONDS,
    ROTATING_GRACE_SECONDS, ROTATING_PLAN, Services, TENANT_A, clients,
};
pub use stella_api::{Client, ClientConfig, Credentials};

pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STELLA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>, or target/<profile>/<binary> (the drill)
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("target/<profile>");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("repo root")
    .to_path_buf()
}

/// A running `stella-signer` process whose stdout (JSON logs) is captured.
pub struct NodeProcess {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// `stella-signer serve --dev --data-dir DIR --listen 127.0.0.1:0`
    pub fn start_dev(data_dir: &Path) -> NodeProcess {
        let args = [
            "serve",
            "--dev",
            "--data-dir",
            data_dir.to_str().expect("utf8 path"),
            "--listen",
            "127.0.0.1:0",
        ];
        NodeProcess::start(&args, data_dir)
    }

    pub fn start(args: &[&str], data_dir: &Path) -> NodeProcess {
        NodeProcess::start_with_env(args, data_dir, &[])
    }

    /// As [`NodeProcess::start`], with more environment variables (e.g. cloud credentials).
    pub fn start_with_env(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> NodeProcess {
        let mut child = Command::new(bin("stella-signer"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stella-signer");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The listening line names the URL; "ready" comes once the node is a
                // member that can sign (a cluster node only after `cluster init`/`join`).
                if line.contains("stella-signer listening") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "node did not become ready; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let ready: Value = serde_json::from_str(&ready).expect("ready line is JSON");
        let url = ready["url"].as_str().expect("url in ready line").to_owned();
        NodeProcess {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        send_signal(&self.child, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the node") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("node did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dev_dir(&self) -> PathBuf {
        self.data_dir.join("dev")
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.dev_dir().join("signing-key.pub.pem")
    }

    pub fn credentials(&self) -> Credentials {
        Credentials::load(&self.dev_dir()).expect("dev credentials")
    }

    /// A client with the dev credentials, already holding a token and a DPoP nonce.
    pub fn client(&self) -> Client {
        client_for(&self.url, self.credentials())
    }
}

/// Writes `DIR/node.toml` for a single configured node — plain HTTP on a free loopback port,
/// data under `DIR/data`, admission by the stand-ins `services` with one plan (`PLAN`) — plus
/// the TOML tables in `sections` (`[signing]` at least), and starts it.
pub fn start_configured_node(dir: &Path, services: &Services, sections: &str) -> NodeProcess {
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\n[tls]\ndisabled = true\n{sections}\n{admission}",
        d = dir.display(),
        admission = services.node_toml(&[(PLAN, 1000, 100, 1024 * 1024)], ""),
    );
    std::fs::write(dir.join("node.toml"), config).expect("config");
    start_node_config(dir)
}

/// Starts (or restarts) the node configured by `DIR/node.toml`, its data under `DIR/data`.
pub fn start_node_config(dir: &Path) -> NodeProcess {
    NodeProcess::start(
        &[
            "serve",
            "--config",
            dir.join("node.toml").to_str().expect("utf8"),
        ],
        &dir.join("data"),
    )
}

/// A client for `url`, primed: it has obtained its token and the server's DPoP nonce, so raw
/// requests built with [`authed`] are accepted at the first attempt.
pub fn client_for(url: &str, credentials: Credentials) -> Client {
    let client = Client::new(ClientConfig {
        server: url.to_owned(),
        credentials,
        timeout: Duration::from_secs(30),
    })
    .expect("client");
    let _ = client.audit(&[("limit", "1".to_owned())]);
    client
}

/// Adds a fresh `Authorization` + `DPoP` pair for `method url` to a hand-built request.
pub fn authed(
    client: &Client,
    request: reqwest::blocking::RequestBuilder,
    method: &str,
    url: &str,
) -> reqwest::blocking::RequestBuilder {
    let mut request = request;
    for (name, value) in client.auth_headers(method, url).expect("auth headers") {
        request = request.header(name, value);
    }
    request
}

/// The sample request with the client's PoE, as JSON.
pub fn sbom_request_for(client: &Client) -> Value {
    let mut request = sbom_request_json();
    if let Some(poe) = &client.credentials().poe {
        request["poe"] = serde_json::to_value(poe).expect("poe");
    }
    request
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `stella` CLI and requires it to succeed (its stderr is the failure message).
pub fn stella_ok(args: &[&str]) -> Output {
    let out = stella(args);
    assert!(
        out.status.success(),
        "stella {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `stella` CLI.
pub fn stella(args: &[&str]) -> Output {
    Command::new(bin("stella"))
        .args(args)
        .output()
        .expect("run stella")
}

/// Runs `stella-signer audit verify` and returns its JSON.
pub fn audit_verify(data_dir: &Path) -> Result<Value, String> {
    let out = Command::new(bin("stella-signer"))
        .args([
            "audit",
            "verify",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("run audit verify");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Every audit record of a stopped node (`stella-signer audit export`).
pub fn audit_records(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(bin("stella-signer"))
        .args([
            "audit",
            "export",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("run audit export");
    assert!(
        out.status.success(),
        "audit export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Audit records through a running node's API (`GET /api/v1/signer/audit`).
pub fn audit_api(client: &Client, query: &str) -> Value {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let pairs: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    serde_json::to_value(client.audit(&pairs).expect("audit request")).expect("audit json")
}

/// Independent verifiers shipped in `tests/verifiers/` (sigstore-js and openssl).
pub struct Verifiers;

impl Verifiers {
    fn dir() -> PathBuf {
        repo_root().join("tests").join("verifiers")
    }

    /// `@sigstore/verify` on a bundle, with the key registered under its hint.
    pub fn sigstore_js(bundle: &Path, key: &Path, artifact: Option<&Path>) -> (bool, String) {
        assert!(
            Self::dir()
                .join("node_modules")
                .join("@sigstore")
                .join("verify")
                .exists(),
            "tests/verifiers/node_modules is missing: run `npm ci` there (scripts/test.sh does)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(Self::dir().join("verify-bundle.mjs"))
            .arg("--bundle")
            .arg(bundle)
            .arg("--key")
            .arg(key);
        if let Some(a) = artifact {
            cmd.arg("--artifact").arg(a);
        }
        report(cmd.output().expect("run node"))
    }

    /// `@sigstore/verify` on a keyless bundle against a `trusted_root.json`, with an identity
    /// and issuer policy and one required RFC 3161 timestamp.
    pub fn sigstore_js_keyless(
        bundle: &Path,
        trusted_root: &Path,
        identity: &str,
        issuer: &str,
        artifact: Option<&Path>,
    ) -> (bool, String) {
        let mut cmd = Command::new("node");
        cmd.arg(Self::dir().join("verify-keyless.mjs"))
            .arg("--bundle")
            .arg(bundle)
            .arg("--trusted-root")
            .arg(trusted_root)
            .args(["--identity", identity, "--issuer", issuer]);
        if let Some(a) = artifact {
            cmd.arg("--artifact").arg(a);
        }
        report(cmd.output().expect("run node"))
    }

    /// Go's checksum-database packages (`golang.org/x/mod/sumdb/note` and `sumdb/tlog`) on a
    /// checkpoint and proofs: `tests/verifiers/tlog-verify`, built on first use with Debian's Go
    /// and `golang-golang-x-mod-dev` (scripts/install-deps.sh installs both).
    pub fn tlog_verify(request: &Value) -> (bool, String) {
        static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let program = BUILT.get_or_init(|| {
            let out = bin_dir().join("tlog-verify");
            let cache = std::env::temp_dir().join("stella-go-cache");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(Self::dir().join("tlog-verify"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", &cache)
                .env("GOFLAGS", "")
                .output()
                .expect("run go (scripts/install-deps.sh installs golang-go)");
            assert!(
                built.status.success(),
                "building tlog-verify: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            out
        });
        let mut child = Command::new(program)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tlog-verify");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(&serde_json::to_vec(request).expect("request"))
                .expect("write request");
        }
        report(child.wait_with_output().expect("tlog-verify output"))
    }

    /// `tests/verifiers/openapi-check.mjs`: the document is valid OpenAPI 3.1
    /// (`@seriousme/openapi-schema-validator`) and, given samples, every response validates
    /// against it (Ajv, JSON Schema 2020-12).
    pub fn openapi(spec: &Path, samples: Option<&Path>) -> (bool, String) {
        let mut cmd = Command::new("node");
        cmd.arg(Self::dir().join("openapi-check.mjs")).arg(spec);
        if let Some(samples) = samples {
            cmd.arg(samples);
        }
        report(cmd.output().expect("run node"))
    }

    /// `openssl dgst -sha256 -verify` over the PAE bytes of the first signature.
    pub fn openssl(envelope: &Path, key: &Path) -> (bool, String) {
        let out = Command::new("bash")
            .arg(Self::dir().join("openssl-verify-envelope.sh"))
            .arg(envelope)
            .arg(key)
            .output()
            .expect("run openssl script");
        report(out)
    }
}

fn report(out: Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

/// Writes a secret file (a private key, a PIN, a shared secret) readable by its owner only, as
/// the node requires.
pub fn write_secret(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.as_ref();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes.as_ref()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A sign request body for raw HTTP tests.
pub fn sbom_request_json() -> Value {
    serde_json::json!({
        "subject": [{"name": "registry.example/app", "digest": {"sha256": "a".repeat(64)}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-1.6", "digest": format!("sha256:{}", "b".repeat(64)), "componentCount": 3}
    })
}

/// The load balancer's URL in cluster tests: every node accepts DPoP proofs made for it, as
/// nodes behind a real load balancer do.
pub const PUBLIC_URL: &str = "https://signer.test";

/// A multi-process cluster on loopback: `n` nodes with mutual-TLS peer listeners, plain-HTTP
/// client listeners, one shared signing key and one tenant.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    /// The Authority and licensing stand-ins every node trusts.
    pub services: Services,
    /// tenant-a's credentials (server set per node by [`TestCluster::client`]).
    pub credentials: Credentials,
    /// One primed client per node.
    clients: Vec<Client>,
    nodes: Vec<Option<NodeProcess>>,
    ips: Vec<String>,
    api_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    prepare_data_dir: Option<fn(&Path)>,
}

pub struct ClusterOptions {
    pub nodes: usize,
    /// Give node `i` its own loopback address 127.0.0.(10+i) (for firewall partitions).
    pub distinct_addresses: bool,
    pub snapshot_every: u64,
    pub signatures_per_window: u64,
    pub reservation_ttl_seconds: u64,
    /// Lines added to every node's `[admission]` section.
    pub extra_admission: String,
    /// More plans besides the default one: (name, signatures per window, concurrent, bytes).
    pub plans: Vec<(&'static str, u64, u32, usize)>,
    /// Require DPoP server nonces (one secret shared by all nodes).
    pub dpop_nonces: bool,
    /// Configuration sections added to one node's file: (node id, TOML).
    pub node_extra: Vec<(usize, String)>,
    /// Called with each node's data directory before the node first starts (the chaos drills
    /// put each one on a small filesystem of its own, to fill it).
    pub prepare_data_dir: Option<fn(&Path)>,
    /// The peer address node `id` advertises to the cluster (its `peer_url`), given the
    /// address its peer listener binds: the chaos drills put a fault proxy of their own in
    /// front of each node this way. The address must be on the node's own IP (its
    /// certificate's SAN), e.g. another port. Default: the listener itself.
    pub peer_front: Option<PeerFront>,
    /// Nodes prepared (address, certificate, configuration) but not started: ids
    /// `nodes + 1 ..= nodes + spare_nodes`, for [`TestCluster::join_node`] (a fresh node
    /// joining under load).
    pub spare_nodes: usize,
}

/// See [`ClusterOptions::peer_front`].
pub type PeerFront = Arc<dyn Fn(usize, std::net::SocketAddr) -> std::net::SocketAddr + Send + Sync>;

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            distinct_addresses: false,
            snapshot_every: 5000,
            signatures_per_window: 1_000_000,
            reservation_ttl_seconds: 60,
            extra_admission: String::new(),
            plans: Vec::new(),
            dpop_nonces: false,
            node_extra: Vec::new(),
            prepare_data_dir: None,
            peer_front: None,
            spare_nodes: 0,
        }
    }
}

/// A port that is free now, for a node that binds it a moment later.
///
/// Ports come from 20000–31999, below Linux's ephemeral range (32768+), so the client
/// connections that tests open meanwhile cannot take them; a process-wide counter keeps
/// concurrently starting clusters of this test binary from picking the same one.
fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() * 7919) % 12_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base - 20_000 + n) % 12_000) as u16;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl TestCluster {
    pub fn start(options: ClusterOptions) -> TestCluster {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = dir.path().join("pki");
        let total = options.nodes + options.spare_nodes;
        let ips: Vec<String> = (1..=total)
            .map(|i| {
                if options.distinct_addresses {
                    format!("127.0.0.{}", 10 + i)
                } else {
                    "127.0.0.1".to_owned()
                }
            })
            .collect();
        let mut certs = vec![
            "cluster".to_owned(),
            "certs".into(),
            "--out".into(),
            pki.to_str().expect("utf8").into(),
        ];
        certs.extend(["--nodes".to_owned(), total.to_string()]);
        for ip in &ips {
            certs.extend(["--san".to_owned(), ip.clone()]);
        }
        let out = Command::new(bin("stella-signer"))
            .args(&certs)
            .output()
            .expect("certs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = stella_signer::FileKeySigner::generate().expect("key");
        write_secret(dir.path().join("signing.pem"), key.to_pkcs8_pem());
        std::fs::write(
            dir.path().join("signing.pub.pem"),
            key.public_key().to_pem(),
        )
        .expect("pub");
        write_secret(
            dir.path().join("log-key.pem"),
            stella_signer::note::LogKey::generate_pkcs8_pem().expect("log key"),
        );
        let services = Services::start(dir.path());
        let mut extra_admission = format!(
            "public_urls = [\"{PUBLIC_URL}\"]\n{}\n",
            options.extra_admission
        );
        if options.dpop_nonces {
            let secret = dir.path().join("dpop-nonce.key");
            write_secret(&secret, stella_api::dpop::random_id().repeat(3));
            extra_admission.push_str(&format!(
                "dpop_nonce_secret_file = \"{}\"\n",
                secret.display()
            ));
        }
        let mut plans = vec![(PLAN, options.signatures_per_window, 100_000, 1024 * 1024)];
        plans.extend(options.plans.iter().cloned());
        let admission = services.node_toml(&plans, &extra_admission);
        let api_ports: Vec<u16> = ips.iter().map(|ip| free_port(ip)).collect();
        let peer_ports: Vec<u16> = ips.iter().map(|ip| free_port(ip)).collect();
        for i in 0..total {
            let id = i + 1;
            let d = dir.path().display();
            let listen: std::net::SocketAddr = format!("{}:{}", ips[i], peer_ports[i])
                .parse()
                .expect("a peer address");
            let front = options
                .peer_front
                .as_ref()
                .map_or(listen, |front| front(id, listen));
            let config = format!(
                "listen = \"{ip}:{api}\"\ndata_dir = \"{d}/node-{id}\"\n[tls]\ndisabled = true\n[signing]\nkey_file = \"{d}/signing.pem\"\n\
                 [quota]\nreservation_ttl_seconds = {ttl}\n\
                 [audit_log]\nkey_file = \"{d}/log-key.pem\"\ncheckpoint_interval_ms = 200\n{admission}\
                 [cluster]\nnode_id = {id}\npeer_listen = \"{ip}:{peer}\"\npeer_url = \"https://{front}\"\napi_url = \"http://{ip}:{api}\"\n\
                 ca_cert = \"{d}/pki/ca.pem\"\ncert = \"{d}/pki/node-{id}.pem\"\nkey = \"{d}/pki/node-{id}.key\"\nsnapshot_every = {snap}\n",
                ip = ips[i],
                api = api_ports[i],
                peer = peer_ports[i],
                front = front,
                ttl = options.reservation_ttl_seconds,
                snap = options.snapshot_every,
            );
            let extra: String = options
                .node_extra
                .iter()
                .filter(|(node, _)| *node == id)
                .map(|(_, toml)| format!("{toml}\n"))
                .collect();
            std::fs::write(
                dir.path().join(format!("node-{id}.toml")),
                format!("{config}{extra}"),
            )
            .expect("config");
        }
        let credentials = services.credentials("tenant-a-ci", PLAN, "");
        let mut cluster = TestCluster {
            dir,
            services,
            credentials,
            clients: Vec::new(),
            nodes: Vec::new(),
            ips,
            api_ports,
            peer_ports,
            prepare_data_dir: options.prepare_data_dir,
        };
        for id in 1..=total {
            if id > options.nodes {
                cluster.nodes.push(None);
                continue;
            }
            if let Some(prepare) = options.prepare_data_dir {
                prepare(&cluster.data_dir(id));
            }
            let node = cluster.spawn(id);
            cluster.nodes.push(Some(node));
        }
        cluster.admin(&["cluster", "init", "--config", &cluster.config_path(1)]);
        for id in 2..=options.nodes {
            let leader = cluster.peer_url(1);
            cluster.admin(&[
                "cluster",
                "join",
                "--config",
                &cluster.config_path(id),
                "--leader",
                &leader,
            ]);
        }
        cluster.clients = (1..=total)
            .map(|id| {
                Client::new(ClientConfig {
                    server: cluster.api_url(id),
                    credentials: cluster.credentials.clone(),
                    timeout: Duration::from_secs(10),
                })
                .expect("client")
            })
            .collect();
        cluster.wait_converged(Duration::from_secs(30));
        cluster
    }

    /// The primed client for node `id` (tenant-a, DPoP-bound token, PoE for the plan).
    pub fn client(&self, id: usize) -> &Client {
        &self.clients[id - 1]
    }

    fn spawn(&self, id: usize) -> NodeProcess {
        self.spawn_with_env(id, &[])
    }

    fn spawn_with_env(&self, id: usize, env: &[(&str, &str)]) -> NodeProcess {
        let config = self.config_path(id);
        NodeProcess::start_with_env(&["serve", "--config", &config], &self.data_dir(id), env)
    }

    pub fn config_path(&self, id: usize) -> String {
        self.dir
            .path()
            .join(format!("node-{id}.toml"))
            .to_str()
            .expect("utf8")
            .to_owned()
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.dir.path().join("signing.pub.pem")
    }

    pub fn api_url(&self, id: usize) -> String {
        format!("http://{}:{}", self.ips[id - 1], self.api_ports[id - 1])
    }

    pub fn peer_url(&self, id: usize) -> String {
        format!("https://{}:{}", self.ips[id - 1], self.peer_ports[id - 1])
    }

    /// Cuts peer traffic between two groups of nodes with iptables (needs root and
    /// `distinct_addresses`); the rules go away when the returned guard is dropped.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Partition {
        let mut rules = Vec::new();
        for (from, to) in a
            .iter()
            .flat_map(|x| b.iter().map(move |y| (*x, *y)))
            .chain(b.iter().flat_map(|y| a.iter().map(move |x| (*y, *x))))
        {
            rules.push(vec![
                "INPUT".to_owned(),
                "-p".into(),
                "tcp".into(),
                "-s".into(),
                self.ips[from - 1].clone(),
                "-d".into(),
                self.ips[to - 1].clone(),
                "--dport".into(),
                self.peer_ports[to - 1].to_string(),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                "stella-test-partition".into(),
                "-j".into(),
                "DROP".into(),
            ]);
        }
        for rule in &rules {
            let out = Command::new("iptables")
                .arg("-A")
                .args(rule)
                .output()
                .expect("iptables (the test scripts install it)");
            assert!(
                out.status.success(),
                "iptables -A {rule:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Partition { rules }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Starts spare node `id` (see [`ClusterOptions::spare_nodes`]) on a fresh data directory
    /// and joins it to the cluster through node `via` (a member's peer listener; the leader
    /// forwards nothing, so name the leader), as `stella-signer cluster join` does for an
    /// operator. Returns once the join call returned (the node is a member).
    /// Calling it again (after a failed join) joins the running node again.
    pub fn join_node(&mut self, id: usize, via: usize) {
        if self.nodes[id - 1].is_none() {
            let data = self.data_dir(id);
            if !data.exists()
                && let Some(prepare) = self.prepare_data_dir
            {
                prepare(&data);
            }
            let node = self.spawn(id);
            self.nodes[id - 1] = Some(node);
        }
        let leader = self.peer_url(via);
        self.admin(&[
            "cluster",
            "join",
            "--config",
            &self.config_path(id),
            "--leader",
            &leader,
        ]);
    }

    /// Removes node `id` from the cluster through the leader `via`, with the operator's
    /// certificate (`stella-signer cluster remove`), as the membership test does. The node's
    /// process keeps running; stop it with [`TestCluster::kill`].
    pub fn remove_node(&self, id: usize, via: usize) {
        let pki = self.dir.path().join("pki");
        let config = self.config_path(via);
        let leader = self.peer_url(via);
        let cert = pki.join("admin.pem").display().to_string();
        let key = pki.join("admin.key").display().to_string();
        self.admin(&[
            "cluster",
            "remove",
            "--config",
            &config,
            "--leader",
            &leader,
            "--node-id",
            &id.to_string(),
            "--cert",
            &cert,
            "--key",
            &key,
        ]);
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.nodes[id - 1].is_some()
    }

    pub fn node(&self, id: usize) -> Option<&NodeProcess> {
        self.nodes[id - 1].as_ref()
    }

    pub fn admin(&self, args: &[&str]) {
        let out = Command::new(bin("stella-signer"))
            .args(args)
            .output()
            .expect("admin command");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `GET /api/v1/signer/cluster/status` from node `id`.
    pub fn status(&self, id: usize) -> Option<Value> {
        // Statuses are polled before the clients exist (while the cluster forms).
        let client = match self.clients.get(id - 1) {
            Some(c) => c,
            None => return self.status_once(id),
        };
        serde_json::to_value(client.cluster_status().ok()?).ok()
    }

    fn status_once(&self, id: usize) -> Option<Value> {
        let client = Client::new(ClientConfig {
            server: self.api_url(id),
            credentials: self.credentials.clone(),
            timeout: Duration::from_secs(3),
        })
        .ok()?;
        serde_json::to_value(client.cluster_status().ok()?).ok()
    }

    /// The leader as seen by any running node.
    pub fn leader(&self) -> Option<usize> {
        (1..=self.len())
            .filter(|id| self.is_running(*id))
            .find_map(|id| self.status(id).and_then(|s| s["leader"].as_u64()))
            .map(|l| l as usize)
    }

    /// Waits until every running node knows the same leader and has applied the same index.
    pub fn wait_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Value> = (1..=self.len())
                .filter(|id| self.is_running(*id))
                .filter_map(|id| self.status(id))
                .collect();
            let running = (1..=self.len()).filter(|id| self.is_running(*id)).count();
            if statuses.len() == running && !statuses.is_empty() {
                let leader = statuses[0]["leader"].as_u64();
                let same_leader =
                    leader.is_some() && statuses.iter().all(|s| s["leader"].as_u64() == leader);
                let applied: Vec<Option<u64>> = statuses[0]["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .filter(|m| m["reachable"] == true)
                            .map(|m| m["appliedIndex"].as_u64())
                            .collect()
                    })
                    .unwrap_or_default();
                let caught_up =
                    applied.len() == running && applied.windows(2).all(|w| w[0] == w[1]);
                if same_leader && caught_up {
                    return;
                }
            }
            if Instant::now() > deadline {
                // What the nodes said last (warnings and errors) is what explains a stall.
                let said: Vec<String> = (1..=self.len())
                    .filter_map(|id| self.node(id).map(|n| (id, n.logs())))
                    .flat_map(|(id, logs)| {
                        logs.into_iter()
                            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                            .rev()
                            .take(15)
                            .map(move |l| format!("node {id}: {l}"))
                    })
                    .collect();
                panic!(
                    "cluster did not converge: {statuses:?}\nlast warnings:\n{}",
                    said.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether node `id`'s process exited by itself (a node failing closed); if so it is reaped
    /// and can be restarted.
    pub fn exited(&mut self, id: usize) -> bool {
        let gone = self.nodes[id - 1]
            .as_mut()
            .is_some_and(|n| matches!(n.child.try_wait(), Ok(Some(_))));
        if gone {
            self.nodes[id - 1] = None;
        }
        gone
    }

    pub fn kill(&mut self, id: usize) {
        if let Some(node) = self.nodes[id - 1].take() {
            node.kill();
        }
    }

    pub fn stop(&mut self, id: usize) {
        if let Some(node) = self.nodes[id - 1].take() {
            assert!(node.stop().success(), "node {id} stops cleanly");
        }
    }

    pub fn restart(&mut self, id: usize) {
        self.restart_with_env(id, &[]);
    }

    /// As [`TestCluster::restart`], with more environment variables (e.g. `LD_PRELOAD` of
    /// libfaketime for a node whose clock is off).
    pub fn restart_with_env(&mut self, id: usize, env: &[(&str, &str)]) {
        assert!(self.nodes[id - 1].is_none(), "node {id} is running");
        let node = self.spawn_with_env(id, env);
        self.nodes[id - 1] = Some(node);
    }

    /// Sends SIGTERM to node `id` and returns at once (a rollout's stop); [`TestCluster::reap`]
    /// waits for the exit.
    pub fn terminate(&self, id: usize) {
        if let Some(node) = &self.nodes[id - 1] {
            send_signal(&node.child, Signal::TERM);
        }
    }

    /// Waits (up to 30 s) for node `id` to exit after [`TestCluster::terminate`]; its status
    /// and what it logged.
    pub fn reap(&mut self, id: usize) -> (std::process::ExitStatus, Vec<String>) {
        let mut node = self.nodes[id - 1].take().expect("a running node");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = node.child.try_wait().expect("wait for the node") {
                // The log reader thread drains what is left of the pipe.
                std::thread::sleep(Duration::from_millis(200));
                return (status, node.logs());
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes node `id` (SIGSTOP), as a long GC pause or a stalled VM would.
    pub fn pause(&self, id: usize) {
        if let Some(node) = &self.nodes[id - 1] {
            send_signal(&node.child, Signal::STOP);
        }
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&self, id: usize) {
        if let Some(node) = &self.nodes[id - 1] {
            send_signal(&node.child, Signal::CONT);
        }
    }

    /// `GET /readyz` of node `id`: (status, the failing checks' names).
    pub fn readiness(&self, id: usize) -> Option<(u16, Vec<String>)> {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}/readyz", self.api_url(id)))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().ok()?;
        let failing = body["checks"]
            .as_array()
            .map(|checks| {
                checks
                    .iter()
                    .filter(|c| c["ok"] == false)
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some((status, failing))
    }

    /// Waits until `/readyz` of node `id` answers 200 (panics with its last answer after
    /// `timeout`).
    pub fn wait_ready(&self, id: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.readiness(id);
            if answer.as_ref().map(|r| r.0) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} is not ready: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An HTTPS client presenting `stem`'s certificate from the cluster's PKI directory
    /// (`admin` is the operator's, `node-N` a node's).
    pub fn peer_client(&self, stem: &str) -> reqwest::blocking::Client {
        let pki = self.dir.path().join("pki");
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.pem")).expect("ca"))
            .expect("ca");
        let identity = reqwest::Identity::from_pem(
            &[
                std::fs::read(pki.join(format!("{stem}.pem"))).expect("pem"),
                std::fs::read(pki.join(format!("{stem}.key"))).expect("key"),
            ]
            .concat(),
        )
        .expect("identity");
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// Creates a file key, installs it on every node and registers it for tenant-a on `PLAN`
    /// (as the operator, through node 1): tenant-a's signings then carry its signature too.
    /// Returns the key id and the private key's path.
    pub fn register_key(&self, name: &str) -> (String, PathBuf) {
        let dir = self.dir.path();
        let out = stella_ok(&["keys", "create", "--out", &dir.join(name).to_string_lossy()]);
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let mut parts = line.split_whitespace();
        let key_id = parts.next().expect("key id").to_owned();
        let path = PathBuf::from(parts.next().expect("path"));
        for id in 1..=self.len() {
            let keys = self.data_dir(id).join("keys");
            std::fs::create_dir_all(&keys).expect("keys dir");
            std::fs::copy(&path, keys.join(path.file_name().expect("name"))).expect("install");
        }
        let mut ops = self
            .services
            .credentials("operator", PLAN, &self.api_url(1));
        ops.server = self.api_url(1);
        let ops_file = dir.join("operator-creds.json");
        std::fs::write(&ops_file, serde_json::to_vec(&ops).expect("json")).expect("ops");
        stella_ok(&[
            "keys",
            "register",
            "--tenant",
            "tenant-a",
            "--plan",
            PLAN,
            "--key",
            &path.to_string_lossy(),
            "--reason",
            "a tenant key",
            "--credentials",
            &ops_file.to_string_lossy(),
        ]);
        (key_id, path)
    }

    /// Signs once through node `id`; returns (status, body).
    pub fn sign(&self, id: usize) -> Result<(u16, Value), String> {
        let client = self.client(id);
        let body = serde_json::to_vec(&sbom_request_for(client)).map_err(|e| e.to_string())?;
        let resp = client
            .send(
                reqwest::Method::POST,
                stella_api::SIGN_DSSE_PATH,
                &[],
                Some(body),
            )
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().unwrap_or(Value::Null)))
    }
}

/// Firewall rules of a partition; removed on drop.
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in &self.rules {
            let removed = Command::new("iptables").arg("-D").args(rule).output();
            let failure = match removed {
                Ok(out) if out.status.success() => continue,
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            // A rule left behind keeps the partition for every later test: say so loudly.
            eprintln!("iptables -D {rule:?} failed: {failure}");
            if !std::thread::panicking() {
                panic!("could not heal the partition: iptables -D {rule:?}: {failure}");
            }
        }
    }
}

/// A real OCI registry (Debian's `docker-registry`, the CNCF distribution registry) on loopback,
/// storing into a temporary directory. It has no referrers API, so the tag-schema fallbacks are
/// what runs against it. Stopped (and its storage removed) on drop.
/// An RFC 3161 Time-Stamping Authority: `openssl ts -reply` behind a small HTTP server
/// (`tests/verifiers/tsa-server.py`), with its own root and TSA certificate.
pub struct TsaProcess {
    child: Child,
    pub url: String,
    /// PEM: the TSA certificate, then its root.
    pub chain_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TsaProcess {
    pub fn start() -> TsaProcess {
        let dir = tempfile::tempdir().expect("tmp");
        let (child, port) = start_python_stand_in("tsa-server.py", dir.path());
        TsaProcess {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            chain_path: dir.path().join("tsa-chain.pem"),
            _dir: dir,
        }
    }
}

impl Drop for TsaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tests/verifiers/<script> DIR` and waits (generously) for the port it writes to
/// `DIR/port` once it listens.
fn start_python_stand_in(script: &str, dir: &Path) -> (Child, String) {
    let child = Command::new("python3")
        .arg(Verifiers::dir().join(script))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 (installed by scripts/install-deps.sh)");
    let port_file = dir.join("port");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !port_file.exists() {
        assert!(Instant::now() < deadline, "{script} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::fs::read_to_string(&port_file).expect("port");
    (child, port.trim().to_owned())
}

/// A stand-in registry that speaks the distribution-spec referrers API
/// (`tests/verifiers/oci-referrers-server.py`), serving what the test writes under `dir`.
pub struct ReferrersRegistry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl ReferrersRegistry {
    pub fn start() -> ReferrersRegistry {
        let dir = tempfile::tempdir().expect("tmp");
        for sub in ["referrers", "manifests", "blobs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        }
        let (child, port) = start_python_stand_in("oci-referrers-server.py", dir.path());
        ReferrersRegistry {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    /// Serves `bytes` at `/v2/<name>/<kind>/<reference>` (kind: manifests or blobs).
    pub fn put(&self, kind: &str, reference: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(kind).join(reference), bytes).expect("write");
    }

    /// The referrers index for `digest`.
    pub fn put_referrers(&self, digest: &str, index: &[u8]) {
        std::fs::write(
            self.dir
                .path()
                .join("referrers")
                .join(format!("{digest}.json")),
            index,
        )
        .expect("write");
    }

    /// From now on every call needs the anonymous pull token of the distribution token flow.
    pub fn require_token(&self, token: &str) {
        std::fs::write(self.dir.path().join("require-token"), token).expect("write");
    }

    /// What the referrers API answers from now on (200 serves the index).
    pub fn referrers_status(&self, status: u16) {
        std::fs::write(self.dir.path().join("referrers-status"), status.to_string())
            .expect("write");
    }
}

impl Drop for ReferrersRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RegistryProcess {
    child: Option<Child>,
    pub addr: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl RegistryProcess {
    pub fn start() -> RegistryProcess {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port("127.0.0.1");
        let mut registry = RegistryProcess {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            dir,
            port,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .expect("registry config");
        let child = Command::new("/usr/bin/docker-registry")
            .args(["serve", config.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (installed by scripts/install-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/v2/", self.addr);
        while Instant::now() < deadline {
            if reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not come up on {}", self.addr);
    }

    /// Takes the registry down (its storage stays) — a registry outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Brings it back on the same address with the same content.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The problem a request was refused with, which must carry `code`.
pub fn refused_with<T: std::fmt::Debug>(
    result: Result<T, stella_api::ClientError>,
    code: &str,
) -> stella_api::Problem {
    match result {
        Err(stella_api::ClientError::Problem(p)) => {
            assert_eq!(p.code.as_str(), code, "{}", p.detail);
            p
        }
        other => panic!("expected a `{code}` problem, got {other:?}"),
    }
}

/// `kill(2)` on a child process, through the OS interface (no external `kill` program, which a
/// minimal system lacks); failing to deliver the signal fails the test.
pub(crate) fn send_signal(child: &Child, signal: Signal) {
    let pid = rustix::process::Pid::from_child(child);
    if let Err(e) = rustix::process::kill_process(pid, signal) {
        panic!("sending {signal:?} to process {pid:?}: {e}");
    }
}

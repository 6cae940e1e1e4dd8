//! `--local N`: a loopback cluster of the real binaries, started by the integration tests'
//! launcher (`stella_tests::TestCluster`: the Authority and licensing stand-ins, PKI, configs),
//! each node on its own loopback address so that iptables can cut its peer links.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use stella_api::Credentials;
use stella_tests::{ClusterOptions, PLAN, PUBLIC_URL, Partition, TestCluster};

use crate::proxy::{LinkFault, ProxySet};
use crate::target::{Target, Tenant};

/// The plan of the tenant on a tight quota.
pub const TIGHT_PLAN: &str = "tight";
/// The client (and tenant `quota-1`) on [`TIGHT_PLAN`].
const TIGHT_CLIENT: &str = "quota-1-ci";

/// Options of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub nodes: usize,
    /// Signatures per window of the tight plan (window: one hour).
    pub tight_quota: u64,
    /// The nodes' `request_deadline_seconds`.
    pub deadline_seconds: u64,
    /// A deliberately broken build: every node grants this many signatures per window beyond
    /// each plan's quota (`[drill] extra_grants_per_window`; the checker must catch it).
    pub drill_extra_grants: u64,
    /// Put each node's data directory on a tmpfs of its own ([`DISK_BYTES`]), so that the
    /// disk-full fault can fill it (needs root).
    pub own_filesystems: bool,
    /// Put the TCP fault proxy in front of every node's peer listener (the link faults).
    pub link_proxy: bool,
    /// Nodes prepared but not started, for the membership fault (one per planned fault).
    pub spare_nodes: usize,
    /// The nodes' `snapshot_every` (a small value makes a stopped follower fall behind the
    /// others' compacted logs within seconds: the snapshot catch-up fault).
    pub snapshot_every: u64,
}

/// Size of each node's own filesystem.
pub const DISK_BYTES: u64 = 256 * 1024 * 1024;
/// The file that fills a node's filesystem.
const BALLAST: &str = "chaos-ballast";

/// The tmpfs mounts made by this process, unmounted when the target goes (or its start failed).
static MOUNTS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

fn unmount_all() {
    let mounts = MOUNTS
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    for dir in mounts {
        let _ = std::process::Command::new("umount").arg(&dir).output();
    }
}

/// Mounts a tmpfs of [`DISK_BYTES`] at `dir` (the launcher calls it before the node starts).
fn mount_tmpfs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("data dir");
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={DISK_BYTES},mode=0700"))
        .arg("stella-chaos")
        .arg(dir)
        .output()
        .expect("mount (util-linux)");
    assert!(
        out.status.success(),
        "mounting a tmpfs at {} (root needed): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(mut mounts) = MOUNTS.lock() {
        mounts.push(dir.to_path_buf());
    }
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            nodes: 3,
            tight_quota: 20,
            deadline_seconds: 5,
            drill_extra_grants: 0,
            own_filesystems: false,
            link_proxy: false,
            spare_nodes: 0,
            // Snapshots every few hundred entries: a node that was down catches up by snapshot.
            snapshot_every: 500,
        }
    }
}

pub struct LocalTarget {
    cluster: TestCluster,
    options: LocalOptions,
    cuts: BTreeMap<(usize, usize), Partition>,
    /// The fault proxies in front of the peer listeners (with `link_proxy`).
    proxies: Option<Arc<ProxySet>>,
    /// The members now (the membership fault removes and adds nodes).
    members: Vec<usize>,
    /// A spare started and being joined (a join that failed is retried with it).
    joining: Option<usize>,
    /// Spares not started yet.
    spares: Vec<usize>,
    /// What removed nodes logged before they were stopped.
    removed_logs: Vec<(usize, String)>,
}

/// Debian's libfaketime (package `faketime`, installed by scripts/install-deps.sh).
fn faketime_library() -> Result<String> {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let lib = format!("{dir}/faketime/libfaketime.so.1");
        if std::path::Path::new(&lib).exists() {
            return Ok(lib);
        }
    }
    Err(anyhow!(
        "libfaketime is missing (Debian package `faketime`; scripts/install-deps.sh installs it)"
    ))
}

/// Runs `f`, turning a panic of the test launcher into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        anyhow!("{what}: {text}")
    })
}

impl LocalTarget {
    pub fn start(options: LocalOptions) -> Result<LocalTarget> {
        let mut extra = format!(
            "[limits]\nrequest_deadline_seconds = {}\n",
            options.deadline_seconds
        );
        if options.drill_extra_grants > 0 {
            extra.push_str(&format!(
                "[drill]\nextra_grants_per_window = {}\n",
                options.drill_extra_grants
            ));
        }
        let proxies = if options.link_proxy {
            Some(Arc::new(ProxySet::new()?))
        } else {
            None
        };
        let front: Option<stella_tests::PeerFront> = proxies.clone().map(|p| {
            Arc::new(move |id: usize, listener: std::net::SocketAddr| {
                p.front(id, listener)
                    .unwrap_or_else(|e| panic!("the fault proxy of node {id}: {e:#}"))
            }) as stella_tests::PeerFront
        });
        let cluster_options = || ClusterOptions {
            nodes: options.nodes,
            distinct_addresses: true,
            snapshot_every: options.snapshot_every,
            peer_front: front.clone(),
            spare_nodes: options.spare_nodes,
            plans: vec![(TIGHT_PLAN, options.tight_quota, 100, 1024 * 1024)],
            node_extra: (1..=options.nodes).map(|id| (id, extra.clone())).collect(),
            prepare_data_dir: options
                .own_filesystems
                .then_some(mount_tmpfs as fn(&std::path::Path)),
            ..ClusterOptions::default()
        };
        // A cluster that does not form on a loaded machine (a peer listener not answering in
        // time) is started afresh, twice at most.
        let mut attempt = 0;
        let cluster = loop {
            attempt += 1;
            let started = guarded("starting the cluster", || {
                TestCluster::start(cluster_options())
            });
            match started {
                Ok(cluster) => break cluster,
                Err(e) => {
                    unmount_all();
                    if attempt == 3 {
                        return Err(e);
                    }
                    eprintln!("{e:#}; starting a new cluster");
                }
            }
        };
        let members = (1..=options.nodes).collect();
        let spares = (options.nodes + 1..=options.nodes + options.spare_nodes).collect();
        Ok(LocalTarget {
            cluster,
            options,
            cuts: BTreeMap::new(),
            proxies,
            members,
            joining: None,
            spares,
            removed_logs: Vec::new(),
        })
    }

    /// Where the cluster's files are (configs, data directories, PKI).
    pub fn dir(&self) -> &std::path::Path {
        self.cluster.dir.path()
    }
}

impl Drop for LocalTarget {
    /// Stops the nodes and unmounts their filesystems (the temporary directory is removed
    /// after this).
    fn drop(&mut self) {
        if !self.options.own_filesystems {
            return;
        }
        for id in 1..=self.cluster.len() {
            let _ = guarded("stopping a node", || self.cluster.kill(id));
        }
        unmount_all();
    }
}

impl Target for LocalTarget {
    fn node_ids(&self) -> Vec<usize> {
        self.members.clone()
    }

    fn known_node_ids(&self) -> Vec<usize> {
        (1..=self.cluster.len()).collect()
    }

    fn link_fault(&mut self, id: usize, fault: Option<LinkFault>) -> Result<()> {
        let proxies = self
            .proxies
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster was started without the peer-link proxy"))?;
        proxies.set(id, fault);
        Ok(())
    }

    fn link_stats(&self) -> Option<String> {
        let c = self.proxies.as_ref()?.counters();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Some(format!(
            "peer-link proxy so far: {} connections, {} reset, {} bytes passed",
            n(&c.connections),
            n(&c.resets),
            n(&c.bytes)
        ))
    }

    fn heal_links(&mut self) -> Result<()> {
        if let Some(p) = &self.proxies {
            p.clear();
        }
        Ok(())
    }

    fn remove_node(&mut self, id: usize, via: usize) -> Result<()> {
        guarded("stella-signer cluster remove", || {
            self.cluster.remove_node(id, via)
        })?;
        self.members.retain(|m| *m != id);
        if let Some(node) = self.cluster.node(id) {
            self.removed_logs.push((id, node.logs().join("\n")));
        }
        self.kill(id)
    }

    fn add_node(&mut self, via: usize) -> Result<usize> {
        let id = match self.joining {
            Some(id) => id,
            None if self.spares.is_empty() => {
                return Err(anyhow!("no spare node left to join"));
            }
            None => self.spares.remove(0),
        };
        self.joining = Some(id);
        guarded("stella-signer cluster join", || {
            self.cluster.join_node(id, via)
        })?;
        self.joining = None;
        self.members.push(id);
        Ok(id)
    }

    fn api_url(&self, id: usize) -> String {
        self.cluster.api_url(id)
    }

    fn public_url(&self) -> String {
        PUBLIC_URL.to_owned()
    }

    fn kill(&mut self, id: usize) -> Result<()> {
        guarded("kill -9", || self.cluster.kill(id))
    }

    fn restart(&mut self, id: usize) -> Result<()> {
        if self.cluster.is_running(id) {
            return Ok(());
        }
        guarded("restart", || self.cluster.restart(id))
    }

    fn pause(&mut self, id: usize) -> Result<()> {
        guarded("SIGSTOP", || self.cluster.pause(id))
    }

    fn resume(&mut self, id: usize) -> Result<()> {
        guarded("SIGCONT", || self.cluster.resume(id))
    }

    fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        let key = (a.min(b), a.max(b));
        if self.cuts.contains_key(&key) {
            return Ok(());
        }
        let rules = guarded("iptables", || self.cluster.partition(&[a], &[b]))?;
        self.cuts.insert(key, rules);
        Ok(())
    }

    fn heal(&mut self) -> Result<()> {
        let cuts = std::mem::take(&mut self.cuts);
        guarded("removing iptables rules", move || drop(cuts))
    }

    fn fill_disk(&mut self, id: usize) -> Result<()> {
        if !self.options.own_filesystems {
            return Err(anyhow!(
                "the nodes' data directories are not on filesystems of their own"
            ));
        }
        use std::io::Write;
        let path = self.cluster.data_dir(id).join(BALLAST);
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1024 * 1024];
        // Until the filesystem says no (ENOSPC); at most its size.
        for _ in 0..(DISK_BYTES / 1024 / 1024) {
            if file.write_all(&chunk).is_err() {
                return Ok(());
            }
        }
        let _ = file.sync_all();
        Ok(())
    }

    fn free_disk(&mut self, id: usize) -> Result<()> {
        let path = self.cluster.data_dir(id).join(BALLAST);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        // A node whose Raft hit the full disk failed closed (exited); as its supervisor
        // (systemd `Restart=on-failure` in a deployment) would, start it again.
        if self.cluster.exited(id) {
            self.restart(id)?;
        }
        Ok(())
    }

    fn skew_clock(&mut self, id: usize, seconds: i64) -> Result<()> {
        self.kill(id)?;
        if seconds == 0 {
            return self.restart(id);
        }
        let lib = faketime_library()?;
        let offset = format!("{seconds:+}s");
        guarded("restart under libfaketime", || {
            self.cluster.restart_with_env(
                id,
                &[
                    ("LD_PRELOAD", lib.as_str()),
                    ("FAKETIME", offset.as_str()),
                    // Only the wall clock is off; timers and timeouts run as they should.
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
            )
        })
    }

    fn tenants(&self) -> Vec<Tenant> {
        let services = &self.cluster.services;
        vec![
            Tenant {
                name: "tenant-a".into(),
                credentials: services.credentials("tenant-a-ci", PLAN, ""),
                quota: None,
                workers: 3,
            },
            Tenant {
                name: "tenant-b".into(),
                credentials: services.credentials("tenant-b-ci", PLAN, ""),
                quota: None,
                workers: 2,
            },
            Tenant {
                name: "quota-1".into(),
                credentials: services.credentials(TIGHT_CLIENT, TIGHT_PLAN, ""),
                quota: Some((self.options.tight_quota, 3600)),
                workers: 1,
            },
        ]
    }

    fn auditor(&self) -> Credentials {
        self.cluster.services.credentials("operator", PLAN, "")
    }

    fn verify_key_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.cluster.public_key_path())?)
    }

    fn save_logs(&self, dir: &std::path::Path) -> Result<()> {
        for id in 1..=self.cluster.len() {
            if let Some(node) = self.cluster.node(id) {
                let mut text = node.logs().join("\n");
                text.push('\n');
                std::fs::write(dir.join(format!("node-{id}.log")), text)?;
            }
        }
        for (id, text) in &self.removed_logs {
            std::fs::write(
                dir.join(format!("node-{id}-removed.log")),
                format!("{text}\n"),
            )?;
        }
        Ok(())
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(self.options.deadline_seconds)
    }
}

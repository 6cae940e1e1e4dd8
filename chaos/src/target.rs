//! What a drill runs against: a cluster whose nodes it can reach and fault. `--local N` is a
//! loopback cluster of the real binaries started by the integration tests' launcher
//! (`stella_tests::TestCluster`); `--cluster FILE` is an operator's own cluster driven through
//! shell commands (`cluster_file.rs`).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use stella_api::{Client, ClientConfig, Credentials};

use crate::proxy::LinkFault;

/// A tenant the workload signs for.
#[derive(Clone)]
pub struct Tenant {
    pub name: String,
    pub credentials: Credentials,
    /// The plan's quota, when the drill is to check it: (signatures per window, window seconds).
    pub quota: Option<(u64, u64)>,
    /// Concurrent honest clients of this tenant.
    pub workers: usize,
}

pub trait Target {
    /// Node ids, 1-based.
    fn node_ids(&self) -> Vec<usize>;
    fn api_url(&self, id: usize) -> String;
    /// The URL clients make their DPoP proofs for (the load balancer's).
    fn public_url(&self) -> String;
    fn kill(&mut self, id: usize) -> Result<()>;
    fn restart(&mut self, id: usize) -> Result<()>;
    fn pause(&mut self, id: usize) -> Result<()>;
    fn resume(&mut self, id: usize) -> Result<()>;
    /// Cuts the peer links between `a` and `b`, both directions.
    fn cut(&mut self, a: usize, b: usize) -> Result<()>;
    /// Removes every cut.
    fn heal(&mut self) -> Result<()>;
    /// Restarts node `id` with its clock `seconds` off (0: the true clock again).
    fn skew_clock(&mut self, id: usize, seconds: i64) -> Result<()>;
    /// Fills the filesystem under node `id`'s data directory.
    fn fill_disk(&mut self, id: usize) -> Result<()>;
    /// Gives the space back.
    fn free_disk(&mut self, id: usize) -> Result<()>;
    fn tenants(&self) -> Vec<Tenant>;
    /// Credentials of an auditor (scope `signer.audit.all`, an auditor tenant).
    fn auditor(&self) -> Credentials;
    /// The PEM public key bundles verify with.
    fn verify_key_pem(&self) -> Result<String>;
    /// The nodes' request deadline.
    fn deadline(&self) -> Duration;
    /// Every node id the drill may meet: the members and the spares that may join.
    fn known_node_ids(&self) -> Vec<usize> {
        self.node_ids()
    }
    /// Puts `fault` on every peer link of node `id` (`None`: heals them).
    fn link_fault(&mut self, _id: usize, _fault: Option<LinkFault>) -> Result<()> {
        Err(anyhow!(
            "this target has no fault proxy on its peer links (--local has one)"
        ))
    }
    /// What the peer-link proxy has seen so far (connections, resets, bytes), if there is one.
    fn link_stats(&self) -> Option<String> {
        None
    }
    /// Heals every link fault.
    fn heal_links(&mut self) -> Result<()> {
        Ok(())
    }
    /// Removes node `id` from the cluster through the leader `via` and stops it; it is no
    /// longer one of [`Target::node_ids`].
    fn remove_node(&mut self, _id: usize, _via: usize) -> Result<()> {
        Err(anyhow!("this target cannot change its membership"))
    }
    /// Starts a fresh node (empty data directory) and joins it through the leader `via`;
    /// returns its id.
    fn add_node(&mut self, _via: usize) -> Result<usize> {
        Err(anyhow!("this target cannot change its membership"))
    }
    /// Writes what the nodes logged into `dir` (targets that hold the logs; others do nothing).
    fn save_logs(&self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

/// Cluster status as each node answers it (short timeouts: a paused node is not waited for).
pub struct Probe {
    /// Clients of every node the drill may meet (members and spares).
    clients: Vec<(usize, Client)>,
    http: reqwest::blocking::Client,
    urls: Vec<(usize, String)>,
    /// The members now (the nemesis changes them).
    members: std::sync::Mutex<Vec<usize>>,
}

impl Probe {
    pub fn new(target: &dyn Target) -> Result<Probe> {
        let mut clients = Vec::new();
        let mut urls = Vec::new();
        for id in target.known_node_ids() {
            let mut credentials = target.auditor();
            credentials.server = target.api_url(id);
            clients.push((
                id,
                Client::new(ClientConfig {
                    server: target.api_url(id),
                    credentials,
                    timeout: Duration::from_secs(3),
                })
                .context("auditor client")?,
            ));
            urls.push((id, target.api_url(id)));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .context("http client")?;
        Ok(Probe {
            clients,
            http,
            urls,
            members: std::sync::Mutex::new(target.node_ids()),
        })
    }

    /// The members now.
    pub fn members(&self) -> Vec<usize> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn set_members(&self, members: Vec<usize>) {
        if let Ok(mut m) = self.members.lock() {
            *m = members;
        }
    }

    pub fn status(&self, id: usize) -> Option<stella_api::ClusterStatus> {
        let (_, client) = self.clients.iter().find(|(n, _)| *n == id)?;
        client.cluster_status().ok()
    }

    /// The node that every answering node... at least the node itself, calls the leader.
    pub fn leader(&self) -> Option<usize> {
        for id in &self.members() {
            if let Some(s) = self.status(*id)
                && let Some(l) = s.leader
            {
                let l = l as usize;
                if self.status(l).and_then(|s| s.leader) == Some(l as u64) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// `/readyz` answers 200.
    pub fn ready(&self, id: usize) -> bool {
        let Some((_, url)) = self.urls.iter().find(|(n, _)| *n == id) else {
            return false;
        };
        self.http
            .get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// How far node `id`'s wall clock is off, from the `Date` header of its `/readyz` answer
    /// (whole seconds; `None` without an answer).
    pub fn clock_offset(&self, id: usize) -> Option<i64> {
        let (_, url) = self.urls.iter().find(|(n, _)| *n == id)?;
        let response = self.http.get(format!("{url}/readyz")).send().ok()?;
        let date = response.headers().get("date")?.to_str().ok()?;
        let theirs = http_date(date)?;
        Some(theirs - time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// Every node answers, names the same leader, and every member applied the same index.
    pub fn converged(&self) -> bool {
        let members = self.members();
        let statuses: Vec<stella_api::ClusterStatus> =
            members.iter().filter_map(|id| self.status(*id)).collect();
        converged(&statuses, members.len())
    }

    /// Waits for `check` (polling), up to `timeout`.
    pub fn wait(&self, timeout: Duration, check: impl Fn(&Probe) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Seconds since the epoch of an HTTP date (`Wed, 02 Dec 2026 05:20:00 GMT`).
pub fn http_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(text.trim(), format).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// Pure: `statuses` (one per answering node, `nodes` nodes in all) agree on a leader and every
/// member reports the same applied index.
pub fn converged(statuses: &[stella_api::ClusterStatus], nodes: usize) -> bool {
    if statuses.len() != nodes || nodes == 0 {
        return false;
    }
    let leader = statuses[0].leader;
    if leader.is_none() || statuses.iter().any(|s| s.leader != leader) {
        return false;
    }
    let applied: Vec<Option<u64>> = statuses[0]
        .members
        .iter()
        .map(|m| m.applied_index)
        .collect();
    applied.len() == nodes
        && applied.iter().all(Option::is_some)
        && applied.windows(2).all(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_parse() {
        assert_eq!(
            super::http_date("Wed, 02 Dec 2026 05:20:00 GMT"),
            Some(1_796_188_800)
        );
        assert_eq!(super::http_date("yesterday"), None);
    }
}

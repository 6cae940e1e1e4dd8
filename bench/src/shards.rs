//! Sharding (ADR 0026): N independent Raft groups on loopback — one-node dev nodes, or 3-node
//! clusters of the real binaries (`--shard-nodes 3`, started like the tests' `TestCluster`) —
//! each with its own tenant, its own log and its own state machine; the clients are spread over
//! the groups (a routing table sending each tenant to its group), and the aggregate signing
//! throughput is reported for each N, with the machine's busy share during the run (what the
//! 2-core limit hides: more groups only add throughput while there are idle cores to run them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stella_tests::{ClusterOptions, TestCluster};

use crate::load::{self, LoadAuth, Target, http_load_spread, start_node};
use crate::runtime_1;

/// What keeps a group running until dropped.
enum Group {
    Dev {
        child: std::process::Child,
        _data: tempfile::TempDir,
    },
    Cluster {
        _cluster: Box<TestCluster>,
    },
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Group::Dev { child, .. } = self {
            load::terminate(child);
        }
    }
}

fn start_group(node_bin: &PathBuf, nodes: usize) -> anyhow::Result<(Group, Vec<Target>)> {
    if nodes <= 1 {
        let data = tempfile::tempdir()?;
        let (child, url, creds) = start_node(node_bin, data.path())?;
        let target = Target {
            auth: Arc::new(LoadAuth::new(&url, creds)?),
            url,
        };
        return Ok((Group::Dev { child, _data: data }, vec![target]));
    }
    let cluster = TestCluster::start(ClusterOptions {
        nodes,
        signatures_per_window: 1_000_000_000,
        ..ClusterOptions::default()
    });
    let targets = (1..=nodes)
        .map(|id| {
            let url = cluster.api_url(id);
            let mut creds = cluster.credentials.clone();
            creds.server = url.clone();
            Ok(Target {
                auth: Arc::new(LoadAuth::new(&url, creds)?),
                url,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        Group::Cluster {
            _cluster: Box::new(cluster),
        },
        targets,
    ))
}

pub fn report(
    node_bin: &PathBuf,
    request: &Value,
    counts: &[usize],
    nodes: usize,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    println!(
        "{:>7} {:>6} {:>8} {:>12} {:>8} {:>8} {:>9} {:>8}",
        "groups", "nodes", "clients", "aggregate/s", "p50 ms", "p99 ms", "CPU busy", "scaling"
    );
    let mut rows = Vec::new();
    let mut base = None;
    for &n in counts {
        let mut groups = Vec::new();
        let mut per_group: Vec<Vec<Target>> = Vec::new();
        for _ in 0..n {
            let (g, t) = start_group(node_bin, nodes)?;
            groups.push(g);
            per_group.push(t);
        }
        // Client i goes to group i % n (the routing table), and within a group to node
        // (i / n) % nodes, as a balancer in front of that group would.
        let mut targets = Vec::new();
        for i in 0..n * nodes.max(1) {
            let group = &per_group[i % n];
            targets.push(group[(i / n) % group.len()].clone());
        }
        let before = load::cpu_jiffies();
        let row = runtime_1()?.block_on(http_load_spread(&targets, request, clients, duration))?;
        let busy = load::busy_share(before, load::cpu_jiffies());
        drop(groups);
        let b = *base.get_or_insert(row.throughput);
        println!(
            "{n:>7} {:>6} {clients:>8} {:>12.0} {:>8.2} {:>8.2} {:>8.0}% {:>8.2}   {}",
            nodes.max(1),
            row.throughput,
            row.p50_ms,
            row.p99_ms,
            busy * 100.0,
            row.throughput / b,
            row.series_summary()
        );
        rows.push(json!({"groups": n, "nodes_per_group": nodes.max(1), "row": row.to_json(clients), "cpu_busy": busy, "scaling": row.throughput / b}));
    }
    println!("{}", json!({ "shards": rows }));
    Ok(())
}

//! G2 and G3 in one run: a dev node, then a loopback cluster of the real binaries (started by
//! the tests' launcher, `stella_tests::TestCluster`: mutual-TLS peers, one shared signing key,
//! the Authority and licensing stand-ins), loaded at the same concurrency levels with the
//! clients spread over the nodes as a balancer would; then, with `--etcd`, a 3-node etcd
//! loaded through its JSON gateway at 64 clients.
//!
//! G2 = best cluster throughput ÷ best dev-node throughput (goal ≥ 0.6).
//! G3 = the cluster's committed signings/s at 64 clients ÷ etcd puts/s at 64 clients (goal
//! ≥ 1.0). Every signing the cluster answers 200 is a Raft-committed write (its audit record,
//! fsynced in the log of a majority before the answer); one etcd put is one Raft-committed
//! write too. The cluster's Raft entries per second are printed beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stella_tests::{ClusterOptions, TestCluster};

use crate::load::{self, LoadAuth, Row, Target, http_load_spread, start_node};
use crate::{Args, etcd, runtime_1};

fn print_row(who: &str, c: usize, row: &Row) {
    println!(
        "{who:>8} {c:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7}   {}",
        row.throughput,
        row.p50_ms,
        row.p90_ms,
        row.p99_ms,
        row.errors,
        row.series_summary()
    );
}

fn header() {
    println!(
        "{:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "system", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
}

/// Runs every level against `targets`; returns the rows by level.
fn levels(
    who: &str,
    targets: &[Target],
    request: &Value,
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<(usize, Row)>> {
    let runtime = runtime_1()?;
    let mut rows = Vec::new();
    for &c in concurrency {
        let row = runtime.block_on(http_load_spread(targets, request, c, duration))?;
        print_row(who, c, &row);
        rows.push((c, row));
    }
    Ok(rows)
}

fn best(rows: &[(usize, Row)]) -> f64 {
    rows.iter().map(|(_, r)| r.throughput).fold(0.0, f64::max)
}

pub fn report(
    args: &Args,
    node_bin: &PathBuf,
    request: &Value,
    duration: Duration,
) -> anyhow::Result<()> {
    let nodes = args.cluster.unwrap_or(3);
    anyhow::ensure!(nodes >= 1, "--cluster needs at least one node");
    let mut concurrency = args.concurrency.clone();
    if args.etcd && !concurrency.contains(&64) {
        concurrency.push(64);
    }
    header();

    // The dev node (a one-node Raft cluster with the dev Authority).
    let data = tempfile::tempdir()?;
    let fsync = load::fdatasync_p50_ms(data.path(), 200)?;
    let (mut child, url, creds) = start_node(node_bin, data.path())?;
    let dev_target = Target {
        url: url.clone(),
        auth: Arc::new(LoadAuth::new(&url, creds)?),
    };
    let dev = levels("dev", &[dev_target], request, &concurrency, duration)?;
    let _ = child.kill();
    let _ = child.wait();

    // The cluster: the same binaries, launched the way the integration tests launch them.
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
    let commit_index = || {
        cluster
            .client(1)
            .cluster_status()
            .ok()
            .and_then(|s| s.commit_index)
            .unwrap_or(0)
    };
    let label = format!("{nodes}-node");
    let mut clustered = Vec::new();
    let mut entries_per_s_64 = None;
    for &c in &concurrency {
        let (before, t0) = (commit_index(), Instant::now());
        let rows = levels(&label, &targets, request, &[c], duration)?;
        let entries = commit_index().saturating_sub(before) as f64 / t0.elapsed().as_secs_f64();
        if c == 64 {
            entries_per_s_64 = Some(entries);
        }
        clustered.extend(rows);
    }
    drop(cluster);

    let (best_dev, best_cluster) = (best(&dev), best(&clustered));
    let g2 = best_cluster / best_dev;
    println!(
        "G2 = {nodes}-node cluster end to end / dev node = {best_cluster:.0} / {best_dev:.0} = {g2:.3} (goal >= 0.6; best level of each, clients spread over the nodes)"
    );
    let g4 = dev
        .iter()
        .find(|(c, _)| *c == 1)
        .map(|(_, r)| load::print_g4(r.p50_ms, fsync));

    let mut g3 = Value::Null;
    if args.etcd {
        let cluster_64 = clustered
            .iter()
            .find(|(c, _)| *c == 64)
            .map(|(_, r)| r.throughput)
            .unwrap_or(0.0);
        match runtime_1()?.block_on(etcd::measure(64, duration))? {
            None => println!(
                "G3: skipped: `etcd` is not installed (scripts/install-deps.sh installs Debian's etcd-server)"
            ),
            Some(e) => {
                println!(
                    "{:>8} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7}   {}",
                    "etcd",
                    64,
                    e.throughput,
                    e.p50_ms,
                    e.p90_ms,
                    e.p99_ms,
                    e.errors,
                    e.series_summary()
                );
                let ratio = cluster_64 / e.throughput;
                println!(
                    "G3 = {nodes}-node cluster committed signings/s at 64 clients / 3-node etcd puts/s at 64 clients = {cluster_64:.0} / {:.0} = {ratio:.3} (goal >= 1.0); cluster Raft entries/s meanwhile {:.0}",
                    e.throughput,
                    entries_per_s_64.unwrap_or(0.0)
                );
                g3 = json!({"cluster_64": cluster_64, "etcd_64": e.throughput, "ratio": ratio, "cluster_entries_per_s": entries_per_s_64});
            }
        }
    }
    let rows = |rows: &[(usize, Row)]| rows.iter().map(|(c, r)| r.to_json(*c)).collect::<Vec<_>>();
    println!(
        "{}",
        json!({"dev": rows(&dev), "cluster": rows(&clustered), "nodes": nodes, "g2": g2, "g3": g3, "g4": g4})
    );
    Ok(())
}

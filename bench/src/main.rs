//! `stella-load`: end-to-end signing throughput of a dev node against the raw signing speed of
//! the key back-end and the same admitted pipeline in process, measured in the same run on the
//! same machine, and the ratios of issue 18 (G1–G4, G6), each printed by one command
//! (docs/benchmarks.md):
//!
//! - default: B_sign, key back-ends (G5), admission cost, the dev node at several concurrency
//!   levels, G1 (dev node ÷ admitted pipeline in process on two threads), G4 (single-client
//!   p50 against fdatasync p50 of the same disk) and the Raft-vs-redb write comparison.
//! - `--cluster 3`: a dev node and a 3-node loopback cluster of the real binaries, same run: G2;
//!   with `--etcd` also G3 against a 3-node etcd.
//! - `--overload`: G6, 3× the measured saturation rate for `--overload-seconds`.
//! - `--tenants N,…`: a dev node whose state holds N tenants with a ledger each.
//! - `--state-costs`: apply cost per entry as the state grows, in process.
//! - `--shards 1,2,3`: N independent Raft groups, tenants spread over them.
//!
//! The load generator runs on a single-threaded runtime so it takes at most one core from the
//! nodes; on a 2-core machine that is a real handicap and the ratios should be read with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use serde_json::json;

mod admission_cost;
mod apply_cost;
mod cluster_load;
mod etcd;
mod flood;
mod key_backends;
mod load;
mod modes;
mod overload;
mod raft_writes;
mod shards;
mod snapshot_cost;
mod state_costs;
mod steady;
mod tenants;
mod threshold_net;
mod tlog_cost;

use load::{LoadAuth, http_load, raw_sign_loop, sample_request, start_node};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stella-load",
    about = "End-to-end signing throughput vs. the raw signing loop"
)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrency levels (in-flight requests).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Short run for CI smoke tests: 0.5 s per step, concurrency 1 and 8.
    #[arg(long)]
    quick: bool,
    /// The stella-signer binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Only the Raft-vs-redb write comparison, at these client counts (e.g. 1,4,64).
    #[arg(long, value_delimiter = ',')]
    g3_only: Vec<usize>,
    /// Only the flood comparison: one honest DPoP client with no flood, then under this many
    /// unauthenticated requests per second from the same address (issue 13, finding 5).
    #[arg(long)]
    flood: Option<u64>,
    /// Only the transparency log's costs, at these log sizes (e.g. 10000,100000,1000000):
    /// proof and look-up times, apply cost per record, and the tree's share of end-to-end
    /// signing on a dev node.
    #[arg(long, value_delimiter = ',')]
    tlog: Vec<u64>,
    /// Only snapshot costs at these log sizes (e.g. 100000,1000000): build and install time,
    /// file size, the memory each step adds, and the resident memory after building the log.
    #[arg(long, value_delimiter = ',')]
    snapshot: Vec<u64>,
    /// With --snapshot: bound redb's page cache to this many MiB (default: redb's 1 GiB).
    #[arg(long)]
    cache_mib: Option<usize>,
    /// Only throughput per second over this many seconds on one dev node, at the first
    /// --concurrency level (flat over time, issue 18).
    #[arg(long)]
    steady: Option<u64>,
    /// Only the state machine's apply cost per entry with this many ledgers (e.g.
    /// 1,1000,100000), over 2,000 entries each.
    #[arg(long, value_delimiter = ',')]
    apply_cost: Vec<u64>,
    /// G2 (and G3 with --etcd): a dev node and a loopback cluster of this many nodes (the real
    /// binaries, started like the tests' `TestCluster`), loaded in the same run, clients spread
    /// over the nodes as a balancer would.
    #[arg(long)]
    cluster: Option<usize>,
    /// G3: the cluster's committed signings/s at 64 clients against a 3-node etcd (Debian
    /// `etcd-server`, fsync on, loopback) doing one put per request through its JSON gateway.
    /// Skipped with a message when `etcd` is not installed. Implies `--cluster 3`.
    #[arg(long)]
    etcd: bool,
    /// G6: measure the dev node's saturation rate (closed loop, 64 clients), then offer 3× that
    /// rate open-loop for --overload-seconds: goodput, how every rejection looked, and what a
    /// rejection costs against a signing.
    #[arg(long)]
    overload: bool,
    /// Seconds of overload (default 60).
    #[arg(long, default_value_t = 60.0)]
    overload_seconds: f64,
    /// Signing throughput of a dev node whose state holds this many tenants with a ledger each
    /// (e.g. 1,1000,100000); the tenants are seeded through the real replicated command.
    #[arg(long, value_delimiter = ',')]
    tenants: Vec<u64>,
    /// State-machine costs in process: apply cost per signing entry with 1, 10^3 and 10^5
    /// tenants' ledgers in the state (sizes with --state-tenants).
    #[arg(long)]
    state_costs: bool,
    /// With --state-costs: the tenant counts.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    state_tenants: Vec<u64>,
    /// Sharding: N independent Raft groups (one-node dev nodes by default) on loopback, the
    /// tenants spread over them, for each N given (e.g. 1,2,3): aggregate throughput.
    #[arg(long, value_delimiter = ',')]
    shards: Vec<usize>,
    /// With --shards: nodes per group (1 or 3).
    #[arg(long, default_value_t = 1)]
    shard_nodes: usize,
    /// Clients for --cluster, --tenants and --shards (default 64).
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

fn runtime_1() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn runtime_n() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 0.5;
        args.concurrency = vec![1, 8];
    }
    let duration = Duration::from_secs_f64(args.duration);
    if !args.g3_only.is_empty() {
        let runtime = runtime_n()?;
        for clients in &args.g3_only {
            let g3 = runtime.block_on(raft_writes::measure(*clients, duration))?;
            println!(
                "{clients:>4} clients: Raft {:.0} writes/s, redb group commit {:.0} writes/s, ratio {:.3}",
                g3.raft,
                g3.baseline,
                g3.raft / g3.baseline
            );
        }
        return Ok(());
    }
    if !args.snapshot.is_empty() {
        return modes::snapshot_costs(&args.snapshot, args.cache_mib);
    }
    if args.state_costs {
        return state_costs::report(&args.state_tenants, duration);
    }
    if !args.apply_cost.is_empty() {
        let rows = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(apply_cost::measure(&args.apply_cost, 2_000))?;
        println!(
            "{:>9} {:>14} {:>17} {:>9} {:>10}",
            "ledgers", "apply µs/entry", "file bytes/entry", "file MiB", "state MiB"
        );
        for r in &rows {
            println!(
                "{:>9} {:>14.1} {:>17.0} {:>9.1} {:>10.1}",
                r.ledgers, r.apply_us, r.file_growth_bytes_per_entry, r.file_mib, r.state_mib
            );
        }
        println!(
            "{}",
            json!({"apply_cost": rows.iter().map(|r| json!({"ledgers": r.ledgers, "apply_us": r.apply_us, "file_bytes_per_entry": r.file_growth_bytes_per_entry, "file_mib": r.file_mib, "state_mib": r.state_mib})).collect::<Vec<_>>()})
        );
        return Ok(());
    }
    let request = sample_request();
    let node_bin = match &args.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("stella-signer"),
    };
    if let Some(rate) = args.flood {
        return modes::flood_comparison(&node_bin, &request, rate, duration);
    }
    if !args.tlog.is_empty() {
        return modes::tlog_costs(&node_bin, &request, &args.tlog, duration);
    }
    if let Some(seconds) = args.steady {
        let clients = args.concurrency.first().copied().unwrap_or(8);
        let data = tempfile::tempdir()?;
        let (mut child, url, creds) = start_node(&node_bin, data.path())?;
        let auth = Arc::new(LoadAuth::new(&url, creds)?);
        let (series, errors) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(steady::per_second(&url, auth, &request, clients, seconds))?;
        steady::report(&series, errors, clients);
        steady::files(&data.path().join("raft"));
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }
    if args.cluster.is_some() || args.etcd {
        return cluster_load::report(&args, &node_bin, &request, duration);
    }
    if args.overload {
        return overload::report(
            &node_bin,
            &request,
            duration,
            Duration::from_secs_f64(args.overload_seconds),
        );
    }
    if !args.tenants.is_empty() {
        return tenants::report(&node_bin, &request, &args.tenants, args.clients, duration);
    }
    if !args.shards.is_empty() {
        return shards::report(
            &node_bin,
            &request,
            &args.shards,
            args.shard_nodes,
            args.clients,
            duration,
        );
    }
    default_run(&args, &node_bin, duration)
}

/// The default run: every in-process baseline, the dev node at each concurrency level, G1, G4
/// and the Raft-vs-redb comparison.
fn default_run(args: &Args, node_bin: &PathBuf, duration: Duration) -> anyhow::Result<()> {
    let request = sample_request();
    let b_sign = raw_sign_loop(&request, duration)?;
    println!("B_sign (file key, aws-lc-rs, 2 threads): {b_sign:.0} signatures/s");

    let pae = stella_signer::pae(
        stella_signer::IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&request)?,
    );
    let backends = key_backends::compare(&pae, duration)?;
    for b in &backends {
        println!(
            "G5: {:<18} {:>8.0} signatures/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
            b.name, b.per_second, b.p50_us, b.p99_us
        );
    }
    if let Some(file) = backends.first() {
        for other in &backends[1..] {
            println!(
                "G5 {} / file: throughput {:.3}, p99 {:.2}x",
                other.name,
                other.per_second / file.per_second,
                other.p99_us / file.p99_us
            );
        }
    }

    let mut g5_frost = serde_json::Map::new();
    for suite in stella_signer::threshold::SuiteId::ALL {
        let (in_process, network) =
            runtime_n()?.block_on(threshold_net::measure(suite, &pae, duration))?;
        for r in [&in_process, &network] {
            println!(
                "G5: {:<30} {:>8.0} signatures/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
                r.name, r.per_second, r.p50_us, r.p99_us
            );
        }
        println!(
            "G5 FROST {suite} network / in process (2-of-3): p50 {:.2}x (goal ≤ 5x), p99 {:.2}x",
            network.p50_us / in_process.p50_us,
            network.p99_us / in_process.p99_us
        );
        g5_frost.insert(
            suite.name().to_owned(),
            json!({"in_process_p50_us": in_process.p50_us, "network_p50_us": network.p50_us, "p50_ratio": network.p50_us / in_process.p50_us}),
        );
    }

    let cost = runtime_1()?.block_on(admission_cost::measure(&request, duration))?;
    println!(
        "admission per request (in process, 1 thread): {:.1} µs (OpTok + DPoP + PoE cache) vs signing {:.1} µs; \
         signing alone {:.0}/s, admitted signing {:.0}/s, ratio {:.3}",
        cost.admission_us,
        cost.sign_us,
        cost.sign_per_s,
        cost.admitted_sign_per_s,
        cost.admitted_sign_per_s / cost.sign_per_s
    );
    let pipeline = runtime_n()?.block_on(admission_cost::two_threads(&request, duration))?;
    println!(
        "admitted pipeline in process (admission + plan + DSSE + bundle, 2 threads, no HTTP, no Raft): {pipeline:.0}/s"
    );

    let data = tempfile::tempdir()?;
    let fsync = load::fdatasync_p50_ms(data.path(), 200)?;
    let (mut child, url, creds) = start_node(node_bin, data.path())?;
    let auth = Arc::new(LoadAuth::new(&url, creds)?);
    let runtime = runtime_1()?;
    let mut rows = Vec::new();
    println!(
        "{:>11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "ratio"
    );
    let mut c1_p50 = None;
    for &c in &args.concurrency {
        let row = runtime.block_on(http_load(&url, auth.clone(), &request, c, duration))?;
        let ratio = row.throughput / b_sign;
        println!(
            "{:>11} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>7.3}   {}",
            c,
            row.throughput,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.errors,
            ratio,
            row.series_summary()
        );
        if c == 1 {
            c1_p50 = Some(row.p50_ms);
        }
        rows.push(row.to_json(c));
    }
    let _ = child.kill();
    let _ = child.wait();
    let best = rows
        .iter()
        .filter_map(|r| r["throughput"].as_f64())
        .fold(0.0, f64::max);
    let g1_raw = best / b_sign;
    println!("best end-to-end / B_sign = {best:.0} / {b_sign:.0} = {g1_raw:.3}");
    let g1 = best / pipeline;
    println!(
        "G1 = dev node end to end / admitted pipeline in process (2 threads) = {best:.0} / {pipeline:.0} = {g1:.3} (goal >= 0.5)"
    );
    let g4 = c1_p50.map(|p50| load::print_g4(p50, fsync));

    let g3 = runtime_n()?.block_on(raft_writes::measure(64, duration))?;
    let g3_ratio = g3.raft / g3.baseline;
    println!(
        "Raft-committed audit writes/s at 64 clients / redb group-commit baseline = {:.0} / {:.0} = {g3_ratio:.3}",
        g3.raft, g3.baseline
    );
    println!(
        "{}",
        json!({"b_sign": b_sign, "admission": {"admission_us": cost.admission_us, "sign_us": cost.sign_us, "sign_per_s": cost.sign_per_s, "admitted_sign_per_s": cost.admitted_sign_per_s, "pipeline_2_threads": pipeline}, "levels": rows, "g1": g1, "g1_vs_b_sign": g1_raw, "g4": g4, "raft_vs_redb": {"raft": g3.raft, "baseline": g3.baseline, "ratio": g3_ratio}, "g5_frost": g5_frost})
    );
    if rows.iter().any(|r| r["errors"].as_u64() != Some(0)) {
        bail!("some requests failed");
    }
    Ok(())
}

//! `stella-chaos drill --local 3 --duration 120 --seed 7`: see `docs/runbooks/chaos-drills.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use stella_chaos::drill::{self, DrillOptions};
use stella_chaos::local::{LocalOptions, LocalTarget};
use stella_chaos::report;
use stella_chaos::schedule::{self, ALL_KINDS, FaultKind};
use stella_chaos::target::Target;

#[derive(Parser)]
#[command(
    name = "stella-chaos",
    about = "Chaos drills: workload, nemesis, checker, report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a drill; exits 0 only if every invariant held (1: violated, 2: the drill failed).
    Drill(DrillArgs),
}

#[derive(clap::Args)]
struct DrillArgs {
    /// Start a loopback cluster of this many nodes (the real binaries, next to this one).
    #[arg(long, conflicts_with = "cluster")]
    local: Option<usize>,
    /// Drive an existing cluster described by this TOML file (docs/runbooks/chaos-drills.md).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Seconds of load.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Seed of the fault schedule (the same seed plans the same drill).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Signing requests per second over all tenants.
    #[arg(long, default_value_t = 12.0)]
    rate: f64,
    /// Fault kinds (comma-separated), `all` or `none`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Where report.html and report.json go.
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
    /// Seconds a busy machine may add to the nodes' deadline before an answer arrives.
    #[arg(long, default_value_t = 3)]
    slack: u64,
    /// Quota of the tight-quota tenant (local clusters).
    #[arg(long, default_value_t = 20)]
    tight_quota: u64,
    /// A deliberately broken build to prove the checker can fail (local clusters):
    /// `grant-over-quota` makes every node grant one signature per window beyond the quota.
    #[arg(long)]
    drill_fault: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `snapshot_every` of local clusters drilling snapshot catch-ups and fresh joins: at the
/// drill's ~60 entries/s the leader keeps ~8 s of entries beyond its snapshot, which a follower
/// installing a snapshot on a loaded machine (3–9 s measured) still reaches; 100 did not (the
/// follower installed snapshot after snapshot and never caught up).
const SNAPSHOT_EVERY_CATCHUP: u64 = 1000;

fn kinds(spec: &str) -> Result<Vec<FaultKind>> {
    match spec {
        "all" => Ok(ALL_KINDS.to_vec()),
        "none" | "" => Ok(Vec::new()),
        list => list
            .split(',')
            .map(|k| {
                FaultKind::parse(k.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown fault kind `{k}` (one of: {})",
                        ALL_KINDS.map(FaultKind::name).join(", ")
                    )
                })
            })
            .collect(),
    }
}

fn drill_main(args: DrillArgs) -> Result<bool> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be between 0 and 10000 per second");
    }
    let kinds = kinds(&args.faults)?;
    let mut local;
    let mut file;
    let (target, name): (&mut dyn Target, String) = match (args.local, &args.cluster) {
        (Some(n), None) => {
            if !(1..=7).contains(&n) {
                bail!("--local takes 1 to 7 nodes");
            }
            let drill_extra_grants = match args.drill_fault.as_deref() {
                None => 0,
                Some("grant-over-quota") => 1,
                Some(other) => bail!("unknown --drill-fault `{other}` (grant-over-quota)"),
            };
            eprintln!("starting a {n}-node loopback cluster …");
            local = LocalTarget::start(LocalOptions {
                nodes: n,
                tight_quota: args.tight_quota,
                drill_extra_grants,
                own_filesystems: kinds.contains(&FaultKind::DiskFull),
                link_proxy: kinds.iter().any(|k| k.is_link()),
                // One spare per planned membership fault (each joins a fresh node).
                spare_nodes: schedule::generate(&schedule::Plan::new(
                    args.seed,
                    args.duration,
                    kinds.clone(),
                ))
                .iter()
                .filter(|f| f.kind == FaultKind::Membership)
                .count(),
                // Compacting often makes a stopped follower fall behind the compacted logs
                // within seconds — but not too often: a follower must install a snapshot and
                // fetch the entries after it before the leader compacts past them again
                // (docs/adr/0029-peer-link-proxy-and-membership-faults.md).
                snapshot_every: if kinds.contains(&FaultKind::SnapshotCatchup)
                    || kinds.contains(&FaultKind::Membership)
                {
                    SNAPSHOT_EVERY_CATCHUP
                } else {
                    LocalOptions::default().snapshot_every
                },
                ..LocalOptions::default()
            })?;
            eprintln!("cluster files under {}", local.dir().display());
            (&mut local, format!("local cluster of {n} nodes"))
        }
        (None, Some(path)) => {
            if args.drill_fault.is_some() {
                bail!("--drill-fault needs --local (it configures the nodes)");
            }
            file = stella_chaos::cluster_file::FileTarget::load(path)?;
            (&mut file, format!("cluster {}", path.display()))
        }
        _ => bail!("name the target: --local N or --cluster FILE"),
    };
    let outcome = drill::run(
        target,
        &DrillOptions {
            duration_s: args.duration,
            seed: args.seed,
            rate: args.rate,
            kinds,
            out_dir: args.out,
            slack: Duration::from_secs(args.slack),
            progress: !args.quiet,
            target_name: name,
        },
    )?;
    println!("{}", report::invariant_table(&outcome.verdicts));
    println!("{}", report::recovery_table(&outcome.recovery));
    println!(
        "report: {} and {}",
        outcome.html.display(),
        outcome.json.display()
    );
    println!(
        "{}",
        if outcome.passed {
            "every invariant held"
        } else {
            "INVARIANTS VIOLATED"
        }
    );
    Ok(outcome.passed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Drill(args) => match drill_main(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("stella-chaos: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

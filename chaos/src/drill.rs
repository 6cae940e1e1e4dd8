//! One drill: workload + nemesis for the planned time, final heal, the checker over what the
//! callers saw and the audit logs of every node, and the report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use stella_api::{Client, ClientConfig};
use stella_state::AuditRecord;

use crate::checker::checkpoints::NodeCheckpoint;
use crate::checker::{self, Evidence, NodeLog, Recovery, Verdict};
use crate::history::History;
use crate::nemesis::{Damage, Nemesis};
use crate::report::{self, Report};
use crate::schedule::{self, FaultKind, Plan};
use crate::target::{Probe, Target};
use crate::workload::{Workload, WorkloadOptions};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub duration_s: f64,
    pub seed: u64,
    /// Signing requests per second over all tenants.
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub out_dir: PathBuf,
    /// What a busy machine may add to the nodes' deadline before an answer reaches the caller.
    pub slack: Duration,
    pub progress: bool,
    /// For the report: what was drilled.
    pub target_name: String,
}

pub struct DrillOutcome {
    pub passed: bool,
    pub verdicts: Vec<Verdict>,
    pub recovery: Vec<Recovery>,
    pub json: PathBuf,
    pub html: PathBuf,
}

pub fn run(target: &mut dyn Target, options: &DrillOptions) -> Result<DrillOutcome> {
    let probe = Probe::new(target)?;
    let ids = target.node_ids();
    if !probe.wait(Duration::from_secs(120), |p| {
        ids.iter().all(|id| p.ready(*id))
    }) {
        bail!(
            "the cluster is not ready on every node; not drilling a cluster that is already broken"
        );
    }
    let plan = Plan::new(options.seed, options.duration_s, options.kinds.clone());
    let planned = schedule::generate(&plan);
    let deadline = target.deadline();
    let workload = Workload::start(
        target,
        &WorkloadOptions {
            rate: options.rate,
            seed: options.seed,
            attempt_timeout: deadline + options.slack + Duration::from_secs(4),
        },
    )?;
    let recorder = workload.recorder.clone();
    let bar = if options.progress {
        ProgressBar::new(options.duration_s.ceil() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let end_ms = (options.duration_s * 1000.0) as u64;
    let mut tick = |label: &str| {
        let (ok, other) = recorder.counts();
        bar.set_position(recorder.now_ms() / 1000);
        bar.set_message(format!("{label} | signed {ok}, other answers {other}"));
    };
    let mut faults = Vec::new();
    let mut nemesis = Nemesis {
        target,
        probe: &probe,
        recorder: &recorder,
        picker: schedule::picker(options.seed),
        damage: Damage::default(),
        joined: Vec::new(),
    };
    let latest_start = end_ms.saturating_sub((plan.cooldown_s * 1000.0) as u64);
    for (index, fault) in planned.iter().enumerate() {
        let at = (fault.at_s * 1000.0) as u64;
        while recorder.now_ms() < at {
            tick("steady load");
            std::thread::sleep(Duration::from_millis(200));
        }
        if recorder.now_ms() + (fault.hold_s * 1000.0) as u64 > latest_start {
            break;
        }
        faults.push(nemesis.run(index, fault, &mut tick));
    }
    while recorder.now_ms() < end_ms {
        tick("steady load");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut heal_errors = nemesis.heal_all();
    let target = nemesis.target;
    tick("healed; finishing requests in flight");
    probe.wait(Duration::from_secs(120), Probe::converged);
    let history_end = recorder.now_ms();
    let attempts = workload.finish();
    bar.finish_and_clear();
    let converged = probe.wait(Duration::from_secs(120), Probe::converged);
    if !converged {
        heal_errors.push("the cluster did not converge within 120 s of the final heal".into());
    }
    // The members now: a node removed by the membership fault is not compared after its
    // removal; the fresh node that joined must hold every acknowledged record.
    let ids = target.node_ids();
    let logs: Vec<NodeLog> = ids
        .iter()
        .map(|id| NodeLog {
            node: *id,
            records: audit_log(target, *id).map_err(|e| format!("{e:#}")),
        })
        .collect();
    let history = History {
        attempts,
        faults,
        end_ms: history_end,
    };
    let quotas: Vec<(String, u64, u64)> = target
        .tenants()
        .into_iter()
        .filter_map(|t| t.quota.map(|(n, w)| (t.name, n, w)))
        .collect();
    let answer_within = deadline + options.slack;
    let mut verdicts = checker::check(&Evidence {
        history: &history,
        logs: &logs,
        quotas: &quotas,
        answer_within_ms: u64::try_from(answer_within.as_millis()).unwrap_or(u64::MAX),
        converged: converged && heal_errors.is_empty(),
    });
    let records = logs
        .iter()
        .filter_map(|l| l.records.as_ref().ok().map(Vec::len))
        .max()
        .unwrap_or(0);
    let (checkpoints, key) = checkpoints(target, &ids, records as u64);
    let at = verdicts
        .iter()
        .position(|v| v.name == "audit-chains-identical")
        .map_or(verdicts.len(), |i| i + 1);
    verdicts.insert(
        at,
        checker::checkpoints::verdict(&checkpoints, key.as_deref(), &logs),
    );
    if let Some(v) = verdicts.iter_mut().find(|v| v.name == "cluster-recovers") {
        v.examples.extend(heal_errors);
    }
    let recovery = checker::recoveries(&history);
    let per_fault = checker::recovery_per_fault(&history);
    let passed = verdicts.iter().all(|v| v.holds);
    std::fs::create_dir_all(&options.out_dir)?;
    if let Err(e) = target.save_logs(&options.out_dir) {
        eprintln!("could not save the nodes' logs: {e:#}");
    }
    let (json, html) = report::write(
        &options.out_dir,
        &Report {
            tool: "stella-chaos",
            target: options.target_name.clone(),
            seed: options.seed,
            duration_s: options.duration_s,
            rate: options.rate,
            passed,
            invariants: &verdicts,
            recovery: &recovery,
            recovery_per_fault: &per_fault,
            schedule: &planned,
            history: &history,
        },
    )?;
    Ok(DrillOutcome {
        passed,
        verdicts,
        recovery,
        json,
        html,
    })
}

/// Every audit record node `id` has applied (`consistency=stale`: this node's own copy).
pub fn audit_log(target: &dyn Target, id: usize) -> Result<Vec<AuditRecord>> {
    let mut credentials = target.auditor();
    credentials.server = target.api_url(id);
    let client = Client::new(ClientConfig {
        server: target.api_url(id),
        credentials,
        timeout: Duration::from_secs(120),
    })?;
    let response = client
        .audit_export(&[("consistency", "stale".to_owned())])
        .with_context(|| format!("exporting node {id}'s audit log"))?;
    let text = response.text().context("reading the export")?;
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).context("an export line")?;
        if value.get("cursor").is_some() && value.get("seq").is_none() {
            continue;
        }
        records.push(serde_json::from_value(value).context("an audit record")?);
    }
    Ok(records)
}

/// Every node's current checkpoint once they all name the same tree size — `records`, the
/// records the nodes hold, if they get there within a minute (checkpoints are cut every few
/// hundred ms) — and the published checkpoint key (the trust material, from the first node).
fn checkpoints(
    target: &dyn Target,
    ids: &[usize],
    records: u64,
) -> (Vec<NodeCheckpoint>, Option<String>) {
    let clients: Vec<(usize, Option<Client>)> = ids
        .iter()
        .map(|id| {
            let mut credentials = target.auditor();
            credentials.server = target.api_url(*id);
            let client = Client::new(ClientConfig {
                server: target.api_url(*id),
                credentials,
                timeout: Duration::from_secs(10),
            })
            .ok();
            (*id, client)
        })
        .collect();
    let read = || -> Vec<NodeCheckpoint> {
        clients
            .iter()
            .map(|(node, client)| NodeCheckpoint {
                node: *node,
                note: match client {
                    Some(c) => c.checkpoint().map_err(|e| format!("{e}")),
                    None => Err("no client".to_owned()),
                },
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = read();
    while std::time::Instant::now() < deadline {
        let sizes: Vec<Option<u64>> = last
            .iter()
            .map(|c| {
                c.note
                    .as_deref()
                    .ok()
                    .and_then(checker::checkpoints::note_size)
            })
            .collect();
        if sizes.iter().all(|s| *s == Some(records)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        last = read();
    }
    let key = clients
        .iter()
        .find_map(|(_, c)| c.as_ref()?.trust().ok())
        .and_then(|t| t.audit_log)
        .map(|k| k.verifier_key);
    (last, key)
}

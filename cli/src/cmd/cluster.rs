//! `stella cluster status`.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use super::common::{ConnArgs, report};

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Leader, term, members, commit index and every member's applied index.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, value_enum, default_value = "table")]
        output: Table,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Table {
    Table,
    Json,
}

pub(crate) fn cluster_status(conn: &ConnArgs, output: Table) -> anyhow::Result<()> {
    let status = conn.client()?.cluster_status()?;
    if output == Table::Json {
        say!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let dash = || "-".to_owned();
    say!(
        "leader {}  term {}  commit index {}  (answered by node {})",
        status.leader.map_or_else(dash, |l| l.to_string()),
        status.term,
        status.commit_index.map_or_else(dash, |c| c.to_string()),
        status.answered_by
    );
    say!(
        "{:>4}  {:<8} {:<10} {:>9} {:>9} {:>9}  {}",
        "node",
        "role",
        "state",
        "applied",
        "last log",
        "snapshot",
        "peer url"
    );
    for m in &status.members {
        say!(
            "{:>4}  {:<8} {:<10} {:>9} {:>9} {:>9}  {}",
            m.node_id,
            m.role,
            if m.reachable {
                m.state.clone().unwrap_or_else(dash)
            } else {
                "unreachable".into()
            },
            m.applied_index.map_or_else(dash, |v| v.to_string()),
            m.last_log_index.map_or_else(dash, |v| v.to_string()),
            m.snapshot_index.map_or_else(dash, |v| v.to_string()),
            m.peer_url
        );
    }
    Ok(())
}

/// `stella cluster …`.
pub(crate) fn run(what: ClusterCommand) -> ExitCode {
    let ClusterCommand::Status { conn, output } = what;
    report(cluster_status(&conn, output))
}

//! `stella admin …`: operator actions.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::common::{ConnArgs, parse_duration, report};

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Show, switch on (`--enable --for 30m`) or off (`--disable`) the emergency PoE bypass.
    /// Every change and every bypassed signing is audited.
    PoeBypass(BypassArgs),
}

#[derive(Args)]
pub(crate) struct BypassArgs {
    #[arg(long, conflicts_with = "disable", requires_all = ["reason", "for_"])]
    enable: bool,
    #[arg(long, requires = "reason")]
    disable: bool,
    /// Why (recorded in the toggle and the audit log).
    #[arg(long)]
    reason: Option<String>,
    /// How long the bypass stays on: e.g. 90s, 30m, 4h (at most 7 days).
    #[arg(long = "for", id = "for_")]
    for_: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) fn poe_bypass(args: &BypassArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let status = if args.enable || args.disable {
        let expires_in_seconds = args.for_.as_deref().map(parse_duration).transpose()?;
        client.set_poe_bypass(&stella_api::PoeBypassRequest {
            enabled: args.enable,
            reason: args.reason.clone().unwrap_or_default(),
            expires_in_seconds,
        })?
    } else {
        client.poe_bypass()?
    };
    say!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// `stella admin …`.
pub(crate) fn run(what: AdminCommand) -> ExitCode {
    let AdminCommand::PoeBypass(args) = what;
    report(poe_bypass(&args))
}

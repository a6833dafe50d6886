//! `imds-guard enforce-native`: a person switches AWS's own enforcement on
//! in one account-region, or undoes it (`native_flow`). Without `--apply` it
//! says exactly what it would change and changes nothing.

use std::process::ExitCode;

use super::emit;
use crate::aws::clients::AllOutputs;
use crate::aws::{load_sdk_config, RegionalClients};
use crate::config::Config;
use crate::native::{Ask, Decision};

#[derive(Debug, clap::Args)]
pub struct EnforceArgs {
    /// The account: the one your credentials act in (twelve digits).
    #[arg(long, value_name = "ID", value_parser = super::account)]
    account: String,
    /// The region.
    #[arg(long, value_name = "REGION", value_parser = super::region)]
    region: String,
    /// Make the change (without it, print what would change).
    #[arg(long)]
    apply: bool,
    /// Put back the values recorded when enforcement was switched on here.
    #[arg(long, conflicts_with_all = ["force", "reason", "confirm_account"])]
    undo: bool,
    /// Switch it on although the account-region is not ready (launches that
    /// ask for IMDSv1 then fail). Needs --reason and --confirm-account.
    #[arg(long, requires_all = ["reason", "confirm_account"])]
    force: bool,
    /// Why, for the message (with --force).
    #[arg(long, value_name = "TEXT", requires = "force")]
    reason: Option<String>,
    /// The account id, typed again (with --force).
    #[arg(long, value_name = "ID", requires = "force")]
    confirm_account: Option<String>,
}

pub fn run(args: EnforceArgs) -> Result<ExitCode, String> {
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    cfg.metrics = None;
    let ask = Ask {
        account: args.account,
        region: args.region,
        undo: args.undo,
        force: args.force.then(|| {
            (
                args.reason.unwrap_or_default(),
                args.confirm_account.unwrap_or_default(),
            )
        }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let done = runtime.block_on(async {
        let sdk = load_sdk_config().await;
        super::credentials(&sdk).await?;
        let clients = RegionalClients::<AllOutputs>::for_config_with(sdk, &cfg);
        crate::native_flow::enforce(&cfg, &clients, &ask, args.apply).await
    })?;
    Ok(say(&done, &ask, args.apply))
}

/// Prints what was (or would be) done; the exit status says which.
fn say(done: &crate::native_flow::Done, ask: &Ask, apply: bool) -> ExitCode {
    let place = format!("{}/{}", ask.account, ask.region);
    match &done.decision {
        Decision::Refuse(why) => {
            eprintln!("imds-guard enforce-native: refused: {why}");
            ExitCode::from(1)
        }
        Decision::Nothing(why) => {
            emit(&format!("{place}: nothing to change: {why}\n"));
            ExitCode::SUCCESS
        }
        Decision::Change { from, to, forced } => {
            let verb = match (apply, done.applied) {
                (true, true) => "changed",
                _ => "would change (pass --apply to make it)",
            };
            emit(&format!("{place}: {verb}: {from} -> {to}\n"));
            if let (true, Some(r)) = (ask.undo, &done.recorded) {
                emit(&format!(
                    "  the values recorded when {} switched it on at {}\n",
                    r.by,
                    crate::time::iso8601(r.at)
                ));
            }
            if let Some(f) = forced {
                emit(&format!("  {f}\n"));
            }
            if done.applied && !ask.undo {
                emit(&format!(
                    "  the prior values are recorded in the guard's memory; undo: imds-guard enforce-native --account {} --region {} --undo --apply\n",
                    ask.account, ask.region
                ));
            }
            if let Some(n) = &done.notification {
                emit(&format!("  message: {n}\n"));
            }
            ExitCode::SUCCESS
        }
    }
}

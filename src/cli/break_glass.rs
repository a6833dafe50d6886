//! `imds-guard break-glass`: grant, revoke and list time-boxed exemptions
//! (`crate::break_glass_flow`).

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{presets, Table};

use super::{account, emit, region};
use crate::aws::clients::NoOutputs;
use crate::aws::{load_sdk_config, RegionalClients};
use crate::break_glass::{Grant, MAX_GRANT_SECS};
use crate::break_glass_flow::{self as flow, Done};
use crate::clock::now_secs;
use crate::config::Config;
use crate::finding::iso8601;

#[derive(Debug, Args)]
pub struct BreakGlassArgs {
    #[command(subcommand)]
    command: BreakGlassCommand,
}

#[derive(Debug, Subcommand)]
enum BreakGlassCommand {
    /// Exempt one instance, or every instance launched from one launch
    /// template, until a time, for a reason.
    Grant {
        #[command(flatten)]
        place: Place,
        /// The instance (i-...) or launch template (lt-...).
        #[arg(long, value_name = "ID")]
        target: String,
        /// Why (an incident, a ticket): kept with the grant and told.
        #[arg(long)]
        reason: String,
        /// How long: 30m, 4h, 2d (at most 7d).
        #[arg(long = "for", value_name = "DURATION", value_parser = duration)]
        lasting: u64,
    },
    /// End a grant now: the guard handles the instance as usual again.
    Revoke {
        #[command(flatten)]
        place: Place,
        #[arg(long, value_name = "ID")]
        target: String,
    },
    /// The grants of an account-region (in force, ended, revoked).
    List {
        #[command(flatten)]
        place: Place,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Debug, Args)]
struct Place {
    /// The instance's region.
    #[arg(long, value_parser = region)]
    region: String,
    /// The instance's account (central mode; default: the caller's own).
    #[arg(long, value_name = "ID", value_parser = account)]
    account: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// `30m`, `4h`, `2d` as seconds, at most `MAX_GRANT_SECS`.
fn duration(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let Some(last) = v.chars().last() else {
        return Err("expected minutes, hours or days (30m, 4h, 2d)".into());
    };
    let (n, unit) = v.split_at(v.len() - last.len_utf8());
    let scale = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{v:?}: expected minutes, hours or days (30m, 4h, 2d)"
            ))
        }
    };
    let secs = n
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{v:?}: expected a whole number before the unit (30m, 4h, 2d)"))?;
    if secs > MAX_GRANT_SECS {
        return Err(format!(
            "{v:?}: a grant lasts at most {}h; grant it again if the incident lasts longer",
            MAX_GRANT_SECS / 3600
        ));
    }
    Ok(secs)
}

pub fn run(args: BreakGlassArgs) -> Result<ExitCode, String> {
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    cfg.metrics = None;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let clients = RegionalClients::<NoOutputs>::for_config_with(load_sdk_config().await, &cfg);
        let now = now_secs();
        match args.command {
            BreakGlassCommand::Grant {
                place,
                target,
                reason,
                lasting,
            } => {
                let done = flow::grant(
                    &cfg,
                    &clients,
                    place.account.as_deref(),
                    &place.region,
                    &target,
                    lasting,
                    &reason,
                    now,
                )
                .await?;
                emit(&said("granted", &done, &place.region));
            }
            BreakGlassCommand::Revoke { place, target } => {
                let done = flow::revoke(
                    &cfg,
                    &clients,
                    place.account.as_deref(),
                    &place.region,
                    &target,
                    now,
                )
                .await?;
                emit(&said("revoked", &done, &place.region));
            }
            BreakGlassCommand::List { place, output } => {
                let (account, grants) =
                    flow::list(&cfg, &clients, place.account.as_deref(), &place.region, now)
                        .await?;
                match output {
                    Output::Json => emit(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&grants).map_err(|e| e.to_string())?
                    )),
                    Output::Table => emit(&render(&account, &place.region, &grants, now)),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn said(verb: &str, done: &Done, region: &str) -> String {
    format!(
        "break-glass {verb}: {} in {}/{region} until {} by {}: {}\nnotification: {}\n",
        done.grant.target,
        done.account,
        iso8601(done.grant.until),
        done.grant.by,
        done.grant.reason,
        done.notification
    )
}

fn render(account: &str, region: &str, grants: &[Grant], now: u64) -> String {
    if grants.is_empty() {
        return format!("no break-glass grants in {account}/{region}\n");
    }
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_header(["TARGET", "STATE", "UNTIL", "BY", "REASON"]);
    for g in grants {
        t.add_row(vec![
            g.target.clone(),
            serde_json::to_value(g.state(now))
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            iso8601(g.until),
            g.by.clone(),
            g.reason.clone(),
        ]);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_are_read_and_capped_at_a_week() {
        assert_eq!(duration("30m"), Ok(1_800));
        assert_eq!(duration("4h"), Ok(14_400));
        assert_eq!(duration("7d"), Ok(604_800));
        assert!(duration("8d").unwrap_err().contains("at most 168h"));
        for bad in ["", "4", "h", "0h", "-1h", "4w", "1.5h", "4µ", "µ"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}

//! `imds-guard migrate-exemptions`: legacy exemption records copied into the
//! guard's memory, for each account and region (`crate::migrate`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use comfy_table::{presets, Table};

use super::emit;
use crate::aws::clients::AllOutputs;
use crate::aws::{load_sdk_config, Clients, RegionalClients};
use crate::config::{Config, SweepAccounts};
use crate::migrate::{self, Migrated};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

pub fn run(args: MigrateArgs) -> Result<ExitCode, String> {
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    // Metrics are the function's (its log becomes CloudWatch's): here,
    // stdout is the user's.
    cfg.metrics = None;
    if let Some(why) = migrate::cannot_start(&cfg) {
        return Err(why.into());
    }
    if (args.targets.organization || !args.targets.accounts.is_empty()) && cfg.member_role.is_none()
    {
        return Err("other accounts need MEMBER_ROLE_NAME, the role to assume in them".into());
    }
    // The accounts the guard may act in, as everywhere else.
    let listed = match &cfg.sweep_accounts {
        SweepAccounts::Listed(list) if args.targets.accounts.is_empty() => list.as_slice(),
        _ => args.targets.accounts.as_slice(),
    };
    if let Some(a) = listed.iter().find(|a| cfg.refusal(Some(a)).is_some()) {
        return Err(format!("account {a} is not in ALLOWED_ACCOUNT_IDS"));
    }
    if cfg.sweep_accounts == SweepAccounts::Organization
        && !args.targets.organization
        && args.targets.accounts.is_empty()
    {
        return Err("SWEEP_ACCOUNTS=ORGANIZATION: pass --organization (or --account) to migrate the organization's accounts; without, only the caller's own would be".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let done: Vec<Migrated> = runtime.block_on(async {
        let sdk = load_sdk_config().await;
        let mut regions = args.targets.regions.clone();
        if regions.is_empty() {
            regions = cfg.sweep_regions.clone();
        }
        if regions.is_empty() {
            regions.extend(sdk.region().map(|r| r.to_string()));
        }
        if regions.is_empty() {
            return Err(
                "which region? Pass --region, or set SWEEP_REGIONS or AWS_REGION".to_string(),
            );
        }
        let clients =
            RegionalClients::<AllOutputs>::for_config_with(sdk, &cfg).with_outputs_of(&cfg);
        let accounts: Vec<Option<String>> = if args.targets.organization {
            clients
                .organization_accounts()
                .await
                .map_err(|e| format!("the organization's accounts could not be listed: {e}"))?
                .into_iter()
                .filter(|a| cfg.refusal(Some(a)).is_none())
                .map(Some)
                .collect()
        } else if !args.targets.accounts.is_empty() {
            args.targets.accounts.iter().cloned().map(Some).collect()
        } else {
            match &cfg.sweep_accounts {
                SweepAccounts::Listed(list) => list.iter().cloned().map(Some).collect(),
                _ => vec![None],
            }
        };
        let mut done = Vec::new();
        for a in &accounts {
            for r in &regions {
                done.push(migrate::region(&cfg, &clients, a.as_deref(), r).await);
            }
        }
        Ok(done)
    })?;
    match args.output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&done).map_err(|e| e.to_string())?
        )),
        Output::Table => emit(&render(&done)),
    }
    Ok(if done.iter().any(|m| m.error.is_some()) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(done: &[Migrated]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header([
        "REGION",
        "RECORDED",
        "LEFT OUT (launched after the cutoff)",
        "ERROR",
    ]);
    for m in done {
        t.add_row(vec![
            match &m.account {
                Some(a) => format!("{a}/{}", m.region),
                None => m.region.clone(),
            },
            m.recorded.len().to_string(),
            if m.refused.is_empty() {
                "-".into()
            } else {
                m.refused.join(" ")
            },
            m.error.clone().unwrap_or_default(),
        ]);
    }
    let mut out: String = t
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches(' ').trim_end()))
        .collect();
    let recorded: usize = done.iter().map(|m| m.recorded.len()).sum();
    out.push_str(&format!(
        "\n{recorded} legacy record(s) now in the guard's memory; once every region is migrated, unset LEGACY_EXEMPT_BEFORE.\n"
    ));
    out
}

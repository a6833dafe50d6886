//! `imds-guard sweep`: the scheduled function's sweep, from a shell. It
//! writes only when asked (without `--mode` or `GUARD_MODE` it audits), says
//! in one line why it cannot start (no region, no credentials), shows its
//! progress on a terminal, and prints a table, the JSON report, or every
//! instance decided as CSV or one HTML page (`--output csv|html`: `export`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use comfy_table::{presets, CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};

use super::{emit, ModeArg};
use crate::aws::clients::AllOutputs;
use crate::aws::{load_sdk_config, RegionalClients};
use crate::config::{Config, Mode, SweepAccounts, SweepScope};
use crate::event::{self, EventContext};
use crate::guard::{Guard, GuardError};
use crate::report::{InstanceReport, Outcome, RegionSweep, Report};
use crate::sweep::Progress;

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// What to do with what it finds. Default: GUARD_MODE, else audit
    /// (nothing written).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Account-regions swept at once (1-32). Default: SWEEP_CONCURRENCY,
    /// else 4. Each holds one page of instances; EC2 rate-limits per
    /// account and region, so more helps most across accounts.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=32))]
    concurrency: Option<u8>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = SweepOutput::Table)]
    output: SweepOutput,
}

/// `imds-guard plan`: the way out (`rollout`), as a table, whole units
/// that are ready first: from a saved sweep report, or an audit sweep now.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// A sweep's JSON report (`imds-guard sweep --output json`) to read
    /// instead of sweeping now.
    #[arg(long, value_name = "SWEEP.json", conflicts_with_all = ["regions", "accounts", "organization"])]
    from: Option<std::path::PathBuf>,
    /// Print the plan as JSON (the report's `native_enforcement`).
    #[arg(long)]
    json: bool,
    /// Account-regions swept at once (1-32), as `sweep --concurrency`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=32))]
    concurrency: Option<u8>,
}

pub fn plan(args: PlanArgs) -> Result<ExitCode, String> {
    let Some(path) = args.from else {
        return run(SweepArgs {
            targets: args.targets,
            mode: Some(ModeArg::Audit),
            concurrency: args.concurrency,
            output: if args.json {
                SweepOutput::PlanJson
            } else {
                SweepOutput::Plan
            },
        });
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let rollout = report
        .pointer("/sweep/native_enforcement")
        .ok_or_else(|| {
            format!(
                "{} has no native_enforcement section: it is not a sweep report (imds-guard sweep --output json, from this version on)",
                path.display()
            )
        })
        .and_then(|v| {
            serde_json::from_value::<crate::rollout::Rollout>(v.clone())
                .map_err(|e| format!("its native_enforcement section cannot be read: {e}"))
        })?;
    emit_plan(&rollout, args.json)?;
    // A region the saved sweep did not finish was not judged: as `sweep`.
    let unfinished = report
        .pointer("/sweep/regions")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|rs| {
            rs.iter().any(|r| {
                r.get("errors")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|e| !e.is_empty())
            })
        });
    let unreadable = report
        .get("unreadable")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|u| !u.is_empty());
    if unfinished || unreadable {
        eprintln!(
            "imds-guard plan: a region of {} was not swept to the end: its step is not known",
            path.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(plan_code(&rollout))
}

fn emit_plan(rollout: &crate::rollout::Rollout, json: bool) -> Result<(), String> {
    if json {
        emit(&serde_json::to_string_pretty(rollout).map_err(|e| e.to_string())?);
        emit("\n");
    } else {
        emit(&rollout.table());
    }
    Ok(())
}

/// 0 when nothing is blocked (each account-region ready or enforced), 1
/// when some is.
fn plan_code(rollout: &crate::rollout::Rollout) -> ExitCode {
    if rollout.units.iter().any(|u| u.blocked > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SweepOutput {
    /// One row per region, then the instances with news.
    Table,
    /// The whole report.
    Json,
    /// One row per instance decided, every one (for spreadsheets).
    Csv,
    /// One self-contained page to hand around: counts, readiness, the
    /// account defaults, charts, sources and instances.
    Html,
    /// The way out (`imds-guard plan`): where AWS's own enforcement can go
    /// on, whole units that are ready first.
    Plan,
    #[value(skip)]
    PlanJson,
}

pub fn run(args: SweepArgs) -> Result<ExitCode, String> {
    let mode_given =
        args.mode.is_some() || std::env::var("GUARD_MODE").is_ok_and(|v| !v.trim().is_empty());
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    // Metrics are the function's (its log becomes CloudWatch's): here,
    // stdout is the user's.
    cfg.metrics = None;
    cfg.needs_memory().map_err(|e| e.to_string())?;
    for notice in cfg.notices() {
        eprintln!("imds-guard sweep: {notice}");
    }
    if let Some(n) = args.concurrency {
        cfg.sweep_concurrency = usize::from(n);
    }
    // A plan is a reading: it tells no one and files nothing.
    if matches!(args.output, SweepOutput::Plan | SweepOutput::PlanJson) {
        cfg.topic_arn = None;
        cfg.event_bus = None;
        cfg.security_hub_findings = false;
    }
    match args.mode {
        Some(m) => cfg.mode = m.into(),
        // A sweep from a shell writes only when asked.
        None if !mode_given => cfg.mode = Mode::Audit,
        None => {}
    }
    if args.targets.organization || !args.targets.accounts.is_empty() {
        if cfg.member_role.is_none() {
            return Err(
                "sweeping other accounts needs MEMBER_ROLE_NAME, the role to assume in them".into(),
            );
        }
        if let Some(a) = args
            .targets
            .accounts
            .iter()
            .find(|a| cfg.refusal(Some(a)).is_some())
        {
            return Err(format!("--account {a} is not in ALLOWED_ACCOUNT_IDS"));
        }
    }
    // What this run covers: the accounts and regions named here, else the
    // deployment's (the settings themselves are not changed for it).
    let accounts = if args.targets.organization {
        SweepAccounts::Organization
    } else if !args.targets.accounts.is_empty() {
        SweepAccounts::Listed(args.targets.accounts.clone())
    } else {
        cfg.sweep_accounts.clone()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let tty = std::io::stderr().is_terminal();
    let result = runtime.block_on(async {
        let sdk = load_sdk_config().await;
        let mut scope =
            SweepScope::configured(&cfg, sdk.region().map(|r| r.as_ref())).in_accounts(accounts);
        if !args.targets.regions.is_empty() {
            scope.regions = args.targets.regions.clone();
        }
        let regions = &scope.regions;
        if regions.is_empty() {
            return Err("which region? Pass --region, or set SWEEP_REGIONS or AWS_REGION".to_string());
        }
        // Without credentials nothing can be swept: say so once, with the
        // fix, rather than a table of errors.
        super::credentials(&sdk).await?;
        if !mode_given {
            eprintln!(
                "imds-guard sweep: audit mode, nothing is written; pass --mode enforce (or set GUARD_MODE) to fix what it finds"
            );
        }
        let ctx = EventContext {
            event_name: event::SWEEP.into(),
            region: regions[0].clone(),
            ..EventContext::default()
        };
        let clients = RegionalClients::<AllOutputs>::for_config_with(sdk, &cfg).with_outputs_of(&cfg);
        let guard = Guard::new(cfg.clone(), clients);
        let bar = tty.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let show = |p: Progress<'_>| {
            if let Some(bar) = &bar {
                let place = match p.account {
                    Some(a) => format!("{a}/{}", p.region),
                    None => p.region.to_string(),
                };
                bar.set_message(format!(
                    "{place}: page {}, {} instances examined, {} acted on",
                    p.pages, p.examined, p.acted
                ));
            }
        };
        // CSV and HTML show every instance decided, not only the news the
        // report keeps.
        let every = std::sync::Mutex::new(Vec::new());
        let keep = |r: &InstanceReport| {
            every.lock().unwrap_or_else(|p| p.into_inner()).push(r.clone());
        };
        let result = match args.output {
            SweepOutput::Csv | SweepOutput::Html => {
                guard.sweep_every(ctx, &scope, &show, &keep).await
            }
            _ => guard.sweep(ctx, &scope, None, &show).await,
        };
        let every = every.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok((result, every))
    })?;
    let (result, every) = result;
    let (report, failed) = match result {
        Ok(r) => (r, None),
        Err(GuardError::Unhandled { summary, report }) => (*report, Some(summary)),
        Err(e) => return Err(e.to_string()),
    };
    match args.output {
        SweepOutput::Json => {
            emit(&serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            emit("\n");
        }
        SweepOutput::Table => emit(&render_sweep(&report)),
        SweepOutput::Csv => emit(&super::export::csv(&report, &every)?),
        SweepOutput::Html => emit(&super::export::html(
            &report,
            &every,
            crate::clock::now_secs(),
        )),
        SweepOutput::Plan | SweepOutput::PlanJson => {
            let rollout = report
                .sweep
                .as_ref()
                .and_then(|s| s.native_enforcement.clone())
                .unwrap_or_default();
            emit_plan(&rollout, args.output == SweepOutput::PlanJson)?;
            // A region not swept to the end is not judged: an error, as
            // for the sweep.
            let unjudged = report
                .sweep
                .as_ref()
                .is_some_and(|s| s.regions.iter().any(|r| !r.errors.is_empty()));
            if failed.is_some() || unjudged || !report.unreadable.is_empty() {
                if let Some(summary) = &failed {
                    eprintln!("imds-guard plan: {summary}");
                }
                return Ok(ExitCode::from(2));
            }
            return Ok(plan_code(&rollout));
        }
    }
    let region_errors = report
        .sweep
        .as_ref()
        .is_some_and(|s| s.regions.iter().any(|r| !r.errors.is_empty()))
        || !report.unreadable.is_empty();
    if let Some(summary) = &failed {
        eprintln!("imds-guard sweep: {summary}");
    }
    let left = report.count(Outcome::Flagged) + report.count(Outcome::Failed);
    // 2 whenever the same run as a function would have failed (a region
    // not swept, or its notification, findings or events not delivered):
    // a pipeline gate must not pass on a run that did not finish.
    Ok(if region_errors || failed.is_some() {
        ExitCode::from(2)
    } else if left > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn place(g: &RegionSweep) -> String {
    match &g.account {
        Some(a) => format!("{a}/{}", g.region),
        None => g.region.clone(),
    }
}

/// A table without borders: columns separated by spaces, numbers right-aligned.
fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Trims the padding the table puts at the start and end of each line.
fn lines(t: &Table) -> String {
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_start_matches(' ').trim_end());
        out.push('\n');
    }
    out
}

/// The sweep as a table: one row per region, a line per account, then per
/// region how it was listed, its account default and readiness, and the
/// instances with news.
pub fn render_sweep(r: &Report) -> String {
    let mut out = String::new();
    let Some(sweep) = &r.sweep else {
        return out;
    };
    let mut regions = table(
        &[
            "REGION",
            "EXAMINED",
            "COMPLIANT",
            "REMEDIATED",
            "FLAGGED",
            "EXEMPT",
            "FAILED",
            "V1-IN-USE",
            "DEFAULT",
            "ENFORCED",
            "READY FOR HttpTokensEnforced",
        ],
        &[1, 2, 3, 4, 5, 6, 7],
    );
    for g in &sweep.regions {
        let d = g.account_defaults.as_ref();
        regions.add_row(vec![
            place(g),
            g.examined.to_string(),
            g.count(Outcome::Compliant).to_string(),
            g.count(Outcome::Remediated).to_string(),
            g.count(Outcome::Flagged).to_string(),
            g.count(Outcome::Exempt).to_string(),
            g.count(Outcome::Failed).to_string(),
            g.v1_in_use.to_string(),
            d.and_then(|d| d.http_tokens.clone())
                .unwrap_or_else(|| "unknown".into()),
            d.and_then(|d| d.http_tokens_enforced.clone())
                .unwrap_or_else(|| "unknown".into()),
            g.readiness.verdict.to_string(),
        ]);
    }
    out.push_str(&lines(&regions));
    if !sweep.accounts.is_empty() {
        let mut accounts = table(&["ACCOUNT", "REGIONS", "ACCESS", "COUNTS"], &[1]);
        for a in &sweep.accounts {
            let counts: Vec<String> = a
                .counts
                .iter()
                .map(|(o, n)| format!("{n} {}", o.as_str()))
                .collect();
            accounts.add_row(vec![
                a.account.clone(),
                a.regions.to_string(),
                a.access.to_string(),
                if counts.is_empty() {
                    "-".to_string()
                } else {
                    counts.join(", ")
                },
            ]);
        }
        out.push('\n');
        out.push_str(&lines(&accounts));
    }
    if !sweep.sources.is_empty() {
        // What keeps launching IMDSv1-open instances, the largest first.
        let mut sources = table(
            &["SOURCE", "KIND", "WHERE", "INSTANCES", "OUTCOME", "ACTION"],
            &[3],
        );
        for s in &sweep.sources {
            let outcome = serde_json::to_value(s.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            sources.add_row(vec![
                s.name.clone().unwrap_or_else(|| s.id.clone()),
                s.kind.to_string(),
                match (&s.account, &s.region) {
                    (Some(a), Some(r)) => format!("{a}/{r}"),
                    (None, Some(r)) => r.clone(),
                    _ => String::new(),
                },
                s.instances.to_string(),
                outcome,
                s.action.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&lines(&sources));
        for s in &sweep.sources {
            for f in &s.findings {
                out.push_str(&format!("{}: {f}\n", s.label()));
            }
            if !s.pinned_by.is_empty() {
                out.push_str(&format!(
                    "{}: pinned by number in {} (a new default does not reach them)\n",
                    s.label(),
                    s.pinned_by.join(", ")
                ));
            }
        }
    }
    out.push('\n');
    for g in &sweep.regions {
        let p = place(g);
        out.push_str(&format!("{p}: listed {}\n", g.listing));
        out.push_str(&format!(
            "{p}: account default: {}\n",
            g.account_default_action
        ));
        for reason in &g.readiness.reasons {
            out.push_str(&format!("{p}: {} because {reason}\n", g.readiness.verdict));
        }
        for e in &g.errors {
            out.push_str(&format!("{p}: ERROR {e}\n"));
        }
    }
    if !r.instances.is_empty() {
        out.push('\n');
    }
    for i in &r.instances {
        out.push_str(&format!(
            "{}{} {}  {}  {}{}\n",
            i.account
                .as_deref()
                .map(|a| format!("{a}/"))
                .unwrap_or_default(),
            i.region.as_deref().unwrap_or(""),
            i.instance_id,
            i.outcome.as_str(),
            i.action,
            i.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if sweep.omitted_instances > 0 {
        out.push_str(&format!(
            "... and {} more (counts above cover every instance)\n",
            sweep.omitted_instances
        ));
    }
    for u in &r.unreadable {
        out.push_str(&format!("ERROR {u}\n"));
    }
    out.push_str(&format!("notify     {}\n", r.notification));
    out
}

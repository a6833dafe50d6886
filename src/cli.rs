//! The command line: `imds-guard check EVENT.json` evaluates an event file
//! offline, with no AWS call, and prints what the function would do;
//! `imds-guard sweep` sweeps regions exactly as the scheduled function does.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::aws::{load_sdk_config, RegionalClients};
use crate::config::{Config, Mode, SweepAccounts};
use crate::event::{self, EventContext, GuardEvent};
use crate::guard::{Guard, GuardError};
use crate::plan::plan;
use crate::report::{DefaultsReport, Outcome, Report, Status};
use crate::sweep::Progress;

const USAGE: &str = "\
imds-guard: keeps EC2 instances on IMDSv2 (HttpTokens=required)

Started by the Lambda runtime (AWS_LAMBDA_RUNTIME_API set) it is the function.
From a shell:

  imds-guard check EVENT.json [--mode enforce|notify|audit] [--output text|json]
      Evaluate an EventBridge/CloudTrail event file offline (no AWS call) and
      print what the function would do. Configuration comes from the same
      environment variables as the function (GUARD_MODE, EXEMPT_*, ...);
      flags override them. Exit status: 0 nothing to fix, 1 something
      noncompliant (or undecidable offline), 2 error.

  imds-guard sweep [--region R]... [--account ID... | --organization]
                   [--mode enforce|notify|audit] [--output table|json]
      Sweep the instances of each region (pending, running, stopping,
      stopped) as the scheduled function does: same decision, exemptions,
      actions and notification, with the same environment configuration
      (SWEEP_REGIONS, SET_ACCOUNT_DEFAULT, CHECK_METADATA_NO_TOKEN, ...);
      flags override it. Regions: --region, else SWEEP_REGIONS, else the
      SDK's region (AWS_REGION or the profile). Accounts (central mode,
      MEMBER_ROLE_NAME set): --account, or --organization for every active
      account of the organization, else SWEEP_ACCOUNTS, else the caller's
      own. Credentials and endpoints come from the SDK's usual chain. Exit status: 0 nothing noncompliant
      left (exempt instances aside), 1 some left, 2 error (a region could
      not be swept to the end).

  imds-guard --version | --help";

pub fn run(args: Vec<String>) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("check") => match check(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("imds-guard check: {e}");
                ExitCode::from(2)
            }
        },
        Some("sweep") => match sweep(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("imds-guard sweep: {e}");
                ExitCode::from(2)
            }
        },
        Some("--version" | "-V") => {
            println!("imds-guard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("imds-guard: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &[String]) -> Result<ExitCode, String> {
    let mut file = None;
    let mut mode = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => {
                let v = it.next().ok_or("--mode needs a value")?;
                mode = Some(
                    Mode::parse(v)
                        .ok_or(format!("--mode {v:?}: expected enforce, notify or audit"))?,
                );
            }
            "--output" => match it.next().map(String::as_str) {
                Some("json") => json = true,
                Some("text") => json = false,
                other => return Err(format!("--output {other:?}: expected text or json")),
            },
            f if !f.starts_with('-') && file.is_none() => file = Some(f.to_string()),
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    let file = file.ok_or("which event file? (imds-guard check EVENT.json)")?;
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    if let Some(m) = mode {
        cfg.mode = m;
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let payload: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
    let report = evaluate(&cfg, &payload).map_err(|e| e.to_string())?;

    if json {
        emit(&serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
        emit("\n");
    } else {
        emit(&render(&cfg, &report));
    }
    let needs_work = report.instances.iter().any(|i| {
        matches!(
            i.outcome,
            Outcome::Remediated | Outcome::Flagged | Outcome::Failed
        )
    }) || !report.unreadable.is_empty()
        || report
            .account_defaults
            .as_ref()
            .is_some_and(|d| !d.weakenings.is_empty());
    Ok(if needs_work {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn sweep(args: &[String]) -> Result<ExitCode, String> {
    let mut regions: Vec<String> = Vec::new();
    let mut accounts: Vec<String> = Vec::new();
    let mut organization = false;
    let mut mode = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--region" => {
                let v = it.next().ok_or("--region needs a value")?;
                if !crate::validate::is_region(v) {
                    return Err(format!("--region {v:?} is not a region"));
                }
                if !regions.contains(v) {
                    regions.push(v.clone());
                }
            }
            "--account" => {
                let v = it.next().ok_or("--account needs a value")?;
                if !crate::validate::is_account_id(v) {
                    return Err(format!(
                        "--account {v:?} is not an account id (twelve digits)"
                    ));
                }
                if !accounts.contains(v) {
                    accounts.push(v.clone());
                }
            }
            "--organization" => organization = true,
            "--mode" => {
                let v = it.next().ok_or("--mode needs a value")?;
                mode = Some(
                    Mode::parse(v)
                        .ok_or(format!("--mode {v:?}: expected enforce, notify or audit"))?,
                );
            }
            "--output" => match it.next().map(String::as_str) {
                Some("json") => json = true,
                Some("table") => json = false,
                other => return Err(format!("--output {other:?}: expected table or json")),
            },
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    if let Some(m) = mode {
        cfg.mode = m;
    }
    if organization || !accounts.is_empty() {
        if cfg.member_role.is_none() {
            return Err(
                "sweeping other accounts needs MEMBER_ROLE_NAME, the role to assume in them".into(),
            );
        }
        if organization && !accounts.is_empty() {
            return Err("--account and --organization exclude each other".into());
        }
        if let Some(a) = accounts.iter().find(|a| cfg.refusal(Some(a)).is_some()) {
            return Err(format!("--account {a} is not in ALLOWED_ACCOUNT_IDS"));
        }
        cfg.sweep_accounts = if organization {
            SweepAccounts::Organization
        } else {
            SweepAccounts::Listed(accounts)
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let sdk = load_sdk_config().await;
        if regions.is_empty() {
            regions = cfg.sweep_regions.clone();
        }
        if regions.is_empty() {
            if let Some(r) = sdk.region() {
                regions.push(r.to_string());
            }
        }
        if regions.is_empty() {
            return Err(
                "which region? Pass --region, or set SWEEP_REGIONS or AWS_REGION".to_string(),
            );
        }
        let ctx = EventContext {
            event_name: event::SWEEP.into(),
            region: regions[0].clone(),
            ..EventContext::default()
        };
        let clients = RegionalClients::new(sdk).with_member_role(cfg.member_role.clone());
        let guard = Guard::new(cfg.clone(), clients);
        let tty = std::io::stderr().is_terminal();
        let show = |p: Progress<'_>| {
            if tty {
                let place = match p.account {
                    Some(a) => format!("{a}/{}", p.region),
                    None => p.region.to_string(),
                };
                eprint!(
                    "\r\x1b[K{place}: page {}, {} instances examined, {} acted on",
                    p.pages, p.examined, p.acted
                );
                let _ = std::io::stderr().flush();
            }
        };
        let result = guard.sweep(ctx, regions, None, &show).await;
        if tty {
            eprintln!();
        }
        Ok(result)
    })?;
    let (report, failed) = match result {
        Ok(r) => (r, None),
        Err(GuardError::Unhandled { summary, report }) => (*report, Some(summary)),
        Err(e) => return Err(e.to_string()),
    };
    if json {
        emit(&serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
        emit("\n");
    } else {
        emit(&render_sweep(&report));
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
    Ok(if region_errors {
        ExitCode::from(2)
    } else if left > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The sweep as a table: one row per region, then the instances with news.
pub fn render_sweep(r: &Report) -> String {
    let mut out = String::new();
    let Some(sweep) = &r.sweep else {
        return out;
    };
    let place = |g: &crate::report::RegionSweep| match &g.account {
        Some(a) => format!("{a}/{}", g.region),
        None => g.region.clone(),
    };
    let w = sweep
        .regions
        .iter()
        .map(|g| place(g).len())
        .max()
        .unwrap_or(0)
        .max(15);
    out.push_str(&format!(
        "{:<w$} {:>8} {:>9} {:>10} {:>7} {:>6} {:>6} {:>9}  {:<13} {:<8} {}\n",
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
        "READY FOR HttpTokensEnforced"
    ));
    for g in &sweep.regions {
        let d = g.account_defaults.as_ref();
        out.push_str(&format!(
            "{:<w$} {:>8} {:>9} {:>10} {:>7} {:>6} {:>6} {:>9}  {:<13} {:<8} {}\n",
            place(g),
            g.examined,
            g.count(Outcome::Compliant),
            g.count(Outcome::Remediated),
            g.count(Outcome::Flagged),
            g.count(Outcome::Exempt),
            g.count(Outcome::Failed),
            g.v1_in_use,
            d.and_then(|d| d.http_tokens.as_deref())
                .unwrap_or("unknown"),
            d.and_then(|d| d.http_tokens_enforced.as_deref())
                .unwrap_or("unknown"),
            g.readiness.verdict,
        ));
    }
    if !sweep.accounts.is_empty() {
        out.push('\n');
        out.push_str(&format!(
            "{:<12}  {:>7}  {:<40}  {}\n",
            "ACCOUNT", "REGIONS", "ACCESS", "COUNTS"
        ));
        for a in &sweep.accounts {
            let counts: Vec<String> = a
                .counts
                .iter()
                .map(|(o, n)| format!("{n} {}", o.as_str()))
                .collect();
            out.push_str(&format!(
                "{:<12}  {:>7}  {:<40}  {}\n",
                a.account,
                a.regions,
                a.access,
                if counts.is_empty() {
                    "-".to_string()
                } else {
                    counts.join(", ")
                }
            ));
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

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Decides an event on what it carries alone.
pub fn evaluate(cfg: &Config, payload: &serde_json::Value) -> Result<Report, event::EventError> {
    Ok(match event::parse(payload)? {
        GuardEvent::Ignored { reason } => Report::ignored(cfg.mode, reason),
        GuardEvent::FailedCall { ctx, error_code } => {
            Report::failed_call(cfg.mode, ctx, &error_code)
        }
        GuardEvent::Sweep { .. } => Report::ignored(
            cfg.mode,
            "a scheduled event starts a fleet sweep, which needs EC2: run `imds-guard sweep`"
                .into(),
        ),
        GuardEvent::DefaultsChanged { ctx, change } => {
            let mut r = Report::handled(Status::DefaultsChanged, cfg.mode, ctx);
            r.account_defaults = Some(DefaultsReport {
                weakenings: change.weakenings(),
                requested: change,
                current: None,
                action: crate::report::DefaultsAction::Offline,
                error: None,
            });
            r.notification = "not sent (offline check)".into();
            r
        }
        GuardEvent::Instances {
            ctx,
            trigger,
            instances,
            unreadable,
        } => {
            let instances = instances
                .iter()
                .map(|o| {
                    let (mut r, _) = plan(cfg, o, &ctx, trigger);
                    if r.outcome == Outcome::Failed {
                        r.error = Some("the event does not carry this instance's metadata options; the function would describe it first".into());
                    }
                    r
                })
                .collect();
            Report {
                status: Status::Handled,
                mode: cfg.mode,
                reason: Some("offline check: decided on the options the event carries".into()),
                event: Some(ctx),
                instances,
                unreadable,
                notification: "not sent (offline check)".into(),
                sweep: None,
                account_defaults: None,
                aws_calls: Default::default(),
            }
        }
    })
}

fn render(cfg: &Config, r: &Report) -> String {
    let mut out = String::new();
    let Some(ctx) = &r.event else {
        out.push_str(&format!("ignored: {}\n", r.reason.as_deref().unwrap_or("")));
        return out;
    };
    out.push_str(&format!(
        "event      {} {} at {}\n",
        ctx.event_name,
        ctx.event_id.as_deref().unwrap_or("(no id)"),
        ctx.event_time.as_deref().unwrap_or("(no time)")
    ));
    out.push_str(&format!(
        "where      account {} region {}\n",
        ctx.account.as_deref().unwrap_or("unknown"),
        ctx.region
    ));
    out.push_str(&format!("by         {}\n", ctx.principal.display()));
    out.push_str(&format!("mode       {}\n", cfg.mode));
    if let Some(d) = &r.account_defaults {
        if d.weakenings.is_empty() {
            out.push_str("result     the account's IMDS defaults changed without weakening them\n");
        }
        for w in &d.weakenings {
            out.push_str(&format!("weakened   {w}\n"));
        }
        return out;
    }
    if r.status == Status::FailedCall {
        out.push_str(&format!(
            "result     {}\n",
            r.reason.as_deref().unwrap_or("")
        ));
        return out;
    }
    for i in &r.instances {
        let verdict = match i.outcome {
            Outcome::Remediated => "noncompliant → would remediate",
            Outcome::Flagged if cfg.mode == Mode::Audit => "noncompliant → would report (audit)",
            Outcome::Flagged => "noncompliant → would tag and notify",
            Outcome::Exempt => "noncompliant but exempt",
            Outcome::Compliant => "compliant",
            Outcome::Gone => "gone",
            Outcome::Failed => "undecided offline",
            Outcome::Refused => "refused: the account is not allowed",
        };
        out.push_str(&format!("{}  {verdict}\n", i.instance_id));
        if !i.findings.is_empty() {
            out.push_str(&format!("    finding  {}\n", i.findings.join("; ")));
        }
        if let Some(e) = &i.exemption {
            out.push_str(&format!("    exempt   {e}\n"));
        }
        if i.outcome == Outcome::Remediated {
            out.push_str(&format!(
                "    would    {}; tag {}=remediated\n",
                i.action, cfg.status_tag_key
            ));
        } else if i.outcome == Outcome::Flagged && cfg.mode == Mode::Notify {
            out.push_str(&format!(
                "    would    tag {}=noncompliant\n",
                cfg.status_tag_key
            ));
        } else if let Some(w) = &i.would {
            out.push_str(&format!("    enforce  would {w}\n"));
        }
        if let Some(e) = &i.error {
            out.push_str(&format!("    note     {e}\n"));
        }
    }
    for u in &r.unreadable {
        out.push_str(&format!("unreadable {u}\n"));
    }
    let notify = crate::notify::needed(r);
    out.push_str(&format!(
        "notify     {}\n",
        match (notify, &cfg.topic_arn) {
            (false, _) => "no (nothing new to tell)".to_string(),
            (true, Some(t)) => format!("yes, one message to {t}"),
            (true, None) => "would, but NOTIFY_TOPIC_ARN is not set".to_string(),
        }
    ));
    out
}

//! The command line: `imds-guard check EVENT.json` evaluates an event file
//! offline, with no AWS call, and prints what the function would do.

use std::process::ExitCode;

use crate::config::{Config, Mode};
use crate::event::{self, GuardEvent};
use crate::guard::plan;
use crate::report::{Outcome, Report, Status};

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
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&cfg, &report));
    }
    let needs_work = report.instances.iter().any(|i| {
        matches!(
            i.outcome,
            Outcome::Remediated | Outcome::Flagged | Outcome::Failed
        )
    }) || !report.unreadable.is_empty();
    Ok(if needs_work {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Decides an event on what it carries alone.
pub fn evaluate(cfg: &Config, payload: &serde_json::Value) -> Result<Report, event::EventError> {
    Ok(match event::parse(payload)? {
        GuardEvent::Ignored { reason } => Report::ignored(cfg.mode, reason),
        GuardEvent::FailedCall { ctx, error_code } => {
            Report::failed_call(cfg.mode, ctx, &error_code)
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

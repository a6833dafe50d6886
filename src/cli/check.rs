//! `imds-guard check EVENT.json`: an event decided on what it carries alone,
//! offline (no AWS call), printed as what the function would do.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{emit, ModeArg};
use crate::config::{Config, Mode};
use crate::event::SourceChange;
use crate::event::{self, GuardEvent};
use crate::plan::plan;
use crate::report::{DefaultsAction, DefaultsReport, Outcome, Report, Status};
use crate::source::{
    plan_template, Inherited, SourceKind, SourceOutcome, SourceReport, Template, TemplateFacts,
    TemplateVersion,
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The event: an EventBridge event as the function receives it (see events/).
    #[arg(value_name = "EVENT.json")]
    file: std::path::PathBuf,
    /// Overrides GUARD_MODE.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
    output: CheckOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CheckOutput {
    /// What the function would do, for a person.
    Text,
    /// The report the function would return.
    Json,
}

pub fn run(args: CheckArgs) -> Result<ExitCode, String> {
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    // Metrics are the function's (its log becomes CloudWatch's): here,
    // stdout is the user's.
    cfg.metrics = None;
    if let Some(m) = args.mode {
        cfg.mode = m.into();
    }
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).map_err(|e| format!("{file}: {e}"))?;
    let payload: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
    let report = evaluate(&cfg, &payload).map_err(|e| e.to_string())?;

    match args.output {
        CheckOutput::Json => {
            emit(&serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            emit("\n");
        }
        CheckOutput::Text => emit(&render(&cfg, &report)),
    }
    let source_work = report
        .sources
        .iter()
        .any(|s| matches!(s.outcome, SourceOutcome::Fixed | SourceOutcome::Flagged));
    let needs_work = source_work
        || report.instances.iter().any(|i| {
            matches!(
                i.outcome,
                Outcome::Remediated | Outcome::Flagged | Outcome::Failed
            )
        })
        || !report.unreadable.is_empty()
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
        GuardEvent::Unlisted { ctx, lookup } => {
            let by = match (&lookup.reservation_id, &lookup.client_token) {
                (Some(r), _) => format!("reservation id {r}"),
                (_, Some(t)) => format!("client token {t}"),
                _ => "nothing".into(),
            };
            let mut r = Report::handled(Status::Handled, cfg.mode, ctx);
            r.reason = Some("offline check: the event does not list its instances".into());
            r.unreadable.push(format!(
                "{}: the function would look the launch's instances up by {by}, then decide each",
                lookup.why
            ));
            r.notification = "not sent (offline check)".into();
            r
        }
        GuardEvent::SourceChanged { ctx, change } => {
            let mut r = Report::handled(Status::Handled, cfg.mode, ctx);
            r.reason = Some("offline check: decided on what the request asked for".into());
            r.sources = vec![offline_source(cfg, &change)];
            r.notification = "not sent (offline check)".into();
            r
        }
        GuardEvent::DefaultsChanged { ctx, change } => {
            let mut r = Report::handled(Status::DefaultsChanged, cfg.mode, ctx);
            r.account_defaults = Some(DefaultsReport {
                weakenings: change.weakenings(),
                requested: change,
                current: None,
                action: DefaultsAction::Offline,
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
                sources: Vec::new(),
                security_hub: None,
                routed: None,
                breaker: None,
                fallback: None,
                release: crate::release::Release::THIS,
            }
        }
    })
}

/// A source event decided on its request: a template created with
/// metadata options is decided as if it were its only version; anything
/// else needs EC2 (a new version's options come from its source version, a
/// group launches what its templates say), and says so.
fn offline_source(cfg: &Config, change: &SourceChange) -> SourceReport {
    match change {
        SourceChange::Template {
            id,
            name,
            requested,
        } => {
            let id = id.clone().or_else(|| name.clone()).unwrap_or_default();
            let template = Template {
                id: id.clone(),
                name: name.clone(),
                default_version: 1,
                latest_version: 1,
                ..Template::default()
            };
            match requested {
                Some(Some(options)) => {
                    let versions = [TemplateVersion {
                        template_id: id,
                        version: 1,
                        description: None,
                        options: Some(options.clone()),
                        image_id: None,
                    }];
                    let facts = TemplateFacts {
                        template: &template,
                        versions: &versions,
                        groups: &[],
                        inherited: &Inherited::default(),
                    };
                    plan_template(cfg, &facts).0
                }
                _ => {
                    let mut r = SourceReport::new(SourceKind::LaunchTemplate, &id, name.as_deref());
                    r.outcome = SourceOutcome::Depends;
                    r.action = "undecided offline: the function reads the template's default and latest versions from EC2, then decides".into();
                    r
                }
            }
        }
        SourceChange::Group {
            name,
            templates,
            launch_configuration,
        } => {
            let mut r = SourceReport::new(SourceKind::AutoScalingGroup, name, None);
            r.outcome = SourceOutcome::Depends;
            let mut from: Vec<String> = templates
                .iter()
                .map(|t| {
                    format!(
                        "launch template {} ({})",
                        t.id.as_deref().or(t.name.as_deref()).unwrap_or("?"),
                        t.version
                    )
                })
                .collect();
            from.extend(
                launch_configuration
                    .iter()
                    .map(|c| format!("launch configuration {c}")),
            );
            r.findings = vec![format!("launches from {}", from.join(", "))];
            r.action =
                "undecided offline: the function reads what it launches from, then decides".into();
            r
        }
    }
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
    for s in &r.sources {
        let verdict = match s.outcome {
            SourceOutcome::Fixed => "noncompliant → would fix (a new version requiring tokens)",
            SourceOutcome::Flagged => "noncompliant → would report",
            SourceOutcome::Exempt => "noncompliant but exempt",
            SourceOutcome::Compliant => "compliant",
            SourceOutcome::Depends | SourceOutcome::Failed => "undecided offline",
        };
        out.push_str(&format!("{}  {verdict}\n", s.label()));
        for f in &s.findings {
            out.push_str(&format!("    finding  {f}\n"));
        }
        out.push_str(&format!("    action   {}\n", s.action));
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

//! The notification: one message per event, aggregating its instances.
//!
//! The subject is built only from validated values (counts, account id,
//! region, event name), never from free event text, so nothing a caller put
//! in a user agent or session name can reach it. The body is JSON: a person
//! reads its `summary`, a program parses the rest. It is capped well under
//! SNS's 256 KB, with a count of the instances left out.

use serde::Serialize;

use crate::report::{DefaultsReport, InstanceReport, Outcome, Report, Status, SweepSummary};

/// SNS allows 100 characters of subject.
pub const MAX_SUBJECT: usize = 100;
/// Well under SNS's 256 KB message limit, leaving room for attributes.
pub const MAX_BODY: usize = 64 * 1024;
/// The `outcome` attribute of a message about weakened account defaults.
pub const DEFAULTS_WEAKENED: &str = "account_defaults_weakened";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub subject: String,
    pub body: String,
    /// Message attributes for subscription filter policies: (name, value).
    /// `outcome` is a `String.Array` (every outcome in the message); the rest
    /// are `String`.
    pub outcomes: Vec<&'static str>,
    pub attributes: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    summary: String,
    source: &'static str,
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    region: &'a str,
    event_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<&'a str>,
    principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoked_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    counts: std::collections::BTreeMap<Outcome, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sweep: Option<&'a SweepSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_defaults: Option<&'a DefaultsReport>,
    instances: &'a [InstanceReport],
    #[serde(skip_serializing_if = "is_zero")]
    omitted_instances: usize,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unreadable: &'a [String],
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Whether the report holds news: anything changed, flagged anew, exempted
/// or failed. A compliant launch, and a repeat of an already flagged one,
/// notify no one. A sweep always sends its one summary (it is also the
/// region's standing and readiness); a change to the account defaults only
/// when it weakened them or could not be handled.
pub fn needed(report: &Report) -> bool {
    match report.status {
        Status::Swept | Status::Refused => true,
        Status::DefaultsChanged => report
            .account_defaults
            .as_ref()
            .is_some_and(|d| !d.weakenings.is_empty() || d.error.is_some()),
        _ => report.instances.iter().any(|i| i.notify) || !report.unreadable.is_empty(),
    }
}

/// The subject's and summary's headline, by kind of report.
fn headline(report: &Report, ctx: &crate::event::EventContext) -> (String, String) {
    let mode = report.mode.as_str();
    let mut account = ctx
        .account
        .as_deref()
        .unwrap_or("unknown-account")
        .to_string();
    let tally = report.tally();
    if report.status == Status::Refused {
        return (
            format!(
                "imds-guard: refused {} from {account}/{} (account not allowed)",
                ctx.event_name, ctx.region
            ),
            format!(
                "{} by {} in account {account} region {} was not acted on: {} (mode {mode})",
                ctx.event_name,
                ctx.principal.display(),
                ctx.region,
                report
                    .reason
                    .as_deref()
                    .unwrap_or("the account is not allowed")
            ),
        );
    }
    if let Some(sweep) = report.sweep.as_ref().filter(|s| !s.accounts.is_empty()) {
        account = format!("{} accounts", sweep.accounts.len());
    }
    match (&report.sweep, &report.account_defaults) {
        (Some(sweep), _) => {
            let regions = sweep.regions.len();
            let ready = sweep
                .regions
                .iter()
                .filter(|r| r.readiness.needs_nothing())
                .count();
            let tally = if tally == "no instances" {
                "nothing noncompliant".to_string()
            } else {
                tally
            };
            // Workloads enforcing broke come first, in the subject too.
            let refusing: u64 = sweep.regions.iter().map(|r| r.refusing).sum();
            let (broken, broken_long) = if refusing == 0 {
                (String::new(), String::new())
            } else {
                (
                    format!("{refusing} REFUSING IMDSv1; "),
                    format!(
                        "{refusing} instance(s) switched to HttpTokens=required refuse IMDSv1 calls since (MetadataNoTokenRejected): a workload there is broken, see refusing_imdsv1; "
                    ),
                )
            };
            (
                format!(
                    "imds-guard {mode} sweep: {broken}{tally} in {account} ({ready}/{regions} regions ready)"
                ),
                broken_long
                    + &if sweep.accounts.is_empty() {
                    format!(
                        "sweep of account {account}, {regions} region(s): {tally}; {ready} of {regions} ready for HttpTokensEnforced (mode {mode})"
                    )
                } else {
                    format!(
                        "sweep of {account}, {regions} account-region(s): {tally}; {ready} of {regions} ready for HttpTokensEnforced (mode {mode})"
                    )
                },
            )
        }
        (None, Some(d)) => {
            let what = if d.weakenings.is_empty() {
                "could not be checked"
            } else {
                "weakened"
            };
            (
                format!(
                    "imds-guard: IMDS account defaults {what} in {account}/{}",
                    ctx.region
                ),
                format!(
                    "{}; by {} in account {account} region {}; {} (mode {mode})",
                    if d.weakenings.is_empty() {
                        "the account's IMDS defaults were changed and could not be checked"
                            .to_string()
                    } else {
                        d.weakenings.join("; ")
                    },
                    ctx.principal.display(),
                    ctx.region,
                    d.action
                ),
            )
        }
        (None, None) => (
            format!(
                "imds-guard {mode}: {tally} in {account}/{} ({})",
                ctx.region, ctx.event_name
            ),
            format!(
                "{tally} after {} by {} in account {account} region {} (mode {mode})",
                ctx.event_name,
                ctx.principal.display(),
                ctx.region
            ),
        ),
    }
}

/// Builds the message for a handled event's, a sweep's, or a defaults
/// change's report.
pub fn build(report: &Report) -> Notification {
    let ctx = report.event.clone().unwrap_or_default();
    let mode = report.mode.as_str();
    let account = ctx.account.as_deref();
    let (headline, summary) = headline(report, &ctx);
    let subject = subject(&headline);

    let counts = report.counts();
    let mut outcomes: Vec<&'static str> = counts.keys().map(|o| o.as_str()).collect();
    if report
        .account_defaults
        .as_ref()
        .is_some_and(|d| !d.weakenings.is_empty())
    {
        outcomes.push(DEFAULTS_WEAKENED);
    }
    if (!report.unreadable.is_empty() || !report.unhandled().is_empty())
        && !outcomes.contains(&Outcome::Failed.as_str())
    {
        outcomes.push(Outcome::Failed.as_str());
    }
    let principal = ctx.principal.display();

    let mut shown = report.instances.len();
    let body = loop {
        let b = Body {
            summary: summary.clone(),
            source: "imds-guard",
            mode,
            account,
            region: &ctx.region,
            event_name: &ctx.event_name,
            event_id: ctx.event_id.as_deref(),
            event_time: ctx.event_time.as_deref(),
            principal: principal.clone(),
            principal_arn: ctx.principal.arn.as_deref(),
            invoked_by: ctx.principal.invoked_by.as_deref(),
            source_ip: ctx.source_ip.as_deref(),
            user_agent: ctx.user_agent.as_deref(),
            counts: counts.clone(),
            sweep: report.sweep.as_ref(),
            account_defaults: report.account_defaults.as_ref(),
            instances: &report.instances[..shown],
            omitted_instances: report.instances.len() - shown
                + report
                    .sweep
                    .as_ref()
                    .map_or(0, |s| s.omitted_instances as usize),
            unreadable: &report.unreadable[..report.unreadable.len().min(20)],
        };
        let text = serde_json::to_string_pretty(&b).unwrap_or_else(|e| {
            // Serializing plain strings and numbers cannot fail; if it ever
            // did, a short message still tells the reader what happened.
            format!(
                "{{\"summary\": {:?}, \"error\": {:?}}}",
                summary,
                e.to_string()
            )
        });
        if text.len() <= MAX_BODY || shown == 0 {
            break text;
        }
        // Shrink geometrically: a 10,000-instance report fits in a few passes.
        shown = shown * 3 / 4;
    };

    let mut attributes = vec![
        ("mode", mode.to_string()),
        ("region", ctx.region.clone()),
        ("event_name", ctx.event_name.clone()),
    ];
    if let Some(a) = account {
        attributes.push(("account", a.to_string()));
    }
    Notification {
        subject,
        body,
        outcomes,
        attributes,
    }
}

/// Printable ASCII only, no line breaks, at most 100 characters.
pub fn subject(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.len() > MAX_SUBJECT {
        s.truncate(MAX_SUBJECT - 3);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::event::{EventContext, Principal};
    use crate::report::{Status, Step};

    fn report(n: usize) -> Report {
        Report {
            status: Status::Handled,
            mode: Mode::Enforce,
            reason: None,
            event: Some(EventContext {
                event_name: "RunInstances".into(),
                event_id: Some("e-1".into()),
                event_time: Some("2026-11-28T10:00:00Z".into()),
                account: Some("111122223333".into()),
                region: "us-east-1".into(),
                principal: Principal {
                    arn: Some("arn:aws:iam::111122223333:user/alice".into()),
                    ..Principal::default()
                },
                source_ip: Some("198.51.100.7".into()),
                user_agent: Some("x".repeat(256)),
            }),
            instances: (0..n)
                .map(|i| {
                    let mut r = InstanceReport::new(
                        &format!("i-{i:017x}"),
                        Outcome::Remediated,
                        Step::Tagged {
                            key: "imds-guard:status".into(),
                            value: "remediated".into(),
                        },
                    );
                    r.findings = vec!["HttpTokens=optional (IMDSv1 open)".into()];
                    r.notify = true;
                    r
                })
                .collect(),
            unreadable: vec![],
            notification: String::new(),
            sweep: None,
            account_defaults: None,
            aws_calls: Default::default(),
        }
    }

    #[test]
    fn body_is_json_with_what_a_reader_needs() {
        let n = build(&report(2));
        let v: serde_json::Value = serde_json::from_str(&n.body).unwrap();
        assert_eq!(v["account"], "111122223333");
        assert_eq!(v["region"], "us-east-1");
        assert_eq!(v["event_id"], "e-1");
        assert_eq!(v["principal"], "arn:aws:iam::111122223333:user/alice");
        assert_eq!(v["source_ip"], "198.51.100.7");
        assert_eq!(v["mode"], "enforce");
        assert_eq!(v["counts"]["remediated"], 2);
        assert_eq!(v["instances"][1]["instance_id"], "i-00000000000000001");
        assert_eq!(v["instances"][1]["outcome"], "remediated");
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .starts_with("2 remediated after RunInstances"));
        assert_eq!(n.outcomes, vec!["remediated"]);
        assert!(n.attributes.contains(&("account", "111122223333".into())));
    }

    #[test]
    fn subject_is_short_and_plain() {
        let n = build(&report(3));
        assert_eq!(
            n.subject,
            "imds-guard enforce: 3 remediated in 111122223333/us-east-1 (RunInstances)"
        );
        let s = subject(&format!("a\r\nb\u{7}{}", "é".repeat(200)));
        assert!(s.len() <= MAX_SUBJECT);
        assert!(s.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{s:?}");
    }

    #[test]
    fn huge_reports_are_capped_with_a_count() {
        let n = build(&report(5_000));
        assert!(n.body.len() <= MAX_BODY, "{}", n.body.len());
        let v: serde_json::Value = serde_json::from_str(&n.body).unwrap();
        let shown = v["instances"].as_array().unwrap().len();
        assert!(shown > 0);
        assert_eq!(
            v["omitted_instances"].as_u64().unwrap() as usize + shown,
            5_000
        );
        assert_eq!(
            v["counts"]["remediated"], 5_000,
            "counts cover every instance"
        );
    }

    #[test]
    fn only_news_is_notified() {
        let mut r = report(1);
        assert!(needed(&r));
        r.instances[0].notify = false;
        assert!(!needed(&r));
        r.unreadable
            .push("instancesSet.items[0]: no instanceId".into());
        assert!(needed(&r));
    }
}

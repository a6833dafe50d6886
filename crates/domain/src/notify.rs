//! The notification: one message per event, aggregating its instances.
//!
//! The subject is built only from validated values (counts, account id,
//! region, event name), never from free event text, so nothing a caller put
//! in a user agent or session name can reach it. The body is JSON: a person
//! reads its `summary`, a program parses the rest. It is capped well under
//! SNS's 256 KB ([`crate::cap`]): the lists give way (instances first, then
//! regions, accounts, sources and refusing instances, the troubled ones kept
//! first),
//! and the body counts what it left out.

use serde::Serialize;

use crate::cap;
pub use crate::message::{subject, Notification, KEPT_KIND, MAX_SUBJECT};
use crate::report::{
    AccountSweep, DefaultsReport, InstanceReport, Outcome, Refusing, RegionSweep, Report, Status,
};
use crate::source::{SourceOutcome, SourceReport};

/// Well under SNS's 256 KB message limit ([`cap::MESSAGE_LIMIT`]), leaving
/// room for the subject and attributes, and readable in an email.
pub const MAX_BODY: usize = 64 * 1024;
/// The `outcome` attribute of a message about weakened account defaults.
pub const DEFAULTS_WEAKENED: &str = "account_defaults_weakened";
/// The `outcome` attribute of a message whose run tripped the circuit breaker.
pub const BREAKER_TRIPPED: &str = "breaker_tripped";

#[derive(Serialize)]
struct Body<'a> {
    summary: String,
    source: &'static str,
    /// Which guard sent it: version and commit.
    release: crate::release::Release,
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
    sweep: Option<SweepView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_defaults: Option<&'a DefaultsReport>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    sources: &'a [SourceReport],
    #[serde(skip_serializing_if = "is_zero")]
    omitted_sources: usize,
    instances: &'a [InstanceReport],
    #[serde(skip_serializing_if = "is_zero")]
    omitted_instances: usize,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unreadable: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    omitted_unreadable: usize,
}

/// A sweep's summary as sent: rows ordered troubled first, and cut to fit.
#[derive(Serialize)]
struct SweepView<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    refusing_imdsv1: &'a [Refusing],
    #[serde(skip_serializing_if = "is_zero")]
    omitted_refusing: usize,
    regions: Vec<&'a RegionSweep>,
    #[serde(skip_serializing_if = "is_zero")]
    omitted_regions: usize,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    accounts: Vec<&'a AccountSweep>,
    #[serde(skip_serializing_if = "is_zero")]
    omitted_accounts: usize,
}

/// Rows a reader must see first: a region not swept to the end, with
/// refusing instances or failures, then one not ready for the switch.
fn region_rank(r: &RegionSweep) -> u8 {
    if !r.errors.is_empty() || r.refusing > 0 || r.count(Outcome::Failed) > 0 {
        0
    } else if !r.readiness.needs_nothing() {
        1
    } else {
        2
    }
}

/// An account not reached or not swept to the end, or with failures, first.
fn account_rank(a: &AccountSweep) -> u8 {
    let failed = a.counts.get(&Outcome::Failed).copied().unwrap_or(0);
    if !a.access.swept() || a.regions_incomplete > 0 || failed > 0 {
        0
    } else {
        1
    }
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
        _ => {
            report.instances.iter().any(|i| i.notify)
                || report.sources.iter().any(|s| s.notify)
                || !report.unreadable.is_empty()
        }
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
            // Events that never arrived come first, then workloads
            // enforcing broke, in the subject too.
            let missed: u64 = sweep.regions.iter().map(|r| r.missed_events).sum();
            let refusing: u64 = sweep.regions.iter().map(|r| r.refusing).sum();
            let mut broken = String::new();
            let mut broken_long = String::new();
            if missed > 0 {
                let places: Vec<String> = sweep
                    .regions
                    .iter()
                    .filter(|r| r.missed_events > 0)
                    .take(10)
                    .map(|r| match &r.account {
                        Some(a) => format!("{a}/{}", r.region),
                        None => r.region.clone(),
                    })
                    .collect();
                broken.push_str(&format!("{missed} EVENTS MISSED; "));
                broken_long.push_str(&format!(
                    "{missed} instance(s) launched after the guard began enforcing were fixed by this sweep, not by their launch events: the events did not arrive ({}); check the trail, the forwarding rule and the undelivered-events queue there; ",
                    places.join(", ")
                ));
            }
            let no_stack: Vec<&str> = sweep
                .accounts
                .iter()
                .filter(|a| a.access == crate::report::Access::NoMemberStack)
                .map(|a| a.account.as_str())
                .collect();
            if !no_stack.is_empty() {
                broken.push_str(&format!(
                    "{} ACCOUNT(S) WITHOUT THE MEMBER STACK; ",
                    no_stack.len()
                ));
                broken_long.push_str(&format!(
                    "the member role was refused in {} (no member stack there, or one that does not trust this function): neither its instances nor its events reach the guard; ",
                    no_stack.iter().take(10).copied().collect::<Vec<_>>().join(", ")
                ));
            }
            if refusing > 0 {
                broken.push_str(&format!("{refusing} REFUSING IMDSv1; "));
                broken_long.push_str(&format!(
                    "{refusing} instance(s) switched to HttpTokens=required refuse IMDSv1 calls since (MetadataNoTokenRejected): a workload there is broken, see refusing_imdsv1; "
                ));
            }
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
        (None, None) => {
            // A source event's report is about its sources.
            let tally = if report.instances.is_empty() && !report.sources.is_empty() {
                report.source_tally()
            } else {
                tally
            };
            (
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
            )
        }
    }
}

/// Builds the message for a handled event's, a sweep's, or a defaults
/// change's report.
pub fn build(report: &Report) -> Notification {
    let ctx = report.event.clone().unwrap_or_default();
    let mode = report.mode.as_str();
    let account = ctx.account.as_deref();
    let (mut headline, mut summary) = headline(report, &ctx);
    // A tripped breaker comes first: a person must decide what happens next.
    if let Some(t) = &report.breaker {
        headline = format!("{}: {headline}", t.headline());
        summary = format!(
            "{}: the guard stopped changing instances and lists what it would have done (raise the limit, or let the next run carry on); {summary}",
            t.headline()
        );
    }
    // So does a memory whose protection is gone: exemption records can be
    // forged until it is back.
    if let Some(m) = report.sweep.as_ref().and_then(|s| s.memory.as_deref()) {
        headline = format!("MEMORY UNPROTECTED: {headline}");
        summary = format!("the guard's memory is not protected as the stack made it ({m}): redeploy the stack, and check CloudTrail for who changed it; {summary}");
    }
    if let Some(f) = &report.fallback {
        summary = format!("{summary} Note: {f}.");
    }
    let subject = subject(&headline);

    let counts = report.counts();
    let mut outcomes: Vec<String> = counts.keys().map(|o| o.as_str().to_string()).collect();
    if report
        .account_defaults
        .as_ref()
        .is_some_and(|d| !d.weakenings.is_empty())
    {
        outcomes.push(DEFAULTS_WEAKENED.to_string());
    }
    // Sources: their own values, so a filter policy can route them apart.
    for (o, name) in [
        (SourceOutcome::Fixed, "source_fixed"),
        (SourceOutcome::Flagged, "source_flagged"),
    ] {
        let in_sweep = report.sweep.iter().flat_map(|s| &s.sources);
        if report
            .sources
            .iter()
            .chain(in_sweep)
            .any(|s| s.outcome == o)
        {
            outcomes.push(name.to_string());
        }
    }
    if report.breaker.is_some() {
        outcomes.push(BREAKER_TRIPPED.to_string());
    }
    let failed = Outcome::Failed.as_str();
    if (!report.unreadable.is_empty() || !report.unhandled().is_empty())
        && !outcomes.iter().any(|o| o == failed)
    {
        outcomes.push(failed.to_string());
    }
    let principal = ctx.principal.display();

    // The lists that grow with the fleet, split into the rows a reader must
    // see (failed) and the rest (ordered: not ready first); the sweep's own
    // order otherwise.
    let mut regions: Vec<&RegionSweep> = report.sweep.iter().flat_map(|s| &s.regions).collect();
    regions.sort_by_key(|r| region_rank(r));
    let (failed_regions, regions) =
        regions.split_at(regions.iter().filter(|r| region_rank(r) == 0).count());
    let mut accounts: Vec<&AccountSweep> = report.sweep.iter().flat_map(|s| &s.accounts).collect();
    accounts.sort_by_key(|a| account_rank(a));
    let (failed_accounts, accounts) =
        accounts.split_at(accounts.iter().filter(|a| account_rank(a) == 0).count());
    let refusing: &[Refusing] = report.sweep.as_ref().map_or(&[], |s| &s.refusing_imdsv1);
    // An event's sources, or a sweep's (ranked by the instances they launched).
    let sources: &[SourceReport] = match &report.sweep {
        Some(s) => &s.sources,
        None => &report.sources,
    };
    let unreadable = &report.unreadable[..report.unreadable.len().min(20)];
    let swept_out = report
        .sweep
        .as_ref()
        .map_or(0, |s| s.omitted_instances as usize);

    // Given way in this order: instances, the regions and accounts that need
    // nothing, sources, the failed regions and accounts, refusing instances,
    // unreadable ids. Every count (and the summary) is of the whole report.
    let lens = [
        report.instances.len(),
        regions.len(),
        accounts.len(),
        sources.len(),
        failed_regions.len(),
        failed_accounts.len(),
        refusing.len(),
        unreadable.len(),
    ];
    let render = |shown: &[usize]| {
        let b = Body {
            summary: summary.clone(),
            source: "imds-guard",
            release: crate::release::Release::THIS,
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
            sweep: report.sweep.as_ref().map(|_| SweepView {
                refusing_imdsv1: &refusing[..shown[6]],
                omitted_refusing: refusing.len() - shown[6],
                regions: failed_regions[..shown[4]]
                    .iter()
                    .chain(&regions[..shown[1]])
                    .copied()
                    .collect(),
                omitted_regions: failed_regions.len() + regions.len() - shown[4] - shown[1],
                accounts: failed_accounts[..shown[5]]
                    .iter()
                    .chain(&accounts[..shown[2]])
                    .copied()
                    .collect(),
                omitted_accounts: failed_accounts.len() + accounts.len() - shown[5] - shown[2],
            }),
            sources: &sources[..shown[3]],
            omitted_sources: sources.len() - shown[3],
            account_defaults: report.account_defaults.as_ref(),
            instances: &report.instances[..shown[0]],
            omitted_instances: report.instances.len() - shown[0] + swept_out,
            unreadable: &unreadable[..shown[7]],
            omitted_unreadable: report.unreadable.len() - shown[7],
        };
        // Plain strings and numbers: serializing them cannot fail, and if
        // it ever did the fixed message below says so.
        serde_json::to_string_pretty(&b).unwrap_or_default()
    };
    let body = match cap::fit(MAX_BODY, &lens, render) {
        Some(f) if !f.text.is_empty() => f.text,
        // Even the summary alone is over the cap (it cannot be: its parts
        // are bounded) or it did not serialize: a message of fixed size
        // still tells the reader what happened.
        _ => serde_json::json!({
            "summary": crate::validate::clean(&summary, 2048),
            "source": "imds-guard",
            "release": crate::release::Release::THIS,
            "error": "the full message was too large to send; see the function's log",
        })
        .to_string(),
    };

    let mut attributes = vec![
        ("mode".to_string(), mode.to_string()),
        ("region".to_string(), ctx.region.clone()),
        ("event_name".to_string(), ctx.event_name.clone()),
    ];
    if let Some(a) = account {
        attributes.push(("account".to_string(), a.to_string()));
    }
    attributes.sort();
    Notification {
        subject,
        body,
        outcomes,
        attributes,
    }
}

/// The most of a chat card's description (a chat message stays readable;
/// the whole body still reaches every other subscriber).
pub const MAX_CHAT_DESCRIPTION: usize = 3000;
/// Instances a chat card names before it counts the rest.
const CHAT_INSTANCES: usize = 10;

/// The message as AWS Chatbot's custom notification (`version` 1.0,
/// `source` custom): the subject as title, the summary and the first
/// instances as the description, the outcomes as keywords.
pub fn chat_card(n: &Notification) -> String {
    let body: serde_json::Value = serde_json::from_str(&n.body).unwrap_or_default();
    // Each piece is cleaned on its own (no control or format character can
    // reach the chat), then joined by the card's own line breaks.
    let clean = |v: &serde_json::Value, max| crate::validate::clean(v.as_str().unwrap_or("?"), max);
    let mut description = crate::validate::clean(
        body["summary"].as_str().unwrap_or(""),
        MAX_CHAT_DESCRIPTION / 2,
    );
    let instances = body["instances"].as_array().cloned().unwrap_or_default();
    for i in instances.iter().take(CHAT_INSTANCES) {
        let line = format!(
            "\n• `{}` {}: {}",
            clean(&i["instance_id"], 32).replace('`', ""),
            clean(&i["outcome"], 32),
            clean(&i["action"], 256)
        );
        if description.len() + line.len() > MAX_CHAT_DESCRIPTION - 64 {
            break;
        }
        description.push_str(&line);
    }
    let more = instances.len().saturating_sub(CHAT_INSTANCES)
        + body["omitted_instances"].as_u64().unwrap_or(0) as usize;
    if more > 0 {
        description.push_str(&format!("\n…and {more} more in the full message"));
    }
    if description.is_empty() {
        description = n.subject.clone();
    }
    let mut card = serde_json::json!({
        "version": "1.0",
        "source": "custom",
        "content": {
            "textType": "client-markdown",
            "title": n.subject,
            "description": description,
            "keywords": n.outcomes,
        },
    });
    if let Some(id) = body["event_id"].as_str() {
        card["id"] = serde_json::Value::from(id);
    }
    card.to_string()
}

/// The SNS message with a body per protocol (`MessageStructure=json`):
/// chat subscribers (Chatbot subscribes over `https`) get the card, every
/// other protocol the usual JSON body, unchanged.
pub fn per_protocol(n: &Notification) -> String {
    serde_json::json!({"default": n.body, "https": chat_card(n)}).to_string()
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
                state: None,
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
            sources: Vec::new(),
            security_hub: None,
            routed: None,
            breaker: None,
            fallback: None,
            release: crate::release::Release::THIS,
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
        // Which guard sent it.
        assert_eq!(v["release"]["version"], crate::release::VERSION);
        assert_eq!(v["release"]["commit"], crate::release::COMMIT);
        assert_eq!(v["counts"]["remediated"], 2);
        assert_eq!(v["instances"][1]["instance_id"], "i-00000000000000001");
        assert_eq!(v["instances"][1]["outcome"], "remediated");
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .starts_with("2 remediated after RunInstances"));
        assert_eq!(n.outcomes, vec!["remediated"]);
        assert!(n
            .attributes
            .contains(&("account".into(), "111122223333".into())));
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
        // What a caller chooses (its ARN and session name, its user agent)
        // reaches the body, cleaned, and never the subject.
        let mut hostile = report(1);
        let ctx = hostile.event.as_mut().unwrap();
        ctx.principal.arn = Some("arn:aws:sts::111122223333:assumed-role/x/PAY-NOW-evil".into());
        ctx.user_agent = Some("URGENT-click-here".into());
        let n = build(&hostile);
        for chosen in ["PAY-NOW", "URGENT"] {
            assert!(!n.subject.contains(chosen), "{}", n.subject);
        }
        assert!(n.body.contains("PAY-NOW-evil"), "{}", n.body);
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

    /// An organization's sweep: 1,000 accounts × 17 regions, a few of them
    /// troubled. The message fits SNS's limit, shows every troubled row
    /// first, and counts the rest.
    #[test]
    fn an_organization_sweep_of_17000_account_regions_fits_and_keeps_failures() {
        use crate::policy::{Readiness, ReadinessVerdict};
        use crate::report::{Access, AccountSweep, Refusing, RegionSweep, SweepSummary};
        let mut r = report(3_000);
        r.status = Status::Swept;
        let (mut regions, mut accounts) = (Vec::new(), Vec::new());
        for a in 0..1_000 {
            let account = format!("{:012}", 100_000_000_000u64 + a);
            let mut acc = AccountSweep::new(&account);
            acc.access = Access::MemberRole;
            for g in 0..17 {
                let mut rs = RegionSweep::new(&format!("xx-region-{}", g + 1));
                rs.account = Some(account.clone());
                rs.listing = "server-side filter".into();
                rs.counts.insert(Outcome::Remediated, 3);
                rs.readiness = Readiness {
                    verdict: ReadinessVerdict::Ready,
                    reasons: vec!["no instance at HttpTokens=optional".into()],
                };
                // Troubled rows deep in the list: the last accounts'.
                if a >= 995 && g == 16 {
                    rs.errors
                        .push(format!("listing stopped in {account}: Throttling"));
                }
                acc.add(&rs, false);
                regions.push(rs);
            }
            accounts.push(acc);
        }
        let refusing = (0..40)
            .map(|i| Refusing {
                account: Some("100000000007".into()),
                region: "xx-region-1".into(),
                instance_id: format!("i-{i:017x}"),
                refused_calls: 12.0,
                remediated_at: 1_795_932_000,
                before_switch: Some(crate::report::NoToken {
                    calls: Some(4_000),
                    hours: 168,
                }),
            })
            .collect();
        r.sweep = Some(SweepSummary {
            refusing_imdsv1: refusing,
            regions,
            accounts,
            omitted_instances: 0,
            sources: Vec::new(),
            memory: None,
            native_enforcement: None,
        });

        let n = build(&r);
        assert!(n.body.len() <= MAX_BODY, "{}", n.body.len());
        let whole = n.subject.len()
            + n.body.len()
            + n.attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + n.outcomes.iter().map(|o| o.len()).sum::<usize>();
        assert!(whole <= cap::MESSAGE_LIMIT, "{whole}");

        let v: serde_json::Value = serde_json::from_str(&n.body).unwrap();
        let sweep = &v["sweep"];
        let shown = |k: &str| sweep[k].as_array().map_or(0, |a| a.len());
        let omitted = |k: &str| sweep[k].as_u64().unwrap_or(0) as usize;
        assert_eq!(shown("regions") + omitted("omitted_regions"), 17_000);
        assert_eq!(shown("accounts") + omitted("omitted_accounts"), 1_000);
        assert_eq!(shown("refusing_imdsv1") + omitted("omitted_refusing"), 40);
        assert!(omitted("omitted_regions") > 0, "the cap cut regions");
        // Every troubled region and account is shown, first.
        for i in 0..5 {
            assert!(!sweep["regions"][i]["errors"].as_array().unwrap().is_empty());
            assert_eq!(sweep["accounts"][i]["regions_incomplete"], 1);
        }
        // Instances gave way first; the counts still cover all of them.
        assert_eq!(v["instances"].as_array().unwrap().len(), 0);
        assert_eq!(v["omitted_instances"], 3_000);
        assert_eq!(v["counts"]["remediated"], 17_000 * 3);
        assert!(n.subject.contains("1000 accounts"), "{}", n.subject);
    }

    #[test]
    fn a_kept_message_comes_back_whole_and_reads_in_the_queue() {
        let mut r = report(2);
        r.account_defaults = None;
        r.unreadable
            .push("instancesSet.items[3]: no instanceId".into());
        let n = build(&r);
        assert_eq!(Notification::from_data(&n.to_data()), Some(n.clone()));
        assert_eq!(Notification::from_data(&Default::default()), None);

        let kept: serde_json::Value = serde_json::from_str(&n.kept(
            "arn:aws:sns:us-east-1:111122223333:t",
            "sns:Publish: AuthorizationError",
            Some("e-1"),
        ))
        .unwrap();
        assert_eq!(kept["kind"], KEPT_KIND);
        assert_eq!(kept["subject"], n.subject);
        assert_eq!(
            kept["message"]["counts"]["remediated"], 2,
            "the body as JSON"
        );
        assert_eq!(kept["event_id"], "e-1");
        assert!(kept["summary"]
            .as_str()
            .unwrap()
            .contains("a retry of the event publishes it again"));
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

    #[test]
    fn a_chat_card_is_chatbots_format_and_every_other_protocol_gets_the_body() {
        let n = build(&report(25));
        let card: serde_json::Value = serde_json::from_str(&chat_card(&n)).unwrap();
        assert_eq!(card["version"], "1.0");
        assert_eq!(card["source"], "custom");
        assert_eq!(card["id"], "e-1");
        let c = &card["content"];
        assert_eq!(c["textType"], "client-markdown");
        assert_eq!(c["title"], n.subject.as_str());
        let d = c["description"].as_str().unwrap();
        assert!(d.len() <= MAX_CHAT_DESCRIPTION);
        assert!(d.contains("`i-00000000000000000` remediated"), "{d}");
        assert!(d.contains("…and 15 more"), "{d}");
        // Text cannot hide or start lines of its own in the card.
        let odd = Notification {
            body: serde_json::json!({"summary": "a\u{202e}b\n# c", "instances": []}).to_string(),
            ..n.clone()
        };
        let card2: serde_json::Value = serde_json::from_str(&chat_card(&odd)).unwrap();
        assert_eq!(card2["content"]["description"], "ab # c");
        assert_eq!(c["keywords"], serde_json::json!(["remediated"]));
        // SNS's per-protocol message: the body unchanged by default, the
        // card for https (Chatbot), within SNS's limit.
        let m: serde_json::Value = serde_json::from_str(&per_protocol(&n)).unwrap();
        assert_eq!(m["default"], n.body.as_str());
        assert_eq!(m["https"].as_str().unwrap(), chat_card(&n));
        assert_eq!(m.as_object().unwrap().len(), 2);
        let big = build(&report(5000));
        assert!(big.body.len() <= MAX_BODY);
        assert!(per_protocol(&big).len() <= cap::MESSAGE_LIMIT);
    }
}

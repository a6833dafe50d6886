//! What to do, decided before anything is done: the policy's verdicts turned
//! into per-instance reports and the writes each needs, which instances get
//! which status tag, whether an account default is the guard's to set, and
//! how a failed invocation names what it could not handle. Pure functions:
//! the event path, the sweep and the offline `check` all call them, and the
//! I/O code only carries out what they return.

use crate::config::{Config, Mode};
use crate::event::{DefaultsChange, EventContext, Observed, Trigger};
use crate::policy::{why_not_set_default, AccountDefaults, Exemption, Policy, Remedy, Verdict};
use crate::report::{DefaultsAction, Idle, InstanceReport, Outcome, Report, Step};
use crate::validate::clean;

pub use crate::policy::{NONCOMPLIANT, REMEDIATED};

/// The report for one instance as the policy and mode decide it, and the
/// remedy to apply if enforcing. Shared by the event path, the sweep and
/// `check`. In enforce mode the report already names the write
/// (`Step::Set`): it stands once the remedy is applied, and is taken back
/// (`InstanceReport::mark_failed`, `mark_gone`) if it cannot be.
pub fn plan(
    cfg: &Config,
    current: &Observed,
    ctx: &EventContext,
    trigger: Trigger,
) -> (InstanceReport, Option<Remedy>) {
    let (mut report, mut remedy) = verdict_to_report(cfg, current, ctx, trigger);
    let shown = crate::launcher::recognise_all(&crate::launcher::Signals {
        operator: current.operator.as_ref(),
        tags: current.tags.as_deref().unwrap_or_default(),
        ..Default::default()
    });
    // A launcher that supports IMDSv2 only from a version on, shown by a
    // signal only AWS sets: its version cannot be seen here, so whether a
    // switch breaks it is left to `MetadataNoToken` (`gate`). A forgeable
    // signal of one is only said.
    let gated = shown
        .iter()
        .find(|r| r.trust.unforgeable() && r.launcher.since.is_some())
        .cloned();
    let launcher = crate::launcher::best(shown);
    report.launcher = launcher.as_ref().map(|r| r.label());
    if matches!(report.outcome, Outcome::Remediated | Outcome::Flagged) {
        // Its launcher replaces it from its own setting: say where the fix
        // that lasts is made.
        if let Some(r) = &launcher {
            let mut said = format!(
                "launched by {}: a fix of this instance lasts until it is replaced; the lasting fix: {}",
                r.label(),
                r.launcher.setting
            );
            if let (Some(since), None) = (r.launcher.since, &gated) {
                said.push_str(&format!(
                    "; it supports IMDSv2 only from {since}, which the guard cannot see (recognised by {}, which anyone who may tag can write, so not held back for it)",
                    r.signal
                ));
            }
            report.findings.push(said);
        }
        let hop = current.options.http_put_response_hop_limit;
        if let (Some((to, host)), Some(hop)) = (Policy::of(cfg).container_raise(current), hop) {
            report.findings.push(format!(
                "a container host ({host}): switching it raises its hop limit {hop} to {to} in the same call, so its pods and tasks keep reaching IMDS (CONTAINER_HOP_LIMIT)"
            ));
        }
        if let Some(g) = &gated {
            gate(&mut report, &mut remedy, g, trigger);
        }
    }
    if trigger != Trigger::Sweep && report.exemption.as_ref().is_some_and(Exemption::is_managed) {
        // Left alone on the event path, and not told of: the sweep lists
        // it, once.
        report.notify = false;
    }
    report.before = Some(current.options.clone());
    report.image_id = current.image_id.clone();
    report.instance_profile = current.instance_profile.clone();
    report.launch_time = current.launch_time;
    if trigger == Trigger::StateChange
        && !cfg.exemptions.principals.is_empty()
        && matches!(report.outcome, Outcome::Remediated | Outcome::Flagged)
    {
        // The notification names no principal, and an exempt one may have
        // launched it: nothing is written and no one is told yet; the
        // CloudTrail launch event (or, failing it, the sweep) decides.
        report.would = remedy.take().map(|r| r.to_string()).or(report.would);
        report.outcome = Outcome::Flagged;
        report.action = Idle::AwaitingLauncher.into();
        report.notify = false;
    }
    (report, remedy)
}

/// A version-gated launcher's instance (`gated`): the sweep switches it
/// only once `MetadataNoToken` shows no IMDSv1 call over the lookback (a
/// healthy instance right after a switch proves nothing: an old agent fails
/// at its next restart); an event, which has no such data for a new
/// instance, holds it back for the sweep.
fn gate(
    report: &mut InstanceReport,
    remedy: &mut Option<Remedy>,
    gated: &crate::launcher::Recognised,
    trigger: Trigger,
) {
    let since = gated.launcher.since.unwrap_or_default();
    report.needs_version = Some(since.to_string());
    report.findings.push(format!(
        "launched by {} ({}), which supports IMDSv2 only from {since}: its version cannot be seen here, so it is switched only once MetadataNoToken shows no IMDSv1 call over the lookback",
        gated.label(),
        gated.signal
    ));
    if trigger == Trigger::Sweep {
        return;
    }
    if let Some(change) = remedy.take() {
        report.outcome = Outcome::Flagged;
        report.action = Idle::Unproven.into();
        report.would = Some(change.to_string());
    }
}

fn verdict_to_report(
    cfg: &Config,
    current: &Observed,
    ctx: &EventContext,
    trigger: Trigger,
) -> (InstanceReport, Option<Remedy>) {
    let id = &current.instance_id;
    // Who launched an instance only counts for its launch: a change of its
    // options by an exempt principal, or a state change (which names no
    // one), does not exempt it; the record its launch left does.
    let nobody = crate::event::Principal::default();
    let principal = match trigger {
        Trigger::Launch => &ctx.principal,
        _ => &nobody,
    };
    match Policy::of(cfg).decide(current, principal) {
        Verdict::Compliant => (
            InstanceReport::new(id, Outcome::Compliant, Idle::None),
            None,
        ),
        Verdict::Gone { state } => (
            InstanceReport::new(id, Outcome::Gone, Idle::Gone(state)),
            None,
        ),
        Verdict::Undecided => (
            InstanceReport::failed(
                id,
                "EC2 did not report the instance's HttpTokens, HttpEndpoint and hop limit",
            ),
            None,
        ),
        Verdict::Exempt {
            exemption,
            findings,
        } => {
            let mut r = InstanceReport::new(id, Outcome::Exempt, Idle::Exempt);
            r.would = Some("set HttpTokens=required (enforce mode, without the exemption)".into());
            r.findings = findings.iter().map(ToString::to_string).collect();
            r.exemption = Some(exemption);
            r.notify = true;
            (r, None)
        }
        Verdict::Noncompliant { findings, remedy } => {
            let findings: Vec<String> = findings.iter().map(ToString::to_string).collect();
            let mut r = match cfg.mode {
                // Remediated once the modify call succeeds; failed otherwise.
                Mode::Enforce => {
                    InstanceReport::new(id, Outcome::Remediated, Step::Set(remedy.clone()))
                }
                Mode::Notify => InstanceReport::new(id, Outcome::Flagged, Idle::None),
                Mode::Audit => {
                    let mut r = InstanceReport::new(id, Outcome::Flagged, Idle::Audit);
                    r.would = Some(remedy.to_string());
                    r
                }
            };
            // News, unless the guard's memory says it already told of this
            // launch (`needs_claim`): a status tag anyone can write no
            // longer quiets it.
            r.notify = true;
            r.findings = findings;
            let remedy = (cfg.mode == Mode::Enforce).then_some(remedy);
            (r, remedy)
        }
    }
}

/// The exemptions to record in the guard's memory: each instance a launch
/// event shows exempt because of who launched it (the glob that matched),
/// so a later sweep or change, which cannot know who launched it, honours
/// it too. Only a launch records one; a change never does. The event is
/// only a claim (anyone who may invoke the function can forge one), so what
/// is recorded is unconfirmed: honoured for `confirm::WINDOW_SECS`, and kept
/// only once CloudTrail's own record of the event confirms it (`confirm`).
/// An event with no id cannot be confirmed: nothing is recorded.
pub fn exemption_records(
    trigger: Trigger,
    (account, region): (&str, &str),
    event_id: Option<&str>,
    reports: &[InstanceReport],
    now: u64,
) -> Vec<crate::confirm::Waiting> {
    let Some(event_id) = event_id.filter(|_| trigger == Trigger::Launch) else {
        return Vec::new();
    };
    reports
        .iter()
        .filter_map(|r| match (&r.outcome, &r.exemption) {
            (Outcome::Exempt, Some(Exemption::Principal(glob))) => Some(crate::confirm::Waiting {
                account: account.into(),
                region: region.into(),
                instance_id: r.instance_id.clone(),
                event_id: event_id.into(),
                glob: glob.clone(),
                partition: crate::memory::partition(account, region),
                seen_at: now,
            }),
            _ => None,
        })
        .collect()
}

/// Whether telling of this instance must first be claimed in the guard's
/// memory: news of a launch that another event (the other trigger, or a
/// redelivery) may tell as well. A remediation and a failure are always
/// told; a change of the options is always news.
pub fn needs_claim(trigger: Trigger, r: &InstanceReport) -> bool {
    matches!(trigger, Trigger::Launch | Trigger::StateChange)
        && r.notify
        && matches!(r.outcome, Outcome::Flagged | Outcome::Exempt)
}

/// One `CreateTags` call's worth: the status tag value and the instances
/// that get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagBatch {
    pub value: &'static str,
    pub ids: Vec<String>,
}

/// Which instances get which status tag, one batch per value:
/// `remediated` for what enforce changed; `noncompliant` for what notify
/// flags anew, and for what enforce held back (not in audit mode, which
/// writes nothing). The tag is for people to see: nothing the guard decides
/// rests on it (a principal exemption is recorded in the guard's memory,
/// `exemption_records`). Instances with an error are left alone.
pub fn tag_batches(mode: Mode, reports: &[InstanceReport]) -> Vec<TagBatch> {
    if mode == Mode::Audit {
        return Vec::new();
    }
    let select = |value: &'static str, pick: &dyn Fn(&InstanceReport) -> bool| TagBatch {
        value,
        ids: reports
            .iter()
            .filter(|r| r.error.is_none() && pick(r))
            .map(|r| r.instance_id.clone())
            .collect(),
    };
    [
        select(REMEDIATED, &|r| r.outcome == Outcome::Remediated),
        select(NONCOMPLIANT, &|r| r.outcome == Outcome::Flagged && r.notify),
    ]
    .into_iter()
    .filter(|b| !b.ids.is_empty())
    .collect()
}

/// What a change to the account's IMDS defaults means, and what to do about
/// it: `weakenings` in words (empty when it did not weaken anything), and
/// `restore`, whether to set `HttpTokens=required` back (`Ok`) or why not
/// (`Err`, the action to report). When the request could not be read, the
/// defaults as EC2 shows them now are judged instead; when neither can be
/// read, `unjudged` is set and the invocation must fail rather than pass as
/// harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultsJudgement {
    pub weakenings: Vec<String>,
    pub restore: Result<(), DefaultsAction>,
    pub unjudged: bool,
}

pub fn judge_defaults_change(
    cfg: &Config,
    change: &DefaultsChange,
    current: Option<&AccountDefaults>,
) -> DefaultsJudgement {
    let mut weakenings = change.weakenings();
    let mut tokens_weak = change.weakens_tokens();
    let unread = *change == DefaultsChange::default();
    if unread {
        // The request could not be read: judge by what EC2 shows now.
        if let Some(d) = current.filter(|d| !d.requires_tokens()) {
            weakenings.push(format!(
                "account default HttpTokens is now {}",
                d.http_tokens.as_deref().unwrap_or("unset (no-preference)")
            ));
            tokens_weak = true;
        }
    }
    let restore = if !tokens_weak {
        Err(DefaultsAction::None)
    } else if let Some(why) = why_not_set_default(cfg, current) {
        Err(DefaultsAction::NotOurs(why))
    } else {
        Ok(())
    };
    DefaultsJudgement {
        weakenings,
        restore,
        unjudged: unread && current.is_none(),
    }
}

/// What a sweep does about a region's account default, once read: nothing
/// (`Err`, with why) or set it to `HttpTokens=required` (`Ok`).
pub fn sweep_default_action(
    cfg: &Config,
    defaults: &AccountDefaults,
) -> Result<(), DefaultsAction> {
    if defaults.requires_tokens() {
        Err(DefaultsAction::AlreadyRequired)
    } else if let Some(why) = why_not_set_default(cfg, Some(defaults)) {
        Err(DefaultsAction::NotOurs(why))
    } else {
        Ok(())
    }
}

/// What `MetadataNoToken` says of an instance over the lookback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V1Use {
    /// It answered IMDSv1 calls.
    InUse,
    /// Data points, all zero: nothing called IMDSv1.
    Unused,
    /// No data point at all (stopped throughout, or just launched): unknown.
    NoData,
}

/// With `CHECK_METADATA_NO_TOKEN`: an instance that answered IMDSv1 calls in
/// the last `hours` (`calls`: their sum, `None` when there is no data at
/// all) is not changed, since requiring tokens would break the software
/// still making them, but flagged with the finding. No data is not zero: it
/// is held back the same way, unless `missing_as_zero` says to count it as
/// not in use.
///
/// A version-gated launcher's instance (`needs_version`) is switched only on
/// proof: no data holds it whatever `missing_as_zero` says.
pub fn hold_back(
    r: &mut InstanceReport,
    remedy: &mut Option<Remedy>,
    calls: Option<f64>,
    hours: u64,
    missing_as_zero: bool,
) -> V1Use {
    let gated = r.needs_version.is_some();
    // Kept whatever it decides: the sweep shows it, and a switch remembers
    // it (afterwards the metric is zero by construction).
    r.metadata_no_token = Some(crate::report::NoToken {
        calls: calls.map(|n| n.max(0.0).round() as u64),
        hours,
    });
    let (used, finding) = match calls {
        Some(n) if n > 0.0 => (
            V1Use::InUse,
            format!("answered {n:.0} IMDSv1 call(s) in the last {hours}h (MetadataNoToken)"),
        ),
        Some(_) => return V1Use::Unused,
        None if gated => (
            V1Use::NoData,
            format!(
                "no MetadataNoToken data in the last {hours}h: with its launcher's version unknown, no data is no proof it needs no IMDSv1"
            ),
        ),
        None if missing_as_zero => return V1Use::NoData,
        None => (
            V1Use::NoData,
            format!(
                "no MetadataNoToken data in the last {hours}h (stopped, or just launched): whether IMDSv1 is still used is unknown (NO_TOKEN_MISSING_AS_ZERO=true counts this as not in use)"
            ),
        ),
    };
    r.findings.push(finding);
    if let Some(remedy) = remedy.take() {
        r.outcome = Outcome::Flagged;
        r.action = match used {
            V1Use::NoData if gated => Idle::Unproven,
            _ => Idle::HeldBack,
        }
        .into();
        r.would = Some(remedy.to_string());
    }
    used
}

/// Whether a planned change waits for `MetadataNoToken`'s proof whatever
/// `CHECK_METADATA_NO_TOKEN` says: a version-gated launcher's instance
/// (`needs_version`) with a change to make.
pub fn awaits_proof(r: &InstanceReport, change: &Option<Remedy>) -> bool {
    r.needs_version.is_some() && change.is_some()
}

/// What a hold-back ceiling (`NO_TOKEN_HOLD_DAYS`) says of an instance held
/// back for its IMDSv1 use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceiling {
    /// Held back, as before.
    Hold,
    /// A day from the ceiling: held back, and told when it will be switched.
    Tell { at: u64 },
    /// Past the ceiling, told at least a day ago: switched anyway.
    Switch { days: u64 },
}

const DAY: u64 = 24 * 3600;
const TOLD: &str = "told";

/// Where an instance held back since `since` (told at `told`) stands
/// against a ceiling of `days`. The switch always comes at least a day
/// after the message, whatever the sweeps' schedule.
pub fn ceiling(since: u64, told: Option<u64>, now: u64, days: u64) -> Ceiling {
    let limit = since + days * DAY;
    match told {
        Some(t) if now >= limit && now >= t + DAY => Ceiling::Switch {
            days: (now - since) / DAY,
        },
        Some(_) => Ceiling::Hold,
        None if now + DAY >= limit => Ceiling::Tell {
            at: limit.max(now + DAY),
        },
        None => Ceiling::Hold,
    }
}

/// The record of an instance held back (`Kind::HeldBack`): since when,
/// and when it was told, renewed each time a sweep holds it again.
pub fn held_record(
    partition: &str,
    id: &str,
    since: u64,
    told: Option<u64>,
    now: u64,
    days: u64,
) -> crate::memory::Record {
    let mut r = crate::memory::Record::new(
        crate::memory::Kind::HeldBack,
        partition,
        id,
        None,
        since,
        std::time::Duration::ZERO,
    );
    // Kept a ceiling and a day past the last sweep that held it, so sweeps
    // further apart than a day still count its days; it lapses only once
    // no sweep has held it for that long.
    r.expires_at = now + (days + 1) * DAY;
    if let Some(t) = told {
        r.data.insert(TOLD.into(), t.to_string());
    }
    r
}

/// Since when, and when told, as a held-back record says.
pub fn held_of(r: &crate::memory::Record) -> (u64, Option<u64>) {
    (r.at, r.data.get(TOLD).and_then(|t| t.parse().ok()))
}

/// The metric could not be read: nothing is changed blind, and the instance
/// a remedy was planned for fails, named.
pub fn unread_metric(r: &mut InstanceReport, remedy: &mut Option<Remedy>, error: &str) {
    if remedy.take().is_some() {
        r.mark_failed(format!(
            "MetadataNoToken could not be read, so nothing was changed: {error}"
        ));
    }
}

/// Why an invocation fails, naming every instance (and the notification)
/// it could not handle; `None` when it did not fail.
pub fn failure_summary(report: &Report, notify_error: Option<&str>) -> Option<String> {
    let instances = report.unhandled_instances();
    let regions = report.unfinished_regions();
    let defaults = report.defaults_error();
    let sources = report.unhandled_sources();
    let findings: &[String] = report.security_hub.as_ref().map_or(&[], |f| &f.errors);
    let routed: &[String] = report.routed.as_ref().map_or(&[], |r| &r.errors);
    let memory = report.sweep.as_ref().and_then(|s| s.memory.as_deref());
    if instances.is_empty()
        && memory.is_none()
        && regions.is_empty()
        && defaults.is_none()
        && sources.is_empty()
        && findings.is_empty()
        && routed.is_empty()
        && notify_error.is_none()
    {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(m) = memory {
        parts.push(format!("the guard's memory: {m}"));
    }
    if !instances.is_empty() {
        parts.push(format!(
            "{} of {} not handled: {}",
            instances.len(),
            report.decided(),
            instances.join("; ")
        ));
    }
    if !regions.is_empty() {
        parts.push(format!(
            "{} region(s) not swept to the end: {}",
            regions.len(),
            regions.join("; ")
        ));
    }
    parts.extend(defaults);
    if !sources.is_empty() {
        parts.push(format!(
            "{} source(s) not handled: {}",
            sources.len(),
            sources.join("; ")
        ));
    }
    if !findings.is_empty() {
        parts.push(format!(
            "Security Hub findings not filed: {}",
            findings.join("; ")
        ));
    }
    if !routed.is_empty() {
        parts.push(format!("events not put on the bus: {}", routed.join("; ")));
    }
    if let Some(e) = notify_error {
        parts.push(format!(
            "notification failed ({e}); done: {}",
            report.tally()
        ));
    }
    Some(clean(&parts.join("; "), 4000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetadataOptions;
    use crate::policy::NotOurs;
    use crate::report::Status;

    fn cfg(mode: Mode) -> Config {
        Config {
            mode,
            ..Config::default()
        }
    }

    fn optional(id: &str) -> Observed {
        Observed {
            instance_id: id.into(),
            image_id: None,
            state: Some("running".into()),
            options: MetadataOptions {
                http_tokens: Some("optional".into()),
                http_endpoint: Some("enabled".into()),
                http_put_response_hop_limit: Some(2),
                ..MetadataOptions::default()
            },
            tags: Some(vec![]),
            ..Observed::default()
        }
    }

    fn launch() -> EventContext {
        EventContext {
            event_name: "RunInstances".into(),
            region: "us-east-1".into(),
            ..EventContext::default()
        }
    }

    #[test]
    fn a_container_host_is_planned_with_its_second_hop_said_and_its_launcher_named() {
        let mut node = optional("i-00000001");
        node.options.http_put_response_hop_limit = Some(1);
        node.tags = Some(vec![("eks:nodegroup-name".into(), "ng-1".into())]);
        for mode in [Mode::Enforce, Mode::Notify, Mode::Audit] {
            let (r, remedy) = plan(&cfg(mode), &node, &launch(), Trigger::Launch);
            assert_eq!(r.launcher.as_deref(), Some("EKS managed node group ng-1"));
            assert!(
                r.findings
                    .iter()
                    .any(|f| f.contains("the lasting fix: the node group's own launch template")),
                "{:?}",
                r.findings
            );
            assert!(
                r.findings
                    .iter()
                    .any(|f| f.contains("container host")
                        && f.contains("raises its hop limit 1 to 2")),
                "{:?}",
                r.findings
            );
            match mode {
                Mode::Enforce => {
                    assert_eq!(remedy.unwrap().http_put_response_hop_limit, Some(2))
                }
                Mode::Audit => assert!(
                    r.would
                        .as_deref()
                        .unwrap_or_default()
                        .contains("HttpPutResponseHopLimit=2"),
                    "{r:?}"
                ),
                Mode::Notify => assert_eq!(remedy, None),
            }
        }
        // A plain instance names no launcher and keeps its hop limit.
        let mut plain = optional("i-00000002");
        plain.options.http_put_response_hop_limit = Some(1);
        let (r, remedy) = plan(&cfg(Mode::Enforce), &plain, &launch(), Trigger::Launch);
        assert_eq!(r.launcher, None);
        assert_eq!(remedy.unwrap().http_put_response_hop_limit, None);
        assert!(!r.findings.iter().any(|f| f.contains("container host")));
    }

    #[test]
    fn enforce_plans_the_write_and_the_remedy_keeps_the_hop_limit() {
        let (r, remedy) = plan(
            &cfg(Mode::Enforce),
            &optional("i-00000001"),
            &launch(),
            Trigger::Launch,
        );
        assert_eq!(r.outcome, Outcome::Remediated);
        let remedy = remedy.expect("enforce applies a remedy");
        assert_eq!(remedy.http_put_response_hop_limit, None, "kept, not sent");
        assert_eq!(r.action.steps, vec![Step::Set(remedy)]);
        assert!(r.notify);
        assert_eq!(r.before.unwrap().http_tokens.as_deref(), Some("optional"));
    }

    fn tagged(id: &str, tags: &[(&str, &str)]) -> Observed {
        let mut o = optional(id);
        o.tags = Some(
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        o
    }

    #[test]
    fn a_managed_instance_is_never_written_and_only_a_sweep_tells_of_it() {
        let mut o = optional("i-00000001");
        o.operator = Some(crate::launcher::Operator {
            managed: true,
            principal: Some("eks.amazonaws.com".into()),
        });
        // Even a tag that would make it a container host, an exempt
        // principal's launch and a person's grant change nothing: the
        // service sets its options.
        o.tags = Some(vec![("eks:nodegroup-name".into(), "ng".into())]);
        o.standing.grant = Some(crate::break_glass::Grant {
            target: "i-00000001".into(),
            until: u64::MAX,
            reason: "incident".into(),
            by: "arn:aws:sts::111122223333:assumed-role/Responder/alice".into(),
            granted_at: 0,
            revoked: false,
        });
        let mut ctx = launch();
        ctx.principal.role_arn = Some("arn:aws:iam::111122223333:role/packer".into());
        for mode in [Mode::Enforce, Mode::Notify, Mode::Audit] {
            let mut c = cfg(mode);
            c.exemptions
                .principals
                .push(crate::glob::Glob::new("arn:aws:iam::*:role/packer"));
            for trigger in [Trigger::Launch, Trigger::StateChange, Trigger::Sweep] {
                let (r, remedy) = plan(&c, &o, &ctx, trigger);
                assert!(remedy.is_none(), "{mode} {trigger:?}");
                assert_eq!(r.outcome, Outcome::Exempt);
                assert_eq!(
                    r.exemption,
                    Some(Exemption::Managed("eks.amazonaws.com".into()))
                );
                assert_eq!(r.launcher.as_deref(), Some("EKS Auto Mode"));
                assert_eq!(r.notify, trigger == Trigger::Sweep, "{mode} {trigger:?}");
                assert!(tag_batches(mode, &[r]).is_empty(), "never tagged");
            }
        }
        // `Managed: false` is any instance.
        o.operator = Some(crate::launcher::Operator::default());
        o.standing.grant = None;
        let (r, remedy) = plan(&cfg(Mode::Enforce), &o, &launch(), Trigger::Launch);
        assert_eq!((r.outcome, remedy.is_some()), (Outcome::Remediated, true));
    }

    #[test]
    fn a_version_gated_launcher_shown_by_aws_holds_a_launch_for_the_sweeps_metric() {
        let emr = tagged(
            "i-00000001",
            &[("aws:elasticmapreduce:job-flow-id", "j-2AXXXXXXGAPLF")],
        );
        let (r, remedy) = plan(&cfg(Mode::Enforce), &emr, &launch(), Trigger::Launch);
        assert!(remedy.is_none(), "held: a new instance has no metric yet");
        assert_eq!(r.outcome, Outcome::Flagged);
        assert_eq!(r.action.idle, Idle::Unproven);
        assert!(r.would.as_deref().unwrap().contains("HttpTokens=required"));
        assert_eq!(
            r.needs_version.as_deref(),
            Some("EMR 5.32 or 6.2 (or 5.23.1, 5.27.1)")
        );
        assert!(
            r.findings
                .iter()
                .any(|f| f.contains("tag aws:elasticmapreduce:job-flow-id")
                    && f.contains("only once MetadataNoToken shows no IMDSv1 call")),
            "{:?}",
            r.findings
        );
        // The sweep keeps the change: its metric decides (`hold_back`).
        let (r, remedy) = plan(&cfg(Mode::Enforce), &emr, &launch(), Trigger::Sweep);
        assert_eq!((r.outcome, remedy.is_some()), (Outcome::Remediated, true));
        assert!(r.needs_version.is_some());
        // No data holds it even where no data counts as zero; zero switches.
        let (mut held, mut change) = (r.clone(), remedy.clone());
        assert_eq!(
            hold_back(&mut held, &mut change, None, 24, true),
            V1Use::NoData
        );
        assert!(change.is_none());
        assert_eq!(held.action.idle, Idle::Unproven);
        assert!(
            held.findings.iter().any(|f| f.contains("no proof")),
            "{:?}",
            held.findings
        );
        let (mut r, mut change) = (r, remedy);
        assert_eq!(
            hold_back(&mut r, &mut change, Some(0.0), 24, true),
            V1Use::Unused
        );
        assert!(change.is_some(), "switched on proof");
    }

    #[test]
    fn a_forgeable_sign_of_a_version_gated_launcher_is_said_never_held() {
        // Beanstalk's and ECS's instance tags are ordinary tags: anyone who
        // may tag can write them, so they never hold an instance back.
        for (key, launcher) in [
            ("elasticbeanstalk:environment-name", "Elastic Beanstalk"),
            ("AmazonECSManaged", "ECS capacity provider"),
            ("parallelcluster:version", "AWS ParallelCluster"),
        ] {
            let o = tagged("i-00000001", &[(key, "x")]);
            let (r, remedy) = plan(&cfg(Mode::Enforce), &o, &launch(), Trigger::Launch);
            assert_eq!(
                (r.outcome, remedy.is_some()),
                (Outcome::Remediated, true),
                "{key}"
            );
            assert_eq!(r.needs_version, None);
            assert_eq!(r.launcher.as_deref(), Some(launcher));
            assert!(
                r.findings
                    .iter()
                    .any(|f| f.contains("supports IMDSv2 only from")
                        && f.contains("not held back for it")),
                "{key}: {:?}",
                r.findings
            );
        }
    }

    #[test]
    fn notify_and_audit_plan_no_write() {
        for (mode, idle) in [(Mode::Notify, Idle::None), (Mode::Audit, Idle::Audit)] {
            let (r, remedy) = plan(
                &cfg(mode),
                &optional("i-00000001"),
                &launch(),
                Trigger::Launch,
            );
            assert_eq!(r.outcome, Outcome::Flagged);
            assert!(remedy.is_none());
            assert!(!r.action.wrote());
            assert_eq!(r.action.idle, idle);
            assert_eq!(r.would.is_some(), mode == Mode::Audit);
        }
    }

    #[test]
    fn a_state_change_waits_for_the_launcher_only_where_principals_are_exempt() {
        let state_change = EventContext {
            event_name: crate::event::STATE_CHANGE.into(),
            region: "us-east-1".into(),
            ..EventContext::default()
        };
        let (r, remedy) = plan(
            &cfg(Mode::Enforce),
            &optional("i-00000001"),
            &state_change,
            Trigger::StateChange,
        );
        assert_eq!((r.outcome, remedy.is_some()), (Outcome::Remediated, true));

        let mut with_principals = cfg(Mode::Enforce);
        with_principals
            .exemptions
            .principals
            .push(crate::glob::Glob::new("arn:aws:iam::*:role/packer"));
        for mode in [Mode::Enforce, Mode::Notify, Mode::Audit] {
            with_principals.mode = mode;
            let (r, remedy) = plan(
                &with_principals,
                &optional("i-00000001"),
                &state_change,
                Trigger::StateChange,
            );
            assert!(remedy.is_none(), "{mode}: nothing written");
            assert_eq!(r.outcome, Outcome::Flagged);
            assert_eq!(r.action.idle, Idle::AwaitingLauncher);
            assert!(!r.notify, "{mode}: the CloudTrail event tells");
            assert!(tag_batches(mode, &[r]).is_empty(), "{mode}: not tagged");
        }
        // The CloudTrail launch itself is decided as ever.
        with_principals.mode = Mode::Enforce;
        let (_, remedy) = plan(
            &with_principals,
            &optional("i-00000001"),
            &launch(),
            Trigger::Launch,
        );
        assert!(remedy.is_some());
    }

    #[test]
    fn only_a_launch_by_an_exempt_principal_records_an_exemption() {
        let mut c = cfg(Mode::Enforce);
        c.exemptions
            .principals
            .push(crate::glob::Glob::new("arn:aws:iam::*:role/packer"));
        let mut ctx = launch();
        ctx.principal.role_arn = Some("arn:aws:iam::111122223333:role/packer".into());
        let o = optional("i-00000001");
        let (r, remedy) = plan(&c, &o, &ctx, Trigger::Launch);
        assert_eq!(r.outcome, Outcome::Exempt);
        assert!(remedy.is_none());
        let here = ("111122223333", "us-east-1");
        let waiting = exemption_records(
            Trigger::Launch,
            here,
            Some("e-1"),
            std::slice::from_ref(&r),
            1_000,
        );
        // Unconfirmed, for the window, and listed for CloudTrail's check.
        assert_eq!(waiting.len(), 1);
        let exemption = waiting[0].exemption();
        assert_eq!(exemption.sk, "exempt#i-00000001");
        assert_eq!(exemption.data["glob"], "arn:aws:iam::*:role/packer");
        assert!(crate::confirm::is_unconfirmed(&exemption));
        assert_eq!(exemption.expires_at, 1_000 + crate::confirm::WINDOW_SECS);
        assert_eq!(waiting[0].entry().pk, crate::confirm::CHECK_PARTITION);
        // With no event id there is nothing CloudTrail could confirm.
        assert!(exemption_records(Trigger::Launch, here, None, &[r], 1_000).is_empty());

        // The same principal changing someone else's instance: remediated,
        // and nothing recorded.
        ctx.event_name = "ModifyInstanceMetadataOptions".into();
        let (r, remedy) = plan(&c, &o, &ctx, Trigger::MetadataChange);
        assert_eq!(r.outcome, Outcome::Remediated);
        assert!(remedy.is_some());
        assert!(exemption_records(
            Trigger::MetadataChange,
            ("111122223333", "us-east-1"),
            Some("e-2"),
            &[r],
            1_000
        )
        .is_empty());
    }

    #[test]
    fn a_break_glass_grant_exempts_and_a_revert_under_it_is_told_not_undone() {
        let now = 1_795_000_000;
        let grant = crate::break_glass::Grant::new(
            "i-0123456789abcdef0",
            now + 3600,
            "incident 42",
            "arn:aws:iam::111122223333:user/alice",
            now,
        )
        .unwrap();
        let mut o = optional("i-0123456789abcdef0");
        o.standing.grant = Some(grant.clone());
        let mut ctx = launch();
        ctx.event_name = "ModifyInstanceMetadataOptions".into();
        // No principal exemptions configured: the grant alone exempts.
        let (r, remedy) = plan(&cfg(Mode::Enforce), &o, &ctx, Trigger::MetadataChange);
        assert_eq!(r.outcome, Outcome::Exempt);
        assert!(remedy.is_none(), "reported, not reverted");
        assert!(r.notify && !needs_claim(Trigger::MetadataChange, &r));
        assert_eq!(r.exemption, Some(Exemption::BreakGlass(grant)));
        assert!(r
            .exemption
            .unwrap()
            .to_string()
            .starts_with("break-glass granted by arn:aws:iam::111122223333:user/alice until "));
        // Without it, the same change is undone.
        o.standing.grant = None;
        let (r, remedy) = plan(&cfg(Mode::Enforce), &o, &ctx, Trigger::MetadataChange);
        assert_eq!(r.outcome, Outcome::Remediated);
        assert!(remedy.is_some());
    }

    #[test]
    fn a_forged_noncompliant_tag_does_not_quiet_a_launch() {
        let mut o = optional("i-00000001");
        o.tags = Some(vec![("imds-guard:status".into(), NONCOMPLIANT.into())]);
        let (r, _) = plan(&cfg(Mode::Notify), &o, &launch(), Trigger::Launch);
        assert!(r.notify, "only the guard's memory may quiet a repeat");
        assert!(needs_claim(Trigger::Launch, &r));
    }

    #[test]
    fn only_news_another_event_may_also_tell_is_claimed() {
        let flagged = report("i-1", Outcome::Flagged, true);
        let exempt = report("i-2", Outcome::Exempt, true);
        let remediated = report("i-3", Outcome::Remediated, true);
        let quiet = report("i-4", Outcome::Flagged, false);
        for trigger in [Trigger::Launch, Trigger::StateChange] {
            assert!(needs_claim(trigger, &flagged) && needs_claim(trigger, &exempt));
            assert!(!needs_claim(trigger, &remediated), "a write is told");
            assert!(!needs_claim(trigger, &quiet));
        }
        assert!(
            !needs_claim(Trigger::MetadataChange, &flagged),
            "a change is news"
        );
        assert!(!needs_claim(Trigger::Sweep, &flagged));
    }

    fn report(id: &str, outcome: Outcome, notify: bool) -> InstanceReport {
        let mut r = InstanceReport::new(id, outcome, Idle::None);
        r.notify = notify;
        r
    }

    #[test]
    fn tags_follow_the_outcome_and_never_in_audit() {
        let mut by_principal = report("i-4", Outcome::Exempt, true);
        by_principal.exemption = Some(Exemption::Principal("arn:aws:iam::*:role/ci".into()));
        let mut by_tag = report("i-5", Outcome::Exempt, true);
        by_tag.exemption = Some(Exemption::Tag("legacy".into()));
        let mut errored = report("i-6", Outcome::Remediated, true);
        errored.error = Some("tagging failed".into());
        let reports = vec![
            report("i-1", Outcome::Remediated, true),
            report("i-2", Outcome::Flagged, true),
            report("i-3", Outcome::Flagged, false),
            by_principal,
            by_tag,
            errored,
            report("i-7", Outcome::Compliant, false),
        ];
        assert_eq!(
            tag_batches(Mode::Enforce, &reports),
            vec![
                TagBatch {
                    value: REMEDIATED,
                    ids: vec!["i-1".into()]
                },
                TagBatch {
                    value: NONCOMPLIANT,
                    ids: vec!["i-2".into()]
                },
            ],
            "an exemption is recorded in the memory, not on the instance"
        );
        assert!(tag_batches(Mode::Audit, &reports).is_empty());
    }

    #[test]
    fn a_weakened_default_is_set_back_only_where_it_is_ours() {
        let weak = DefaultsChange {
            http_tokens: Some("optional".into()),
            ..DefaultsChange::default()
        };
        let mut c = cfg(Mode::Enforce);
        let j = judge_defaults_change(&c, &weak, None);
        assert_eq!(j.weakenings.len(), 1);
        assert_eq!(j.restore, Err(DefaultsAction::NotOurs(NotOurs::SettingOff)));
        c.set_account_default = true;
        assert_eq!(judge_defaults_change(&c, &weak, None).restore, Ok(()));
        let declarative = AccountDefaults {
            managed_by: Some("declarative-policy".into()),
            ..AccountDefaults::default()
        };
        assert_eq!(
            judge_defaults_change(&c, &weak, Some(&declarative)).restore,
            Err(DefaultsAction::NotOurs(NotOurs::DeclarativePolicy))
        );
        c.mode = Mode::Audit;
        assert_eq!(
            judge_defaults_change(&c, &weak, None).restore,
            Err(DefaultsAction::NotOurs(NotOurs::Mode(Mode::Audit)))
        );
    }

    #[test]
    fn an_unread_request_is_judged_by_the_current_defaults_or_not_at_all() {
        let c = Config {
            set_account_default: true,
            ..cfg(Mode::Enforce)
        };
        let unread = DefaultsChange::default();
        let optional = AccountDefaults {
            http_tokens: Some("optional".into()),
            ..AccountDefaults::default()
        };
        let j = judge_defaults_change(&c, &unread, Some(&optional));
        assert_eq!(j.restore, Ok(()));
        assert!(!j.unjudged && j.weakenings[0].contains("optional"));
        let j = judge_defaults_change(&c, &unread, None);
        assert!(
            j.unjudged,
            "neither the request nor the defaults: not harmless"
        );
        assert_eq!(j.restore, Err(DefaultsAction::None));
    }

    #[test]
    fn a_sweep_sets_the_default_only_when_missing_and_ours() {
        let mut c = cfg(Mode::Enforce);
        c.set_account_default = true;
        let required = AccountDefaults {
            http_tokens: Some("required".into()),
            ..AccountDefaults::default()
        };
        assert_eq!(
            sweep_default_action(&c, &required),
            Err(DefaultsAction::AlreadyRequired)
        );
        assert_eq!(
            sweep_default_action(&c, &AccountDefaults::default()),
            Ok(())
        );
    }

    #[test]
    fn an_imdsv1_user_is_held_back_and_an_unread_metric_changes_nothing() {
        let planned = || {
            plan(
                &cfg(Mode::Enforce),
                &optional("i-00000001"),
                &launch(),
                Trigger::Sweep,
            )
        };
        let (mut r, mut remedy) = planned();
        assert_eq!(
            hold_back(&mut r, &mut remedy, Some(0.0), 168, false),
            V1Use::Unused
        );
        assert!(remedy.is_some(), "no calls: changed");
        assert_eq!(
            hold_back(&mut r, &mut remedy, Some(12.0), 168, false),
            V1Use::InUse
        );
        assert!(remedy.is_none(), "nothing is changed");
        assert_eq!(
            (r.outcome, &r.action.idle),
            (Outcome::Flagged, &Idle::HeldBack)
        );
        assert!(r
            .findings
            .last()
            .unwrap()
            .contains("answered 12 IMDSv1 call(s) in the last 168h"));
        assert!(r.would.is_some());

        // No data is not zero: held back, unless told to count it as zero.
        let (mut r, mut remedy) = planned();
        assert_eq!(
            hold_back(&mut r, &mut remedy, None, 168, false),
            V1Use::NoData
        );
        assert!(remedy.is_none());
        assert!(r
            .findings
            .last()
            .unwrap()
            .contains("no MetadataNoToken data"));
        let (mut r, mut remedy) = planned();
        assert_eq!(
            hold_back(&mut r, &mut remedy, None, 168, true),
            V1Use::NoData
        );
        assert!(
            remedy.is_some() && r.findings.len() == 1,
            "no finding added"
        );

        let (mut r, mut remedy) = plan(
            &cfg(Mode::Enforce),
            &optional("i-00000002"),
            &launch(),
            Trigger::Sweep,
        );
        unread_metric(&mut r, &mut remedy, "AccessDenied");
        assert!(remedy.is_none());
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(!r.action.wrote(), "the planned write is taken back");
        assert!(r.error.unwrap().contains("AccessDenied"));
    }

    #[test]
    fn a_failure_names_each_unhandled_instance_and_the_notification() {
        let mut r = Report::handled(Status::Handled, Mode::Enforce, launch());
        assert_eq!(failure_summary(&r, None), None);
        r.instances = vec![
            InstanceReport::failed("i-1", "UnauthorizedOperation"),
            InstanceReport::new("i-2", Outcome::Compliant, Idle::None),
        ];
        let s = failure_summary(&r, Some("SNS down")).unwrap();
        assert!(
            s.starts_with("1 of 2 not handled: i-1 (UnauthorizedOperation)"),
            "{s}"
        );
        assert!(s.contains("notification failed (SNS down)"), "{s}");
    }

    #[test]
    fn a_sweep_that_could_not_list_a_region_says_so_not_0_of_0() {
        let mut r = Report::handled(Status::Swept, Mode::Audit, launch());
        let mut region = crate::report::RegionSweep::new("us-east-1");
        region
            .errors
            .push("listing stopped after 0 page(s): no answer from ec2".into());
        region.counts.insert(Outcome::Compliant, 7);
        r.sweep = Some(crate::report::SweepSummary {
            refusing_imdsv1: vec![],
            regions: vec![region],
            accounts: vec![],
            omitted_instances: 0,
            sources: Vec::new(),
            memory: None,
            native_enforcement: None,
        });
        let s = failure_summary(&r, None).unwrap();
        assert_eq!(
            s,
            "1 region(s) not swept to the end: region us-east-1 (listing stopped after 0 page(s): no answer from ec2)"
        );
        // A failed instance of a sweep counts against every instance decided.
        r.instances
            .push(InstanceReport::failed("i-1", "UnauthorizedOperation"));
        r.sweep.as_mut().unwrap().regions[0]
            .counts
            .insert(Outcome::Failed, 1);
        let s = failure_summary(&r, None).unwrap();
        assert!(s.starts_with("1 of 8 not handled: i-1"), "{s}");
    }

    #[test]
    fn a_hold_back_ceiling_tells_a_day_before_and_then_switches() {
        const NOW: u64 = 1_795_000_000;
        let days = 14;
        // Held back for ten days: held.
        assert_eq!(ceiling(NOW - 10 * DAY, None, NOW, days), Ceiling::Hold);
        // A day from the ceiling: told, for the ceiling's time.
        let since = NOW - 13 * DAY;
        assert_eq!(
            ceiling(since, None, NOW, days),
            Ceiling::Tell {
                at: since + 14 * DAY
            }
        );
        // Past it, told a day ago: switched.
        assert_eq!(
            ceiling(since, Some(NOW), NOW + DAY, days),
            Ceiling::Switch { days: 14 }
        );
        // Past it but told only an hour ago (a sweep that skipped the day
        // before): held until a day after the message.
        let long_ago = NOW - 30 * DAY;
        assert_eq!(
            ceiling(long_ago, Some(NOW - 3600), NOW, days),
            Ceiling::Hold
        );
        // Never told, far past it: told now, switched no sooner than a day on.
        assert_eq!(
            ceiling(long_ago, None, NOW, days),
            Ceiling::Tell { at: NOW + DAY }
        );
        let r = held_record("p", "i-1", since, Some(NOW), NOW, days);
        assert_eq!(held_of(&r), (since, Some(NOW)));
        // A weekly sweep keeps counting: the record outlives the gap.
        assert!(r.live(NOW + 7 * DAY) && !r.live(NOW + (days + 1) * DAY));
    }
}

//! What happened: one outcome per instance, and the invocation's report
//! (the function's response, the CLI's output and the notification's source).

mod closed;
mod summaries;
mod sweep;

pub use closed::*;
pub use summaries::*;
pub use sweep::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::event::{DefaultsChange, EventContext, MetadataOptions};
use crate::policy::{AccountDefaults, Exemption, NotOurs, Readiness, Remedy};

/// Every instance an event names ends in exactly one of these.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already `HttpTokens=required` (or the endpoint is off).
    Compliant,
    /// Changed to `HttpTokens=required` by this invocation.
    Remediated,
    /// Noncompliant and left as is: tagged (notify) or only reported (audit).
    Flagged,
    /// Noncompliant, but exempt: nothing written.
    Exempt,
    /// Shutting down or terminated.
    Gone,
    /// Could not be handled; the invocation fails and names it.
    Failed,
    /// Not looked at: the event's account is not one the function may act
    /// in (`ALLOWED_ACCOUNT_IDS`).
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Compliant => "compliant",
            Outcome::Remediated => "remediated",
            Outcome::Flagged => "flagged",
            Outcome::Exempt => "exempt",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }
}

/// One reading of `MetadataNoToken`: the IMDSv1 calls an instance answered
/// over the last `hours`, summed; `calls: None` when there was no data at
/// all (stopped throughout, or just launched), which is not zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoToken {
    pub calls: Option<u64>,
    pub hours: u64,
}

impl std::fmt::Display for NoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.calls {
            Some(n) => write!(f, "{n} IMDSv1 call(s) in {}h", self.hours),
            None => write!(f, "no data in {}h", self.hours),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub instance_id: String,
    /// Set by a sweep that covers a list of accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Set by a sweep, which spans regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub outcome: Outcome,
    /// What this invocation did (serialized in words).
    pub action: Action,
    /// What enforce would have done, where nothing was done (audit, exempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<Exemption>,
    /// The metadata options as found, before any change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<MetadataOptions>,
    /// The service or tool that launched it, when one shows (`launcher`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// The version its launcher supports IMDSv2 only from, when a signal
    /// only AWS sets shows a launcher that not every version of which does
    /// (`launcher`): the sweep switches it only once `MetadataNoToken`
    /// shows no IMDSv1 call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The instance profile's ARN: with one, an IMDSv1 GET hands out a
    /// role's credentials (a finding's severity says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// When it was launched, in seconds since the epoch, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What `MetadataNoToken` said over the lookback, when it was read
    /// (`CHECK_METADATA_NO_TOKEN`, or a version-gated launcher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_no_token: Option<NoToken>,
    /// Whether this outcome is news a person should be told about.
    #[serde(skip)]
    pub notify: bool,
}

impl InstanceReport {
    pub fn new(instance_id: &str, outcome: Outcome, action: impl Into<Action>) -> Self {
        InstanceReport {
            instance_id: instance_id.to_string(),
            account: None,
            region: None,
            outcome,
            action: action.into(),
            would: None,
            findings: Vec::new(),
            exemption: None,
            before: None,
            launcher: None,
            needs_version: None,
            image_id: None,
            instance_profile: None,
            launch_time: None,
            error: None,
            metadata_no_token: None,
            notify: false,
        }
    }

    pub fn failed(instance_id: &str, error: impl Into<String>) -> Self {
        let mut r = InstanceReport::new(instance_id, Outcome::Failed, Idle::None);
        r.error = Some(error.into());
        r.notify = true;
        r
    }

    /// Worth listing: news for a person, a failure, or an error.
    pub fn is_news(&self) -> bool {
        self.notify || self.outcome == Outcome::Failed || self.error.is_some()
    }

    /// The instance was gone (shutting down, terminated, purged) when acted on.
    pub fn mark_gone(&mut self, state: &str) {
        self.outcome = Outcome::Gone;
        self.action = Action::from(Idle::Gone(state.to_string()));
        self.would = None;
        self.notify = false;
    }

    /// A `pending` notification's one try did not take (`why`): nothing
    /// is written, no one is told, and the instance's `running`
    /// notification decides (`Idle::AwaitingRunning`).
    pub fn mark_awaiting_running(&mut self, why: String) {
        let change = self.action.steps.iter().find_map(|s| match s {
            Step::Set(remedy) => Some(remedy.to_string()),
            _ => None,
        });
        self.outcome = Outcome::Flagged;
        self.action = Action::from(Idle::AwaitingRunning);
        self.would = change.or(self.would.take());
        self.findings.push(why);
        self.error = None;
        self.notify = false;
    }

    /// An instance a `pending` notification could not look at yet (`why`):
    /// its `running` notification decides.
    pub fn awaiting_running(instance_id: &str, why: String) -> Self {
        let mut r = InstanceReport::new(instance_id, Outcome::Flagged, Idle::AwaitingRunning);
        r.findings.push(why);
        r
    }

    /// Nothing could be done: the instance fails, and is named.
    pub fn mark_failed(&mut self, error: String) {
        self.outcome = Outcome::Failed;
        self.action = Action::from(Idle::None);
        self.would = None;
        self.error = Some(error);
        self.notify = true;
    }
}

/// A write this invocation made to an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The metadata options were set (`ModifyInstanceMetadataOptions`).
    Set(Remedy),
    /// The status tag was written.
    Tagged { key: String, value: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Set(remedy) => write!(f, "{remedy}"),
            Step::Tagged { key, value } => write!(f, "tagged {key}={value}"),
        }
    }
}

/// Why nothing (else) was written to an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Nothing to do, or nothing could be done.
    None,
    /// Audit mode writes nothing.
    Audit,
    Exempt,
    /// Shutting down, terminated, or no longer there.
    Gone(String),
    /// Another event already told of this launch (the guard's memory says
    /// so): not told, nor tagged, again.
    AlreadyTold,
    /// Enforce held back: the instance still answers IMDSv1 calls.
    HeldBack,
    /// Enforce held back: its launcher supports IMDSv2 only from a version
    /// the guard cannot see, and `MetadataNoToken` does not show it unused.
    Unproven,
    /// The event's account is not one the function may act in.
    NotAllowed,
    /// A state-change notification names no principal: with principal
    /// exemptions configured, the CloudTrail launch event decides.
    AwaitingLauncher,
    /// A `pending` notification's one try found the instance not shown or
    /// not taking the change yet: its `running` notification decides.
    AwaitingRunning,
    /// The circuit breaker held it back: the ceiling reached, as a setting.
    Breaker(String),
    /// Its AMI does not declare `ImdsSupport: v2.0` and it was launched
    /// within `FIRST_BOOT_GRACE_SECONDS`: its first boot may still need
    /// IMDSv1, so it is decided again then (`first_boot`).
    FirstBoot {
        until: u64,
    },
}

impl Idle {
    /// Another event decides it (its launch's, or its `running`
    /// notification): nothing is filed or told meanwhile.
    pub fn awaits_another_event(&self) -> bool {
        matches!(self, Idle::AwaitingLauncher | Idle::AwaitingRunning)
    }
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Idle::None => f.write_str("none"),
            Idle::Audit => f.write_str("none (audit mode)"),
            Idle::Exempt => f.write_str("none: exempt"),
            Idle::Gone(state) => write!(f, "none: instance is {state}"),
            Idle::AlreadyTold => f.write_str("none: already told of this launch"),
            Idle::HeldBack => f.write_str("none: held back, IMDSv1 still in use"),
            Idle::Unproven => f.write_str(
                "none: held back until MetadataNoToken shows no IMDSv1 call (its launcher's version is not known)",
            ),
            Idle::NotAllowed => f.write_str("none: the account is not allowed"),
            Idle::Breaker(limit) => write!(f, "none: circuit breaker ({limit})"),
            Idle::AwaitingRunning => f.write_str(
                "none yet: EC2 did not take the change while the instance was pending; its running notification decides",
            ),
            Idle::AwaitingLauncher => f.write_str(
                "none yet: the CloudTrail launch event, which names who launched it, decides (principal exemptions are configured)",
            ),
            Idle::FirstBoot { until } => write!(
                f,
                "none yet: waits for its first boot until {}; then decided again",
                crate::time::iso8601(*until)
            ),
        }
    }
}

/// What was done to an instance: its writes, in order, and why nothing (else)
/// was. Serialized as one sentence, `set HttpTokens=required, ...; tagged
/// imds-guard:status=remediated`, or `none: exempt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub steps: Vec<Step>,
    pub idle: Idle,
}

impl Action {
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    pub fn wrote(&self) -> bool {
        !self.steps.is_empty()
    }
}

impl From<Idle> for Action {
    fn from(idle: Idle) -> Self {
        Action {
            steps: Vec::new(),
            idle,
        }
    }
}

impl From<Step> for Action {
    fn from(step: Step) -> Self {
        Action {
            steps: vec![step],
            idle: Idle::None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        if self.idle != Idle::None || self.steps.is_empty() {
            write!(f, "{}", self.idle)?;
            first = false;
        }
        for step in &self.steps {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{step}")?;
            first = false;
        }
        Ok(())
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The event named instances and each has an outcome.
    Handled,
    /// The API call failed, so nothing was launched or changed.
    FailedCall,
    /// Not an event imds-guard acts on.
    Ignored,
    /// A sweep of the fleet: see `sweep`.
    Swept,
    /// The account's IMDS defaults were changed: see `account_defaults`.
    DefaultsChanged,
    /// The event's account is not one the function may act in: see `reason`.
    Refused,
}

/// For `skip_serializing_if`: a count of nothing is left out.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What was done about an account's IMDS default for new launches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultsAction {
    /// Nothing to do (or nothing done).
    None,
    /// The default already requires tokens.
    AlreadyRequired,
    /// Setting it is not the guard's to do here, and why.
    NotOurs(NotOurs),
    /// Set to `HttpTokens=required` by a sweep.
    Set,
    /// Set back to `HttpTokens=required` after someone weakened it.
    SetBack,
    /// Setting it was tried and failed (the error is reported beside).
    SetFailed,
    /// The defaults could not be read.
    Unreadable(String),
    /// An offline check does not look.
    Offline,
}

impl std::fmt::Display for DefaultsAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefaultsAction::None => f.write_str("none"),
            DefaultsAction::AlreadyRequired => f.write_str("none: already HttpTokens=required"),
            DefaultsAction::NotOurs(NotOurs::SettingOff) => {
                f.write_str("none: SET_ACCOUNT_DEFAULT is off")
            }
            DefaultsAction::NotOurs(NotOurs::Mode(mode)) => write!(
                f,
                "none ({mode} mode): enforce would set the account default to HttpTokens=required"
            ),
            DefaultsAction::NotOurs(NotOurs::DeclarativePolicy) => {
                f.write_str("none: a declarative policy manages the account defaults")
            }
            DefaultsAction::Set => f.write_str("set the account default to HttpTokens=required"),
            DefaultsAction::SetBack => {
                f.write_str("set the account default back to HttpTokens=required")
            }
            DefaultsAction::SetFailed => f.write_str("none: setting it failed"),
            DefaultsAction::Unreadable(e) => write!(f, "could not read the account defaults: {e}"),
            DefaultsAction::Offline => f.write_str("none (offline check)"),
        }
    }
}

impl Serialize for DefaultsAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A change to the account's IMDS defaults, judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DefaultsReport {
    pub requested: DefaultsChange,
    /// How the change weakens protection; empty when it does not.
    pub weakenings: Vec<String>,
    /// The defaults as EC2 reports them now, when they could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<AccountDefaults>,
    pub action: DefaultsAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventContext>,
    pub instances: Vec<InstanceReport>,
    /// Items of the event that could not be read at all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// `sent <message id>`, `not needed`, `no topic configured`, `failed: ...`.
    pub notification: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_defaults: Option<DefaultsReport>,
    /// Requests this invocation sent, by operation (every attempt, the
    /// notification included), where the clients count them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aws_calls: BTreeMap<String, u64>,
    /// Launch templates, Auto Scaling groups and launch configurations a
    /// source event named (a sweep's are per region).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::source::SourceReport>,
    /// The Security Hub findings filed (`SECURITY_HUB_FINDINGS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_hub: Option<FindingsReport>,
    /// The events put on the bus (`EVENT_BUS_NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<Routed>,
    /// What the circuit breaker held back (`breaker`), when it tripped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Tripped>,
    /// Why the account ran in a mode it may not be set to: its units were
    /// not known (`Config::fallback_units`). Said in the notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Which guard wrote this: version and commit.
    pub release: crate::release::Release,
}

/// What was put on the EventBridge bus.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Routed {
    pub bus: String,
    pub events: u64,
    /// Handed to the outputs function, which puts them (the event function
    /// carries no EventBridge client).
    #[serde(skip_serializing_if = "is_zero")]
    pub queued: u64,
    /// Entries EventBridge refused, or calls that failed: the invocation
    /// fails and names them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Report {
    /// A report with nothing in it yet.
    fn empty(status: Status, mode: Mode, event: Option<EventContext>) -> Report {
        Report {
            status,
            mode,
            reason: None,
            event,
            instances: Vec::new(),
            unreadable: Vec::new(),
            notification: String::new(),
            sweep: None,
            account_defaults: None,
            aws_calls: BTreeMap::new(),
            sources: Vec::new(),
            security_hub: None,
            routed: None,
            breaker: None,
            fallback: None,
            release: crate::release::Release::THIS,
        }
    }

    pub fn ignored(mode: Mode, reason: String) -> Report {
        let mut r = Report::empty(Status::Ignored, mode, None);
        r.reason = Some(reason);
        r.notification = "not needed".into();
        r
    }

    /// A report for `ctx` with nothing in it yet.
    pub fn handled(status: Status, mode: Mode, ctx: EventContext) -> Report {
        Report::empty(status, mode, Some(ctx))
    }

    /// The API call itself failed: nothing was launched or changed.
    pub fn failed_call(mode: Mode, ctx: EventContext, error_code: &str) -> Report {
        let reason = format!(
            "{} failed with {error_code}: nothing was launched or changed",
            ctx.event_name
        );
        let mut r = Report::empty(Status::FailedCall, mode, Some(ctx));
        r.reason = Some(reason);
        r.notification = "not needed".into();
        r
    }

    /// Instances by outcome: a sweep's full counts (its `instances` list is
    /// capped), else the event's instances.
    pub fn counts(&self) -> BTreeMap<Outcome, u64> {
        let mut counts = BTreeMap::new();
        match &self.sweep {
            Some(sweep) => {
                for r in &sweep.regions {
                    for (o, n) in &r.counts {
                        *counts.entry(*o).or_insert(0) += n;
                    }
                }
            }
            None => {
                for i in &self.instances {
                    *counts.entry(i.outcome).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts().get(&outcome).copied().unwrap_or(0)
    }

    /// Everything that could not be handled, with why: instances and event
    /// items, regions a sweep did not finish, the account defaults.
    pub fn unhandled(&self) -> Vec<String> {
        let mut all = self.unhandled_instances();
        all.extend(self.unfinished_regions());
        all.extend(self.defaults_error());
        all.extend(self.unhandled_sources());
        all
    }

    /// Sources a source event named that could not be read or fixed.
    pub fn unhandled_sources(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter(|s| s.outcome == crate::source::SourceOutcome::Failed)
            .map(|s| format!("{} ({})", s.label(), s.error.as_deref().unwrap_or("failed")))
            .collect()
    }

    /// Instances that failed (or were handled with an error) and event
    /// items that could not be read, each with why.
    pub fn unhandled_instances(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.outcome == Outcome::Failed || i.error.is_some())
            .map(|i| match i.outcome {
                Outcome::Failed => {
                    format!(
                        "{} ({})",
                        i.instance_id,
                        i.error.as_deref().unwrap_or("failed")
                    )
                }
                done => format!(
                    "{} ({}, but {})",
                    i.instance_id,
                    done.as_str(),
                    i.error.as_deref().unwrap_or("an error")
                ),
            })
            .chain(self.unreadable.iter().cloned())
            .collect()
    }

    /// The regions a sweep could not finish, each with why.
    pub fn unfinished_regions(&self) -> Vec<String> {
        self.sweep
            .iter()
            .flat_map(|s| {
                s.regions.iter().flat_map(|r| {
                    let place = match &r.account {
                        Some(a) => format!("account {a} region {}", r.region),
                        None => format!("region {}", r.region),
                    };
                    r.errors.iter().map(move |e| format!("{place} ({e})"))
                })
            })
            .collect()
    }

    /// Why the account defaults could not be handled, if so.
    pub fn defaults_error(&self) -> Option<String> {
        self.account_defaults
            .as_ref()
            .and_then(|d| Some(format!("account defaults ({})", d.error.as_ref()?)))
    }

    /// How many instances the report decided: a sweep's full counts, else
    /// the event's instances; plus the event items that could not be read.
    pub fn decided(&self) -> u64 {
        let instances = match &self.sweep {
            Some(_) => self.counts().values().sum(),
            None => self.instances.len() as u64,
        };
        instances + self.unreadable.len() as u64
    }

    /// Instances not switched yet because their first boot may still need
    /// IMDSv1 (`Idle::FirstBoot`): counted among the flagged.
    pub fn first_boot_waiting(&self) -> u64 {
        match &self.sweep {
            Some(sweep) => sweep.regions.iter().map(|r| r.first_boot_waiting).sum(),
            None => self
                .instances
                .iter()
                .filter(|r| matches!(r.action.idle, Idle::FirstBoot { .. }))
                .count() as u64,
        }
    }

    /// `2 remediated, 1 exempt`, in a fixed order, zero counts left out.
    pub fn tally(&self) -> String {
        let order = [
            Outcome::Remediated,
            Outcome::Flagged,
            Outcome::Exempt,
            Outcome::Failed,
            Outcome::Refused,
            Outcome::Compliant,
            Outcome::Gone,
        ];
        let counts = self.counts();
        let waiting = self.first_boot_waiting();
        let parts: Vec<String> = order
            .iter()
            .filter_map(|&o| match counts.get(&o).copied().unwrap_or(0) {
                0 => None,
                n if o == Outcome::Flagged && waiting > 0 => Some(format!(
                    "{n} {} ({waiting} waiting for first boot)",
                    o.as_str()
                )),
                n => Some(format!("{n} {}", o.as_str())),
            })
            .collect();
        if parts.is_empty() {
            "no instances".into()
        } else {
            parts.join(", ")
        }
    }

    /// Sources by outcome, e.g. `1 launch template fixed, 1 Auto Scaling
    /// group flagged`.
    pub fn source_tally(&self) -> String {
        source_tally(&self.sources)
    }
}

/// Sources by kind and outcome, in a fixed order; `no sources` if none.
pub fn source_tally(sources: &[crate::source::SourceReport]) -> String {
    let mut counts: BTreeMap<(crate::source::SourceKind, crate::source::SourceOutcome), u64> =
        BTreeMap::new();
    for s in sources {
        *counts.entry((s.kind, s.outcome)).or_default() += 1;
    }
    if counts.is_empty() {
        return "no sources".into();
    }
    counts
        .iter()
        .map(|((kind, outcome), n)| {
            let outcome = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{n} {kind}{} {outcome}", if *n == 1 { "" } else { "(s)" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

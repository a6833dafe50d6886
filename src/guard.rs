//! The guardrail, one way through: event → decision → actions → report.
//!
//! Invariant: every instance an event names ends in exactly one outcome, or
//! the invocation fails and names it (so the asynchronous retry and the
//! failure destination keep the event). Writes are idempotent, so a repeated
//! delivery changes nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::aws::{AwsError, Clients, Ec2Api, Publisher};
use crate::config::{Config, Mode};
use crate::event::{self, DefaultsChange, EventContext, EventError, GuardEvent, Observed, Trigger};
use crate::notify;
use crate::plan::{failure_summary, judge_defaults_change, plan, tag_batches};
use crate::policy::{Policy, Remedy, Verdict};
use crate::report::{
    DefaultsAction, DefaultsReport, Idle, InstanceReport, Outcome, Report, Status, Step,
};
use crate::validate::sns_topic_region;

/// Modify calls in flight at once for one event.
const MODIFY_CONCURRENCY: usize = 8;
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// An EC2 call event we could not read: kept for a person to look at.
    #[error(transparent)]
    Malformed(#[from] EventError),
    /// Some instances (or the notification) could not be handled.
    #[error("{summary}")]
    Unhandled {
        summary: String,
        report: Box<Report>,
    },
}

impl From<GuardError> for Diagnostic {
    fn from(e: GuardError) -> Diagnostic {
        let error_type = match e {
            GuardError::Malformed(_) => "ImdsGuard.MalformedEvent",
            GuardError::Unhandled { .. } => "ImdsGuard.Unhandled",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

pub struct Guard<C> {
    pub(crate) cfg: Config,
    pub(crate) clients: C,
}

impl<C: Clients> Guard<C> {
    pub fn new(cfg: Config, clients: C) -> Self {
        Guard { cfg, clients }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Handles one Lambda payload.
    pub async fn handle(&self, payload: &Value) -> Result<Report, GuardError> {
        self.handle_until(payload, None).await
    }

    /// Handles one Lambda payload; a sweep stops taking new pages in time to
    /// report before `deadline` (the function's timeout).
    pub async fn handle_until(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        self.counting_calls(self.dispatch(payload, deadline)).await
    }

    /// Runs `work` and records in its report the AWS requests it sent. The
    /// counter is the process's: Lambda hands a process one event at a time,
    /// and the CLI runs one sweep, so the difference is this work's calls.
    pub(crate) async fn counting_calls(
        &self,
        work: impl std::future::Future<Output = Result<Report, GuardError>>,
    ) -> Result<Report, GuardError> {
        let before = self.clients.calls();
        // Boxed: the sweep's future is deep, and the runtime's future that
        // holds it would otherwise exceed the compiler's layout depth limit.
        let mut result = Box::pin(work).await;
        let report = match &mut result {
            Ok(report) => report,
            Err(GuardError::Unhandled { report, .. }) => report,
            Err(GuardError::Malformed(_)) => return result,
        };
        report.aws_calls = calls_since(&before, self.clients.calls());
        result
    }

    async fn dispatch(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        let parsed =
            event::parse(payload).inspect_err(|e| error!(error = %e, "malformed event"))?;
        match parsed {
            GuardEvent::Sweep { ctx } => {
                let regions = if self.cfg.sweep_regions.is_empty() {
                    vec![ctx.region.clone()]
                } else {
                    self.cfg.sweep_regions.clone()
                };
                self.sweep(ctx, regions, deadline, &|_| {}).await
            }
            GuardEvent::DefaultsChanged { ctx, change } => {
                self.handle_defaults_change(ctx, change).await
            }
            GuardEvent::Ignored { reason } => {
                info!(%reason, "event ignored");
                Ok(Report::ignored(self.cfg.mode, reason))
            }
            GuardEvent::FailedCall { ctx, error_code } => {
                info!(
                    event_name = %ctx.event_name,
                    event_id = ctx.event_id.as_deref().unwrap_or(""),
                    %error_code,
                    "the API call failed; nothing was launched or changed"
                );
                Ok(Report::failed_call(self.cfg.mode, ctx, &error_code))
            }
            GuardEvent::Instances {
                ctx,
                trigger,
                instances,
                unreadable,
            } => {
                self.handle_instances(ctx, trigger, instances, unreadable)
                    .await
            }
        }
    }

    async fn handle_instances(
        &self,
        ctx: EventContext,
        trigger: Trigger,
        from_event: Vec<Observed>,
        unreadable: Vec<String>,
    ) -> Result<Report, GuardError> {
        let deadline = Instant::now() + self.cfg.retry_budget;
        let policy = Policy::of(&self.cfg);
        if let Some(why) = self.cfg.refusal(ctx.account.as_deref()) {
            return self.refuse(ctx, &from_event, unreadable, why).await;
        }
        let account = match self
            .clients
            .enter(ctx.account.as_deref(), &ctx.region)
            .await
        {
            Ok(account) => account,
            Err(e) => {
                // Not one instance can be looked at: each is named, and the
                // invocation fails so the event is retried (a member stack
                // deployed late, a throttled STS) and kept if it never works.
                let why = e.to_string();
                let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
                report.instances = from_event
                    .iter()
                    .map(|o| InstanceReport::failed(&o.instance_id, why.clone()))
                    .collect();
                report.unreadable = unreadable;
                let notify_error = self.tell(&mut report).await;
                return conclude(report, notify_error);
            }
        };
        let ec2 = self.clients.ec2(&account, &ctx.region);

        // A compliant launch whose event carries complete options costs no
        // call. Anything else is looked at as EC2 shows it now: one call.
        let to_look: Vec<String> = from_event
            .iter()
            .filter(|o| {
                trigger == Trigger::MetadataChange
                    || policy.decide(o, &ctx.principal) != Verdict::Compliant
            })
            .map(|o| o.instance_id.clone())
            .collect();
        let (mut seen, lookup_failures) = if to_look.is_empty() {
            (HashMap::new(), HashMap::new())
        } else {
            look(&ec2, &to_look, deadline, self.cfg.retry_budget).await
        };

        // Decide.
        let mut reports: Vec<InstanceReport> = Vec::with_capacity(from_event.len());
        let mut to_modify: Vec<(usize, Remedy)> = Vec::new();
        for launched in &from_event {
            let id = &launched.instance_id;
            if let Some(err) = lookup_failures.get(id) {
                reports.push(InstanceReport::failed(id, err.clone()));
                continue;
            }
            let current = seen.remove(id).unwrap_or_else(|| launched.clone());
            let (report, remedy) = plan(&self.cfg, &current, &ctx, trigger);
            if let Some(remedy) = remedy {
                to_modify.push((reports.len(), remedy));
            }
            reports.push(report);
        }

        self.remediate(&ec2, &mut reports, to_modify, deadline)
            .await;
        self.tag_acted_on(&ec2, &mut reports).await;
        for r in &reports {
            log_decision(&ctx, self.cfg.mode, r);
        }
        for item in &unreadable {
            error!(%item, "event item could not be read");
        }
        let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
        report.instances = reports;
        report.unreadable = unreadable;
        let notify_error = self.tell(&mut report).await;
        conclude(report, notify_error)
    }

    /// Someone changed the account's IMDS defaults: say so when it weakens
    /// them, and, in enforce mode with `SET_ACCOUNT_DEFAULT`, put
    /// `HttpTokens=required` back. `HttpTokensEnforced` is never touched.
    async fn handle_defaults_change(
        &self,
        ctx: EventContext,
        change: DefaultsChange,
    ) -> Result<Report, GuardError> {
        if let Some(why) = self.cfg.refusal(ctx.account.as_deref()) {
            return self.refuse(ctx, &[], Vec::new(), why).await;
        }
        let ec2 = match self
            .clients
            .enter(ctx.account.as_deref(), &ctx.region)
            .await
        {
            Ok(account) => self.clients.ec2(&account, &ctx.region),
            Err(e) => {
                let mut report = Report::handled(Status::DefaultsChanged, self.cfg.mode, ctx);
                report.account_defaults = Some(DefaultsReport {
                    weakenings: change.weakenings(),
                    requested: change,
                    current: None,
                    action: DefaultsAction::None,
                    error: Some(e.to_string()),
                });
                let notify_error = self.tell(&mut report).await;
                return conclude(report, notify_error);
            }
        };
        let current = match ec2.metadata_defaults().await {
            Ok(d) => Some(d),
            Err(e) => {
                warn!(error = %e, region = %ctx.region, "account IMDS defaults could not be read");
                None
            }
        };
        let judged = judge_defaults_change(&self.cfg, &change, current.as_ref());
        let weakenings = judged.weakenings;
        let mut error = None;
        let action = match judged.restore {
            Err(action) => action,
            Ok(()) => match ec2.require_tokens_by_default().await {
                Ok(()) => DefaultsAction::SetBack,
                Err(e) => {
                    error = Some(format!("could not set the account default: {e}"));
                    DefaultsAction::None
                }
            },
        };
        if weakenings.is_empty() {
            info!(region = %ctx.region, "account IMDS defaults changed without weakening them");
        } else {
            warn!(region = %ctx.region, by = %ctx.principal.display(), weakened = %weakenings.join("; "), %action, "account IMDS defaults weakened");
        }
        let mut report = Report::handled(Status::DefaultsChanged, self.cfg.mode, ctx);
        report.account_defaults = Some(DefaultsReport {
            requested: change,
            weakenings,
            current,
            action,
            error,
        });
        let notify_error = self.tell(&mut report).await;
        conclude(report, notify_error)
    }

    /// The event's account is not one this function may act in: nothing is
    /// looked at or written there. Each instance the event names is
    /// reported `refused`, and a person is told; the invocation succeeds,
    /// since a retry would be refused the same way.
    async fn refuse(
        &self,
        ctx: EventContext,
        instances: &[Observed],
        unreadable: Vec<String>,
        why: String,
    ) -> Result<Report, GuardError> {
        warn!(
            account = ctx.account.as_deref().unwrap_or(""), region = %ctx.region,
            event_name = %ctx.event_name, event_id = ctx.event_id.as_deref().unwrap_or(""),
            "event refused: {why}"
        );
        let mut report = Report::handled(Status::Refused, self.cfg.mode, ctx);
        report.instances = instances
            .iter()
            .map(|o| {
                let mut r = InstanceReport::new(&o.instance_id, Outcome::Refused, Idle::NotAllowed);
                r.notify = true;
                r
            })
            .collect();
        report.unreadable = unreadable;
        report.reason = Some(why);
        let notify_error = self.tell(&mut report).await;
        conclude(report, notify_error)
    }

    /// Enforce: applies each remedy, a few at a time; what could not be
    /// applied becomes `gone` or `failed`.
    async fn remediate(
        &self,
        ec2: &impl Ec2Api,
        reports: &mut [InstanceReport],
        to_modify: Vec<(usize, Remedy)>,
        deadline: Instant,
    ) {
        let results: Vec<(usize, Result<(), Failure>)> = stream::iter(to_modify)
            .map(|(idx, remedy)| {
                let id = reports[idx].instance_id.clone();
                async move { (idx, modify(ec2, &id, &remedy, deadline).await) }
            })
            .buffer_unordered(MODIFY_CONCURRENCY)
            .collect()
            .await;
        for (idx, result) in results {
            let r = &mut reports[idx];
            match result {
                Ok(()) => {}
                Err(Failure::Gone(state)) => r.mark_gone(&state),
                Err(Failure::Error(e)) => r.mark_failed(e),
            }
        }
    }

    async fn tag_acted_on(&self, ec2: &impl Ec2Api, reports: &mut [InstanceReport]) {
        write_tags(ec2, &self.cfg.status_tag_key, self.cfg.mode, reports).await;
    }

    /// Publishes one message for the event when it holds news. Records what
    /// happened in the report; returns the error if publishing failed.
    pub(crate) async fn tell(&self, report: &mut Report) -> Option<String> {
        let mut failed = None;
        report.notification = match (&self.cfg.topic_arn, notify::needed(report)) {
            (_, false) => "not needed".into(),
            (None, true) => "no topic configured".into(),
            (Some(topic), true) => {
                // The topic lives in its own region, whatever the event's.
                let region = sns_topic_region(topic).unwrap_or("us-east-1");
                let message = notify::build(report);
                match self.clients.sns(region).publish(topic, &message).await {
                    Ok(id) => format!("sent {id}"),
                    Err(e) => {
                        failed = Some(e.to_string());
                        format!("failed: {e}")
                    }
                }
            }
        };
        failed
    }
}

/// The invocation's result: the report, or an error that names every
/// instance (and the notification) that could not be handled.
pub(crate) fn conclude(report: Report, notify_error: Option<String>) -> Result<Report, GuardError> {
    info!(tally = %report.tally(), notification = %report.notification, "event handled");
    let Some(summary) = failure_summary(&report, notify_error.as_deref()) else {
        return Ok(report);
    };
    error!(report = %serde_json::to_string(&report).unwrap_or_default(), "{summary}");
    Err(GuardError::Unhandled {
        summary,
        report: Box::new(report),
    })
}

/// Tags what was acted on, one `CreateTags` call per value (see
/// `plan::tag_batches`). A failed tag is an error on each instance; in
/// notify mode, where tagging was the whole action, the instance fails.
pub(crate) async fn write_tags(
    ec2: &impl Ec2Api,
    key: &str,
    mode: Mode,
    reports: &mut [InstanceReport],
) {
    for batch in tag_batches(mode, reports) {
        let result = ec2.tag(&batch.ids, key, batch.value).await;
        let ids: std::collections::HashSet<&String> = batch.ids.iter().collect();
        for r in reports.iter_mut().filter(|r| ids.contains(&r.instance_id)) {
            match &result {
                Ok(()) => r.action.push(Step::Tagged {
                    key: key.to_string(),
                    value: batch.value.to_string(),
                }),
                Err(e) => {
                    r.error = Some(format!("tagging failed: {e}"));
                    if r.outcome == Outcome::Flagged && mode == Mode::Notify {
                        r.outcome = Outcome::Failed;
                    }
                }
            }
        }
    }
}

/// Requests sent between two readings of the call counter, by operation.
fn calls_since(
    before: &BTreeMap<String, u64>,
    now: BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.into_iter()
        .filter_map(|(op, n)| {
            let sent = n - before.get(&op).copied().unwrap_or(0).min(n);
            (sent > 0).then_some((op, sent))
        })
        .collect()
}

pub(crate) fn log_decision(ctx: &EventContext, mode: Mode, r: &InstanceReport) {
    let findings = r.findings.join(", ");
    let action = r.action.to_string();
    let fields = (
        r.instance_id.as_str(),
        r.outcome.as_str(),
        action.as_str(),
        r.error.as_deref().unwrap_or(""),
    );
    if r.outcome == Outcome::Failed || r.error.is_some() {
        warn!(
            instance_id = fields.0, outcome = fields.1, action = fields.2, error = fields.3,
            %findings, mode = mode.as_str(), region = %ctx.region,
            account = ctx.account.as_deref().unwrap_or(""),
            event_id = ctx.event_id.as_deref().unwrap_or(""),
            "decision"
        );
    } else {
        info!(
            instance_id = fields.0, outcome = fields.1, action = fields.2,
            %findings, exemption = r.exemption.as_ref().map(ToString::to_string).unwrap_or_default(),
            mode = mode.as_str(), region = %ctx.region,
            account = ctx.account.as_deref().unwrap_or(""),
            event_id = ctx.event_id.as_deref().unwrap_or(""),
            "decision"
        );
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF)
}

/// Sleeps before the next attempt; false when the budget does not allow one.
async fn wait_for_retry(attempt: u32, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep(backoff(attempt).min(deadline - now)).await;
    true
}

/// Describes `ids`, retrying those EC2 does not show yet until the budget is
/// spent. Returns what was seen and, per id, why it could not be seen.
async fn look(
    ec2: &impl Ec2Api,
    ids: &[String],
    deadline: Instant,
    budget: Duration,
) -> (HashMap<String, Observed>, HashMap<String, String>) {
    let mut seen = HashMap::new();
    let mut missing: Vec<String> = ids.to_vec();
    let mut attempt = 0;
    loop {
        match ec2.describe(&missing).await {
            Ok(found) => {
                for o in found {
                    missing.retain(|id| id != &o.instance_id);
                    seen.insert(o.instance_id.clone(), o);
                }
                if missing.is_empty() {
                    return (seen, HashMap::new());
                }
            }
            // An InstanceIds-style lookup answers NotFound for new ids: retry.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                let why = e.to_string();
                return (
                    seen,
                    missing.into_iter().map(|id| (id, why.clone())).collect(),
                );
            }
        }
        if !wait_for_retry(attempt, deadline).await {
            let why = format!(
                "EC2 did not show the instance within {}s (DescribeInstances)",
                budget.as_secs()
            );
            return (
                seen,
                missing.into_iter().map(|id| (id, why.clone())).collect(),
            );
        }
        attempt += 1;
    }
}

enum Failure {
    Gone(String),
    Error(String),
}

/// Applies the remedy, retrying while the instance is not visible yet or
/// still `pending`, within the budget.
async fn modify(
    ec2: &impl Ec2Api,
    id: &str,
    remedy: &Remedy,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut attempt = 0;
    loop {
        let err = match ec2.modify(id, remedy).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let retryable = err.is_not_found() || err.is_incorrect_state();
        if !retryable {
            return Err(Failure::Error(err.to_string()));
        }
        if err.is_incorrect_state() {
            // Refused: still pending, or already on its way out?
            if let Ok(found) = ec2.describe(&[id.to_string()]).await {
                if let Some(state) = found.first().and_then(|o| o.state.clone()) {
                    if matches!(state.as_str(), "shutting-down" | "terminated") {
                        return Err(Failure::Gone(state));
                    }
                }
            }
        }
        if !wait_for_retry(attempt, deadline).await {
            return Err(Failure::Error(format!(
                "still {} when the retry budget ran out",
                error_code(&err)
            )));
        }
        attempt += 1;
    }
}

fn error_code(e: &AwsError) -> String {
    e.code().unwrap_or("unanswered").to_string()
}

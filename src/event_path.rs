//! The event path: one CloudTrail event (a launch, a change of an instance's
//! metadata options, a change of the account's defaults) through
//! decide → act → report.
//!
//! Invariant: every instance an event names ends in exactly one outcome, or
//! the invocation fails and names it (so the asynchronous retry and the
//! failure destination keep the event). Writes are idempotent, so a repeated
//! delivery changes nothing twice.

use std::collections::HashMap;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::act::{apply_default, look, write_tags, Pacer, Pacing};
use crate::aws::{Clients, Ec2Api};
use crate::config::Config;
use crate::event::{DefaultsChange, EventContext, Observed, Trigger};
use crate::outputs::{conclude, log_decision, tell, GuardError};
use crate::plan::{judge_defaults_change, plan};
use crate::policy::{Policy, Remedy, Verdict};
use crate::report::{
    DefaultsAction, DefaultsReport, Idle, InstanceReport, Outcome, Report, Status,
};

/// One event's handling, with the configuration and clients it acts with.
pub struct EventPath<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> EventPath<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        EventPath { cfg, clients }
    }

    /// The instances an event names: each is decided on what EC2 shows now
    /// (or on the options the event carries, when they are complete and
    /// compliant: no call), acted on as the mode says, tagged, and reported
    /// in one notification.
    pub async fn instances(
        &self,
        ctx: EventContext,
        trigger: Trigger,
        from_event: Vec<Observed>,
        unreadable: Vec<String>,
    ) -> Result<Report, GuardError> {
        let deadline = Instant::now() + self.cfg.retry_budget;
        let policy = Policy::of(self.cfg);
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
                let notify_error = tell(self.cfg, self.clients, &mut report).await;
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
            let (report, remedy) = plan(self.cfg, &current, &ctx, trigger);
            if let Some(remedy) = remedy {
                to_modify.push((reports.len(), remedy));
            }
            reports.push(report);
        }

        // Act.
        Pacer::new(Pacing::EVENT)
            .remediate(&ec2, &mut reports, to_modify, deadline)
            .await;
        write_tags(&ec2, &self.cfg.status_tag_key, self.cfg.mode, &mut reports).await;

        // Report.
        for r in &reports {
            log_decision(&ctx, self.cfg.mode, r);
        }
        for item in &unreadable {
            error!(%item, "event item could not be read");
        }
        let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
        report.instances = reports;
        report.unreadable = unreadable;
        let notify_error = tell(self.cfg, self.clients, &mut report).await;
        conclude(report, notify_error)
    }

    /// Someone changed the account's IMDS defaults: say so when it weakens
    /// them, and, in enforce mode with `SET_ACCOUNT_DEFAULT`, put
    /// `HttpTokens=required` back. `HttpTokensEnforced` is never touched.
    pub async fn defaults_changed(
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
                let notify_error = tell(self.cfg, self.clients, &mut report).await;
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
        let judged = judge_defaults_change(self.cfg, &change, current.as_ref());
        let (action, error) = apply_default(
            &ec2,
            judged.restore,
            DefaultsAction::SetBack,
            DefaultsAction::None,
            None,
        )
        .await;
        let weakenings = judged.weakenings;
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
        let notify_error = tell(self.cfg, self.clients, &mut report).await;
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
        let notify_error = tell(self.cfg, self.clients, &mut report).await;
        conclude(report, notify_error)
    }
}

//! The event path: one event (a launch, a change of an instance's metadata
//! options, a change of the account's defaults, an instance starting)
//! through decide → act → report.
//!
//! Invariant: every instance an event names ends in exactly one outcome, or
//! the invocation fails and names it (so the asynchronous retry and the
//! failure destination keep the event). Writes are idempotent, so a repeated
//! delivery changes nothing twice, and the guard's memory keeps a second
//! event about the same launch from telling a person twice.

use std::collections::HashMap;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::act::{
    apply_default, look, look_launch, remember_remediated, write_tags, Pacer, Pacing,
};
use crate::aws::{Account, Clients, Ec2Api, MemoryApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::error::{conclude, GuardError};
use crate::event::{DefaultsChange, EventContext, Lookup, Observed, Trigger};
use crate::finding::{self, FindingsReport};
use crate::findings;
use crate::memory::{self, Claim, Kind, Record};
use crate::outbox::Outbox;
use crate::plan::{exemption_records, judge_defaults_change, needs_claim, plan};
use crate::policy::{Policy, Remedy, Verdict};
use crate::report::{
    DefaultsAction, DefaultsReport, Idle, InstanceReport, Outcome, Report, Status,
};
use crate::telemetry::log_decision;

/// One event's handling, with the configuration and clients it acts with.
pub struct EventPath<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> EventPath<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        EventPath { cfg, clients }
    }

    /// The account the event acts in (the member role assumed in central
    /// mode), or the report of an event that cannot act at all.
    async fn enter(
        &self,
        ctx: &EventContext,
        ids: &[String],
        unreadable: &[String],
    ) -> Result<Account, Result<Report, GuardError>> {
        if let Some(why) = self.cfg.refusal(ctx.account.as_deref()) {
            return Err(self
                .refuse(ctx.clone(), ids, unreadable.to_vec(), why)
                .await);
        }
        match self
            .clients
            .enter(ctx.account.as_deref(), &ctx.region)
            .await
        {
            Ok(account) => Ok(account),
            Err(e) => {
                // Not one instance can be looked at: each is named, and the
                // invocation fails so the event is retried (a member stack
                // deployed late, a throttled STS) and kept if it never works.
                let why = e.to_string();
                let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx.clone());
                report.instances = ids
                    .iter()
                    .map(|id| InstanceReport::failed(id, why.clone()))
                    .collect();
                report.unreadable = unreadable.to_vec();
                if ids.is_empty() && unreadable.is_empty() {
                    report
                        .unreadable
                        .push(format!("the event could not be acted on: {why}"));
                }
                let delivery = Outbox::new(self.cfg, self.clients)
                    .tell(&mut report, None)
                    .await;
                let notify_error = delivery.error().map(str::to_string);
                Err(conclude(report, notify_error))
            }
        }
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
        let ids: Vec<String> = from_event.iter().map(|o| o.instance_id.clone()).collect();
        let account = match self.enter(&ctx, &ids, &unreadable).await {
            Ok(account) => account,
            Err(done) => return done,
        };
        let ec2 = self.clients.ec2(&account, &ctx.region);

        // A compliant instance whose event carries complete options (a
        // launch, or a change such as the guard's own) costs no call.
        // Anything else is looked at as EC2 shows it now: one call.
        let policy = Policy::of(self.cfg);
        let to_look: Vec<String> = from_event
            .iter()
            .filter(|o| policy.decide(o, &ctx.principal) != Verdict::Compliant)
            .map(|o| o.instance_id.clone())
            .collect();
        let (mut seen, failures) = if to_look.is_empty() {
            (HashMap::new(), HashMap::new())
        } else {
            look(&ec2, &to_look, deadline, self.cfg.retry_budget).await
        };
        let current = from_event
            .into_iter()
            .map(|launched| {
                let id = &launched.instance_id;
                match failures.get(id) {
                    Some(why) => Err((id.clone(), why.clone())),
                    None => Ok(seen.remove(id).unwrap_or(launched)),
                }
            })
            .collect();
        self.decide_and_act(ctx, trigger, &account, &ec2, current, unreadable, deadline)
            .await
    }

    /// A launch whose event does not list its instances (CloudTrail cut the
    /// response): they are found by the launch's reservation id or client
    /// token, and handled like any launch's; if they cannot be found in the
    /// retry budget, the invocation fails, naming the event and why.
    pub async fn unlisted(&self, ctx: EventContext, lookup: Lookup) -> Result<Report, GuardError> {
        let deadline = Instant::now() + self.cfg.retry_budget;
        let account = match self.enter(&ctx, &[], &[]).await {
            Ok(account) => account,
            Err(done) => return done,
        };
        let ec2 = self.clients.ec2(&account, &ctx.region);
        match look_launch(&ec2, &lookup, deadline, self.cfg.retry_budget).await {
            Ok(found) => {
                info!(
                    event_id = ctx.event_id.as_deref().unwrap_or(""), why = %lookup.why,
                    instances = found.len(), "the launch's instances were found without its list"
                );
                let current = found.into_iter().map(Ok).collect();
                self.decide_and_act(
                    ctx,
                    Trigger::Launch,
                    &account,
                    &ec2,
                    current,
                    Vec::new(),
                    deadline,
                )
                .await
            }
            Err(why) => {
                let event = ctx.event_id.clone().unwrap_or_else(|| "without id".into());
                let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
                report
                    .unreadable
                    .push(format!("launch event {event}: {} and {why}", lookup.why));
                let delivery = Outbox::new(self.cfg, self.clients)
                    .tell(&mut report, None)
                    .await;
                let notify_error = delivery.error().map(str::to_string);
                conclude(report, notify_error)
            }
        }
    }

    /// Decides each instance on what EC2 shows now (or why it could not be
    /// looked at), acts as the mode says, and reports.
    #[allow(clippy::too_many_arguments)]
    async fn decide_and_act(
        &self,
        ctx: EventContext,
        trigger: Trigger,
        account: &Account,
        ec2: &C::Ec2,
        current: Vec<Result<Observed, (String, String)>>,
        unreadable: Vec<String>,
        deadline: Instant,
    ) -> Result<Report, GuardError> {
        // The mode set for this account or its unit, when one is and an
        // instance here is not compliant (the mode decides nothing else).
        if self.cfg.has_overrides() && current.iter().any(|o| self.slot_at_stake(o)) {
            let own =
                crate::modes::for_event(self.cfg, self.clients, account.id(ctx.account.as_deref()))
                    .await;
            // Resolved (its own settings cleared): decided with as it is.
            return Box::pin(
                EventPath::new(&own, self.clients)
                    .decide_and_act(ctx, trigger, account, ec2, current, unreadable, deadline),
            )
            .await;
        }
        let place = self.place(&ctx, account).await;
        // A change or a state change names no launcher: the exemption the
        // instance's launch left in the guard's memory is what counts.
        let mut current = current;
        if trigger != Trigger::Launch {
            self.recall_exemptions(place.as_deref(), &mut current).await;
        }
        self.recall_break_glass(place.as_deref(), &mut current)
            .await;

        // Decide.
        let mut reports: Vec<InstanceReport> = Vec::with_capacity(current.len());
        let mut to_modify: Vec<(usize, Remedy)> = Vec::new();
        for o in current {
            let o = match o {
                Ok(o) => o,
                Err((id, why)) => {
                    reports.push(InstanceReport::failed(&id, why));
                    continue;
                }
            };
            let (report, remedy) = plan(self.cfg, &o, &ctx, trigger);
            if let Some(remedy) = remedy {
                to_modify.push((reports.len(), remedy));
            }
            reports.push(report);
        }
        // The circuit breaker: at most so many changes per event.
        let (to_modify, tripped) = crate::breaker::admit(
            self.cfg.max_changes_per_event,
            &format!("MAX_CHANGES_PER_EVENT={}", self.cfg.max_changes_per_event),
            &mut reports,
            to_modify,
        );
        self.record_exemptions(&ctx, trigger, place.as_deref(), &mut reports)
            .await;
        let claimed = self
            .claim_news(&ctx, trigger, place.as_deref(), &mut reports)
            .await;

        // Act.
        Pacer::new(Pacing::EVENT)
            .remediate(ec2, &mut reports, to_modify, deadline)
            .await;
        write_tags(ec2, &self.cfg.status_tag_key, self.cfg.mode, &mut reports).await;
        if self.cfg.check_metadata_no_token {
            if let (Some(memory), Some(place)) = (self.clients.memory(), place.as_deref()) {
                remember_remediated(&memory, place, &reports, self.cfg.no_token_lookback).await;
            }
        }

        // Report.
        for r in &reports {
            log_decision(&ctx, self.cfg.mode, r);
        }
        for item in &unreadable {
            error!(%item, "event item could not be read");
        }
        let security_hub = self.file_findings(account, &ctx, trigger, &reports).await;
        let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
        report.fallback = self.cfg.fallback_units.clone();
        report.instances = reports;
        report.unreadable = unreadable;
        report.security_hub = security_hub;
        report.breaker = tripped;
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, place.as_deref())
            .await;
        let notify_error = delivery.error().map(str::to_string);
        if delivery.published() {
            self.mark_told(claimed).await;
        }
        conclude(report, notify_error)
    }

    /// The Security Hub findings these decisions make, filed from the
    /// instances' own account (`None`: the setting is off, or they make
    /// none: no call at all).
    async fn file_findings(
        &self,
        account: &Account,
        ctx: &EventContext,
        trigger: Trigger,
        reports: &[InstanceReport],
    ) -> Option<FindingsReport> {
        if !self.cfg.security_hub_findings
            || !reports
                .iter()
                .any(|r| finding::desired(r, trigger).is_some())
        {
            return None;
        }
        let id = match account.id(ctx.account.as_deref()) {
            Some(id) => id.to_string(),
            None => match self.clients.home_account().await {
                Ok(id) => id,
                Err(e) => {
                    return Some(FindingsReport {
                        errors: vec![format!(
                            "the account to file findings in could not be named: {e}"
                        )],
                        ..FindingsReport::default()
                    })
                }
            },
        };
        let place = finding::Place {
            account: &id,
            region: &ctx.region,
            now: now_secs(),
            stamp_ms: crate::clock::stamp_ms(),
        };
        // The event function carries no Security Hub client: it hands them
        // to the outputs function.
        let Some(api) = crate::outbox::filer(self.clients, account, &ctx.region) else {
            return Some(FindingsReport {
                errors: vec!["SECURITY_HUB_FINDINGS is set, but this function carries no Security Hub client and no OUTPUTS_QUEUE_URL to hand its findings to".into()],
                ..FindingsReport::default()
            });
        };
        let memory = self.clients.memory();
        findings::for_event(self.cfg, &api, memory.as_ref(), &place, trigger, reports).await
    }

    /// The exemptions the guard recorded when these instances were launched
    /// (only with principal exemptions configured, which honour them). An
    /// instance whose record cannot be read is not decided blind: it fails.
    async fn recall_exemptions(
        &self,
        place: Option<&str>,
        current: &mut [Result<Observed, (String, String)>],
    ) {
        if !self.cfg.reads_exemption_records() {
            return;
        }
        let (Some(memory), Some(place)) = (self.clients.memory(), place) else {
            return;
        };
        let now = now_secs();
        for slot in current.iter_mut() {
            let Ok(o) = slot else { continue };
            let prefix = format!("{}{}", Kind::Exempt.prefix(), o.instance_id);
            match memory.query(place, &prefix, now).await {
                Ok(records) => {
                    let record = records.iter().find(|r| r.id() == o.instance_id);
                    o.recorded_exemption = record.and_then(|r| r.data.get(memory::GLOB).cloned());
                    o.recorded_unconfirmed = record.is_some_and(crate::confirm::is_unconfirmed);
                }
                Err(e) => {
                    *slot = Err((
                        o.instance_id.clone(),
                        format!("whether its launch was exempt could not be read from the guard's memory: {e}"),
                    ));
                }
            }
        }
    }

    /// Whether an instance is one the guard may act on or tell of (not
    /// compliant, not gone): only then does anything more need reading.
    fn at_stake(&self, o: &Observed) -> bool {
        let nobody = crate::event::Principal::default();
        !matches!(
            crate::policy::Policy::of(self.cfg).decide(o, &nobody),
            crate::policy::Verdict::Compliant | crate::policy::Verdict::Gone { .. }
        )
    }

    fn slot_at_stake(&self, slot: &Result<Observed, (String, String)>) -> bool {
        slot.as_ref().is_ok_and(|o| self.at_stake(o))
    }

    /// The break-glass grants in force for the instances that are not
    /// compliant (one read of the account-region's grants; none when every
    /// instance is compliant, so a compliant launch still costs no call).
    /// An instance whose grants cannot be read is not decided blind: it
    /// fails, and the event is retried.
    async fn recall_break_glass(
        &self,
        place: Option<&str>,
        current: &mut [Result<Observed, (String, String)>],
    ) {
        let (Some(memory), Some(place)) = (self.clients.memory(), place) else {
            return;
        };
        if !current.iter().any(|slot| self.slot_at_stake(slot)) {
            return;
        }
        let now = now_secs();
        let grants_place = crate::break_glass::place_of(place);
        match memory
            .query(&grants_place, Kind::BreakGlass.prefix(), now)
            .await
        {
            Ok(records) => {
                let grants = crate::break_glass::grants(&records);
                for o in current.iter_mut().flatten() {
                    o.break_glass = crate::break_glass::in_force(&grants, o, now).cloned();
                }
            }
            Err(e) => {
                for slot in current.iter_mut() {
                    if let Ok(o) = slot {
                        if self.at_stake(o) {
                            *slot = Err((
                                o.instance_id.clone(),
                                format!("whether a break-glass grant covers it could not be read from the guard's memory: {e}"),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// A launch by an exempt principal is recorded in the guard's memory,
    /// where only the guard writes, so a later sweep or change honours it:
    /// unconfirmed, until the exemption check finds CloudTrail's own record
    /// of the launch (`confirm`). If it cannot be, the instance is left as
    /// it is now but fails, so the event is retried: a sweep that does not
    /// know would change it.
    async fn record_exemptions(
        &self,
        ctx: &EventContext,
        trigger: Trigger,
        place: Option<&str>,
        reports: &mut [InstanceReport],
    ) {
        let Some(place) = place else {
            return;
        };
        let Some((account, region)) = place.split_once('#') else {
            return;
        };
        let now = now_secs();
        let waiting = exemption_records(
            trigger,
            (account, region),
            ctx.event_id.as_deref(),
            reports,
            now,
        );
        let Some(memory) = self.clients.memory() else {
            return;
        };
        // Each waits for CloudTrail from the first event that claimed it: an
        // entry another event wrote, or this one's once recorded (marked
        // told with it), is left as it is; only a retry of this event after
        // a failed write writes it again.
        let mut failed = Vec::new();
        let mut fresh = Vec::new();
        for w in waiting {
            match memory.claim(&w.entry(), now).await {
                Ok(Claim::Ours) => fresh.push(w),
                Ok(Claim::Taken) => {}
                Err(e) => failed.push((w.instance_id, e.to_string())),
            }
        }
        if !fresh.is_empty() {
            let records: Vec<Record> = fresh
                .iter()
                .flat_map(|w| [w.exemption(), w.entry().told()])
                .collect();
            if let Err(e) = memory.put(&records).await {
                failed.extend(fresh.into_iter().map(|w| (w.instance_id, e.to_string())));
            }
        }
        for (id, e) in failed {
            if let Some(r) = reports.iter_mut().find(|r| r.instance_id == id) {
                r.error = Some(format!(
                    "exempt, but the exemption could not be recorded in the guard's memory (a sweep would not know it): {e}"
                ));
            }
        }
    }

    /// Marks what this event claimed as told, once it has been: a
    /// redelivery of this event is then quiet too.
    async fn mark_told(&self, claimed: Vec<Record>) {
        let Some(memory) = self.clients.memory() else {
            return;
        };
        if claimed.is_empty() {
            return;
        }
        let told: Vec<Record> = claimed.into_iter().map(Record::told).collect();
        if let Err(e) = memory.put(&told).await {
            warn!(error = %e, "what was told could not be marked so; a redelivery of this event may tell again");
        }
    }

    /// The memory partition of the event's account and region, when the
    /// guard has a memory (the function's own account is asked of STS if
    /// the event does not name it).
    async fn place(&self, ctx: &EventContext, account: &Account) -> Option<String> {
        self.clients.memory()?;
        let id = match account.id(ctx.account.as_deref()) {
            Some(id) => id.to_string(),
            None => match self.clients.home_account().await {
                Ok(id) => id,
                Err(e) => {
                    warn!(error = %e, "the function's own account could not be named; the memory is not used for this event");
                    return None;
                }
            },
        };
        Some(memory::place(&id, &ctx.region))
    }

    /// News of a launch that another event may tell as well (the other
    /// trigger, a redelivery) is claimed in the guard's memory first; what
    /// another event claimed is not told (nor tagged) again. Without a
    /// memory, or when it cannot be reached, every event tells: a person
    /// may hear twice, never not at all.
    async fn claim_news(
        &self,
        ctx: &EventContext,
        trigger: Trigger,
        place: Option<&str>,
        reports: &mut [InstanceReport],
    ) -> Vec<Record> {
        let mut claimed = Vec::new();
        let (Some(memory), Some(place)) = (self.clients.memory(), place) else {
            return claimed;
        };
        let now = now_secs();
        for r in reports.iter_mut().filter(|r| needs_claim(trigger, r)) {
            let record = Record::new(
                Kind::Noticed,
                place,
                &r.instance_id,
                ctx.event_id.as_deref(),
                now,
                self.cfg.no_token_lookback,
            );
            match memory.claim(&record, now).await {
                Ok(Claim::Ours) => claimed.push(record),
                Ok(Claim::Taken) => {
                    r.notify = false;
                    r.action = Idle::AlreadyTold.into();
                }
                Err(e) => {
                    warn!(instance_id = %r.instance_id, error = %e, "the memory could not be asked whether this launch was told of; telling anyway");
                }
            }
        }
        claimed
    }

    /// Someone changed the account's IMDS defaults: say so when it weakens
    /// them, and, in enforce mode with `SET_ACCOUNT_DEFAULT`, put
    /// `HttpTokens=required` back. `HttpTokensEnforced` is never touched.
    /// A change whose request cannot be read, in an account whose defaults
    /// cannot be read either, fails the invocation: it may have weakened
    /// them, and no one would know.
    pub async fn defaults_changed(
        &self,
        ctx: EventContext,
        change: DefaultsChange,
    ) -> Result<Report, GuardError> {
        if let Some(why) = self.cfg.refusal(ctx.account.as_deref()) {
            return self.refuse(ctx, &[], Vec::new(), why).await;
        }
        if self.cfg.has_overrides() {
            // The mode set for this account or its unit decides whether the
            // default is put back.
            let own = crate::modes::for_event(self.cfg, self.clients, ctx.account.as_deref()).await;
            return Box::pin(EventPath::new(&own, self.clients).defaults_changed(ctx, change))
                .await;
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
                let delivery = Outbox::new(self.cfg, self.clients)
                    .tell(&mut report, None)
                    .await;
                let notify_error = delivery.error().map(str::to_string);
                return conclude(report, notify_error);
            }
        };
        let (current, unread) = match ec2.metadata_defaults().await {
            Ok(d) => (Some(d), None),
            Err(e) => {
                warn!(error = %e, region = %ctx.region, "account IMDS defaults could not be read");
                (None, Some(e))
            }
        };
        let judged = judge_defaults_change(self.cfg, &change, current.as_ref());
        let (action, mut error) = apply_default(
            &ec2,
            judged.restore,
            DefaultsAction::SetBack,
            DefaultsAction::None,
            None,
        )
        .await;
        if judged.unjudged {
            error = Some(format!(
                "the change's request could not be read, nor the account's current defaults ({}): whether it weakened them is unknown",
                unread.map_or_else(|| "no answer".to_string(), |e| e.to_string())
            ));
        }
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
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, None)
            .await;
        let notify_error = delivery.error().map(str::to_string);
        conclude(report, notify_error)
    }

    /// The event's account is not one this function may act in: nothing is
    /// looked at or written there. Each instance the event names is
    /// reported `refused`, and a person is told; the invocation succeeds,
    /// since a retry would be refused the same way.
    async fn refuse(
        &self,
        ctx: EventContext,
        ids: &[String],
        unreadable: Vec<String>,
        why: String,
    ) -> Result<Report, GuardError> {
        warn!(
            account = ctx.account.as_deref().unwrap_or(""), region = %ctx.region,
            event_name = %ctx.event_name, event_id = ctx.event_id.as_deref().unwrap_or(""),
            "event refused: {why}"
        );
        let mut report = Report::handled(Status::Refused, self.cfg.mode, ctx);
        report.instances = ids
            .iter()
            .map(|id| {
                let mut r = InstanceReport::new(id, Outcome::Refused, Idle::NotAllowed);
                r.notify = true;
                r
            })
            .collect();
        report.unreadable = unreadable;
        report.reason = Some(why);
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, None)
            .await;
        let notify_error = delivery.error().map(str::to_string);
        conclude(report, notify_error)
    }
}

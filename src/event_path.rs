//! The event path: one event (a launch, a change of an instance's metadata
//! options, a change of the account's defaults, an instance starting)
//! through decide → act → report: its instances through the one pipeline
//! (`pipeline`, with this path's strategy, `EventSteps`), then one report.
//!
//! Invariant: every instance an event names ends in exactly one outcome, or
//! the invocation fails and names it (so the asynchronous retry and the
//! failure destination keep the event). Writes are idempotent, so a repeated
//! delivery changes nothing twice, and the guard's memory keeps a second
//! event about the same launch from telling a person twice.

use std::collections::HashMap;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::account_region::{claim_each, read_each, AccountRegion};
use crate::aws::{Clients, Ec2Api, MemoryApi};
use crate::breaker::Tripped;
use crate::clock::now_secs;
use crate::config::Config;
use crate::error::{conclude, GuardError};
use crate::event::{DefaultsChange, EventContext, Lookup, Observed, Trigger};
use crate::finding::{self, FindingsReport};
use crate::findings;
use crate::memory::{self, Claim, Kind, Record};
use crate::outbox::Outbox;
use crate::pipeline::{self, Pace, Slot, Steps};
use crate::plan::{exemption_records, judge_defaults_change, needs_claim};
use crate::policy::{Policy, Remedy, Verdict};
use crate::remedies::{apply_default, look, look_launch, Pacer, Pacing, Unseen};
use crate::report::{DefaultsAction, DefaultsReport, Idle, InstanceReport, Named, Report, Status};
use crate::telemetry::log_decision;

/// One event's handling, with the configuration and clients it acts with.
pub struct EventPath<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
    /// A delayed first-boot decision's facts (`first_boot_flow::Facts`).
    first_boot: crate::first_boot_flow::Facts,
}

impl<'a, C: Clients> EventPath<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        EventPath {
            cfg,
            clients,
            first_boot: Default::default(),
        }
    }

    /// A delayed first-boot decision, with what the first-boot function
    /// read for it.
    pub fn with_first_boot(self, first_boot: crate::first_boot_flow::Facts) -> Self {
        EventPath { first_boot, ..self }
    }

    /// Tells the report's news and makes it the invocation's result.
    async fn finish(
        &self,
        mut report: Report,
        partition: Option<&str>,
    ) -> Result<Report, GuardError> {
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, partition)
            .await;
        conclude(report, delivery.error().map(str::to_string))
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
        let state = ctx.state.as_deref();
        let within = crate::event::act_within(trigger, state, self.cfg.retry_budget);
        let deadline = Instant::now() + within;
        let ids: Vec<String> = from_event.iter().map(|o| o.instance_id.clone()).collect();
        let named = Named::Instances {
            ids: &ids,
            unreadable: &unreadable,
        };
        let here = match AccountRegion::enter_for(self.cfg, self.clients, &ctx, named).await {
            Ok(here) => here,
            Err(closed) => return self.finish(closed, None).await,
        };

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
            look(here.ec2(), &to_look, deadline, within).await
        };
        let awaits = crate::event::awaits_running(trigger, state);
        let current = from_event
            .into_iter()
            .map(|launched| {
                let id = &launched.instance_id;
                match failures.get(id) {
                    // A pending instance EC2 does not show yet: its running
                    // notification decides. A failed call fails, named.
                    Some(Unseen::NotShown(_)) if awaits => Err(Box::new(
                        InstanceReport::awaiting_running(id, "not shown yet while pending".into()),
                    )),
                    // Waited for, and gone meanwhile (terminated and no
                    // longer listed): nothing left to decide.
                    Some(Unseen::NotShown(_)) if trigger == Trigger::FirstBoot => {
                        Err(Box::new(InstanceReport::new(
                            id,
                            crate::report::Outcome::Gone,
                            Idle::Gone("no longer shown by EC2".into()),
                        )))
                    }
                    Some(why) => Err(Box::new(InstanceReport::failed(id, why.why()))),
                    None => Ok(seen.remove(id).unwrap_or(launched)),
                }
            })
            .collect();
        self.decide_and_act(ctx, trigger, &here, current, unreadable, deadline)
            .await
    }

    /// A launch whose event does not list its instances (CloudTrail cut the
    /// response): they are found by the launch's reservation id or client
    /// token, and handled like any launch's; if they cannot be found in the
    /// retry budget, the invocation fails, naming the event and why.
    pub async fn unlisted(&self, ctx: EventContext, lookup: Lookup) -> Result<Report, GuardError> {
        let deadline = Instant::now() + self.cfg.retry_budget;
        let named = Named::Instances {
            ids: &[],
            unreadable: &[],
        };
        let here = match AccountRegion::enter_for(self.cfg, self.clients, &ctx, named).await {
            Ok(here) => here,
            Err(closed) => return self.finish(closed, None).await,
        };
        match look_launch(here.ec2(), &lookup, deadline, self.cfg.retry_budget).await {
            Ok(found) => {
                info!(
                    event_id = ctx.event_id.as_deref().unwrap_or(""), why = %lookup.why,
                    instances = found.len(), "the launch's instances were found without its list"
                );
                let current = found.into_iter().map(Ok).collect();
                self.decide_and_act(ctx, Trigger::Launch, &here, current, Vec::new(), deadline)
                    .await
            }
            Err(why) => {
                let event = ctx.event_id.clone().unwrap_or_else(|| "without id".into());
                let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
                report
                    .unreadable
                    .push(format!("launch event {event}: {} and {why}", lookup.why));
                self.finish(report, None).await
            }
        }
    }

    /// Decides each instance on what EC2 shows now (or why it could not be
    /// looked at), acts as the mode says, and reports.
    async fn decide_and_act(
        &self,
        ctx: EventContext,
        trigger: Trigger,
        here: &AccountRegion<'a, C>,
        current: Vec<Slot>,
        unreadable: Vec<String>,
        deadline: Instant,
    ) -> Result<Report, GuardError> {
        // The mode set for this account or its unit, when one is and an
        // instance here is not compliant (the mode decides nothing else):
        // resolved once, by the account-region.
        if self.cfg.has_overrides() && current.iter().any(|o| self.slot_at_stake(o)) {
            let own = here.config().await;
            return EventPath::new(own, self.clients)
                .with_first_boot(self.first_boot.clone())
                .act(ctx, trigger, here, current, unreadable, deadline)
                .await;
        }
        self.act(ctx, trigger, here, current, unreadable, deadline)
            .await
    }

    /// `decide_and_act` in the configuration this account runs under: the
    /// instances through the one pipeline (`pipeline`), then one report and
    /// one notification.
    async fn act(
        &self,
        ctx: EventContext,
        trigger: Trigger,
        here: &AccountRegion<'_, C>,
        current: Vec<Slot>,
        unreadable: Vec<String>,
        deadline: Instant,
    ) -> Result<Report, GuardError> {
        let partition = here.partition().await;
        let memory = self.clients.memory();
        let mut steps = EventSteps {
            path: self,
            here,
            ctx: &ctx,
            trigger,
            partition: partition.clone(),
            pacer: Pacer::new(
                match crate::event::awaits_running(trigger, ctx.state.as_deref()) {
                    true => Pacing::PENDING,
                    false => Pacing::EVENT,
                },
            ),
            deadline,
            tripped: None,
            claimed: Vec::new(),
            again: Vec::new(),
            security_hub: None,
            reports: Vec::new(),
        };
        pipeline::run(
            self.cfg,
            here.ec2(),
            memory.as_ref(),
            &ctx,
            trigger,
            current,
            &mut steps,
        )
        .await;
        let EventSteps {
            tripped,
            claimed,
            security_hub,
            reports,
            ..
        } = steps;

        // Report.
        for item in &unreadable {
            error!(%item, "event item could not be read");
        }
        let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx);
        report.fallback = self.cfg.fallback_units.clone();
        report.instances = reports;
        report.unreadable = unreadable;
        report.security_hub = security_hub;
        report.breaker = tripped;
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, partition.as_deref())
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
        here: &AccountRegion<'_, C>,
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
        let id = match here.account().await {
            Ok(id) => id.to_string(),
            Err(e) => {
                return Some(FindingsReport {
                    errors: vec![format!(
                        "the account to file findings in could not be named: {e}"
                    )],
                    ..FindingsReport::default()
                })
            }
        };
        let place = finding::Place {
            account: &id,
            region: &ctx.region,
            now: now_secs(),
            stamp_ms: crate::clock::stamp_ms(),
        };
        // The event function carries no Security Hub client: it hands them
        // to the outputs function.
        let Some(api) = crate::outbox::filer(self.clients, &here.who, &ctx.region) else {
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
    async fn recall_exemptions(&self, partition: Option<&str>, current: &mut [Slot]) {
        if !self.cfg.reads_exemption_records() {
            return;
        }
        let (Some(memory), Some(partition)) = (self.clients.memory(), partition) else {
            return;
        };
        let ids: Vec<String> = current
            .iter()
            .flatten()
            .map(|o| o.instance_id.clone())
            .collect();
        let mut read = read_each(&memory, partition, Kind::Exempt, &ids, now_secs())
            .await
            .into_iter();
        for slot in current.iter_mut() {
            let Ok(o) = slot else { continue };
            match read.next() {
                Some(Ok(record)) => {
                    o.standing.exemption = record
                        .as_ref()
                        .and_then(|r| r.data.get(memory::GLOB).cloned());
                    o.standing.unconfirmed =
                        record.as_ref().is_some_and(crate::confirm::is_unconfirmed);
                }
                Some(Err(e)) => {
                    *slot = Err(Box::new(InstanceReport::failed(
                        &o.instance_id,
                        format!("whether its launch was exempt could not be read from the guard's memory: {e}"),
                    )));
                }
                None => {}
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

    fn slot_at_stake(&self, slot: &Slot) -> bool {
        slot.as_ref().is_ok_and(|o| self.at_stake(o))
    }

    /// The break-glass grants in force for the instances that are not
    /// compliant (one read of the account-region's grants; none when every
    /// instance is compliant, so a compliant launch still costs no call).
    /// An instance whose grants cannot be read is not decided blind: it
    /// fails, and the event is retried.
    async fn recall_break_glass(
        &self,
        here: &AccountRegion<'_, C>,
        partition: Option<&str>,
        current: &mut [Slot],
    ) {
        let (Some(_), Some(partition)) = (self.clients.memory(), partition) else {
            return;
        };
        if !current.iter().any(|slot| self.slot_at_stake(slot)) {
            return;
        }
        let now = now_secs();
        match here.grants(partition, now).await {
            Ok(records) => {
                let grants = crate::break_glass::grants(records);
                for o in current.iter_mut().flatten() {
                    o.standing.grant = crate::policy::grant_in_force(&grants, o, now).cloned();
                }
            }
            Err(e) => {
                for slot in current.iter_mut() {
                    if let Ok(o) = slot {
                        if self.at_stake(o) {
                            *slot = Err(Box::new(InstanceReport::failed(
                                &o.instance_id,
                                format!("whether a break-glass grant covers it could not be read from the guard's memory: {e}"),
                            )));
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
        partition: Option<&str>,
        reports: &mut [InstanceReport],
    ) {
        let Some(partition) = partition else {
            return;
        };
        let Some((account, region)) = partition.split_once('#') else {
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
        let entries: Vec<Record> = waiting.iter().map(|w| w.entry()).collect();
        let claims = claim_each(&memory, &entries, now).await;
        for (w, claim) in waiting.into_iter().zip(claims) {
            match claim {
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

    /// News of a launch that another event may tell as well (the other
    /// trigger, a redelivery) is claimed in the guard's memory first; what
    /// another event claimed is not told (nor tagged) again. Without a
    /// memory, or when it cannot be reached, every event tells: a person
    /// may hear twice, never not at all.
    async fn claim_news(
        &self,
        ctx: &EventContext,
        trigger: Trigger,
        partition: Option<&str>,
        reports: &mut [InstanceReport],
    ) -> Vec<Record> {
        let mut claimed = Vec::new();
        let (Some(memory), Some(partition)) = (self.clients.memory(), partition) else {
            return claimed;
        };
        let now = now_secs();
        let mut to_claim: Vec<&mut InstanceReport> = reports
            .iter_mut()
            .filter(|r| needs_claim(trigger, r))
            .collect();
        let records: Vec<Record> = to_claim
            .iter()
            .map(|r| {
                Record::new(
                    Kind::Noticed,
                    partition,
                    &r.instance_id,
                    ctx.event_id.as_deref(),
                    now,
                    self.cfg.no_token_lookback,
                )
            })
            .collect();
        let claims = claim_each(&memory, &records, now).await;
        for ((r, record), claim) in to_claim.iter_mut().zip(records).zip(claims) {
            match claim {
                Ok(Claim::Ours) => claimed.push(record),
                Ok(Claim::Taken) if crate::first_boot::is_waiting(r) => {
                    // Told of already, but its wait is not lost: queued
                    // again (a second delayed decision finds it switched).
                    r.notify = false;
                }
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
        let named = Named::Defaults(&change);
        let here = match AccountRegion::enter_for(self.cfg, self.clients, &ctx, named).await {
            Ok(here) => here,
            Err(closed) => return self.finish(closed, None).await,
        };
        // The mode set for this account or its unit decides whether the
        // default is put back.
        let cfg = here.config().await;
        EventPath::new(cfg, self.clients)
            .defaults_changed_in(&here, ctx, change)
            .await
    }

    async fn defaults_changed_in(
        &self,
        here: &AccountRegion<'_, C>,
        ctx: EventContext,
        change: DefaultsChange,
    ) -> Result<Report, GuardError> {
        let ec2 = here.ec2();
        let (current, unread) = match ec2.metadata_defaults().await {
            Ok(d) => (Some(d), None),
            Err(e) => {
                warn!(error = %e, region = %ctx.region, "account IMDS defaults could not be read");
                (None, Some(e))
            }
        };
        let judged = judge_defaults_change(self.cfg, &change, current.as_ref());
        let (action, mut error) = apply_default(
            ec2,
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
        self.finish(report, None).await
    }
}

/// The event path's strategy for the one pipeline (`pipeline::Steps`): the
/// instances of one event, in the account-region it entered.
struct EventSteps<'p, 'a, 'h, C: Clients> {
    path: &'p EventPath<'a, C>,
    here: &'p AccountRegion<'h, C>,
    ctx: &'p EventContext,
    trigger: Trigger,
    partition: Option<String>,
    pacer: Pacer,
    deadline: Instant,
    /// What the circuit breaker held.
    tripped: Option<Tripped>,
    /// The news this event claimed: marked told once it is.
    claimed: Vec<Record>,
    /// Delayed first-boot decisions that found no `MetadataNoToken` data
    /// yet and wait again.
    again: Vec<String>,
    security_hub: Option<FindingsReport>,
    /// Every instance's report, in the event's order.
    reports: Vec<InstanceReport>,
}

impl<C: Clients> Steps for EventSteps<'_, '_, '_, C> {
    /// A change or a state change names no launcher: the exemption the
    /// instance's launch left in the guard's memory is what counts. The
    /// grants are read for the instances at stake.
    async fn recall(&mut self, slots: &mut [Slot]) {
        let partition = self.partition.as_deref();
        if self.trigger != Trigger::Launch {
            self.path.recall_exemptions(partition, slots).await;
        }
        self.path
            .recall_break_glass(self.here, partition, slots)
            .await;
    }

    fn decided(&mut self, _: &Observed, _: &InstanceReport) -> bool {
        true
    }

    /// An event's instance is new: nothing shows it used IMDSv1 yet. Once
    /// its first boot was waited for, `MetadataNoToken` may (with
    /// `CHECK_METADATA_NO_TOKEN`).
    async fn hold_back(&mut self, reports: &mut [InstanceReport], remedies: &mut [Option<Remedy>]) {
        if self.trigger != Trigger::FirstBoot {
            return;
        }
        let (cfg, facts) = (self.path.cfg, &self.path.first_boot);
        self.again = crate::first_boot_flow::hold_back(cfg, facts, reports, remedies);
    }

    /// At most so many changes per event.
    async fn admit(
        &mut self,
        reports: &mut [InstanceReport],
        todo: Vec<(usize, Remedy)>,
    ) -> Vec<(usize, Remedy)> {
        let cfg = self.path.cfg;
        let (todo, tripped) = crate::breaker::admit(
            cfg.max_changes_per_event,
            &format!("MAX_CHANGES_PER_EVENT={}", cfg.max_changes_per_event),
            reports,
            todo,
        );
        self.tripped = tripped;
        todo
    }

    /// An exempt launch is recorded before anything else is done, and news
    /// another event may tell as well is claimed.
    async fn dedup(&mut self, reports: &mut [InstanceReport]) {
        let partition = self.partition.as_deref();
        self.path
            .record_exemptions(self.ctx, self.trigger, partition, reports)
            .await;
        self.claimed = self
            .path
            .claim_news(self.ctx, self.trigger, partition, reports)
            .await;
    }

    /// Each instance whose first boot is waited for is queued to come back
    /// when its grace ends (one another event already told of was queued
    /// by that event).
    async fn wait(&mut self, reports: &mut [InstanceReport]) {
        if !reports.iter().any(crate::first_boot::is_waiting) {
            return;
        }
        let account = match self.here.account().await {
            Ok(account) => account.to_string(),
            Err(e) => {
                for r in reports
                    .iter_mut()
                    .filter(|r| crate::first_boot::is_waiting(r))
                {
                    r.mark_failed(format!("waits for its first boot, but its account could not be named to queue it: {e}"));
                }
                return;
            }
        };
        let origin = crate::first_boot_flow::Origin {
            account: &account,
            region: &self.ctx.region,
            event_id: self.ctx.event_id.as_deref(),
            rechecks: self.path.first_boot.rechecks,
        };
        crate::first_boot_flow::enqueue(self.path.clients, &origin, reports, &self.again).await;
    }

    async fn pace(&mut self, _remember: bool) -> Pace<'_> {
        Pace {
            pacer: &mut self.pacer,
            deadline: self.deadline,
            partition: self.partition.clone(),
        }
    }

    async fn file(&mut self, reports: &[InstanceReport]) {
        self.security_hub = self
            .path
            .file_findings(self.here, self.ctx, self.trigger, reports)
            .await;
    }

    fn record(&mut self, report: InstanceReport) {
        log_decision(self.ctx, self.path.cfg.mode, &report);
        self.reports.push(report);
    }
}

//! One page of a sweep's listing through the one pipeline (`pipeline`):
//! the sweep's strategy for each step.

use super::*;
use crate::pipeline::{self, Pace, Slot, Steps};

impl<'a, C: Clients> Sweep<'a, C> {
    /// Decides one page, acts on it and records the outcomes.
    pub(super) async fn page(
        &self,
        ec2: &impl Ec2Api,
        instances: Vec<Observed>,
        out: &mut RegionResult,
        max_listed: usize,
        pacer: &mut Pacer,
        stop_at: Option<Instant>,
    ) {
        let ctx = EventContext {
            event_name: crate::event::SWEEP.into(),
            region: out.summary.region.clone(),
            ..EventContext::default()
        };
        let memory = self.clients.memory();
        let mut steps = PageSteps {
            sweep: self,
            ec2,
            out,
            ctx: &ctx,
            max_listed,
            pacer,
            stop_at,
        };
        let slots = instances.into_iter().map(Ok).collect();
        pipeline::run(
            self.cfg,
            ec2,
            memory.as_ref(),
            &ctx,
            Trigger::Sweep,
            slots,
            &mut steps,
        )
        .await;
    }
}

/// The sweep's strategy for one page of one account-region.
struct PageSteps<'p, 'a, C, E> {
    sweep: &'p Sweep<'a, C>,
    ec2: &'p E,
    out: &'p mut RegionResult,
    ctx: &'p EventContext,
    max_listed: usize,
    /// One pace for the whole region: what EC2 throttled on one page slows
    /// the next.
    pacer: &'p mut Pacer,
    stop_at: Option<Instant>,
}

impl<C: Clients, E: Ec2Api> Steps for PageSteps<'_, '_, C, E> {
    /// The region's exemptions and grants, read once. Deciding without the
    /// records would change instances their owners exempted: if they
    /// cannot be read, this page's noncompliant instances fail.
    async fn recall(&mut self, slots: &mut [Slot]) {
        let Err(e) = self.sweep.recall_exemptions(self.out, slots).await else {
            return;
        };
        for slot in slots.iter_mut() {
            let Ok(o) = slot else { continue };
            let (mut report, _) = plan(self.sweep.cfg, o, self.ctx, Trigger::Sweep);
            if matches!(report.outcome, Outcome::Compliant | Outcome::Gone) {
                continue;
            }
            report.mark_failed(format!(
                "whether it was exempt at launch could not be read from the guard's memory: {e}"
            ));
            *slot = Err(Box::new(report));
        }
    }

    /// Compliant and gone instances are only counted; a noncompliant one
    /// counts toward its source and, with a legacy exempt tag, a warning.
    fn decided(&mut self, o: &Observed, report: &InstanceReport) -> bool {
        let out = &mut *self.out;
        if matches!(report.outcome, Outcome::Compliant | Outcome::Gone) {
            *out.summary.counts.entry(report.outcome).or_insert(0) += 1;
            self.sweep.seen(out, report);
            return false;
        }
        if report.exemption.as_ref().is_some_and(|e| e.is_managed()) {
            out.summary.managed += 1;
        }
        if report.exemption.is_none()
            && o.tag(&self.sweep.cfg.status_tag_key) == Some(crate::policy::EXEMPT_STATUS)
        {
            out.legacy += 1;
        }
        if let Some(source) = o.tags.as_deref().and_then(attribution) {
            *out.attributed.entry(source).or_insert(0) += 1;
        }
        if self.sweep.cfg.lookup_imdsv1_callers {
            let c = super::callers::Candidate::of(self.sweep.cfg, o);
            out.candidates.insert(o.instance_id.clone(), c);
        }
        true
    }

    async fn hold_back(&mut self, reports: &mut [InstanceReport], remedies: &mut [Option<Remedy>]) {
        // (Nothing to read, and no call made, when neither the check nor a
        // version-gated launcher asks: `hold_back_v1_users` sees no id.)
        let out = &mut *self.out;
        let region = out.summary.region.clone();
        let held = self
            .sweep
            .hold_back_v1_users(&out.who, &region, reports, remedies, &mut out.summary)
            .await;
        self.sweep
            .hold_back_ceiling(out, held, reports, remedies)
            .await;
    }

    async fn admit(
        &mut self,
        reports: &mut [InstanceReport],
        todo: Vec<(usize, Remedy)>,
    ) -> Vec<(usize, Remedy)> {
        self.sweep.admit(self.ec2, self.out, reports, todo).await
    }

    async fn dedup(&mut self, reports: &mut [InstanceReport]) {
        self.sweep.skip_told(self.out, reports).await;
    }

    /// An instance within its first boot's grace that the sweep finds (its
    /// launch's events may have been missed) is queued to come back as its
    /// launch's would have been: a second decision, if the event queued it
    /// too, finds it switched.
    async fn wait(&mut self, reports: &mut [InstanceReport]) {
        if !reports.iter().any(crate::first_boot::is_waiting) {
            return;
        }
        let out = &*self.out;
        let Some(partition) = self.sweep.partition(out).await else {
            for r in reports
                .iter_mut()
                .filter(|r| crate::first_boot::is_waiting(r))
            {
                r.mark_failed(
                    "waits for its first boot, but its account could not be named to queue it"
                        .into(),
                );
            }
            return;
        };
        let account = partition.split('#').next().unwrap_or_default().to_string();
        let origin = crate::first_boot_flow::Origin {
            account: &account,
            region: &out.summary.region,
            event_id: None,
            rechecks: 0,
        };
        crate::first_boot_flow::enqueue(self.sweep.clients, &origin, reports, &[]).await;
    }

    /// What is switched and watched afterwards (`remedies::remembers`) is
    /// remembered in the account-region's partition (named only then).
    async fn pace(&mut self, remember: bool) -> Pace<'_> {
        let budget_end = Instant::now() + self.sweep.cfg.retry_budget;
        let partition = match remember {
            true => self.sweep.partition(self.out).await,
            false => None,
        };
        Pace {
            pacer: &mut *self.pacer,
            deadline: self.stop_at.map_or(budget_end, |s| s.min(budget_end)),
            partition,
        }
    }

    async fn file(&mut self, reports: &[InstanceReport]) {
        let out = &mut *self.out;
        out.changed |= reports.iter().any(|r| r.action.wrote());
        if let (Some(f), Some(api)) = (
            out.findings.as_mut(),
            filer(self.sweep.clients, &out.who, &out.summary.region),
        ) {
            let memory = self.sweep.clients.memory();
            f.page(&api, memory.as_ref(), self.sweep.cfg, reports, now_secs())
                .await;
        }
    }

    /// Logged and counted; listed when it is news, within the report's cap
    /// (a failure always).
    fn record(&mut self, mut r: InstanceReport) {
        let cfg = self.sweep.cfg;
        let out = &mut *self.out;
        if let Some(since) = out.since {
            let had_grant = out.granted.contains(&r.instance_id);
            // A first boot waited for is decided after its grace and its
            // rechecks: no missed event before.
            let grace = match cfg.first_boot_grace.as_secs() {
                0 => cfg.events_grace.as_secs(),
                fb => cfg.events_grace.as_secs().max(
                    fb + u64::from(crate::first_boot::RECHECKS) * crate::first_boot::RECHECK_SECS
                        + 1800,
                ),
            };
            if crate::watch::missed(&r, since, now_secs(), grace, had_grant) {
                out.summary.missed_events += 1;
            }
        }
        log_decision(self.ctx, cfg.mode, &r);
        if let Some(c) = out.candidates.remove(&r.instance_id) {
            if super::callers::left_optional(&r) {
                out.last_mile.push(c);
            }
        }
        if crate::first_boot::is_waiting(&r) {
            out.summary.first_boot_waiting += 1;
        }
        self.sweep.seen(out, &r);
        *out.summary.counts.entry(r.outcome).or_insert(0) += 1;
        if !r.is_news() {
            return;
        }
        if out.listed.len() < self.max_listed || r.outcome == Outcome::Failed || r.error.is_some() {
            r.region = Some(out.summary.region.clone());
            r.account.clone_from(&out.summary.account);
            out.listed.push(r);
        } else {
            out.omitted += 1;
        }
    }
}

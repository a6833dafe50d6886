//! The one pipeline a batch of instances goes through, the same for the
//! instances one event names and for a page of a sweep:
//!
//! recall → decide → hold back → admit → first boot → dedup → wait → act →
//! file → record
//!
//! The pipeline fixes the order and does the steps that are the same for
//! both (deciding with `plan::plan`, acting with `remedies::carry_out`); what
//! really differs is a strategy, `Steps`, as `remedies::Pacing` is one level
//! down:
//!
//! | step | event path (`event_path`) | sweep page (`sweep/page.rs`) |
//! |---|---|---|
//! | recall | exemptions per instance (not for a launch), the grants once | exemptions and grants once per region |
//! | decide | every instance goes on | compliant and gone ones are only counted |
//! | hold back | nothing (`plan` holds a version-gated launcher's) | IMDSv1 users (`CHECK_METADATA_NO_TOKEN`), version-gated launchers' instances, their ceiling |
//! | admit | `MAX_CHANGES_PER_EVENT` | the region's share and the run's ceiling |
//! | first boot | the same (`first_boot_flow::defer`): a change to an instance launched within `FIRST_BOOT_GRACE_SECONDS` from an AMI not declaring `ImdsSupport: v2.0` waits | the same |
//! | dedup | exemptions recorded, the news claimed | what was told before is skipped |
//! | wait | each waiting instance queued to come back when its grace ends | the same (its launch's events may have been missed) |
//! | act | `Pacing::EVENT`, the retry budget (a `pending` notification: `Pacing::PENDING`, one try; `running`: at most 10 s) | `Pacing::SWEEP`, the page's deadline |
//! | file | findings of the event | the region's findings, page by page |
//! | record | logged, kept for the event's report | logged, counted, listed within the caps |
//!
//! An instance that could not be looked at, or whose standing cannot be
//! read, is never decided blind: it arrives, or the strategy's recall turns
//! it, into its failed report. That report keeps its place in the batch;
//! the steps between leave a failed report alone (nothing to hold back,
//! admit, dedup or change), and the file step does not see it: no finding
//! is made, or settled, on what little is known of it.

use std::borrow::Cow;

use tokio::time::Instant;

use crate::aws::{Ec2Api, MemoryApi};
use crate::config::Config;
use crate::event::{EventContext, Observed, Trigger};
use crate::plan::plan;
use crate::policy::Remedy;
use crate::remedies::{carry_out, Pacer};
use crate::report::InstanceReport;

/// One instance of a batch: as EC2 or the event shows it, or already its
/// failed report (it could not be looked at, or its standing read).
pub type Slot = Result<Observed, Box<InstanceReport>>;

/// How the act runs: its pace, its deadline, and the memory partition where
/// switched instances are remembered (with `CHECK_METADATA_NO_TOKEN`).
pub struct Pace<'p> {
    pub pacer: &'p mut Pacer,
    pub deadline: Instant,
    pub partition: Option<String>,
}

/// What differs between the event path and a sweep page, step by step.
pub(crate) trait Steps {
    /// What the guard's memory says of these instances (their `Standing`).
    /// One whose standing cannot be read becomes its failed report.
    async fn recall(&mut self, slots: &mut [Slot]);
    /// A decided instance: whether it goes on through the pipeline (false:
    /// the strategy has counted it, and it is done).
    fn decided(&mut self, o: &Observed, report: &InstanceReport) -> bool;
    /// Changes withheld for the workload's sake; `remedies` is parallel to
    /// `reports`.
    async fn hold_back(&mut self, reports: &mut [InstanceReport], remedies: &mut [Option<Remedy>]);
    /// The circuit breaker: of `todo`, what may be changed.
    async fn admit(
        &mut self,
        reports: &mut [InstanceReport],
        todo: Vec<(usize, Remedy)>,
    ) -> Vec<(usize, Remedy)>;
    /// News told before is not told again, and what must be in the memory
    /// before anything is changed is written.
    async fn dedup(&mut self, reports: &mut [InstanceReport]);
    /// The instances whose first boot is waited for (`first_boot`), after
    /// dedup: each brought back when its grace ends, or only counted.
    async fn wait(&mut self, _reports: &mut [InstanceReport]) {}
    /// How the act runs; `remember`: whether an admitted change is to be
    /// remembered (`remedies::remembers`: a partition is only needed then).
    async fn pace(&mut self, remember: bool) -> Pace<'_>;
    /// After the act: the findings these reports make.
    async fn file(&mut self, reports: &[InstanceReport]);
    /// Each report, in the batch's order, at the end.
    fn record(&mut self, report: InstanceReport);
}

/// Runs a batch through the pipeline.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<S: Steps, M: MemoryApi>(
    cfg: &Config,
    ec2: &impl Ec2Api,
    memory: Option<&M>,
    ctx: &EventContext,
    trigger: Trigger,
    slots: Vec<Slot>,
    steps: &mut S,
) {
    let mut slots = slots;
    steps.recall(&mut slots).await;

    // Decide. What could not be read keeps its place, failed.
    let mut reports = Vec::with_capacity(slots.len());
    let mut remedies = Vec::with_capacity(slots.len());
    let mut undecided = Vec::new();
    for slot in slots {
        match slot {
            Ok(o) => {
                let (report, remedy) = plan(cfg, &o, ctx, trigger);
                if steps.decided(&o, &report) {
                    reports.push(report);
                    remedies.push(remedy);
                }
            }
            Err(failed) => {
                undecided.push(reports.len());
                reports.push(*failed);
                remedies.push(None);
            }
        }
    }

    steps.hold_back(&mut reports, &mut remedies).await;
    let todo: Vec<(usize, Remedy)> = remedies
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r?)))
        .collect();
    // The breaker counts a change that waits for a first boot against the
    // event that launched it: admitted first, then deferred.
    let todo = steps.admit(&mut reports, todo).await;
    let todo = crate::first_boot_flow::defer(cfg, ec2, trigger, &mut reports, todo).await;
    steps.dedup(&mut reports).await;
    steps.wait(&mut reports).await;

    // Act.
    let remember = todo
        .iter()
        .any(|(i, _)| crate::remedies::remembers(cfg, &reports[*i]));
    let pace = steps.pace(remember).await;
    carry_out(
        cfg,
        ec2,
        pace.pacer,
        &mut reports,
        todo,
        pace.deadline,
        memory.zip(pace.partition.as_deref()),
    )
    .await;

    // File what was decided: an instance that could not be decided makes
    // no finding (nor settles one) on what little is known of it.
    let decided: Cow<'_, [InstanceReport]> = if undecided.is_empty() {
        Cow::Borrowed(&reports)
    } else {
        Cow::Owned(
            reports
                .iter()
                .enumerate()
                .filter(|(i, _)| !undecided.contains(i))
                .map(|(_, r)| r.clone())
                .collect(),
        )
    };
    steps.file(&decided).await;
    drop(decided);

    for r in reports {
        steps.record(r);
    }
}

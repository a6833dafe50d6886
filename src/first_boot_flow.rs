//! First boot, carried out (what waits and why is the domain's
//! `first_boot`). With `FIRST_BOOT_GRACE_SECONDS`, a change to an instance
//! launched within the grace from an AMI that does not declare
//! `ImdsSupport: v2.0` waits (`defer`, a step of the one pipeline); the
//! event that decided it puts it in the first-boot queue in a delayed
//! message (`enqueue`), so no function runs while it waits; and the
//! first-boot function (`first_boot_function`) decides it afresh through
//! the event path when the message comes back (`Trigger::FirstBoot`),
//! reading first, with `CHECK_METADATA_NO_TOKEN`, whether its first boot
//! used IMDSv1 (`hold_back`).

use std::collections::{BTreeSet, HashMap};

use tracing::{info, warn};

use crate::aws::{Clients, Ec2Api, QueueApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::event::Trigger;
use crate::first_boot::{
    after_grace, delay, is_waiting, mark_waiting, waits_until, why_waiting, AfterGrace, Delayed,
    KIND,
};
use crate::policy::Remedy;
use crate::report::InstanceReport;

/// Of `todo`, the changes that wait for their instance's first boot: each
/// marked waiting (`Idle::FirstBoot`) and taken out; the rest go on. Only
/// an instance launched within the grace costs a call: one
/// `DescribeImages` for their AMIs. An AMI EC2 does not show (deregistered,
/// not shared) or that cannot be read counts as not declaring v2.0: the
/// wait is the safe side, and the finding says why.
pub(crate) async fn defer(
    cfg: &Config,
    ec2: &impl Ec2Api,
    trigger: Trigger,
    reports: &mut [InstanceReport],
    todo: Vec<(usize, Remedy)>,
) -> Vec<(usize, Remedy)> {
    let grace = cfg.first_boot_grace.as_secs();
    let now = now_secs();
    // A decision that comes back with no launch time has nothing to count
    // from: decided now, rather than waited for again and again.
    let within = |r: &InstanceReport| {
        (trigger != Trigger::FirstBoot || r.launch_time.is_some())
            && waits_until(grace, false, r.launch_time, now).is_some()
    };
    if grace == 0 || !todo.iter().any(|(i, _)| within(&reports[*i])) {
        return todo;
    }
    let images: BTreeSet<String> = todo
        .iter()
        .filter(|(i, _)| within(&reports[*i]))
        .filter_map(|(i, _)| reports[*i].image_id.clone())
        .collect();
    let images: Vec<String> = images.into_iter().collect();
    let (declared, unread): (HashMap<String, bool>, Option<String>) = if images.is_empty() {
        (HashMap::new(), None)
    } else {
        match ec2.images(&images).await {
            Ok(shown) => (shown.into_iter().collect(), None),
            Err(e) => {
                warn!(error = %e, "the AMIs of instances within FIRST_BOOT_GRACE_SECONDS could not be read; each waits");
                (HashMap::new(), Some(e.to_string()))
            }
        }
    };
    let mut go_on = Vec::with_capacity(todo.len());
    for (i, remedy) in todo {
        let r = &mut reports[i];
        let declares_v2 = r
            .image_id
            .as_ref()
            .is_some_and(|id| declared.get(id) == Some(&true));
        let until = within(r)
            .then(|| waits_until(grace, declares_v2, r.launch_time, now))
            .flatten();
        match until {
            Some(until) => {
                let why = why_waiting(r.image_id.as_deref(), grace, unread.as_deref());
                mark_waiting(r, until, why);
                // Its launch told of the wait; a longer one going on is
                // not news again.
                if trigger == Trigger::FirstBoot {
                    r.notify = false;
                }
            }
            None => go_on.push((i, remedy)),
        }
    }
    go_on
}

/// Where and from which event the waiting instances of one decision come
/// back, and how many times they already came back to no data.
pub(crate) struct Origin<'o> {
    pub account: &'o str,
    pub region: &'o str,
    pub event_id: Option<&'o str>,
    pub rechecks: u32,
}

/// Each waiting instance put in the first-boot queue, delayed until its
/// grace ends (at most SQS's 900 s a time; a longer wait comes back and is
/// delayed again). `again`: the instances waiting again for
/// `MetadataNoToken` data, whose count goes up. One that cannot be queued
/// fails, named, so the event is delivered again: it would otherwise be
/// left to the sweep.
pub(crate) async fn enqueue<C: Clients>(
    clients: &C,
    origin: &Origin<'_>,
    reports: &mut [InstanceReport],
    again: &[String],
) {
    let now = now_secs();
    let queue = clients.first_boot_queue();
    for r in reports.iter_mut().filter(|r| is_waiting(r)) {
        let crate::report::Idle::FirstBoot { until } = r.action.idle else {
            continue;
        };
        let message = Delayed {
            instance: r.instance_id.clone(),
            account: origin.account.to_string(),
            region: origin.region.to_string(),
            event_id: origin.event_id.map(str::to_string),
            rechecks: origin.rechecks + u32::from(again.contains(&r.instance_id)),
        };
        let seconds = delay(until, now);
        let sent = match &queue {
            Some(q) => q.delay(&message.body(), KIND, seconds).await,
            None => {
                r.mark_failed("waits for its first boot, but this function has no FIRST_BOOT_QUEUE_URL to wait in".into());
                continue;
            }
        };
        match sent {
            Ok(()) => {
                info!(instance_id = %r.instance_id, delay_seconds = seconds, until, "waits for its first boot")
            }
            Err(e) => r.mark_failed(format!(
                "waits for its first boot, but could not be queued to come back when its grace ends: {e}"
            )),
        }
    }
}

/// What a delayed first-boot decision brings to the event path: how many
/// times it came back to no `MetadataNoToken` data, and, with
/// `CHECK_METADATA_NO_TOKEN`, the readings the first-boot function took
/// (the sweep binary's CloudWatch client: the event bootstrap carries none).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub rechecks: u32,
    /// IMDSv1 calls each instance answered over the lookback (absent: no
    /// data), or why they could not be read.
    pub calls: Option<Result<HashMap<String, f64>, String>>,
}

/// With `CHECK_METADATA_NO_TOKEN`, a delayed decision holds back an
/// instance whose first boot used IMDSv1 (`first_boot::after_grace`), on
/// the readings in `facts`. An instance still within its grace (a wait
/// longer than one delay) is left to wait on. Returns the instances that
/// found no data yet and wait again; one whose data could not be read
/// fails, so its message comes back.
pub(crate) fn hold_back(
    cfg: &Config,
    facts: &Facts,
    reports: &mut [InstanceReport],
    remedies: &mut [Option<Remedy>],
) -> Vec<String> {
    let mut again = Vec::new();
    if !cfg.check_metadata_no_token {
        return again;
    }
    let now = now_secs();
    let hours = cfg.no_token_lookback.as_secs() / 3600;
    for (r, remedy) in reports.iter_mut().zip(remedies.iter_mut()) {
        if !awaits_reading(cfg, r, remedy, now) {
            continue;
        }
        match &facts.calls {
            None => {
                *remedy = None;
                r.mark_failed("whether its first boot used IMDSv1 was not read (MetadataNoToken), so it is not switched blind".into());
            }
            Some(Err(e)) => {
                *remedy = None;
                r.mark_failed(format!(
                    "whether its first boot used IMDSv1 could not be read (MetadataNoToken), so it is not switched blind: {e}"
                ));
            }
            Some(Ok(calls)) => {
                let n = calls.get(&r.instance_id).copied();
                let lookback = (hours, cfg.no_token_missing_as_zero);
                if after_grace(r, remedy, n, facts.rechecks, lookback, now)
                    == AfterGrace::AgainNoData
                {
                    again.push(r.instance_id.clone());
                }
            }
        }
    }
    again
}

/// Whether a delayed decision's change waits on `MetadataNoToken`: it is
/// still to be made, and the instance's grace has passed.
fn awaits_reading(cfg: &Config, r: &InstanceReport, remedy: &Option<Remedy>, now: u64) -> bool {
    let grace = cfg.first_boot_grace.as_secs();
    remedy.is_some()
        && (r.launch_time.is_none() || waits_until(grace, false, r.launch_time, now).is_none())
}

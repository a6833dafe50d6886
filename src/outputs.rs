//! What leaves the function: the decision logs, the one notification per
//! event or sweep, and the invocation's result (the report, or an error that
//! names what could not be handled). Shared by the event path and the sweep.

use std::collections::BTreeMap;

use tracing::{error, info, warn};

use crate::aws::{Clients, EventsApi, Keeper, MemoryApi, Publisher};
use crate::config::{Config, Mode};
use crate::event::{EventContext, EventError};
use crate::memory::{Kind, Record};
use crate::notify::{self, Notification};
use crate::plan::failure_summary;
use crate::report::{InstanceReport, Outcome, Report, Routed};
use crate::routing;
use crate::validate::sns_topic_region;

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
    /// A fan-out step could not finish (a shard not recorded, shards not
    /// swept to the end): the engine retries it, or the run fails.
    #[error("{summary}")]
    Incomplete { summary: String },
}

/// Publishes one message for the report when it holds news; first, any
/// message an earlier delivery of the same event could not publish (kept in
/// the guard's memory at `place`). A message that cannot be published is
/// kept: in the failed-events queue for a person, and in the memory for the
/// event's retry, which publishes it once. Records what happened in the
/// report; returns the error if publishing failed (the invocation fails and
/// is retried). Then puts the same news on the bus, when one is configured.
pub async fn tell<C: Clients>(
    cfg: &Config,
    clients: &C,
    report: &mut Report,
    place: Option<&str>,
) -> Option<String> {
    let failed = publish(cfg, clients, report, place).await;
    report.routed = route(cfg, clients, report).await;
    failed
}

/// Puts the report's news on the bus (`EVENT_BUS_NAME`), the same news the
/// notification tells, one event per thing (`routing`); `None` when there
/// is no bus or nothing to put (no call).
async fn route<C: Clients>(cfg: &Config, clients: &C, report: &Report) -> Option<Routed> {
    let bus = cfg.event_bus.as_ref()?;
    let body = (report.sweep.is_some() && report.status == crate::report::Status::Swept)
        .then(|| notify::build(report).body);
    let events = routing::events(report, body.as_deref());
    if events.is_empty() {
        return None;
    }
    let ctx = report.event.clone().unwrap_or_default();
    deliver(clients, bus, ctx.account, &ctx.region, &events).await
}

/// Puts `events` on the bus named `bus`, or, in a binary that carries no
/// EventBridge client (the event function's and the sweep's), hands them to
/// the outputs function, which puts them. `account` and `region` name where
/// they come from (the function's own account when `None`).
pub async fn deliver<C: Clients>(
    clients: &C,
    bus: &str,
    account: Option<String>,
    region: &str,
    events: &[routing::Routed],
) -> Option<Routed> {
    if events.is_empty() {
        return None;
    }
    if clients.events().is_some() {
        return put_events(clients, events).await;
    }
    let mut out = Routed {
        bus: bus.to_string(),
        ..Routed::default()
    };
    let Some(queue) = clients.handoff() else {
        out.errors.push("EVENT_BUS_NAME is set, but this function carries no EventBridge client and no OUTPUTS_QUEUE_URL to hand its events to".into());
        return Some(out);
    };
    let account = match account {
        Some(a) => a,
        None => match clients.home_account().await {
            Ok(a) => a,
            Err(e) => {
                out.errors.push(format!(
                    "{} event(s) not handed off: the account could not be named ({e})",
                    events.len()
                ));
                return Some(out);
            }
        },
    };
    let h = crate::handoff::Handoff {
        events: events.to_vec(),
        ..crate::handoff::Handoff::new(&account, region)
    };
    match crate::handoff_flow::send(&queue, &h).await {
        Ok(()) => out.queued = h.events.len() as u64,
        Err(e) => out.errors.push(format!(
            "{} event(s) not handed to the outputs function: {e}",
            h.events.len()
        )),
    }
    Some(out)
}

/// Puts `events` on the bus, in calls of 10 (256 KB); `None` when there is
/// no bus or no event.
pub async fn put_events<C: Clients>(clients: &C, events: &[routing::Routed]) -> Option<Routed> {
    let bus = clients.events()?;
    if events.is_empty() {
        return None;
    }
    let mut out = Routed {
        bus: bus.bus().to_string(),
        ..Routed::default()
    };
    for batch in routing::batches(events) {
        match bus.put(batch).await {
            Ok(refused) => {
                out.events += (batch.len() - refused.len()) as u64;
                out.errors.extend(refused);
            }
            Err(e) => out
                .errors
                .push(format!("{} event(s) not put: {e}", batch.len())),
        }
    }
    Some(out)
}

/// Publishes the report's message (see `tell`).
async fn publish<C: Clients>(
    cfg: &Config,
    clients: &C,
    report: &mut Report,
    place: Option<&str>,
) -> Option<String> {
    let needed = notify::needed(report);
    let Some(topic) = &cfg.topic_arn else {
        report.notification = if needed {
            "no topic configured"
        } else {
            "not needed"
        }
        .into();
        return None;
    };
    // The topic lives in its own region, whatever the event's.
    let sns = clients.sns(sns_topic_region(topic).unwrap_or("us-east-1"));
    // Only an event with an id can find its earlier delivery's message.
    let kept_at = report
        .event
        .as_ref()
        .and_then(|e| e.event_id.clone())
        .zip(place)
        .zip(clients.memory());
    let mut failed = None;

    let mut earlier = String::new();
    // What the earlier delivery's message already says, and whether it
    // went out now: a retry whose own news it covers sends nothing more.
    let mut covered: Option<(std::collections::BTreeSet<String>, Option<String>)> = None;
    if let Some(((event_id, place), memory)) = &kept_at {
        let prefix = format!("{}{event_id}", Kind::Notice.prefix());
        match memory.query(place, &prefix, now_secs()).await {
            Ok(records) => {
                for rec in records
                    .into_iter()
                    .filter(|r| r.id() == event_id && !r.is_told())
                {
                    let Some(n) = Notification::from_data(&rec.data) else {
                        continue;
                    };
                    let said: std::collections::BTreeSet<String> = rec
                        .data
                        .get(NEWS)
                        .map(|n| n.split('\n').map(str::to_string).collect())
                        .unwrap_or_default();
                    match sns.publish(topic, &n, cfg.chat_notifications).await {
                        Ok(id) => {
                            earlier = format!("; an earlier delivery's message: sent {id}");
                            covered = Some((said, Some(id)));
                            if let Err(e) = memory.put(&[rec.told()]).await {
                                warn!(error = %e, "a kept message was published but could not be marked so; a redelivery may publish it again");
                            }
                        }
                        Err(e) => {
                            earlier = format!("; an earlier delivery's message failed again: {e}");
                            failed = Some(e.to_string());
                            covered = Some((said, None));
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "the memory could not be asked for a message an earlier delivery kept; if there is one, it is in the failed-events queue")
            }
        }
    }

    let covers = |(said, _): &(std::collections::BTreeSet<String>, Option<String>)| {
        needed && news(report).is_subset(said)
    };
    let now = if let Some((_, sent)) = covered.filter(covers) {
        // The kept message says all this delivery would: one message, not two.
        earlier.clear();
        match sent {
            Some(id) => format!("sent {id} (the message an earlier delivery kept, which says all this one would)"),
            None => format!(
                "failed: {}; the message an earlier delivery kept, which says all this one would, is kept still",
                failed.clone().unwrap_or_default()
            ),
        }
    } else if needed {
        let message = notify::build(report);
        match sns.publish(topic, &message, cfg.chat_notifications).await {
            Ok(id) => format!("sent {id}"),
            Err(e) => {
                let why = e.to_string();
                let kept = keep(
                    clients,
                    kept_at.as_ref().map(|((e, p), m)| (e.as_str(), *p, m)),
                    topic,
                    &message,
                    &news(report),
                    &why,
                )
                .await;
                failed = Some(why.clone());
                format!("failed: {why}; {kept}")
            }
        }
    } else {
        "not needed".to_string()
    };
    report.notification = now + &earlier;
    failed
}

/// Keeps a message that could not be published, so it is not lost: in the
/// guard's memory for the event's retry (when the event has an id), and in
/// the failed-events queue for a person. Says where.
async fn keep<C: Clients>(
    clients: &C,
    memory: Option<(&str, &str, &C::Memory)>,
    topic: &str,
    message: &Notification,
    said: &std::collections::BTreeSet<String>,
    why: &str,
) -> String {
    let mut kept = Vec::new();
    let mut retried = None;
    if let Some((event_id, place, memory)) = memory {
        let mut record = Record::notice(place, event_id, message, now_secs());
        record.data.insert(
            NEWS.into(),
            said.iter().cloned().collect::<Vec<_>>().join("\n"),
        );
        match memory.put(&[record]).await {
            Ok(()) => {
                kept.push("for the event's retry");
                retried = Some(event_id);
            }
            Err(e) => {
                warn!(error = %e, "a message that could not be published could not be kept for the event's retry either")
            }
        }
    }
    if let Some(queue) = clients.keeper() {
        match queue
            .keep(&message.kept(topic, why, retried), notify::KEPT_KIND)
            .await
        {
            Ok(()) => kept.push("in the failed-events queue"),
            Err(e) => {
                warn!(error = %e, "a message that could not be published could not be kept in the failed-events queue")
            }
        }
    }
    if kept.is_empty() {
        // The last place left: this log line carries the message whole.
        error!(subject = %message.subject, message = %message.body, "a message could not be published nor kept anywhere but here");
        return "kept only in the function's log".into();
    }
    format!("kept {}", kept.join(" and "))
}

/// The `data` key of a kept message: the news it carries, a line each.
const NEWS: &str = "news";

/// The news a report tells, each as one line: the instances and sources
/// worth telling of, by outcome, what could not be read, a weakened
/// default, a sweep's summary. A retry whose news a kept message already
/// carries sends nothing more.
fn news(report: &Report) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> = report
        .instances
        .iter()
        .filter(|i| i.notify)
        .map(|i| format!("instance {} {}", i.instance_id, i.outcome.as_str()))
        .collect();
    out.extend(
        report
            .sources
            .iter()
            .filter(|s| s.notify)
            .map(|s| format!("source {} {:?}", s.id, s.outcome)),
    );
    out.extend(report.unreadable.iter().map(|u| format!("unreadable {u}")));
    if let Some(d) = &report.account_defaults {
        out.insert(format!("defaults {}", d.weakenings.join("; ")));
    }
    if report.sweep.is_some() {
        out.insert("sweep".into());
    }
    out
}

/// The invocation's result: the report, or an error that names every
/// instance (and the notification) that could not be handled.
pub fn conclude(report: Report, notify_error: Option<String>) -> Result<Report, GuardError> {
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

/// The report's metrics, as Embedded Metric Format lines on stdout, where
/// Lambda's log turns them into CloudWatch metrics (no call, no latency).
/// The command line turns metrics off: its stdout is the user's.
pub fn emit_metrics(cfg: &Config, report: &Report) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for doc in crate::metrics::documents(cfg, report, now_ms) {
        println!("{doc}");
    }
}

/// One log line per decision, with what was done and why.
pub fn log_decision(ctx: &EventContext, mode: Mode, r: &InstanceReport) {
    let findings = r.findings.join(", ");
    let action = r.action.to_string();
    let exemption = r
        .exemption
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let account = ctx.account.as_deref().unwrap_or("");
    let event_id = ctx.event_id.as_deref().unwrap_or("");
    if r.outcome == Outcome::Failed || r.error.is_some() {
        warn!(
            instance_id = %r.instance_id, outcome = r.outcome.as_str(), %action,
            error = r.error.as_deref().unwrap_or(""), %findings, mode = mode.as_str(),
            region = %ctx.region, %account, %event_id, "decision"
        );
    } else {
        info!(
            instance_id = %r.instance_id, outcome = r.outcome.as_str(), %action,
            %findings, %exemption, mode = mode.as_str(),
            region = %ctx.region, %account, %event_id, "decision"
        );
    }
}

/// Seconds since the epoch, by this machine's clock.
/// Milliseconds since the epoch, strictly increasing within this process:
/// a finding's `UpdatedAt`. Security Hub ignores an update not newer than
/// the one it holds, so two decisions this process makes about one
/// instance, even within one millisecond, must not share a time. (Across
/// processes, decisions are stamped where they are made, never where they
/// are filed: the outputs queue does not keep order, and an older decision
/// filed later must lose.)
pub fn stamp_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Requests sent between two readings of the call counter, by operation.
pub fn calls_since(
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

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_never_repeat_even_within_one_millisecond() {
        // Thousands of stamps take a few milliseconds: a clock read as is
        // would repeat itself.
        let stamps: Vec<u64> = (0..10_000).map(|_| super::stamp_ms()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        let wall = super::now_secs() * 1000;
        assert!(stamps[0] + 5_000 >= wall, "{} against {wall}", stamps[0]);
    }
}

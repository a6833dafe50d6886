//! The one way news leaves a function: the notification (SNS, and a
//! message that cannot be published kept in the guard's memory for the
//! event's retry and in the failed-events queue for a person), the bus
//! (EventBridge, or the outputs queue in a binary without its client) and
//! the handoff of findings to the outputs function. Every flow tells
//! through an `Outbox` and gets a typed `Delivery` back (`delivery`): an
//! event, a sweep, the organization's summary, a break-glass grant, the
//! self-check. A new output (a webhook, say) is one more method here.

use std::collections::BTreeSet;

use tracing::{error, warn};

pub use crate::aws::handoff::{filer, hand_off, Filer, Queued};
use crate::aws::{Clients, EventsApi, MemoryApi, Publisher, QueueApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::delivery::{Delivery, Earlier, KeptIn, NotKept, Sent};
use crate::handoff::Handoff;
use crate::memory::{Kind, Record};
use crate::notify::{self, Notification};
use crate::report::{Report, Routed};
use crate::routing;
use crate::validate::sns_topic_region;

/// Where a message that cannot be published may be kept.
#[derive(Clone, Copy, Debug)]
pub enum Keep<'a> {
    /// In the memory at `partition` for a retry of the event `event_id` (which
    /// publishes it once), and in the failed-events queue.
    ForRetry {
        event_id: &'a str,
        partition: &'a str,
    },
    /// In the failed-events queue only: no retry would find it again.
    Queue,
    /// Nowhere: the command line reports the failure to its operator.
    CommandLine,
}

/// The configuration and clients news leaves with.
pub struct Outbox<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> Outbox<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        Outbox { cfg, clients }
    }

    /// Tells the report's news: one message when it holds news, first any
    /// message an earlier delivery of the same event kept (in the memory at
    /// `partition`), then the same news on the bus when one is configured.
    /// Records both in the report; the delivery's `error` fails the
    /// invocation (so the event is retried).
    pub async fn tell(&self, report: &mut Report, partition: Option<&str>) -> Delivery {
        let delivery = self.publish(report, partition).await;
        report.notification = delivery.to_string();
        report.routed = self.route_report(report).await;
        delivery
    }

    /// Sends one message that belongs to no event (the organization's
    /// summary, a break-glass grant, the self-check's alarm), keeping it as
    /// `keep` says if SNS refuses it.
    pub async fn send(&self, message: &Notification, chat: bool, keep: Keep<'_>) -> Delivery {
        let Some(topic) = &self.cfg.topic_arn else {
            return Delivery::new(Sent::NoTopic);
        };
        let sns = self
            .clients
            .sns(sns_topic_region(topic).unwrap_or("us-east-1"));
        match sns.publish(topic, message, chat).await {
            Ok(id) => Delivery::new(Sent::Published { id }),
            Err(e) => {
                let why = e.to_string();
                let sent = self
                    .keep(keep, topic, message, &BTreeSet::new(), &why)
                    .await;
                Delivery::new(sent)
            }
        }
    }

    /// Puts the report's news on the bus (`EVENT_BUS_NAME`), the same news
    /// the notification tells, one event per thing (`routing`); `None` when
    /// there is no bus or nothing to put (no call).
    async fn route_report(&self, report: &Report) -> Option<Routed> {
        let bus = self.cfg.event_bus.as_ref()?;
        let body = (report.sweep.is_some() && report.status == crate::report::Status::Swept)
            .then(|| notify::build(report).body);
        let events = routing::events(report, body.as_deref());
        if events.is_empty() {
            return None;
        }
        let ctx = report.event.clone().unwrap_or_default();
        self.route(bus, ctx.account, &ctx.region, &events).await
    }

    /// Puts `events` on the bus named `bus`, or, in a binary that carries
    /// no EventBridge client (the event function's and the sweep's), hands
    /// them to the outputs function, which puts them. `account` and
    /// `region` name where they come from (the function's own account when
    /// `None`).
    pub async fn route(
        &self,
        bus: &str,
        account: Option<String>,
        region: &str,
        events: &[routing::BusEvent],
    ) -> Option<Routed> {
        let clients = self.clients;
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
        let h = Handoff {
            events: events.to_vec(),
            ..Handoff::new(&account, region)
        };
        match hand_off(&queue, &h).await {
            Ok(()) => out.queued = h.events.len() as u64,
            Err(e) => out.errors.push(format!(
                "{} event(s) not handed to the outputs function: {e}",
                h.events.len()
            )),
        }
        Some(out)
    }

    /// Publishes the report's message (see `tell`).
    async fn publish(&self, report: &Report, partition: Option<&str>) -> Delivery {
        let (cfg, clients) = (self.cfg, self.clients);
        let needed = notify::needed(report);
        let Some(topic) = &cfg.topic_arn else {
            return Delivery::new(if needed {
                Sent::NoTopic
            } else {
                Sent::NotNeeded
            });
        };
        // The topic lives in its own region, whatever the event's.
        let sns = clients.sns(sns_topic_region(topic).unwrap_or("us-east-1"));
        // Only an event with an id can find its earlier delivery's message.
        let event_id = report.event.as_ref().and_then(|e| e.event_id.clone());
        let kept_at = event_id.as_deref().zip(partition);

        // What the earlier delivery's message already says, and whether it
        // went out now: a retry whose own news it covers sends nothing more.
        let mut earlier: Option<Earlier> = None;
        let mut covered: Option<(BTreeSet<String>, Option<String>)> = None;
        if let (Some((event_id, partition)), Some(memory)) = (kept_at, clients.memory()) {
            let prefix = format!("{}{event_id}", Kind::Notice.prefix());
            match memory.query(partition, &prefix, now_secs()).await {
                Ok(records) => {
                    for rec in records
                        .into_iter()
                        .filter(|r| r.id() == event_id && !r.is_told())
                    {
                        let Some(n) = Notification::from_data(&rec.data) else {
                            continue;
                        };
                        let said: BTreeSet<String> = rec
                            .data
                            .get(NEWS)
                            .map(|n| n.split('\n').map(str::to_string).collect())
                            .unwrap_or_default();
                        match sns.publish(topic, &n, cfg.chat_notifications).await {
                            Ok(id) => {
                                earlier = Some(Earlier::Published { id: id.clone() });
                                covered = Some((said, Some(id)));
                                if let Err(e) = memory.put(&[rec.told()]).await {
                                    warn!(error = %e, "a kept message was published but could not be marked so; a redelivery may publish it again");
                                }
                            }
                            Err(e) => {
                                earlier = Some(Earlier::FailedAgain { why: e.to_string() });
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

        let covers =
            |(said, _): &(BTreeSet<String>, Option<String>)| needed && news(report).is_subset(said);
        if let Some((_, sent)) = covered.filter(covers) {
            // The kept message says all this delivery would: one message, not two.
            let sent = match sent {
                Some(id) => Sent::Published { id },
                None => Sent::Failed {
                    why: match earlier {
                        Some(Earlier::FailedAgain { why }) => why,
                        _ => String::new(),
                    },
                    kept: Vec::new(),
                    not_kept: NotKept::LogOnly,
                    refused: Vec::new(),
                },
            };
            return Delivery {
                sent,
                earlier: Some(Earlier::Covers),
            };
        }
        let sent = if needed {
            let message = notify::build(report);
            match sns.publish(topic, &message, cfg.chat_notifications).await {
                Ok(id) => Sent::Published { id },
                Err(e) => {
                    let why = e.to_string();
                    let keep = match kept_at {
                        Some((event_id, partition)) => Keep::ForRetry {
                            event_id,
                            partition,
                        },
                        None => Keep::Queue,
                    };
                    self.keep(keep, topic, &message, &news(report), &why).await
                }
            }
        } else {
            Sent::NotNeeded
        };
        Delivery { sent, earlier }
    }

    /// Keeps a message that could not be published, so it is not lost: in
    /// the guard's memory for the event's retry (when the event has an id
    /// and the guard a memory), and in the failed-events queue for a
    /// person. Says where.
    async fn keep(
        &self,
        keep: Keep<'_>,
        topic: &str,
        message: &Notification,
        said: &BTreeSet<String>,
        why: &str,
    ) -> Sent {
        let failed = |kept: Vec<KeptIn>, not_kept, refused| Sent::Failed {
            why: why.to_string(),
            kept,
            not_kept,
            refused,
        };
        if let Keep::CommandLine = keep {
            return failed(Vec::new(), NotKept::CommandLine, Vec::new());
        }
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        let mut retried = None;
        if let (
            Keep::ForRetry {
                event_id,
                partition,
            },
            Some(memory),
        ) = (keep, self.clients.memory())
        {
            let mut record = Record::notice(partition, event_id, message, now_secs());
            record.data.insert(
                NEWS.into(),
                said.iter().cloned().collect::<Vec<_>>().join("\n"),
            );
            match memory.put(&[record]).await {
                Ok(()) => {
                    kept.push(KeptIn::EventRetry);
                    retried = Some(event_id);
                }
                Err(e) => {
                    warn!(error = %e, "a message that could not be published could not be kept for the event's retry either");
                    refused.push((KeptIn::EventRetry, e.to_string()));
                }
            }
        }
        if let Some(queue) = self.clients.failed_events_queue() {
            match queue
                .keep(&message.kept(topic, why, retried), notify::KEPT_KIND)
                .await
            {
                Ok(()) => kept.push(KeptIn::FailedEventsQueue),
                Err(e) => {
                    warn!(error = %e, "a message that could not be published could not be kept in the failed-events queue");
                    refused.push((KeptIn::FailedEventsQueue, e.to_string()));
                }
            }
        }
        if kept.is_empty() {
            // The last place left: this log line carries the message whole.
            error!(subject = %message.subject, message = %message.body, "a message could not be published nor kept anywhere but here");
        }
        failed(kept, NotKept::LogOnly, refused)
    }
}

/// Puts `events` on the bus, in calls of 10 (256 KB); `None` when there is
/// no bus or no event.
pub async fn put_events<C: Clients>(clients: &C, events: &[routing::BusEvent]) -> Option<Routed> {
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

//! The first-boot function (`FirstBootFunction`, the sweep binary): the
//! instances whose first boot the guard waited for (`first_boot_flow`),
//! brought back by their delayed messages and decided afresh through the
//! event path (`Trigger::FirstBoot`), the messages of one launch together.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{error, warn};

use crate::account_region::{AccountRegion, Closed};
use crate::aws::{Clients, MetricsApi};
use crate::config::Config;
use crate::event::{EventContext, Observed, Trigger};
use crate::event_path::EventPath;
use crate::first_boot::{Delayed, EVENT_NAME, KIND};

/// Whether a payload is a batch of the first-boot queue's messages: the
/// first-boot function's (it alone is given `FIRST_BOOT_SENDERS`), or any
/// SQS batch whose messages say they are first boots.
pub fn is_batch(cfg: &Config, payload: &Value) -> bool {
    let records = payload["Records"].as_array();
    let sqs = records
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:sqs");
    sqs && (!cfg.first_boot_senders.is_empty()
        || records
            .into_iter()
            .flatten()
            .any(|r| r["messageAttributes"]["kind"]["stringValue"] == KIND))
}

/// The first-boot function: each message's instance decided afresh, the
/// messages of one launch together (one report, one notification, the
/// breaker counting them as one event). A message not done is named in
/// `batchItemFailures`, so SQS delivers it again, and after its redrive
/// count keeps it in the dead-letter queue (alarmed). A message refused
/// (not sent by the guard's role, or not a delayed decision the guard
/// makes) is logged and done: delivering it again would refuse it again,
/// and it decides nothing. Near `deadline` (the function's timeout), the
/// groups not begun are left to SQS to deliver again, named.
pub async fn receive<C: Clients>(
    cfg: &Config,
    clients: &C,
    payload: &Value,
    deadline: Option<Instant>,
) -> Value {
    type Key = (String, String, Option<String>, u32);
    let mut groups: Vec<(Key, Vec<(String, String)>)> = Vec::new();
    for r in payload["Records"].as_array().into_iter().flatten() {
        let id = r["messageId"].as_str().unwrap_or("").to_string();
        let sender = r["attributes"]["SenderId"].as_str();
        let taken =
            crate::handoff::sender_in(sender, &cfg.first_boot_senders, "FIRST_BOOT_SENDERS")
                .and_then(|()| Delayed::parse(r["body"].as_str().unwrap_or("")));
        let d = match taken {
            Ok(d) => d,
            Err(why) => {
                warn!(message_id = %id, sender = sender.unwrap_or(""), %why, "a first-boot message is refused and dropped");
                continue;
            }
        };
        let key = (d.account, d.region, d.event_id, d.rechecks);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push((id, d.instance)),
            None => groups.push((key, vec![(id, d.instance)])),
        }
    }
    let mut failures = Vec::new();
    for ((account, region, event_id, rechecks), members) in groups {
        let ctx = EventContext {
            event_name: EVENT_NAME.into(),
            event_id,
            account: Some(account),
            region,
            ..EventContext::default()
        };
        let observed = members
            .iter()
            .map(|(_, instance)| Observed {
                instance_id: instance.clone(),
                ..Observed::default()
            })
            .collect();
        // A decision takes at most `RUNNING_RETRY` to look and one
        // notification: one not begun with less than a minute left is
        // delivered again rather than cut off.
        if deadline.is_some_and(|d| Instant::now() + Duration::from_secs(60) > d) {
            warn!(account = %ctx.account.as_deref().unwrap_or(""), "the function's time is nearly up: these delayed decisions are delivered again");
            failures.extend(members.iter().map(|(m, _)| json!({ "itemIdentifier": m })));
            continue;
        }
        let ids: Vec<String> = members.iter().map(|(_, i)| i.clone()).collect();
        let facts = crate::first_boot_flow::Facts {
            rechecks,
            calls: read_calls(cfg, clients, &ctx, &ids).await,
        };
        let path = EventPath::new(cfg, clients).with_first_boot(facts);
        let failed: Vec<&str> = match path
            .instances(ctx, Trigger::FirstBoot, observed, Vec::new())
            .await
        {
            Ok(_) => Vec::new(),
            Err(e) => {
                let named: Vec<&str> = match &e {
                    crate::error::GuardError::Unhandled { report, .. } => members
                        .iter()
                        .filter(|(_, i)| {
                            report.instances.iter().any(|r| {
                                r.instance_id == *i
                                    && (r.outcome == crate::report::Outcome::Failed
                                        || r.error.is_some())
                            })
                        })
                        .map(|(m, _)| m.as_str())
                        .collect(),
                    _ => Vec::new(),
                };
                error!(error = %e, "a delayed first-boot decision was not done; SQS delivers it again");
                // Nothing named (the notification failed, say): all again.
                if named.is_empty() {
                    members.iter().map(|(m, _)| m.as_str()).collect()
                } else {
                    named
                }
            }
        };
        failures.extend(failed.into_iter().map(|m| json!({ "itemIdentifier": m })));
    }
    json!({ "batchItemFailures": failures })
}

/// With `CHECK_METADATA_NO_TOKEN`: the IMDSv1 calls these instances
/// answered over the lookback, read here (the sweep binary carries
/// CloudWatch's client; the event bootstrap does not) and handed to the
/// event path as data. `None` without the check.
async fn read_calls<C: Clients>(
    cfg: &Config,
    clients: &C,
    ctx: &EventContext,
    ids: &[String],
) -> Option<Result<std::collections::HashMap<String, f64>, String>> {
    if !cfg.check_metadata_no_token {
        return None;
    }
    let here = match AccountRegion::enter(cfg, clients, ctx.account.as_deref(), &ctx.region).await {
        Ok(here) => here,
        // Refused: the event path refuses it too, and says so.
        Err(Closed::Refused(_)) => return Some(Ok(Default::default())),
        Err(Closed::Unreachable(e)) => return Some(Err(e.to_string())),
    };
    Some(
        clients
            .metrics(&here.who, &ctx.region)
            .no_token_calls(ids, cfg.no_token_lookback)
            .await
            .map_err(|e| e.to_string()),
    )
}

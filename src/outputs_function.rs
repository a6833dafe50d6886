//! The outputs function: files and puts what the event function and the
//! sweep handed off. Only its binary carries Security Hub's and
//! EventBridge's clients (each function's bootstrap budget,
//! docs/design.md): the others send the findings they would have filed and
//! the events they would have put to a queue (`OUTPUTS_QUEUE_URL`, through
//! `outbox`), and this function (an SQS event source with partial batch
//! failures) files, remembers and puts them. What the messages say, and
//! what this function takes of them, is the domain's (`handoff`); this
//! module carries them out, and keeps what it refuses in the dead-letter
//! queue with the reason.

use serde_json::{json, Value};
use tracing::{error, warn};

use crate::account_region::{AccountRegion, Closed};
use crate::aws::{Clients, QueueApi};
use crate::clock::{now_secs, stamp_ms};
use crate::config::Config;
use crate::finding::{Finding, FindingsReport, Place};
use crate::handoff::{Handoff, REFUSED_KIND};
use crate::outbox::put_events;

/// Whether a payload is a batch of SQS messages (the outputs function's).
pub fn is_batch(payload: &Value) -> bool {
    payload["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:sqs")
}

/// The outputs function: each message's findings filed (from the account
/// they name, the member role's in central mode, and remembered) and its
/// events put. A message not done is named in `batchItemFailures`, so SQS
/// delivers it again, and after its redrive count keeps it in the dead-letter
/// queue for a person; the others are done. A message refused (not sent by
/// the guard's role, or not a handoff the guard makes) is kept in the
/// dead-letter queue at once, with the reason, and is done: delivering it
/// again would refuse it again.
pub async fn receive<C: Clients>(cfg: &Config, clients: &C, payload: &Value) -> Value {
    let mut failures = Vec::new();
    for r in payload["Records"].as_array().into_iter().flatten() {
        let id = r["messageId"].as_str().unwrap_or("");
        let body = r["body"].as_str().unwrap_or("");
        let sender = r["attributes"]["SenderId"].as_str();
        let done = match take(cfg, sender, body) {
            Ok(h) => one(cfg, clients, h).await,
            Err(why) => refuse(clients, id, sender, &why, body).await,
        };
        if let Err(why) = done {
            error!(message_id = %id, %why, "a handoff was not done; SQS delivers it again");
            failures.push(json!({ "itemIdentifier": id }));
        }
    }
    json!({ "batchItemFailures": failures })
}

/// The handoff a message carries, if the outputs function takes it.
fn take(cfg: &Config, sender: Option<&str>, body: &str) -> Result<Handoff, String> {
    crate::handoff::sender_allowed(sender, &cfg.outputs_senders)?;
    Handoff::parse(body)
}

/// Keeps a refused message, with why, where a person reads it; an error
/// (and SQS's redelivery) when it cannot be kept.
async fn refuse<C: Clients>(
    clients: &C,
    id: &str,
    sender: Option<&str>,
    why: &str,
    body: &str,
) -> Result<(), String> {
    warn!(message_id = %id, sender = sender.unwrap_or(""), %why, "a handoff is refused and kept in the dead-letter queue");
    let Some(queue) = clients.refusals() else {
        return Err(format!(
            "refused ({why}), and there is no OUTPUTS_DEAD_LETTER_QUEUE_URL to keep it in"
        ));
    };
    let kept = crate::handoff::refusal(id, sender, why, body);
    queue
        .keep(&kept, REFUSED_KIND)
        .await
        .map_err(|e| format!("refused ({why}), and could not be kept: {e}"))
}

async fn one<C: Clients>(cfg: &Config, clients: &C, h: Handoff) -> Result<(), String> {
    if let Some(why) = cfg.refusal(Some(&h.account)) {
        // The event path refused it already; nothing is filed there.
        warn!(account = %h.account, %why, "a handoff for an account not allowed is dropped");
        return Ok(());
    }
    let findings = findings_of(&h);
    if !findings.is_empty() {
        let here = AccountRegion::enter(cfg, clients, Some(&h.account), &h.region)
            .await
            .map_err(|closed| match closed {
                Closed::Refused(why) => why,
                Closed::Unreachable(e) => e.to_string(),
            })?;
        let api = clients
            .findings(&here.who, &h.region)
            .ok_or("this function carries no Security Hub client")?;
        let memory = clients.memory();
        let partition = crate::memory::partition(&h.account, &h.region);
        let mut out = FindingsReport::default();
        crate::findings::file_and_remember(
            &api,
            memory.as_ref().map(|m| (m, partition.as_str())),
            &h.region,
            &findings,
            &mut out,
            now_secs(),
        )
        .await;
        for w in &out.warnings {
            warn!(warning = %w, "findings not filed");
        }
        if !out.errors.is_empty() {
            return Err(out.errors.join("; "));
        }
    }
    if !h.events.is_empty() {
        let routed = put_events(clients, &h.events)
            .await
            .ok_or("no bus is configured (EVENT_BUS_NAME)")?;
        if !routed.errors.is_empty() {
            return Err(routed.errors.join("; "));
        }
    }
    Ok(())
}

/// The findings a handoff files: rebuilt from its filings, now (a
/// previous-format message's as they came, checked by `Handoff::parse`).
fn findings_of(h: &Handoff) -> Vec<Finding> {
    let place = Place {
        account: &h.account,
        region: &h.region,
        now: now_secs(),
        stamp_ms: stamp_ms(),
    };
    let rebuilt = h
        .filings
        .iter()
        .filter_map(|f| crate::finding::rebuild(&place, f));
    h.findings.iter().cloned().chain(rebuilt).collect()
}

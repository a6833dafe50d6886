//! The event function's outputs, handed off: it carries neither Security
//! Hub's nor EventBridge's client (its 8 MB budget), so it sends the
//! findings and events it would have filed and put to a queue
//! (`OUTPUTS_QUEUE_URL`), and the outputs function (the sweep's binary, an
//! SQS event source with partial batch failures) files and puts them. What
//! the messages say is the domain's (`handoff`); this module carries them.

use serde_json::{json, Value};
use tracing::{error, warn};

use crate::aws::{Clients, Keeper};
use crate::config::Config;
use crate::finding::FindingsReport;
use crate::handoff::{Handoff, KIND};
use crate::outputs::{now_secs, put_events};

/// Sends `h` as messages to the outputs function's queue.
pub async fn send(queue: &impl Keeper, h: &Handoff) -> Result<(), String> {
    for m in h.messages() {
        queue.keep(&m, KIND).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

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
/// queue for a person; the others are done.
pub async fn receive<C: Clients>(cfg: &Config, clients: &C, payload: &Value) -> Value {
    let mut failures = Vec::new();
    for r in payload["Records"].as_array().into_iter().flatten() {
        let id = r["messageId"].as_str().unwrap_or("");
        if let Err(why) = one(cfg, clients, r["body"].as_str().unwrap_or("")).await {
            error!(message_id = %id, %why, "a handoff was not done; SQS delivers it again");
            failures.push(json!({ "itemIdentifier": id }));
        }
    }
    json!({ "batchItemFailures": failures })
}

async fn one<C: Clients>(cfg: &Config, clients: &C, body: &str) -> Result<(), String> {
    let h = Handoff::parse(body)?;
    if let Some(why) = cfg.refusal(Some(&h.account)) {
        // The event path refused it already; nothing is filed there.
        warn!(account = %h.account, %why, "a handoff for an account not allowed is dropped");
        return Ok(());
    }
    if !h.findings.is_empty() {
        let who = clients
            .enter(Some(&h.account), &h.region)
            .await
            .map_err(|e| e.to_string())?;
        let api = clients
            .findings(&who, &h.region)
            .ok_or("this function carries no Security Hub client")?;
        let memory = clients.memory();
        let place = crate::memory::place(&h.account, &h.region);
        let mut out = FindingsReport::default();
        crate::findings::file_and_remember(
            &api,
            memory.as_ref().map(|m| (m, place.as_str())),
            &h.region,
            &h.findings,
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

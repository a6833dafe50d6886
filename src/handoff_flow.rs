//! Outputs handed off. Only the outputs function's binary carries Security
//! Hub's and EventBridge's clients (each function's bootstrap budget,
//! docs/design.md): the event function and the sweep send the findings they
//! would have filed and the events they would have put to a queue
//! (`OUTPUTS_QUEUE_URL`), and the outputs function (an SQS event source
//! with partial batch failures) files, remembers and puts them. What the
//! messages say, and what the outputs function takes of them, is the
//! domain's (`handoff`); this module carries them, and keeps what it
//! refuses in the dead-letter queue with the reason.

use serde_json::{json, Value};
use tracing::{error, warn};

use crate::aws::{Account, AwsError, Clients, FindingsApi, Keeper};
use crate::config::Config;
use crate::finding::{Finding, FindingsReport, Place};
use crate::handoff::{Handoff, KIND, REFUSED_KIND};
use crate::outputs::{now_secs, put_events, stamp_ms};

/// Sends `h` as messages to the outputs function's queue.
pub async fn send(queue: &impl Keeper, h: &Handoff) -> Result<(), AwsError> {
    for m in h.messages() {
        queue.keep(&m, KIND).await?;
    }
    Ok(())
}

/// Findings handed to the outputs function instead of filed: Security Hub
/// as a binary without its client sees it. The outputs function files them
/// and remembers what Security Hub took (so the sender does not).
pub struct Queued<K>(pub K);

impl<K: Keeper> FindingsApi for Queued<K> {
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        // A call's findings are of one account and region (the callers file
        // per account-region), which each finding names.
        let Some(first) = findings.first() else {
            return Ok(Vec::new());
        };
        // Each crosses as what it was made from, which the outputs
        // function rebuilds (a finding built otherwise has no place here).
        let filings = findings
            .iter()
            .map(|f| f.filing.0.clone())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AwsError::Api {
                code: "NotHandedOff".into(),
                message: "a finding not built by the guard's own constructors cannot be handed off"
                    .into(),
            })?;
        let h = Handoff {
            filings,
            ..Handoff::new(&first.aws_account_id, &first.region)
        };
        send(&self.0, &h).await?;
        Ok(Vec::new())
    }
    fn hands_off(&self) -> bool {
        true
    }
}

/// Where findings go: Security Hub itself, or the outputs queue.
pub enum Filer<F, K> {
    Direct(F),
    Queued(Queued<K>),
}

impl<F: FindingsApi, K: Keeper> FindingsApi for Filer<F, K> {
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        match self {
            Filer::Direct(api) => api.import(findings).await,
            Filer::Queued(q) => q.import(findings).await,
        }
    }
    fn hands_off(&self) -> bool {
        matches!(self, Filer::Queued(_))
    }
}

/// How this binary files findings in `account` and `region`: with its own
/// Security Hub client, or through the outputs queue; `None` with neither.
pub fn filer<C: Clients>(
    clients: &C,
    account: &Account,
    region: &str,
) -> Option<Filer<C::Findings, C::Keeper>> {
    match clients.findings(account, region) {
        Some(api) => Some(Filer::Direct(api)),
        None => clients.handoff().map(|q| Filer::Queued(Queued(q))),
    }
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

//! What leaves the function: the decision logs, the one notification per
//! event or sweep, and the invocation's result (the report, or an error that
//! names what could not be handled). Shared by the event path and the sweep.

use std::collections::BTreeMap;

use tracing::{error, info, warn};

use crate::aws::{Clients, Publisher};
use crate::config::{Config, Mode};
use crate::event::{EventContext, EventError};
use crate::notify;
use crate::plan::failure_summary;
use crate::report::{InstanceReport, Outcome, Report};
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
}

/// Publishes one message for the report when it holds news. Records what
/// happened in the report; returns the error if publishing failed.
pub async fn tell<C: Clients>(cfg: &Config, clients: &C, report: &mut Report) -> Option<String> {
    let mut failed = None;
    report.notification = match (&cfg.topic_arn, notify::needed(report)) {
        (_, false) => "not needed".into(),
        (None, true) => "no topic configured".into(),
        (Some(topic), true) => {
            // The topic lives in its own region, whatever the event's.
            let region = sns_topic_region(topic).unwrap_or("us-east-1");
            let message = notify::build(report);
            match clients.sns(region).publish(topic, &message).await {
                Ok(id) => format!("sent {id}"),
                Err(e) => {
                    failed = Some(e.to_string());
                    format!("failed: {e}")
                }
            }
        }
    };
    failed
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

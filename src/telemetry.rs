//! What the function says of itself: a log line per decision, the
//! report's metrics (Embedded Metric Format on stdout) and the AWS calls a
//! piece of work sent.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::event::EventContext;
use crate::report::{InstanceReport, Outcome, Report};

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

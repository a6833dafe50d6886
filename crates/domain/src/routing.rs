//! The guard's news as EventBridge events (`EVENT_BUS_NAME`), for people to
//! route to chat, tickets or pagers with rules of their own. They carry
//! exactly what the notification tells, one event per thing:
//!
//! | `detail-type`                 | `detail`                                     |
//! |-------------------------------|----------------------------------------------|
//! | `Instance Decided`            | one instance's decision, with its place      |
//! | `Source Decided`              | one launch template, group or configuration  |
//! | `Sweep Finished`              | the sweep's summary (the notification body)  |
//! | `Account Defaults Weakened`   | what a `ModifyInstanceMetadataDefaults` did  |
//!
//! `source` is `imds-guard` (a custom source may not start with `aws.`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::report::{Report, Status};

pub const SOURCE: &str = "imds-guard";
pub const INSTANCE_DECIDED: &str = "Instance Decided";
pub const SOURCE_DECIDED: &str = "Source Decided";
pub const SWEEP_FINISHED: &str = "Sweep Finished";
pub const DEFAULTS_WEAKENED: &str = "Account Defaults Weakened";
/// `PutEvents` takes at most 10 entries a call...
pub const MAX_ENTRIES: usize = 10;
/// ...and at most 256 KB of them (AWS's pages differ on whether that is per
/// entry or per call; per call satisfies both).
pub const MAX_CALL_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEvent {
    pub detail_type: String,
    /// A JSON object.
    pub detail: String,
}

impl BusEvent {
    /// What EventBridge counts of an entry: source, detail-type and detail
    /// (the bus and resources add a little; allowed for in `batches`).
    fn size(&self) -> usize {
        SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// The events for a report's news. `sweep_body` is the notification's body,
/// when a sweep sent one (already capped to fit).
pub fn events(report: &Report, sweep_body: Option<&str>) -> Vec<BusEvent> {
    let ctx = report.event.clone().unwrap_or_default();
    let mode = report.mode.as_str();
    let mut out = Vec::new();
    if report.status == Status::Swept {
        out.extend(sweep_body.map(|body| sweep_finished(report.mode, body)));
    }
    for r in report.instances.iter().filter(|r| r.notify) {
        out.push(BusEvent {
            detail_type: INSTANCE_DECIDED.into(),
            detail: json!({
                "mode": mode,
                "account": r.account.as_deref().or(ctx.account.as_deref()),
                "region": r.region.as_deref().unwrap_or(&ctx.region),
                "event_name": ctx.event_name,
                "event_id": ctx.event_id,
                "outcome": r.outcome.as_str(),
                "instance": r,
            })
            .to_string(),
        });
    }
    let in_sweep = report.sweep.iter().flat_map(|s| &s.sources);
    for s in report.sources.iter().chain(in_sweep).filter(|s| s.notify) {
        out.push(BusEvent {
            detail_type: SOURCE_DECIDED.into(),
            detail: json!({
                "mode": mode,
                "account": s.account.as_deref().or(ctx.account.as_deref()),
                "region": s.region.as_deref().unwrap_or(&ctx.region),
                "event_name": ctx.event_name,
                "event_id": ctx.event_id,
                "source": s,
            })
            .to_string(),
        });
    }
    if let Some(d) = report
        .account_defaults
        .as_ref()
        .filter(|d| !d.weakenings.is_empty())
    {
        out.push(BusEvent {
            detail_type: DEFAULTS_WEAKENED.into(),
            detail: json!({
                "mode": mode,
                "account": ctx.account,
                "region": ctx.region,
                "event_id": ctx.event_id,
                "principal": ctx.principal.display(),
                "defaults": d,
            })
            .to_string(),
        });
    }
    out
}

/// A sweep's summary (the notification's body), as one event; also what an
/// organization sweep's summary step puts.
pub fn sweep_finished(mode: crate::config::Mode, body: &str) -> BusEvent {
    let summary: Value =
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    BusEvent {
        detail_type: SWEEP_FINISHED.into(),
        detail: json!({"mode": mode.as_str(), "summary": summary}).to_string(),
    }
}

/// Events in calls: at most 10 a call and 256 KB in all (with room for the
/// bus name and time each entry also carries).
pub fn batches(events: &[BusEvent]) -> Vec<&[BusEvent]> {
    const PER_ENTRY_OVERHEAD: usize = 512;
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let size = e.size() + PER_ENTRY_OVERHEAD;
        if i > start && (i - start == MAX_ENTRIES || bytes + size > MAX_CALL_BYTES) {
            out.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::event::EventContext;
    use crate::report::{DefaultsAction, DefaultsReport, Idle, InstanceReport, Outcome};

    fn ctx() -> EventContext {
        EventContext {
            event_name: "RunInstances".into(),
            event_id: Some("e-1".into()),
            account: Some("111122223333".into()),
            region: "eu-west-1".into(),
            ..EventContext::default()
        }
    }

    #[test]
    fn one_event_per_instance_with_news_and_none_for_the_rest() {
        let mut report = Report::handled(Status::Handled, Mode::Enforce, ctx());
        let mut news = InstanceReport::new("i-00000000000000001", Outcome::Remediated, Idle::None);
        news.notify = true;
        let quiet = InstanceReport::new("i-00000000000000002", Outcome::Compliant, Idle::None);
        report.instances = vec![news, quiet];
        let ev = events(&report, None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].detail_type, INSTANCE_DECIDED);
        let d: Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(d["instance"]["instance_id"], "i-00000000000000001");
        assert_eq!(d["outcome"], "remediated");
        assert_eq!(d["account"], "111122223333");
        assert_eq!(d["region"], "eu-west-1");
        assert_eq!(d["event_id"], "e-1");
        // A launch compliant from the start: nothing to route.
        report.instances.remove(0);
        assert!(events(&report, None).is_empty());
    }

    #[test]
    fn a_sweep_routes_its_summary_and_weakened_defaults_route_on_their_own() {
        let mut report = Report::handled(Status::Swept, Mode::Audit, ctx());
        report.sweep = Some(Default::default());
        let ev = events(&report, Some(r#"{"summary":"3 regions swept"}"#));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].detail_type, SWEEP_FINISHED);
        let d: Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(d["summary"]["summary"], "3 regions swept");

        let mut report = Report::handled(Status::DefaultsChanged, Mode::Enforce, ctx());
        report.account_defaults = Some(DefaultsReport {
            requested: Default::default(),
            weakenings: vec!["HttpTokens set to optional".into()],
            current: None,
            action: DefaultsAction::None,
            error: None,
        });
        let ev = events(&report, None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].detail_type, DEFAULTS_WEAKENED);
        report.account_defaults.as_mut().unwrap().weakenings.clear();
        assert!(events(&report, None).is_empty());
    }

    #[test]
    fn batches_hold_ten_entries_and_256_kb_at_most_and_lose_none() {
        let small = |n: usize| BusEvent {
            detail_type: INSTANCE_DECIDED.into(),
            detail: format!("{{\"n\":{n}}}"),
        };
        let ev: Vec<BusEvent> = (0..25).map(small).collect();
        let b = batches(&ev);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), [10, 10, 5]);
        let big = |n: usize| BusEvent {
            detail_type: SWEEP_FINISHED.into(),
            detail: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(100 * 1024)),
        };
        let ev: Vec<BusEvent> = (0..5).map(big).collect();
        let b = batches(&ev);
        assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), 5);
        for call in &b {
            assert!(call.iter().map(|e| e.size() + 512).sum::<usize>() <= MAX_CALL_BYTES);
        }
        assert!(batches(&[]).is_empty());
    }
}

//! Principal exemptions, confirmed by CloudTrail before they are kept.
//!
//! Anyone who may invoke the event function can hand it a CloudTrail-shaped
//! launch naming someone else's instance and an exempt principal; a launch
//! time and a reservation id prove nothing (anyone who may describe
//! instances can read them). So a launch event by an exempt principal
//! leaves an **unconfirmed** exemption: honoured (the instance is left as
//! it is, as an exempt launch must be while CloudTrail lags), kept only
//! `WINDOW_SECS`, and listed for the check (`Kind::Unconfirmed`, partition
//! `CHECK_PARTITION`). The check, run from the sweep's binary on a schedule,
//! asks CloudTrail for its own record of that event id in that account and
//! region (`LookupEvents`) and keeps the exemption only when the record
//! names the same launch by a principal the glob matches and the instance;
//! a record that says otherwise refutes it at once, and no record within
//! the window lets it lapse. Either way the instance is decided again.
//! Pure: what a record says is decided here; the flow reads and writes.

use serde::Serialize;
use serde_json::Value;

use crate::glob::Glob;
use crate::memory::{Kind, Record};
pub use crate::policy::WINDOW_SECS;

/// The partition of the exemptions waiting for CloudTrail.
pub const CHECK_PARTITION: &str = "exemption-check";
/// The `data` key of a record marking an exemption not yet confirmed.
pub const UNCONFIRMED: &str = "unconfirmed";
const EVENT: &str = "event_id";
const GLOB: &str = "glob";
/// Kept under the name records have always used: the memory partition.
const PARTITION: &str = "place";

/// One exemption waiting for CloudTrail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub event_id: String,
    pub glob: String,
    /// The memory partition of the exemption itself.
    pub partition: String,
    /// When the guard saw the launch event.
    pub seen_at: u64,
}

impl Waiting {
    /// The exemption record a launch leaves before CloudTrail confirms it:
    /// honoured, but only for `WINDOW_SECS`, and never renewed by a sweep.
    pub fn exemption(&self) -> Record {
        let mut r = Record::exempt(
            &self.partition,
            &self.instance_id,
            &self.glob,
            Some(&self.event_id),
            self.seen_at,
        );
        r.data.insert(UNCONFIRMED.into(), "true".into());
        r.expires_at = self.seen_at + WINDOW_SECS;
        r
    }

    /// The entry the check finds it by (kept a day past the window, so a
    /// check that was down still decides the instance again).
    pub fn entry(&self) -> Record {
        let mut r = Record::new(
            Kind::Unconfirmed,
            CHECK_PARTITION,
            &format!("{}#{}#{}", self.account, self.region, self.instance_id),
            Some(&self.event_id),
            self.seen_at,
            std::time::Duration::ZERO,
        );
        r.expires_at = self.seen_at + WINDOW_SECS + 24 * 3600;
        r.data.insert(EVENT.into(), self.event_id.clone());
        r.data.insert(GLOB.into(), self.glob.clone());
        r.data.insert(PARTITION.into(), self.partition.clone());
        r
    }

    /// The exemption waiting in an entry; `None` for a record that is not
    /// a whole entry (never acted on).
    pub fn from_entry(r: &Record) -> Option<Waiting> {
        if !r.is_kind(Kind::Unconfirmed) {
            return None;
        }
        let mut parts = r.id().splitn(3, '#');
        let (account, region, instance) = (parts.next()?, parts.next()?, parts.next()?);
        if !crate::validate::is_account_id(account)
            || !crate::validate::is_region(region)
            || !crate::validate::is_instance_id(instance)
        {
            return None;
        }
        Some(Waiting {
            account: account.into(),
            region: region.into(),
            instance_id: instance.into(),
            event_id: r.data.get(EVENT)?.clone(),
            glob: r.data.get(GLOB)?.clone(),
            partition: r.data.get(PARTITION)?.clone(),
            seen_at: r.at,
        })
    }
}

/// Whether an exemption record is one still waiting for CloudTrail.
pub fn is_unconfirmed(r: &Record) -> bool {
    r.data.get(UNCONFIRMED).is_some_and(|v| v == "true")
}

/// CloudTrail's own record of an event, as `LookupEvents` returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrailRecord {
    /// `CloudTrailEvent`: the record as CloudTrail wrote it (JSON).
    pub record: String,
    /// `Resources`: the instance ids CloudTrail lists for it.
    pub instances: Vec<String>,
}

/// What the check concludes about one waiting exemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// CloudTrail's record shows that launch, by a principal the glob
    /// matches, of this instance: kept.
    Confirmed,
    /// CloudTrail's record says otherwise: never kept, decided again now.
    Refuted { why: String },
    /// No record yet, within the window: asked again at the next check.
    Waiting,
    /// No record within the window: lapsed, decided again now.
    Lapsed,
}

/// Judges `w` on CloudTrail's record of its event (`None`: not found).
pub fn judge(w: &Waiting, found: Option<&TrailRecord>, now: u64) -> Verdict {
    let Some(found) = found else {
        return if now < w.seen_at + WINDOW_SECS {
            Verdict::Waiting
        } else {
            Verdict::Lapsed
        };
    };
    let refuted = |why: String| Verdict::Refuted { why };
    let Ok(record) = serde_json::from_str::<Value>(&found.record) else {
        return refuted("CloudTrail's record of the event is not JSON".into());
    };
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if s(&record["eventID"]) != w.event_id {
        return refuted(format!(
            "CloudTrail's record is of another event ({})",
            crate::validate::clean(&s(&record["eventID"]), 64)
        ));
    }
    if s(&record["recipientAccountId"]) != w.account || s(&record["awsRegion"]) != w.region {
        return refuted(format!(
            "CloudTrail records event {} in {}/{}, not {}/{}",
            w.event_id,
            crate::validate::clean(&s(&record["recipientAccountId"]), 16),
            crate::validate::clean(&s(&record["awsRegion"]), 32),
            w.account,
            w.region
        ));
    }
    // Read as the guard reads any launch event (`event::parse`): the same
    // principal, the same instances, whatever shape the response has.
    let envelope = serde_json::json!({
        "version": "0",
        "id": w.event_id,
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": w.account,
        "region": w.region,
        "detail": record,
    });
    let (principal, mut launched) = match crate::event::parse(&envelope) {
        Ok(crate::event::GuardEvent::Instances {
            ctx,
            trigger: crate::event::Trigger::Launch,
            instances,
            ..
        }) => (
            ctx.principal,
            instances.into_iter().map(|o| o.instance_id).collect(),
        ),
        // CloudTrail cut the response: its `Resources` list names them.
        Ok(crate::event::GuardEvent::Unlisted { ctx, .. }) => (ctx.principal, Vec::new()),
        _ => {
            return refuted(format!(
                "CloudTrail records event {} as {}, not a launch that succeeded",
                w.event_id,
                crate::validate::clean(&s(&record["eventName"]), 64)
            ))
        }
    };
    launched.extend(found.instances.iter().cloned());
    if !crate::policy::names(&Glob::new(&w.glob), &principal) {
        return refuted(format!(
            "CloudTrail records the launch by {}, which {} does not match",
            crate::validate::clean(&principal.display(), 256),
            w.glob
        ));
    }
    if !launched.contains(&w.instance_id) {
        return refuted(format!(
            "CloudTrail's record of event {} does not name {}",
            w.event_id, w.instance_id
        ));
    }
    Verdict::Confirmed
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn waiting() -> Waiting {
        Waiting {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            instance_id: "i-0aaaaaaaaaaaaaaa1".into(),
            event_id: "9c5a2f8e-0000-4000-8000-000000000001".into(),
            glob: "arn:aws:iam::*:role/packer-*".into(),
            partition: "111122223333#eu-west-1".into(),
            seen_at: NOW,
        }
    }

    fn record(role: &str, instance: &str) -> TrailRecord {
        TrailRecord {
            record: serde_json::json!({
                "eventID": "9c5a2f8e-0000-4000-8000-000000000001",
                "eventName": "RunInstances",
                "awsRegion": "eu-west-1",
                "recipientAccountId": "111122223333",
                "userIdentity": {
                    "type": "AssumedRole",
                    "arn": format!("arn:aws:sts::111122223333:assumed-role/{role}/build-42"),
                    "sessionContext": {"sessionIssuer": {"type": "Role",
                        "arn": format!("arn:aws:iam::111122223333:role/{role}")}}
                },
                "responseElements": {"instancesSet": {"items": [{"instanceId": instance}]}}
            })
            .to_string(),
            instances: vec![],
        }
    }

    #[test]
    fn an_exemption_is_kept_only_when_cloudtrail_names_the_launch_the_principal_and_the_instance() {
        let w = waiting();
        assert_eq!(
            judge(&w, Some(&record("packer-ci", &w.instance_id)), NOW + 60),
            Verdict::Confirmed
        );
        // Another principal launched it (the event was forged to name an
        // exempt one), or the record names other instances: refuted.
        let Verdict::Refuted { why } = judge(&w, Some(&record("dev", &w.instance_id)), NOW) else {
            panic!()
        };
        assert!(why.contains("role/dev"), "{why}");
        let Verdict::Refuted { why } =
            judge(&w, Some(&record("packer-ci", "i-0bbbbbbbbbbbbbbb2")), NOW)
        else {
            panic!()
        };
        assert!(why.contains("does not name"), "{why}");
        // CloudTrail's Resources list counts when the response was cut.
        let mut cut = record("packer-ci", "i-0bbbbbbbbbbbbbbb2");
        cut.instances = vec![w.instance_id.clone()];
        assert_eq!(judge(&w, Some(&cut), NOW), Verdict::Confirmed);
        // A record of another account or region, or of no launch.
        let other = |f: &dyn Fn(&mut Value)| {
            let mut v: Value =
                serde_json::from_str(&record("packer-ci", &w.instance_id).record).unwrap();
            f(&mut v);
            judge(
                &w,
                Some(&TrailRecord {
                    record: v.to_string(),
                    instances: vec![],
                }),
                NOW,
            )
        };
        assert!(matches!(
            other(&|v| v["recipientAccountId"] = "444455556666".into()),
            Verdict::Refuted { .. }
        ));
        assert!(matches!(
            other(&|v| v["awsRegion"] = "us-east-1".into()),
            Verdict::Refuted { .. }
        ));
        assert!(matches!(
            other(&|v| v["eventName"] = "StopInstances".into()),
            Verdict::Refuted { .. }
        ));
        assert!(matches!(
            other(&|v| v["errorCode"] = "Client.Unauthorized".into()),
            Verdict::Refuted { .. }
        ));
        assert!(matches!(
            other(&|v| v["eventID"] = "another".into()),
            Verdict::Refuted { .. }
        ));
    }

    #[test]
    fn a_fleets_launch_is_read_as_the_guard_reads_any_create_fleet() {
        let w = waiting();
        let fleet = TrailRecord {
            record: serde_json::json!({
                "eventID": w.event_id, "eventName": "CreateFleet",
                "eventSource": "ec2.amazonaws.com",
                "awsRegion": "eu-west-1", "recipientAccountId": "111122223333",
                "userIdentity": {"type": "AssumedRole",
                    "arn": "arn:aws:sts::111122223333:assumed-role/packer-ci/x",
                    "sessionContext": {"sessionIssuer": {"type": "Role",
                        "arn": "arn:aws:iam::111122223333:role/packer-ci"}}},
                "requestParameters": {"CreateFleetRequest": {"Type": "instant"}},
                "responseElements": {"CreateFleetResponse": {"fleetId": "fleet-1",
                    "fleetInstanceSet": {"item": {"instanceIds": {"item": w.instance_id}}}}}
            })
            .to_string(),
            instances: vec![],
        };
        assert_eq!(judge(&w, Some(&fleet), NOW), Verdict::Confirmed);
    }

    #[test]
    fn no_record_waits_out_the_window_then_lapses() {
        let w = waiting();
        assert_eq!(judge(&w, None, NOW + 5 * 60), Verdict::Waiting);
        assert_eq!(judge(&w, None, NOW + WINDOW_SECS - 1), Verdict::Waiting);
        assert_eq!(judge(&w, None, NOW + WINDOW_SECS), Verdict::Lapsed);
    }

    #[test]
    fn an_unconfirmed_exemption_lasts_the_window_and_its_entry_reads_back() {
        let w = waiting();
        let e = w.exemption();
        assert!(is_unconfirmed(&e));
        assert!(e.live(NOW + WINDOW_SECS - 1) && !e.live(NOW + WINDOW_SECS));
        assert_eq!(Waiting::from_entry(&w.entry()), Some(w.clone()));
        let mut bad = w.entry();
        bad.data.remove(EVENT);
        assert_eq!(Waiting::from_entry(&bad), None);
    }
}

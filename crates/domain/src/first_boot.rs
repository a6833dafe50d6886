//! First boot: when a new instance may be switched without breaking its
//! boot. An AMI whose owner declared `ImdsSupport: v2.0` boots with IMDSv2
//! (the owner's word: AWS does not check it); one that declares nothing may
//! still need IMDSv1 while it boots. This project began there: on an AMI of
//! its time, cloud-init could not read its metadata with tokens required,
//! the SSH key was never installed, and the instance was unreachable.
//!
//! With `FIRST_BOOT_GRACE_SECONDS`, such an instance is switched only once
//! the grace since its launch has passed. It waits in an SQS queue (a
//! delayed message, at most `MAX_DELAY_SECS` at a time), never in a running
//! function, and is then decided afresh (`Trigger::FirstBoot`): the guard's
//! memory read again, the account's mode, whether it still exists, and,
//! with `CHECK_METADATA_NO_TOKEN`, whether its first boot used IMDSv1. The
//! circuit breaker counts it when its launch is decided, so delayed
//! decisions never slip under the per-event limit one at a time.
//!
//! Pure: the flows carry out what these functions decide.

use serde::{Deserialize, Serialize};

use crate::plan::{hold_back, V1Use};
use crate::policy::Remedy;
use crate::report::{Action, Idle, InstanceReport, Outcome, Step};
use crate::validate::{clean, is_account_id, is_instance_id, is_region};

/// The longest grace the guard gives (`FIRST_BOOT_GRACE_SECONDS`).
pub use crate::config::MAX_FIRST_BOOT_GRACE_SECS as MAX_GRACE_SECS;
/// SQS delays a message at most this long (`DelaySeconds`); a longer wait
/// is delayed again when the message comes back.
pub const MAX_DELAY_SECS: u64 = 900;
/// With `CHECK_METADATA_NO_TOKEN`, a decision that finds no
/// `MetadataNoToken` data yet (the metric lags minutes) is delayed again,
/// `RECHECK_SECS` each time, at most this many times.
pub const RECHECKS: u32 = 3;
pub const RECHECK_SECS: u64 = 300;
/// The event name a delayed decision's report carries.
pub const EVENT_NAME: &str = "FirstBootGraceEnded";
/// The `kind` attribute of a delayed decision's message.
pub const KIND: &str = "first-boot";

/// A delayed decision's message: which instance, where, and from which
/// launch event. Nothing else: whatever decides it is read again when it
/// comes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delayed {
    pub instance: String,
    pub account: String,
    pub region: String,
    /// The event that launched it (or first named it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// How many times it came back to no `MetadataNoToken` data yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rechecks: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Delayed {
    /// A message's body read and checked: anything else is refused, with
    /// the reason.
    pub fn parse(body: &str) -> Result<Delayed, String> {
        let d: Delayed = serde_json::from_str(body)
            .map_err(|e| format!("not a delayed first-boot decision: {e}"))?;
        if !is_instance_id(&d.instance) {
            return Err(format!(
                "{:?} is not an instance id",
                clean(&d.instance, 64)
            ));
        }
        if !is_account_id(&d.account) {
            return Err(format!("{:?} is not an account id", clean(&d.account, 64)));
        }
        if !is_region(&d.region) {
            return Err(format!("{:?} is not a region", clean(&d.region, 64)));
        }
        if d.rechecks > RECHECKS {
            return Err(format!(
                "rechecks {} is more than the guard ever sends ({RECHECKS})",
                d.rechecks
            ));
        }
        Ok(Delayed {
            event_id: d.event_id.map(|e| clean(&e, 128)),
            ..d
        })
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Until when an instance's first boot is waited for: with a grace, when
/// its AMI does not declare `ImdsSupport: v2.0` (`declares_v2`: false too
/// when the AMI is deregistered, unshared or unreadable) and it was launched
/// less than `grace` seconds ago. A launch time not known counts from now.
pub fn waits_until(
    grace: u64,
    declares_v2: bool,
    launch_time: Option<u64>,
    now: u64,
) -> Option<u64> {
    if grace == 0 || declares_v2 {
        return None;
    }
    let until = launch_time.unwrap_or(now).saturating_add(grace);
    (until > now).then_some(until)
}

/// How long the message for a wait until `until` is delayed: SQS's
/// ceiling at most; the rest when it comes back.
pub fn delay(until: u64, now: u64) -> u64 {
    until.saturating_sub(now).min(MAX_DELAY_SECS)
}

/// Whether a report waits for its first boot (`Idle::FirstBoot`).
pub fn is_waiting(r: &InstanceReport) -> bool {
    matches!(r.action.idle, Idle::FirstBoot { .. })
}

/// Marks a planned change as waiting until `until`, for `why`: nothing is
/// written; the change is what the delayed decision would make.
pub fn mark_waiting(r: &mut InstanceReport, until: u64, why: String) {
    let change = r.action.steps.iter().find_map(|s| match s {
        Step::Set(remedy) => Some(remedy.to_string()),
        _ => None,
    });
    r.outcome = Outcome::Flagged;
    r.action = Action::from(Idle::FirstBoot { until });
    r.would = change.or(r.would.take());
    r.findings.push(why);
}

/// Why an instance of image `image` waits (`error`: the image could not be
/// read, so it counts as not declaring v2.0).
pub fn why_waiting(image: Option<&str>, grace: u64, error: Option<&str>) -> String {
    let image = image.unwrap_or("of unknown id");
    match error {
        Some(e) => format!(
            "its AMI {image} could not be read ({e}), so counts as not declaring ImdsSupport v2.0: its first boot may still need IMDSv1, and it is given FIRST_BOOT_GRACE_SECONDS={grace} from its launch"
        ),
        None => format!(
            "its AMI {image} does not declare ImdsSupport v2.0 (or is deregistered or not shared): its first boot may still need IMDSv1, and it is given FIRST_BOOT_GRACE_SECONDS={grace} from its launch"
        ),
    }
}

/// What a delayed decision makes of `MetadataNoToken` (with
/// `CHECK_METADATA_NO_TOKEN`): IMDSv1 calls since launch hold the change
/// back and are told (its first boot, or what runs on it, uses IMDSv1);
/// none lets it go on; no data yet (the metric lags minutes) waits again,
/// at most `RECHECKS` times, and then counts as the sweep counts it.
pub fn after_grace(
    r: &mut InstanceReport,
    remedy: &mut Option<Remedy>,
    calls: Option<f64>,
    rechecks: u32,
    (hours, missing_as_zero): (u64, bool),
    now: u64,
) -> AfterGrace {
    if remedy.is_none() {
        return AfterGrace::Decided;
    }
    if calls.is_none() && rechecks < RECHECKS {
        let until = now + RECHECK_SECS;
        *remedy = None;
        mark_waiting(
            r,
            until,
            format!(
                "no MetadataNoToken data yet (the metric lags minutes): whether its first boot used IMDSv1 is asked again in {} min ({} of {RECHECKS})",
                RECHECK_SECS / 60,
                rechecks + 1
            ),
        );
        r.notify = false;
        return AfterGrace::AgainNoData;
    }
    if hold_back(r, remedy, calls, hours, missing_as_zero) == V1Use::InUse {
        r.findings.push(
            "its first boot, or what runs on it, used IMDSv1: not switched, so as not to break it; the sweep holds it while it does (CHECK_METADATA_NO_TOKEN)".into(),
        );
    }
    AfterGrace::Decided
}

/// What `after_grace` left of a delayed decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterGrace {
    /// Decided now: switched, held back, or told.
    Decided,
    /// No data yet: delayed again.
    AgainNoData,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Remedy;

    fn planned() -> (InstanceReport, Option<Remedy>) {
        let remedy = Remedy {
            http_tokens: "required",
            http_put_response_hop_limit: None,
            http_protocol_ipv6: None,
            instance_metadata_tags: None,
        };
        let r = InstanceReport::new(
            "i-0123456789abcdef0",
            Outcome::Remediated,
            Step::Set(remedy.clone()),
        );
        (r, Some(remedy))
    }

    #[test]
    fn only_an_undeclared_image_within_the_grace_waits() {
        let now = 10_000;
        assert_eq!(
            waits_until(600, false, Some(now - 60), now),
            Some(now + 540)
        );
        assert_eq!(
            waits_until(600, true, Some(now - 60), now),
            None,
            "declares v2.0"
        );
        assert_eq!(waits_until(0, false, Some(now), now), None, "no grace");
        assert_eq!(
            waits_until(600, false, Some(now - 600), now),
            None,
            "grace passed"
        );
        assert_eq!(
            waits_until(600, false, None, now),
            Some(now + 600),
            "launch time unknown"
        );
    }

    #[test]
    fn a_wait_is_delayed_at_most_sqs_ceiling_at_a_time() {
        assert_eq!(delay(10_000 + 3600, 10_000), MAX_DELAY_SECS);
        assert_eq!(delay(10_000 + 120, 10_000), 120);
        assert_eq!(delay(9_000, 10_000), 0);
    }

    #[test]
    fn a_message_is_minimal_and_checked() {
        let d = Delayed {
            instance: "i-0123456789abcdef0".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            event_id: Some("e-1".into()),
            rechecks: 0,
        };
        let body = d.body();
        assert_eq!(
            body,
            r#"{"instance":"i-0123456789abcdef0","account":"111122223333","region":"us-east-1","event_id":"e-1"}"#
        );
        assert_eq!(Delayed::parse(&body).unwrap(), d);
        for bad in [
            r#"{"instance":"x","account":"111122223333","region":"us-east-1"}"#,
            r#"{"instance":"i-0123456789abcdef0","account":"1","region":"us-east-1"}"#,
            r#"{"instance":"i-0123456789abcdef0","account":"111122223333","region":"moon"}"#,
            r#"{"instance":"i-0123456789abcdef0","account":"111122223333","region":"us-east-1","rechecks":9}"#,
            r#"{"instance":"i-0123456789abcdef0","account":"111122223333","region":"us-east-1","mode":"enforce"}"#,
            "not json",
        ] {
            assert!(Delayed::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn marked_waiting_names_the_change_and_until_when() {
        let (mut r, _) = planned();
        mark_waiting(&mut r, 1_800_000_000, "why".into());
        assert_eq!(r.outcome, Outcome::Flagged);
        assert!(is_waiting(&r));
        assert!(r.would.as_deref().unwrap().contains("HttpTokens=required"));
        assert!(
            r.action.to_string().contains("2027-01-15T08:00:00"),
            "{}",
            r.action
        );
        assert!(!r.action.wrote());
    }

    #[test]
    fn after_the_grace_imdsv1_use_holds_no_data_waits_a_bounded_number_of_times() {
        let now = 10_000;
        let (mut r, mut remedy) = planned();
        assert_eq!(
            after_grace(&mut r, &mut remedy, Some(0.0), 0, (168, false), now),
            AfterGrace::Decided
        );
        assert!(remedy.is_some(), "no IMDSv1 call: switched");

        let (mut r, mut remedy) = planned();
        after_grace(&mut r, &mut remedy, Some(4.0), 0, (168, false), now);
        assert!(remedy.is_none());
        assert_eq!(r.action.idle, Idle::HeldBack);
        assert!(r.findings.iter().any(|f| f.contains("first boot")));

        for rechecks in 0..RECHECKS {
            let (mut r, mut remedy) = planned();
            assert_eq!(
                after_grace(&mut r, &mut remedy, None, rechecks, (168, false), now),
                AfterGrace::AgainNoData
            );
            assert_eq!(
                r.action.idle,
                Idle::FirstBoot {
                    until: now + RECHECK_SECS
                }
            );
            assert!(remedy.is_none() && !r.notify);
        }
        let (mut r, mut remedy) = planned();
        after_grace(&mut r, &mut remedy, None, RECHECKS, (168, false), now);
        assert_eq!(
            r.action.idle,
            Idle::HeldBack,
            "out of rechecks: held as a sweep holds it"
        );
        let (mut r, mut remedy) = planned();
        after_grace(&mut r, &mut remedy, None, RECHECKS, (168, true), now);
        assert!(
            remedy.is_some(),
            "NO_TOKEN_MISSING_AS_ZERO counts no data as unused"
        );
    }
}

//! Knowing when events stop. The guard lives on CloudTrail's events; when
//! they stop arriving (a member's forwarding rule deleted, a trail turned
//! off, a region left out of a StackSet), launches go unseen until a sweep.
//! A sweep that fixes an instance launched after the guard began enforcing
//! in that account-region has found an event that never arrived: it counts
//! them, says so first, and a metric and alarm fire. Pure: the sweep keeps
//! the record and counts with it.

use crate::config::Mode;
use crate::memory::{Kind, Record};
use crate::report::{InstanceReport, Outcome};

const MODE: &str = "mode";
/// The record's id in the account-region's partition.
pub const ID: &str = "events";

/// The record of since when the guard has enforced here.
pub fn since_record(partition: &str, mode: Mode, since: u64, now: u64) -> Record {
    let mut r = Record::new(
        Kind::EventsSince,
        partition,
        ID,
        None,
        now,
        std::time::Duration::ZERO,
    );
    r.data.insert(MODE.into(), mode.as_str().into());
    r.data.insert("since".into(), since.to_string());
    r
}

/// Since when the guard has been in `mode` here, as the records say; `None`
/// when they say nothing, or another mode (it starts again now: a switch to
/// enforce makes the instances it left since launched no missed events).
pub fn since(records: &[Record], mode: Mode) -> Option<u64> {
    records
        .iter()
        .find(|r| r.is_kind(Kind::EventsSince) && r.id() == ID)
        .filter(|r| r.data.get(MODE).map(String::as_str) == Some(mode.as_str()))
        .and_then(|r| r.data.get("since")?.parse().ok())
}

/// Whether the sweep's fixing `r` means its event never arrived: fixed by
/// the sweep, launched after `since` and longer than `grace` seconds ago,
/// and under no break-glass grant that ended since.
pub fn missed(r: &InstanceReport, since: u64, now: u64, grace: u64, had_grant: bool) -> bool {
    r.outcome == Outcome::Remediated
        && !had_grant
        && r.launch_time.is_some_and(|t| t > since && t + grace <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GRACE_SECS;
    use crate::report::{Idle, Step};

    const SINCE: u64 = 1_795_000_000;

    fn fixed(launched: Option<u64>) -> InstanceReport {
        let mut r = InstanceReport::new("i-00000001", Outcome::Remediated, Idle::None);
        r.action.steps.push(Step::Tagged {
            key: "k".into(),
            value: "remediated".into(),
        });
        r.launch_time = launched;
        r
    }

    #[test]
    fn a_fix_of_a_launch_after_enforcing_began_is_a_missed_event_once_its_grace_is_over() {
        let now = SINCE + 10 * 3600;
        assert!(missed(
            &fixed(Some(SINCE + 60)),
            SINCE,
            now,
            GRACE_SECS,
            false
        ));
        // Launched before the guard enforced here: the sweep's to fix.
        assert!(!missed(
            &fixed(Some(SINCE - 60)),
            SINCE,
            now,
            GRACE_SECS,
            false
        ));
        // Its event may still be on the way; with a shorter grace, not.
        assert!(!missed(
            &fixed(Some(now - 600)),
            SINCE,
            now,
            GRACE_SECS,
            false
        ));
        assert!(missed(&fixed(Some(now - 600)), SINCE, now, 300, false));
        // A grant that ended left it; no launch time, nothing to say.
        assert!(!missed(
            &fixed(Some(SINCE + 60)),
            SINCE,
            now,
            GRACE_SECS,
            true
        ));
        assert!(!missed(&fixed(None), SINCE, now, GRACE_SECS, false));
        let mut flagged = fixed(Some(SINCE + 60));
        flagged.outcome = Outcome::Flagged;
        assert!(!missed(&flagged, SINCE, now, GRACE_SECS, false));
    }

    #[test]
    fn the_record_holds_since_when_and_in_which_mode() {
        let r = since_record("111122223333#eu-west-1", Mode::Enforce, SINCE, SINCE + 5);
        assert_eq!(r.sk, "since#events");
        assert_eq!(since(std::slice::from_ref(&r), Mode::Enforce), Some(SINCE));
        // Another mode: it starts again.
        assert_eq!(since(&[r], Mode::Notify), None);
        assert_eq!(since(&[], Mode::Enforce), None);
    }
}

//! The circuit breaker: a ceiling on how many instances one event or one
//! sweep run may change, and on what share of one account-region's
//! instances a run may change. A mistaken mode or exemption change then
//! cannot rewrite a whole organization in one run: past the ceiling the
//! guard changes nothing more, reports each instance it held back with the
//! change it would have made, and the run's one message says so first.
//! Pure: the flows count and carry out what is admitted here.

use crate::policy::Remedy;
pub use crate::report::Tripped;
use crate::report::{Idle, InstanceReport, Outcome};

/// A share is never held below this many changes: a quarter of a region of
/// three instances would otherwise be none.
pub const FLOOR: u64 = 10;

/// How many of an account-region's `total` instances one run may change.
pub fn region_cap(total: u64, percent: u8) -> u64 {
    (total * u64::from(percent) / 100).max(FLOOR)
}

/// Admits the first `room` remedies of `todo`; every one past it is held:
/// its report becomes flagged, names the ceiling (`limit`) and keeps the
/// change it would have made. Returns the remedies admitted, and what was
/// held (`None` when nothing was).
pub fn admit(
    room: u64,
    limit: &str,
    reports: &mut [InstanceReport],
    todo: Vec<(usize, Remedy)>,
) -> (Vec<(usize, Remedy)>, Option<Tripped>) {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if todo.len() <= room {
        return (todo, None);
    }
    let mut todo = todo;
    let held = todo.split_off(room);
    for (i, remedy) in &held {
        let r = &mut reports[*i];
        r.outcome = Outcome::Flagged;
        r.action = Idle::Breaker(limit.to_string()).into();
        r.would = Some(remedy.to_string());
        r.notify = true;
    }
    (
        todo,
        Some(Tripped {
            limits: vec![limit.to_string()],
            held: held.len() as u64,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Step;

    fn remedy() -> Remedy {
        Remedy {
            http_tokens: "required",
            http_put_response_hop_limit: None,
            http_protocol_ipv6: None,
            instance_metadata_tags: None,
        }
    }

    fn planned(n: usize) -> (Vec<InstanceReport>, Vec<(usize, Remedy)>) {
        let reports = (0..n)
            .map(|i| {
                InstanceReport::new(
                    &format!("i-{i:08x}"),
                    Outcome::Remediated,
                    Step::Set(remedy()),
                )
            })
            .collect();
        (reports, (0..n).map(|i| (i, remedy())).collect())
    }

    #[test]
    fn within_the_room_everything_is_admitted() {
        let (mut reports, todo) = planned(3);
        let (admitted, tripped) = admit(3, "MAX_CHANGES_PER_EVENT=3", &mut reports, todo);
        assert_eq!(admitted.len(), 3);
        assert_eq!(tripped, None);
        assert!(reports.iter().all(|r| r.outcome == Outcome::Remediated));
    }

    #[test]
    fn past_the_room_each_held_instance_says_what_it_would_have_had() {
        let (mut reports, todo) = planned(5);
        let (admitted, tripped) = admit(2, "MAX_CHANGES_PER_RUN=2", &mut reports, todo);
        assert_eq!(admitted.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        let tripped = tripped.unwrap();
        assert_eq!(tripped.held, 3);
        assert_eq!(
            tripped.headline(),
            "CIRCUIT BREAKER held 3 change(s) (MAX_CHANGES_PER_RUN=2)"
        );
        for r in &reports[2..] {
            assert_eq!(r.outcome, Outcome::Flagged);
            assert!(r.action.steps.is_empty(), "nothing written");
            assert_eq!(
                r.action.to_string(),
                "none: circuit breaker (MAX_CHANGES_PER_RUN=2)"
            );
            assert!(r.would.as_deref().unwrap().contains("HttpTokens=required"));
            assert!(r.notify);
        }
        // No room at all: everything is held.
        let (mut reports, todo) = planned(2);
        let (admitted, tripped) = admit(0, "x", &mut reports, todo);
        assert!(admitted.is_empty());
        assert_eq!(tripped.unwrap().held, 2);
    }

    #[test]
    fn a_regions_share_has_a_floor() {
        assert_eq!(region_cap(3, 20), FLOOR);
        assert_eq!(region_cap(1_000, 20), 200);
        assert_eq!(region_cap(1_000, 100), 1_000);
    }
}

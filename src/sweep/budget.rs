//! The circuit breaker's budget for a sweep: what a page may still change
//! within the account-region's share and the run's ceiling.

use super::*;

impl<'a, C: Clients> Sweep<'a, C> {
    /// The circuit breaker: of `todo`, what this page may still change,
    /// within this account-region's share of its instances
    /// (`MAX_CHANGE_PERCENT`, counted only once the run would pass the
    /// floor) and the run's ceiling (`MAX_CHANGES_PER_RUN`). What is held
    /// is reported, with the change it would have made.
    pub(super) async fn admit(
        &self,
        ec2: &impl Ec2Api,
        out: &mut RegionResult,
        reports: &mut [InstanceReport],
        todo: Vec<(usize, Remedy)>,
    ) -> Vec<(usize, Remedy)> {
        if todo.is_empty() {
            return todo;
        }
        let mut todo = todo;
        let percent = self.cfg.max_change_percent;
        if percent < 100 && out.changes + todo.len() as u64 > breaker::FLOOR {
            if out.total.is_none() {
                out.total = Some(match count_instances(ec2).await {
                    Ok(n) => n,
                    Err(e) => {
                        // Not known: held to the floor, never changed blind.
                        out.summary.warnings.push(format!(
                            "the instances here could not be counted for MAX_CHANGE_PERCENT, so at most {} were changed: {e}",
                            breaker::FLOOR
                        ));
                        0
                    }
                });
            }
            let total = out.total.unwrap_or(0);
            let room = breaker::region_cap(total, percent).saturating_sub(out.changes);
            let (admitted, tripped) = breaker::admit(
                room,
                &format!("MAX_CHANGE_PERCENT={percent} of {total} instance(s)"),
                reports,
                todo,
            );
            todo = admitted;
            trip(out, tripped);
        }
        let want = todo.len() as u64;
        let granted = self
            .run_room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left - left.min(want))
            })
            .map_or(0, |left| left.min(want));
        let (admitted, tripped) = breaker::admit(
            granted,
            &format!("MAX_CHANGES_PER_RUN={}", self.cfg.max_changes_per_run),
            reports,
            todo,
        );
        trip(out, tripped);
        out.changes += admitted.len() as u64;
        admitted
    }
}

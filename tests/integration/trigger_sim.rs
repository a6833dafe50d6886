//! How soon a launch is on IMDSv2, by trigger (`make bench-triggers`, not
//! part of `make test`): the event path on the in-memory fake with paused
//! time, so the figures are simulated seconds, not this machine's.
//!
//! What is simulated, and with which assumptions (each launch draws its own
//! values, from a seeded generator, so every run prints the same table):
//! - the instance is `pending` for 10–60 s, and EC2 refuses to change its
//!   options while it is (`IncorrectInstanceState`; the guard retries with
//!   backoff within its 60 s budget, and a Lambda retry a minute later when
//!   that is not enough);
//! - the EC2 state-change notifications reach the function 1–5 s after the
//!   instance enters each state (an EC2 service event): `pending` tries once
//!   without waiting, `running` decides;
//! - the CloudTrail event reaches it 60–300 s after the launch (AWS delivers
//!   CloudTrail events to EventBridge best effort, typically within minutes).
//!
//! What is real: the event path, its plan, retries and backoff, exactly as
//! they run in the function. The distributions are assumptions: change them
//! here and the table follows.

use std::time::Duration;

use imds_guard::guard::Guard;
use serde_json::Value;
use tokio::time::Instant;

use crate::common::{fixture, launch_event};
use crate::fake::FakeCloud;

/// A small deterministic generator (xorshift64*), enough for draws.
struct Draws(u64);

impl Draws {
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        lo + (hi - lo) * (x as f64 / (1u64 << 53) as f64)
    }
}

/// The seconds from `pending` to `required` for one launch, when its
/// events reach the function at the given seconds after it (in order), and
/// Lambda retries a failed invocation a minute, then two, later.
async fn one(
    cloud: &FakeCloud,
    g: &Guard<crate::fake::FakeClients>,
    id: &str,
    events: Vec<(f64, Value)>,
) -> f64 {
    let launched = Instant::now();
    for (at, event) in events {
        tokio::time::sleep_until(launched + Duration::from_secs_f64(at)).await;
        for retry_after in [60, 120, 0] {
            if g.handle(&event).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(retry_after)).await;
        }
    }
    let at = cloud.required_at(id).expect("switched in the end");
    at.duration_since(launched).as_secs_f64()
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), xs[xs.len() - 1])
}

#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: run with `make bench-triggers`"]
async fn seconds_from_pending_to_required_by_trigger() {
    const LAUNCHES: usize = 200;
    let mut draws = Draws(0x1d_8e_4e_27_c4_7d_12_4f);
    let mut by = [Vec::new(), Vec::new()];
    for n in 0..LAUNCHES {
        let pending = draws.between(10.0, 60.0);
        let delays = [draws.between(1.0, 5.0), draws.between(60.0, 300.0)];
        let running_delay = draws.between(1.0, 5.0);
        for (k, delay) in delays.into_iter().enumerate() {
            let cloud = FakeCloud::new();
            let id = format!("i-{n:017x}");
            cloud.add(&id, "optional", 2);
            let until = Instant::now() + Duration::from_secs_f64(pending);
            cloud.edit(&id, |i| i.pending_until = Some(until));
            let g = cloud.guard(&[]);
            let events = if k == 0 {
                let state = |s: &str| {
                    let mut e = fixture("state-change-pending.json");
                    e["detail"]["instance-id"] = id.clone().into();
                    e["detail"]["state"] = s.into();
                    e
                };
                vec![
                    (delay, state("pending")),
                    (pending + running_delay, state("running")),
                ]
            } else {
                vec![(
                    delay,
                    launch_event(
                        "run-instances-console.json",
                        std::slice::from_ref(&id),
                        None,
                    ),
                )]
            };
            by[k].push(one(&cloud, &g, &id, events).await);
        }
    }
    let [state, trail] = by.map(stats);
    println!(
        "BENCH {}",
        serde_json::json!({
            "launches": LAUNCHES,
            "state_change": {"median": state.0, "p90": state.1, "max": state.2},
            "cloudtrail": {"median": trail.0, "p90": trail.1, "max": trail.2},
        })
    );
    println!("| trigger | seconds from pending to required: median | p90 | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| EC2 state change (1–5 s delivery) | {:.1} | {:.1} | {:.1} |",
        state.0, state.1, state.2
    );
    println!(
        "| CloudTrail (60–300 s delivery) | {:.1} | {:.1} | {:.1} |",
        trail.0, trail.1, trail.2
    );
    // The state change is faster for every launch's distribution as a whole.
    assert!(state.0 < trail.0);
}

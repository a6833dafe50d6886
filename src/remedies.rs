//! One way to act, for the event path and the sweep alike: look at
//! instances, apply remedies, write the status tag, set the account default,
//! back off, and record what became of each instance. What differs between
//! the two paths is a `Pacing`, not a copy of the code:
//!
//! | | event path | sweep |
//! |---|---|---|
//! | modifies in flight | 8 | 8 at most, halved when EC2 throttles, grown back by one per calm round |
//! | EC2 throttles (after the SDK's retries) | the instance fails | slow down and retry |
//! | `InvalidInstanceID.NotFound` | not visible yet: retry | listed a moment ago: gone |
//!
//! Both retry an instance still `pending` (`IncorrectInstanceState`) within
//! the deadline (a `pending` notification's deadline is now: `PENDING`
//! leaves what EC2 did not take to the `running` one), and end one shutting
//! down or terminated as `gone`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use tracing::warn;

use crate::aws::{AwsError, Ec2Api, MemoryApi};
use crate::clock::now_secs;
use crate::config::{Config, Mode};
use crate::event::{Lookup, Observed};
use crate::memory::{Kind, Record};
use crate::plan::tag_batches;
use crate::policy::{is_gone, AccountDefaults, Remedy};
use crate::report::{DefaultsAction, InstanceReport, Outcome, Step};

/// Modify calls in flight at once, at most.
pub const MAX_MODIFY_CONCURRENCY: usize = 8;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What an instance EC2 does not know (`InvalidInstanceID.NotFound`) means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFound {
    /// A new instance EC2 does not show yet (eventual consistency): retry.
    NotYetVisible,
    /// One that was listed a moment ago: terminated and purged since.
    Gone,
}

/// How a flow paces its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Modifies in flight at once, at most.
    pub max_concurrency: usize,
    /// When EC2 throttles after the SDK's own retries: halve the concurrency
    /// and retry (true), or fail the instance (false).
    pub adaptive: bool,
    pub not_found: NotFound,
    /// What the retry budget's end leaves of a change EC2 did not take
    /// yet: a failure (false), or, for a `pending` notification's one try,
    /// a wait for the instance's `running` notification (true).
    pub awaits_running: bool,
}

impl Pacing {
    /// One event's few instances, new ones among them.
    pub const EVENT: Pacing = Pacing {
        max_concurrency: MAX_MODIFY_CONCURRENCY,
        adaptive: false,
        not_found: NotFound::NotYetVisible,
        awaits_running: false,
    };
    /// A `pending` notification's instance: one try, then its `running`
    /// notification decides.
    pub const PENDING: Pacing = Pacing {
        awaits_running: true,
        ..Pacing::EVENT
    };
    /// A region's many instances, at EC2's pace.
    pub const SWEEP: Pacing = Pacing {
        max_concurrency: MAX_MODIFY_CONCURRENCY,
        adaptive: true,
        not_found: NotFound::Gone,
        awaits_running: false,
    };
}

/// Applies remedies at a pace, remembering the concurrency from one batch
/// to the next (a sweep's pages) and counting what EC2 throttled.
#[derive(Debug)]
pub struct Pacer {
    pacing: Pacing,
    concurrency: usize,
    /// Modify calls EC2 throttled even after the SDK's retries.
    pub throttled: u64,
}

impl Pacer {
    pub fn new(pacing: Pacing) -> Self {
        Pacer {
            pacing,
            concurrency: pacing.max_concurrency,
            throttled: 0,
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Applies each remedy (`todo`: index into `reports`, remedy) in rounds
    /// of at most the current concurrency. What cannot be applied ends
    /// `gone` or `failed` in its report; nothing is retried past `deadline`.
    pub async fn remediate(
        &mut self,
        ec2: &impl Ec2Api,
        reports: &mut [InstanceReport],
        todo: Vec<(usize, Remedy)>,
        deadline: Instant,
    ) {
        let mut queue: VecDeque<(usize, Remedy)> = todo.into();
        let mut waits = 0;
        while !queue.is_empty() {
            let n = self
                .concurrency
                .clamp(1, self.pacing.max_concurrency)
                .min(queue.len());
            let round: Vec<(usize, Remedy)> = queue.drain(..n).collect();
            let results = join_all(
                round
                    .iter()
                    .map(|(idx, remedy)| ec2.modify(&reports[*idx].instance_id, remedy)),
            )
            .await;
            let mut throttled = false;
            let mut retry_later = false;
            for ((idx, remedy), result) in round.into_iter().zip(results) {
                let r = &mut reports[idx];
                let Err(e) = result else { continue };
                match self.after_refusal(ec2, &r.instance_id, &e).await {
                    Next::Gone(state) => r.mark_gone(&state),
                    Next::Fail => r.mark_failed(e.to_string()),
                    Next::Retry => {
                        throttled |= e.is_throttle();
                        self.throttled += u64::from(e.is_throttle());
                        if Instant::now() < deadline {
                            retry_later = true;
                            queue.push_back((idx, remedy));
                        } else if self.pacing.awaits_running {
                            // Refused while pending, or not shown yet (this
                            // pacing is not adaptive: a throttle failed above).
                            r.mark_awaiting_running(format!("not taken while pending: {e}"));
                        } else {
                            r.mark_failed(format!(
                                "still refused when the retry budget ran out: {e}"
                            ));
                        }
                    }
                }
            }
            if self.pacing.adaptive {
                self.concurrency = if throttled {
                    (self.concurrency / 2).max(1)
                } else {
                    (self.concurrency + 1).min(self.pacing.max_concurrency)
                };
            }
            if retry_later {
                sleep_until_retry(waits, deadline).await;
                waits += 1;
            }
        }
    }

    /// What to do about an instance whose modify EC2 refused.
    async fn after_refusal(&self, ec2: &impl Ec2Api, id: &str, e: &AwsError) -> Next {
        if e.is_incorrect_state() {
            // Refused: still pending, or already on its way out?
            let state = match ec2.describe(&[id.to_string()]).await {
                Ok(found) => found.first().and_then(|o| o.state.clone()),
                Err(_) => None,
            };
            return match state {
                Some(state) if is_gone(&state) => Next::Gone(state),
                _ => Next::Retry,
            };
        }
        if e.is_not_found() {
            return match self.pacing.not_found {
                NotFound::Gone => Next::Gone("no longer there".into()),
                NotFound::NotYetVisible => Next::Retry,
            };
        }
        if e.is_throttle() && self.pacing.adaptive {
            return Next::Retry;
        }
        Next::Fail
    }
}

enum Next {
    Retry,
    Gone(String),
    Fail,
}

/// The wait before retry number `attempt` (from 0): doubling from half a
/// second, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF)
}

async fn sleep_until_retry(attempt: u32, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(backoff(attempt).min(left)).await;
}

/// Why an instance could not be looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unseen {
    /// EC2 did not show it by the deadline (a new instance, not visible yet).
    NotShown(String),
    /// The call failed (a missing permission, throttling, an outage).
    Failed(String),
}

impl Unseen {
    pub fn why(&self) -> &str {
        match self {
            Unseen::NotShown(w) | Unseen::Failed(w) => w,
        }
    }
}

/// Describes `ids`, retrying those EC2 does not show yet (new instances)
/// until `deadline`. Returns what was seen and, per id, why it could not be.
pub async fn look(
    ec2: &impl Ec2Api,
    ids: &[String],
    deadline: Instant,
    budget: Duration,
) -> (HashMap<String, Observed>, HashMap<String, Unseen>) {
    let mut seen = HashMap::new();
    let mut missing: Vec<String> = ids.to_vec();
    let mut attempt = 0;
    loop {
        match ec2.describe(&missing).await {
            Ok(found) => {
                for o in found {
                    missing.retain(|id| id != &o.instance_id);
                    seen.insert(o.instance_id.clone(), o);
                }
                if missing.is_empty() {
                    return (seen, HashMap::new());
                }
            }
            // An InstanceIds-style lookup answers NotFound for new ids: retry.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                let why = Unseen::Failed(e.to_string());
                return (
                    seen,
                    missing.into_iter().map(|id| (id, why.clone())).collect(),
                );
            }
        }
        if Instant::now() >= deadline {
            let why = Unseen::NotShown(format!(
                "EC2 did not show the instance within {}s (DescribeInstances)",
                budget.as_secs()
            ));
            return (
                seen,
                missing.into_iter().map(|id| (id, why.clone())).collect(),
            );
        }
        sleep_until_retry(attempt, deadline).await;
        attempt += 1;
    }
}

/// The instances of a launch whose event did not list them, by its
/// reservation id or client token, retried while EC2 shows fewer than the
/// launch asked for at least (a new reservation may take a moment to
/// appear). `Err` says why they were not all found.
pub async fn look_launch(
    ec2: &impl Ec2Api,
    lookup: &Lookup,
    deadline: Instant,
    budget: Duration,
) -> Result<Vec<Observed>, String> {
    let by = match (&lookup.reservation_id, &lookup.client_token) {
        (Some(r), _) => format!("reservation id {r}"),
        (None, Some(t)) => format!("client token {t}"),
        (None, None) => return Err("it names neither a reservation id nor a client token".into()),
    };
    // At least what the launch asked for at least (one when it does not
    // say): fewer means EC2 does not show them all yet.
    let want = lookup.min_count.unwrap_or(1).max(1) as usize;
    let mut attempt = 0;
    let mut seen;
    loop {
        match ec2.describe_launch(lookup).await {
            Ok(found) if found.len() >= want => return Ok(found),
            Ok(found) => seen = found.len(),
            Err(e) => return Err(format!("looking its instances up by {by} failed: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(if seen == 0 {
                format!(
                    "EC2 showed no instance with {by} within {}s (DescribeInstances)",
                    budget.as_secs()
                )
            } else {
                format!(
                    "EC2 showed {seen} instance(s) with {by} within {}s, of at least {want} the launch started (DescribeInstances)",
                    budget.as_secs()
                )
            });
        }
        sleep_until_retry(attempt, deadline).await;
        attempt += 1;
    }
}

/// The acting half of the one pipeline, the same for an event and a
/// sweep page (only the pace and the deadline differ): the admitted
/// remedies applied at `pacer`'s pace until `deadline`, the status tags
/// written, and, with `CHECK_METADATA_NO_TOKEN`, each instance switched
/// remembered at `memory`'s partition, so a later sweep can see whether it has
/// refused IMDSv1 calls since.
#[allow(clippy::too_many_arguments)]
pub async fn carry_out<M: MemoryApi>(
    cfg: &Config,
    ec2: &impl Ec2Api,
    pacer: &mut Pacer,
    reports: &mut [InstanceReport],
    todo: Vec<(usize, Remedy)>,
    deadline: Instant,
    memory: Option<(&M, &str)>,
) {
    pacer.remediate(ec2, reports, todo, deadline).await;
    write_tags(ec2, &cfg.status_tag_key, cfg.mode, reports).await;
    if let Some((memory, partition)) = memory {
        remember_remediated(memory, partition, cfg, reports).await;
    }
}

/// Whether a switch of this instance is remembered, to be watched with
/// `MetadataNoTokenRejected` afterwards: every one with
/// `CHECK_METADATA_NO_TOKEN`, and a version-gated launcher's whatever it
/// says (its metric showed zero, but an old agent fails at its next
/// restart).
pub fn remembers(cfg: &Config, r: &InstanceReport) -> bool {
    cfg.check_metadata_no_token || r.needs_version.is_some()
}

/// Remembers when the guard required tokens on each instance it remediated
/// (that `remembers` names), so a sweep can watch what that broke
/// (`MetadataNoTokenRejected` since then). A failure to remember costs only
/// that watch: it is logged, and the remediation stands.
pub async fn remember_remediated(
    memory: &impl MemoryApi,
    partition: &str,
    cfg: &Config,
    reports: &[InstanceReport],
) {
    let now = now_secs();
    let lookback = cfg.no_token_lookback;
    let records: Vec<Record> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Remediated && remembers(cfg, r))
        .map(|r| {
            let mut record = Record::new(
                Kind::Remediated,
                partition,
                &r.instance_id,
                None,
                now,
                lookback,
            );
            // The last reading before the switch: the metric is zero after.
            if let Some(Ok(n)) = r.metadata_no_token.map(|n| serde_json::to_string(&n)) {
                record.data.insert(crate::memory::NO_TOKEN_BEFORE.into(), n);
            }
            record
        })
        .collect();
    if records.is_empty() {
        return;
    }
    if let Err(e) = memory.put(&records).await {
        warn!(%partition, count = records.len(), error = %e, "remediations could not be remembered; MetadataNoTokenRejected is not watched for them");
    }
}

/// Tags what was acted on, one `CreateTags` call per value (see
/// `plan::tag_batches`). A failed tag is an error on each instance; in
/// notify mode, where tagging was the whole action, the instance fails.
pub async fn write_tags(ec2: &impl Ec2Api, key: &str, mode: Mode, reports: &mut [InstanceReport]) {
    for batch in tag_batches(mode, reports) {
        let result = ec2.tag(&batch.ids, key, batch.value).await;
        let ids: HashSet<&String> = batch.ids.iter().collect();
        for r in reports.iter_mut().filter(|r| ids.contains(&r.instance_id)) {
            match &result {
                Ok(()) => r.action.push(Step::Tagged {
                    key: key.to_string(),
                    value: batch.value.to_string(),
                }),
                Err(e) => {
                    r.error = Some(format!("tagging failed: {e}"));
                    if r.outcome == Outcome::Flagged && mode == Mode::Notify {
                        r.outcome = Outcome::Failed;
                    }
                }
            }
        }
    }
}

/// Carries out a decision about the account default (`plan`): `Err` is the
/// action to report as it is; `Ok` sets `HttpTokens=required` and reports
/// `done`, or `failed` with the error. `defaults`, when known, is updated.
pub async fn apply_default(
    ec2: &impl Ec2Api,
    decision: Result<(), DefaultsAction>,
    done: DefaultsAction,
    failed: DefaultsAction,
    defaults: Option<&mut AccountDefaults>,
) -> (DefaultsAction, Option<String>) {
    match decision {
        Err(action) => (action, None),
        Ok(()) => match ec2.require_tokens_by_default().await {
            Ok(()) => {
                if let Some(d) = defaults {
                    d.http_tokens = Some("required".into());
                }
                (done, None)
            }
            Err(e) => (
                failed,
                Some(format!("could not set the account default: {e}")),
            ),
        },
    }
}

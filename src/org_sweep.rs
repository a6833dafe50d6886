//! The organization sweep fanned out on Step Functions: the three steps the
//! state machine runs (template.yaml's `SweepStateMachine`), each a typed
//! payload to the same function. Plan lists the accounts and regions (and,
//! below the threshold, sweeps them here, as one invocation always did);
//! each shard sweeps one account and records its report in the guard's
//! memory; summarize reads every record of the run and tells one summary.
//! The engine runs the shards in parallel, retries them, and never lets
//! one's failure stop the others.

use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::aws::{Clients, MemoryApi};
use crate::cap;
use crate::clock::now_secs;
use crate::config::{Config, SweepAccounts, SweepScope};
use crate::delivery::Sent;
use crate::error::GuardError;
use crate::event::{self, EventContext};
use crate::fanout::{fans_out, rerun_accounts, FanOutStep, OrgSummary, Plan};
use crate::memory::{self, Kind, Record};
use crate::outbox::Keep;
use crate::sweep::Sweep;

/// A shard's report as recorded: small enough for one DynamoDB item
/// (400 KB) with room to spare; its instance list is cut to fit (failed
/// ones first), its counts cover every instance.
const MAX_SHARD_RECORD: usize = 16 * 1024;

pub struct FanOut<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> FanOut<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        FanOut { cfg, clients }
    }

    /// Runs one step; its answer is what the state machine reads next.
    pub async fn step(
        &self,
        step: FanOutStep,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        match step {
            FanOutStep::Plan { run, input } => self.plan(run, &input, deadline).await,
            FanOutStep::Shard { run, account } => self.shard(&run, &account, deadline).await,
            FanOutStep::ShardFailed {
                run,
                account,
                error,
            } => self.shard_failed(&run, &account, &error).await,
            FanOutStep::Summarize { run: _, plan } => self.summarize(&plan).await,
        }
    }

    /// What the run covers: the deployment's accounts, and its regions or
    /// else the function's own (the region its clients are configured in;
    /// a step names no region of its own, as a scheduled event does).
    fn scope(&self) -> SweepScope {
        SweepScope::configured(self.cfg, self.clients.home_region().as_deref())
    }

    /// Lists what to sweep. Without central mode, or below the threshold,
    /// sweeps it here (the single-invocation sweep, with its one summary)
    /// and hands the map nothing.
    async fn plan(
        &self,
        run: String,
        input: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        // A re-run of some shards: those accounts only (still within
        // ALLOWED_ACCOUNT_IDS).
        let scope = match rerun_accounts(input) {
            Ok(Some(list)) => self.scope().in_accounts(SweepAccounts::Listed(list)),
            Ok(None) => self.scope(),
            Err(e) => return Err(GuardError::Incomplete { summary: e }),
        };
        let regions = scope.regions.clone();
        let cfg = self.cfg;
        let sweep = Sweep::new(cfg, self.clients);
        let (accounts, not_allowed, error) = match sweep.targets(&scope.accounts).await {
            Ok((accounts, refused)) => (accounts, refused, None),
            Err(e) => (Vec::new(), Vec::new(), Some(e)),
        };
        let central = cfg.member_role.is_some() && scope.names_accounts();
        let count = accounts.len() * regions.len();
        let mut plan = Plan {
            run,
            single: !central || !fans_out(count, self.cfg.fanout_threshold),
            accounts: accounts.into_iter().flatten().collect(),
            regions: regions.clone(),
            not_allowed,
            concurrency: self.cfg.fanout_concurrency,
            error,
        };
        if plan.error.is_some() {
            // Nothing to map over: the summary says why, and fails the run.
            plan.single = false;
            plan.accounts.clear();
            return Ok(serde_json::to_value(&plan).unwrap_or(Value::Null));
        }
        if plan.single {
            info!(
                account_regions = count,
                threshold = self.cfg.fanout_threshold,
                "small enough for one invocation: sweeping here"
            );
            let ctx = EventContext {
                event_name: event::SWEEP.into(),
                region: regions.first().cloned().unwrap_or_default(),
                ..EventContext::default()
            };
            let result = sweep.run(ctx, &scope, deadline, &|_| {}).await;
            // As the single sweep function's: its metrics, failed or not.
            match &result {
                Ok(report) => crate::telemetry::emit_metrics(self.cfg, report),
                Err(GuardError::Unhandled { report, .. }) => {
                    crate::telemetry::emit_metrics(self.cfg, report)
                }
                Err(_) => {}
            }
            let report = result?;
            plan.accounts.clear();
            let mut out = serde_json::to_value(&plan).unwrap_or(Value::Null);
            out["tally"] = json!(report.tally());
            return Ok(out);
        }
        info!(
            shards = plan.accounts.len(),
            account_regions = count,
            "fanning out"
        );
        Ok(serde_json::to_value(&plan).unwrap_or(Value::Null))
    }

    /// Sweeps one account's regions and records the report for the summary.
    /// The shard's own failures (a region not swept) are in its report;
    /// only a failure to record it fails the invocation, for the engine to
    /// retry.
    async fn shard(
        &self,
        run: &str,
        account: &str,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        // A shard naming an account the guard may not enter (a forged or
        // stale state-machine input) fails, with the reason, for the
        // summary: nothing is looked at there.
        if let Some(why) =
            crate::account_region::AccountRegion::<C>::refuses(self.cfg, Some(account))
        {
            warn!(%account, reason = %why, "shard refused");
            self.record(Record::shard(run, account, Err(why), now_secs()))
                .await?;
            return Ok(json!({"account": account, "status": "failed"}));
        }
        // The shard's one account, in the run's regions.
        let scope = self
            .scope()
            .in_accounts(SweepAccounts::Listed(vec![account.to_string()]));
        let ctx = EventContext {
            event_name: event::SWEEP.into(),
            account: Some(account.to_string()),
            region: scope.regions.first().cloned().unwrap_or_default(),
            ..EventContext::default()
        };
        let (report, to_remember) = Sweep::new(self.cfg, self.clients)
            .collect(ctx, &scope, deadline, &|_| {})
            .await;
        // What the single sweep would fail its invocation for fails the
        // shard in the summary: regions, instances, sources, the default.
        crate::telemetry::emit_metrics(self.cfg, &report);
        let failure = crate::plan::failure_summary(&report, None);
        let complete = failure.is_none();
        let mut record = Record::shard(run, account, Ok(record_json(&report)), now_secs());
        if let Some(f) = failure {
            record.data.insert(memory::SHARD_FAILURE.into(), f);
        }
        // What the run's summary tells of, remembered once it is sent:
        // instances told of, and the ends of break-glass grants.
        let (noticed, marked): (Vec<Record>, Vec<Record>) = to_remember
            .into_iter()
            .partition(|r| r.is_kind(memory::Kind::Noticed));
        if !marked.is_empty() {
            let lines: Vec<String> = marked.iter().map(Record::mark_line).collect();
            record
                .data
                .insert(memory::SHARD_MARKS.into(), lines.join("\n"));
        }
        if !noticed.is_empty() {
            let told: Vec<String> = noticed
                .iter()
                .map(|r| format!("{} {}", r.pk, r.id()))
                .collect();
            record
                .data
                .insert(memory::SHARD_TOLD.into(), told.join("\n"));
        }
        self.record(record).await?;
        info!(%account, tally = %report.tally(), complete, "shard swept");
        Ok(json!({"account": account, "status": if complete { "swept" } else { "failed" }}))
    }

    /// The engine gave up on a shard: its error is recorded, so the summary
    /// names it.
    async fn shard_failed(
        &self,
        run: &str,
        account: &str,
        error: &Value,
    ) -> Result<Value, GuardError> {
        let why = match (error.get("Error"), error.get("Cause")) {
            (Some(e), Some(c)) => format!(
                "{}: {}",
                e.as_str().unwrap_or(""),
                crate::validate::clean(c.as_str().unwrap_or(""), 500)
            ),
            _ => crate::validate::clean(&error.to_string(), 500),
        };
        warn!(%account, error = %why, "the engine gave up on a shard");
        self.record(Record::shard(run, account, Err(why), now_secs()))
            .await?;
        Ok(json!({"account": account, "status": "failed"}))
    }

    async fn record(&self, r: Record) -> Result<(), GuardError> {
        let Some(memory) = self.clients.memory() else {
            return Err(GuardError::Incomplete {
                summary: "the fan-out needs the guard's memory (MEMORY_TABLE) to record shards"
                    .into(),
            });
        };
        memory.put(&[r]).await.map_err(|e| GuardError::Incomplete {
            summary: format!("the shard's report could not be recorded (the engine retries): {e}"),
        })
    }

    /// Every shard's record, as one summary: every planned shard counted
    /// swept, failed or not reached; one notification within SNS's limit.
    /// The invocation (and so the execution) fails, naming them, when any
    /// shard did not end swept.
    async fn summarize(&self, plan: &Plan) -> Result<Value, GuardError> {
        let mut summary = OrgSummary::new(plan, self.cfg.mode.as_str());
        let mut recorded = Vec::new();
        if let Some(e) = &plan.error {
            summary.problems.push(crate::fanout::ShardProblem {
                account: "the plan".into(),
                status: crate::fanout::ShardStatus::Failed,
                error: e.clone(),
            });
            summary.failed += 1;
        }
        // The memory's protection, once for the whole run (as a sweep's).
        if let Some(m) = crate::sweep::Sweep::new(self.cfg, self.clients)
            .memory_problem()
            .await
        {
            summary.problems.push(crate::fanout::ShardProblem {
                account: "the guard's memory".into(),
                status: crate::fanout::ShardStatus::Failed,
                error: format!("MEMORY UNPROTECTED: not as the stack made it ({m})"),
            });
            summary.failed += 1;
        }
        let Some(memory) = self.clients.memory() else {
            return Err(GuardError::Incomplete {
                summary: "the fan-out needs the guard's memory (MEMORY_TABLE)".into(),
            });
        };
        // Page by page: at most one page of records is held at a time.
        let mut told: Vec<(String, String)> = Vec::new();
        let mut marks: Vec<Record> = Vec::new();
        let mut after = None;
        loop {
            let (records, next) = memory
                .query_page(
                    &Record::run_partition(&plan.run),
                    Kind::Shard.prefix(),
                    now_secs(),
                    after,
                )
                .await
                .map_err(|e| GuardError::Incomplete {
                    summary: format!("the shards' records could not be read: {e}"),
                })?;
            for r in &records {
                summary.add(r.id(), r.shard_outcome(), r.shard_failure());
                recorded.push(r.id().to_string());
                told.extend(r.shard_told());
                marks.extend(r.shard_marks(now_secs()));
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        summary.finish(plan, &recorded);
        let message = summary.notification();
        // No retry would find this message again: a message SNS refuses is
        // kept for a person, and the run fails saying where it is.
        let outbox = crate::outbox::Outbox::new(self.cfg, self.clients);
        let delivery = outbox
            .send(&message, self.cfg.chat_notifications, Keep::Queue)
            .await;
        if let Sent::Failed {
            why, kept, refused, ..
        } = &delivery.sent
        {
            let kept = match (kept.is_empty(), refused.first()) {
                (false, _) => "kept in the failed-events queue".to_string(),
                (true, Some((_, k))) => format!("and could not be kept in the failed-events queue ({k}): it is in this function's log"),
                (true, None) => "and there is no failed-events queue (FAILED_EVENTS_QUEUE_URL) to keep it in: it is in this function's log".to_string(),
            };
            return Err(GuardError::Incomplete {
                summary: format!("the summary could not be published ({why}); {kept}"),
            });
        }
        let notification = delivery.to_string();
        if delivery.published() && !marks.is_empty() {
            if let Err(e) = memory.put(&marks).await {
                warn!(error = %e, "the ends of break-glass grants told could not be remembered; the next run tells them again");
            }
        }
        if delivery.published() && !told.is_empty() {
            let now = now_secs();
            let records: Vec<Record> = told
                .iter()
                .map(|(partition, id)| {
                    Record::new(
                        Kind::Noticed,
                        partition,
                        id,
                        None,
                        now,
                        self.cfg.no_token_lookback,
                    )
                    .told()
                })
                .collect();
            if let Err(e) = memory.put(&records).await {
                warn!(error = %e, "what the run told of could not be remembered; the next run lists it again");
            }
        }
        // The same summary on the bus, for people's own routing: after the
        // told records, so a bus that fails does not have a retry tell
        // everyone again.
        let routed = match &self.cfg.event_bus {
            None => None,
            Some(bus) => {
                // Handed off, the event names where the run was planned
                // (the function's own account and first region).
                let region = self.scope().regions.into_iter().next().unwrap_or_default();
                outbox
                    .route(
                        bus,
                        None,
                        &region,
                        &[crate::routing::sweep_finished(self.cfg.mode, &message.body)],
                    )
                    .await
            }
        };
        if let Some(e) = routed.as_ref().and_then(|r| r.errors.first()) {
            return Err(GuardError::Incomplete {
                summary: format!("the summary could not be put on the bus: {e}"),
            });
        }
        info!(
            run = %plan.run, planned = summary.planned, swept = summary.swept,
            failed = summary.failed, not_reached = summary.not_reached,
            ready = summary.ready, account_regions = summary.account_regions,
            %notification, "organization sweep summarized"
        );
        if let Some(failure) = summary.failure() {
            error!("{failure}");
            return Err(GuardError::Incomplete { summary: failure });
        }
        Ok(json!({
            "run": plan.run, "planned": summary.planned, "swept": summary.swept,
            "failed": summary.failed, "not_reached": summary.not_reached,
            "ready": summary.ready, "account_regions": summary.account_regions,
            "notification": notification,
            "routed": routed,
        }))
    }
}

/// A shard's report as recorded: the instance list cut to fit the record
/// (failed ones first; `omitted_instances` counts the rest).
fn record_json(report: &crate::report::Report) -> String {
    let mut r = report.clone();
    // The rollout without its sentences: the summary rolls up statuses and
    // blocker kinds, and the record stays within its size.
    if let Some(s) = r.sweep.as_mut() {
        s.native_enforcement = s
            .native_enforcement
            .as_ref()
            .map(crate::rollout::Rollout::compact);
    }
    r.instances
        .sort_by_key(|i| i.outcome != crate::report::Outcome::Failed);
    let all = std::mem::take(&mut r.instances);
    let fitted = cap::fit(MAX_SHARD_RECORD, &[all.len()], |shown| {
        let mut view = r.clone();
        view.instances = all[..shown[0]].to_vec();
        if let Some(s) = view.sweep.as_mut() {
            s.omitted_instances += (all.len() - shown[0]) as u64;
        }
        serde_json::to_string(&view).unwrap_or_default()
    });
    fitted.map(|f| f.text).unwrap_or_else(|| {
        // Even without instances it does not fit (thousands of sources):
        // the counts and readiness are what the summary needs.
        let mut bare = r.clone();
        if let Some(s) = bare.sweep.as_mut() {
            s.sources.truncate(50);
            s.omitted_instances += all.len() as u64;
        }
        serde_json::to_string(&bare).unwrap_or_default()
    })
}

//! The fleet sweep: catches what events miss (instances launched before the
//! guardrail, events EventBridge never delivered). Each region is listed page
//! by page, so memory stays bounded by a page and the instances with news;
//! every instance is decided by the same plan as the event path and acted on
//! through the same layer (`remedies`, at the sweep's pace); one report and one
//! notification sum the sweep up, with each region's account defaults and
//! its readiness for AWS's own `HttpTokensEnforced`.

mod budget;
mod callers;
mod page;
mod recall;
mod region;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::account_region::{AccountRegion, Closed};
use crate::aws::{Account, AwsError, Clients, Ec2Api, MemoryApi, MetricsApi};
use crate::breaker::{self, Tripped};
use crate::clock::now_secs;
use crate::config::{Config, Mode, SweepAccounts, SweepScope};
use crate::error::{conclude, GuardError};
use crate::event::{EventContext, Observed, Trigger};
use crate::finding::FindingsReport;
use crate::findings::RegionFindings;
use crate::memory::{self, Kind, Record};
use crate::outbox::{filer, Outbox};
use crate::plan::{awaits_proof, hold_back, plan, sweep_default_action, unread_metric, V1Use};
use crate::policy::{readiness, Remedy, SweepFacts};
use crate::remedies::{apply_default, Pacer, Pacing};
use crate::report::{
    Access, AccountSweep, DefaultsAction, InstanceReport, Outcome, Refusing, RegionSweep, Report,
    Status, SweepSummary, MAX_REFUSING,
};
use crate::source::{attribution, SourceKind, SourceOutcome, SourceReport};
use crate::sources::Sources;
use crate::telemetry::log_decision;
use crate::validate::is_account_id;

/// Instances with news kept in the report, across regions; beyond this only
/// counts grow (failed instances are always kept: they must be named).
pub const MAX_LISTED: usize = 1000;
/// Passes over a region's filtered listing, at most (see `list_and_act`).
const MAX_PASSES: u32 = 5;
/// A sweep stops taking new pages this long before the function's timeout,
/// so it can still tag, notify and report what it did.
pub const STOP_MARGIN: Duration = Duration::from_secs(30);

/// Where a sweep is, for a progress line.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Set when the sweep covers a list of accounts.
    pub account: Option<&'a str>,
    pub region: &'a str,
    pub pages: u64,
    pub examined: u64,
    pub acted: u64,
}

/// One region of one account: its summary and the instances with news.
struct RegionResult {
    summary: RegionSweep,
    listed: Vec<InstanceReport>,
    omitted: u64,
    /// The account EC2 says owns the instances listed.
    owner: Option<String>,
    /// Whose credentials acted here.
    who: Account,
    /// Instances the guard switched that refuse IMDSv1 calls since.
    refusing: Vec<Refusing>,
    /// Every instance decided here (with a server-side filter): a second
    /// pass over the listing skips them.
    decided: std::collections::HashSet<String>,
    /// Whether this sweep changed an instance here (which, with a filter,
    /// can shift the listing's later pages).
    changed: bool,
    /// The instances a person was already told of (the guard's memory),
    /// read on the first page that needs it.
    noticed: Option<std::collections::HashSet<String>>,
    /// What this sweep tells of for the first time, remembered once the
    /// summary is sent.
    to_remember: Vec<Record>,
    /// The exemptions the guard recorded at launch here, by instance, read
    /// on the first page that needs them.
    exemptions: Option<HashMap<String, Record>>,
    /// Noncompliant instances carrying a legacy `exempt` status tag, which
    /// is not honoured (warned of in the summary).
    legacy: u64,
    /// Exemption records no longer honoured (their glob is not configured),
    /// by instance: not renewed, and warned of in the summary.
    lapsed: Vec<(String, String)>,
    /// Noncompliant instances by the source that launched them (their
    /// `aws:autoscaling:groupName` / `aws:ec2launchtemplate:id` tags).
    attributed: HashMap<(SourceKind, String), u64>,
    /// The region's noncompliant sources, and whether they could be read.
    sources: Vec<SourceReport>,
    sources_read: bool,
    /// The guard's findings here (`SECURITY_HUB_FINDINGS`), reconciled page
    /// by page; what they came to once the region is done.
    findings: Option<RegionFindings>,
    findings_report: Option<FindingsReport>,
    /// The break-glass grants here (the guard's memory), read once, and
    /// the instances any of them covers (in force or ended).
    grants: Option<Vec<Record>>,
    granted: std::collections::HashSet<String>,
    /// Changes this run admitted here, and the instances here (counted only
    /// once the circuit breaker's share matters).
    changes: u64,
    total: Option<u64>,
    tripped: Option<Tripped>,
    /// Since when the guard has enforced here (`watch`).
    since: Option<u64>,
    /// With `LOOKUP_IMDSV1_CALLERS`: what CloudTrail is asked about each
    /// noncompliant instance decided here, and, of them, those left at
    /// `optional` (the last mile's candidates, `callers.rs`).
    candidates: HashMap<String, callers::Candidate>,
    last_mile: Vec<callers::Candidate>,
}

/// Records what the breaker held in a region.
fn trip(out: &mut RegionResult, tripped: Option<Tripped>) {
    if let Some(t) = tripped {
        out.summary.held_by_breaker += t.held;
        out.tripped.get_or_insert_with(Tripped::default).merge(t);
    }
}

/// Every instance in the region that can still serve IMDS, counted (the
/// circuit breaker's share is of all of them, not only those at `optional`).
async fn count_instances(ec2: &impl Ec2Api) -> Result<u64, AwsError> {
    let mut total = 0u64;
    let mut token = None;
    loop {
        let page = ec2.list_page(false, token).await?;
        total += page.instances.len() as u64;
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(total),
        }
    }
}

/// A sweep of regions, in the accounts configured, with the configuration
/// and clients it acts with.
pub struct Sweep<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
    /// Sees every instance decided, not only those with news (the command
    /// line's `--output csv|html`): what the report's caps leave out.
    every: Option<&'a (dyn Fn(&InstanceReport) + Sync)>,
    /// Changes this run may still make in the account being swept
    /// (`MAX_CHANGES_PER_RUN`), shared by its regions, whatever each runs
    /// in. Each account has its own, as each fan-out shard does: one
    /// account's fleet cannot spend another's.
    run_room: Arc<AtomicU64>,
}

impl<'a, C: Clients> Sweep<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        Sweep {
            cfg,
            clients,
            every: None,
            run_room: Arc::new(AtomicU64::new(cfg.max_changes_per_run)),
        }
    }

    /// The same run, in an account that runs under `cfg` (its own mode),
    /// with that account's room for changes.
    fn for_account<'b>(&'b self, cfg: &'b Config, room: Arc<AtomicU64>) -> Sweep<'b, C> {
        Sweep {
            cfg,
            clients: self.clients,
            every: self.every,
            run_room: room,
        }
    }

    /// Hands every instance decided to `every`, with its account and region.
    pub fn with_every(mut self, every: &'a (dyn Fn(&InstanceReport) + Sync)) -> Self {
        self.every = Some(every);
        self
    }

    fn seen(&self, out: &RegionResult, r: &InstanceReport) {
        if let Some(every) = self.every {
            let mut r = r.clone();
            r.region = Some(out.summary.region.clone());
            r.account = out.summary.account.clone().or_else(|| out.owner.clone());
            every(&r);
        }
    }

    /// Sweeps what `scope` covers (the deployment's, `SweepScope::configured`, or
    /// one the caller names), a few account-region pairs at a time. The
    /// report holds each pair's counts, account defaults and readiness, one
    /// line per account, and the instances with news; the invocation fails,
    /// naming them, when an instance, a region or an account could not be
    /// handled.
    pub async fn run(
        &self,
        ctx: EventContext,
        scope: &SweepScope,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<Report, GuardError> {
        let (mut report, to_remember) = self.collect(ctx, scope, deadline, progress).await;
        // Once a run (a fan-out's summary checks it for the whole run).
        if let Some(s) = report.sweep.as_mut() {
            s.memory = self.memory_problem().await;
        }
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, None)
            .await;
        let notify_error = delivery.error().map(str::to_string);
        if delivery.published() && !to_remember.is_empty() {
            if let Some(memory) = self.clients.memory() {
                if let Err(e) = memory.put(&to_remember).await {
                    warn!(error = %e, "what the sweep told of could not be remembered; the next sweep lists it again");
                }
            }
        }
        conclude(report, notify_error)
    }

    /// The accounts `accounts` names (`None`: the function's own), and
    /// those `ALLOWED_ACCOUNT_IDS` leaves out.
    pub async fn targets(
        &self,
        accounts: &SweepAccounts,
    ) -> Result<(Vec<Option<String>>, Vec<String>), String> {
        match accounts {
            SweepAccounts::Own => Ok((vec![None], Vec::new())),
            SweepAccounts::Listed(list) => {
                let (allowed, refused): (Vec<String>, Vec<String>) = list
                    .iter()
                    .cloned()
                    .partition(|a| self.cfg.refusal(Some(a)).is_none());
                Ok((allowed.into_iter().map(Some).collect(), refused))
            }
            SweepAccounts::Organization => match self.clients.organization_accounts().await {
                Ok(list) => {
                    let (allowed, refused): (Vec<String>, Vec<String>) = list
                        .into_iter()
                        .partition(|a| self.cfg.refusal(Some(a)).is_none());
                    Ok((allowed.into_iter().map(Some).collect(), refused))
                }
                Err(e) => Err(format!(
                    "the organization's accounts could not be listed: {e}"
                )),
            },
        }
    }

    /// The sweep without its notification: the report, and what to
    /// remember once a person has been told (a fan-out shard's report is
    /// told in the run's one summary instead).
    pub async fn collect(
        &self,
        ctx: EventContext,
        scope: &SweepScope,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> (Report, Vec<Record>) {
        let mut report = Report::handled(Status::Swept, self.cfg.mode, ctx);
        let regions: Vec<&String> = scope.regions.iter().filter(|r| !r.is_empty()).collect();
        if regions.is_empty() {
            report.unreadable.push(
                "the scheduled event names no region and SWEEP_REGIONS is not set: nothing swept"
                    .into(),
            );
        }
        let mut accounts: Vec<AccountSweep> = Vec::new();
        let mut to_remember: Vec<Record> = Vec::new();
        let targets: Vec<Option<String>> = match self.targets(&scope.accounts).await {
            Ok((allowed, refused)) => {
                // Accounts of the organization left out of the allow list
                // are out of scope, by choice: counted, not errors.
                accounts.extend(refused.into_iter().map(|a| AccountSweep {
                    access: Access::NotAllowed,
                    ..AccountSweep::new(&a)
                }));
                allowed
            }
            Err(e) => {
                report.unreadable.push(e);
                Vec::new()
            }
        };
        let pairs: Vec<(Option<String>, String)> = targets
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.to_string())))
            .collect();
        // Each account in the mode set for it or its unit (`modes`).
        let mut own: HashMap<Option<String>, (Config, Option<String>)> = HashMap::new();
        // Each account's nearest unit, or why it could not be read.
        let mut units: HashMap<Option<String>, Result<String, String>> = HashMap::new();
        // An organization's sweep reads each account's units for the
        // rollout's roll-up (the deployment's, or one the command line asks).
        let learn = self.cfg.learns_units()
            || (self.cfg.member_role.is_some() && scope.accounts == SweepAccounts::Organization);
        if self.cfg.has_overrides() || learn {
            for a in &targets {
                let id = match a {
                    Some(a) => Some(a.clone()),
                    None => self.clients.home_account().await.ok(),
                };
                if let Some(id) = id {
                    let (mut c, why, nearest) =
                        crate::modes::from_organization(self.cfg, self.clients, &id, learn).await;
                    if let Some(u) = nearest {
                        units.insert(a.clone(), Ok(u));
                    }
                    if self.cfg.has_overrides() {
                        c.overrides.clear();
                        own.insert(a.clone(), (c, why));
                    } else if let Some(why) = why {
                        // Read for the roll-up alone: said, never silent.
                        units.insert(a.clone(), Err(why));
                    }
                }
            }
        }
        let own = &own;
        let units = &units;
        // Each account its own MAX_CHANGES_PER_RUN.
        let rooms: HashMap<Option<String>, Arc<AtomicU64>> = targets
            .iter()
            .map(|a| {
                let room = Arc::new(AtomicU64::new(self.cfg.max_changes_per_run));
                (a.clone(), room)
            })
            .collect();
        let rooms = &rooms;
        let per_pair = MAX_LISTED / pairs.len().max(1);
        let results: Vec<RegionResult> = stream::iter(pairs)
            .map(|(account, region)| async move {
                let room = rooms[&account].clone();
                let (unit, unread) = match units.get(&account) {
                    Some(Ok(u)) => (Some(u.clone()), None),
                    Some(Err(why)) => (None, Some(why.clone())),
                    None => (None, None),
                };
                let Some((cfg, why)) = own.get(&account) else {
                    let mut r = self
                        .for_account(self.cfg, room)
                        .region(account.as_deref(), &region, per_pair, deadline, progress)
                        .await;
                    r.summary.unit = unit;
                    r.summary.warnings.extend(unread);
                    return r;
                };
                let mut r = self
                    .for_account(cfg, room)
                    .region(account.as_deref(), &region, per_pair, deadline, progress)
                    .await;
                r.summary.mode = Some(cfg.mode);
                r.summary.unit = unit;
                r.summary.warnings.extend(why.clone());
                r
            })
            .buffered(self.cfg.sweep_concurrency)
            .collect()
            .await;

        let mut sweep = SweepSummary {
            regions: Vec::with_capacity(results.len()),
            ..SweepSummary::default()
        };
        let listed_accounts = scope.names_accounts();
        // Whose each region is, for the rollout's command (a sweep of the
        // caller's own account names no account in its regions).
        let mut owners: Vec<Option<String>> = Vec::with_capacity(results.len());
        for r in results {
            owners.push(r.summary.account.clone().or_else(|| r.owner.clone()));
            if let Some(ctx) = report.event.as_mut().filter(|c| c.account.is_none()) {
                ctx.account = r.owner.clone();
            }
            if listed_accounts {
                let id = r.summary.account.clone().unwrap_or_default();
                let pos = accounts
                    .iter()
                    .position(|a| a.account == id)
                    .unwrap_or_else(|| {
                        accounts.push(AccountSweep::new(&id));
                        accounts.len() - 1
                    });
                accounts[pos].add(&r.summary, r.who == Account::Home);
            }
            report.instances.extend(r.listed);
            to_remember.extend(r.to_remember);
            let room = MAX_REFUSING.saturating_sub(sweep.refusing_imdsv1.len());
            sweep
                .refusing_imdsv1
                .extend(r.refusing.into_iter().take(room));
            sweep.omitted_instances += r.omitted;
            sweep.sources.extend(r.sources);
            if let Some(t) = r.tripped {
                report.breaker.get_or_insert_with(Tripped::default).merge(t);
            }
            if let Some(f) = r.findings_report {
                report
                    .security_hub
                    .get_or_insert_with(FindingsReport::default)
                    .merge(f);
            }
            sweep.regions.push(r.summary);
        }
        // The sources that launched the most noncompliant instances first.
        sweep
            .sources
            .sort_by(|a, b| b.instances.cmp(&a.instances).then(a.id.cmp(&b.id)));
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        sweep.accounts = accounts;
        if owners.iter().any(Option::is_none) {
            // A region with no instance names no owner: the caller's own.
            let home = self.clients.home_account().await.ok();
            for o in owners.iter_mut().filter(|o| o.is_none()) {
                o.clone_from(&home);
            }
        }
        sweep.native_enforcement = Some(crate::rollout::Rollout::of(
            sweep
                .regions
                .iter()
                .zip(&owners)
                .map(|(r, owner)| {
                    let mut f = r.rollout_facts(&sweep.sources);
                    f.account = f.account.or_else(|| owner.clone());
                    f.exemptions_configured = self.cfg.exemptions_configured();
                    crate::rollout::step(&f)
                })
                .collect(),
        ));
        report.sweep = Some(sweep);
        (report, to_remember)
    }

    /// What is wrong with the protection of the guard's memory (its
    /// resource policy, against the stack's: `memory::policy_problem`);
    /// `None` when it holds, or when the stack does not say what it made
    /// (`MEMORY_TABLE_ARN`, `MEMORY_WRITERS`).
    pub async fn memory_problem(&self) -> Option<String> {
        let arn = self.cfg.memory_table_arn.as_deref()?;
        if self.cfg.memory_writers.is_empty() {
            return None;
        }
        let memory = self.clients.memory()?;
        match memory.policy(arn).await {
            Ok(p) => crate::memory::policy_problem(
                p.as_deref(),
                &self.cfg.memory_writers,
                &self.cfg.memory_operators,
            ),
            Err(e) => Some(format!(
                "its resource policy could not be read to check it is the stack's ({e})"
            )),
        }
    }
}

/// When a sweep stops taking new work: `STOP_MARGIN` before the deadline.
fn stop_time(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d.checked_sub(STOP_MARGIN).unwrap_or(d))
}

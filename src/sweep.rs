//! The fleet sweep: catches what events miss (instances launched before the
//! guardrail, events EventBridge never delivered). Each region is listed page
//! by page, so memory stays bounded by a page and the instances with news;
//! every instance is decided by the same plan as the event path and acted on
//! through the same layer (`act`, at the sweep's pace); one report and one
//! notification sum the sweep up, with each region's account defaults and
//! its readiness for AWS's own `HttpTokensEnforced`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::act::{apply_default, remember_remediated, write_tags, Pacer, Pacing};
use crate::aws::{Account, AwsError, Clients, Ec2Api, MemoryApi, MetricsApi};
use crate::breaker::{self, Tripped};
use crate::clock::now_secs;
use crate::config::{Config, Mode, SweepAccounts};
use crate::error::{conclude, GuardError};
use crate::event::{EventContext, Observed, Trigger};
use crate::finding::FindingsReport;
use crate::findings::RegionFindings;
use crate::memory::{self, Kind, Record};
use crate::outbox::{filer, Outbox};
use crate::plan::{hold_back, plan, sweep_default_action, unread_metric, V1Use};
use crate::policy::{readiness, Remedy, SweepFacts};
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

    /// Sweeps `regions` of the accounts configured (`SWEEP_ACCOUNTS`; the
    /// function's own by default), a few account-region pairs at a time. The
    /// report holds each pair's counts, account defaults and readiness, one
    /// line per account, and the instances with news; the invocation fails,
    /// naming them, when an instance, a region or an account could not be
    /// handled.
    pub async fn run(
        &self,
        ctx: EventContext,
        regions: Vec<String>,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<Report, GuardError> {
        let (mut report, to_remember) = self.collect(ctx, regions, deadline, progress).await;
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

    /// The accounts a sweep covers (`None`: the function's own), and those
    /// of the organization `ALLOWED_ACCOUNT_IDS` leaves out.
    pub async fn targets(&self) -> Result<(Vec<Option<String>>, Vec<String>), String> {
        match &self.cfg.sweep_accounts {
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
        regions: Vec<String>,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> (Report, Vec<Record>) {
        let mut report = Report::handled(Status::Swept, self.cfg.mode, ctx);
        let regions: Vec<String> = regions.into_iter().filter(|r| !r.is_empty()).collect();
        if regions.is_empty() {
            report.unreadable.push(
                "the scheduled event names no region and SWEEP_REGIONS is not set: nothing swept"
                    .into(),
            );
        }
        let mut accounts: Vec<AccountSweep> = Vec::new();
        let mut to_remember: Vec<Record> = Vec::new();
        let targets: Vec<Option<String>> = match self.targets().await {
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
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        // Each account in the mode set for it or its unit (`modes`).
        let mut own: HashMap<Option<String>, (Config, Option<String>)> = HashMap::new();
        if self.cfg.has_overrides() {
            for a in &targets {
                let id = match a {
                    Some(a) => Some(a.clone()),
                    None => self.clients.home_account().await.ok(),
                };
                if let Some(id) = id {
                    let (mut c, why) =
                        crate::modes::from_organization(self.cfg, self.clients, &id).await;
                    c.overrides.clear();
                    own.insert(a.clone(), (c, why));
                }
            }
        }
        let own = &own;
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
                let Some((cfg, why)) = own.get(&account) else {
                    return self
                        .for_account(self.cfg, room)
                        .region(account.as_deref(), &region, per_pair, deadline, progress)
                        .await;
                };
                let mut r = self
                    .for_account(cfg, room)
                    .region(account.as_deref(), &region, per_pair, deadline, progress)
                    .await;
                r.summary.mode = Some(cfg.mode);
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
        let listed_accounts = self.cfg.sweep_accounts != SweepAccounts::Own;
        for r in results {
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
            Ok(p) => crate::memory::policy_problem(p.as_deref(), &self.cfg.memory_writers),
            Err(e) => Some(format!(
                "its resource policy could not be read to check it is the stack's ({e})"
            )),
        }
    }

    /// One account-region: its instances listed and acted on while its
    /// account defaults are read (and set, when configured), then judged.
    async fn region(
        &self,
        account: Option<&str>,
        region: &str,
        max_listed: usize,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> RegionResult {
        let mut out = RegionResult {
            summary: RegionSweep::new(region),
            listed: Vec::new(),
            omitted: 0,
            owner: None,
            who: Account::Home,
            refusing: Vec::new(),
            decided: std::collections::HashSet::new(),
            changed: false,
            noticed: None,
            to_remember: Vec::new(),
            exemptions: None,
            legacy: 0,
            lapsed: Vec::new(),
            attributed: HashMap::new(),
            sources: Vec::new(),
            sources_read: false,
            findings: None,
            findings_report: None,
            grants: None,
            granted: std::collections::HashSet::new(),
            changes: 0,
            total: None,
            tripped: None,
            since: None,
        };
        out.summary.account = account.map(str::to_string);
        if stop_time(deadline).is_some_and(|t| Instant::now() >= t) {
            out.summary.errors.push(
                "not swept: stopped before the function's timeout, to report in time; the next sweep covers it".into(),
            );
            return out;
        }
        match self.clients.enter(account, region).await {
            Ok(who) => out.who = who,
            Err(e) => {
                out.summary.no_member_stack =
                    account.is_some() && self.cfg.member_role.is_some() && e.is_unauthorized();
                out.summary.errors.push(format!("not swept: {e}"));
                return out;
            }
        }
        let ec2 = self.clients.ec2(&out.who, region);
        out.since = self.events_since(&out).await;
        if self.cfg.security_hub_findings {
            if filer(self.clients, &out.who, region).is_some() {
                out.findings = self.open_findings(&out).await;
            } else {
                out.findings_report = Some(FindingsReport {
                    errors: vec![format!("SECURITY_HUB_FINDINGS is set, but this binary carries no Security Hub client and no OUTPUTS_QUEUE_URL to hand the findings of {region} to")],
                    ..FindingsReport::default()
                });
            }
        }
        // The account defaults are read while the instances are listed.
        let mut defaults = RegionSweep::new(region);
        let (_, ()) = tokio::join!(
            self.account_defaults(&ec2, &mut defaults),
            self.list_and_act(&ec2, &mut out, max_listed, deadline, progress)
        );
        if let Some(f) = out.findings.take() {
            // Settled only after a listing that reached its end: an instance
            // not listed then is really not at `optional`.
            let complete = out.summary.errors.is_empty();
            if let Some(api) = filer(self.clients, &out.who, region) {
                let memory = self.clients.memory();
                out.findings_report = Some(
                    f.close(&api, memory.as_ref(), &ec2, self.cfg, complete, now_secs())
                        .await,
                );
            }
        }
        self.tell_grants(&mut out).await;
        out.summary.account_defaults = defaults.account_defaults;
        out.summary.account_default_action = defaults.account_default_action;
        out.summary.errors.extend(defaults.errors);
        if self.cfg.check_metadata_no_token {
            self.watch_refusals(&mut out).await;
        }
        self.sources(&mut out).await;
        if out.legacy > 0 {
            out.summary.warnings.push(format!(
                "{} noncompliant instance(s) carry a legacy {}=exempt tag, which is not honoured (anyone who may tag can write one): `imds-guard migrate-exemptions` copies those launched before LEGACY_EXEMPT_BEFORE into the guard's memory (review its list), honoured while LEGACY_EXEMPT_BEFORE is set",
                out.legacy, self.cfg.status_tag_key
            ));
        }
        if !out.lapsed.is_empty() {
            let shown: Vec<String> = out
                .lapsed
                .iter()
                .take(10)
                .map(|(id, glob)| format!("{id} ({})", crate::validate::clean(glob, 128)))
                .collect();
            out.summary.warnings.push(format!(
                "{} exemption record(s) no longer honoured nor renewed, their glob no longer in EXEMPT_PRINCIPAL_ARNS (or, migrated, LEGACY_EXEMPT_BEFORE unset): {}{}",
                out.lapsed.len(),
                shown.join(", "),
                if out.lapsed.len() > shown.len() { ", ..." } else { "" }
            ));
        }

        let s = &mut out.summary;
        s.readiness = readiness(&SweepFacts {
            complete: s.errors.is_empty(),
            noncompliant_left: s.count(Outcome::Flagged) + s.count(Outcome::Failed),
            exempt: s.count(Outcome::Exempt),
            v1_in_use: s.v1_in_use,
            refusing: s.refusing,
            defaults: s.account_defaults.clone(),
            sources_optional: out
                .sources
                .iter()
                .filter(|r| r.asks_for_optional())
                .map(SourceReport::label)
                .collect(),
            sources_read: out.sources_read,
        });
        info!(
            account = s.account.as_deref().unwrap_or(""),
            %region, pages = s.pages, examined = s.examined, listing = %s.listing,
            counts = %serde_json::to_string(&s.counts).unwrap_or_default(),
            readiness = %s.readiness.verdict, errors = %s.errors.join("; "),
            "region swept"
        );
        out
    }

    /// The region's launch templates, groups and launch configurations:
    /// decided and acted on as the mode says (`sources`), each noncompliant
    /// one with the noncompliant instances it launched. What cannot be read
    /// is the region's error: its readiness cannot be known.
    async fn sources(&self, out: &mut RegionResult) {
        let (reports, errors) = Sources::new(self.cfg, self.clients)
            .region(
                &out.who,
                &out.summary.region,
                out.summary.account_defaults.as_ref(),
            )
            .await;
        out.sources_read = errors.is_empty();
        out.summary.errors.extend(errors);
        out.sources = reports
            .into_iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    SourceOutcome::Fixed | SourceOutcome::Flagged | SourceOutcome::Failed
                )
            })
            .map(|mut r| {
                r.instances = out
                    .attributed
                    .get(&(r.kind, r.id.clone()))
                    .copied()
                    .unwrap_or(0);
                r.region = Some(out.summary.region.clone());
                r.account.clone_from(&out.summary.account);
                r
            })
            .collect();
        out.summary.sources = out.sources.iter().filter(|r| r.asks_for_optional()).count() as u64;
    }

    /// Lists the region page by page, deciding and acting on each page
    /// before the next is fetched.
    async fn list_and_act(
        &self,
        ec2: &impl Ec2Api,
        out: &mut RegionResult,
        max_listed: usize,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) {
        // EC2 can leave out the instances already at `required` itself; a
        // hop-limit maximum needs every instance's options, though.
        let mut only_optional = self.cfg.max_hop_limit.is_none();
        out.summary.listing = if only_optional {
            "server-side filter (metadata-options.http-tokens=optional)".into()
        } else {
            "every instance (MAX_HOP_LIMIT needs each hop limit)".into()
        };
        // One pace for the whole region: what EC2 throttled on one page
        // slows the next.
        let mut pacer = Pacer::new(Pacing::SWEEP);
        let stop_at = stop_time(deadline);
        let mut passes = 0;
        loop {
            passes += 1;
            out.changed = false;
            let (complete, pages) = self
                .list_pass(
                    ec2,
                    out,
                    &mut only_optional,
                    passes > 1,
                    max_listed,
                    &mut pacer,
                    stop_at,
                    progress,
                )
                .await;
            // EC2's page tokens are opaque: fixing instances while listing
            // under the `optional` filter might shift the later pages. So a
            // filtered pass of more than one page that changed something is
            // followed by another, for what it may have skipped, until one
            // changes nothing (a few at most).
            if !complete || !only_optional || !out.changed || pages <= 1 || passes >= MAX_PASSES {
                break;
            }
        }
        if passes > 1 {
            out.summary.listing.push_str(&format!(
                ", listed {passes} times (fixing under the filter may shift later pages)"
            ));
        }
        out.summary.throttled = pacer.throttled;
    }

    /// One pass over the region's listing, page by page: whether it reached
    /// the last page, and how many pages it read.
    #[allow(clippy::too_many_arguments)]
    async fn list_pass(
        &self,
        ec2: &impl Ec2Api,
        out: &mut RegionResult,
        only_optional: &mut bool,
        second_pass: bool,
        max_listed: usize,
        pacer: &mut Pacer,
        stop_at: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> (bool, u64) {
        let region = out.summary.region.clone();
        let region = region.as_str();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                out.summary.errors.push(format!(
                    "stopped after {} page(s) to report before the function's timeout; the next sweep continues",
                    out.summary.pages
                ));
                return (false, pages);
            }
            let page = match ec2.list_page(*only_optional, token.clone()).await {
                Ok(page) => page,
                // An EC2 that does not take the filter (the local emulator
                // answers it with a 500) refuses it: list everything and
                // decide here instead. Anything else (no answer, no
                // credentials, no permission) is an error, not a refusal.
                Err(e)
                    if *only_optional && pages == 0 && !second_pass && e.is_refused_request() =>
                {
                    warn!(%region, error = %e, "the metadata-options filter was refused; filtering here");
                    *only_optional = false;
                    out.summary.listing =
                        format!("every instance (EC2 refused the metadata-options filter: {e})");
                    continue;
                }
                Err(e) => {
                    out.summary.errors.push(format!(
                        "listing stopped after {} page(s): {e}",
                        out.summary.pages
                    ));
                    return (false, pages);
                }
            };
            pages += 1;
            if out.owner.is_none() {
                out.owner = page.owner.clone().filter(|o| is_account_id(o));
            }
            let mut instances = page.instances;
            if second_pass {
                instances.retain(|o| !out.decided.contains(&o.instance_id));
            } else {
                out.summary.pages += 1;
                out.summary.examined += instances.len() as u64;
            }
            if *only_optional {
                out.decided
                    .extend(instances.iter().map(|o| o.instance_id.clone()));
            }
            if second_pass {
                out.summary.examined += instances.len() as u64;
            }
            self.page(ec2, instances, out, max_listed, pacer, stop_at)
                .await;
            progress(Progress {
                account: out.summary.account.as_deref(),
                region,
                pages: out.summary.pages,
                examined: out.summary.examined,
                acted: out.summary.count(Outcome::Remediated) + out.summary.count(Outcome::Flagged),
            });
            match page.next_token {
                Some(t) => token = Some(t),
                None => return (true, pages),
            }
        }
    }

    /// Reads the account's defaults, and sets `HttpTokens=required` when
    /// configured to (enforce mode only; never `HttpTokensEnforced`).
    async fn account_defaults(&self, ec2: &impl Ec2Api, s: &mut RegionSweep) {
        let mut defaults = match ec2.metadata_defaults().await {
            Ok(d) => d,
            Err(e) => {
                s.account_default_action = DefaultsAction::Unreadable(e.to_string());
                if self.cfg.set_account_default && self.cfg.mode == Mode::Enforce {
                    s.errors.push(format!(
                        "SET_ACCOUNT_DEFAULT: could not read the defaults: {e}"
                    ));
                }
                return;
            }
        };
        let decision = sweep_default_action(self.cfg, &defaults);
        let (action, error) = apply_default(
            ec2,
            decision,
            DefaultsAction::Set,
            DefaultsAction::SetFailed,
            Some(&mut defaults),
        )
        .await;
        s.account_default_action = action;
        s.errors.extend(error);
        s.account_defaults = Some(defaults);
    }

    /// Decides one page, acts on it and records the outcomes.
    async fn page(
        &self,
        ec2: &impl Ec2Api,
        instances: Vec<Observed>,
        out: &mut RegionResult,
        max_listed: usize,
        pacer: &mut Pacer,
        stop_at: Option<Instant>,
    ) {
        let region = out.summary.region.clone();
        let ctx = EventContext {
            event_name: crate::event::SWEEP.into(),
            region: region.clone(),
            ..EventContext::default()
        };
        let mut instances = instances;
        if let Err(e) = self.recall_exemptions(out, &mut instances).await {
            // Deciding without the records would change instances their
            // owners exempted: this page's noncompliant instances fail.
            for o in &instances {
                let (report, _) = plan(self.cfg, o, &ctx, Trigger::Sweep);
                if matches!(report.outcome, Outcome::Compliant | Outcome::Gone) {
                    *out.summary.counts.entry(report.outcome).or_insert(0) += 1;
                    continue;
                }
                let mut failed = report;
                failed.mark_failed(format!(
                    "whether it was exempt at launch could not be read from the guard's memory: {e}"
                ));
                *out.summary.counts.entry(Outcome::Failed).or_insert(0) += 1;
                failed.region = Some(region.clone());
                failed.account.clone_from(&out.summary.account);
                self.seen(out, &failed);
                out.listed.push(failed);
            }
            return;
        }

        // Decide. Compliant and gone instances are only counted.
        let mut reports: Vec<InstanceReport> = Vec::new();
        let mut remedies: Vec<Option<Remedy>> = Vec::new();
        for o in &instances {
            let (report, remedy) = plan(self.cfg, o, &ctx, Trigger::Sweep);
            if report.exemption.is_none()
                && report.outcome != Outcome::Compliant
                && o.tag(&self.cfg.status_tag_key) == Some(crate::policy::EXEMPT_STATUS)
            {
                out.legacy += 1;
            }
            if matches!(report.outcome, Outcome::Compliant | Outcome::Gone) {
                *out.summary.counts.entry(report.outcome).or_insert(0) += 1;
                self.seen(out, &report);
                continue;
            }
            if let Some(source) = o.tags.as_deref().and_then(attribution) {
                *out.attributed.entry(source).or_insert(0) += 1;
            }
            reports.push(report);
            remedies.push(remedy);
        }
        drop(instances);

        if self.cfg.check_metadata_no_token {
            let held = self
                .hold_back_v1_users(
                    &out.who,
                    &region,
                    &mut reports,
                    &mut remedies,
                    &mut out.summary,
                )
                .await;
            self.hold_back_ceiling(out, held, &mut reports, &mut remedies)
                .await;
        }

        self.skip_told(out, &mut reports).await;

        // Act, at the sweep's pace, within the circuit breaker.
        let to_modify: Vec<(usize, Remedy)> = remedies
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r?)))
            .collect();
        let to_modify = self.admit(ec2, out, &mut reports, to_modify).await;
        let budget_end = Instant::now() + self.cfg.retry_budget;
        let deadline = stop_at.map_or(budget_end, |s| s.min(budget_end));
        pacer
            .remediate(ec2, &mut reports, to_modify, deadline)
            .await;
        write_tags(ec2, &self.cfg.status_tag_key, self.cfg.mode, &mut reports).await;
        out.changed |= reports.iter().any(|r| r.action.wrote());
        if let (Some(f), Some(api)) = (
            out.findings.as_mut(),
            filer(self.clients, &out.who, &region),
        ) {
            let memory = self.clients.memory();
            f.page(&api, memory.as_ref(), self.cfg, &reports, now_secs())
                .await;
        }
        if self.cfg.check_metadata_no_token {
            if let (Some(memory), Some(place)) = (self.clients.memory(), self.place(out).await) {
                remember_remediated(&memory, &place, &reports, self.cfg.no_token_lookback).await;
            }
        }

        // Record.
        let now = now_secs();
        for mut r in reports {
            if let Some(since) = out.since {
                let had_grant = out.granted.contains(&r.instance_id);
                if crate::watch::missed(&r, since, now, self.cfg.events_grace.as_secs(), had_grant)
                {
                    out.summary.missed_events += 1;
                }
            }
            log_decision(&ctx, self.cfg.mode, &r);
            self.seen(out, &r);
            *out.summary.counts.entry(r.outcome).or_insert(0) += 1;
            if !r.is_news() {
                continue;
            }
            if out.listed.len() < max_listed || r.outcome == Outcome::Failed || r.error.is_some() {
                r.region = Some(region.clone());
                r.account.clone_from(&out.summary.account);
                out.listed.push(r);
            } else {
                out.omitted += 1;
            }
        }
    }

    /// With `CHECK_METADATA_NO_TOKEN`, an instance that answered IMDSv1
    /// calls in the lookback is flagged instead of changed (`plan::hold_back`);
    /// if the metric cannot be read, nothing is changed blind.
    /// Returns the instances held back from a change because they used
    /// IMDSv1: their index, the change, and their report before the hold.
    async fn hold_back_v1_users(
        &self,
        who: &Account,
        region: &str,
        reports: &mut [InstanceReport],
        remedies: &mut [Option<Remedy>],
        s: &mut RegionSweep,
    ) -> Vec<(usize, Remedy, InstanceReport)> {
        let ids: Vec<String> = reports
            .iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::Remediated | Outcome::Flagged | Outcome::Exempt
                )
            })
            .map(|r| r.instance_id.clone())
            .collect();
        let mut held = Vec::new();
        if ids.is_empty() {
            return held;
        }
        let hours = self.cfg.no_token_lookback.as_secs() / 3600;
        let calls: Result<HashMap<String, f64>, AwsError> = self
            .clients
            .metrics(who, region)
            .no_token_calls(&ids, self.cfg.no_token_lookback)
            .await;
        for (i, (r, remedy)) in reports.iter_mut().zip(remedies.iter_mut()).enumerate() {
            if !ids.contains(&r.instance_id) {
                continue;
            }
            match &calls {
                Err(e) => unread_metric(r, remedy, &e.to_string()),
                Ok(calls) => {
                    let n = calls.get(&r.instance_id).copied();
                    let before = (remedy.clone(), r.clone());
                    match hold_back(r, remedy, n, hours, self.cfg.no_token_missing_as_zero) {
                        V1Use::InUse => {
                            s.v1_in_use += 1;
                            if let (Some(change), report) = before {
                                held.push((i, change, report));
                            }
                        }
                        V1Use::Unused => s.v1_unused += 1,
                        V1Use::NoData => s.v1_no_data += 1,
                    }
                }
            }
        }
        held
    }

    /// The opt-in ceiling on holding back (`NO_TOKEN_HOLD_DAYS`): since when
    /// each instance has been held (the guard's memory), told a day before
    /// its switch, and switched once past it. Off, or without a memory,
    /// an instance is held for as long as it uses IMDSv1.
    async fn hold_back_ceiling(
        &self,
        out: &mut RegionResult,
        held: Vec<(usize, Remedy, InstanceReport)>,
        reports: &mut [InstanceReport],
        remedies: &mut [Option<Remedy>],
    ) {
        let Some(days) = self.cfg.no_token_hold_days else {
            return;
        };
        if held.is_empty() || self.cfg.mode != crate::config::Mode::Enforce {
            return;
        }
        let Some(memory) = self.clients.memory() else {
            return;
        };
        let Some(place) = self.place(out).await else {
            return;
        };
        let now = now_secs();
        let known: HashMap<String, Record> = match memory
            .query(&place, Kind::HeldBack.prefix(), now)
            .await
        {
            Ok(records) => records
                .into_iter()
                .map(|r| (r.id().to_string(), r))
                .collect(),
            Err(e) => {
                out.summary.warnings.push(format!(
                        "since when instances were held back could not be read (NO_TOKEN_HOLD_DAYS): none is switched this run: {e}"
                    ));
                return;
            }
        };
        let mut writes = Vec::new();
        for (i, change, before) in held {
            let id = before.instance_id.clone();
            let (since, told) = known.get(&id).map_or((now, None), crate::plan::held_of);
            match crate::plan::ceiling(since, told, now, days) {
                crate::plan::Ceiling::Hold => {
                    writes.push(crate::plan::held_record(
                        &place, &id, since, told, now, days,
                    ));
                }
                crate::plan::Ceiling::Tell { at } => {
                    let r = &mut reports[i];
                    r.findings.push(format!(
                        "held back for IMDSv1 use since {}: switched at {} unless it stops (NO_TOKEN_HOLD_DAYS={days})",
                        crate::finding::iso8601(since),
                        crate::finding::iso8601(at)
                    ));
                    r.notify = true;
                    writes.push(crate::plan::held_record(
                        &place,
                        &id,
                        since,
                        Some(now),
                        now,
                        days,
                    ));
                }
                crate::plan::Ceiling::Switch { days: held_for } => {
                    let mut r = before;
                    r.findings.push(format!(
                        "switched after {held_for} day(s) held back for IMDSv1 use (NO_TOKEN_HOLD_DAYS={days}): what still calls IMDSv1 there now gets 401"
                    ));
                    reports[i] = r;
                    remedies[i] = Some(change);
                    let mut done = crate::plan::held_record(&place, &id, since, told, now, days);
                    done.expires_at = now;
                    writes.push(done);
                }
            }
        }
        if let Err(e) = memory.put(&writes).await {
            warn!(error = %e, "since when instances were held back could not be remembered; their days start again");
        }
    }

    /// The exemptions the guard recorded when these instances were launched
    /// (with principal exemptions configured, which honour them), read once
    /// per region; records more than half through their life are renewed,
    /// so a long-lived exempt instance keeps its own.
    async fn recall_exemptions(
        &self,
        out: &mut RegionResult,
        instances: &mut [Observed],
    ) -> Result<(), AwsError> {
        if instances.is_empty() {
            return Ok(());
        }
        // A person's break-glass grants, honoured whatever else is set.
        self.read_grants(out).await?;
        let grants = crate::break_glass::grants(out.grants.as_deref().unwrap_or_default());
        let now = now_secs();
        for o in instances.iter_mut() {
            o.break_glass = crate::break_glass::in_force(&grants, o, now).cloned();
            // Under a grant, in force or ended: a fix of it now is no
            // missed event.
            if grants.iter().any(|g| g.covers(o)) {
                out.granted.insert(o.instance_id.clone());
            }
        }
        if !self.cfg.reads_exemption_records() {
            return Ok(());
        }
        let Some(memory) = self.clients.memory() else {
            return Ok(());
        };
        let Some(place) = self.place(out).await else {
            return Err(AwsError::Api {
                code: "NoAccount".into(),
                message: "the account could not be named".into(),
            });
        };
        let now = now_secs();
        if out.exemptions.is_none() {
            let records = memory.query(&place, Kind::Exempt.prefix(), now).await?;
            out.exemptions = Some(
                records
                    .into_iter()
                    .map(|r| (r.id().to_string(), r))
                    .collect(),
            );
        }
        let known = out.exemptions.get_or_insert_with(Default::default);
        let policy = crate::policy::Policy::of(self.cfg);
        let mut renew = Vec::new();
        for o in instances.iter_mut() {
            let Some(record) = known.get_mut(&o.instance_id) else {
                continue;
            };
            o.recorded_exemption = record.data.get(memory::GLOB).cloned();
            o.recorded_unconfirmed = crate::confirm::is_unconfirmed(record);
            // Renewed only while honoured: a removed glob's records lapse.
            let glob = o.recorded_exemption.as_deref().unwrap_or_default();
            if !policy.honours_record(glob) {
                out.lapsed.push((o.instance_id.clone(), glob.to_string()));
                continue;
            }
            // Never renewed while CloudTrail has not confirmed it: only the
            // exemption check keeps one.
            if o.recorded_unconfirmed {
                continue;
            }
            if record.due_for_renewal(now) {
                let glob = o.recorded_exemption.clone().unwrap_or_default();
                *record = Record::exempt(
                    &place,
                    &o.instance_id,
                    &glob,
                    record.event_id.as_deref(),
                    now,
                );
                renew.push(record.clone());
            }
        }
        if !renew.is_empty() {
            if let Err(e) = memory.put(&renew).await {
                warn!(%place, error = %e, "exemption records could not be renewed; the next sweep tries again");
            }
        }
        Ok(())
    }

    /// Since when the guard has enforced here (`watch`): as the memory
    /// says, renewed while sweeps find it, or begun now by the first
    /// enforcing sweep (nothing it fixes now can be a missed event). A sweep
    /// in another mode records that mode, so enforcing again starts afresh.
    /// `None` outside enforce mode or without a memory: nothing is counted.
    async fn events_since(&self, out: &RegionResult) -> Option<u64> {
        let memory = self.clients.memory()?;
        let place = self.place(out).await?;
        let now = now_secs();
        let mode = self.cfg.mode;
        let records = match memory.query(&place, Kind::EventsSince.prefix(), now).await {
            Ok(r) => r,
            Err(e) => {
                warn!(%place, error = %e, "since when the guard enforces here could not be read; missed events are not counted this run");
                return None;
            }
        };
        let since = crate::watch::since(&records, mode);
        let due = records.first().is_none_or(|r| r.due_for_renewal(now));
        if since.is_none() || due {
            let record = crate::watch::since_record(&place, mode, since.unwrap_or(now), now);
            if let Err(e) = memory.put(&[record]).await {
                warn!(%place, error = %e, "since when the guard enforces here could not be written; the next sweep tries again");
            }
        }
        (mode == Mode::Enforce).then(|| since.unwrap_or(now))
    }

    /// The break-glass grants of this account-region, read once (none
    /// without a memory).
    async fn read_grants(&self, out: &mut RegionResult) -> Result<(), AwsError> {
        if out.grants.is_some() {
            return Ok(());
        }
        let Some(memory) = self.clients.memory() else {
            out.grants = Some(Vec::new());
            return Ok(());
        };
        let Some(place) = self.place(out).await else {
            return Err(AwsError::Api {
                code: "NoAccount".into(),
                message: "the account could not be named".into(),
            });
        };
        out.grants = Some(
            memory
                .query(
                    &crate::break_glass::place_of(&place),
                    Kind::BreakGlass.prefix(),
                    now_secs(),
                )
                .await?,
        );
        Ok(())
    }

    /// The grants to tell of here: each in force, every run while it
    /// lasts, and each that ended since it was last told, once (marked so
    /// when the summary is sent).
    async fn tell_grants(&self, out: &mut RegionResult) {
        if self.clients.memory().is_none() {
            return;
        }
        if let Err(e) = self.read_grants(out).await {
            out.summary.errors.push(format!(
                "the break-glass grants here could not be read from the guard's memory: {e}"
            ));
            return;
        }
        let now = now_secs();
        let records = out.grants.clone().unwrap_or_default();
        let Some(place) = self.place(out).await else {
            return;
        };
        let grants_place = crate::break_glass::place_of(&place);
        let mut views = Vec::new();
        for g in crate::break_glass::grants(&records) {
            // In force, or refused as stamped ahead of this clock: told
            // every run while it stands.
            if matches!(
                g.state(now),
                crate::break_glass::State::Active | crate::break_glass::State::NotHonoured
            ) {
                views.push(crate::break_glass::GrantView::of(&g, now));
            } else if !g.end_was_told(&records) {
                views.push(crate::break_glass::GrantView::of(&g, now));
                // Beside the grant, never over it: a new grant for the
                // same target written meanwhile stands.
                out.to_remember.push(g.end_told(&grants_place));
            }
        }
        out.summary.break_glass = views;
    }

    /// The circuit breaker: of `todo`, what this page may still change,
    /// within this account-region's share of its instances
    /// (`MAX_CHANGE_PERCENT`, counted only once the run would pass the
    /// floor) and the run's ceiling (`MAX_CHANGES_PER_RUN`). What is held
    /// is reported, with the change it would have made.
    async fn admit(
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

    /// What a person was already told of is not news again: flagged and
    /// exempt instances the guard's memory says it told of (a launch event,
    /// or an earlier sweep, within a week) are counted but not listed or
    /// tagged again; the others are remembered as told once the summary is
    /// sent. Without a memory, every sweep lists them all.
    async fn skip_told(&self, out: &mut RegionResult, reports: &mut [InstanceReport]) {
        let Some(memory) = self.clients.memory() else {
            return;
        };
        let candidates = |r: &InstanceReport| {
            r.notify && matches!(r.outcome, Outcome::Flagged | Outcome::Exempt)
        };
        if !reports.iter().any(candidates) {
            return;
        }
        let Some(place) = self.place(out).await else {
            return;
        };
        let now = now_secs();
        if out.noticed.is_none() {
            let told = match memory.query(&place, Kind::Noticed.prefix(), now).await {
                // A claim whose telling never happened told no one.
                Ok(records) => records
                    .iter()
                    .filter(|r| r.is_told())
                    .map(|r| r.id().to_string())
                    .collect(),
                Err(e) => {
                    warn!(%place, error = %e, "the memory could not be read; every flagged instance is listed");
                    Default::default()
                }
            };
            out.noticed = Some(told);
        }
        let told = out.noticed.get_or_insert_with(Default::default);
        for r in reports.iter_mut().filter(|r| candidates(r)) {
            if told.contains(&r.instance_id) {
                r.notify = false;
                r.action = crate::report::Idle::AlreadyTold.into();
            } else {
                told.insert(r.instance_id.clone());
                out.to_remember.push(
                    Record::new(
                        Kind::Noticed,
                        &place,
                        &r.instance_id,
                        None,
                        now,
                        self.cfg.no_token_lookback,
                    )
                    .told(),
                );
            }
        }
    }

    /// What the guard filed in this account-region, as its memory keeps it
    /// (the account swept, or the one that owns the instances, or the
    /// function's own).
    async fn open_findings(&self, out: &RegionResult) -> Option<RegionFindings> {
        let region = &out.summary.region;
        let account = match out.summary.account.clone() {
            Some(a) => a,
            None => match self.clients.home_account().await {
                Ok(a) => a,
                Err(e) => {
                    warn!(%region, error = %e, "the account to file findings in could not be named");
                    return None;
                }
            },
        };
        let memory = self.clients.memory();
        Some(RegionFindings::open(memory.as_ref(), &account, region, now_secs()).await)
    }

    /// The memory partition of this account-region: the account swept, or
    /// the one EC2 says owns the instances, or the function's own.
    async fn place(&self, out: &RegionResult) -> Option<String> {
        let account = match out.summary.account.clone().or_else(|| out.owner.clone()) {
            Some(a) => a,
            None => self.clients.home_account().await.ok()?,
        };
        Some(memory::place(&account, &out.summary.region))
    }

    /// With `CHECK_METADATA_NO_TOKEN`: every instance the guard switched to
    /// `required` here (the memory's remediation records; they left the
    /// `optional` listing) that has refused IMDSv1 calls since, by
    /// `MetadataNoTokenRejected`: the workloads enforcing broke.
    async fn watch_refusals(&self, out: &mut RegionResult) {
        let Some(memory) = self.clients.memory() else {
            out.summary.warnings.push(
                "MetadataNoTokenRejected is not watched: MEMORY_TABLE is not set, so which instances the guard switched is not known".into(),
            );
            return;
        };
        let Some(place) = self.place(out).await else {
            out.summary.errors.push(
                "MetadataNoTokenRejected could not be watched: the account could not be named"
                    .into(),
            );
            return;
        };
        let remediated = match memory
            .query(&place, Kind::Remediated.prefix(), now_secs())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                out.summary.errors.push(format!(
                    "MetadataNoTokenRejected could not be watched: the memory could not be read: {e}"
                ));
                return;
            }
        };
        if remediated.is_empty() {
            return;
        }
        let since: Vec<(String, u64)> = remediated
            .iter()
            .map(|r| (r.id().to_string(), r.at))
            .collect();
        let refused = match self
            .clients
            .metrics(&out.who, &out.summary.region)
            .rejected_calls(&since, self.cfg.no_token_lookback)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                out.summary
                    .errors
                    .push(format!("MetadataNoTokenRejected could not be read: {e}"));
                return;
            }
        };
        for (id, at) in since {
            let Some(&n) = refused.get(&id).filter(|n| **n > 0.0) else {
                continue;
            };
            out.summary.refusing += 1;
            warn!(instance_id = %id, refused = n, region = %out.summary.region, "an instance the guard switched to required refuses IMDSv1 calls since");
            out.refusing.push(Refusing {
                account: out.summary.account.clone(),
                region: out.summary.region.clone(),
                instance_id: id,
                refused_calls: n,
                remediated_at: at,
            });
        }
    }
}

/// When a sweep stops taking new work: `STOP_MARGIN` before the deadline.
fn stop_time(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d.checked_sub(STOP_MARGIN).unwrap_or(d))
}

//! The fleet sweep: catches what events miss (instances launched before the
//! guardrail, events EventBridge never delivered). Each region is listed page
//! by page, so memory stays bounded by a page and the instances with news;
//! every instance is decided by the same plan as the event path and acted on
//! through the same layer (`act`, at the sweep's pace); one report and one
//! notification sum the sweep up, with each region's account defaults and
//! its readiness for AWS's own `HttpTokensEnforced`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::act::{apply_default, write_tags, Pacer, Pacing};
use crate::aws::{Account, AwsError, Clients, Ec2Api, MetricsApi};
use crate::config::{Config, Mode, SweepAccounts};
use crate::event::{EventContext, Observed, Trigger};
use crate::outputs::{conclude, log_decision, tell, GuardError};
use crate::plan::{hold_back, plan, sweep_default_action, unread_metric};
use crate::policy::{readiness, Remedy, SweepFacts};
use crate::report::{
    Access, AccountSweep, DefaultsAction, InstanceReport, Outcome, RegionSweep, Report, Status,
    SweepSummary,
};
use crate::validate::is_account_id;

/// Instances with news kept in the report, across regions; beyond this only
/// counts grow (failed instances are always kept: they must be named).
pub const MAX_LISTED: usize = 1000;
/// Account-region pairs swept at once (a pair holds at most one page of
/// instances in memory; the function has 128 MB).
const SWEEP_CONCURRENCY: usize = 4;
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
}

/// A sweep of regions, in the accounts configured, with the configuration
/// and clients it acts with.
pub struct Sweep<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> Sweep<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        Sweep { cfg, clients }
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
        let mut report = Report::handled(Status::Swept, self.cfg.mode, ctx);
        let regions: Vec<String> = regions.into_iter().filter(|r| !r.is_empty()).collect();
        if regions.is_empty() {
            report.unreadable.push(
                "the scheduled event names no region and SWEEP_REGIONS is not set: nothing swept"
                    .into(),
            );
        }
        let mut accounts: Vec<AccountSweep> = Vec::new();
        let targets: Vec<Option<String>> = match &self.cfg.sweep_accounts {
            SweepAccounts::Own => vec![None],
            SweepAccounts::Listed(list) => list.iter().cloned().map(Some).collect(),
            SweepAccounts::Organization => match self.clients.organization_accounts().await {
                Ok(list) => {
                    let (allowed, refused): (Vec<String>, Vec<String>) = list
                        .into_iter()
                        .partition(|a| self.cfg.refusal(Some(a)).is_none());
                    // Accounts of the organization left out of the allow
                    // list are out of scope, by choice: counted, not errors.
                    accounts.extend(refused.into_iter().map(|a| AccountSweep {
                        access: Access::NotAllowed,
                        ..AccountSweep::new(&a)
                    }));
                    allowed.into_iter().map(Some).collect()
                }
                Err(e) => {
                    report.unreadable.push(format!(
                        "the organization's accounts could not be listed: {e}"
                    ));
                    Vec::new()
                }
            },
        };
        let pairs: Vec<(Option<String>, String)> = targets
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        let per_pair = MAX_LISTED / pairs.len().max(1);
        let results: Vec<RegionResult> = stream::iter(pairs)
            .map(|(account, region)| async move {
                self.region(account.as_deref(), &region, per_pair, deadline, progress)
                    .await
            })
            .buffered(SWEEP_CONCURRENCY)
            .collect()
            .await;

        let mut sweep = SweepSummary {
            regions: Vec::with_capacity(results.len()),
            accounts: Vec::new(),
            omitted_instances: 0,
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
            sweep.omitted_instances += r.omitted;
            sweep.regions.push(r.summary);
        }
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        sweep.accounts = accounts;
        report.sweep = Some(sweep);
        let notify_error = tell(self.cfg, self.clients, &mut report).await;
        conclude(report, notify_error)
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
                out.summary.errors.push(format!("not swept: {e}"));
                return out;
            }
        }
        let ec2 = self.clients.ec2(&out.who, region);
        // The account defaults are read while the instances are listed.
        let mut defaults = RegionSweep::new(region);
        let (_, ()) = tokio::join!(
            self.account_defaults(&ec2, &mut defaults),
            self.list_and_act(&ec2, &mut out, max_listed, deadline, progress)
        );
        out.summary.account_defaults = defaults.account_defaults;
        out.summary.account_default_action = defaults.account_default_action;
        out.summary.errors.extend(defaults.errors);

        let s = &mut out.summary;
        s.readiness = readiness(&SweepFacts {
            complete: s.errors.is_empty(),
            noncompliant_left: s.count(Outcome::Flagged) + s.count(Outcome::Failed),
            exempt: s.count(Outcome::Exempt),
            v1_in_use: s.v1_in_use,
            defaults: s.account_defaults.clone(),
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
        let region = out.summary.region.clone();
        let region = region.as_str();
        // EC2 can leave out the instances already at `required` itself; a
        // hop-limit maximum needs every instance's options, though.
        let mut only_optional = self.cfg.max_hop_limit.is_none();
        out.summary.listing = if only_optional {
            "server-side filter (metadata-options.http-tokens=optional)".into()
        } else {
            "every instance (MAX_HOP_LIMIT needs each hop limit)".into()
        };
        let mut token: Option<String> = None;
        // One pace for the whole region: what EC2 throttled on one page
        // slows the next.
        let mut pacer = Pacer::new(Pacing::SWEEP);
        let stop_at = stop_time(deadline);
        loop {
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                out.summary.errors.push(format!(
                    "stopped after {} page(s) to report before the function's timeout; the next sweep continues",
                    out.summary.pages
                ));
                break;
            }
            let page = match ec2.list_page(only_optional, token.clone()).await {
                Ok(page) => page,
                // An EC2 that does not take the filter (the local emulator
                // answers it with a 500) refuses it: list everything and
                // decide here instead. Anything else (no answer, no
                // credentials, no permission) is an error, not a refusal.
                Err(e) if only_optional && out.summary.pages == 0 && e.is_refused_request() => {
                    warn!(%region, error = %e, "the metadata-options filter was refused; filtering here");
                    only_optional = false;
                    out.summary.listing =
                        format!("every instance (EC2 refused the metadata-options filter: {e})");
                    continue;
                }
                Err(e) => {
                    out.summary.errors.push(format!(
                        "listing stopped after {} page(s): {e}",
                        out.summary.pages
                    ));
                    break;
                }
            };
            out.summary.pages += 1;
            if out.owner.is_none() {
                out.owner = page.owner.filter(|o| is_account_id(o));
            }
            out.summary.examined += page.instances.len() as u64;
            self.page(ec2, page.instances, out, max_listed, &mut pacer, stop_at)
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
                None => break,
            }
        }
        out.summary.throttled = pacer.throttled;
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
        // Decide. Compliant and gone instances are only counted.
        let mut reports: Vec<InstanceReport> = Vec::new();
        let mut remedies: Vec<Option<Remedy>> = Vec::new();
        for o in &instances {
            let (report, remedy) = plan(self.cfg, o, &ctx, Trigger::Sweep);
            if matches!(report.outcome, Outcome::Compliant | Outcome::Gone) {
                *out.summary.counts.entry(report.outcome).or_insert(0) += 1;
                continue;
            }
            reports.push(report);
            remedies.push(remedy);
        }
        drop(instances);

        if self.cfg.check_metadata_no_token {
            self.hold_back_v1_users(
                &out.who,
                &region,
                &mut reports,
                &mut remedies,
                &mut out.summary,
            )
            .await;
        }

        // Act, at the sweep's pace.
        let to_modify: Vec<(usize, Remedy)> = remedies
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r?)))
            .collect();
        let budget_end = Instant::now() + self.cfg.retry_budget;
        let deadline = stop_at.map_or(budget_end, |s| s.min(budget_end));
        pacer
            .remediate(ec2, &mut reports, to_modify, deadline)
            .await;
        write_tags(ec2, &self.cfg.status_tag_key, self.cfg.mode, &mut reports).await;

        // Record.
        for mut r in reports {
            log_decision(&ctx, self.cfg.mode, &r);
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
    async fn hold_back_v1_users(
        &self,
        who: &Account,
        region: &str,
        reports: &mut [InstanceReport],
        remedies: &mut [Option<Remedy>],
        s: &mut RegionSweep,
    ) {
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
        if ids.is_empty() {
            return;
        }
        let hours = self.cfg.no_token_lookback.as_secs() / 3600;
        let calls: Result<HashMap<String, f64>, AwsError> = self
            .clients
            .metrics(who, region)
            .no_token_calls(&ids, self.cfg.no_token_lookback)
            .await;
        for (r, remedy) in reports.iter_mut().zip(remedies.iter_mut()) {
            match &calls {
                Err(e) => unread_metric(r, remedy, &e.to_string()),
                Ok(calls) => {
                    let n = calls.get(&r.instance_id).copied().unwrap_or(0.0);
                    if hold_back(r, remedy, n, hours) {
                        s.v1_in_use += 1;
                    }
                }
            }
        }
    }
}

/// When a sweep stops taking new work: `STOP_MARGIN` before the deadline.
fn stop_time(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d.checked_sub(STOP_MARGIN).unwrap_or(d))
}

//! The self-check, carried out: in each account and region the sweep
//! covers, as each of the guard's writing roles (the function's own, and in
//! central mode each member role, in a role-session of its own), the probes
//! `probe::plan` picks are sent with `DryRun=true` and judged by what AWS
//! answers. Each account-region's result is remembered (what `imds-guard
//! doctor` reads), the run writes its metrics (`SelfCheckFailures`, which
//! the stack's alarm watches) and tells the topic when something failed (a
//! deploy's run always). A probe that was not a dry run stops everything
//! and fails the invocation.
//!
//! Started by the stack (on deploy, and on a schedule, weekly by default)
//! with `{"imds_guard_self_check": "<trigger>", "region": "<region>"}`.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::aws::{Account, Clients, Ec2Api, MemoryApi};
use crate::clock::now_secs;
use crate::config::{Config, SweepScope};
use crate::error::GuardError;
use crate::probe::{self, RegionCheck, Status};
use crate::sweep::Sweep;
use crate::validate::{clean, is_region};

/// The payload key that starts a self-check.
pub const KEY: &str = "imds_guard_self_check";

/// Time kept back from the deadline to record and tell what was found.
const RESERVE: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether a payload asks for a self-check.
pub fn is_request(payload: &Value) -> bool {
    payload.get(KEY).is_some()
}

pub struct SelfCheck<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> SelfCheck<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        SelfCheck { cfg, clients }
    }

    /// Runs the self-check a payload asks for; its result as JSON. Fails
    /// when a probe was unsafe, or when nothing could be checked at all.
    pub async fn run(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        let trigger = payload[KEY]
            .as_str()
            .map(|t| clean(t, 32))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "invoke".into());
        // The deployment's scope, in the region the stack's rules name (a
        // person's invoke may name none: the function's own).
        let named = payload["region"].as_str().filter(|r| is_region(r));
        let here = named
            .map(str::to_string)
            .or_else(|| self.clients.home_region());
        let SweepScope { accounts, regions } = SweepScope::configured(self.cfg, here.as_deref());
        if regions.is_empty() {
            return Err(GuardError::Incomplete {
                summary:
                    "the self-check names no region and SWEEP_REGIONS is not set: nothing checked"
                        .into(),
            });
        }
        let (accounts, _) = Sweep::new(self.cfg, self.clients)
            .targets(&accounts)
            .await
            .map_err(|summary| GuardError::Incomplete { summary })?;
        let checks = self.check(&trigger, accounts, &regions, deadline).await;
        self.conclude(&trigger, checks).await
    }

    /// Each account-region, a few at a time, until the deadline; one that
    /// was not reached says so.
    pub async fn check(
        &self,
        trigger: &str,
        accounts: Vec<Option<String>>,
        regions: &[String],
        deadline: Option<Instant>,
    ) -> Vec<RegionCheck> {
        let pairs: Vec<(Option<String>, String)> = accounts
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let stopped = &stopped;
        stream::iter(pairs)
            .map(|(account, region)| async move {
                let late = deadline.is_some_and(|d| Instant::now() + RESERVE >= d);
                let why = if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    Some("not checked: an earlier probe of this run was unsafe")
                } else if late {
                    Some("not checked: the run's time ran out; the next run checks it")
                } else {
                    None
                };
                if let Some(why) = why {
                    return self
                        .unchecked(trigger, account.as_deref(), &region, why)
                        .await;
                }
                let c = self.region(trigger, account.as_deref(), &region).await;
                if c.status() == Status::Unsafe {
                    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                c
            })
            .buffered(self.cfg.sweep_concurrency.max(1))
            .collect()
            .await
    }

    async fn account_id(&self, account: Option<&str>) -> String {
        match account {
            Some(a) => a.to_string(),
            None => self
                .clients
                .home_account()
                .await
                .unwrap_or_else(|_| "this account".into()),
        }
    }

    fn role_of(&self, who: &Account, account: &str, region: &str) -> String {
        match (who, &self.cfg.member_role) {
            (Account::Home, _) | (_, None) => "the function's role".into(),
            (_, Some(role)) => role.arn(account, region),
        }
    }

    /// An account-region's result with nothing found yet.
    async fn fresh(&self, trigger: &str, account: Option<&str>, region: &str) -> RegionCheck {
        RegionCheck {
            account: self.account_id(account).await,
            region: region.to_string(),
            role: String::new(),
            at: now_secs(),
            trigger: trigger.to_string(),
            error: None,
            outcomes: Vec::new(),
        }
    }

    async fn unchecked(
        &self,
        trigger: &str,
        account: Option<&str>,
        region: &str,
        why: &str,
    ) -> RegionCheck {
        RegionCheck {
            error: Some(why.to_string()),
            ..self.fresh(trigger, account, region).await
        }
    }

    /// One account-region: enter it as the self-check, pick the targets,
    /// send the probes.
    pub async fn region(&self, trigger: &str, account: Option<&str>, region: &str) -> RegionCheck {
        let mut c = self.fresh(trigger, account, region).await;
        let id = c.account.clone();
        let who = match self.clients.enter_for_self_check(account, region).await {
            Ok(who) => who,
            Err(e) => {
                c.role = self
                    .cfg
                    .member_role
                    .as_ref()
                    .map(|r| r.arn(&id, region))
                    .unwrap_or_default();
                c.error = Some(format!("the role could not be entered: {e}"));
                return c;
            }
        };
        c.role = self.role_of(&who, &id, region);
        let ec2 = self.clients.ec2(&who, region);
        let defaults_managed = if self.cfg.set_account_default {
            match ec2.metadata_defaults().await {
                Ok(d) => d.managed_by.as_deref() == Some("declarative-policy"),
                Err(e) => {
                    c.error = Some(format!("the account defaults could not be read: {e}"));
                    return c;
                }
            }
        } else {
            false
        };
        let instances = match ec2.sample(probe::SAMPLE).await {
            Ok(i) => i,
            Err(e) => {
                c.error = Some(format!("the instances could not be listed: {e}"));
                return c;
            }
        };
        let settings = probe::Settings {
            status_key: &self.cfg.status_tag_key,
            ceiling: self.cfg.max_hop_limit,
            set_default: self.cfg.set_account_default,
            defaults_managed,
        };
        let ec2 = &ec2;
        let (outcomes, stopped) = probe::run(probe::plan(&instances, &settings), |r| async move {
            ec2.dry_run(&r).await
        })
        .await;
        if stopped {
            error!(account = %id, %region, "probe unsafe: a probe was not a dry run; the self-check stopped");
        }
        c.outcomes = outcomes;
        c
    }

    /// Remembers each result, writes the metrics, tells the topic when
    /// something failed (a deploy's run always), and answers.
    async fn conclude(&self, trigger: &str, checks: Vec<RegionCheck>) -> Result<Value, GuardError> {
        let mut problems = Vec::new();
        if let Some(memory) = self.clients.memory() {
            let records: Vec<_> = checks
                .iter()
                .map(|c| probe::record(&crate::memory::partition(&c.account, &c.region), c))
                .collect();
            if let Err(e) = memory.put(&records).await {
                problems.push(format!("the results could not be remembered: {e}"));
            }
        } else {
            problems.push(
                "no memory (MEMORY_TABLE): imds-guard doctor cannot read these results".into(),
            );
        }
        for doc in probe::metrics(self.cfg.metrics.as_ref(), &checks, now_secs() * 1000) {
            println!("{doc}");
        }
        let notification = match probe::notification(&checks, trigger == "deploy") {
            None => "not needed".to_string(),
            Some(n) => self.tell(&n).await,
        };
        let summary: serde_json::Map<String, Value> = probe::summary(&checks)
            .into_iter()
            .map(|(s, n)| (s.as_str().to_string(), json!(n)))
            .collect();
        for c in &checks {
            info!(
                account = %c.account,
                region = %c.region,
                status = c.status().as_str(),
                passed = c.count(Status::Pass),
                failed = c.count(Status::Fail),
                "self-check"
            );
        }
        let unsafe_ = checks.iter().any(|c| c.status() == Status::Unsafe);
        let answer = json!({
            "self_check": checks,
            "summary": summary,
            "notification": notification,
            "problems": problems,
        });
        if unsafe_ {
            let at: Vec<String> = checks
                .iter()
                .filter(|c| c.status() == Status::Unsafe)
                .map(|c| format!("{} {}", c.account, c.region))
                .collect();
            error!(%answer, "probe unsafe");
            return Err(GuardError::Incomplete {
                summary: format!(
                    "probe unsafe in {}: a self-check probe was not answered as a dry run, and every probe stopped (notification: {notification})",
                    at.join(", ")
                ),
            });
        }
        if !problems.is_empty() {
            warn!(?problems, "the self-check ran, with problems");
        }
        Ok(answer)
    }

    /// Publishes `n`; a message SNS refuses is kept in the failed-events
    /// queue for a person.
    async fn tell(&self, n: &crate::notify::Notification) -> String {
        crate::outbox::Outbox::new(self.cfg, self.clients)
            .send(n, false, crate::outbox::Keep::Queue)
            .await
            .to_string()
    }
}

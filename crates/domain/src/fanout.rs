//! The organization sweep's fan-out, as data: the payloads the state
//! machine passes between its steps (plan → one shard per account →
//! summarize), the plan itself, and the one summary made from every
//! shard's report. Pure: the functions read and write, Step Functions runs
//! the shards (template.yaml's `SweepStateMachine`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cap;
use crate::notify::{subject, Notification, MAX_BODY};

/// At most this many instances, sources and refusing instances are kept
/// while shards are added: the summary's memory stays bounded at any size.
const KEEP: usize = 2000;

/// The key that marks a payload as a fan-out step rather than an event.
pub const STEP_KEY: &str = "imds_guard_step";

/// One step's payload, as the state machine sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "imds_guard_step", rename_all = "snake_case")]
pub enum FanOutStep {
    /// List the accounts and regions to sweep; a small organization is
    /// swept whole, here and now, as the single-invocation sweep. `input`
    /// is the execution's: `{"accounts": [...]}` re-runs those accounts only.
    Plan {
        run: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    /// Sweep one account's regions; record its report for the summary.
    Shard { run: String, account: String },
    /// The engine gave up on a shard (after its retries): record why.
    ShardFailed {
        run: String,
        account: String,
        #[serde(default)]
        error: serde_json::Value,
    },
    /// Every shard's report, as one summary and one notification.
    Summarize { run: String, plan: Plan },
}

/// What the plan step hands the map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub run: String,
    /// Swept here already (below the threshold, or not central mode): the
    /// map has nothing to do.
    pub single: bool,
    /// The map's items: one shard per account.
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// The organization's accounts left out by `ALLOWED_ACCOUNT_IDS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_allowed: Vec<String>,
    /// The map's `MaxConcurrencyPath`.
    pub concurrency: u32,
    /// Why the plan could not list the accounts (nothing is swept then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Plan {
    pub fn account_regions(&self) -> usize {
        self.accounts.len() * self.regions.len()
    }
}

/// The accounts an execution's input asks for (`{"accounts": [...]}`: a
/// re-run of those shards), if it names any; ids that are not account ids
/// are refused.
pub fn rerun_accounts(input: &serde_json::Value) -> Result<Option<Vec<String>>, String> {
    let Some(list) = input.get("accounts") else {
        return Ok(None);
    };
    let Some(list) = list.as_array() else {
        return Err("the execution's input: accounts must be a list of account ids".into());
    };
    list.iter()
        .map(|a| {
            a.as_str()
                .filter(|a| crate::validate::is_account_id(a))
                .map(str::to_string)
                .ok_or_else(|| format!("the execution's input: {a} is not an account id"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether the fan-out runs, or one invocation sweeps as before: below
/// `threshold` account-regions one invocation covers it well within its
/// timeout (and organizations grow: decided at each run).
pub fn fans_out(account_regions: usize, threshold: usize) -> bool {
    account_regions >= threshold
}

/// One shard's end, as the summary counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Every region swept to the end.
    Swept,
    /// Swept, but some region could not be (named in the region's errors),
    /// or the engine gave up on it.
    Failed,
    /// Planned, and no record of it: the run ended (or was stopped) first.
    NotReached,
}

/// A region of a shard's report, as the summary reads it back (the
/// fields of `report::RegionSweep` it needs, by their JSON names).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegionView {
    #[serde(default)]
    pub account: Option<String>,
    pub region: String,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub readiness: ReadinessView,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub refusing: u64,
    #[serde(default)]
    pub sources: u64,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub missed_events: u64,
    #[serde(default)]
    pub held_by_breaker: u64,
    #[serde(default)]
    pub break_glass: Vec<serde_json::Value>,
    #[serde(default)]
    pub no_member_stack: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReadinessView {
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// A shard's report, as the summary reads it back.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ShardView {
    #[serde(default)]
    pub sweep: Option<SweepView>,
    /// Instances with news, capped by the shard (failed ones first).
    #[serde(default)]
    pub instances: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SweepView {
    #[serde(default)]
    pub regions: Vec<RegionView>,
    #[serde(default)]
    pub sources: Vec<serde_json::Value>,
    #[serde(default)]
    pub refusing_imdsv1: Vec<serde_json::Value>,
    #[serde(default)]
    pub omitted_instances: u64,
    #[serde(default)]
    pub native_enforcement: Option<crate::rollout::Rollout>,
}

/// An account-region that is not ready, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotReady {
    pub account: String,
    pub region: String,
    pub verdict: String,
    /// Instances left at `optional` (flagged, failed): the work left.
    pub left: u64,
    pub reasons: Vec<String>,
}

/// A shard that did not end swept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardProblem {
    pub account: String,
    pub status: ShardStatus,
    pub error: String,
}

/// The organization's sweep, in one summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrgSummary {
    pub run: String,
    pub mode: String,
    /// Shards planned (accounts), and account-regions.
    pub planned: u64,
    pub account_regions: u64,
    pub swept: u64,
    pub failed: u64,
    pub not_reached: u64,
    /// Failed and not-reached shards, named (capped in the message).
    pub problems: Vec<ShardProblem>,
    pub counts: BTreeMap<String, u64>,
    /// Account-regions ready for `HttpTokensEnforced` (or already on).
    pub ready: u64,
    /// The rest, with why: the most work left first.
    pub not_ready: Vec<NotReady>,
    pub refusing_imdsv1: Vec<serde_json::Value>,
    /// Noncompliant sources across the organization, the most instances first.
    pub sources: Vec<serde_json::Value>,
    /// Instances with news the shards listed (failed ones first).
    pub instances: Vec<serde_json::Value>,
    pub omitted_instances: u64,
    /// Sources beyond those kept (the most instances kept).
    pub omitted_sources: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_allowed: Vec<String>,
    /// Account-regions where the sweep fixed instances whose launch events
    /// never arrived (`watch`), the most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missed_events: Vec<Missed>,
    /// Changes the circuit breaker held back, over every shard.
    #[serde(skip_serializing_if = "crate::report::is_zero")]
    pub held_by_breaker: u64,
    /// Break-glass grants in force, and those that ended since the last
    /// run, with their account and region (capped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub break_glass: Vec<serde_json::Value>,
    /// Account-regions by the mode they ran in, when modes are set per
    /// account or unit; and the accounts not in the default mode.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_default: BTreeMap<String, String>,
    /// Accounts whose member role was refused: no member stack there (their
    /// events cannot reach the guard either).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub no_member_stack: Vec<String>,
    /// The way out over the organization: each account-region's step,
    /// rolled up per organizational unit (`rollout`), from the shards'.
    pub native_enforcement: crate::rollout::Rollout,
    /// The shards' steps, gathered until `finish` rolls them up.
    #[serde(skip)]
    steps: Vec<crate::rollout::Step>,
}

/// An account-region with missed events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Missed {
    pub account: String,
    pub region: String,
    pub instances: u64,
}

impl OrgSummary {
    /// An empty summary of `plan`'s run; `add` each shard, then `finish`.
    pub fn new(plan: &Plan, mode: &str) -> Self {
        OrgSummary {
            run: plan.run.clone(),
            mode: mode.to_string(),
            planned: plan.accounts.len() as u64,
            account_regions: plan.account_regions() as u64,
            not_allowed: plan.not_allowed.clone(),
            ..OrgSummary::default()
        }
    }

    /// One shard's record: its report (`Ok`), or why the engine gave up
    /// (`Err`); `failure`, what its sweep could not handle. An unreadable
    /// report is a failed shard, never a silent one.
    pub fn add(&mut self, account: &str, shard: Result<&str, &str>, failure: Option<&str>) {
        let report = match shard {
            Ok(json) => serde_json::from_str::<ShardView>(json)
                .map_err(|e| format!("its report could not be read: {e}")),
            Err(why) => Err(why.to_string()),
        };
        let report = match report {
            Ok(r) => r,
            Err(error) => {
                self.failed += 1;
                self.problems.push(ShardProblem {
                    account: account.to_string(),
                    status: ShardStatus::Failed,
                    error,
                });
                return;
            }
        };
        let sweep = report.sweep.unwrap_or_default();
        let mut errors = Vec::new();
        let failure = failure.map(str::to_string);
        for r in &sweep.regions {
            for (k, v) in &r.counts {
                *self.counts.entry(k.clone()).or_default() += v;
            }
            errors.extend(r.errors.iter().map(|e| format!("{}: {e}", r.region)));
            let who = r.account.clone().unwrap_or_else(|| account.to_string());
            if r.no_member_stack && !self.no_member_stack.contains(&who) {
                self.no_member_stack.push(who.clone());
            }
            if let Some(m) = &r.mode {
                *self.modes.entry(m.clone()).or_default() += 1;
                if *m != self.mode && self.not_default.len() < 100 {
                    self.not_default.insert(who.clone(), m.clone());
                }
            }
            if r.missed_events > 0 {
                self.missed_events.push(Missed {
                    account: who.clone(),
                    region: r.region.clone(),
                    instances: r.missed_events,
                });
            }
            self.held_by_breaker += r.held_by_breaker;
            for g in &r.break_glass {
                if self.break_glass.len() < KEEP {
                    let mut g = g.clone();
                    if let Some(o) = g.as_object_mut() {
                        o.insert("account".into(), who.clone().into());
                        o.insert("region".into(), r.region.clone().into());
                    }
                    self.break_glass.push(g);
                }
            }
            if matches!(r.readiness.verdict.as_str(), "ready" | "already enforced") {
                self.ready += 1;
            } else {
                let left = r.counts.get("flagged").copied().unwrap_or(0)
                    + r.counts.get("failed").copied().unwrap_or(0);
                self.not_ready.push(NotReady {
                    account: r.account.clone().unwrap_or_else(|| account.to_string()),
                    region: r.region.clone(),
                    verdict: r.readiness.verdict.clone(),
                    left,
                    reasons: r.readiness.reasons.clone(),
                });
            }
        }
        if let Some(r) = sweep.native_enforcement {
            self.steps.extend(r.account_regions);
        }
        self.refusing_imdsv1.extend(sweep.refusing_imdsv1);
        self.sources.extend(sweep.sources);
        self.instances.extend(report.instances);
        self.omitted_instances += sweep.omitted_instances;
        // The shard's own word counts first: instances, sources or the
        // account default it could not handle fail it as regions do.
        match failure.or_else(|| (!errors.is_empty()).then(|| errors.join("; "))) {
            None => self.swept += 1,
            Some(error) => {
                self.failed += 1;
                self.problems.push(ShardProblem {
                    account: account.to_string(),
                    status: ShardStatus::Failed,
                    error,
                });
            }
        }
        // Bounded, whatever the organization's size: the message shows a
        // few thousand at most, and counts the rest.
        if self.instances.len() > KEEP {
            self.instances.sort_by_key(|i| {
                i.get("outcome").and_then(serde_json::Value::as_str) != Some("failed")
            });
            self.omitted_instances += (self.instances.len() - KEEP) as u64;
            self.instances.truncate(KEEP);
        }
        if self.sources.len() > KEEP {
            let n = |v: &serde_json::Value| {
                v.get("instances")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            self.sources.sort_by_key(|s| std::cmp::Reverse(n(s)));
            self.omitted_sources += (self.sources.len() - KEEP) as u64;
            self.sources.truncate(KEEP);
        }
        if self.refusing_imdsv1.len() > KEEP {
            self.refusing_imdsv1.truncate(KEEP);
        }
    }

    /// Every planned shard with no record is `not reached`; lists ordered
    /// for a reader: failed shards first, the most work left first, the
    /// sources that launched the most first, failed instances first.
    pub fn finish(&mut self, plan: &Plan, recorded: &[String]) {
        for a in &plan.accounts {
            if !recorded.contains(a) {
                self.not_reached += 1;
                self.problems.push(ShardProblem {
                    account: a.clone(),
                    status: ShardStatus::NotReached,
                    error: "no record of this shard: the run ended before it".into(),
                });
            }
        }
        self.problems
            .sort_by(|a, b| a.status.cmp(&b.status).then(a.account.cmp(&b.account)));
        self.native_enforcement = crate::rollout::Rollout::of(std::mem::take(&mut self.steps));
        self.missed_events.sort_by(|a, b| {
            b.instances
                .cmp(&a.instances)
                .then(a.account.cmp(&b.account))
                .then(a.region.cmp(&b.region))
        });
        self.not_ready.sort_by(|a, b| {
            b.left
                .cmp(&a.left)
                .then(a.account.cmp(&b.account))
                .then(a.region.cmp(&b.region))
        });
        let n = |v: &serde_json::Value| {
            v.get("instances")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        self.sources.sort_by_key(|s| std::cmp::Reverse(n(s)));
        self.instances.sort_by_key(|i| {
            i.get("outcome").and_then(serde_json::Value::as_str) != Some("failed")
        });
    }

    /// Whether every planned shard was swept to the end.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.not_reached == 0
    }

    /// The shards that did not end swept, for the invocation's error.
    pub fn failure(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        let named: Vec<String> = self
            .problems
            .iter()
            .take(20)
            .map(|p| format!("{} ({})", p.account, crate::validate::clean(&p.error, 300)))
            .collect();
        Some(format!(
            "{} of {} shard(s) not swept to the end ({} failed, {} not reached): {}{}",
            self.failed + self.not_reached,
            self.planned,
            self.failed,
            self.not_reached,
            named.join("; "),
            if self.problems.len() > 20 {
                "; ..."
            } else {
                ""
            }
        ))
    }

    /// The one message: the headline counts, failed shards first, then the
    /// regions not ready, sources, refusing and failed instances, cut to
    /// fit (`cap`) with counts of what was left out.
    pub fn notification(&self) -> Notification {
        let tally: Vec<String> = ["remediated", "flagged", "exempt", "failed"]
            .iter()
            .filter_map(|o| {
                let n = self.counts.get(*o).copied().unwrap_or(0);
                (n > 0).then(|| format!("{n} {o}"))
            })
            .collect();
        let tally = if tally.is_empty() {
            "nothing noncompliant".to_string()
        } else {
            tally.join(", ")
        };
        // Events that never arrived first, then the breaker, then shards.
        let mut broken = String::new();
        let missed: u64 = self.missed_events.iter().map(|m| m.instances).sum();
        if missed > 0 {
            broken.push_str(&format!(
                "{missed} EVENTS MISSED in {} account-region(s); ",
                self.missed_events.len()
            ));
        }
        if !self.no_member_stack.is_empty() {
            broken.push_str(&format!(
                "{} ACCOUNT(S) WITHOUT THE MEMBER STACK; ",
                self.no_member_stack.len()
            ));
        }
        if self.held_by_breaker > 0 {
            broken.push_str(&format!(
                "CIRCUIT BREAKER held {} change(s); ",
                self.held_by_breaker
            ));
        }
        if self.failed + self.not_reached > 0 {
            broken.push_str(&format!(
                "{} SHARD(S) NOT SWEPT; ",
                self.failed + self.not_reached
            ));
        }
        let headline = format!(
            "imds-guard {} sweep: {broken}{tally} in {} accounts ({}/{} account-regions ready)",
            self.mode, self.planned, self.ready, self.account_regions
        );
        let summary = format!(
            "{headline}; {} of {} shards swept, {} failed, {} not reached; run {}",
            self.swept, self.planned, self.failed, self.not_reached, self.run
        );
        #[derive(Serialize)]
        struct Body<'a> {
            summary: &'a str,
            source: &'static str,
            release: crate::release::Release,
            run: &'a str,
            mode: &'a str,
            planned: u64,
            account_regions: u64,
            swept: u64,
            failed: u64,
            not_reached: u64,
            ready: u64,
            counts: &'a BTreeMap<String, u64>,
            problems: &'a [ShardProblem],
            #[serde(skip_serializing_if = "is_zero")]
            omitted_problems: usize,
            not_ready: &'a [NotReady],
            #[serde(skip_serializing_if = "is_zero")]
            omitted_not_ready: usize,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            refusing_imdsv1: &'a [serde_json::Value],
            #[serde(skip_serializing_if = "is_zero")]
            omitted_refusing: usize,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            sources: &'a [serde_json::Value],
            #[serde(skip_serializing_if = "is_zero")]
            omitted_sources: usize,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            missed_events: &'a [Missed],
            #[serde(skip_serializing_if = "crate::report::is_zero")]
            held_by_breaker: u64,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            break_glass: &'a [serde_json::Value],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            no_member_stack: &'a [String],
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            modes: &'a BTreeMap<String, u64>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            accounts_not_in_the_default_mode: &'a BTreeMap<String, String>,
            /// The rollout per unit, whole units ready first, at most
            /// `UNITS_SHOWN` (each account-region's step is in its shard's
            /// record).
            native_enforcement: &'a [crate::rollout::UnitPlan],
            #[serde(skip_serializing_if = "is_zero")]
            omitted_units: usize,
            instances: &'a [serde_json::Value],
            omitted_instances: u64,
        }
        // These lead the message and stay short: the most first.
        let missed = &self.missed_events[..self.missed_events.len().min(100)];
        let grants = &self.break_glass[..self.break_glass.len().min(100)];
        let units = &self.native_enforcement.units;
        // Given way in this order: instances, sources, regions not ready,
        // refusing instances, failed shards.
        let lens = [
            self.instances.len(),
            self.sources.len(),
            self.not_ready.len(),
            self.refusing_imdsv1.len(),
            self.problems.len(),
        ];
        let render = |shown: &[usize]| {
            serde_json::to_string_pretty(&Body {
                summary: &summary,
                source: "imds-guard",
                release: crate::release::Release::THIS,
                run: &self.run,
                mode: &self.mode,
                planned: self.planned,
                account_regions: self.account_regions,
                swept: self.swept,
                failed: self.failed,
                not_reached: self.not_reached,
                ready: self.ready,
                counts: &self.counts,
                problems: &self.problems[..shown[4]],
                omitted_problems: self.problems.len() - shown[4],
                not_ready: &self.not_ready[..shown[2]],
                omitted_not_ready: self.not_ready.len() - shown[2],
                refusing_imdsv1: &self.refusing_imdsv1[..shown[3]],
                omitted_refusing: self.refusing_imdsv1.len() - shown[3],
                sources: &self.sources[..shown[1]],
                omitted_sources: self.sources.len() - shown[1] + self.omitted_sources as usize,
                missed_events: missed,
                held_by_breaker: self.held_by_breaker,
                break_glass: grants,
                no_member_stack: &self.no_member_stack[..self.no_member_stack.len().min(100)],
                modes: &self.modes,
                accounts_not_in_the_default_mode: &self.not_default,
                native_enforcement: &units[..units.len().min(UNITS_SHOWN)],
                omitted_units: units.len().saturating_sub(UNITS_SHOWN),
                instances: &self.instances[..shown[0]],
                omitted_instances: self.omitted_instances
                    + (self.instances.len() - shown[0]) as u64,
            })
            .unwrap_or_default()
        };
        let body = cap::fit(MAX_BODY, &lens, render)
            .map(|f| f.text)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| {
                serde_json::json!({"summary": summary, "source": "imds-guard",
                    "release": crate::release::Release::THIS,
                    "error": "the full message was too large to send; see the function's log"})
                .to_string()
            });
        let mut outcomes: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(o, _)| o.clone())
            .collect();
        if !self.complete() && !outcomes.iter().any(|o| o == "failed") {
            outcomes.push("failed".into());
        }
        if self.held_by_breaker > 0 {
            outcomes.push(crate::notify::BREAKER_TRIPPED.into());
        }
        Notification {
            subject: subject(&headline),
            body,
            outcomes,
            attributes: vec![
                ("event_name".to_string(), crate::event::SWEEP.to_string()),
                ("mode".to_string(), self.mode.clone()),
            ],
        }
    }
}

/// Units the summary message lists (whole units that are ready first):
/// a few hundred bytes each, within the message whatever else it holds.
const UNITS_SHOWN: usize = 25;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(accounts: usize, regions: &[&str]) -> Plan {
        Plan {
            run: "run-1".into(),
            accounts: (0..accounts)
                .map(|n| format!("{:012}", 100_000_000_000u64 + n as u64))
                .collect(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            concurrency: 40,
            ..Plan::default()
        }
    }

    fn shard(account: &str, regions: &[&str], ready: bool, error: Option<&str>) -> String {
        let regions: Vec<serde_json::Value> = regions
            .iter()
            .map(|r| {
                serde_json::json!({
                    "account": account, "region": r,
                    "counts": {"remediated": 2, "flagged": if ready { 0 } else { 3 }},
                    "readiness": if ready { serde_json::json!({"verdict": "ready"}) }
                                 else { serde_json::json!({"verdict": "not ready", "reasons": ["3 instance(s) still at HttpTokens=optional"]}) },
                    "errors": error.map(|e| vec![e]).unwrap_or_default(),
                })
            })
            .collect();
        serde_json::json!({"status": "swept", "sweep": {"regions": regions},
            "instances": [{"instance_id": "i-0123456789abcdef0", "outcome": "failed"}]})
        .to_string()
    }

    #[test]
    fn missed_events_then_the_breaker_lead_the_organizations_summary() {
        let p = plan(3, &["eu-west-1"]);
        let mut s = OrgSummary::new(&p, "enforce");
        let mut quiet: serde_json::Value =
            serde_json::from_str(&shard(&p.accounts[0], &["eu-west-1"], true, None)).unwrap();
        quiet["sweep"]["regions"][0]["held_by_breaker"] = 4.into();
        quiet["sweep"]["regions"][0]["mode"] = "audit".into();
        quiet["sweep"]["regions"][0]["break_glass"] = serde_json::json!([
            {"target": "i-0123456789abcdef0", "state": "active", "until": "2026-11-29T18:00:00Z",
             "by": "arn:aws:iam::111122223333:user/alice", "reason": "INC-42"}
        ]);
        s.add(&p.accounts[0], Ok(&quiet.to_string()), None);
        for (i, n) in [(1, 2u64), (2, 5)] {
            let mut v: serde_json::Value =
                serde_json::from_str(&shard(&p.accounts[i], &["eu-west-1"], true, None)).unwrap();
            v["sweep"]["regions"][0]["missed_events"] = n.into();
            v["sweep"]["regions"][0]["mode"] = "enforce".into();
            s.add(&p.accounts[i], Ok(&v.to_string()), None);
        }
        s.finish(&p, &p.accounts);
        assert_eq!(
            s.missed_events
                .iter()
                .map(|m| m.instances)
                .collect::<Vec<_>>(),
            [5, 2],
            "the most first"
        );
        let n = s.notification();
        assert!(
            n.subject
                .starts_with("imds-guard enforce sweep: 7 EVENTS MISSED in 2 account-region(s); CIRCUIT BREAKER held 4"),
            "{}",
            n.subject
        );
        let body: serde_json::Value = serde_json::from_str(&n.body).unwrap();
        assert_eq!(body["missed_events"][0]["instances"], 5);
        assert_eq!(body["break_glass"][0]["reason"], "INC-42");
        assert_eq!(body["break_glass"][0]["account"], p.accounts[0].as_str());
        assert!(n.outcomes.iter().any(|o| o == "breaker_tripped"));
        // The mode each account ran in: counted, and those not in the
        // default named.
        assert_eq!(body["modes"], serde_json::json!({"audit": 1, "enforce": 2}));
        assert_eq!(
            body["accounts_not_in_the_default_mode"],
            serde_json::json!({ p.accounts[0].as_str(): "audit" })
        );
    }

    #[test]
    fn the_plan_decides_at_each_run_whether_to_fan_out() {
        assert!(!fans_out(99, 100));
        assert!(fans_out(100, 100));
        let p = plan(1000, &["us-east-1"; 17]);
        assert_eq!(p.account_regions(), 17_000);
        let step: FanOutStep = serde_json::from_value(serde_json::json!({
            "imds_guard_step": "shard", "run": "r", "account": "111122223333"
        }))
        .unwrap();
        assert_eq!(
            step,
            FanOutStep::Shard {
                run: "r".into(),
                account: "111122223333".into()
            }
        );
    }

    #[test]
    fn every_planned_shard_ends_swept_failed_or_not_reached() {
        let p = plan(6, &["us-east-1", "eu-west-1"]);
        let r = ["us-east-1", "eu-west-1"];
        let mut s = OrgSummary::new(&p, "enforce");
        s.add(
            &p.accounts[0],
            Ok(&shard(&p.accounts[0], &r, true, None)),
            None,
        );
        s.add(
            &p.accounts[1],
            Ok(&shard(&p.accounts[1], &r, false, None)),
            None,
        );
        s.add(
            &p.accounts[2],
            Ok(&shard(&p.accounts[2], &r, false, Some("listing stopped"))),
            None,
        );
        s.add(&p.accounts[3], Err("States.Timeout after 3 attempts"), None);
        // Regions swept, but an instance the shard could not handle.
        s.add(
            &p.accounts[4],
            Ok(&shard(&p.accounts[4], &r, true, None)),
            Some("1 of 20 not handled: i-0123456789abcdef0 (UnauthorizedOperation)"),
        );
        s.finish(&p, &p.accounts[..5]);
        assert_eq!((s.swept, s.failed, s.not_reached), (2, 3, 1));
        assert_eq!(s.swept + s.failed + s.not_reached, s.planned, "none lost");
        assert_eq!(s.problems.len(), 4);
        assert_eq!(
            s.problems[3].status,
            ShardStatus::NotReached,
            "failed first"
        );
        assert!(s
            .problems
            .iter()
            .any(|p| p.error.contains("UnauthorizedOperation")));
        assert_eq!(s.ready, 4);
        assert_eq!(s.not_ready.len(), 4);
        assert_eq!(s.counts["remediated"], 16);
        let f = s.failure().unwrap();
        assert!(
            f.starts_with("4 of 6 shard(s) not swept to the end (3 failed, 1 not reached)"),
            "{f}"
        );
        // An unreadable record is a failed shard, never a silent one.
        let mut t = OrgSummary::new(&p, "enforce");
        t.add(&p.accounts[0], Ok("{not json"), None);
        assert_eq!(t.failed, 1);
    }

    #[test]
    fn the_summary_of_17000_account_regions_fits_sns_with_failed_shards_first() {
        let regions: Vec<String> = (0..17).map(|n| format!("xx-region-{n}")).collect();
        let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
        let p = plan(1000, &regions);
        let mut s = OrgSummary::new(&p, "enforce");
        for (n, a) in p.accounts.iter().enumerate() {
            if n % 100 == 7 {
                s.add(a, Err("Lambda.Unknown: the shard timed out"), None);
                continue;
            }
            s.add(a, Ok(&shard(a, &regions, n % 3 == 0, None)), None);
        }
        s.finish(&p, &p.accounts);
        assert_eq!(s.account_regions, 17_000);
        assert_eq!(s.swept + s.failed + s.not_reached, 1000);
        let m = s.notification();
        assert!(m.body.len() <= MAX_BODY, "{}", m.body.len());
        assert!(m.subject.len() <= 100);
        assert!(m.subject.contains("10 SHARD(S) NOT SWEPT"), "{}", m.subject);
        let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(
            v["problems"].as_array().unwrap().len(),
            10,
            "every failed shard listed"
        );
        let shown = v["not_ready"].as_array().map_or(0, |a| a.len());
        assert_eq!(
            shown as u64 + v["omitted_not_ready"].as_u64().unwrap_or(0),
            s.not_ready.len() as u64
        );
        assert_eq!(v["account_regions"], 17_000);
    }
}

//! The exemption check: each principal exemption a launch event claimed is
//! asked of CloudTrail (`confirm`) and kept, or ended and its instance
//! decided again, as a sweep would decide it (no principal). The sweep
//! function's binary runs it on a schedule (`ExemptionCheckRule`): the
//! CloudTrail client does not fit the event function's bootstrap.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::account_region::{AccountRegion, Closed};
use crate::aws::{Clients, MemoryApi, TrailApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::confirm::{self, TrailRecord, Verdict, Waiting};
use crate::error::GuardError;
use crate::event::{EventContext, Observed, Trigger};
use crate::event_path::EventPath;
use crate::memory::{Kind, Record};

/// The payload key of a check (the schedule's fixed input).
pub const REQUEST_KEY: &str = "imds_guard_check_exemptions";

/// `LookupEvents` answers two calls a second per account and region.
const PACE: Duration = Duration::from_millis(500);

pub fn is_request(payload: &Value) -> bool {
    payload.get(REQUEST_KEY).is_some()
}

/// What one check did, as its answer (and log) says.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// `account/region/instance`, kept: CloudTrail confirmed the launch.
    pub confirmed: Vec<String>,
    /// Ended, and why; each instance decided again.
    pub ended: Vec<Ended>,
    /// Still waiting for CloudTrail, within the window.
    pub waiting: u64,
    /// The instances decided again, by outcome.
    pub decided: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Ended {
    pub instance: String,
    pub why: String,
}

pub struct ExemptionCheck<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> ExemptionCheck<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        ExemptionCheck { cfg, clients }
    }

    /// Checks every exemption waiting; fails, naming them, when one could
    /// not be checked or decided (it is asked again next time).
    pub async fn run(&self) -> Result<Value, GuardError> {
        let mut out = Checked::default();
        let Some(memory) = self.clients.memory() else {
            return Ok(serde_json::to_value(&out).unwrap_or(Value::Null));
        };
        let now = now_secs();
        let entries = memory
            .query(confirm::CHECK_PARTITION, Kind::Unconfirmed.prefix(), now)
            .await
            .map_err(|e| GuardError::Incomplete {
                summary: format!("the exemptions waiting for CloudTrail could not be read: {e}"),
            })?;
        let mut by_region: BTreeMap<(String, String), Vec<(Waiting, Record)>> = BTreeMap::new();
        for r in entries {
            match Waiting::from_entry(&r) {
                Some(w) => by_region
                    .entry((w.account.clone(), w.region.clone()))
                    .or_default()
                    .push((w, r)),
                None => {
                    warn!(sk = %r.sk, "an entry of the exemption check is not whole; ignored until it lapses")
                }
            }
        }
        for ((account, region), waiting) in by_region {
            self.check_region(&memory, &account, &region, waiting, now, &mut out)
                .await;
        }
        info!(checked = %serde_json::to_string(&out).unwrap_or_default(), "exemption check");
        let answer = serde_json::to_value(&out).unwrap_or(Value::Null);
        if out.errors.is_empty() {
            Ok(answer)
        } else {
            Err(GuardError::Incomplete {
                summary: format!(
                    "the exemption check could not finish: {}",
                    out.errors.join("; ")
                ),
            })
        }
    }

    async fn check_region(
        &self,
        memory: &C::Memory,
        account: &str,
        region: &str,
        waiting: Vec<(Waiting, Record)>,
        now: u64,
        out: &mut Checked,
    ) {
        let mut decide_again = Vec::new();
        let mut writes = Vec::new();
        if let Some(why) = self.cfg.refusal(Some(account)) {
            // Not an account the guard may act in: nothing to keep.
            for (w, entry) in waiting {
                writes.push(ended(entry, now));
                out.ended.push(Ended {
                    instance: w.instance_id,
                    why: why.clone(),
                });
            }
            self.write(memory, writes, out).await;
            return;
        }
        let trail = match AccountRegion::enter(self.cfg, self.clients, Some(account), region).await
        {
            Ok(here) => self.clients.trail(&here.who, region),
            Err(Closed::Refused(e)) => {
                out.errors
                    .push(format!("{account}/{region}: not allowed: {e}"));
                return;
            }
            Err(Closed::Unreachable(e)) => {
                out.errors.push(format!(
                    "{account}/{region}: CloudTrail could not be reached: {e}"
                ));
                return;
            }
        };
        let mut found: HashMap<String, Option<TrailRecord>> = HashMap::new();
        for (w, entry) in waiting {
            if !found.contains_key(&w.event_id) {
                if !found.is_empty() {
                    tokio::time::sleep(PACE).await;
                }
                match trail.event(&w.event_id).await {
                    Ok(r) => {
                        found.insert(w.event_id.clone(), r);
                    }
                    Err(e) => {
                        out.errors.push(format!(
                            "{account}/{region}: event {} could not be looked up: {e}",
                            w.event_id
                        ));
                        continue;
                    }
                }
            }
            let name = format!("{account}/{region}/{}", w.instance_id);
            match confirm::judge(&w, found[&w.event_id].as_ref(), now) {
                Verdict::Waiting => out.waiting += 1,
                Verdict::Confirmed => {
                    writes.push(Record::exempt(
                        &w.partition,
                        &w.instance_id,
                        &w.glob,
                        Some(&w.event_id),
                        now,
                    ));
                    writes.push(ended(entry, now));
                    out.confirmed.push(name);
                }
                verdict => {
                    let why = match verdict {
                        Verdict::Refuted { why } => why,
                        _ => format!(
                            "CloudTrail had no record of launch event {} within {} minutes",
                            w.event_id,
                            confirm::WINDOW_SECS / 60
                        ),
                    };
                    warn!(instance = %name, %why, "a principal exemption is not confirmed: ended, and the instance decided again");
                    writes.push(ended(w.exemption(), now));
                    writes.push(ended(entry, now));
                    out.ended.push(Ended {
                        instance: name,
                        why,
                    });
                    decide_again.push(w);
                }
            }
        }
        // Ended before the instances are decided again, so the decision
        // does not find them honoured.
        if !self.write(memory, writes, out).await || decide_again.is_empty() {
            return;
        }
        let ctx = EventContext {
            event_name: "ExemptionNotConfirmed".into(),
            account: Some(account.to_string()),
            region: region.to_string(),
            ..EventContext::default()
        };
        let instances = decide_again
            .iter()
            .map(|w| Observed {
                instance_id: w.instance_id.clone(),
                ..Observed::default()
            })
            .collect();
        let report = match EventPath::new(self.cfg, self.clients)
            .instances(ctx, Trigger::Sweep, instances, Vec::new())
            .await
        {
            Ok(r) => r,
            Err(GuardError::Unhandled { summary, report }) => {
                out.errors.push(format!("{account}/{region}: {summary}"));
                *report
            }
            Err(e) => {
                out.errors.push(format!("{account}/{region}: {e}"));
                return;
            }
        };
        for r in &report.instances {
            *out.decided.entry(r.outcome.as_str().into()).or_insert(0) += 1;
        }
    }

    async fn write(&self, memory: &C::Memory, writes: Vec<Record>, out: &mut Checked) -> bool {
        if writes.is_empty() {
            return true;
        }
        match memory.put(&writes).await {
            Ok(()) => true,
            Err(e) => {
                out.errors.push(format!(
                    "what the check concluded could not be written to the guard's memory: {e}"
                ));
                false
            }
        }
    }
}

/// `r`, ended now: no longer live, and so never honoured again.
fn ended(mut r: Record, now: u64) -> Record {
    r.expires_at = now;
    r
}

//! The guard's findings in Security Hub (`SECURITY_HUB_FINDINGS`), filed
//! from the instance's own account and region (`Clients::findings` hands
//! out a member account's through its role), or, by a binary without
//! Security Hub's client, handed to the outputs function to file
//! (`outbox::filer`). The event path files what its
//! decisions mean (`for_event`); the sweep reconciles a whole account-region
//! with what the guard filed, as its memory keeps it (`RegionFindings`), with
//! no read of Security Hub: it files only changes,
//! passes the findings of instances fixed by someone else, and archives those
//! of instances that are gone. What each decision means is the domain's
//! (`finding`); this module only carries it out.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use crate::aws::{AwsError, Ec2Api, FindingsApi, MemoryApi};
use crate::config::Config;
use crate::event::Trigger;
use crate::finding::{self, Active, ComplianceStatus, Finding, FindingsReport, Place};
use crate::memory::Kind;
use crate::policy::{Policy, Verdict};
use crate::report::InstanceReport;

/// Security Hub's answer when it is not enabled in the account and region.
fn not_enabled(e: &AwsError) -> bool {
    e.code() == Some("InvalidAccessException")
}

fn not_enabled_warning(region: &str, why: impl std::fmt::Display) -> String {
    format!("Security Hub is not enabled in {region}: no findings filed there ({why})")
}

/// How a filing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filed {
    /// Every finding went in.
    All,
    /// Some were refused or a call failed (errors in the report).
    Partly,
    /// Security Hub is not enabled in the region (a warning in the report).
    NotEnabled,
}

/// Files `findings` in calls of 100, counting what was filed into `out`.
/// A region where Security Hub is not enabled is a warning, once; a refused
/// finding or a failed call is an error that names the findings.
pub async fn file(
    api: &impl FindingsApi,
    region: &str,
    findings: &[Finding],
    out: &mut FindingsReport,
) -> Filed {
    let mut filed = Filed::All;
    for chunk in findings.chunks(finding::MAX_PER_CALL) {
        match api.import(chunk).await {
            // Security Hub not enabled can also come back per finding
            // (`InvalidAccess` in `FailedFindings`): a warning, as above.
            Ok(refused)
                if !refused.is_empty()
                    && refused.len() == chunk.len()
                    && refused
                        .iter()
                        .all(|(_, why)| why.starts_with("InvalidAccess")) =>
            {
                out.warnings
                    .push(not_enabled_warning(region, &refused[0].1));
                return Filed::NotEnabled;
            }
            // Handed to the outputs function, which files them.
            Ok(_) if api.hands_off() => out.queued += chunk.len() as u64,
            Ok(refused) => {
                for f in chunk {
                    if !refused.iter().any(|(id, _)| *id == f.id) {
                        out.count(f);
                    }
                }
                if !refused.is_empty() {
                    filed = Filed::Partly;
                }
                out.errors.extend(
                    refused
                        .into_iter()
                        .map(|(id, why)| format!("finding {id} refused: {why}")),
                );
            }
            Err(e) if not_enabled(&e) => {
                out.warnings.push(not_enabled_warning(region, &e));
                return Filed::NotEnabled;
            }
            Err(e) => {
                filed = Filed::Partly;
                let first = chunk.first().map(|f| f.id.as_str()).unwrap_or("");
                out.errors.push(format!(
                    "{} finding(s) in {region} (from {first}) not filed: {e}",
                    chunk.len()
                ));
            }
        }
    }
    filed
}

/// The findings an event's decisions make, filed; `None` when they make
/// none (a launch compliant from the start costs no call).
pub async fn for_event(
    cfg: &Config,
    api: &impl FindingsApi,
    memory: Option<&impl MemoryApi>,
    place: &Place<'_>,
    trigger: Trigger,
    reports: &[InstanceReport],
) -> Option<FindingsReport> {
    if !cfg.security_hub_findings {
        return None;
    }
    let findings: Vec<Finding> = reports
        .iter()
        .filter_map(|r| finding::for_report(place, cfg.mode, r, trigger))
        .collect();
    if findings.is_empty() {
        return None;
    }
    let mut out = FindingsReport::default();
    let memory_partition = crate::memory::partition(place.account, place.region);
    file_and_remember(
        api,
        memory.map(|m| (m, memory_partition.as_str())),
        place.region,
        &findings,
        &mut out,
        place.now,
    )
    .await;
    Some(out)
}

/// Remembers what was filed, so a sweep files only what changes. A record
/// that cannot be written costs a second filing later, nothing more.
pub async fn remember(
    memory: &impl MemoryApi,
    memory_partition: &str,
    filed: &[Finding],
    now: u64,
) -> Option<String> {
    // Only an instance's check is reconciled, so only those are kept (a
    // theft finding is filed again by each sweep that sees it).
    let records: Vec<_> = filed
        .iter()
        .filter(|f| finding::instance_of(&f.id).is_some())
        .map(|f| finding::record(memory_partition, f, now))
        .collect();
    if records.is_empty() {
        return None;
    }
    let e = memory.put(&records).await.err()?;
    warn!(error = %e, "the findings filed could not be remembered; the next sweep files them again");
    Some(format!(
        "{} finding(s) filed but not remembered ({e}): the next sweep files them again, and cannot archive one whose instance is gone by then",
        records.len()
    ))
}

/// Files `findings` and remembers those Security Hub took.
pub async fn file_and_remember(
    api: &impl FindingsApi,
    memory: Option<(&impl MemoryApi, &str)>,
    region: &str,
    findings: &[Finding],
    out: &mut FindingsReport,
    now: u64,
) -> Filed {
    let filed = file(api, region, findings, out).await;
    // Only when every finding went in: a refused or unfiled one must not be
    // remembered as filed. Findings handed off are remembered by the
    // outputs function once Security Hub takes them.
    if filed == Filed::All && !api.hands_off() {
        if let Some((memory, partition)) = memory {
            out.warnings
                .extend(remember(memory, partition, findings, now).await);
        }
    }
    filed
}

/// One account-region's findings in a sweep: what the guard's memory says
/// it filed, read first; what each page's decisions change, filed page by
/// page (memory stays bounded by a page); and at the end, the findings of
/// instances the sweep did not decide, settled.
pub struct RegionFindings {
    account: String,
    region: String,
    memory_partition: String,
    /// The guard's active findings here, by instance.
    held: HashMap<String, ComplianceStatus>,
    /// Instances whose finding this sweep decided.
    seen: HashSet<String>,
    /// Security Hub is not enabled here: nothing more is tried.
    off: bool,
    /// What was filed could not be read: nothing is settled.
    blind: bool,
    pub report: FindingsReport,
}

impl RegionFindings {
    /// Reads what the guard filed in `account` and `region`.
    pub async fn open(
        memory: Option<&impl MemoryApi>,
        account: &str,
        region: &str,
        now: u64,
    ) -> RegionFindings {
        let memory_partition = crate::memory::partition(account, region);
        let mut this = RegionFindings {
            account: account.to_string(),
            region: region.to_string(),
            memory_partition,
            held: HashMap::new(),
            seen: HashSet::new(),
            off: false,
            blind: false,
            report: FindingsReport::default(),
        };
        let Some(memory) = memory else {
            this.blind = true;
            this.report.warnings.push(format!(
                "findings in {region} are filed without MEMORY_TABLE: every decision each sweep, and none settled"
            ));
            return this;
        };
        match memory
            .query(&this.memory_partition, Kind::Finding.prefix(), now)
            .await
        {
            Ok(records) => {
                this.held = finding::held(&records)
                    .into_iter()
                    .map(|a| (a.instance_id, a.status))
                    .collect();
            }
            Err(e) => {
                // Every decision is still filed (an update changes
                // nothing), none settled; the sweep fails, naming why.
                this.blind = true;
                this.report.errors.push(format!(
                    "the findings filed in {region} could not be read from the guard's memory: {e}"
                ));
            }
        }
        this
    }

    fn place(&self, now: u64) -> Place<'_> {
        Place {
            account: &self.account,
            region: &self.region,
            now,
            stamp_ms: crate::clock::stamp_ms(),
        }
    }

    /// Files what one page's decisions change.
    pub async fn page(
        &mut self,
        api: &impl FindingsApi,
        memory: Option<&impl MemoryApi>,
        cfg: &Config,
        reports: &[InstanceReport],
        now: u64,
    ) {
        if self.off {
            return;
        }
        let place = self.place(now);
        let decided: Vec<Finding> = reports
            .iter()
            .filter_map(|r| finding::for_report(&place, cfg.mode, r, Trigger::Sweep))
            .collect();
        // Only instances whose finding this page decided: one listed as
        // compliant makes none here (a listing of every instance shows
        // them), so a finding it still has open is settled at the end.
        self.seen.extend(
            decided
                .iter()
                .filter_map(|f| finding::instance_of(&f.id).map(str::to_string)),
        );
        let held: Vec<Active> = decided
            .iter()
            .filter_map(|f| {
                let id = finding::instance_of(&f.id)?;
                Some(Active {
                    instance_id: id.to_string(),
                    status: *self.held.get(id)?,
                })
            })
            .collect();
        let r = finding::reconcile(&held, decided, &|_| true);
        let mut out = std::mem::take(&mut self.report);
        out.unchanged += r.unchanged;
        let memory = memory.map(|m| (m, self.memory_partition.as_str()));
        self.off = file_and_remember(api, memory, &self.region, &r.file, &mut out, now).await
            == Filed::NotEnabled;
        self.report = out;
    }

    /// Settles the active findings of instances this sweep did not decide
    /// (only after a listing that reached its end): gone → archived, now
    /// compliant → passed; still noncompliant (listed after the sweep began)
    /// → left for the next sweep.
    pub async fn close(
        mut self,
        api: &impl FindingsApi,
        memory: Option<&impl MemoryApi>,
        ec2: &impl Ec2Api,
        cfg: &Config,
        complete: bool,
        now: u64,
    ) -> FindingsReport {
        if self.off || self.blind || !complete {
            return self.report;
        }
        let held: Vec<Active> = self
            .held
            .iter()
            .map(|(id, s)| Active {
                instance_id: id.clone(),
                status: *s,
            })
            .collect();
        let look_at = finding::reconcile(&held, Vec::new(), &|id| self.seen.contains(id)).look_at;
        if look_at.is_empty() {
            return self.report;
        }
        let ids: Vec<String> = look_at.iter().map(|(id, _)| id.clone()).collect();
        let shown = match ec2.describe(&ids).await {
            Ok(found) => found,
            Err(e) => {
                self.report.errors.push(format!(
                    "{} finding(s) in {} could not be settled: {e}",
                    ids.len(),
                    self.region
                ));
                return self.report;
            }
        };
        let shown: HashMap<&str, _> = shown.iter().map(|o| (o.instance_id.as_str(), o)).collect();
        let place = self.place(now);
        let policy = Policy::of(cfg);
        let nobody = crate::event::Principal::default();
        let mut settle = Vec::new();
        for (id, status) in &look_at {
            match shown.get(id.as_str()) {
                None => settle.push(finding::archived(&place, id, *status)),
                Some(o) => match policy.decide(o, &nobody) {
                    Verdict::Gone { .. } => settle.push(finding::archived(&place, id, *status)),
                    Verdict::Compliant => settle.push(finding::passed(&place, id, &o.options)),
                    _ => {}
                },
            }
        }
        let mut out = std::mem::take(&mut self.report);
        let memory = memory.map(|m| (m, self.memory_partition.as_str()));
        file_and_remember(api, memory, &self.region, &settle, &mut out, now).await;
        out
    }
}

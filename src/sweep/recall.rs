//! What the guard's memory says of one account-region, read for a sweep:
//! the exemptions recorded at launch, the grants in force, what a person
//! was already told, since when the guard enforces here, the instances
//! held back for IMDSv1 use and those that refuse it since they were
//! switched.

use super::*;
use crate::report::NoToken;

impl<'a, C: Clients> Sweep<'a, C> {
    /// With `CHECK_METADATA_NO_TOKEN`, an instance that answered IMDSv1
    /// calls in the lookback is flagged instead of changed (`plan::hold_back`);
    /// if the metric cannot be read, nothing is changed blind. Whatever the
    /// setting, a version-gated launcher's instance (`needs_version`) is
    /// changed only when the metric shows no IMDSv1 call: no data holds it.
    /// Returns the instances held back from a change: their index, the
    /// change, and their report before the hold.
    pub(super) async fn hold_back_v1_users(
        &self,
        who: &Account,
        region: &str,
        reports: &mut [InstanceReport],
        remedies: &mut [Option<Remedy>],
        s: &mut RegionSweep,
    ) -> Vec<(usize, Remedy, InstanceReport)> {
        let check = self.cfg.check_metadata_no_token;
        let ids: Vec<String> = reports
            .iter()
            .zip(remedies.iter())
            .filter(|(r, change)| {
                if awaits_proof(r, change) {
                    return true;
                }
                check
                    && matches!(
                        r.outcome,
                        Outcome::Remediated | Outcome::Flagged | Outcome::Exempt
                    )
            })
            .map(|(r, _)| r.instance_id.clone())
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
            let gated = awaits_proof(r, remedy);
            let mut before = (remedy.clone(), r.clone());
            let used = match &calls {
                Err(e) => {
                    unread_metric(r, remedy, &e.to_string());
                    None
                }
                Ok(calls) => {
                    let n = calls.get(&r.instance_id).copied();
                    // (No data is never zero for a gated launcher: `hold_back`.)
                    let used = hold_back(r, remedy, n, hours, self.cfg.no_token_missing_as_zero);
                    match used {
                        V1Use::InUse => s.v1_in_use += 1,
                        V1Use::Unused => s.v1_unused += 1,
                        V1Use::NoData => s.v1_no_data += 1,
                    }
                    Some(used)
                }
            };
            // A switch after the hold (its ceiling) keeps the reading.
            before.1.metadata_no_token = r.metadata_no_token;
            // Held for want of proof (an unread metric fails it instead).
            if gated && used.is_some() && remedy.is_none() {
                s.version_gated += 1;
            }
            // Held for its use, or (gated) for want of data: the ceiling
            // bounds both.
            let bounded = matches!(used, Some(V1Use::InUse))
                || (gated && matches!(used, Some(V1Use::NoData)));
            if let (true, true, (Some(change), report)) = (bounded, remedy.is_none(), before) {
                held.push((i, change, report));
            }
        }
        held
    }

    /// The opt-in ceiling on holding back (`NO_TOKEN_HOLD_DAYS`): since when
    /// each instance has been held (the guard's memory), told a day before
    /// its switch, and switched once past it. Off, or without a memory,
    /// an instance is held for as long as it uses IMDSv1.
    pub(super) async fn hold_back_ceiling(
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
        let Some(partition) = self.partition(out).await else {
            return;
        };
        let now = now_secs();
        let known: HashMap<String, Record> = match memory
            .query(&partition, Kind::HeldBack.prefix(), now)
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
                        &partition, &id, since, told, now, days,
                    ));
                }
                crate::plan::Ceiling::Tell { at } => {
                    let r = &mut reports[i];
                    r.findings.push(format!(
                        "held back {} since {}: switched at {} unless MetadataNoToken shows no IMDSv1 call by then (NO_TOKEN_HOLD_DAYS={days})",
                        held_why(&before),
                        crate::finding::iso8601(since),
                        crate::finding::iso8601(at)
                    ));
                    r.notify = true;
                    writes.push(crate::plan::held_record(
                        &partition,
                        &id,
                        since,
                        Some(now),
                        now,
                        days,
                    ));
                }
                crate::plan::Ceiling::Switch { days: held_for } => {
                    let why = held_why(&before);
                    let mut r = before;
                    r.findings.push(format!(
                        "switched after {held_for} day(s) held back {why} (NO_TOKEN_HOLD_DAYS={days}): what still calls IMDSv1 there now gets 401"
                    ));
                    reports[i] = r;
                    remedies[i] = Some(change);
                    let mut done =
                        crate::plan::held_record(&partition, &id, since, told, now, days);
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
    pub(super) async fn recall_exemptions(
        &self,
        out: &mut RegionResult,
        instances: &mut [crate::pipeline::Slot],
    ) -> Result<(), AwsError> {
        if instances.is_empty() {
            return Ok(());
        }
        // A person's break-glass grants, honoured whatever else is set.
        self.read_grants(out).await?;
        let grants = crate::break_glass::grants(out.grants.as_deref().unwrap_or_default());
        let now = now_secs();
        for o in instances.iter_mut().flatten() {
            o.standing.grant = crate::policy::grant_in_force(&grants, o, now).cloned();
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
        let Some(partition) = self.partition(out).await else {
            return Err(AwsError::Api {
                code: "NoAccount".into(),
                message: "the account could not be named".into(),
            });
        };
        let now = now_secs();
        if out.exemptions.is_none() {
            let records = memory.query(&partition, Kind::Exempt.prefix(), now).await?;
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
        for o in instances.iter_mut().flatten() {
            let Some(record) = known.get_mut(&o.instance_id) else {
                continue;
            };
            o.standing.exemption = record.data.get(memory::GLOB).cloned();
            o.standing.unconfirmed = crate::confirm::is_unconfirmed(record);
            // Renewed only while honoured: a removed glob's records lapse.
            let glob = o.standing.exemption.as_deref().unwrap_or_default();
            if !policy.honours_record(glob) {
                out.lapsed.push((o.instance_id.clone(), glob.to_string()));
                continue;
            }
            // Never renewed while CloudTrail has not confirmed it: only the
            // exemption check keeps one.
            if o.standing.unconfirmed {
                continue;
            }
            if record.due_for_renewal(now) {
                let glob = o.standing.exemption.clone().unwrap_or_default();
                *record = Record::exempt(
                    &partition,
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
                warn!(%partition, error = %e, "exemption records could not be renewed; the next sweep tries again");
            }
        }
        Ok(())
    }

    /// Since when the guard has enforced here (`watch`): as the memory
    /// says, renewed while sweeps find it, or begun now by the first
    /// enforcing sweep (nothing it fixes now can be a missed event). A sweep
    /// in another mode records that mode, so enforcing again starts afresh.
    /// `None` outside enforce mode or without a memory: nothing is counted.
    pub(super) async fn events_since(&self, out: &RegionResult) -> Option<u64> {
        let memory = self.clients.memory()?;
        let partition = self.partition(out).await?;
        let now = now_secs();
        let mode = self.cfg.mode;
        let records = match memory
            .query(&partition, Kind::EventsSince.prefix(), now)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(%partition, error = %e, "since when the guard enforces here could not be read; missed events are not counted this run");
                return None;
            }
        };
        let since = crate::watch::since(&records, mode);
        let due = records.first().is_none_or(|r| r.due_for_renewal(now));
        if since.is_none() || due {
            let record = crate::watch::since_record(&partition, mode, since.unwrap_or(now), now);
            if let Err(e) = memory.put(&[record]).await {
                warn!(%partition, error = %e, "since when the guard enforces here could not be written; the next sweep tries again");
            }
        }
        (mode == Mode::Enforce).then(|| since.unwrap_or(now))
    }

    /// The break-glass grants of this account-region, read once (none
    /// without a memory).
    pub(super) async fn read_grants(&self, out: &mut RegionResult) -> Result<(), AwsError> {
        if out.grants.is_some() {
            return Ok(());
        }
        let Some(memory) = self.clients.memory() else {
            out.grants = Some(Vec::new());
            return Ok(());
        };
        let Some(partition) = self.partition(out).await else {
            return Err(AwsError::Api {
                code: "NoAccount".into(),
                message: "the account could not be named".into(),
            });
        };
        out.grants = Some(
            memory
                .query(
                    &crate::break_glass::partition_of(&partition),
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
    pub(super) async fn tell_grants(&self, out: &mut RegionResult) {
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
        let Some(partition) = self.partition(out).await else {
            return;
        };
        let grants_partition = crate::break_glass::partition_of(&partition);
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
                out.to_remember.push(g.end_told(&grants_partition));
            }
        }
        out.summary.break_glass = views;
    }

    /// What a person was already told of is not news again: flagged and
    /// exempt instances the guard's memory says it told of (a launch event,
    /// or an earlier sweep, within a week) are counted but not listed or
    /// tagged again; the others are remembered as told once the summary is
    /// sent. A change the circuit breaker held is news every run it is held.
    /// Without a memory, every sweep lists them all.
    pub(super) async fn skip_told(&self, out: &mut RegionResult, reports: &mut [InstanceReport]) {
        let Some(memory) = self.clients.memory() else {
            return;
        };
        let candidates = |r: &InstanceReport| {
            r.notify
                && matches!(r.outcome, Outcome::Flagged | Outcome::Exempt)
                && !matches!(r.action.idle, crate::report::Idle::Breaker(_))
        };
        if !reports.iter().any(candidates) {
            return;
        }
        let Some(partition) = self.partition(out).await else {
            return;
        };
        let now = now_secs();
        if out.noticed.is_none() {
            let told = match memory.query(&partition, Kind::Noticed.prefix(), now).await {
                // A claim whose telling never happened told no one.
                Ok(records) => records
                    .iter()
                    .filter(|r| r.is_told())
                    .map(|r| r.id().to_string())
                    .collect(),
                Err(e) => {
                    warn!(%partition, error = %e, "the memory could not be read; every flagged instance is listed");
                    Default::default()
                }
            };
            out.noticed = Some(told);
        }
        let told = out.noticed.get_or_insert_with(Default::default);
        for r in reports.iter_mut().filter(|r| candidates(r)) {
            if told.contains(&r.instance_id) {
                r.notify = false;
                // A first boot waited for stays waiting: it is queued.
                if !crate::first_boot::is_waiting(r) {
                    r.action = crate::report::Idle::AlreadyTold.into();
                }
            } else {
                told.insert(r.instance_id.clone());
                out.to_remember.push(
                    Record::new(
                        Kind::Noticed,
                        &partition,
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
    pub(super) async fn open_findings(&self, out: &RegionResult) -> Option<RegionFindings> {
        let account = self.findings_account(out).await?;
        let memory = self.clients.memory();
        Some(RegionFindings::open(memory.as_ref(), &account, &out.summary.region, now_secs()).await)
    }

    /// The account whose findings these are: the one swept, or the
    /// function's own.
    pub(super) async fn findings_account(&self, out: &RegionResult) -> Option<String> {
        if let Some(a) = out.summary.account.clone() {
            return Some(a);
        }
        match self.clients.home_account().await {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(region = %out.summary.region, error = %e, "the account to file findings in could not be named");
                None
            }
        }
    }

    /// The memory partition of this account-region: the account swept, or
    /// the one EC2 says owns the instances, or the function's own.
    pub(super) async fn partition(&self, out: &RegionResult) -> Option<String> {
        let account = match out.summary.account.clone().or_else(|| out.owner.clone()) {
            Some(a) => a,
            None => self.clients.home_account().await.ok()?,
        };
        Some(memory::partition(&account, &out.summary.region))
    }

    /// With `CHECK_METADATA_NO_TOKEN`: every instance the guard switched to
    /// `required` here (the memory's remediation records; they left the
    /// `optional` listing) that has refused IMDSv1 calls since, by
    /// `MetadataNoTokenRejected`: the workloads enforcing broke.
    pub(super) async fn watch_refusals(&self, out: &mut RegionResult) {
        let Some(memory) = self.clients.memory() else {
            out.summary.warnings.push(
                "MetadataNoTokenRejected is not watched: MEMORY_TABLE is not set, so which instances the guard switched is not known".into(),
            );
            return;
        };
        let Some(partition) = self.partition(out).await else {
            out.summary.errors.push(
                "MetadataNoTokenRejected could not be watched: the account could not be named"
                    .into(),
            );
            return;
        };
        let remediated = match memory
            .query(&partition, Kind::Remediated.prefix(), now_secs())
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
        let before: HashMap<&str, NoToken> = remediated
            .iter()
            .filter_map(|r| {
                let n = r.data.get(memory::NO_TOKEN_BEFORE)?;
                Some((r.id(), serde_json::from_str(n).ok()?))
            })
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
                before_switch: before.get(id.as_str()).copied(),
                instance_id: id,
                refused_calls: n,
                remediated_at: at,
            });
        }
    }
}

/// Why an instance was held back from its switch, for a person.
fn held_why(r: &InstanceReport) -> &'static str {
    if r.needs_version.is_some() {
        "until MetadataNoToken shows its launcher needs no IMDSv1"
    } else {
        "for IMDSv1 use"
    }
}

//! The last mile (`LOOKUP_IMDSV1_CALLERS`): for each instance the sweep
//! leaves at `optional`, CloudTrail is asked which software called AWS with
//! the credentials IMDSv1 delivered to it (`v1_callers`), within a budget of
//! calls per account-region and run; the instances asked longest ago (or
//! never) go first, and what was seen is remembered, so the rest are asked
//! by the next runs.

use super::*;
use crate::aws::TrailApi;
use crate::event::Addresses;
use crate::finding::theft;
use crate::v1_callers::{
    attribute, read, Call, Host, InstanceCallers, LastMile, Place, Seen, Suspect, CALLS_PER_REGION,
    PAGES_PER_INSTANCE,
};

/// CloudTrail keeps management events this long for `LookupEvents`.
const TRAIL_DAYS: u64 = 90;

/// What CloudTrail is asked about one instance, and what its answer is
/// judged against.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    id: String,
    addresses: Addresses,
    launched: Option<u64>,
    host: Host,
}

impl Candidate {
    pub(super) fn of(cfg: &Config, o: &Observed) -> Self {
        Candidate {
            id: o.instance_id.clone(),
            addresses: o.addresses.clone(),
            launched: o.launch_time,
            host: Host {
                hop_limit: o.options.http_put_response_hop_limit,
                container_host: crate::policy::Policy::of(cfg).container_host(o).is_some(),
            },
        }
    }
}

/// Whether the sweep leaves this instance at `optional`: the last mile's
/// candidates (held back, flagged, exempt), not what it switched or could
/// not decide.
pub(super) fn left_optional(r: &InstanceReport) -> bool {
    matches!(r.outcome, Outcome::Flagged | Outcome::Exempt)
        && r.before
            .as_ref()
            .is_some_and(|b| b.http_tokens.as_deref() == Some("optional"))
}

impl<'a, C: Clients> Sweep<'a, C> {
    /// Asks CloudTrail about this region's candidates, within the budget,
    /// and puts what it saw in the summary (suspected theft first among its
    /// warnings) and the guard's memory.
    pub(super) async fn ask_trail(&self, out: &mut RegionResult, stop_at: Option<Instant>) {
        if !self.cfg.lookup_imdsv1_callers || out.last_mile.is_empty() {
            return;
        }
        let now = now_secs();
        let region = out.summary.region.clone();
        let mut candidates = std::mem::take(&mut out.last_mile);
        let partition = self.partition(out).await;
        let memory = self.clients.memory();
        // What earlier runs saw, and when they asked.
        let mut remembered: HashMap<String, (u64, Option<Seen>)> = HashMap::new();
        if let (Some(memory), Some(p)) = (&memory, &partition) {
            match memory.query(p, Kind::Callers.prefix(), now).await {
                Ok(records) => {
                    for r in records {
                        let id = r.sk.trim_start_matches(Kind::Callers.prefix()).to_string();
                        let seen = r.data.get("seen").and_then(|s| seen_of(s));
                        remembered.insert(id, (r.at, seen));
                    }
                }
                Err(e) => out.summary.warnings.push(format!(
                    "which instances CloudTrail was asked about before could not be read from the guard's memory ({e}): asked in id order"
                )),
            }
        }
        // Never asked first, then those asked longest ago.
        candidates.sort_by(|a, b| {
            let at = |c: &Candidate| remembered.get(&c.id).map_or(0, |(at, _)| *at);
            at(a).cmp(&at(b)).then_with(|| a.id.cmp(&b.id))
        });
        let lookback = self
            .cfg
            .no_token_lookback
            .as_secs()
            .min(TRAIL_DAYS * 86_400);
        let start = now.saturating_sub(lookback);
        let trail = self.clients.trail(&out.who, &region);
        let mut m = LastMile::default();
        let mut budget = CALLS_PER_REGION;
        let mut to_remember = Vec::new();
        let mut stopped: Option<String> = None;
        // What this run's answers show of theft: filed as findings.
        let mut suspects: Vec<(String, Suspect)> = Vec::new();
        for c in &candidates {
            if stopped.is_none() && stop_at.is_some_and(|t| Instant::now() >= t) {
                stopped = Some("the function's time is nearly up".into());
            }
            if stopped.is_some() || budget == 0 {
                m.not_asked += 1;
                if let Some((at, Some(seen))) = remembered.get(&c.id) {
                    push_if_news(&mut m, &c.id, *at, seen.clone());
                }
                continue;
            }
            match ask(&trail, c, start, &mut budget, &mut m.lookups).await {
                Ok(seen) => {
                    m.asked += 1;
                    if let Some(p) = &partition {
                        let mut r = Record::new(
                            Kind::Callers,
                            p,
                            &c.id,
                            None,
                            now,
                            self.cfg.no_token_lookback,
                        );
                        r.data.insert(
                            "seen".into(),
                            serde_json::to_string(&seen).unwrap_or_default(),
                        );
                        to_remember.push(r);
                    }
                    suspects.extend(seen.suspects.iter().map(|s| (c.id.clone(), s.clone())));
                    push_if_news(&mut m, &c.id, now, seen);
                }
                Err(e) => {
                    // Throttled or refused: the rest are asked next run.
                    m.not_asked += 1;
                    m.errors.push(format!("{}: {e}", c.id));
                    stopped = Some(e.to_string());
                }
            }
        }
        if m.not_asked > 0 {
            let next = match (&memory, &partition) {
                (Some(_), Some(_)) => "are asked first next run",
                // Without the memory, each run starts again in id order.
                _ => "are not asked: without MEMORY_TABLE each run asks the same instances first",
            };
            out.summary.warnings.push(format!(
                "CloudTrail was asked about {} of the {} instance(s) left at optional here ({} LookupEvents calls, at most {CALLS_PER_REGION} a run{}); the other {} {next}",
                m.asked,
                candidates.len(),
                m.lookups,
                stopped.map(|e| format!("; stopped: {e}")).unwrap_or_default(),
                m.not_asked
            ));
        }
        // Possible theft first: it is not a migration's news.
        for i in m.instances.iter().rev() {
            for s in &i.seen.suspects {
                out.summary.warnings.insert(0, format!(
                    "possible credential theft: {}'s role {} credentials, delivered by IMDSv1, were used from {} (not one of its addresses) {} time(s), e.g. {} ({}); GuardDuty's InstanceCredentialExfiltration findings cover this too",
                    i.instance_id, s.role, s.address, s.calls, s.example, s.agent
                ));
            }
        }
        self.file_theft(out, &suspects, now).await;
        if let (Some(memory), false) = (&memory, to_remember.is_empty()) {
            if let Err(e) = memory.put(&to_remember).await {
                out.summary.warnings.push(format!(
                    "what CloudTrail showed could not be remembered ({e}): the next run asks the same instances again"
                ));
            }
        }
        out.summary.imdsv1_callers = Some(m);
    }
}

impl<'a, C: Clients> Sweep<'a, C> {
    /// With `SECURITY_HUB_FINDINGS`, each suspect this run saw is a
    /// finding (`finding::theft`), filed in the instance's account and
    /// region; a later run that sees it again updates it.
    async fn file_theft(&self, out: &mut RegionResult, suspects: &[(String, Suspect)], now: u64) {
        if !self.cfg.security_hub_findings || suspects.is_empty() {
            return;
        }
        let region = out.summary.region.clone();
        let Some(api) = filer(self.clients, &out.who, &region) else {
            return;
        };
        let mut report = out.findings_report.take().unwrap_or_default();
        match self.findings_account(out).await {
            Some(account) => {
                let place = crate::finding::Place {
                    account: &account,
                    region: &region,
                    now,
                    stamp_ms: crate::clock::stamp_ms(),
                };
                let findings: Vec<_> = suspects
                    .iter()
                    .filter_map(|(id, s)| theft::finding(&place, id, s))
                    .collect();
                crate::findings::file(&api, &region, &findings, &mut report).await;
            }
            None => report.errors.push(format!(
                "{} possible credential theft finding(s) in {region} not filed: the account could not be named",
                suspects.len()
            )),
        }
        out.findings_report = Some(report);
    }
}

/// One instance's calls, page by page, within the budget; a busy
/// instance's beyond `PAGES_PER_INSTANCE` pages are not read this run.
async fn ask(
    trail: &impl TrailApi,
    c: &Candidate,
    start: u64,
    budget: &mut u32,
    lookups: &mut u64,
) -> Result<Seen, AwsError> {
    let mut calls: Vec<Call> = Vec::new();
    let mut next = None;
    let mut pages = 0;
    let mut unread = 0u64;
    let partial = loop {
        *budget -= 1;
        *lookups += 1;
        pages += 1;
        let (records, token) = trail.user_events(&c.id, start, next).await?;
        for r in &records {
            match read(r) {
                Ok(Some(call)) => calls.push(call),
                Ok(None) => {}
                Err(_) => unread += 1,
            }
        }
        match token {
            None => break false,
            Some(_) if pages >= PAGES_PER_INSTANCE || *budget == 0 => break true,
            Some(t) => next = Some(t),
        }
    };
    if unread > 0 {
        warn!(instance_id = %c.id, unread, "CloudTrail records that could not be read were left out");
    }
    let at = Place {
        private: &c.addresses.private,
        public: &c.addresses.public,
        prefixes: &c.addresses.prefixes,
        launched: c.launched,
    };
    let mut seen = attribute(&c.id, &calls, at, c.host);
    seen.partial = partial;
    seen.unread = unread;
    Ok(seen)
}

/// Listed when it names software or a suspect, or was not read whole.
fn push_if_news(m: &mut LastMile, id: &str, asked_at: u64, seen: Seen) {
    if !seen.callers.is_empty() || !seen.suspects.is_empty() || seen.partial || seen.unread > 0 {
        m.instances.push(InstanceCallers {
            instance_id: id.to_string(),
            asked_at,
            seen,
        });
    }
}

/// An earlier run's reading, as remembered (`None`: unreadable, so not
/// shown; when it was asked still orders it).
fn seen_of(s: &str) -> Option<Seen> {
    serde_json::from_str(s).ok()
}

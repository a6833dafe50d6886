//! One account-region of a sweep: entered, its instances listed page by
//! page (each page through the one pipeline, `page.rs`), its account
//! defaults, sources and readiness.

use super::*;

impl<'a, C: Clients> Sweep<'a, C> {
    /// One account-region: its instances listed and acted on while its
    /// account defaults are read (and set, when configured), then judged.
    pub(super) async fn region(
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
            candidates: HashMap::new(),
            last_mile: Vec::new(),
        };
        out.summary.account = account.map(str::to_string);
        if stop_time(deadline).is_some_and(|t| Instant::now() >= t) {
            out.summary.errors.push(
                "not swept: stopped before the function's timeout, to report in time; the next sweep covers it".into(),
            );
            return out;
        }
        let here = match AccountRegion::enter(self.cfg, self.clients, account, region).await {
            Ok(here) => here,
            Err(Closed::Refused(why)) => {
                out.summary.errors.push(format!("not swept: {why}"));
                return out;
            }
            Err(Closed::Unreachable(e)) => {
                out.summary.no_member_stack =
                    account.is_some() && self.cfg.member_role.is_some() && e.is_unauthorized();
                out.summary.errors.push(format!("not swept: {e}"));
                return out;
            }
        };
        out.who = here.who.clone();
        let ec2 = here.ec2();
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
            self.account_defaults(ec2, &mut defaults),
            self.list_and_act(ec2, &mut out, max_listed, deadline, progress)
        );
        if let Some(f) = out.findings.take() {
            // Settled only after a listing that reached its end: an instance
            // not listed then is really not at `optional`.
            let complete = out.summary.errors.is_empty();
            if let Some(api) = filer(self.clients, &out.who, region) {
                let memory = self.clients.memory();
                out.findings_report = Some(
                    f.close(&api, memory.as_ref(), ec2, self.cfg, complete, now_secs())
                        .await,
                );
            }
        }
        self.tell_grants(&mut out).await;
        out.summary.account_defaults = defaults.account_defaults;
        out.summary.account_default_action = defaults.account_default_action;
        out.summary.errors.extend(defaults.errors);
        // With the check off, only version-gated launchers' switches are
        // remembered: watched when there is a memory to find them in.
        if self.cfg.check_metadata_no_token || self.clients.memory().is_some() {
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

        self.ask_trail(&mut out, stop_time(deadline)).await;
        out.summary.imdsv1_measured = crate::report::Measured {
            metadata_no_token: self.cfg.check_metadata_no_token && out.summary.v1_no_data == 0,
            credentials: self.cfg.lookup_imdsv1_callers
                && out
                    .summary
                    .imdsv1_callers
                    .as_ref()
                    .is_none_or(|m| m.not_asked == 0 && m.errors.is_empty()),
        };

        let s = &mut out.summary;
        s.readiness = readiness(&SweepFacts {
            complete: s.errors.is_empty(),
            noncompliant_left: s.count(Outcome::Flagged) + s.count(Outcome::Failed),
            exempt: s.count(Outcome::Exempt).saturating_sub(s.managed),
            managed: s.managed,
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
        if let Some(m) = &s.imdsv1_callers {
            s.readiness
                .reasons
                .extend(crate::v1_callers::readiness_notes(m));
        }
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
    pub(super) async fn sources(&self, out: &mut RegionResult) {
        let (reports, errors) = Sources::new(self.cfg, self.clients)
            .region(
                &out.who,
                &out.summary.region,
                out.summary.account_defaults.as_ref(),
            )
            .await;
        out.sources_read = errors.is_empty();
        out.summary.sources_unread = !out.sources_read;
        out.summary.errors.extend(errors);
        out.summary.sources_exempt = reports
            .iter()
            .filter(|r| r.outcome == SourceOutcome::Exempt)
            .take(20)
            .map(SourceReport::label)
            .collect();
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
    pub(super) async fn list_and_act(
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
    pub(super) async fn list_pass(
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
    pub(super) async fn account_defaults(&self, ec2: &impl Ec2Api, s: &mut RegionSweep) {
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
}

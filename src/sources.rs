//! Sources through read → decide → act → report: a launch template or an
//! Auto Scaling group named by an event, and every source of a region in a
//! sweep. One piece of code for both: `gather` reads what the decisions
//! need, the domain's `source` plans, `carry_out` writes.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::account_region::AccountRegion;
use crate::aws::{Account, AutoScalingApi, AwsError, Clients, Ec2Api};
use crate::config::Config;
use crate::error::{conclude, GuardError};
use crate::event::{EventContext, SourceChange};
use crate::outbox::Outbox;
use crate::plan::NONCOMPLIANT;
use crate::policy::AccountDefaults;
use crate::report::{Named, Report, Status};
use crate::source::{
    plan_configuration, plan_group, plan_template, Group, Inherited, LaunchConfiguration,
    SourceAction, SourceKind, SourceOutcome, SourceReport, Template, TemplateFacts, TemplateRef,
    TemplateVersion,
};

/// At most this many pages of one kind of source a region (a runaway
/// listing must end).
const MAX_PAGES: usize = 500;

/// What deciding a set of sources needs, as read.
#[derive(Default)]
pub struct Facts {
    /// Templates by id, with their default, latest, and pinned versions.
    pub templates: BTreeMap<String, (Template, Vec<TemplateVersion>)>,
    pub groups: Vec<Group>,
    pub configurations: BTreeMap<String, LaunchConfiguration>,
    pub inherited: Inherited,
    /// What could not be read, and why.
    pub errors: Vec<String>,
}

/// Which sources to read: the ones an event names, or the whole region.
pub enum Scope<'a> {
    Event(&'a SourceChange),
    Region,
}

pub struct Sources<'a, C> {
    cfg: &'a Config,
    clients: &'a C,
}

impl<'a, C: Clients> Sources<'a, C> {
    pub fn new(cfg: &'a Config, clients: &'a C) -> Self {
        Sources { cfg, clients }
    }

    /// A launch template or Auto Scaling group created or changed: it (and,
    /// for a group, the templates it launches from) decided and acted on,
    /// and one notification. What cannot be read or fixed fails the
    /// invocation, naming it, so the event is retried and kept.
    pub async fn changed(
        &self,
        ctx: EventContext,
        change: SourceChange,
    ) -> Result<Report, GuardError> {
        let named = Named::Source(&change);
        let here = match AccountRegion::enter_for(self.cfg, self.clients, &ctx, named).await {
            Ok(here) => here,
            Err(closed) => return self.finish(closed).await,
        };
        let mut report = Report::handled(Status::Handled, self.cfg.mode, ctx.clone());
        let ec2 = here.ec2();
        let asg = self.clients.autoscaling(&here.who, &ctx.region);
        // The mode and source fixing set for this account or its unit.
        let cfg = here.config().await;
        report.mode = cfg.mode;
        let facts = gather(ec2, &asg, Scope::Event(&change), None).await;
        let planned = decide(cfg, &facts, Some(&change));
        let sources = carry_out(cfg, ec2, &asg, planned).await;
        for s in &sources {
            info!(source = %s.label(), outcome = ?s.outcome, action = %s.action, findings = %s.findings.join("; "), region = %ctx.region, "source decision");
        }
        report.sources = sources;
        self.finish(report).await
    }

    /// Tells the report's news and makes it the invocation's result.
    async fn finish(&self, mut report: Report) -> Result<Report, GuardError> {
        let delivery = Outbox::new(self.cfg, self.clients)
            .tell(&mut report, None)
            .await;
        conclude(report, delivery.error().map(str::to_string))
    }

    /// Every source of one region, for the sweep: decided and acted on.
    /// Returns the reports and what could not be read (the region's errors).
    pub async fn region(
        &self,
        account: &Account,
        region: &str,
        defaults: Option<&AccountDefaults>,
    ) -> (Vec<SourceReport>, Vec<String>) {
        let ec2 = self.clients.ec2(account, region);
        let asg = self.clients.autoscaling(account, region);
        let facts = gather(&ec2, &asg, Scope::Region, defaults).await;
        let planned = decide(self.cfg, &facts, None);
        let sources = carry_out(self.cfg, &ec2, &asg, planned).await;
        (sources, facts.errors)
    }
}

/// Reads what deciding the scope's sources needs: the templates (with
/// their default and latest versions, and any version a group pins), the
/// groups (every group of the region: a template's users), launch
/// configurations, the account default and the AMIs of versions that set
/// no tokens. What cannot be read is recorded, never guessed.
pub async fn gather(
    ec2: &impl Ec2Api,
    asg: &impl AutoScalingApi,
    scope: Scope<'_>,
    defaults: Option<&AccountDefaults>,
) -> Facts {
    let mut f = Facts::default();
    // Groups: all of the region's (a template's users can be any of them).
    match list_groups(asg).await {
        Ok(groups) => f.groups = groups,
        Err(e) => f
            .errors
            .push(format!("Auto Scaling groups could not be listed: {e}")),
    }
    // Templates: the event's (and its group's), or every one.
    let (ids, names): (Vec<String>, Vec<String>) = match &scope {
        Scope::Region => (Vec::new(), Vec::new()),
        Scope::Event(SourceChange::Template { id, name, .. }) => match id {
            Some(id) => (vec![id.clone()], Vec::new()),
            None => (Vec::new(), name.iter().cloned().collect()),
        },
        Scope::Event(SourceChange::Group { name, .. }) => {
            let refs: Vec<&TemplateRef> = f
                .groups
                .iter()
                .filter(|g| g.name == *name)
                .flat_map(|g| &g.templates)
                .collect();
            if refs.is_empty() && !f.groups.iter().any(|g| g.name == *name) {
                f.errors
                    .push(format!("Auto Scaling group {name} is not shown (yet)"));
            }
            let ids = refs.iter().filter_map(|r| r.id.clone()).collect();
            let names = refs
                .iter()
                .filter(|r| r.id.is_none())
                .filter_map(|r| r.name.clone())
                .collect();
            (ids, names)
        }
    };
    let wants_templates = matches!(scope, Scope::Region) || !ids.is_empty() || !names.is_empty();
    if wants_templates {
        match list_templates(ec2, &ids, &names).await {
            Ok(ts) => {
                for t in ts {
                    f.templates.insert(t.id.clone(), (t, Vec::new()));
                }
            }
            Err(e) => f
                .errors
                .push(format!("launch templates could not be read: {e}")),
        }
    }
    // Each template's versions: default, latest, and those groups pin.
    let ids: Vec<String> = f.templates.keys().cloned().collect();
    for id in ids {
        let (t, _) = &f.templates[&id];
        let mut wanted: BTreeSet<String> = ["$Default".to_string(), "$Latest".to_string()].into();
        // The few newest after the default: an earlier run's fix, if one is
        // waiting to be made the default. (One may have been deleted: then
        // they are not asked for again.)
        let recent: Vec<String> = (t.default_version + 1..t.latest_version)
            .rev()
            .take(5)
            .map(|n| n.to_string())
            .collect();
        for g in &f.groups {
            for r in g.templates.iter().filter(|r| r.names(t)) {
                if let crate::source::VersionRef::Number(n) = r.version {
                    wanted.insert(n.to_string());
                }
            }
        }
        let needed: Vec<String> = wanted.iter().cloned().collect();
        let mut with_recent = wanted;
        with_recent.extend(recent.iter().cloned());
        let with_recent: Vec<String> = with_recent.into_iter().collect();
        let read = match ec2.template_versions(&id, &with_recent).await {
            Err(_) if !recent.is_empty() => ec2.template_versions(&id, &needed).await,
            other => other,
        };
        match read {
            Ok(v) => {
                if let Some(slot) = f.templates.get_mut(&id) {
                    slot.1 = v;
                }
            }
            Err(e) => f.errors.push(format!(
                "launch template {id}'s versions could not be read: {e}"
            )),
        }
    }
    // Launch configurations: the event group's, or every one.
    let lc_names: Vec<String> = match &scope {
        Scope::Region => Vec::new(),
        Scope::Event(SourceChange::Group { name, .. }) => f
            .groups
            .iter()
            .filter(|g| g.name == *name)
            .filter_map(|g| g.launch_configuration.clone())
            .collect(),
        Scope::Event(SourceChange::Template { .. }) => Vec::new(),
    };
    let wants_configurations = matches!(scope, Scope::Region) || !lc_names.is_empty();
    if wants_configurations {
        match list_configurations(asg, &lc_names).await {
            Ok(lcs) => f.configurations = lcs.into_iter().map(|c| (c.name.clone(), c)).collect(),
            Err(e) => f
                .errors
                .push(format!("launch configurations could not be listed: {e}")),
        }
    }
    f.inherited = inherited(ec2, &f, defaults).await;
    f
}

/// What a source that sets no tokens inherits: the account default (the
/// sweep's reading, or one read now), then each AMI's `ImdsSupport`.
async fn inherited(ec2: &impl Ec2Api, f: &Facts, defaults: Option<&AccountDefaults>) -> Inherited {
    let unset = |o: &Option<crate::event::MetadataOptions>| {
        o.as_ref().is_none_or(|o| o.http_tokens.is_none())
    };
    let mut images: BTreeSet<String> = f
        .templates
        .values()
        .flat_map(|(_, vs)| vs)
        .filter(|v| unset(&v.options))
        .filter_map(|v| v.image_id.clone())
        .collect();
    images.extend(
        f.configurations
            .values()
            .filter(|c| unset(&c.options))
            .filter_map(|c| c.image_id.clone()),
    );
    // An SSM parameter in place of an AMI id is resolved at launch: unknown.
    images.retain(|i| i.starts_with("ami-"));
    let mut out = Inherited::default();
    if images.is_empty()
        && !f
            .templates
            .values()
            .flat_map(|(_, vs)| vs)
            .any(|v| unset(&v.options))
        && !f.configurations.values().any(|c| unset(&c.options))
    {
        return out;
    }
    let read = match defaults {
        Some(d) => Ok(d.clone()),
        None => ec2.metadata_defaults().await,
    };
    match read {
        Ok(d) => {
            out.defaults_read = true;
            out.account_default = d.http_tokens;
        }
        Err(e) => {
            warn!(error = %e, "the account defaults could not be read: sources that set no tokens are reported as depending on them")
        }
    }
    if !images.is_empty() {
        let ids: Vec<String> = images.into_iter().collect();
        match ec2.images(&ids).await {
            Ok(found) => {
                for (id, v2) in found {
                    if v2 {
                        out.v2_images.insert(id.clone());
                    }
                    out.images_read.insert(id);
                }
            }
            Err(e) => {
                warn!(error = %e, "AMIs could not be read: sources that set no tokens are reported as depending on them")
            }
        }
    }
    out
}

async fn list_templates(
    ec2: &impl Ec2Api,
    ids: &[String],
    names: &[String],
) -> Result<Vec<Template>, AwsError> {
    let mut all = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = ec2.launch_templates(ids, names, token).await?;
        all.extend(page);
        match next.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(all)
}

async fn list_groups(asg: &impl AutoScalingApi) -> Result<Vec<Group>, AwsError> {
    let mut all = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = asg.groups(&[], token).await?;
        all.extend(page);
        match next.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(all)
}

async fn list_configurations(
    asg: &impl AutoScalingApi,
    names: &[String],
) -> Result<Vec<LaunchConfiguration>, AwsError> {
    let mut all = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = asg.launch_configurations(names, token).await?;
        all.extend(page);
        match next.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(all)
}

/// A source's report, and what to write about it.
pub struct Planned {
    pub report: SourceReport,
    pub action: SourceAction,
}

/// The plans, in the order they are carried out: every template, group and
/// launch configuration of the facts; for an event, the one it names (a
/// group with the templates it launches from).
pub fn decide(cfg: &Config, f: &Facts, event: Option<&SourceChange>) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut push = |report, action| out.push(Planned { report, action });
    for (t, versions) in f.templates.values() {
        let facts = TemplateFacts {
            template: t,
            versions,
            groups: &f.groups,
            inherited: &f.inherited,
        };
        let (r, a) = plan_template(cfg, &facts);
        push(r, a);
    }
    let groups: Vec<&Group> = match event {
        None => f.groups.iter().collect(),
        Some(SourceChange::Group { name, .. }) => {
            f.groups.iter().filter(|g| g.name == *name).collect()
        }
        Some(SourceChange::Template { .. }) => Vec::new(),
    };
    for g in groups {
        let (r, a) = plan_group(cfg, g, &f.templates, &f.configurations, &f.inherited);
        push(r, a);
    }
    for lc in f.configurations.values() {
        push(
            plan_configuration(cfg, lc, &f.groups, &f.inherited),
            SourceAction::None,
        );
    }
    // What an event names that could not be read is a failure, named.
    if let Some(change) = event {
        if out.is_empty() || !f.errors.is_empty() {
            let error = if f.errors.is_empty() {
                "not shown (yet)".to_string()
            } else {
                f.errors.join("; ")
            };
            let mut failed = SourceReport::failed_change(change, error);
            failed.action = "none: it could not be read".into();
            out.push(Planned {
                report: failed,
                action: SourceAction::None,
            });
        }
    }
    out
}

/// Carries out what the plans say, recording the result in each report:
/// new template versions (and the new default), status tags on templates
/// and groups. A write that fails fails its source.
pub async fn carry_out(
    cfg: &Config,
    ec2: &impl Ec2Api,
    asg: &impl AutoScalingApi,
    planned: Vec<Planned>,
) -> Vec<SourceReport> {
    let mut reports = Vec::with_capacity(planned.len());
    for Planned { mut report, action } in planned {
        match action {
            SourceAction::None => {}
            SourceAction::Tag => {
                let written = match report.kind {
                    SourceKind::LaunchTemplate => {
                        ec2.tag(
                            std::slice::from_ref(&report.id),
                            &cfg.status_tag_key,
                            NONCOMPLIANT,
                        )
                        .await
                    }
                    SourceKind::AutoScalingGroup => {
                        asg.tag_group(&report.id, &cfg.status_tag_key, NONCOMPLIANT)
                            .await
                    }
                    SourceKind::LaunchConfiguration => Ok(()),
                };
                if let Err(e) = written {
                    report.outcome = SourceOutcome::Failed;
                    report.error = Some(format!(
                        "flagged, but the status tag could not be written: {e}"
                    ));
                }
            }
            SourceAction::Fix(versions) => {
                let mut done = Vec::new();
                for v in &versions {
                    match ec2.create_template_version(v).await {
                        Ok(n) => {
                            let mut line = format!(
                                "created version {n} from version {}, requiring tokens",
                                v.from
                            );
                            if v.make_default {
                                match ec2.set_default_version(&v.template_id, n).await {
                                    Ok(()) => line.push_str(", now the default"),
                                    Err(e) => {
                                        // The next run makes a fresh one (it
                                        // promotes no version it finds), up
                                        // to MAX_UNPROMOTED_FIXES.
                                        report.outcome = SourceOutcome::Failed;
                                        report.error = Some(format!(
                                            "version {n} was created but could not be made the default: {e}"
                                        ));
                                    }
                                }
                            }
                            done.push(line);
                        }
                        Err(e) => {
                            report.outcome = SourceOutcome::Failed;
                            report.error = Some(format!(
                                "a version requiring tokens could not be created: {e}"
                            ));
                            break;
                        }
                    }
                }
                if !done.is_empty() {
                    report.action = done.join("; ");
                } else {
                    report.action = "none: fixing failed".into();
                }
            }
        }
        reports.push(report);
    }
    reports
}

//! Sources: what launches instances again and again. A launch template
//! version, an Auto Scaling group (through its templates or its launch
//! configuration) and the AMI they name each get a verdict with the same
//! policy as an instance, and a plan: report, tag, or fix the template with a
//! new version. Pure: the adapters read templates and groups, the flows
//! carry the plan out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, Mode};
use crate::event::{MetadataOptions, SourceChange};
pub use crate::launch_template::{Template, TemplateRef, VersionRef};
use crate::launcher::{Recognised, Signals};
use crate::policy::{Exemption, Judged, Policy, Subject, Violation};

/// What kind of source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    LaunchTemplate,
    AutoScalingGroup,
    LaunchConfiguration,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::LaunchTemplate => "launch template",
            SourceKind::AutoScalingGroup => "Auto Scaling group",
            SourceKind::LaunchConfiguration => "launch configuration",
        })
    }
}

/// One version of a launch template, as EC2 shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: i64,
    /// Its description: the guard names its own fixes (`fix_description`).
    pub description: Option<String>,
    /// `None`: the version sets no metadata options at all.
    pub options: Option<MetadataOptions>,
    pub image_id: Option<String>,
}

/// An Auto Scaling group, as Auto Scaling shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Every template it may launch from: its own, or its mixed-instances
    /// policy's and each override's.
    pub templates: Vec<TemplateRef>,
    pub launch_configuration: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// A launch configuration: it cannot be changed, only replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchConfiguration {
    pub name: String,
    pub options: Option<MetadataOptions>,
    pub image_id: Option<String>,
}

pub use crate::policy::Inherited;

/// A source's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceVerdict {
    /// It launches with tokens required (the reason says which setting).
    Compliant(String),
    /// It would launch `HttpTokens=optional` (the findings say why).
    Noncompliant(Vec<Violation>),
    /// It sets no `HttpTokens`, and what it inherits is not known: the
    /// account default (or the AMI) decides.
    Depends(String),
    /// Noncompliant, but an exemption applies.
    Exempt(Exemption, Vec<Violation>),
}

impl SourceVerdict {
    pub fn is_noncompliant(&self) -> bool {
        matches!(self, SourceVerdict::Noncompliant(_))
    }
}

/// The verdict on metadata options a source would launch with (`None`: it
/// sets none), from an AMI, for a source tagged `tags`: the instance
/// policy's own judgement (`Policy::judge`) and exemptions.
pub fn judge(
    cfg: &Config,
    options: Option<&MetadataOptions>,
    image: Option<&str>,
    tags: &[(String, String)],
    inherited: &Inherited,
) -> SourceVerdict {
    let policy = Policy::of(cfg);
    let o = options.cloned().unwrap_or_default();
    match policy.judge(&o, Subject::Source { image, inherited }) {
        Judged::Compliant(why) => SourceVerdict::Compliant(why),
        Judged::Depends(why) => SourceVerdict::Depends(why),
        // A source's unset values are inherited, never unknown.
        Judged::Undecided => SourceVerdict::Depends(
            "sets no HttpTokens: the account default (or its AMI) decides".into(),
        ),
        Judged::Noncompliant(findings) => {
            let tag = |k: &str| tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
            match policy.marked_exemption(tag, image) {
                Some(e) => SourceVerdict::Exempt(e, findings),
                None => SourceVerdict::Noncompliant(findings),
            }
        }
    }
}

/// Every launcher a template or group shows (`launcher`), most trusted
/// first.
fn launchers(
    tags: &[(String, String)],
    created_by: Option<&str>,
    name: Option<&str>,
    operator: Option<&crate::launcher::Operator>,
) -> Vec<Recognised> {
    crate::launcher::recognise_all(&Signals {
        operator,
        created_by,
        tags,
        name,
    })
}

/// Of those, the one that owns its templates, if any: a stack's template
/// stays the stack's whatever else it is tagged with.
fn owning(shown: &[Recognised]) -> Option<String> {
    let owners = shown.iter().filter(|r| r.launcher.owns_templates).cloned();
    crate::launcher::best(owners).map(|r| r.label())
}

/// Who else manages a template or group, when a service or stack owns it:
/// changing it would start a drift fight with its owner (or do nothing: a
/// copy the service pinned), so it is reported, never changed.
pub fn owner(tags: &[(String, String)], created_by: Option<&str>) -> Option<String> {
    owning(&launchers(tags, created_by, None, None))
}

/// Fills what a report says of its source's launchers: its owner, when a
/// service or stack owns it, the launcher named, and where the lasting fix
/// is made.
fn name_launcher(report: &mut SourceReport, shown: Vec<Recognised>) {
    report.owner = owning(&shown);
    let Some(r) = crate::launcher::best(shown) else {
        return;
    };
    report.launcher = Some(r.label());
    report.setting = Some(r.launcher.setting.to_string());
}

/// What a source ends as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOutcome {
    Compliant,
    /// Noncompliant, and fixed: a new template version requires tokens.
    Fixed,
    /// Noncompliant, reported (and tagged in notify mode).
    Flagged,
    Exempt,
    /// Sets no tokens, and what it inherits is not known.
    Depends,
    /// Could not be read or fixed.
    Failed,
}

/// A source, reported: what it is, its verdict, and what was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// Where it is, in a sweep's summary of many accounts and regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub kind: SourceKind,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub outcome: SourceOutcome,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<String>,
    /// Who manages it instead (it is never changed then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The service or tool that launches from it, when one shows
    /// (`launcher`): named even when the template is the user's to fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// Where the fix that lasts is made, for that launcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// The groups that launch from it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// Groups that pin a noncompliant version by number: a new default
    /// does not reach them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned_by: Vec<String>,
    /// Noncompliant instances it launched (a sweep's attribution).
    #[serde(skip_serializing_if = "is_zero")]
    pub instances: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this is news for a person.
    #[serde(skip)]
    pub notify: bool,
}

impl SourceReport {
    pub fn new(kind: SourceKind, id: &str, name: Option<&str>) -> Self {
        SourceReport {
            account: None,
            region: None,
            kind,
            id: id.to_string(),
            name: name.map(str::to_string),
            outcome: SourceOutcome::Compliant,
            findings: Vec::new(),
            action: "none".into(),
            exemption: None,
            owner: None,
            launcher: None,
            setting: None,
            used_by: Vec::new(),
            pinned_by: Vec::new(),
            instances: 0,
            error: None,
            notify: false,
        }
    }

    /// The source an event's change names, failed: it could not be read
    /// or fixed, and a person is told.
    pub fn failed_change(change: &SourceChange, error: String) -> Self {
        let (kind, id) = match change {
            SourceChange::Template { id, name, .. } => (
                SourceKind::LaunchTemplate,
                id.clone().or_else(|| name.clone()).unwrap_or_default(),
            ),
            SourceChange::Group { name, .. } => (SourceKind::AutoScalingGroup, name.clone()),
        };
        let mut failed = SourceReport::new(kind, &id, None);
        failed.outcome = SourceOutcome::Failed;
        failed.error = Some(error);
        failed.notify = true;
        failed
    }

    /// How a person names it: `launch template web (lt-0abc…)`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if *n != self.id => format!("{} {n} ({})", self.kind, self.id),
            _ => format!("{} {}", self.kind, self.id),
        }
    }

    /// It would launch (or it launched) IMDSv1-open instances, whatever was
    /// done about it since: what keeps a region from being ready.
    pub fn asks_for_optional(&self) -> bool {
        matches!(self.outcome, SourceOutcome::Flagged | SourceOutcome::Failed)
    }
}

/// What to do about a noncompliant template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceAction {
    /// Nothing to write.
    None,
    /// Notify mode: tag it with the status tag.
    Tag,
    /// Enforce with `FIX_SOURCES`, on a template its owner opted in: new
    /// versions, in this order, and then the default version.
    Fix(Vec<NewVersion>),
}

/// One new version of a template: the source version's data, with a full
/// `MetadataOptions` block that requires tokens (the rest kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewVersion {
    pub template_id: String,
    pub from: i64,
    pub options: MetadataOptions,
    /// Make the new version the default.
    pub make_default: bool,
}

/// How many fixes of one default version, never made the default, the
/// guard leaves before it stops adding more. It never promotes one it
/// finds: anyone who may create versions could have written that one, with
/// the guard's description and an AMI or user data of their own. So a
/// retry creates a fresh version, and a template whose default cannot be
/// set stops collecting them here, failed and named.
pub const MAX_UNPROMOTED_FIXES: usize = 2;

/// How the guard describes a version it created to fix version `from`.
pub fn fix_description(from: i64) -> String {
    format!("imds-guard: version {from} with HttpTokens=required")
}

/// The options a fixed version launches with: tokens required, the
/// endpoint on, the hop limit kept (lowered to `MAX_HOP_LIMIT` if above it,
/// never added where the source set none), the rest as they were. A
/// container host's template (`container_template`) gets the container hop
/// limit where it set a lower one or none: its pods and tasks reached IMDS
/// through the IMDSv1 fallback, and with tokens required the token's answer
/// must cross one more hop (the same rule an instance's switch follows).
pub fn fixed_options(
    cfg: &Config,
    o: Option<&MetadataOptions>,
    container: bool,
) -> MetadataOptions {
    let o = o.cloned().unwrap_or_default();
    let kept = o
        .http_put_response_hop_limit
        .map(|h| cfg.max_hop_limit.map_or(h, |max| h.min(max)));
    let hop = match kept {
        Some(h) if container && h < cfg.container_hop() => Some(cfg.container_hop()),
        None if container => Some(cfg.container_hop()),
        kept => kept,
    };
    MetadataOptions {
        http_tokens: Some("required".into()),
        http_endpoint: Some("enabled".into()),
        http_put_response_hop_limit: hop,
        http_protocol_ipv6: o.http_protocol_ipv6,
        instance_metadata_tags: o.instance_metadata_tags,
    }
}

/// A template's facts: itself, its default and latest versions (one when
/// they are the same), and the groups of the region that use it.
pub struct TemplateFacts<'a> {
    pub template: &'a Template,
    pub versions: &'a [TemplateVersion],
    pub groups: &'a [Group],
    pub inherited: &'a Inherited,
}

/// The plan for one template: its report, and what to write.
pub fn plan_template(cfg: &Config, f: &TemplateFacts<'_>) -> (SourceReport, SourceAction) {
    let t = f.template;
    let mut report = SourceReport::new(SourceKind::LaunchTemplate, &t.id, t.name.as_deref());
    name_launcher(
        &mut report,
        launchers(
            &t.tags,
            t.created_by.as_deref(),
            t.name.as_deref(),
            t.operator.as_ref(),
        ),
    );
    report.used_by = f
        .groups
        .iter()
        .filter(|g| g.templates.iter().any(|r| r.names(t)))
        .map(|g| g.name.clone())
        .collect();
    report.used_by.sort();
    let version = |n: i64| f.versions.iter().find(|v| v.version == n);
    let (Some(default), Some(latest)) = (version(t.default_version), version(t.latest_version))
    else {
        report.outcome = SourceOutcome::Failed;
        report.action = "none: its default and latest versions could not be read".into();
        report.error = Some(report.action.clone());
        report.notify = true;
        return (report, SourceAction::None);
    };
    let verdict = |v: &TemplateVersion| {
        judge(
            cfg,
            v.options.as_ref(),
            v.image_id.as_deref(),
            &t.tags,
            f.inherited,
        )
    };
    let (dv, lv) = (verdict(default), verdict(latest));
    let which = |v: &TemplateVersion| {
        let mut names = Vec::new();
        if v.version == t.default_version {
            names.push("$Default");
        }
        if v.version == t.latest_version {
            names.push("$Latest");
        }
        format!("version {} ({})", v.version, names.join(", "))
    };
    let mut findings = Vec::new();
    let mut exempt = None;
    let mut depends = None;
    let judged = if default.version == latest.version {
        vec![(default, &dv)]
    } else {
        vec![(default, &dv), (latest, &lv)]
    };
    for (v, verdict) in judged {
        match verdict {
            SourceVerdict::Noncompliant(fs) => findings.extend(
                fs.iter()
                    .map(|x| format!("{}: {}", which(v), x.of_source())),
            ),
            SourceVerdict::Exempt(e, _) => exempt = Some(e.clone()),
            SourceVerdict::Depends(why) => depends = Some(format!("{}: {why}", which(v))),
            SourceVerdict::Compliant(_) => {}
        }
    }
    // Groups that pin a version by number that asks for optional: a new
    // default does not reach them.
    report.pinned_by = f
        .groups
        .iter()
        .filter(|g| {
            g.templates.iter().any(|r| {
                r.names(t)
                    && matches!(r.version, VersionRef::Number(n) if version(n).is_none_or(|v| verdict(v).is_noncompliant()))
            })
        })
        .map(|g| g.name.clone())
        .collect();
    report.pinned_by.sort();
    if findings.is_empty() {
        if let Some(e) = exempt {
            report.outcome = SourceOutcome::Exempt;
            report.exemption = Some(e.to_string());
            report.action = format!("none: exempt ({e})");
        } else if let Some(why) = depends {
            report.outcome = SourceOutcome::Depends;
            report.findings = vec![why];
            report.action = "none: the account default decides its launches".into();
        }
        return (report, SourceAction::None);
    }
    report.findings = findings;
    report.notify = true;
    report.outcome = SourceOutcome::Flagged;
    if let Some(op) = t.operator.as_ref().filter(|o| o.managed) {
        // A managed instance's template: its service's, never written,
        // not even tagged, in any mode.
        report.action = format!(
            "none: managed by {}, which sets its options",
            op.principal.as_deref().unwrap_or("its service")
        );
        return (report, SourceAction::None);
    }
    let action = match cfg.mode {
        Mode::Audit => {
            report.action = "none (audit mode)".into();
            SourceAction::None
        }
        Mode::Notify => {
            report.action = format!(
                "tagged {}={}",
                cfg.status_tag_key,
                crate::policy::NONCOMPLIANT
            );
            SourceAction::Tag
        }
        Mode::Enforce => match fix_refusal(cfg, t, &report) {
            // (`unpromoted` counts nothing when the default needs no fix.)
            Some(why) => {
                report.action = format!("none: {why}");
                SourceAction::None
            }
            None if unpromoted(f.versions, default, dv.is_noncompliant())
                >= MAX_UNPROMOTED_FIXES =>
            {
                report.outcome = SourceOutcome::Failed;
                report.action = "none: no more versions added".into();
                report.error = Some(format!(
                    "{MAX_UNPROMOTED_FIXES} or more versions described as the guard's fix of version {} were never made the default: the guard adds no more and promotes none (it cannot prove it made them); see CloudTrail for CreateLaunchTemplateVersion and ModifyLaunchTemplate on {}",
                    default.version,
                    t.id
                ));
                SourceAction::None
            }
            None => {
                let plan = new_versions(
                    cfg,
                    t,
                    default,
                    latest,
                    dv.is_noncompliant(),
                    lv.is_noncompliant(),
                );
                report.action = describe_fix(&plan);
                report.outcome = SourceOutcome::Fixed;
                SourceAction::Fix(plan)
            }
        },
    };
    (report, action)
}

/// Why enforce does not fix this template, if it does not.
fn fix_refusal(cfg: &Config, t: &Template, report: &SourceReport) -> Option<String> {
    if !cfg.fix_sources {
        return Some("fixing sources is off (FIX_SOURCES)".into());
    }
    if let Some(owner) = &report.owner {
        let there = report
            .setting
            .as_deref()
            .unwrap_or("its owner's own setting");
        return Some(format!(
            "managed by {owner}: the lasting fix is {there} (a version added here would be pinned past, regenerated or overwritten)"
        ));
    }
    let opted_in = t
        .tags
        .iter()
        .any(|(k, v)| *k == cfg.fix_source_tag_key && v.trim().eq_ignore_ascii_case("true"));
    if !opted_in {
        return Some(format!(
            "its owner has not opted in (tag {}=true)",
            cfg.fix_source_tag_key
        ));
    }
    None
}

/// Whether a template launches container hosts: a launcher that runs
/// containers shows on it (a forgeable tag counts: it only chooses how the
/// template is fixed), or it carries `CONTAINER_HOST_TAG`.
fn container_template(cfg: &Config, t: &Template) -> bool {
    if let Some(key) = &cfg.container_host_tag {
        if t.tags.iter().any(|(k, _)| k == key) {
            return true;
        }
    }
    launchers(
        &t.tags,
        t.created_by.as_deref(),
        t.name.as_deref(),
        t.operator.as_ref(),
    )
    .iter()
    .any(|r| r.launcher.containers)
}

/// The versions that fix a template without changing what anyone launches
/// beyond the metadata options. A new version is always the newest, so
/// `$Latest` moves to whatever is created last: when the default is not the
/// latest, the default's fix is created first and the latest's copy (fixed
/// if it needed to be) last, so `$Latest` keeps the latest's data.
fn new_versions(
    cfg: &Config,
    t: &Template,
    default: &TemplateVersion,
    latest: &TemplateVersion,
    default_bad: bool,
    latest_bad: bool,
) -> Vec<NewVersion> {
    let container = container_template(cfg, t);
    let new = |v: &TemplateVersion, make_default: bool| NewVersion {
        template_id: t.id.clone(),
        from: v.version,
        options: fixed_options(cfg, v.options.as_ref(), container),
        make_default,
    };
    let same = default.version == latest.version;
    match (default_bad, latest_bad || same) {
        (true, _) if same => vec![new(default, true)],
        (true, _) => {
            // The latest's copy keeps its options when they were fine.
            let mut last = new(latest, false);
            if !latest_bad {
                last.options = latest.options.clone().unwrap_or_default();
            }
            vec![new(default, true), last]
        }
        (false, true) => vec![new(latest, false)],
        (false, false) => vec![],
    }
}

/// The versions newer than the default that say they are the guard's fix
/// of it: earlier runs' fixes that were never made the default (or
/// versions written to look like them).
fn unpromoted(versions: &[TemplateVersion], default: &TemplateVersion, default_bad: bool) -> usize {
    let fix = fix_description(default.version);
    versions
        .iter()
        .filter(|v| {
            default_bad && v.version > default.version && v.description.as_deref() == Some(&fix)
        })
        .count()
}

fn describe_fix(plan: &[NewVersion]) -> String {
    let parts: Vec<String> = plan
        .iter()
        .map(|v| {
            if v.make_default {
                format!(
                    "new default version from version {}, requiring tokens",
                    v.from
                )
            } else {
                format!("new latest version from version {}", v.from)
            }
        })
        .collect();
    parts.join("; ")
}

/// The plan for one group: its verdict is its templates' (resolved as it
/// names them) or its launch configuration's. A group is never changed:
/// its template is fixed; notify mode tags it.
pub fn plan_group(
    cfg: &Config,
    g: &Group,
    templates: &BTreeMap<String, (Template, Vec<TemplateVersion>)>,
    configurations: &BTreeMap<String, LaunchConfiguration>,
    inherited: &Inherited,
) -> (SourceReport, SourceAction) {
    let mut report = SourceReport::new(SourceKind::AutoScalingGroup, &g.name, None);
    name_launcher(&mut report, launchers(&g.tags, None, None, None));
    let mut findings = Vec::new();
    let mut unknown = Vec::new();
    let mut exempt = None;
    for r in &g.templates {
        let found = templates.values().find(|(t, _)| r.names(t));
        let Some((t, versions)) = found else {
            unknown.push(format!(
                "launch template {} could not be read",
                r.id.as_deref().or(r.name.as_deref()).unwrap_or("?")
            ));
            continue;
        };
        let n = r.version.resolve(t);
        let Some(v) = versions.iter().find(|v| v.version == n) else {
            unknown.push(format!(
                "launch template {} version {n} could not be read",
                t.id
            ));
            continue;
        };
        let mut tags = t.tags.clone();
        tags.extend(g.tags.iter().cloned());
        match judge(
            cfg,
            v.options.as_ref(),
            v.image_id.as_deref(),
            &tags,
            inherited,
        ) {
            SourceVerdict::Noncompliant(fs) => findings.extend(fs.into_iter().map(|x| {
                format!(
                    "launch template {} version {n} ({}): {}",
                    t.id,
                    r.version,
                    x.of_source()
                )
            })),
            SourceVerdict::Exempt(e, _) => exempt = Some(e),
            SourceVerdict::Depends(_) | SourceVerdict::Compliant(_) => {}
        }
    }
    if let Some(name) = &g.launch_configuration {
        match configurations.get(name) {
            Some(lc) => {
                if let SourceVerdict::Noncompliant(fs) = judge(
                    cfg,
                    lc.options.as_ref(),
                    lc.image_id.as_deref(),
                    &g.tags,
                    inherited,
                ) {
                    findings.extend(fs.into_iter().map(|x| {
                        format!(
                            "launch configuration {name} (cannot be changed, only replaced): {}",
                            x.of_source()
                        )
                    }));
                }
            }
            None => unknown.push(format!("launch configuration {name} could not be read")),
        }
    }
    if findings.is_empty() && unknown.is_empty() {
        if let Some(e) = exempt {
            report.outcome = SourceOutcome::Exempt;
            report.exemption = Some(e.to_string());
            report.action = format!("none: exempt ({e})");
        }
        return (report, SourceAction::None);
    }
    report.notify = true;
    if findings.is_empty() {
        report.outcome = SourceOutcome::Failed;
        report.error = Some(unknown.join("; "));
        report.action = "none: what it launches from could not be read".into();
        return (report, SourceAction::None);
    }
    report.findings = findings;
    report.findings.extend(unknown);
    report.outcome = SourceOutcome::Flagged;
    let action = match cfg.mode {
        Mode::Notify => {
            report.action = format!(
                "tagged {}={}",
                cfg.status_tag_key,
                crate::policy::NONCOMPLIANT
            );
            SourceAction::Tag
        }
        Mode::Audit => {
            report.action = "none (audit mode)".into();
            SourceAction::None
        }
        Mode::Enforce => {
            report.action =
                "none: a group launches what its template says; the template is the fix".into();
            SourceAction::None
        }
    };
    (report, action)
}

/// The plan for one launch configuration: reported (and, in notify mode,
/// tagged through its groups), never changed.
pub fn plan_configuration(
    cfg: &Config,
    lc: &LaunchConfiguration,
    groups: &[Group],
    inherited: &Inherited,
) -> SourceReport {
    let mut report = SourceReport::new(SourceKind::LaunchConfiguration, &lc.name, None);
    report.used_by = groups
        .iter()
        .filter(|g| g.launch_configuration.as_deref() == Some(lc.name.as_str()))
        .map(|g| g.name.clone())
        .collect();
    match judge(
        cfg,
        lc.options.as_ref(),
        lc.image_id.as_deref(),
        &[],
        inherited,
    ) {
        SourceVerdict::Noncompliant(fs) => {
            report.outcome = SourceOutcome::Flagged;
            report.findings = fs.iter().map(Violation::of_source).collect();
            report.notify = true;
            report.action = "none: a launch configuration cannot be changed; replace it with a launch template that requires tokens".into();
        }
        SourceVerdict::Exempt(e, _) => {
            report.outcome = SourceOutcome::Exempt;
            report.action = format!("none: exempt ({e})");
            report.exemption = Some(e.to_string());
        }
        SourceVerdict::Depends(why) => {
            report.outcome = SourceOutcome::Depends;
            report.findings = vec![why];
        }
        SourceVerdict::Compliant(_) => {}
    }
    report
}

/// The source an instance came from, by the tags EC2 and Auto Scaling put
/// on it: its group if any, else its launch template.
pub fn attribution(tags: &[(String, String)]) -> Option<(SourceKind, String)> {
    let tag = |k: &str| {
        tags.iter()
            .find(|(t, _)| t == k)
            .map(|(_, v)| v.to_string())
    };
    tag("aws:autoscaling:groupName")
        .map(|g| (SourceKind::AutoScalingGroup, g))
        .or_else(|| tag("aws:ec2launchtemplate:id").map(|t| (SourceKind::LaunchTemplate, t)))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict as `judge` gave it before sources were judged by the
    /// instance policy (`Policy::judge`), kept here verbatim as the
    /// reference of the differential test below.
    #[derive(Debug, PartialEq)]
    enum Before {
        Compliant(String),
        Noncompliant(Vec<String>),
        Depends(String),
        Exempt(Exemption, Vec<String>),
    }

    fn judge_before(
        cfg: &Config,
        options: Option<&MetadataOptions>,
        image: Option<&str>,
        tags: &[(String, String)],
        inherited: &Inherited,
    ) -> Before {
        let o = options.cloned().unwrap_or_default();
        if o.http_endpoint.as_deref() == Some("disabled") {
            return Before::Compliant("HttpEndpoint=disabled".into());
        }
        let mut findings = Vec::new();
        match o.http_tokens.as_deref() {
            Some("required") => {}
            Some(other) => findings.push(format!("HttpTokens={other}: every launch opens IMDSv1")),
            None => {
                if inherited.account_default.as_deref() == Some("required") {
                    return hop_verdict(
                        cfg,
                        &o,
                        "sets no HttpTokens; the account default (required) applies",
                    );
                }
                match image {
                    Some(i) if inherited.v2_images.contains(i) => {
                        return hop_verdict(
                            cfg,
                            &o,
                            &format!("sets no HttpTokens; its AMI {i} requires tokens (ImdsSupport v2.0)"),
                        );
                    }
                    Some(i) if inherited.defaults_read && inherited.images_read.contains(i) => {
                        findings.push(format!(
                            "sets no HttpTokens, and neither the account default nor its AMI {i} requires tokens: launches get optional"
                        ));
                    }
                    None if inherited.defaults_read => findings.push(
                        "sets no HttpTokens nor an AMI, and the account default does not require tokens: launches get optional".into(),
                    ),
                    _ => {
                        return Before::Depends(
                            "sets no HttpTokens: the account default (or its AMI) decides".into(),
                        )
                    }
                }
            }
        }
        if let (Some(max), Some(hop)) = (cfg.max_hop_limit, o.http_put_response_hop_limit) {
            if hop > max {
                findings.push(format!("HttpPutResponseHopLimit={hop} above {max}"));
            }
        }
        if findings.is_empty() {
            return Before::Compliant("HttpTokens=required".into());
        }
        match exemption(cfg, image, tags) {
            Some(e) => Before::Exempt(e, findings),
            None => Before::Noncompliant(findings),
        }
    }

    fn hop_verdict(cfg: &Config, o: &MetadataOptions, why: &str) -> Before {
        match (cfg.max_hop_limit, o.http_put_response_hop_limit) {
            (Some(max), Some(hop)) if hop > max => {
                Before::Noncompliant(vec![format!("HttpPutResponseHopLimit={hop} above {max}")])
            }
            _ => Before::Compliant(why.into()),
        }
    }

    /// The exemptions that apply to a source: its tag, or its AMI.
    fn exemption(
        cfg: &Config,
        image: Option<&str>,
        tags: &[(String, String)],
    ) -> Option<Exemption> {
        let ex = &cfg.exemptions;
        if let Some(key) = &ex.tag_key {
            if tags
                .iter()
                .any(|(k, v)| k == key && v.trim().eq_ignore_ascii_case("true"))
            {
                return Some(Exemption::Tag(key.clone()));
            }
        }
        image
            .filter(|i| ex.image_ids.iter().any(|x| x == i))
            .map(|i| Exemption::Image(i.to_string()))
    }

    /// Every combination of what a source can set and inherit, judged by
    /// the shared policy and by the copy it replaced: the same verdict,
    /// finding for finding, each time.
    #[test]
    fn sources_judged_by_the_instance_policy_get_the_verdicts_they_got_before() {
        let tokens = [None, Some("required"), Some("optional"), Some("")];
        let endpoints = [None, Some("enabled"), Some("disabled")];
        let hops = [None, Some(1), Some(2), Some(5)];
        let images = [
            None,
            Some("ami-0aaaaaaaaaaaaaaa2"),
            Some("ami-0aaaaaaaaaaaaaaa1"),
            Some("ami-0aaaaaaaaaaaaaaa3"),
        ];
        let tag_sets: [Vec<(String, String)>; 3] = [
            vec![],
            vec![("imds-exempt".into(), "true".into())],
            vec![("imds-exempt".into(), "no".into())],
        ];
        let configs = [
            cfg(&[]),
            cfg(&[("MAX_HOP_LIMIT", "2")]),
            cfg(&[
                ("EXEMPT_TAG_KEY", "imds-exempt"),
                ("EXEMPT_IMAGE_IDS", "ami-0aaaaaaaaaaaaaaa1"),
            ]),
        ];
        let mut compared = 0;
        for defaults in [None, Some("required"), Some("optional")] {
            for defaults_read in [false, true] {
                let inherited = Inherited {
                    account_default: defaults.map(str::to_string),
                    defaults_read,
                    v2_images: ["ami-0aaaaaaaaaaaaaaa2".to_string()].into(),
                    images_read: [
                        "ami-0aaaaaaaaaaaaaaa2".to_string(),
                        "ami-0aaaaaaaaaaaaaaa1".to_string(),
                    ]
                    .into(),
                };
                for c in &configs {
                    for t in tokens {
                        for e in endpoints {
                            for h in hops {
                                for i in images {
                                    for tags in &tag_sets {
                                        for set in [false, true] {
                                            let o = MetadataOptions {
                                                http_tokens: t.map(str::to_string),
                                                http_endpoint: e.map(str::to_string),
                                                http_put_response_hop_limit: h,
                                                ..Default::default()
                                            };
                                            let o = set.then_some(&o);
                                            let now = match judge(c, o, i, tags, &inherited) {
                                                SourceVerdict::Compliant(w) => Before::Compliant(w),
                                                SourceVerdict::Depends(w) => Before::Depends(w),
                                                SourceVerdict::Noncompliant(fs) => {
                                                    Before::Noncompliant(
                                                        fs.iter().map(|f| f.of_source()).collect(),
                                                    )
                                                }
                                                SourceVerdict::Exempt(x, fs) => Before::Exempt(
                                                    x,
                                                    fs.iter().map(|f| f.of_source()).collect(),
                                                ),
                                            };
                                            let before = judge_before(c, o, i, tags, &inherited);
                                            assert_eq!(
                                                now, before,
                                                "{o:?} {i:?} {tags:?} {inherited:?}"
                                            );
                                            compared += 1;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 6 * 3 * 4 * 3 * 4 * 4 * 3 * 2);
    }

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn opts(tokens: Option<&str>, hop: Option<i32>) -> MetadataOptions {
        MetadataOptions {
            http_tokens: tokens.map(str::to_string),
            http_endpoint: Some("enabled".into()),
            http_put_response_hop_limit: hop,
            ..MetadataOptions::default()
        }
    }

    fn template(default: i64, latest: i64, tags: &[(&str, &str)]) -> Template {
        Template {
            id: "lt-0123456789abcdef0".into(),
            name: Some("web".into()),
            default_version: default,
            latest_version: latest,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_by: Some("arn:aws:iam::111122223333:role/platform".into()),
            operator: None,
        }
    }

    fn version(n: i64, tokens: Option<&str>, hop: Option<i32>) -> TemplateVersion {
        TemplateVersion {
            template_id: "lt-0123456789abcdef0".into(),
            version: n,
            description: None,
            options: Some(opts(tokens, hop)),
            image_id: Some("ami-0123456789abcdef0".into()),
        }
    }

    const OPTED_IN: (&str, &str) = ("imds-guard:fix-source", "true");

    #[test]
    fn tokens_set_decide_and_unset_tokens_inherit_the_default_then_the_ami() {
        let c = cfg(&[]);
        let none = Inherited::default();
        assert!(matches!(
            judge(&c, Some(&opts(Some("required"), Some(2))), None, &[], &none),
            SourceVerdict::Compliant(_)
        ));
        assert!(
            judge(&c, Some(&opts(Some("optional"), Some(2))), None, &[], &none).is_noncompliant()
        );
        // Nothing set: unknown until the default and the AMI are read.
        assert!(matches!(
            judge(&c, None, Some("ami-1"), &[], &none),
            SourceVerdict::Depends(_)
        ));
        let required = Inherited {
            account_default: Some("required".into()),
            defaults_read: true,
            ..Inherited::default()
        };
        assert!(
            matches!(judge(&c, None, Some("ami-1"), &[], &required), SourceVerdict::Compliant(w) if w.contains("account default"))
        );
        let v2 = Inherited {
            defaults_read: true,
            v2_images: ["ami-1".to_string()].into(),
            images_read: ["ami-1".to_string()].into(),
            ..Inherited::default()
        };
        assert!(
            matches!(judge(&c, None, Some("ami-1"), &[], &v2), SourceVerdict::Compliant(w) if w.contains("ImdsSupport"))
        );
        let v1 = Inherited {
            defaults_read: true,
            images_read: ["ami-1".to_string()].into(),
            ..Inherited::default()
        };
        assert!(judge(&c, None, Some("ami-1"), &[], &v1).is_noncompliant());
        // An explicit optional beats any default.
        assert!(judge(
            &c,
            Some(&opts(Some("optional"), None)),
            Some("ami-1"),
            &[],
            &required
        )
        .is_noncompliant());
        // A hop limit above the ceiling is a finding on a source too.
        let capped = cfg(&[("MAX_HOP_LIMIT", "2")]);
        assert!(judge(
            &capped,
            Some(&opts(Some("required"), Some(3))),
            None,
            &[],
            &none
        )
        .is_noncompliant());
    }

    #[test]
    fn a_tag_or_an_ami_exempts_a_source() {
        let c = cfg(&[
            ("EXEMPT_TAG_KEY", "imds-exempt"),
            ("EXEMPT_IMAGE_IDS", "ami-0123456789abcdef0"),
        ]);
        let o = opts(Some("optional"), Some(1));
        let tagged = vec![("imds-exempt".to_string(), "TRUE".to_string())];
        assert!(matches!(
            judge(&c, Some(&o), None, &tagged, &Inherited::default()),
            SourceVerdict::Exempt(Exemption::Tag(_), _)
        ));
        assert!(matches!(
            judge(
                &c,
                Some(&o),
                Some("ami-0123456789abcdef0"),
                &[],
                &Inherited::default()
            ),
            SourceVerdict::Exempt(Exemption::Image(_), _)
        ));
    }

    #[test]
    fn services_and_stacks_own_their_templates() {
        let t = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            owner(&t("aws:cloudformation:stack-name", "web"), None).unwrap(),
            "CloudFormation stack web"
        );
        assert_eq!(
            owner(&t("karpenter.k8s.aws/ec2nodeclass", "default"), None).unwrap(),
            "Karpenter"
        );
        assert_eq!(
            owner(&t("eks:nodegroup-name", "ng-1"), None).unwrap(),
            "EKS managed node group ng-1"
        );
        assert_eq!(
            owner(&t("elasticbeanstalk:environment-name", "prod"), None).unwrap(),
            "Elastic Beanstalk"
        );
        // The service before the stack that deployed it.
        let mut beanstalk = t("aws:cloudformation:stack-name", "awseb-e-1-stack");
        beanstalk.extend(t("elasticbeanstalk:environment-name", "prod"));
        assert_eq!(owner(&beanstalk, None).unwrap(), "Elastic Beanstalk");
        // A forgeable tag on a stack's template leaves it the stack's.
        let mut ecs = t("aws:cloudformation:stack-name", "web");
        ecs.extend(t("AmazonECSManaged", ""));
        assert_eq!(owner(&ecs, None).unwrap(), "CloudFormation stack web");
        assert_eq!(
            owner(&t("AWSBatchServiceTag", "ce"), None).unwrap(),
            "AWS Batch"
        );
        assert_eq!(
            owner(
                &[],
                Some("arn:aws:sts::1:assumed-role/AWSServiceRoleForAmazonEKSNodegroup/x")
            )
            .unwrap(),
            "EKS managed node group"
        );
        // Application Migration Service's templates are the user's to fix.
        assert_eq!(
            owner(
                &[],
                Some("arn:aws:sts::1:assumed-role/AWSServiceRoleForApplicationMigrationService/x")
            ),
            None
        );
        assert_eq!(
            owner(&t("team", "web"), Some("arn:aws:iam::1:role/platform")),
            None
        );
    }

    #[test]
    fn a_services_copy_is_never_edited_and_says_where_the_lasting_fix_is() {
        let groups = vec![];
        let inh = Inherited::default();
        let on = cfg(&[("FIX_SOURCES", "true")]);
        let v = vec![version(1, Some("optional"), Some(1))];
        // Batch's copy of the user's template: opted in (its tags were
        // copied too), but Batch pins the version it copied.
        let mut batch = template(1, 1, &[OPTED_IN]);
        batch.name = Some("Batch-lt-0d8a7e2c-1b3f-4c5d-9e6f-0a1b2c3d4e5f".into());
        let f = TemplateFacts {
            template: &batch,
            versions: &v,
            groups: &groups,
            inherited: &inh,
        };
        let (r, a) = plan_template(&on, &f);
        assert_eq!((r.outcome, a), (SourceOutcome::Flagged, SourceAction::None));
        assert_eq!(r.owner.as_deref(), Some("AWS Batch"));
        let setting = r.setting.as_deref().unwrap_or_default();
        assert!(setting.contains("compute environment"), "{setting}");
        assert!(r.action.contains(setting), "{}", r.action);

        // EKS's own copy, by its creator.
        let mut eks = template(1, 1, &[OPTED_IN]);
        eks.created_by = Some(
            "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAmazonEKSNodegroup/EKS".into(),
        );
        let f2 = TemplateFacts {
            template: &eks,
            ..f
        };
        let (r, a) = plan_template(&on, &f2);
        assert_eq!((r.outcome, a), (SourceOutcome::Flagged, SourceAction::None));
        assert!(r.action.contains("UpdateNodegroupVersion"), "{}", r.action);

        // Application Migration Service's template is the user's: fixed,
        // and the launcher still named.
        let mut mgn = template(1, 1, &[OPTED_IN]);
        mgn.created_by = Some(
            "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForApplicationMigrationService/x"
                .into(),
        );
        let f3 = TemplateFacts {
            template: &mgn,
            ..f
        };
        let (r, a) = plan_template(&on, &f3);
        assert_eq!(r.outcome, SourceOutcome::Fixed);
        assert!(matches!(a, SourceAction::Fix(_)));
        assert_eq!(r.owner, None);
        assert_eq!(r.launcher.as_deref(), Some("Application Migration Service"));
    }

    #[test]
    fn a_container_hosts_template_is_fixed_with_its_second_hop() {
        let groups = vec![];
        let inh = Inherited::default();
        let on = cfg(&[("FIX_SOURCES", "true")]);
        let hop_of = |c: &Config, tags: &[(&str, &str)], hop: Option<i32>| {
            let t = template(1, 1, tags);
            let v = vec![version(1, Some("optional"), hop)];
            let f = TemplateFacts {
                template: &t,
                versions: &v,
                groups: &groups,
                inherited: &inh,
            };
            match plan_template(c, &f).1 {
                SourceAction::Fix(plan) => plan[0].options.http_put_response_hop_limit,
                other => panic!("{tags:?}: not fixed: {other:?}"),
            }
        };
        // An ECS capacity provider's template is the user's: fixed, and its
        // tasks keep reaching IMDS.
        let ecs = [OPTED_IN, ("AmazonECSManaged", "")];
        assert_eq!(hop_of(&on, &ecs, Some(1)), Some(2));
        assert_eq!(
            hop_of(&on, &ecs, None),
            Some(2),
            "an unset hop is 1 at launch"
        );
        assert_eq!(
            hop_of(&on, &ecs, Some(3)),
            Some(3),
            "never lowered but by the ceiling"
        );
        // A plain template keeps its hop limit, or none.
        assert_eq!(hop_of(&on, &[OPTED_IN], Some(1)), Some(1));
        assert_eq!(hop_of(&on, &[OPTED_IN], None), None);
        // The operator's own tag, and their choice of hop 1 for pods.
        let tagged = cfg(&[("FIX_SOURCES", "true"), ("CONTAINER_HOST_TAG", "k8s-node")]);
        assert_eq!(
            hop_of(&tagged, &[OPTED_IN, ("k8s-node", "")], Some(1)),
            Some(2)
        );
        let one = cfg(&[("FIX_SOURCES", "true"), ("CONTAINER_HOP_LIMIT", "1")]);
        assert_eq!(hop_of(&one, &ecs, Some(1)), Some(1));
        assert_eq!(hop_of(&one, &ecs, None), Some(1));
    }

    #[test]
    fn a_managed_instances_template_is_its_services_never_edited() {
        let groups = vec![];
        let inh = Inherited::default();
        let mut t = template(1, 1, &[OPTED_IN]);
        t.operator = Some(crate::launcher::Operator {
            managed: true,
            principal: Some("ecs.amazonaws.com".into()),
        });
        let v = vec![version(1, Some("optional"), Some(1))];
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &groups,
            inherited: &inh,
        };
        for mode in ["enforce", "notify", "audit"] {
            let c = cfg(&[("FIX_SOURCES", "true"), ("GUARD_MODE", mode)]);
            let (r, a) = plan_template(&c, &f);
            assert_eq!(
                (r.outcome, a),
                (SourceOutcome::Flagged, SourceAction::None),
                "{mode}: not even tagged"
            );
            assert_eq!(r.owner.as_deref(), Some("ECS Managed Instances"));
            assert!(
                r.action.contains("ecs.amazonaws.com"),
                "{mode}: {}",
                r.action
            );
        }
    }

    #[test]
    fn enforce_fixes_only_an_opted_in_template_nobody_else_owns_and_only_with_fixing_on() {
        let groups = vec![];
        let inh = Inherited::default();
        let t = template(1, 1, &[OPTED_IN]);
        let v = vec![version(1, Some("optional"), Some(2))];
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &groups,
            inherited: &inh,
        };

        let (r, a) = plan_template(&cfg(&[]), &f);
        assert_eq!(r.outcome, SourceOutcome::Flagged);
        assert_eq!(a, SourceAction::None);
        assert!(r.action.contains("FIX_SOURCES"), "{}", r.action);

        let on = cfg(&[("FIX_SOURCES", "true")]);
        let (r, a) = plan_template(&on, &f);
        assert_eq!(r.outcome, SourceOutcome::Fixed);
        assert_eq!(
            a,
            SourceAction::Fix(vec![NewVersion {
                template_id: t.id.clone(),
                from: 1,
                options: MetadataOptions {
                    http_tokens: Some("required".into()),
                    http_endpoint: Some("enabled".into()),
                    http_put_response_hop_limit: Some(2),
                    ..MetadataOptions::default()
                },
                make_default: true,
            }])
        );

        let not_opted = template(1, 1, &[]);
        let f2 = TemplateFacts {
            template: &not_opted,
            ..f
        };
        let (r, a) = plan_template(&on, &f2);
        assert_eq!((r.outcome, a), (SourceOutcome::Flagged, SourceAction::None));
        assert!(r.action.contains("opted in"), "{}", r.action);

        let stack = template(1, 1, &[OPTED_IN, ("aws:cloudformation:stack-name", "web")]);
        let f3 = TemplateFacts {
            template: &stack,
            ..f
        };
        let (r, a) = plan_template(&on, &f3);
        assert_eq!((r.outcome, a), (SourceOutcome::Flagged, SourceAction::None));
        assert!(
            r.action.contains("CloudFormation stack web"),
            "{}",
            r.action
        );

        let (r, a) = plan_template(
            &cfg(&[("GUARD_MODE", "notify"), ("FIX_SOURCES", "true")]),
            &f,
        );
        assert_eq!((r.outcome, a), (SourceOutcome::Flagged, SourceAction::Tag));
        let (_, a) = plan_template(
            &cfg(&[("GUARD_MODE", "audit"), ("FIX_SOURCES", "true")]),
            &f,
        );
        assert_eq!(a, SourceAction::None);
    }

    #[test]
    fn latest_keeps_its_data_when_the_default_is_fixed() {
        let on = cfg(&[("FIX_SOURCES", "true")]);
        let t = template(2, 3, &[OPTED_IN]);
        let inh = Inherited::default();
        // Default 2 asks for optional; latest 3 is fine.
        let v = vec![
            version(2, Some("optional"), Some(1)),
            version(3, Some("required"), Some(2)),
        ];
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &[],
            inherited: &inh,
        };
        let SourceAction::Fix(plan) = plan_template(&on, &f).1 else {
            panic!()
        };
        assert_eq!(plan.len(), 2);
        assert_eq!((plan[0].from, plan[0].make_default), (2, true));
        assert_eq!(
            (plan[1].from, plan[1].make_default),
            (3, false),
            "$Latest last, from the latest"
        );
        assert_eq!(
            plan[1].options,
            opts(Some("required"), Some(2)),
            "kept as it was"
        );
        // Only the latest asks for optional: one version, no new default.
        let v = vec![
            version(2, Some("required"), Some(1)),
            version(3, Some("optional"), Some(2)),
        ];
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &[],
            inherited: &inh,
        };
        let SourceAction::Fix(plan) = plan_template(&on, &f).1 else {
            panic!()
        };
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].from, plan[0].make_default), (3, false));
    }

    #[test]
    fn a_version_that_looks_like_the_guards_fix_is_never_promoted() {
        // Someone who may create versions, but not set the default, writes
        // one with the guard's description, tokens required, and their own
        // AMI: the guard makes a fresh version from the default instead.
        let on = cfg(&[("FIX_SOURCES", "true")]);
        let t = template(2, 3, &[OPTED_IN]);
        let inh = Inherited::default();
        let mut planted = version(3, Some("required"), Some(1));
        planted.description = Some(fix_description(2));
        planted.image_id = Some("ami-0badbadbadbadbad0".into());
        let v = vec![version(2, Some("optional"), Some(1)), planted];
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &[],
            inherited: &inh,
        };
        let (r, a) = plan_template(&on, &f);
        let SourceAction::Fix(plan) = a else { panic!() };
        assert_eq!((plan[0].from, plan[0].make_default), (2, true), "{plan:?}");
        // (The latest is copied after it, so `$Latest` keeps what it had:
        // nothing of version 3 becomes the default.)
        assert!(
            plan.iter().all(|p| p.from != 3 || !p.make_default),
            "{plan:?}"
        );
        assert_eq!(r.outcome, SourceOutcome::Fixed);

        // Fixes never made the default pile up no further than the cap:
        // then the template is failed and named, and nothing is added.
        let mut more = v.clone();
        let mut second = version(4, Some("required"), Some(1));
        second.description = Some(fix_description(2));
        more.push(second);
        let t = template(2, 4, &[OPTED_IN]);
        let f = TemplateFacts {
            template: &t,
            versions: &more,
            groups: &[],
            inherited: &inh,
        };
        let (r, a) = plan_template(&on, &f);
        assert_eq!(a, SourceAction::None);
        assert_eq!(r.outcome, SourceOutcome::Failed);
        let e = r.error.unwrap();
        assert!(
            e.contains("2 or more versions described as the guard's fix of version 2"),
            "{e}"
        );
    }

    #[test]
    fn groups_that_pin_a_bad_version_are_named() {
        let t = template(2, 2, &[]);
        let v = vec![
            version(1, Some("optional"), Some(1)),
            version(2, Some("optional"), Some(1)),
        ];
        let groups = vec![
            Group {
                name: "follows-default".into(),
                templates: vec![TemplateRef {
                    id: Some(t.id.clone()),
                    name: None,
                    version: VersionRef::Default,
                }],
                ..Group::default()
            },
            Group {
                name: "pinned".into(),
                templates: vec![TemplateRef {
                    id: None,
                    name: Some("web".into()),
                    version: VersionRef::Number(1),
                }],
                ..Group::default()
            },
        ];
        let inh = Inherited::default();
        let f = TemplateFacts {
            template: &t,
            versions: &v,
            groups: &groups,
            inherited: &inh,
        };
        let (r, _) = plan_template(&cfg(&[]), &f);
        assert_eq!(r.used_by, vec!["follows-default", "pinned"]);
        assert_eq!(r.pinned_by, vec!["pinned"]);
    }

    #[test]
    fn a_group_is_judged_by_every_template_it_may_launch_from() {
        let c = cfg(&[]);
        let t = template(1, 2, &[]);
        let versions = vec![
            version(1, Some("required"), Some(2)),
            version(2, Some("optional"), Some(2)),
        ];
        let templates = BTreeMap::from([(t.id.clone(), (t.clone(), versions))]);
        let r = |version| TemplateRef {
            id: Some(t.id.clone()),
            name: None,
            version,
        };
        let g = |refs: Vec<TemplateRef>| Group {
            name: "g".into(),
            templates: refs,
            ..Group::default()
        };
        let inh = Inherited::default();
        let (ok, _) = plan_group(
            &c,
            &g(vec![r(VersionRef::Default)]),
            &templates,
            &BTreeMap::new(),
            &inh,
        );
        assert_eq!(ok.outcome, SourceOutcome::Compliant);
        // A mixed-instances override on $Latest asks for optional.
        let (bad, _) = plan_group(
            &c,
            &g(vec![r(VersionRef::Default), r(VersionRef::Latest)]),
            &templates,
            &BTreeMap::new(),
            &inh,
        );
        assert_eq!(bad.outcome, SourceOutcome::Flagged);
        assert!(
            bad.findings[0].contains("version 2 ($Latest)"),
            "{:?}",
            bad.findings
        );
        // A launch configuration: reported, never changed.
        let lc = LaunchConfiguration {
            name: "old".into(),
            options: Some(opts(Some("optional"), Some(1))),
            image_id: None,
        };
        let with_lc = Group {
            name: "g".into(),
            launch_configuration: Some("old".into()),
            ..Group::default()
        };
        let (lg, a) = plan_group(
            &c,
            &with_lc,
            &BTreeMap::new(),
            &BTreeMap::from([("old".to_string(), lc.clone())]),
            &inh,
        );
        assert_eq!(
            (lg.outcome, a),
            (SourceOutcome::Flagged, SourceAction::None)
        );
        let lcr = plan_configuration(&c, &lc, &[with_lc], &inh);
        assert_eq!(lcr.used_by, vec!["g"]);
        assert!(lcr.action.contains("cannot be changed"));
        // What cannot be read fails the group rather than passing it.
        let (unread, _) = plan_group(
            &c,
            &g(vec![r(VersionRef::Number(9))]),
            &templates,
            &BTreeMap::new(),
            &inh,
        );
        assert_eq!(unread.outcome, SourceOutcome::Failed);
    }

    #[test]
    fn instances_are_attributed_to_their_group_first() {
        let tags = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            attribution(&tags(&[
                ("aws:ec2launchtemplate:id", "lt-1"),
                ("aws:autoscaling:groupName", "web")
            ])),
            Some((SourceKind::AutoScalingGroup, "web".into()))
        );
        assert_eq!(
            attribution(&tags(&[("aws:ec2launchtemplate:id", "lt-1")])),
            Some((SourceKind::LaunchTemplate, "lt-1".into()))
        );
        assert_eq!(attribution(&tags(&[("Name", "x")])), None);
    }
}

//! The policy, in one place: is an instance compliant, is it exempt, and what
//! would make it compliant. Pure functions of what we observed; what to do
//! with a verdict (modify, tag, or only report) is the mode's business.

use serde::Serialize;

use crate::break_glass::Grant;
use crate::config::{Config, Exemptions};
use crate::event::{DefaultsChange, Observed, Principal};
use crate::glob::Names;

/// Why an instance is not compliant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "finding")]
pub enum Violation {
    /// `HttpTokens` is not `required` while the endpoint is on: IMDSv1 is open.
    TokensNotRequired { http_tokens: String },
    /// The hop limit is above the configured `MAX_HOP_LIMIT`.
    HopLimitAboveMax { current: i32, max: i32 },
    /// A source sets no `HttpTokens`, and neither the account default nor
    /// its AMI (when it names one) requires tokens: launches get `optional`.
    TokensNotSet { image: Option<String> },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TokensNotRequired { http_tokens } => {
                write!(f, "HttpTokens={http_tokens} (IMDSv1 open)")
            }
            Violation::HopLimitAboveMax { current, max } => {
                write!(f, "HttpPutResponseHopLimit={current} above {max}")
            }
            Violation::TokensNotSet { .. } => {
                write!(f, "HttpTokens not set (launches get optional)")
            }
        }
    }
}

impl Violation {
    /// The finding as said of a source, whose every launch it concerns.
    pub fn of_source(&self) -> String {
        match self {
            Violation::TokensNotRequired { http_tokens } => {
                format!("HttpTokens={http_tokens}: every launch opens IMDSv1")
            }
            Violation::HopLimitAboveMax { .. } => self.to_string(),
            Violation::TokensNotSet { image: Some(i) } => format!(
                "sets no HttpTokens, and neither the account default nor its AMI {i} requires tokens: launches get optional"
            ),
            Violation::TokensNotSet { image: None } => "sets no HttpTokens nor an AMI, and the account default does not require tokens: launches get optional".into(),
        }
    }
}

/// What a launch that sets no `HttpTokens` gets instead: the account
/// default, else its AMI's `ImdsSupport` (what a source's judgement needs
/// beside its own options).
#[derive(Clone, Debug, Default)]
pub struct Inherited {
    /// The account default's `HttpTokens` (`None`: not read, or none set).
    pub account_default: Option<String>,
    /// Whether the account default was read at all.
    pub defaults_read: bool,
    /// AMIs whose `ImdsSupport` is `v2.0`.
    pub v2_images: std::collections::BTreeSet<String>,
    /// AMIs looked up (an AMI not among them is unknown).
    pub images_read: std::collections::BTreeSet<String>,
}

/// Whose metadata options are judged: an instance's, as EC2 shows them (a
/// value not shown is not known), or a source's, as its launches ask for
/// them (a value not set is inherited).
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    Instance,
    Source {
        image: Option<&'a str>,
        inherited: &'a Inherited,
    },
}

/// The one judgement of metadata options, for instances and sources alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judged {
    /// Tokens required, or no endpoint (the reason says which setting).
    Compliant(String),
    /// An instance's options not shown in full: look again.
    Undecided,
    /// A source that sets no `HttpTokens` where what it inherits is not
    /// known: the account default (or its AMI) decides.
    Depends(String),
    Noncompliant(Vec<Violation>),
}

/// The options enforce writes: tokens required; the hop limit only when it
/// is raised on a container host switched from `optional`, or
/// is lowered to the ceiling (`None`: not sent, and AWS documents that an
/// omitted hop limit keeps its value); the endpoint never (AWS documents
/// that an omitted endpoint keeps its state, and the roles may not switch
/// it: docs/threat-model.md); the IPv6 endpoint and tags-in-metadata
/// settings as they were (what omitting those does is not documented).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remedy {
    pub http_tokens: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_protocol_ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_metadata_tags: Option<String>,
}

impl std::fmt::Display for Remedy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "set HttpTokens={}", self.http_tokens)?;
        match self.http_put_response_hop_limit {
            Some(hop) => write!(f, ", HttpPutResponseHopLimit={hop}"),
            None => Ok(()),
        }
    }
}

/// Why a noncompliant instance is left as it is. Reports and notifications
/// carry it as its sentence (`tag imds-exempt=true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exemption {
    Tag(String),
    Principal(String),
    Image(String),
    /// A principal exemption recorded at launch in the status tag
    /// (`<STATUS_TAG_KEY>=exempt`): how a sweep, which cannot know who
    /// launched an instance, honours it.
    Recorded(String),
    /// The same, from a launch event CloudTrail has not confirmed yet:
    /// honoured for at most `confirm::WINDOW_SECS`.
    Unconfirmed(String),
    /// A person's time-boxed grant during an incident (`imds-guard
    /// break-glass grant`), from the guard's memory.
    BreakGlass(crate::break_glass::Grant),
    /// An EC2 managed instance (`Operator.Managed`): the service that
    /// operates it (its principal) sets its options, and the guard never
    /// writes to it.
    Managed(String),
}

impl Exemption {
    /// Whether it is a managed instance's: not a choice anyone made here,
    /// so counted apart from exemptions.
    pub fn is_managed(&self) -> bool {
        matches!(self, Exemption::Managed(_))
    }
}

impl Serialize for Exemption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for Exemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exemption::Tag(k) => write!(f, "tag {k}=true"),
            Exemption::Principal(p) => write!(f, "principal matches {p}"),
            Exemption::Image(i) => write!(f, "image {i} is exempt"),
            Exemption::Recorded(glob) => write!(
                f,
                "launched by an exempt principal (matching {glob}), as the guard recorded"
            ),
            Exemption::Unconfirmed(glob) => write!(
                f,
                "launched by an exempt principal (matching {glob}), as its launch event says; kept once CloudTrail's record of the launch confirms it, for at most {} minutes until then",
                WINDOW_SECS / 60
            ),
            Exemption::BreakGlass(g) => write!(f, "{g}"),
            Exemption::Managed(principal) => write!(
                f,
                "a managed instance: {principal} operates it and sets its options (Operator.Managed), so the guard never writes to it"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Compliant,
    /// Shutting down or terminated: nothing to protect.
    Gone {
        state: String,
    },
    /// Not enough is known to decide (options missing): look again.
    Undecided,
    /// Noncompliant, but an exemption applies: nothing is written.
    Exempt {
        exemption: Exemption,
        findings: Vec<Violation>,
    },
    /// Noncompliant: the mode decides whether to apply `remedy`, flag, or report.
    Noncompliant {
        findings: Vec<Violation>,
        remedy: Remedy,
    },
}

/// An instance in this state has nothing left to protect.
pub fn is_gone(state: &str) -> bool {
    matches!(state, "shutting-down" | "terminated")
}

/// How long an unconfirmed exemption is honoured while CloudTrail has no
/// record of its launch (CloudTrail's records reach `LookupEvents` minutes
/// after EventBridge's events): then it lapses and the instance is decided
/// as any other's.
pub const WINDOW_SECS: u64 = 3600;

/// The status tag values the guard writes.
pub const REMEDIATED: &str = "remediated";
pub const NONCOMPLIANT: &str = "noncompliant";

/// The status tag value that records a principal exemption at launch.
pub const EXEMPT_STATUS: &str = "exempt";

/// What the policy needs to know about the deployment.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub exemptions: &'a Exemptions,
    pub max_hop_limit: Option<i32>,
    /// The hop limit a container host is switched with (`Config::container_hop`).
    pub container_hop: i32,
    /// The tag key that makes any instance a container host.
    pub container_tag: Option<&'a str>,
    /// Whether the records `migrate-exemptions` copied from legacy status
    /// tags are honoured (`LEGACY_EXEMPT_BEFORE` set). A legacy tag itself
    /// never is: anyone who may tag could write one after the upgrade; the
    /// migration is the one snapshot of them, reviewed when it is run.
    pub honour_migrated: bool,
}

impl<'a> Policy<'a> {
    /// The policy a configuration sets.
    pub fn of(cfg: &'a Config) -> Self {
        Policy {
            exemptions: &cfg.exemptions,
            max_hop_limit: cfg.max_hop_limit,
            container_hop: cfg.container_hop(),
            container_tag: cfg.container_host_tag.as_deref(),
            honour_migrated: cfg.legacy_exempt_before.is_some(),
        }
    }

    /// Whether an exemption record's glob is honoured (and renewed): only
    /// while that glob is still configured (compared as `Glob::canonical`,
    /// so a cosmetic edit does not un-exempt), or, for a record migrated
    /// from a legacy tag, while `LEGACY_EXEMPT_BEFORE` is set. Removing a
    /// glob lets the records it made lapse.
    pub fn honours_record(&self, glob: &str) -> bool {
        if glob.ends_with(crate::memory::MIGRATED) {
            return self.honour_migrated;
        }
        self.exemptions.principals.iter().any(|g| g.is(glob))
    }

    /// Judges metadata options: what the endpoint, the tokens and the hop
    /// limit allow, with what a source's launches inherit when it sets no
    /// tokens. The instance's verdict (`decide`) and a source's
    /// (`source::judge`) both rest on this one function.
    pub fn judge(&self, o: &crate::event::MetadataOptions, subject: Subject<'_>) -> Judged {
        let instance = matches!(subject, Subject::Instance);
        match o.http_endpoint.as_deref() {
            // No metadata service at all: nothing to steal over IMDSv1.
            Some("disabled") => return Judged::Compliant("HttpEndpoint=disabled".into()),
            None if instance => return Judged::Undecided,
            _ => {}
        }
        let mut findings = Vec::new();
        match (o.http_tokens.as_deref(), subject) {
            (Some("required"), _) => {}
            (Some(other), _) => findings.push(Violation::TokensNotRequired {
                http_tokens: other.to_string(),
            }),
            (None, Subject::Instance) => return Judged::Undecided,
            (None, Subject::Source { image, inherited }) => {
                if inherited.account_default.as_deref() == Some("required") {
                    return self.hop_only(
                        o,
                        "sets no HttpTokens; the account default (required) applies".into(),
                    );
                }
                match image {
                    Some(i) if inherited.v2_images.contains(i) => {
                        return self.hop_only(
                            o,
                            format!(
                            "sets no HttpTokens; its AMI {i} requires tokens (ImdsSupport v2.0)"
                        ),
                        )
                    }
                    Some(i) if inherited.defaults_read && inherited.images_read.contains(i) => {
                        findings.push(Violation::TokensNotSet {
                            image: Some(i.to_string()),
                        })
                    }
                    None if inherited.defaults_read => {
                        findings.push(Violation::TokensNotSet { image: None })
                    }
                    _ => {
                        return Judged::Depends(
                            "sets no HttpTokens: the account default (or its AMI) decides".into(),
                        )
                    }
                }
            }
        }
        if let Some(max) = self.max_hop_limit {
            match o.http_put_response_hop_limit {
                Some(current) if current > max => {
                    findings.push(Violation::HopLimitAboveMax { current, max })
                }
                Some(_) => {}
                // An instance's unknown hop limit cannot be compared; a
                // source's unset one is the launch's default, never above.
                None if instance => return Judged::Undecided,
                None => {}
            }
        }
        if findings.is_empty() {
            Judged::Compliant("HttpTokens=required".into())
        } else {
            Judged::Noncompliant(findings)
        }
    }

    /// Compliant for `why`, unless the hop limit is above the ceiling.
    fn hop_only(&self, o: &crate::event::MetadataOptions, why: String) -> Judged {
        match (self.max_hop_limit, o.http_put_response_hop_limit) {
            (Some(max), Some(current)) if current > max => {
                Judged::Noncompliant(vec![Violation::HopLimitAboveMax { current, max }])
            }
            _ => Judged::Compliant(why),
        }
    }

    /// The exemptions a resource's own marks carry, for an instance and a
    /// source alike: its exempt tag (`EXEMPT_TAG_KEY` = `true`), else its
    /// AMI (`EXEMPT_IMAGE_IDS`).
    pub fn marked_exemption<'t>(
        &self,
        tag: impl Fn(&str) -> Option<&'t str>,
        image: Option<&str>,
    ) -> Option<Exemption> {
        let ex = self.exemptions;
        if let Some(key) = &ex.tag_key {
            if tag(key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
                return Some(Exemption::Tag(key.clone()));
            }
        }
        image
            .filter(|i| ex.image_ids.iter().any(|x| x == i))
            .map(|i| Exemption::Image(i.to_string()))
    }

    pub fn decide(&self, instance: &Observed, principal: &Principal) -> Verdict {
        if let Some(state) = instance.state.as_deref().filter(|s| is_gone(s)) {
            return Verdict::Gone {
                state: state.to_string(),
            };
        }
        let o = &instance.options;
        let findings = match self.judge(o, Subject::Instance) {
            Judged::Compliant(_) => return Verdict::Compliant,
            Judged::Undecided | Judged::Depends(_) => return Verdict::Undecided,
            Judged::Noncompliant(findings) => findings,
        };
        let hop = o.http_put_response_hop_limit;
        // The service that operates a managed instance sets its options:
        // a write would be the guard against that service, whatever else
        // applies. EC2 sets `Operator`; no one else can.
        if let Some(op) = instance.operator.as_ref().filter(|o| o.managed) {
            let principal = op.principal.as_deref().unwrap_or("its service");
            return Verdict::Exempt {
                exemption: Exemption::Managed(crate::validate::clean(principal, 128)),
                findings,
            };
        }
        if let Some(exemption) = self.exemption(instance, principal) {
            return Verdict::Exempt {
                exemption,
                findings,
            };
        }
        // Sent only when lowered: with a ceiling the hop limit is known here
        // (an unknown one is undecided above), and without one it is kept.
        let lowered = match (hop, self.max_hop_limit) {
            (Some(hop), Some(max)) if hop > max => Some(max),
            _ => None,
        };
        // Or raised, in the same call that switches a container host from
        // `optional`: its pods and tasks reached IMDS through the IMDSv1
        // fallback, whatever the hop limit; with tokens required, the
        // token's answer must cross one more hop. Never above the container
        // hop limit, never on an instance already at `required` (the roles
        // refuse that: NoHopLimitRaiseToTwo), never when the hop limit is
        // not known.
        let raised = self.container_raise(instance).map(|(to, _)| to);
        let remedy = Remedy {
            http_tokens: "required",
            http_put_response_hop_limit: lowered.or(raised),
            http_protocol_ipv6: o.http_protocol_ipv6.clone(),
            instance_metadata_tags: o.instance_metadata_tags.clone(),
        };
        Verdict::Noncompliant { findings, remedy }
    }

    /// The hop limit a container host is raised to with its switch, and
    /// why it is one: only from `optional`, only below the container hop
    /// limit, only when its hop limit is known.
    pub fn container_raise(&self, instance: &Observed) -> Option<(i32, String)> {
        let o = &instance.options;
        let switching = o.http_tokens.as_deref() != Some("required");
        let hop = o.http_put_response_hop_limit?;
        if !switching || hop >= self.container_hop {
            return None;
        }
        Some((self.container_hop, self.container_host(instance)?))
    }

    /// Why an instance is a container host, if it is: its launcher runs
    /// containers (`launcher`), or it carries `CONTAINER_HOST_TAG`. A
    /// forgeable signal counts: it only chooses how the instance is fixed.
    pub fn container_host(&self, instance: &Observed) -> Option<String> {
        let tags = instance.tags.as_deref().unwrap_or_default();
        if let Some(key) = self.container_tag {
            if tags.iter().any(|(k, _)| k == key) {
                return Some(format!("tag {key}"));
            }
        }
        crate::launcher::recognise_all(&crate::launcher::Signals {
            tags,
            ..Default::default()
        })
        .into_iter()
        .find(|r| r.launcher.containers)
        .map(|r| r.label())
    }

    fn exemption(&self, instance: &Observed, principal: &Principal) -> Option<Exemption> {
        // A person's grant first: it is why the instance is as it is now.
        if let Some(g) = &instance.standing.grant {
            return Some(Exemption::BreakGlass(g.clone()));
        }
        if let Some(e) = self.marked_exemption(|k| instance.tag(k), instance.image_id.as_deref()) {
            return Some(e);
        }
        if let Some(glob) = self
            .exemptions
            .principals
            .iter()
            .find(|g| names(g, principal))
        {
            return Some(Exemption::Principal(glob.as_str().to_string()));
        }
        if let Some(glob) = &instance.standing.exemption {
            if self.honours_record(glob) {
                return Some(if instance.standing.unconfirmed {
                    Exemption::Unconfirmed(glob.clone())
                } else {
                    Exemption::Recorded(glob.clone())
                });
            }
        }
        None
    }
}

/// Whether `glob` names `principal`: a role glob is matched against the
/// role behind a session, never the session's own ARN (its last part is
/// the caller's to choose); a user glob against the user.
pub fn names(glob: &crate::glob::Glob, principal: &Principal) -> bool {
    let arn = match glob.names() {
        Names::Role => principal.role_arn.as_deref(),
        Names::User => principal.arn.as_deref(),
    };
    arn.is_some_and(|arn| glob.matches(arn))
}

/// The account's IMDS defaults for new launches, in one region, as
/// `GetInstanceMetadataDefaults` reports them (absent: no account default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccountDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens_enforced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i32>,
    /// `account`, or `declarative-policy` when the organization sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

impl AccountDefaults {
    /// New launches that do not ask otherwise get `HttpTokens=required`.
    pub fn requires_tokens(&self) -> bool {
        self.http_tokens.as_deref() == Some("required")
    }

    /// AWS's own switch, which refuses IMDSv1 launches outright.
    pub fn enforced(&self) -> bool {
        self.http_tokens_enforced.as_deref() == Some("enabled")
    }

    /// Whether setting the default is ours to do: a declarative policy
    /// owns it otherwise, and EC2 would refuse the change.
    pub fn settable(&self) -> bool {
        self.managed_by.as_deref() != Some("declarative-policy")
    }
}

/// Why the guard does not set the account default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// `SET_ACCOUNT_DEFAULT` is off.
    SettingOff,
    /// Only enforce mode writes it.
    Mode(crate::config::Mode),
    /// A declarative policy of the organization owns the defaults.
    DeclarativePolicy,
}

/// Why the account default may not be set to `HttpTokens=required` now, or
/// `None` when it may: only with `SET_ACCOUNT_DEFAULT`, only in enforce mode,
/// and not where a declarative policy owns the defaults.
pub fn why_not_set_default(cfg: &Config, defaults: Option<&AccountDefaults>) -> Option<NotOurs> {
    if !cfg.set_account_default {
        Some(NotOurs::SettingOff)
    } else if cfg.mode != crate::config::Mode::Enforce {
        Some(NotOurs::Mode(cfg.mode))
    } else if defaults.is_some_and(|d| !d.settable()) {
        Some(NotOurs::DeclarativePolicy)
    } else {
        None
    }
}

impl DefaultsChange {
    /// How the change weakens the account's protection, in words; empty
    /// when it does not. `no-preference` clears the default, so launches
    /// fall back to the AMI, which usually means `optional`.
    pub fn weakenings(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.http_tokens.as_deref() {
            Some("optional") => {
                out.push("account default HttpTokens set to optional: new launches get IMDSv1 unless they ask for tokens".to_string())
            }
            Some("no-preference") => out.push(
                "account default HttpTokens cleared (no-preference): new launches fall back to the AMI's setting, usually optional".to_string(),
            ),
            _ => {}
        }
        match self.http_tokens_enforced.as_deref() {
            Some("disabled") => out.push(
                "HttpTokensEnforced turned off: IMDSv1 launches are accepted again".to_string(),
            ),
            // Clearing the switch turns it off as surely as `disabled`.
            Some("no-preference") => out.push(
                "HttpTokensEnforced cleared (no-preference): enforcement is off, IMDSv1 launches are accepted again".to_string(),
            ),
            _ => {}
        }
        out
    }

    /// The change weakened the tokens default itself (what
    /// `SET_ACCOUNT_DEFAULT` puts back; never the enforcement switch).
    pub fn weakens_tokens(&self) -> bool {
        matches!(
            self.http_tokens.as_deref(),
            Some("optional" | "no-preference")
        )
    }
}

/// What a region's sweep found, as the readiness check needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepFacts {
    /// Every page was listed and every instance ended in an outcome.
    pub complete: bool,
    /// Instances left at `optional` (flagged, held back, failed).
    pub noncompliant_left: u64,
    /// Instances left at `optional` because an exemption applies.
    pub exempt: u64,
    /// EC2 managed instances left at `optional` by the service that
    /// operates them (not among `exempt`).
    pub managed: u64,
    /// Of those left at `optional`, the ones that answered IMDSv1 calls in
    /// the lookback (only known when the metric check is on).
    pub v1_in_use: u64,
    /// Instances the guard switched to `required` that have refused IMDSv1
    /// calls since (`MetadataNoTokenRejected`): workloads enforcing broke.
    pub refusing: u64,
    pub defaults: Option<AccountDefaults>,
    /// Sources that would launch at `optional` (or could not be read): each
    /// named. Under `HttpTokensEnforced` their launches would fail.
    pub sources_optional: Vec<String>,
    /// Whether the region's sources were read at all.
    pub sources_read: bool,
}

/// Whether a region may switch on `HttpTokensEnforced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ReadinessVerdict {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
    #[serde(rename = "already enforced")]
    AlreadyEnforced,
    #[serde(rename = "unknown")]
    Unknown,
}

impl ReadinessVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadinessVerdict::Ready => "ready",
            ReadinessVerdict::NotReady => "not ready",
            ReadinessVerdict::AlreadyEnforced => "already enforced",
            ReadinessVerdict::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ReadinessVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Is the region ready for AWS's `HttpTokensEnforced`?
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub verdict: ReadinessVerdict,
    /// What stands in the way, or what was not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Not known yet: the sweep has not judged the region.
    pub fn unknown() -> Self {
        Readiness {
            verdict: ReadinessVerdict::Unknown,
            reasons: Vec::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.verdict == ReadinessVerdict::Ready
    }

    /// Nothing stands in the way of AWS's switch: ready, or already on.
    pub fn needs_nothing(&self) -> bool {
        matches!(
            self.verdict,
            ReadinessVerdict::Ready | ReadinessVerdict::AlreadyEnforced
        )
    }
}

/// Readiness for `HttpTokensEnforced`, AWS's last step of the migration:
/// nothing may still need IMDSv1, or turning it on breaks it. Switching it
/// on stays a person's decision; this only says whether it is safe.
pub fn readiness(f: &SweepFacts) -> Readiness {
    if f.defaults.as_ref().is_some_and(AccountDefaults::enforced)
        && f.noncompliant_left == 0
        && f.refusing == 0
        && f.sources_optional.is_empty()
    {
        return Readiness {
            verdict: ReadinessVerdict::AlreadyEnforced,
            reasons: Vec::new(),
        };
    }
    let mut reasons = Vec::new();
    if f.noncompliant_left > 0 {
        reasons.push(format!(
            "{} instance(s) still at HttpTokens=optional",
            f.noncompliant_left
        ));
    }
    if f.exempt > 0 {
        reasons.push(format!(
            "{} exempt instance(s) still at HttpTokens=optional (enforcement has no exemptions)",
            f.exempt
        ));
    }
    if f.managed > 0 {
        reasons.push(format!(
            "{} managed instance(s) at HttpTokens=optional, set so by the service that operates each: change it in that service first (AWS does not document how HttpTokensEnforced treats a managed instance's launch)",
            f.managed
        ));
    }
    if f.refusing > 0 {
        // First: these are workloads broken now, not work left to do.
        reasons.insert(
            0,
            format!(
                "{} instance(s) switched to HttpTokens=required refuse IMDSv1 calls since (MetadataNoTokenRejected): fix those workloads first",
                f.refusing
            ),
        );
    }
    if f.v1_in_use > 0 {
        reasons.push(format!(
            "{} of them answered IMDSv1 calls recently (MetadataNoToken)",
            f.v1_in_use
        ));
    }
    if !f.sources_optional.is_empty() {
        const SHOWN: usize = 5;
        let more = f.sources_optional.len().saturating_sub(SHOWN);
        reasons.push(format!(
            "{} source(s) would launch at HttpTokens=optional, and under HttpTokensEnforced those launches fail: {}{}",
            f.sources_optional.len(),
            f.sources_optional[..f.sources_optional.len().min(SHOWN)].join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    match &f.defaults {
        Some(d) if !d.requires_tokens() => reasons.push(format!(
            "account default HttpTokens is {}: set it to required first",
            d.http_tokens.as_deref().unwrap_or("unset")
        )),
        _ => {}
    }
    if !reasons.is_empty() {
        return Readiness {
            verdict: ReadinessVerdict::NotReady,
            reasons,
        };
    }
    let mut unknown = Vec::new();
    if !f.complete {
        unknown.push("the sweep did not finish".to_string());
    }
    if f.defaults.is_none() {
        unknown.push("the account defaults could not be read".to_string());
    }
    if !f.sources_read {
        unknown.push("the launch templates and Auto Scaling groups could not be read".to_string());
    }
    if !unknown.is_empty() {
        return Readiness {
            verdict: ReadinessVerdict::Unknown,
            reasons: unknown,
        };
    }
    // No instance is left at `optional`, so none can still be using IMDSv1.
    Readiness {
        verdict: ReadinessVerdict::Ready,
        reasons: Vec::new(),
    }
}

/// Which instances a break-glass grant covers: a policy question, asked
/// of what the guard observed (a grant itself is a record, lower down).
impl Grant {
    /// Whether it covers `instance`: the instance itself, or the launch
    /// template it was launched from.
    pub fn covers(&self, instance: &Observed) -> bool {
        if self.is_template() {
            instance.tag(crate::break_glass::TEMPLATE_TAG) == Some(self.target.as_str())
        } else {
            instance.instance_id == self.target
        }
    }
}

/// The grant in force for `instance` at `now`: its own first, then its
/// launch template's; the one that lasts longest when there are several.
pub fn grant_in_force<'a>(grants: &'a [Grant], instance: &Observed, now: u64) -> Option<&'a Grant> {
    grants
        .iter()
        .filter(|g| g.state(now) == crate::break_glass::State::Active && g.covers(instance))
        .max_by_key(|g| (!g.is_template(), g.until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetadataOptions;
    use crate::glob::Glob;

    fn facts() -> SweepFacts {
        SweepFacts {
            complete: true,
            defaults: Some(AccountDefaults {
                http_tokens: Some("required".into()),
                ..AccountDefaults::default()
            }),
            sources_read: true,
            ..SweepFacts::default()
        }
    }

    #[test]
    fn a_region_is_ready_only_when_no_instance_or_source_asks_for_optional() {
        assert_eq!(readiness(&facts()).verdict, ReadinessVerdict::Ready);
        let mut f = facts();
        f.sources_optional = (1..=7)
            .map(|n| format!("Auto Scaling group g{n}"))
            .collect();
        let r = readiness(&f);
        assert_eq!(r.verdict, ReadinessVerdict::NotReady);
        assert!(
            r.reasons[0].starts_with("7 source(s) would launch at HttpTokens=optional"),
            "{r:?}"
        );
        assert!(
            r.reasons[0].contains("g1") && r.reasons[0].ends_with("and 2 more"),
            "{r:?}"
        );
        // Even with the switch on: a source that asks for optional has its
        // launches refused, which is not "already enforced".
        f.defaults.as_mut().unwrap().http_tokens_enforced = Some("enabled".into());
        assert_eq!(readiness(&f).verdict, ReadinessVerdict::NotReady);
        let mut f = facts();
        f.sources_read = false;
        assert_eq!(readiness(&f).verdict, ReadinessVerdict::Unknown);
        let mut f = facts();
        f.noncompliant_left = 1;
        assert_eq!(readiness(&f).verdict, ReadinessVerdict::NotReady);
    }

    #[test]
    fn managed_instances_at_optional_are_counted_apart_and_stand_in_the_way() {
        let mut f = facts();
        assert_eq!(readiness(&f).verdict, ReadinessVerdict::Ready);
        f.managed = 2;
        let r = readiness(&f);
        assert_eq!(r.verdict, ReadinessVerdict::NotReady);
        assert_eq!(r.reasons.len(), 1, "not among the exemptions: {r:?}");
        assert!(
            r.reasons[0].starts_with("2 managed instance(s) at HttpTokens=optional"),
            "{r:?}"
        );
    }

    fn inst(tokens: &str, endpoint: &str, hop: i32) -> Observed {
        Observed {
            instance_id: "i-0123456789abcdef0".into(),
            image_id: Some("ami-0123456789abcdef0".into()),
            state: Some("running".into()),
            options: MetadataOptions {
                http_tokens: Some(tokens.into()),
                http_endpoint: Some(endpoint.into()),
                http_put_response_hop_limit: Some(hop),
                http_protocol_ipv6: Some("disabled".into()),
                instance_metadata_tags: Some("enabled".into()),
            },
            tags: Some(vec![]),
            ..Observed::default()
        }
    }

    fn policy(ex: &Exemptions, max: Option<i32>) -> Policy<'_> {
        Policy {
            exemptions: ex,
            max_hop_limit: max,
            container_hop: max.map_or(2, |m| m.min(2)),
            container_tag: None,
            honour_migrated: false,
        }
    }

    #[test]
    fn required_or_disabled_is_compliant() {
        let ex = Exemptions::default();
        let p = policy(&ex, None);
        assert_eq!(
            p.decide(&inst("required", "enabled", 1), &Principal::default()),
            Verdict::Compliant
        );
        assert_eq!(
            p.decide(&inst("optional", "disabled", 1), &Principal::default()),
            Verdict::Compliant
        );
    }

    #[test]
    fn optional_tokens_get_a_remedy_that_keeps_everything_else() {
        let ex = Exemptions::default();
        let v = policy(&ex, None).decide(&inst("optional", "enabled", 3), &Principal::default());
        let Verdict::Noncompliant { findings, remedy } = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            findings,
            vec![Violation::TokensNotRequired {
                http_tokens: "optional".into()
            }]
        );
        assert_eq!(remedy.http_tokens, "required");
        assert_eq!(remedy.http_put_response_hop_limit, None, "kept: not sent");
        assert_eq!(remedy.to_string(), "set HttpTokens=required");
        assert_eq!(remedy.http_protocol_ipv6.as_deref(), Some("disabled"));
        assert_eq!(remedy.instance_metadata_tags.as_deref(), Some("enabled"));
    }

    #[test]
    fn hop_limit_is_lowered_only_above_the_maximum() {
        let ex = Exemptions::default();
        let p = policy(&ex, Some(2));
        let Verdict::Noncompliant { remedy, findings } =
            p.decide(&inst("optional", "enabled", 5), &Principal::default())
        else {
            panic!()
        };
        assert_eq!(remedy.http_put_response_hop_limit, Some(2));
        assert_eq!(
            remedy.to_string(),
            "set HttpTokens=required, HttpPutResponseHopLimit=2"
        );
        assert_eq!(findings.len(), 2);
        let Verdict::Noncompliant { remedy, .. } =
            p.decide(&inst("optional", "enabled", 1), &Principal::default())
        else {
            panic!()
        };
        assert_eq!(remedy.http_put_response_hop_limit, None, "never raised");
        // tokens fine, hop limit too high: still a finding
        let Verdict::Noncompliant { findings, .. } =
            p.decide(&inst("required", "enabled", 9), &Principal::default())
        else {
            panic!()
        };
        assert_eq!(
            findings,
            vec![Violation::HopLimitAboveMax { current: 9, max: 2 }]
        );
    }

    fn tagged(tokens: &str, hop: i32, tags: &[(&str, &str)]) -> Observed {
        let mut i = inst(tokens, "enabled", hop);
        i.tags = Some(
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        i
    }

    fn hop_sent(p: &Policy<'_>, i: &Observed) -> Option<i32> {
        match p.decide(i, &Principal::default()) {
            Verdict::Noncompliant { remedy, .. } => remedy.http_put_response_hop_limit,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_container_host_is_switched_with_a_second_hop_and_a_plain_instance_keeps_its_own() {
        let ex = Exemptions::default();
        let p = policy(&ex, None);
        // Karpenter's node at hop 1: required and hop 2, in one call.
        let node = tagged("optional", 1, &[("karpenter.sh/nodepool", "default")]);
        assert_eq!(hop_sent(&p, &node), Some(2));
        let Verdict::Noncompliant { remedy, .. } = p.decide(&node, &Principal::default()) else {
            panic!()
        };
        assert_eq!(
            remedy.to_string(),
            "set HttpTokens=required, HttpPutResponseHopLimit=2"
        );
        assert_eq!(p.container_host(&node).as_deref(), Some("Karpenter"));
        // Already at 2 or above: kept (never lowered to 2, never raised).
        assert_eq!(
            hop_sent(&p, &tagged("optional", 2, &[("eks:cluster-name", "c")])),
            None
        );
        assert_eq!(
            hop_sent(&p, &tagged("optional", 3, &[("eks:cluster-name", "c")])),
            None
        );
        // A plain instance, and one whose launcher runs no containers.
        assert_eq!(
            hop_sent(&p, &tagged("optional", 1, &[("team", "web")])),
            None
        );
        assert_eq!(
            hop_sent(
                &p,
                &tagged(
                    "optional",
                    1,
                    &[("aws:elasticmapreduce:job-flow-id", "j-1")]
                )
            ),
            None
        );
        // An unknown hop limit is not raised.
        let mut unknown = node.clone();
        unknown.options.http_put_response_hop_limit = None;
        assert_eq!(hop_sent(&p, &unknown), None);
        // The operator's own tag.
        let tag = Policy {
            container_tag: Some("platform:containers"),
            ..policy(&ex, None)
        };
        let own = tagged("optional", 1, &[("platform:containers", "yes")]);
        assert_eq!(hop_sent(&tag, &own), Some(2));
        assert_eq!(hop_sent(&p, &own), None, "without the setting, a plain tag");
        // CONTAINER_HOP_LIMIT=1 (or a ceiling of 1): nothing raised.
        let one = Policy {
            container_hop: 1,
            ..policy(&ex, None)
        };
        assert_eq!(hop_sent(&one, &node), None);
        assert_eq!(hop_sent(&policy(&ex, Some(1)), &node), None);
    }

    #[test]
    fn a_hardened_container_host_at_required_is_never_raised() {
        // Required at hop 1 with a hop limit above a ceiling elsewhere: only
        // ever lowered; and a required node at 1 is compliant, untouched.
        let ex = Exemptions::default();
        let p = policy(&ex, None);
        let node = tagged("required", 1, &[("karpenter.sh/nodepool", "default")]);
        assert_eq!(p.decide(&node, &Principal::default()), Verdict::Compliant);
        let p = policy(&ex, Some(2));
        let high = tagged("required", 5, &[("karpenter.sh/nodepool", "default")]);
        assert_eq!(hop_sent(&p, &high), Some(2), "lowered to the ceiling");
    }

    #[test]
    fn gone_and_unknown() {
        let ex = Exemptions::default();
        let p = policy(&ex, None);
        let mut i = inst("optional", "enabled", 1);
        i.state = Some("terminated".into());
        assert!(matches!(
            p.decide(&i, &Principal::default()),
            Verdict::Gone { .. }
        ));
        let mut i = inst("optional", "enabled", 1);
        i.options.http_tokens = None;
        assert_eq!(p.decide(&i, &Principal::default()), Verdict::Undecided);
        // An unknown hop limit matters only with a ceiling to compare it with.
        let mut i = inst("optional", "enabled", 1);
        i.options.http_put_response_hop_limit = None;
        assert!(matches!(
            p.decide(&i, &Principal::default()),
            Verdict::Noncompliant {
                remedy: Remedy {
                    http_put_response_hop_limit: None,
                    ..
                },
                ..
            }
        ));
        assert_eq!(
            policy(&ex, Some(2)).decide(&i, &Principal::default()),
            Verdict::Undecided
        );
    }

    #[test]
    fn each_exemption_kind_applies_and_names_itself() {
        let ex = Exemptions {
            tag_key: Some("imds-exempt".into()),
            principals: vec![Glob::new("arn:aws:iam::*:role/packer")],
            image_ids: vec!["ami-0123456789abcdef0".into()],
        };
        let p = policy(&ex, None);
        let mut tagged = inst("optional", "enabled", 1);
        tagged.image_id = None;
        tagged.tags = Some(vec![("imds-exempt".into(), "True".into())]);
        assert!(matches!(
            p.decide(&tagged, &Principal::default()),
            Verdict::Exempt {
                exemption: Exemption::Tag(_),
                ..
            }
        ));
        tagged.tags = Some(vec![("imds-exempt".into(), "false".into())]);
        assert!(matches!(
            p.decide(&tagged, &Principal::default()),
            Verdict::Noncompliant { .. }
        ));

        let by_image = inst("optional", "enabled", 1);
        assert!(matches!(
            p.decide(&by_image, &Principal::default()),
            Verdict::Exempt {
                exemption: Exemption::Image(_),
                ..
            }
        ));

        let mut by_role = inst("optional", "enabled", 1);
        by_role.image_id = None;
        let principal = Principal {
            arn: Some("arn:aws:sts::111122223333:assumed-role/packer/session".into()),
            role_arn: Some("arn:aws:iam::111122223333:role/packer".into()),
            ..Principal::default()
        };
        assert!(matches!(
            p.decide(&by_role, &principal),
            Verdict::Exempt {
                exemption: Exemption::Principal(_),
                ..
            }
        ));
        // a compliant instance is compliant, exempt or not
        assert_eq!(
            p.decide(&inst("required", "enabled", 1), &principal),
            Verdict::Compliant
        );

        // A principal exemption the guard recorded at launch (its memory)
        // holds for whoever looks later (a sweep knows no principal)...
        by_role.standing.exemption = Some("arn:aws:iam::*:role/packer".into());
        assert!(matches!(
            p.decide(&by_role, &Principal::default()),
            Verdict::Exempt {
                exemption: Exemption::Recorded(_),
                ..
            }
        ));
        // ...one a launch event claimed, unconfirmed by CloudTrail, too,
        // and it says so...
        let mut claimed = by_role.clone();
        claimed.standing.unconfirmed = true;
        let Verdict::Exempt { exemption, .. } = p.decide(&claimed, &Principal::default()) else {
            panic!()
        };
        assert!(matches!(exemption, Exemption::Unconfirmed(_)));
        assert!(exemption.to_string().contains("CloudTrail"), "{exemption}");
        // ...and a cosmetic edit of its glob keeps it honoured...
        by_role.standing.exemption = Some(" arn:aws:iam::*:role/packer ".into());
        assert!(matches!(
            p.decide(&by_role, &Principal::default()),
            Verdict::Exempt { .. }
        ));
        // ...but a glob no longer configured (another one still is) lets
        // the records it made lapse.
        let mut removed = by_role.clone();
        removed.standing.exemption = Some("arn:aws:iam::*:role/retired-*".into());
        assert!(matches!(
            p.decide(&removed, &Principal::default()),
            Verdict::Noncompliant { .. }
        ));
        assert!(!p.honours_record("arn:aws:iam::*:role/retired-*"));
        assert!(p.honours_record("arn:aws:iam::*:role/packer"));
        // A legacy status tag is never honoured, launched before any cutoff
        // or not: anyone who may tag could have written it after the
        // upgrade. What `migrate-exemptions` copied is, and only while
        // LEGACY_EXEMPT_BEFORE is set.
        let mut tagged = inst("optional", "enabled", 1);
        tagged.image_id = None;
        tagged.tags = Some(vec![("imds-guard:status".into(), "exempt".into())]);
        tagged.launch_time = Some(1);
        assert!(matches!(
            p.decide(&tagged, &Principal::default()),
            Verdict::Noncompliant { .. }
        ));
        let mut migrated = tagged.clone();
        migrated.standing.exemption = Some(format!(
            "imds-guard:status=exempt{}",
            crate::memory::MIGRATED
        ));
        assert!(matches!(
            p.decide(&migrated, &Principal::default()),
            Verdict::Noncompliant { .. }
        ));
        let with_flag = Policy {
            honour_migrated: true,
            ..p
        };
        assert!(matches!(
            with_flag.decide(&migrated, &Principal::default()),
            Verdict::Exempt {
                exemption: Exemption::Recorded(_),
                ..
            }
        ));
        // ...but only while principal exemptions are configured at all.
        let none = Exemptions::default();
        assert!(matches!(
            policy(&none, None).decide(&by_role, &Principal::default()),
            Verdict::Noncompliant { .. }
        ));
    }
}

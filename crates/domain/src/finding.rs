//! Security Hub findings (ASFF) for the instances the guard decides: one per
//! instance, with a stable id, so each later decision updates it. What a
//! finding says follows the guard's outcome:
//!
//! | outcome                               | `Compliance.Status` | `RecordState` |
//! |---------------------------------------|---------------------|---------------|
//! | flagged, held back, failed to change  | `FAILED`            | `ACTIVE`      |
//! | exempt                                | `WARNING`           | `ACTIVE`      |
//! | remediated, or compliant again        | `PASSED`            | `ARCHIVED`    |
//! | terminated (found by the sweep)       | unchanged           | `ARCHIVED`    |
//!
//! A launch compliant from the start makes no finding. After a finding
//! exists, `BatchImportFindings` cannot change its `Workflow` or `Note`, so
//! state moves only through `Compliance.Status` and `RecordState`, and
//! severity sits in `FindingProviderFields`, which only the provider writes.
//! Security Hub resolves only its own controls' findings: a custom `PASSED`
//! finding would stay `NEW` in the default view for up to 90 days, so a
//! passed finding is archived (the provider's `RecordState`, reversible:
//! a regression files it `FAILED` and `ACTIVE` again, and Security Hub sets
//! its workflow back to `NEW`). Its `UpdatedAt` is the decision's time to
//! the millisecond (`Place::stamp_ms`): Security Hub ignores an update that
//! is not newer.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{MetadataOptions, Trigger};
pub use crate::report::{ComplianceStatus, FindingsReport};
use crate::report::{InstanceReport, Outcome};
pub use crate::time::{iso8601, iso8601_ms};

pub mod theft;
use crate::validate::{clean, partition};

pub const SCHEMA_VERSION: &str = "2018-10-08";
/// Every finding the guard files carries this generator: how the sweep finds
/// its own among a region's findings.
pub const GENERATOR_ID: &str = "imds-guard/imdsv2-required";
/// `namespace/category/classifier`, the namespace one of ASFF's five.
pub const FINDING_TYPE: &str =
    "Software and Configuration Checks/AWS Security Best Practices/IMDSv2 Required";
pub const TITLE: &str = "EC2 instances should require IMDSv2 (HttpTokens=required)";
pub const PRODUCT_NAME: &str = "imds-guard";
/// `BatchImportFindings` takes at most this many findings a call.
pub const MAX_PER_CALL: usize = 100;
/// ASFF's limit on `Description`.
pub const MAX_DESCRIPTION: usize = 1024;
const DOCS_URL: &str =
    "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-existing-instances.html";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordState {
    Active,
    Archived,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "INFORMATIONAL",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }
}

/// What Security Hub should say of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub status: ComplianceStatus,
    pub severity: Severity,
    pub record: RecordState,
}

/// What a decision means for the instance's finding; `None`: no finding
/// (a launch compliant from the start, an instance not looked at, one whose
/// launcher is not known yet, an event from an account refused).
pub fn desired(r: &InstanceReport, trigger: Trigger) -> Option<Desired> {
    desired_of(&Facts::of(r), trigger)
}

fn desired_of(r: &Facts, trigger: Trigger) -> Option<Desired> {
    // An instance profile puts the role's credentials one IMDSv1 GET away.
    let exposed = if r.instance_profile.is_some() {
        Severity::High
    } else {
        Severity::Medium
    };
    let active = |status, severity| {
        Some(Desired {
            status,
            severity,
            record: RecordState::Active,
        })
    };
    match r.outcome {
        Outcome::Remediated => Some(PASSED),
        // Compliant again after a change of its options (a person fixed it):
        // any finding it has passes. A launch compliant from the start, or a
        // sweep's compliant instance, makes none (the sweep settles the
        // findings of instances it no longer lists, see `settle`).
        Outcome::Compliant if trigger == Trigger::MetadataChange => Some(PASSED),
        Outcome::Compliant => None,
        Outcome::Flagged if r.awaiting_launcher => None,
        Outcome::Flagged => active(ComplianceStatus::Failed, exposed),
        Outcome::Exempt => active(ComplianceStatus::Warning, Severity::Low),
        // Failed after it was seen noncompliant (the change was refused):
        // still noncompliant. Failed before it could be seen: unknown.
        Outcome::Failed if r.before.as_ref().is_some_and(allows_v1) => {
            active(ComplianceStatus::Failed, exposed)
        }
        Outcome::Failed | Outcome::Gone | Outcome::Refused => None,
    }
}

/// A passed finding: archived, out of the default view (Security Hub
/// resolves only its own controls' findings).
const PASSED: Desired = Desired {
    status: ComplianceStatus::Passed,
    severity: Severity::Informational,
    record: RecordState::Archived,
};

fn allows_v1(o: &MetadataOptions) -> bool {
    o.http_tokens.as_deref() != Some("required") && o.http_endpoint.as_deref() != Some("disabled")
}

/// Where an instance lives, and when its finding is written.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub account: &'a str,
    pub region: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
    /// When the decision was made, in milliseconds since the epoch: the
    /// finding's `UpdatedAt`. Security Hub ignores an update whose
    /// `UpdatedAt` is not newer than the one it holds, so the caller takes
    /// it from a clock that never repeats itself (`outputs::stamp_ms`); `0`
    /// means `now` itself.
    pub stamp_ms: u64,
}

/// The facts a decision's finding is made of, and nothing a reader would
/// take as the guard's own words: the outputs function rebuilds each
/// finding handed to it from these (`Filing`), so a message chooses no
/// finding's status, severity, title or types; the domain derives them, as
/// it does for a finding filed directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub instance_id: String,
    pub outcome: Outcome,
    /// Flagged while another event decides it (its launcher not known yet,
    /// or a `pending` try awaiting `running`): no finding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_launcher: bool,
    /// What was done, in the report's words.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MetadataOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_time: Option<u64>,
}

/// The longest word a handed-off fact may carry (longer is cut).
const MAX_FACT: usize = 256;

impl Facts {
    pub fn of(r: &InstanceReport) -> Facts {
        Facts {
            instance_id: r.instance_id.clone(),
            outcome: r.outcome,
            // (The name stays: the outputs function of an older version
            // reads it. It covers a `pending` try awaiting `running` too.)
            awaiting_launcher: r.action.idle.awaits_another_event(),
            action: r.action.to_string(),
            would: r.would.clone(),
            exemption: r.exemption.as_ref().map(ToString::to_string),
            error: r.error.clone(),
            before: r.before.clone(),
            image_id: r.image_id.clone(),
            instance_profile: r.instance_profile.clone(),
            launch_time: r.launch_time,
        }
    }

    /// The facts as a reader of a message may take them: ids that are
    /// ids, words cleaned and cut (`None`: not facts of one instance).
    fn cleaned(&self) -> Option<Facts> {
        let word = |w: &Option<String>| w.as_deref().map(|w| clean(w, MAX_FACT));
        crate::validate::is_instance_id(&self.instance_id).then(|| Facts {
            instance_id: self.instance_id.clone(),
            outcome: self.outcome,
            awaiting_launcher: self.awaiting_launcher,
            action: clean(&self.action, MAX_FACT),
            would: word(&self.would),
            exemption: word(&self.exemption),
            error: word(&self.error),
            before: self.before.clone(),
            image_id: self
                .image_id
                .clone()
                .filter(|i| crate::validate::is_image_id(i)),
            instance_profile: word(&self.instance_profile),
            launch_time: self.launch_time,
        })
    }
}

impl Finding {
    /// Its compliance status: `None` for a finding that is not a check's.
    pub fn status(&self) -> Option<ComplianceStatus> {
        self.compliance.as_ref().map(|c| c.status)
    }
}

/// What a finding is made from: a decision's facts, or a sweep's settling
/// of an instance it no longer decides. Findings cross the outputs queue as
/// these, never as ASFF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filing {
    Decided {
        mode: crate::config::Mode,
        trigger: Trigger,
        facts: Facts,
    },
    /// Terminated or no longer shown: archived, keeping its status.
    Gone {
        instance_id: String,
        status: ComplianceStatus,
    },
    /// Requires tokens now, changed by someone other than the guard.
    Passed {
        instance_id: String,
        options: MetadataOptions,
    },
    /// Its IMDSv1-delivered credentials used from elsewhere (`theft`).
    Theft {
        instance_id: String,
        suspect: crate::v1_callers::Suspect,
    },
}

impl Filing {
    pub fn instance_id(&self) -> &str {
        match self {
            Filing::Decided { facts, .. } => &facts.instance_id,
            Filing::Gone { instance_id, .. }
            | Filing::Passed { instance_id, .. }
            | Filing::Theft { instance_id, .. } => instance_id,
        }
    }
}

/// The finding a filing makes in `place`, built as the guard builds every
/// finding; `None` when it makes none, or when what it names is not an
/// instance (a reader of a message gets no finding it could not build).
pub fn rebuild(place: &Place<'_>, filing: &Filing) -> Option<Finding> {
    match filing {
        Filing::Decided {
            mode,
            trigger,
            facts,
        } => decided(place, *mode, *trigger, facts.cleaned()?),
        Filing::Gone {
            instance_id,
            status,
        } => crate::validate::is_instance_id(instance_id)
            .then(|| archived(place, instance_id, *status)),
        Filing::Passed {
            instance_id,
            options,
        } => crate::validate::is_instance_id(instance_id)
            .then(|| passed(place, instance_id, options)),
        Filing::Theft {
            instance_id,
            suspect,
        } => theft::finding(place, instance_id, suspect),
    }
}

/// The finding's id: stable for an instance, unique in its account and
/// region (the product ARN scopes it to the account).
pub fn finding_id(place: &Place<'_>, instance_id: &str) -> String {
    format!(
        "imds-guard/{}/{}/{instance_id}",
        place.account, place.region
    )
}

/// The instance a finding id names (the sweep reads its own findings back).
pub fn instance_of(finding_id: &str) -> Option<&str> {
    let mut parts = finding_id.split('/');
    let (Some("imds-guard"), Some(_account), Some(_region), Some(id), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    crate::validate::is_instance_id(id).then_some(id)
}

/// The product ARN of a customer's own findings in `account` and `region`:
/// Security Hub takes them only from that account.
pub fn product_arn(account: &str, region: &str) -> String {
    format!(
        "arn:{}:securityhub:{region}:{account}:product/{account}/default",
        partition(region)
    )
}

/// One finding, in ASFF: what `BatchImportFindings` receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Finding {
    pub schema_version: String,
    pub id: String,
    pub product_arn: String,
    pub product_name: String,
    pub company_name: String,
    pub generator_id: String,
    pub aws_account_id: String,
    pub region: String,
    pub types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_observed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_observed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub severity: SeverityField,
    pub finding_provider_fields: ProviderFields,
    pub title: String,
    pub description: String,
    pub remediation: Remediation,
    pub product_fields: BTreeMap<String, String>,
    pub resources: Vec<Resource>,
    /// Only for a control check's finding (ASFF): a theft finding has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    pub record_state: RecordState,
    /// What it was built from: what crosses the outputs queue in its place.
    #[serde(skip)]
    pub filing: MadeFrom,
}

/// What a finding was built from. Not part of what the finding says: two
/// findings that say the same are equal whatever each was made from.
#[derive(Clone, Debug, Default)]
pub struct MadeFrom(pub Option<Filing>);

impl PartialEq for MadeFrom {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SeverityField {
    pub label: Severity,
    /// The provider's own word for it (kept in `FindingProviderFields`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProviderFields {
    pub severity: SeverityField,
    pub types: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Remediation {
    pub recommendation: Recommendation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recommendation {
    pub text: String,
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Compliance {
    pub status: ComplianceStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub id: String,
    pub partition: String,
    pub region: String,
    pub details: ResourceDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceDetails {
    #[serde(rename = "AwsEc2Instance")]
    pub instance: InstanceDetails,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iam_instance_profile_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<InstanceMetadataOptions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceMetadataOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_protocol_ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_metadata_tags: Option<String>,
}

impl From<&MetadataOptions> for InstanceMetadataOptions {
    fn from(o: &MetadataOptions) -> Self {
        InstanceMetadataOptions {
            http_endpoint: o.http_endpoint.clone(),
            http_protocol_ipv6: o.http_protocol_ipv6.clone(),
            http_put_response_hop_limit: o.http_put_response_hop_limit,
            http_tokens: o.http_tokens.clone(),
            instance_metadata_tags: o.instance_metadata_tags.clone(),
        }
    }
}

/// The finding for a decision, when it makes one.
pub fn for_report(
    place: &Place<'_>,
    mode: crate::config::Mode,
    r: &InstanceReport,
    trigger: Trigger,
) -> Option<Finding> {
    decided(place, mode, trigger, Facts::of(r))
}

fn decided(
    place: &Place<'_>,
    mode: crate::config::Mode,
    trigger: Trigger,
    r: Facts,
) -> Option<Finding> {
    let d = desired_of(&r, trigger)?;
    let description = describe(&r, mode, &d);
    let mut fields = BTreeMap::new();
    fields.insert("imds-guard/Mode".into(), mode.as_str().into());
    fields.insert("imds-guard/Outcome".into(), r.outcome.as_str().into());
    fields.insert("imds-guard/Action".into(), clean(&r.action, 256));
    if let Some(e) = &r.exemption {
        fields.insert("imds-guard/Exemption".into(), clean(e, 256));
    }
    let mut f = build(
        place,
        &r.instance_id,
        d,
        description,
        fields,
        InstanceDetails {
            image_id: r.image_id.clone(),
            iam_instance_profile_arn: r.instance_profile.clone(),
            launched_at: r.launch_time.map(iso8601),
            metadata_options: r.before.as_ref().map(|o| {
                let mut now = InstanceMetadataOptions::from(o);
                if r.outcome == Outcome::Remediated {
                    now.http_tokens = Some("required".into());
                }
                now
            }),
        },
        r.launch_time,
    );
    f.filing = MadeFrom(Some(Filing::Decided {
        mode,
        trigger,
        facts: r,
    }));
    Some(f)
}

/// Archives the finding of an instance that is gone, keeping its status.
pub fn archived(place: &Place<'_>, instance_id: &str, status: ComplianceStatus) -> Finding {
    let mut f = build(
        place,
        instance_id,
        Desired {
            status,
            severity: Severity::Informational,
            record: RecordState::Archived,
        },
        format!("{instance_id} is terminated or no longer shown by EC2: its finding is archived."),
        BTreeMap::from([("imds-guard/Outcome".into(), "gone".into())]),
        InstanceDetails::default(),
        None,
    );
    f.filing = MadeFrom(Some(Filing::Gone {
        instance_id: instance_id.into(),
        status,
    }));
    f
}

/// Passes the finding of an instance that now requires tokens, changed by
/// someone other than the guard (found by the sweep).
pub fn passed(place: &Place<'_>, instance_id: &str, options: &MetadataOptions) -> Finding {
    let mut f = build(
        place,
        instance_id,
        PASSED,
        format!("{instance_id} now requires IMDSv2 (HttpTokens=required, or the metadata endpoint is off)."),
        BTreeMap::from([("imds-guard/Outcome".into(), "compliant".into())]),
        InstanceDetails {
            metadata_options: Some(options.into()),
            ..InstanceDetails::default()
        },
        None,
    );
    f.filing = MadeFrom(Some(Filing::Passed {
        instance_id: instance_id.into(),
        options: options.clone(),
    }));
    f
}

fn build(
    place: &Place<'_>,
    instance_id: &str,
    d: Desired,
    description: String,
    product_fields: BTreeMap<String, String>,
    details: InstanceDetails,
    launched: Option<u64>,
) -> Finding {
    let now = iso8601_ms(place.stamp_ms.max(place.now.saturating_mul(1000)));
    let severity = SeverityField {
        label: d.severity,
        original: Some(d.severity.as_str().into()),
    };
    let partition = partition(place.region).to_string();
    Finding {
        schema_version: SCHEMA_VERSION.into(),
        id: finding_id(place, instance_id),
        product_arn: product_arn(place.account, place.region),
        product_name: PRODUCT_NAME.into(),
        company_name: PRODUCT_NAME.into(),
        generator_id: GENERATOR_ID.into(),
        aws_account_id: place.account.into(),
        region: place.region.into(),
        types: vec![FINDING_TYPE.into()],
        first_observed_at: launched.map(iso8601),
        last_observed_at: None,
        // As Security Hub asks of a provider that re-imports: the time of
        // this import (it keeps its own first-seen time).
        created_at: now.clone(),
        updated_at: now,
        severity: SeverityField {
            label: d.severity,
            original: None,
        },
        finding_provider_fields: ProviderFields {
            severity,
            types: vec![FINDING_TYPE.into()],
        },
        title: TITLE.into(),
        description: cut(&description, MAX_DESCRIPTION),
        remediation: Remediation {
            recommendation: Recommendation {
                text: "Set HttpTokens=required (aws ec2 modify-instance-metadata-options --instance-id <id> --http-tokens required), after checking the instance's software uses IMDSv2 (CloudWatch MetadataNoToken is 0).".into(),
                url: DOCS_URL.into(),
            },
        },
        product_fields,
        resources: vec![Resource {
            kind: "AwsEc2Instance".into(),
            id: format!(
                "arn:{partition}:ec2:{}:{}:instance/{instance_id}",
                place.region, place.account
            ),
            partition,
            region: place.region.into(),
            details: ResourceDetails { instance: details },
        }],
        compliance: Some(Compliance { status: d.status }),
        record_state: d.record,
        filing: MadeFrom(None),
    }
}

/// What the guard found and did, in a sentence or two.
fn describe(r: &Facts, mode: crate::config::Mode, d: &Desired) -> String {
    let id = &r.instance_id;
    let found = r
        .before
        .as_ref()
        .map(|o| {
            format!(
                "HttpTokens={}, HttpEndpoint={}",
                o.http_tokens.as_deref().unwrap_or("unknown"),
                o.http_endpoint.as_deref().unwrap_or("unknown")
            )
        })
        .unwrap_or_else(|| "its metadata options".into());
    let profile = if r.instance_profile.is_some() {
        " It has an instance profile: an SSRF that reaches IMDSv1 gets its role's credentials."
    } else {
        ""
    };
    let mut s = match (r.outcome, d.status) {
        (Outcome::Remediated, _) => format!(
            "imds-guard found {id} at {found} and set HttpTokens=required ({} mode).",
            mode.as_str()
        ),
        (Outcome::Compliant, _) => format!("{id} now requires IMDSv2 ({found})."),
        (Outcome::Exempt, _) => format!(
            "{id} allows IMDSv1 ({found}) and is exempt: {}.",
            r.exemption.as_deref().unwrap_or("exempt")
        ),
        (Outcome::Failed, _) => format!(
            "{id} allows IMDSv1 ({found}); imds-guard could not change it: {}.{profile}",
            r.error.as_deref().unwrap_or("unknown error")
        ),
        _ => format!(
            "{id} allows IMDSv1 ({found}); imds-guard left it as is: {} ({} mode).{profile}",
            r.action,
            mode.as_str()
        ),
    };
    if let Some(w) = &r.would {
        s.push_str(&format!(" Enforce would: {w}."));
    }
    s
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// One of the guard's active findings, as Security Hub holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub instance_id: String,
    pub status: ComplianceStatus,
}

/// The sweep's reconciliation of one account-region: which findings to
/// file (those whose status differs from what Security Hub holds), and
/// which instances with an active, unpassed finding the sweep did not
/// decide (to be looked at: gone → archived, compliant → passed).
#[derive(Debug, Default, PartialEq)]
pub struct Reconciled {
    pub file: Vec<Finding>,
    pub unchanged: u64,
    pub look_at: Vec<(String, ComplianceStatus)>,
}

/// Compares what the sweep decided with what Security Hub holds.
pub fn reconcile(
    active: &[Active],
    decided: Vec<Finding>,
    seen: &dyn Fn(&str) -> bool,
) -> Reconciled {
    let held: HashMap<&str, ComplianceStatus> = active
        .iter()
        .map(|a| (a.instance_id.as_str(), a.status))
        .collect();
    let mut out = Reconciled::default();
    for f in decided {
        let same = instance_of(&f.id)
            .and_then(|id| held.get(id))
            .is_some_and(|s| Some(*s) == f.status() && f.record_state == RecordState::Active);
        if same {
            out.unchanged += 1;
        } else {
            out.file.push(f);
        }
    }
    out.look_at = active
        .iter()
        .filter(|a| a.status != ComplianceStatus::Passed && !seen(&a.instance_id))
        .map(|a| (a.instance_id.clone(), a.status))
        .collect();
    out
}

/// The guard's memory of a finding it filed (`memory::Kind::Finding`).
pub fn record(memory_partition: &str, f: &Finding, now: u64) -> crate::memory::Record {
    let id = instance_of(&f.id).unwrap_or(&f.id);
    let mut r = crate::memory::Record::new(
        crate::memory::Kind::Finding,
        memory_partition,
        id,
        None,
        now,
        std::time::Duration::ZERO,
    );
    let status = match f.record_state {
        RecordState::Archived => "ARCHIVED",
        RecordState::Active => f.status().map_or("", ComplianceStatus::as_str),
    };
    r.data
        .insert(crate::memory::FINDING_STATUS.into(), status.into());
    r
}

/// The active findings the memory says the guard filed (archived ones need
/// nothing more).
pub fn held(records: &[crate::memory::Record]) -> Vec<Active> {
    records
        .iter()
        .filter(|r| r.is_kind(crate::memory::Kind::Finding))
        .filter_map(|r| {
            let status = ComplianceStatus::parse(r.data.get(crate::memory::FINDING_STATUS)?)?;
            crate::validate::is_instance_id(r.id()).then(|| Active {
                instance_id: r.id().to_string(),
                status,
            })
        })
        .collect()
}

/// Counted as Security Hub's finding says (the report's type is lower
/// down; what a finding is, is this module's).
impl FindingsReport {
    pub fn count(&mut self, f: &Finding) {
        // A passed finding is archived too; `archived` counts those of
        // instances that are gone.
        match f.status() {
            // Not a check: possible credential theft.
            None => self.theft += 1,
            Some(s) if f.record_state == RecordState::Archived && s != ComplianceStatus::Passed => {
                self.archived += 1
            }
            Some(s) => *self.filed.entry(s).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::policy::Exemption;
    use crate::report::{Action, Idle};
    use serde_json::Value;

    const PLACE: Place<'static> = Place {
        account: "111122223333",
        region: "eu-west-1",
        now: 1_795_000_000,
        stamp_ms: 0,
    };

    fn optional() -> MetadataOptions {
        MetadataOptions {
            http_tokens: Some("optional".into()),
            http_endpoint: Some("enabled".into()),
            http_put_response_hop_limit: Some(2),
            http_protocol_ipv6: Some("disabled".into()),
            instance_metadata_tags: Some("disabled".into()),
        }
    }

    fn report(outcome: Outcome, action: impl Into<Action>) -> InstanceReport {
        let mut r = InstanceReport::new("i-0123456789abcdef0", outcome, action);
        r.before = Some(optional());
        r.image_id = Some("ami-0c02fb55956c7d316".into());
        r.launch_time = Some(1_794_990_000);
        r
    }

    /// ASFF's required attributes and their limits, checked on the JSON
    /// Security Hub receives (the emulator checks almost none of them).
    fn check_asff(f: &Finding) {
        let v = serde_json::to_value(f).unwrap();
        for key in [
            "AwsAccountId",
            "CreatedAt",
            "Description",
            "GeneratorId",
            "Id",
            "ProductArn",
            "Resources",
            "SchemaVersion",
            "Severity",
            "Title",
            "Types",
            "UpdatedAt",
        ] {
            assert!(
                v.get(key).is_some(),
                "required attribute {key} missing: {v}"
            );
        }
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        assert_eq!(s("SchemaVersion"), "2018-10-08");
        assert_eq!(s("AwsAccountId").len(), 12);
        assert!(s("AwsAccountId").bytes().all(|b| b.is_ascii_digit()));
        assert!((1..=512).contains(&s("Id").len()));
        assert!((1..=512).contains(&s("GeneratorId").len()));
        assert!((1..=256).contains(&s("Title").len()));
        assert!(
            (1..=1024).contains(&s("Description").len()),
            "{}",
            s("Description")
        );
        // Own findings: the account's default product, in the finding's
        // account and region (Security Hub refuses any other account's).
        assert_eq!(
            s("ProductArn"),
            format!(
                "arn:aws:securityhub:{}:{}:product/{}/default",
                s("Region"),
                s("AwsAccountId"),
                s("AwsAccountId")
            )
        );
        let types = v["Types"].as_array().unwrap();
        assert!((1..=50).contains(&types.len()));
        for t in types {
            let parts: Vec<&str> = t.as_str().unwrap().split('/').collect();
            assert_eq!(parts.len(), 3, "{t}");
            assert!([
                "Software and Configuration Checks",
                "TTPs",
                "Effects",
                "Unusual Behaviors",
                "Sensitive Data Identifications"
            ]
            .contains(&parts[0]));
        }
        for k in ["CreatedAt", "UpdatedAt"] {
            let t = s(k);
            assert_eq!(t.len(), 24, "{t}");
            assert!(
                crate::validate::utc_seconds(&t).is_some(),
                "{k} {t} is not RFC 3339"
            );
        }
        assert!(s("CreatedAt") <= s("UpdatedAt"));
        let label = v["Severity"]["Label"].as_str().unwrap();
        assert!(["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"].contains(&label));
        assert_eq!(v["FindingProviderFields"]["Severity"]["Label"], label);
        let resources = v["Resources"].as_array().unwrap();
        assert!((1..=32).contains(&resources.len()));
        for r in resources {
            assert_eq!(r["Type"], "AwsEc2Instance");
            assert!(r["Id"].as_str().unwrap().starts_with("arn:aws:ec2:"));
            assert!(["aws", "aws-cn", "aws-us-gov"].contains(&r["Partition"].as_str().unwrap()));
            assert!(r["Region"].as_str().unwrap().len() <= 16);
        }
        assert!(["PASSED", "WARNING", "FAILED", "NOT_AVAILABLE"]
            .contains(&v["Compliance"]["Status"].as_str().unwrap()));
        assert!(["ACTIVE", "ARCHIVED"].contains(&v["RecordState"].as_str().unwrap()));
        // What an import cannot change once the finding exists is never sent.
        for k in ["Workflow", "Note", "UserDefinedFields", "VerificationState"] {
            assert!(v.get(k).is_none(), "{k} is set");
        }
        assert!(serde_json::to_vec(&v).unwrap().len() < 240 * 1024);
        let back: Finding = serde_json::from_value(v).unwrap();
        assert_eq!(&back, f);
    }

    #[test]
    fn every_finding_the_guard_files_is_valid_asff() {
        let mut exempt = report(Outcome::Exempt, Idle::Exempt);
        exempt.exemption = Some(Exemption::Tag("legacy-imds".into()));
        let mut failed = report(Outcome::Failed, Idle::None);
        failed.error = Some("UnauthorizedOperation: ".repeat(100));
        let mut profiled = report(Outcome::Flagged, Idle::None);
        profiled.instance_profile = Some("arn:aws:iam::111122223333:instance-profile/web".into());
        let cases = [
            report(Outcome::Remediated, Idle::None),
            report(Outcome::Flagged, Idle::None),
            profiled,
            exempt,
            failed,
        ];
        let mut n = 0;
        for mode in [Mode::Enforce, Mode::Notify, Mode::Audit] {
            for r in &cases {
                let f = for_report(&PLACE, mode, r, Trigger::Launch).expect("a finding");
                check_asff(&f);
                n += 1;
            }
        }
        check_asff(&archived(
            &PLACE,
            "i-0123456789abcdef0",
            ComplianceStatus::Failed,
        ));
        check_asff(&passed(&PLACE, "i-0123456789abcdef0", &optional()));
        assert_eq!(n, 15);
    }

    #[test]
    fn the_status_follows_the_decision_and_severity_the_exposure() {
        let status = |r: &InstanceReport, t| desired(r, t).map(|d| (d.status, d.severity));
        assert_eq!(
            status(&report(Outcome::Remediated, Idle::None), Trigger::Launch),
            Some((ComplianceStatus::Passed, Severity::Informational))
        );
        let flagged = report(Outcome::Flagged, Idle::None);
        assert_eq!(
            status(&flagged, Trigger::Launch),
            Some((ComplianceStatus::Failed, Severity::Medium))
        );
        let mut profiled = flagged.clone();
        profiled.instance_profile = Some("arn:aws:iam::111122223333:instance-profile/x".into());
        assert_eq!(
            status(&profiled, Trigger::Launch),
            Some((ComplianceStatus::Failed, Severity::High))
        );
        assert_eq!(
            status(&report(Outcome::Exempt, Idle::Exempt), Trigger::Launch),
            Some((ComplianceStatus::Warning, Severity::Low))
        );
        // A launch compliant from the start makes no finding; compliant
        // again after someone's change passes the one it has.
        let compliant = InstanceReport::new("i-0123456789abcdef0", Outcome::Compliant, Idle::None);
        assert_eq!(status(&compliant, Trigger::Launch), None);
        assert_eq!(status(&compliant, Trigger::StateChange), None);
        assert_eq!(
            status(&compliant, Trigger::MetadataChange),
            Some((ComplianceStatus::Passed, Severity::Informational))
        );
        // Not looked at, gone, refused, or waiting for its launcher: none.
        assert_eq!(
            status(
                &InstanceReport::failed("i-0123456789abcdef0", "throttled"),
                Trigger::Launch
            ),
            None
        );
        assert_eq!(
            status(
                &report(Outcome::Flagged, Idle::AwaitingLauncher),
                Trigger::StateChange
            ),
            None
        );
        assert_eq!(
            status(&report(Outcome::Gone, Idle::None), Trigger::Launch),
            None
        );
        // Refused a change after it was seen at optional: still failing.
        assert_eq!(
            status(&report(Outcome::Failed, Idle::None), Trigger::Launch),
            Some((ComplianceStatus::Failed, Severity::Medium))
        );
    }

    #[test]
    fn an_instances_finding_id_is_stable_and_read_back() {
        let a = for_report(
            &PLACE,
            Mode::Notify,
            &report(Outcome::Flagged, Idle::None),
            Trigger::Launch,
        )
        .unwrap();
        let later = Place {
            now: PLACE.now + 3600,
            ..PLACE
        };
        let b = for_report(
            &later,
            Mode::Enforce,
            &report(Outcome::Remediated, Idle::None),
            Trigger::Launch,
        )
        .unwrap();
        assert_eq!(a.id, b.id);
        assert!(a.updated_at < b.updated_at);
        assert_eq!(instance_of(&a.id), Some("i-0123456789abcdef0"));
        assert_eq!(instance_of("imds-guard/1/eu-west-1/not-an-instance"), None);
        assert_eq!(
            instance_of("other/111122223333/eu-west-1/i-0123456789abcdef0"),
            None
        );
        // Another account's instance of the same id is another finding.
        let other = Place {
            account: "444455556666",
            ..PLACE
        };
        assert_ne!(finding_id(&other, "i-0123456789abcdef0"), a.id);
    }

    #[test]
    fn the_memory_keeps_what_was_filed_and_forgets_archived_findings() {
        let flagged = for_report(
            &PLACE,
            Mode::Notify,
            &report(Outcome::Flagged, Idle::None),
            Trigger::Launch,
        )
        .unwrap();
        let gone = archived(&PLACE, "i-00000000000000009", ComplianceStatus::Failed);
        let partition = crate::memory::partition(PLACE.account, PLACE.region);
        let records = [
            record(&partition, &flagged, PLACE.now),
            record(&partition, &gone, PLACE.now),
        ];
        assert_eq!(records[0].id(), "i-0123456789abcdef0");
        assert!(records[0].live(PLACE.now + 29 * 86_400));
        assert!(
            !records[0].live(PLACE.now + 31 * 86_400),
            "lapses well before Security Hub deletes a finding not updated for 90 days"
        );
        assert_eq!(
            held(&records),
            [Active {
                instance_id: "i-0123456789abcdef0".into(),
                status: ComplianceStatus::Failed
            }]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_000_000), "2026-11-18T11:06:40.000Z");
        for t in [0, 951_782_400, 1_795_000_000, 4_102_444_799] {
            assert_eq!(crate::validate::utc_seconds(&iso8601(t)), Some(t));
        }
    }

    #[test]
    fn the_sweep_files_only_changes_and_looks_at_what_it_did_not_decide() {
        let f = |outcome, id: &str| {
            let mut r = report(outcome, Idle::None);
            r.instance_id = id.into();
            for_report(&PLACE, Mode::Notify, &r, Trigger::Launch).unwrap()
        };
        let active = [
            Active {
                instance_id: "i-00000000000000001".into(),
                status: ComplianceStatus::Failed,
            },
            Active {
                instance_id: "i-00000000000000002".into(),
                status: ComplianceStatus::Failed,
            },
            // Fixed by someone, or terminated: not listed any more.
            Active {
                instance_id: "i-00000000000000003".into(),
                status: ComplianceStatus::Failed,
            },
            Active {
                instance_id: "i-00000000000000004".into(),
                status: ComplianceStatus::Passed,
            },
        ];
        let decided = vec![
            f(Outcome::Flagged, "i-00000000000000001"),
            f(Outcome::Remediated, "i-00000000000000002"),
            f(Outcome::Flagged, "i-00000000000000005"),
        ];
        let seen = |id: &str| {
            [
                "i-00000000000000001",
                "i-00000000000000002",
                "i-00000000000000005",
            ]
            .contains(&id)
        };
        let r = reconcile(&active, decided, &seen);
        let filed: Vec<(&str, ComplianceStatus)> = r
            .file
            .iter()
            .map(|f| (instance_of(&f.id).unwrap(), f.status().unwrap()))
            .collect();
        assert_eq!(
            filed,
            [
                ("i-00000000000000002", ComplianceStatus::Passed),
                ("i-00000000000000005", ComplianceStatus::Failed)
            ]
        );
        assert_eq!(r.unchanged, 1);
        assert_eq!(
            r.look_at,
            [("i-00000000000000003".to_string(), ComplianceStatus::Failed)]
        );
        let v: Value = serde_json::to_value(&r.file[0]).unwrap();
        assert_eq!(v["Compliance"]["Status"], "PASSED");
    }
}

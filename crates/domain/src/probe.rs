//! The self-check: AWS, not our reading of its documentation, judges whether
//! each of the guard's writing roles can do its job and nothing more. Each
//! probe is one of the role's writes sent with `DryRun=true`, on an
//! instance the guard picks itself: EC2 evaluates the request with every
//! IAM condition, SCP and boundary, and answers `DryRunOperation` (it would
//! be allowed) or `UnauthorizedOperation` (refused), changing nothing.
//!
//! Pure: which probes, in which order, and what each answer means. The flow
//! (`self_check`) sends them; `imds-guard doctor` reads what they found.
//!
//! Safety, in the order the probes go:
//! - the first probe asks the instance for what it already has (a no-op if
//!   it were ever applied);
//! - then only what tightens (what the guard would do anyway);
//! - a probe that would loosen something if applied is sent only once an
//!   answer of `DryRunOperation` has shown that this endpoint honours
//!   `DryRun` here;
//! - any answer but `DryRunOperation` or `UnauthorizedOperation` (above all
//!   a success) means the probe was not a dry run: everything stops, and the
//!   run says "probe unsafe" and alarms. Throttling and an instance gone are
//!   warnings: not probed, never passed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Observed;

/// The role-session name the self-check assumes member roles with, so a
/// detection can tell its dry runs from a stolen role's.
pub const SESSION_NAME: &str = "imds-guard-self-check";
/// The tag key the "another tag is refused" probe asks for.
pub const OTHER_TAG_KEY: &str = "imds-guard-self-check";
/// How many instances a region's listing looks at to pick its targets.
pub const SAMPLE: i32 = 50;
/// A self-check result older than this is stale (the schedule is weekly).
pub const STALE_AFTER_SECS: u64 = 8 * 24 * 3600;

/// What a probe checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// `HttpTokens=required`: the fix. Allowed.
    FixAllowed,
    /// `HttpTokens=optional`. Refused.
    OptionalRefused,
    /// With a ceiling: lowering a hop limit above it to it. Allowed.
    HopLowerAllowed,
    /// A hop limit above the ceiling (2 without one). Refused.
    HopAboveCeilingRefused,
    /// A raised hop limit on an instance already at `required`. Refused.
    HopRaiseRefused,
    /// The metadata endpoint switched. Refused.
    EndpointRefused,
    /// The status tag. Allowed.
    StatusTagAllowed,
    /// Any other tag. Refused.
    OtherTagRefused,
    /// With SetAccountDefault: the account default set to `required`. Allowed.
    DefaultAllowed,
    /// With SetAccountDefault: the account default weakened. Refused.
    DefaultWeakenRefused,
    /// With SetAccountDefault: `HttpTokensEnforced` switched. Refused.
    EnforcedRefused,
}

impl Check {
    pub const ALL: [Check; 11] = [
        Check::FixAllowed,
        Check::OptionalRefused,
        Check::HopLowerAllowed,
        Check::HopAboveCeilingRefused,
        Check::HopRaiseRefused,
        Check::EndpointRefused,
        Check::StatusTagAllowed,
        Check::OtherTagRefused,
        Check::DefaultAllowed,
        Check::DefaultWeakenRefused,
        Check::EnforcedRefused,
    ];

    /// Whether AWS should allow it.
    pub fn allowed(self) -> bool {
        matches!(
            self,
            Check::FixAllowed
                | Check::HopLowerAllowed
                | Check::StatusTagAllowed
                | Check::DefaultAllowed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Check::FixAllowed => "fix-allowed",
            Check::OptionalRefused => "optional-refused",
            Check::HopLowerAllowed => "hop-lower-allowed",
            Check::HopAboveCeilingRefused => "hop-above-ceiling-refused",
            Check::HopRaiseRefused => "hop-raise-refused",
            Check::EndpointRefused => "endpoint-refused",
            Check::StatusTagAllowed => "status-tag-allowed",
            Check::OtherTagRefused => "other-tag-refused",
            Check::DefaultAllowed => "default-allowed",
            Check::DefaultWeakenRefused => "default-weaken-refused",
            Check::EnforcedRefused => "enforced-refused",
        }
    }

    pub fn parse(s: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// What it asks, as a person reads it.
    pub fn describe(self) -> &'static str {
        match self {
            Check::FixAllowed => "the fix, HttpTokens=required, is allowed",
            Check::OptionalRefused => "HttpTokens=optional is refused",
            Check::HopLowerAllowed => "lowering a hop limit to the ceiling is allowed",
            Check::HopAboveCeilingRefused => "a hop limit above the ceiling is refused",
            Check::HopRaiseRefused => "raising the hop limit of an instance at required is refused",
            Check::EndpointRefused => "switching the metadata endpoint is refused",
            Check::StatusTagAllowed => "the status tag is allowed",
            Check::OtherTagRefused => "any other tag is refused",
            Check::DefaultAllowed => "setting the account default to required is allowed",
            Check::DefaultWeakenRefused => "weakening the account default is refused",
            Check::EnforcedRefused => "switching HttpTokensEnforced is refused",
        }
    }

    /// What to do when AWS answered otherwise than expected.
    pub fn fix(self) -> &'static str {
        if self.allowed() {
            "AWS refused a write the guard needs: look for an SCP, permissions boundary or \
             session policy that denies it to the role (the CloudTrail record of the probe, \
             errorCode Client.UnauthorizedOperation, carries the encoded reason: aws sts \
             decode-authorization-message), and redeploy the stack if its policy was changed"
        } else {
            "least privilege is not in force: AWS allowed a write the stack means to deny. \
             The Deny rests on a condition key EC2 did not fill in this account (docs/threat-model.md, \
             \"What rests on AWS\"); add an SCP that denies it (imds-guard policy), and report it \
             to the project"
        }
    }
}

/// One write, as a probe sends it (always with `DryRun=true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "call")]
pub enum Request {
    /// `ModifyInstanceMetadataOptions` on `instance`.
    Modify {
        instance: String,
        tokens: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hop: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// `CreateTags` on `instance`.
    Tag {
        instance: String,
        key: String,
        value: String,
    },
    /// `ModifyInstanceMetadataDefaults` for the account and region.
    Defaults {
        tokens: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        enforced: Option<String>,
    },
}

/// How risky a probe would be if the endpoint ignored `DryRun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Changes nothing, or only tightens: may go first.
    Safe,
    /// Would loosen or write something: only after `DryRunOperation` was seen.
    AfterDryRunShown,
}

/// What AWS answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "answer", content = "detail")]
pub enum Answer {
    /// `DryRunOperation`: it would have been allowed.
    DryRun,
    /// `UnauthorizedOperation`: refused.
    Unauthorized,
    /// `RequestLimitExceeded` and the like.
    Throttled,
    /// The instance is gone (`InvalidInstanceID.NotFound`) or not in a
    /// state to be changed.
    Gone(String),
    /// A success: the request was carried out, not dry run.
    Applied,
    /// Any other error code.
    Other(String),
}

/// A check's status, as `doctor` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    /// Managed by a declarative policy: neither passed nor failed.
    Managed,
    /// Not probed, throttled, or not known.
    Warn,
    Fail,
    /// The probe was not a dry run.
    Unsafe,
}

impl Status {
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Managed | Status::Warn => "⚠",
            Status::Fail => "✗",
            Status::Unsafe => "✗!",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Managed => "managed",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unsafe => "unsafe",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub check: Check,
    pub status: Status,
    pub detail: String,
}

/// What an answer means for a check.
pub fn judge(check: Check, answer: &Answer) -> Outcome {
    let (status, detail) = match (answer, check.allowed()) {
        (Answer::DryRun, true) | (Answer::Unauthorized, false) => (
            Status::Pass,
            format!(
                "AWS answered {}",
                if check.allowed() {
                    "DryRunOperation"
                } else {
                    "UnauthorizedOperation"
                }
            ),
        ),
        (Answer::Unauthorized, true) => (
            Status::Fail,
            format!("AWS answered UnauthorizedOperation: {}", check.fix()),
        ),
        (Answer::DryRun, false) => (
            Status::Fail,
            format!("AWS answered DryRunOperation: {}", check.fix()),
        ),
        (Answer::Throttled, _) => (
            Status::Warn,
            "not probed: throttled (EC2's request limit); the next run tries again".into(),
        ),
        (Answer::Gone(code), _) => (
            Status::Warn,
            format!("not probed: the instance is gone or cannot be changed now ({code})"),
        ),
        (Answer::Applied, _) => (
            Status::Unsafe,
            "probe unsafe: the request succeeded, so it was not a dry run (an endpoint that \
             ignores DryRun, such as a local emulator); every probe stopped"
                .into(),
        ),
        (Answer::Other(code), _) => (
            Status::Unsafe,
            format!(
                "probe unsafe: AWS answered {code}, neither DryRunOperation nor \
                 UnauthorizedOperation, so the probe may not have been a dry run; every probe stopped"
            ),
        ),
    };
    Outcome {
        check,
        status,
        detail,
    }
}

/// An instance a probe can be sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub tokens: String,
    pub hop: i32,
    pub endpoint: String,
    /// Its status tag's value, if it has one.
    pub status: Option<String>,
}

impl Target {
    fn of(o: &Observed, status_key: &str) -> Option<Target> {
        // A managed instance's service may refuse a change its own way:
        // an answer from it would say nothing of the role's IAM.
        let managed = o.operator.as_ref().is_some_and(|op| op.managed);
        let live = !managed && matches!(o.state.as_deref(), Some("running" | "stopped"));
        Some(Target {
            instance_id: o.instance_id.clone(),
            tokens: o.options.http_tokens.clone()?,
            hop: o.options.http_put_response_hop_limit?,
            endpoint: o.options.http_endpoint.clone()?,
            status: o.tag(status_key).map(str::to_string),
        })
        .filter(|t| live && matches!(t.tokens.as_str(), "optional" | "required"))
    }
}

/// What the probes need of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    pub status_key: &'a str,
    /// `MAX_HOP_LIMIT`, when set.
    pub ceiling: Option<i32>,
    pub set_default: bool,
    /// The account default is managed by a declarative policy.
    pub defaults_managed: bool,
}

impl Settings<'_> {
    /// The highest hop limit the roles may send (the ceiling, else 2).
    fn most(&self) -> i32 {
        self.ceiling.unwrap_or(2)
    }
}

/// One probe to send, or a result already known without sending one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    Send {
        check: Check,
        request: Request,
        gate: Gate,
    },
    Known(Outcome),
}

fn not_probed(check: Check, why: &str) -> Planned {
    Planned::Known(Outcome {
        check,
        status: Status::Warn,
        detail: format!("not probed: {why}"),
    })
}

/// The probes for one account-region, in the order they are sent, from the
/// instances a listing showed (the guard's own pick: never from input).
pub fn plan(instances: &[Observed], s: &Settings<'_>) -> Vec<Planned> {
    let targets: Vec<Target> = instances
        .iter()
        .filter_map(|o| Target::of(o, s.status_key))
        .filter(|t| t.endpoint == "enabled")
        .collect();
    // An instance at required first: asking it for required again is the
    // one request that is both allowed and a no-op.
    let main = targets
        .iter()
        .find(|t| t.tokens == "required")
        .or_else(|| targets.first());
    // For the raise: an instance at required whose hop limit can go up
    // within what the roles may send.
    let raise = targets
        .iter()
        .find(|t| t.tokens == "required" && t.hop < s.most());
    // With a ceiling, one above it: the lowering the guard makes.
    let above = s
        .ceiling
        .and_then(|c| targets.iter().find(|t| t.hop > c).map(|t| (t, c)));
    // Above the ceiling: the Deny covers instances within it (one already
    // above it only repeats its own value, which IAM cannot tell apart).
    let within = main
        .filter(|t| t.hop <= s.most())
        .or_else(|| targets.iter().find(|t| t.hop <= s.most()));
    let modify =
        |t: &Target, tokens: &str, hop: Option<i32>, endpoint: Option<&str>| Request::Modify {
            instance: t.instance_id.clone(),
            tokens: tokens.into(),
            hop,
            endpoint: endpoint.map(str::to_string),
        };
    let mut steps = Vec::new();
    match main {
        None => {
            let why = "no running or stopped instance with the metadata endpoint on in this region";
            for c in [
                Check::FixAllowed,
                Check::OptionalRefused,
                Check::HopAboveCeilingRefused,
                Check::HopRaiseRefused,
                Check::EndpointRefused,
                Check::StatusTagAllowed,
                Check::OtherTagRefused,
            ] {
                steps.push(not_probed(c, why));
            }
        }
        Some(t) => {
            let send = |check, request, gate| Planned::Send {
                check,
                request,
                gate,
            };
            // First: what the instance already has (a no-op either way).
            let (first, second) = if t.tokens == "required" {
                (Check::FixAllowed, Check::OptionalRefused)
            } else {
                (Check::OptionalRefused, Check::FixAllowed)
            };
            steps.push(send(first, modify(t, &t.tokens, None, None), Gate::Safe));
            let second_gate = if second == Check::FixAllowed {
                Gate::Safe // tightening: the guard's own fix
            } else {
                Gate::AfterDryRunShown
            };
            let other = if second == Check::FixAllowed {
                "required"
            } else {
                "optional"
            };
            steps.push(send(second, modify(t, other, None, None), second_gate));
            // Only where there is something to lower (nothing is at stake
            // elsewhere): a tightening, like the fix.
            if let Some((a, c)) = above {
                steps.push(send(
                    Check::HopLowerAllowed,
                    modify(a, "required", Some(c), None),
                    Gate::Safe,
                ));
            }
            match within {
                Some(w) => steps.push(send(
                    Check::HopAboveCeilingRefused,
                    modify(w, "required", Some(s.most() + 1), None),
                    Gate::AfterDryRunShown,
                )),
                None => steps.push(not_probed(
                    Check::HopAboveCeilingRefused,
                    &format!("needs an instance with a hop limit of at most {}", s.most()),
                )),
            }
            match raise {
                Some(r) => steps.push(send(
                    Check::HopRaiseRefused,
                    modify(r, "required", Some(s.most()), None),
                    Gate::AfterDryRunShown,
                )),
                None => steps.push(not_probed(
                    Check::HopRaiseRefused,
                    &format!(
                        "needs an instance at HttpTokens=required with a hop limit below {}",
                        s.most()
                    ),
                )),
            }
            steps.push(send(
                Check::EndpointRefused,
                modify(t, "required", None, Some("disabled")),
                Gate::AfterDryRunShown,
            ));
            steps.push(send(
                Check::StatusTagAllowed,
                Request::Tag {
                    instance: t.instance_id.clone(),
                    key: s.status_key.into(),
                    // Its own value where it has one: a no-op if applied.
                    value: t.status.clone().unwrap_or_else(|| "self-check".into()),
                },
                if t.status.is_some() {
                    Gate::Safe
                } else {
                    Gate::AfterDryRunShown
                },
            ));
            steps.push(send(
                Check::OtherTagRefused,
                Request::Tag {
                    instance: t.instance_id.clone(),
                    key: OTHER_TAG_KEY.into(),
                    value: "probe".into(),
                },
                Gate::AfterDryRunShown,
            ));
        }
    }
    if s.set_default {
        let defaults = [
            (
                Check::DefaultAllowed,
                Request::Defaults {
                    tokens: "required".into(),
                    enforced: None,
                },
                Gate::Safe,
            ),
            (
                Check::DefaultWeakenRefused,
                Request::Defaults {
                    tokens: "no-preference".into(),
                    enforced: None,
                },
                Gate::AfterDryRunShown,
            ),
            (
                Check::EnforcedRefused,
                Request::Defaults {
                    tokens: "required".into(),
                    enforced: Some("disabled".into()),
                },
                Gate::AfterDryRunShown,
            ),
        ];
        for (check, request, gate) in defaults {
            if s.defaults_managed {
                steps.push(Planned::Known(Outcome {
                    check,
                    status: Status::Managed,
                    detail: "managed by a declarative policy: the account cannot change its \
                             defaults, and neither can the guard"
                        .into(),
                }));
            } else {
                steps.push(Planned::Send {
                    check,
                    request,
                    gate,
                });
            }
        }
    }
    steps
}

/// Runs `plan`'s steps through `send`, in order, keeping to the gates:
/// a loosening probe only after `DryRunOperation` was seen, nothing more
/// after an unsafe answer, and nothing more in this account-region after
/// throttling. Returns the outcomes and whether an unsafe answer stopped it.
pub async fn run<F, Fut>(steps: Vec<Planned>, mut send: F) -> (Vec<Outcome>, bool)
where
    F: FnMut(Request) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut out = Vec::new();
    let mut dry_run_shown = false;
    let mut stop: Option<String> = None;
    for step in steps {
        match step {
            Planned::Known(o) => out.push(o),
            Planned::Send { check, .. } if stop.is_some() => out.push(Outcome {
                check,
                status: Status::Warn,
                detail: format!("not probed: {}", stop.as_deref().unwrap_or_default()),
            }),
            Planned::Send {
                check,
                gate: Gate::AfterDryRunShown,
                ..
            } if !dry_run_shown => out.push(Outcome {
                check,
                status: Status::Warn,
                detail: "not probed: no answer here has shown yet that AWS honours DryRun, and \
                         this probe would loosen or write something if it did not"
                    .into(),
            }),
            Planned::Send { check, request, .. } => {
                let answer = send(request).await;
                dry_run_shown |= answer == Answer::DryRun;
                let o = judge(check, &answer);
                match o.status {
                    Status::Unsafe => {
                        out.push(o);
                        return (out, true);
                    }
                    Status::Warn if answer == Answer::Throttled => {
                        stop = Some("an earlier probe was throttled".into());
                    }
                    _ => {}
                }
                out.push(o);
            }
        }
    }
    (out, false)
}

/// The self-check's result in one account-region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionCheck {
    pub account: String,
    pub region: String,
    /// Whose credentials the probes used (the function's role, or the
    /// member role's ARN).
    pub role: String,
    /// When, in seconds since the epoch.
    pub at: u64,
    /// What started it (`deploy`, `schedule`, a person's `invoke`).
    pub trigger: String,
    /// Could not run at all (the member role refused, a listing failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub outcomes: Vec<Outcome>,
}

impl RegionCheck {
    /// The worst status in it (an error is a warning: nothing was shown).
    pub fn status(&self) -> Status {
        let worst = self.outcomes.iter().map(|o| o.status).max();
        match (&self.error, worst) {
            (Some(_), w) => w.unwrap_or(Status::Warn).max(Status::Warn),
            (None, Some(w)) => w,
            (None, None) => Status::Warn,
        }
    }

    pub fn count(&self, status: Status) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }
}

/// The memory record of an account-region's self-check
/// (`memory::Kind::SelfCheck`), its result as JSON.
pub fn record(partition: &str, c: &RegionCheck) -> crate::memory::Record {
    let mut r = crate::memory::Record::new(
        crate::memory::Kind::SelfCheck,
        partition,
        "latest",
        None,
        c.at,
        std::time::Duration::ZERO,
    );
    r.data
        .insert(RESULT.into(), serde_json::to_string(c).unwrap_or_default());
    r
}

const RESULT: &str = "result";

/// A self-check result read back from the memory.
pub fn from_record(r: &crate::memory::Record) -> Option<RegionCheck> {
    if !r.is_kind(crate::memory::Kind::SelfCheck) {
        return None;
    }
    serde_json::from_str(r.data.get(RESULT)?).ok()
}

/// A run's summary: how many account-regions ended in each status.
pub fn summary(checks: &[RegionCheck]) -> BTreeMap<Status, usize> {
    let mut by = BTreeMap::new();
    for c in checks {
        *by.entry(c.status()).or_default() += 1;
    }
    by
}

/// The message a self-check run sends when something is wrong (`None`:
/// every account-region passed or could only warn, and the run was not a
/// deploy's, whose result is always told).
pub fn notification(
    checks: &[RegionCheck],
    told_always: bool,
) -> Option<crate::notify::Notification> {
    let failing: Vec<&RegionCheck> = checks
        .iter()
        .filter(|c| c.status() >= Status::Fail)
        .collect();
    if failing.is_empty() && !told_always {
        return None;
    }
    let unsafe_ = checks.iter().any(|c| c.status() == Status::Unsafe);
    let subject = if unsafe_ {
        "imds-guard self-check: a probe was not a dry run (probe unsafe)".to_string()
    } else if failing.is_empty() {
        format!(
            "imds-guard self-check: {} account-region(s) checked, nothing failed",
            checks.len()
        )
    } else {
        format!(
            "imds-guard self-check: {} of {} account-region(s) failed",
            failing.len(),
            checks.len()
        )
    };
    let mut body = String::new();
    body.push_str(&format!("{subject}\n\n"));
    let mut shown: Vec<&RegionCheck> = checks.iter().collect();
    shown.sort_by_key(|c| std::cmp::Reverse(c.status()));
    for c in shown {
        body.push_str(&format!(
            "{} {} {} (as {})\n",
            c.status().symbol(),
            c.account,
            c.region,
            c.role
        ));
        if let Some(e) = &c.error {
            body.push_str(&format!("    could not run: {e}\n"));
        }
        for o in c.outcomes.iter().filter(|o| o.status >= Status::Fail) {
            body.push_str(&format!(
                "    {} {}: {}\n",
                o.status.symbol(),
                o.check.describe(),
                o.detail
            ));
        }
    }
    body.push_str("\nimds-guard doctor shows every check, with the fix for each.\n");
    if body.len() > crate::notify::MAX_BODY {
        // Worst first above: what is cut is the least urgent.
        let tail = "\n… cut to fit one message; imds-guard doctor shows every account-region.\n";
        let mut end = crate::notify::MAX_BODY - tail.len();
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        let end = body[..end].rfind('\n').unwrap_or(end);
        body.truncate(end);
        body.push_str(tail);
    }
    Some(crate::notify::Notification {
        subject: crate::notify::subject(&subject),
        body,
        outcomes: vec!["self-check".into()],
        attributes: vec![("kind".into(), "self-check".into())],
    })
}

/// The EMF documents of a run: `SelfCheckFailures` (account-regions failed
/// or unsafe) and `SelfCheckUnsafe`, no dimension, which the stack's alarm
/// watches. Nothing when metrics are off.
pub fn metrics(
    m: Option<&crate::config::MetricsConfig>,
    checks: &[RegionCheck],
    now_ms: u64,
) -> Vec<String> {
    let Some(m) = m else {
        return Vec::new();
    };
    let failed = checks.iter().filter(|c| c.status() >= Status::Fail).count();
    let unsafe_ = checks
        .iter()
        .filter(|c| c.status() == Status::Unsafe)
        .count();
    vec![crate::metrics::document(
        m,
        now_ms,
        &[],
        &[],
        &[
            (crate::metrics::SELF_CHECK_FAILURES, failed as f64, "Count"),
            ("SelfCheckUnsafe", unsafe_ as f64, "Count"),
        ],
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetadataOptions;

    fn inst(id: &str, tokens: &str, hop: i32, endpoint: &str, state: &str) -> Observed {
        Observed {
            instance_id: id.into(),
            state: Some(state.into()),
            options: MetadataOptions {
                http_tokens: Some(tokens.into()),
                http_endpoint: Some(endpoint.into()),
                http_put_response_hop_limit: Some(hop),
                ..MetadataOptions::default()
            },
            tags: Some(vec![]),
            ..Observed::default()
        }
    }

    fn settings() -> Settings<'static> {
        Settings {
            status_key: "imds-guard:status",
            ceiling: None,
            set_default: false,
            defaults_managed: false,
        }
    }

    fn sends(steps: &[Planned]) -> Vec<(Check, Request, Gate)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Planned::Send {
                    check,
                    request,
                    gate,
                } => Some((*check, request.clone(), *gate)),
                Planned::Known(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_first_probe_asks_the_instance_for_what_it_has() {
        for tokens in ["required", "optional"] {
            let steps = plan(&[inst("i-1", tokens, 1, "enabled", "running")], &settings());
            let s = sends(&steps);
            let Request::Modify {
                tokens: asked,
                hop,
                endpoint,
                ..
            } = &s[0].1
            else {
                panic!("{s:?}")
            };
            assert_eq!((asked.as_str(), *hop, endpoint), (tokens, None, &None));
            assert_eq!(s[0].2, Gate::Safe);
            // Every probe that would loosen if applied waits for a dry run
            // to be shown.
            for (check, request, gate) in &s {
                let loosens = match request {
                    Request::Modify {
                        tokens: t,
                        hop,
                        endpoint,
                        ..
                    } => {
                        (t == "optional" && tokens == "required")
                            || hop.is_some()
                            || endpoint.is_some()
                    }
                    Request::Tag { key, .. } => key == OTHER_TAG_KEY,
                    Request::Defaults { tokens, enforced } => {
                        tokens != "required" || enforced.is_some()
                    }
                };
                if loosens {
                    assert_eq!(*gate, Gate::AfterDryRunShown, "{check:?}");
                }
            }
        }
    }

    #[test]
    fn a_required_instance_is_preferred_and_the_raise_needs_room_under_the_ceiling() {
        let fleet = [
            inst("i-opt", "optional", 1, "enabled", "running"),
            inst("i-off", "required", 1, "disabled", "running"),
            inst("i-gone", "required", 1, "enabled", "terminated"),
            inst("i-req", "required", 2, "enabled", "stopped"),
            inst("i-low", "required", 1, "enabled", "running"),
        ];
        let s = sends(&plan(&fleet, &settings()));
        let target = |c: Check| match &s.iter().find(|(k, ..)| *k == c).unwrap().1 {
            Request::Modify { instance, hop, .. } => (instance.clone(), *hop),
            other => panic!("{other:?}"),
        };
        assert_eq!(target(Check::FixAllowed), ("i-req".into(), None));
        assert_eq!(target(Check::HopRaiseRefused), ("i-low".into(), Some(2)));
        assert_eq!(
            target(Check::HopAboveCeilingRefused),
            ("i-req".into(), Some(3))
        );
        // An instance already above the ceiling is not where the Deny
        // bites: another within it is probed, or none.
        let high = [inst("i-high", "required", 4, "enabled", "running")];
        let sh = plan(&high, &settings());
        assert!(sh.iter().any(|s| matches!(s, Planned::Known(o) if o.check == Check::HopAboveCeilingRefused && o.status == Status::Warn)));
        // With a ceiling of 5, the raise probe asks for the ceiling, the
        // above-ceiling one for 6; no instance is above it, so no lowering
        // is probed. With a ceiling of 1, the lowering is.
        let five = Settings {
            ceiling: Some(5),
            ..settings()
        };
        let s5 = sends(&plan(&fleet, &five));
        assert!(s5
            .iter()
            .any(|(c, r, _)| *c == Check::HopAboveCeilingRefused
                && matches!(r, Request::Modify { hop: Some(6), .. })));
        assert!(s5.iter().any(|(c, r, _)| *c == Check::HopRaiseRefused
            && matches!(r, Request::Modify { instance, hop: Some(5), .. } if instance == "i-req")));
        assert!(!s5.iter().any(|(c, ..)| *c == Check::HopLowerAllowed));
        let one = Settings {
            ceiling: Some(1),
            ..settings()
        };
        assert!(sends(&plan(&fleet, &one)).iter().any(|(c, r, g)| *c == Check::HopLowerAllowed
            && *g == Gate::Safe
            && matches!(r, Request::Modify { instance, hop: Some(1), tokens, .. } if instance == "i-req" && tokens == "required")));
        // No instance at all: every instance check is "not probed", never passed.
        let none = plan(&[], &settings());
        assert!(none
            .iter()
            .all(|s| matches!(s, Planned::Known(o) if o.status == Status::Warn)));
        assert_eq!(none.len(), 7);
    }

    #[test]
    fn each_answer_means_what_it_says() {
        assert_eq!(
            judge(Check::FixAllowed, &Answer::DryRun).status,
            Status::Pass
        );
        assert_eq!(
            judge(Check::FixAllowed, &Answer::Unauthorized).status,
            Status::Fail
        );
        assert_eq!(
            judge(Check::OptionalRefused, &Answer::Unauthorized).status,
            Status::Pass
        );
        let loose = judge(Check::OptionalRefused, &Answer::DryRun);
        assert_eq!(loose.status, Status::Fail);
        assert!(
            loose.detail.contains("least privilege is not in force"),
            "{loose:?}"
        );
        assert_eq!(
            judge(Check::EndpointRefused, &Answer::Throttled).status,
            Status::Warn
        );
        assert_eq!(
            judge(
                Check::FixAllowed,
                &Answer::Gone("InvalidInstanceID.NotFound".into())
            )
            .status,
            Status::Warn
        );
        assert_eq!(
            judge(Check::FixAllowed, &Answer::Applied).status,
            Status::Unsafe
        );
        assert_eq!(
            judge(
                Check::FixAllowed,
                &Answer::Other("InvalidParameterValue".into())
            )
            .status,
            Status::Unsafe
        );
    }

    fn run_with(steps: Vec<Planned>, answers: Vec<Answer>) -> (Vec<Outcome>, bool, Vec<Request>) {
        let sent = std::cell::RefCell::new(Vec::new());
        let answers = std::cell::RefCell::new(answers.into_iter());
        let (out, stopped) = futures_lite(run(steps, |r| {
            sent.borrow_mut().push(r);
            let a = answers
                .borrow_mut()
                .next()
                .expect("an answer for every probe sent");
            async move { a }
        }));
        (out, stopped, sent.into_inner())
    }

    /// A minimal executor: `run` never waits on anything but `send`.
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn a_success_stops_every_probe_and_no_loosening_probe_is_ever_sent_before_a_dry_run() {
        // An endpoint that applies what it is sent (the emulator): the
        // first probe, a no-op, comes back a success; nothing else is sent.
        let steps = plan(
            &[inst("i-1", "optional", 1, "enabled", "running")],
            &settings(),
        );
        let (out, stopped, sent) = run_with(steps, vec![Answer::Applied]);
        assert!(stopped);
        assert_eq!(sent.len(), 1);
        assert!(matches!(&sent[0], Request::Modify { tokens, .. } if tokens == "optional"));
        assert_eq!(out.last().unwrap().status, Status::Unsafe);
        // On an instance at optional, refused then allowed: the second
        // answer shows DryRun is honoured, and the rest go out.
        let steps = plan(
            &[inst("i-1", "optional", 1, "enabled", "running")],
            &settings(),
        );
        let n = sends(&steps).len();
        let mut answers = vec![Answer::Unauthorized, Answer::DryRun];
        answers.extend((2..n).map(|i| {
            if i == 4 {
                Answer::DryRun
            } else {
                Answer::Unauthorized
            }
        }));
        let (out, stopped, sent) = run_with(steps, answers);
        assert!(!stopped);
        assert_eq!(sent.len(), n);
        let by: BTreeMap<Check, Status> = out.iter().map(|o| (o.check, o.status)).collect();
        assert_eq!(by[&Check::FixAllowed], Status::Pass);
        assert_eq!(by[&Check::OptionalRefused], Status::Pass);
        // If the fix is refused on an optional instance, nothing shows DryRun
        // is honoured: the loosening probes are not sent.
        let steps = plan(
            &[inst("i-1", "optional", 1, "enabled", "running")],
            &settings(),
        );
        let (out, _, sent) = run_with(steps, vec![Answer::Unauthorized, Answer::Unauthorized]);
        assert_eq!(sent.len(), 2);
        let rest: Vec<&Outcome> = out
            .iter()
            .filter(|o| !matches!(o.check, Check::FixAllowed | Check::OptionalRefused))
            .collect();
        assert!(rest.iter().all(|o| o.status == Status::Warn), "{rest:?}");
        assert!(rest
            .iter()
            .any(|o| o.check == Check::EndpointRefused && o.detail.contains("honours DryRun")));
    }

    #[test]
    fn throttling_stops_the_region_without_passing_anything() {
        let steps = plan(
            &[inst("i-1", "required", 1, "enabled", "running")],
            &settings(),
        );
        let (out, stopped, sent) = run_with(steps, vec![Answer::DryRun, Answer::Throttled]);
        assert!(!stopped);
        assert_eq!(sent.len(), 2);
        assert_eq!(out.iter().filter(|o| o.status == Status::Pass).count(), 1);
        assert!(out[2..].iter().all(|o| o.status == Status::Warn));
    }

    #[test]
    fn defaults_managed_by_a_declarative_policy_are_neither_passed_nor_failed() {
        let s = Settings {
            set_default: true,
            defaults_managed: true,
            ..settings()
        };
        let steps = plan(&[], &s);
        let managed: Vec<&Planned> = steps
            .iter()
            .filter(|s| matches!(s, Planned::Known(o) if o.status == Status::Managed))
            .collect();
        assert_eq!(managed.len(), 3);
        let unmanaged = Settings {
            defaults_managed: false,
            ..s
        };
        let sent = sends(&plan(&[], &unmanaged));
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].0, Check::DefaultAllowed);
        assert_eq!(sent[0].2, Gate::Safe);
    }

    #[test]
    fn a_result_survives_the_memory_and_tells_what_failed() {
        let c = RegionCheck {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            role: "arn:aws:iam::111122223333:role/imds-guard-member".into(),
            at: 1_800_000_000,
            trigger: "schedule".into(),
            error: None,
            outcomes: vec![
                judge(Check::FixAllowed, &Answer::Unauthorized),
                judge(Check::OptionalRefused, &Answer::Unauthorized),
            ],
        };
        let r = record("111122223333#eu-west-1", &c);
        assert_eq!(from_record(&r), Some(c.clone()));
        assert_eq!(c.status(), Status::Fail);
        let n = notification(std::slice::from_ref(&c), false).unwrap();
        assert!(n.subject.contains("1 of 1"), "{}", n.subject);
        assert!(
            n.body.contains("the fix, HttpTokens=required, is allowed"),
            "{}",
            n.body
        );
        let ok = RegionCheck {
            outcomes: vec![judge(Check::FixAllowed, &Answer::DryRun)],
            ..c
        };
        assert!(notification(std::slice::from_ref(&ok), false).is_none());
        assert!(
            notification(&[ok], true).is_some(),
            "a deploy's result is always told"
        );
    }
}

//! `imds-guard doctor`: whether the guard will work in this account, said
//! check by check as ✓, ⚠ or ✗, with the fix for each ✗. Pure: what each
//! fact the command line read means. Two kinds of facts:
//!
//! - what AWS itself judged: the self-check's dry runs of each writing role
//!   (`probe`), read from the guard's memory (the person running `doctor`
//!   needs no write permission and no right to invoke the guard);
//! - what the person's own read permissions show: a trail logging write
//!   management events, the rules' matched and invoked counts, the queues of
//!   what could not be delivered, a confirmed subscription, Security Hub
//!   enabled where findings are on, the memory table's resource policy.
//!
//! Nothing is passed that was not seen: a check that could not be read is
//! ⚠ ("unknown"), never ✓.

use serde::Serialize;

use crate::probe::{self, RegionCheck, Status};

/// Which part of the guard a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// Where the command looked, and with what.
    Setup,
    /// The self-check: AWS's answers to the roles' dry runs.
    Permissions,
    /// Whether events reach the guard.
    Events,
    /// Whether what the guard says reaches people.
    Outputs,
    /// AWS's own prevention, as it binds the person running `doctor`
    /// (`doctor --prevention`: dry-run launches as them).
    Prevention,
}

impl Section {
    pub fn title(self) -> &'static str {
        match self {
            Section::Setup => "Setup",
            Section::Permissions => "What AWS allows the guard's roles (the self-check's dry runs)",
            Section::Events => "Events reach the guard",
            Section::Outputs => "What the guard says reaches people",
            Section::Prevention => "AWS's own prevention, as it binds you (dry-run launches)",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub section: Section,
    pub status: Status,
    pub check: String,
    /// The account and region (or resource) it is about.
    #[serde(rename = "where")]
    pub place: String,
    pub detail: String,
    /// What to do about a ✗ (and some ⚠).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Row {
    pub fn new(section: Section, status: Status, check: &str, place: &str, detail: String) -> Row {
        Row {
            section,
            status,
            check: check.to_string(),
            place: place.to_string(),
            detail,
            fix: None,
        }
    }

    pub fn fix(mut self, fix: &str) -> Row {
        self.fix = Some(fix.to_string());
        self
    }
}

/// 0 nothing to fix (warnings aside), 1 something to fix, 2 could not run.
pub fn exit_code(rows: &[Row], could_not_run: bool) -> u8 {
    if could_not_run {
        2
    } else if rows.iter().any(|r| r.status >= Status::Fail) {
        1
    } else {
        0
    }
}

// ------------------------------------------------------------ self-check

/// The rows of one account-region's self-check, as the memory holds it
/// (`None`: never run there).
pub fn self_check_rows(place: &str, found: Option<&RegionCheck>, now: u64) -> Vec<Row> {
    let Some(c) = found else {
        return vec![Row::new(
            Section::Permissions,
            Status::Warn,
            "self-check",
            place,
            "no result: the self-check has not run here yet (it runs on each deploy and on \
             SelfCheckSchedule), or this account-region is not one the guard covers"
                .into(),
        )
        .fix("run it now: aws lambda invoke --function-name <SelfCheckFunctionName> --payload \
              '{\"imds_guard_self_check\": \"invoke\"}' --cli-binary-format raw-in-base64-out out.json")];
    };
    let age = now.saturating_sub(c.at);
    let when = format!("{} ({}, as {})", ago(age), c.trigger, c.role);
    let mut rows = Vec::new();
    if age > probe::STALE_AFTER_SECS {
        rows.push(Row::new(
            Section::Permissions,
            Status::Warn,
            "self-check",
            place,
            format!("the last result is stale: {when}"),
        ));
    }
    if let Some(e) = &c.error {
        rows.push(
            Row::new(
                Section::Permissions,
                Status::Warn,
                "self-check",
                place,
                format!("could not run: {e} ({when})"),
            )
            .fix("see the self-check function's log; in central mode, is the member stack deployed there?"),
        );
    }
    for o in &c.outcomes {
        let mut row = Row::new(
            Section::Permissions,
            o.status,
            o.check.describe(),
            place,
            format!("{} ({when})", o.detail),
        );
        if o.status >= Status::Fail {
            row = row.fix(o.check.fix());
        }
        rows.push(row);
    }
    rows
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

// ----------------------------------------------------------------- trails

/// One field of an advanced event selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub field: String,
    pub equals: Vec<String>,
    pub not_equals: Vec<String>,
    pub starts_with: Vec<String>,
    pub not_starts_with: Vec<String>,
}

/// What a trail records, as its event selectors say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selectors {
    /// Basic selectors: (include management events, read/write type).
    Basic(Vec<(bool, String)>),
    /// Advanced selectors: each a list of field conditions (ANDed); the
    /// selectors ORed.
    Advanced(Vec<Vec<FieldSelector>>),
    /// The selectors could not be read (an organization trail seen from a
    /// member account, or no permission).
    Unknown(String),
}

/// Whether the selectors record the write management events of EC2 the
/// rules match (`RunInstances`, `ModifyInstanceMetadataOptions`, ...).
/// `None`: not known.
pub fn logs_ec2_management_writes(s: &Selectors) -> Option<bool> {
    match s {
        // A trail with no selector set logs all management events.
        Selectors::Basic(b) if b.is_empty() => Some(true),
        Selectors::Basic(b) => Some(
            b.iter()
                .any(|(mgmt, rw)| *mgmt && matches!(rw.as_str(), "All" | "WriteOnly")),
        ),
        Selectors::Advanced(sel) => Some(sel.iter().any(|fields| {
            let holds = |name: &str, value: &str| {
                fields.iter().filter(|f| f.field == name).all(|f| {
                    (f.equals.is_empty() || f.equals.iter().any(|v| v == value))
                        && !f.not_equals.iter().any(|v| v == value)
                        && (f.starts_with.is_empty()
                            || f.starts_with.iter().any(|p| value.starts_with(p.as_str())))
                        && !f
                            .not_starts_with
                            .iter()
                            .any(|p| value.starts_with(p.as_str()))
                })
            };
            holds("eventCategory", "Management")
                && fields.iter().any(|f| f.field == "eventCategory")
                && holds("readOnly", "false")
                && holds("eventSource", "ec2.amazonaws.com")
        })),
        Selectors::Unknown(_) => None,
    }
}

/// One trail as the region's `DescribeTrails` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trail {
    pub name: String,
    pub home_region: String,
    pub multi_region: bool,
    pub organization: bool,
    /// `None`: its status could not be read.
    pub logging: Option<bool>,
    pub selectors: Selectors,
}

/// Whether some trail delivers this region's EC2 write management events.
pub fn trail_row(place: &str, region: &str, trails: Result<&[Trail], &str>) -> Row {
    let check = "a trail logs write management events";
    let trails = match trails {
        Ok(t) => t,
        Err(e) => {
            return Row::new(
                Section::Events,
                Status::Warn,
                check,
                place,
                format!("unknown: the trails could not be read ({e})"),
            )
        }
    };
    let covering: Vec<&Trail> = trails
        .iter()
        .filter(|t| t.multi_region || t.home_region == region)
        .collect();
    if let Some(t) = covering
        .iter()
        .find(|t| t.logging == Some(true) && logs_ec2_management_writes(&t.selectors) == Some(true))
    {
        return Row::new(
            Section::Events,
            Status::Pass,
            check,
            place,
            format!(
                "{} ({}{}) is logging them",
                t.name,
                if t.multi_region {
                    "multi-region"
                } else {
                    "this region"
                },
                if t.organization {
                    ", the organization's"
                } else {
                    ""
                }
            ),
        );
    }
    let unknown: Vec<&str> = covering
        .iter()
        .filter(|t| t.logging.is_none() || logs_ec2_management_writes(&t.selectors).is_none())
        .filter(|t| t.logging != Some(false))
        .map(|t| t.name.as_str())
        .collect();
    if !unknown.is_empty() {
        return Row::new(
            Section::Events,
            Status::Warn,
            check,
            place,
            format!(
                "unknown: {} cannot be read from here (an organization trail seen from a member account?)",
                unknown.join(", ")
            ),
        );
    }
    let why = if covering.is_empty() {
        "no trail covers this region".to_string()
    } else {
        let names: Vec<&str> = covering.iter().map(|t| t.name.as_str()).collect();
        format!(
            "{} cover{} it, but none is logging write management events",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" }
        )
    };
    Row::new(Section::Events, Status::Fail, check, place, format!("{why}: CloudTrail's launches, changes and reverts never reach the rules (the state-change trigger and the sweep still run)"))
        .fix("create a multi-region trail that logs management events (aws cloudtrail create-trail --name imds-guard --s3-bucket-name <bucket> --is-multi-region-trail, then aws cloudtrail start-logging --name imds-guard), or ask the organization's administrators for an organization trail")
}

// ------------------------------------------------------------------ rules

/// A rule's activity over the days looked at (CloudWatch `AWS/Events`
/// sums; `None`: no data point at all).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleActivity {
    pub rule: String,
    pub matched: Option<f64>,
    pub invoked: Option<f64>,
    pub failed: Option<f64>,
    pub dead_letter_failed: Option<f64>,
}

pub fn rule_row(place: &str, a: &RuleActivity, days: u64) -> Row {
    let check = format!("{} delivers what it matches", a.rule);
    let n = |v: Option<f64>| v.unwrap_or(0.0) as u64;
    if n(a.failed) > 0 || n(a.dead_letter_failed) > 0 {
        return Row::new(
            Section::Events,
            Status::Fail,
            &check,
            place,
            format!(
                "in {days} days: matched {}, invoked {}, failed {}, lost {}",
                n(a.matched),
                n(a.invoked),
                n(a.failed),
                n(a.dead_letter_failed)
            ),
        )
        .fix("read the undelivered-events queue (aws sqs receive-message --queue-url <UndeliveredEventsQueueUrl>) and the function's errors, then run a sweep");
    }
    if n(a.matched) == 0 {
        return Row::new(
            Section::Events,
            Status::Warn,
            &check,
            place,
            format!("no event matched in {days} days: none happened, or none arrives (see the trail above)"),
        );
    }
    Row::new(
        Section::Events,
        Status::Pass,
        &check,
        place,
        format!(
            "in {days} days: matched {}, invoked {}",
            n(a.matched),
            n(a.invoked)
        ),
    )
}

/// A queue that should be empty: events not delivered, failed invocations.
pub fn queue_row(
    section: Section,
    what: &str,
    place: &str,
    messages: Result<u64, &str>,
    fix: &str,
) -> Row {
    let check = format!("{what} is empty");
    match messages {
        Ok(0) => Row::new(section, Status::Pass, &check, place, "0 messages".into()),
        Ok(n) => Row::new(
            section,
            Status::Fail,
            &check,
            place,
            format!("{n} message(s) waiting"),
        )
        .fix(fix),
        Err(e) => Row::new(
            section,
            Status::Warn,
            &check,
            place,
            format!("unknown: {e}"),
        ),
    }
}

// ---------------------------------------------------------------- outputs

/// The topic's subscriptions: confirmed, and pending confirmation.
pub fn subscription_row(topic: &str, subs: Result<(usize, usize), &str>) -> Row {
    let check = "someone receives the notifications";
    match subs {
        Ok((confirmed, _)) if confirmed > 0 => Row::new(
            Section::Outputs,
            Status::Pass,
            check,
            topic,
            format!("{confirmed} confirmed subscription(s)"),
        ),
        Ok((0, pending)) if pending > 0 => Row::new(
            Section::Outputs,
            Status::Fail,
            check,
            topic,
            format!("{pending} subscription(s) pending confirmation: nothing is delivered until confirmed"),
        )
        .fix("confirm the subscription from the e-mail AWS sent (\"AWS Notification - Subscription Confirmation\"), or subscribe again"),
        Ok(_) => Row::new(
            Section::Outputs,
            Status::Warn,
            check,
            topic,
            "no subscription: notifications and alarms reach no one".into(),
        )
        .fix("aws sns subscribe --topic-arn <TopicArn> --protocol email --notification-endpoint <address>"),
        Err(e) => Row::new(Section::Outputs, Status::Warn, check, topic, format!("unknown: {e}")),
    }
}

/// Security Hub, where findings are on (`Ok(false)`: not enabled).
pub fn hub_row(place: &str, enabled: Result<bool, &str>) -> Row {
    let check = "Security Hub takes the findings";
    match enabled {
        Ok(true) => Row::new(Section::Outputs, Status::Pass, check, place, "enabled".into()),
        Ok(false) => Row::new(
            Section::Outputs,
            Status::Fail,
            check,
            place,
            "Security Hub is not enabled here: the guard's findings are dropped with a warning".into(),
        )
        .fix("enable Security Hub in this account and region (aws securityhub enable-security-hub), or set SecurityHubFindings=false"),
        Err(e) => Row::new(Section::Outputs, Status::Warn, check, place, format!("unknown: {e}")),
    }
}

/// The sid of the memory table's resource policy statement that keeps
/// every writer but the guard out (template.yaml, MemoryTable).
pub const TABLE_POLICY_SID: &str = "OnlyTheGuardWrites";

/// The memory table's resource policy (`Ok(None)`: none).
pub fn table_policy_row(table: &str, policy: Result<Option<&str>, &str>) -> Row {
    let check = "only the guard writes its memory";
    match policy {
        Ok(Some(p)) if p.contains(TABLE_POLICY_SID) => Row::new(
            Section::Setup,
            Status::Pass,
            check,
            table,
            format!("the table's resource policy holds {TABLE_POLICY_SID}"),
        ),
        Ok(_) => Row::new(
            Section::Setup,
            Status::Fail,
            check,
            table,
            format!("the table's resource policy is missing or lacks {TABLE_POLICY_SID}: anyone allowed dynamodb:PutItem could write exemptions the guard honours"),
        )
        .fix("redeploy the stack (sam deploy) to restore the policy, and look in CloudTrail for who removed it (PutResourcePolicy, DeleteResourcePolicy)"),
        Err(e) => Row::new(Section::Setup, Status::Warn, check, table, format!("unknown: {e}")),
    }
}

// ------------------------------------------------------------- rendering

/// The table a person reads: by section, worst first within each, and a
/// last line that says what to do.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut sections: Vec<Section> = rows.iter().map(|r| r.section).collect();
    sections.sort();
    sections.dedup();
    for s in sections {
        out.push_str(&format!("{}\n", s.title()));
        let mut in_s: Vec<&Row> = rows.iter().filter(|r| r.section == s).collect();
        in_s.sort_by_key(|r| std::cmp::Reverse(r.status));
        for r in in_s {
            out.push_str(&format!(
                "  {:<2} {:<58} {}\n       {}\n",
                r.status.symbol(),
                r.check,
                r.place,
                r.detail
            ));
            if let Some(f) = &r.fix {
                out.push_str(&format!("       fix: {f}\n"));
            }
        }
        out.push('\n');
    }
    let count = |f: &dyn Fn(Status) -> bool| rows.iter().filter(|r| f(r.status)).count();
    out.push_str(&format!(
        "{} passed, {} to look at (⚠), {} to fix (✗)\n",
        count(&|s| s == Status::Pass),
        count(&|s| matches!(s, Status::Warn | Status::Managed)),
        count(&|s| s >= Status::Fail),
    ));
    out
}

// ------------------------------------------------- the operator's policy

/// Every call `doctor` makes, with the resource it names: the operator's
/// read-only policy (`doctor --print-policy`). A test keeps this list and
/// the calls the command makes equal.
pub const OPERATOR_ACTIONS: [(&str, Resource); 12] = [
    ("cloudformation:DescribeStacks", Resource::Stack),
    ("cloudformation:ListStackResources", Resource::Stack),
    ("dynamodb:Query", Resource::Table),
    ("dynamodb:GetResourcePolicy", Resource::Table),
    ("cloudtrail:DescribeTrails", Resource::Any),
    ("cloudtrail:GetTrailStatus", Resource::Any),
    ("cloudtrail:GetEventSelectors", Resource::Any),
    ("cloudwatch:GetMetricData", Resource::Any),
    ("sqs:GetQueueAttributes", Resource::Queues),
    ("sns:ListSubscriptionsByTopic", Resource::Topic),
    ("securityhub:DescribeHub", Resource::Any),
    ("organizations:ListAccounts", Resource::Any),
];

/// What an action of the operator's policy is scoped to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Stack,
    Table,
    Queues,
    Topic,
    /// Supports no resource-level permission.
    Any,
}

/// The operator's read-only IAM policy for `doctor` on stack `stack`, as
/// JSON (`partition` `aws` unless told). Everything it allows is a read.
pub fn operator_policy(stack: &str, partition: &str) -> serde_json::Value {
    let arn = |r: Resource| match r {
        Resource::Stack => format!("arn:{partition}:cloudformation:*:*:stack/{stack}/*"),
        Resource::Table => format!("arn:{partition}:dynamodb:*:*:table/{stack}-memory"),
        Resource::Queues => format!("arn:{partition}:sqs:*:*:{stack}-*"),
        Resource::Topic => format!("arn:{partition}:sns:*:*:*"),
        Resource::Any => "*".into(),
    };
    let mut by: Vec<(String, Vec<&str>)> = Vec::new();
    for (action, r) in OPERATOR_ACTIONS {
        let resource = arn(r);
        match by.iter_mut().find(|(res, _)| *res == resource) {
            Some((_, actions)) => actions.push(action),
            None => by.push((resource, vec![action])),
        }
    }
    let statements: Vec<serde_json::Value> = by
        .into_iter()
        .enumerate()
        .map(|(i, (resource, actions))| {
            serde_json::json!({
                "Sid": format!("ImdsGuardDoctor{}", i + 1),
                "Effect": "Allow",
                "Action": actions,
                "Resource": resource,
            })
        })
        .collect();
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

/// What `doctor --prevention` calls besides: the image and subnet it
/// picks, and three launches, each with `DryRun=true`.
pub const PREVENTION_ACTIONS: [&str; 3] = [
    "ec2:DescribeImages",
    "ec2:DescribeSubnets",
    "ec2:RunInstances",
];

/// The operator's policy for `doctor --prevention`: the read-only one, and
/// a statement for the dry-run launches. IAM cannot require `DryRun`: this
/// allows real launches too, so give it only to someone who may launch.
pub fn prevention_policy(stack: &str, partition: &str) -> serde_json::Value {
    let mut p = operator_policy(stack, partition);
    if let Some(st) = p["Statement"].as_array_mut() {
        st.push(serde_json::json!({
            "Sid": "ImdsGuardDoctorPrevention",
            "Effect": "Allow",
            "Action": PREVENTION_ACTIONS,
            "Resource": "*",
        }));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{judge, Answer, Check};

    fn advanced(fields: &[(&str, &[&str], &[&str])]) -> Vec<FieldSelector> {
        fields
            .iter()
            .map(|(f, eq, ne)| FieldSelector {
                field: f.to_string(),
                equals: eq.iter().map(|s| s.to_string()).collect(),
                not_equals: ne.iter().map(|s| s.to_string()).collect(),
                ..FieldSelector::default()
            })
            .collect()
    }

    #[test]
    fn selectors_that_log_ec2_write_management_events() {
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Basic(vec![])),
            Some(true)
        );
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Basic(vec![(true, "All".into())])),
            Some(true)
        );
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Basic(vec![(true, "ReadOnly".into())])),
            Some(false)
        );
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Basic(vec![(false, "All".into())])),
            Some(false)
        );
        // CloudTrail's console default: management events, read and write.
        let mgmt = advanced(&[("eventCategory", &["Management"], &[])]);
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Advanced(vec![mgmt])),
            Some(true)
        );
        let writes = advanced(&[
            ("eventCategory", &["Management"], &[]),
            ("readOnly", &["false"], &[]),
        ]);
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Advanced(vec![writes])),
            Some(true)
        );
        let reads = advanced(&[
            ("eventCategory", &["Management"], &[]),
            ("readOnly", &["true"], &[]),
        ]);
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Advanced(vec![reads])),
            Some(false)
        );
        let no_ec2 = advanced(&[
            ("eventCategory", &["Management"], &[]),
            ("eventSource", &[], &["ec2.amazonaws.com"]),
        ]);
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Advanced(vec![no_ec2])),
            Some(false)
        );
        let data_only = advanced(&[
            ("eventCategory", &["Data"], &[]),
            ("resources.type", &["AWS::S3::Object"], &[]),
        ]);
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Advanced(vec![data_only])),
            Some(false)
        );
        assert_eq!(
            logs_ec2_management_writes(&Selectors::Unknown("denied".into())),
            None
        );
    }

    fn trail(name: &str, home: &str, multi: bool, logging: Option<bool>, s: Selectors) -> Trail {
        Trail {
            name: name.into(),
            home_region: home.into(),
            multi_region: multi,
            organization: false,
            logging,
            selectors: s,
        }
    }

    #[test]
    fn a_trail_must_cover_the_region_log_and_record_writes() {
        let all = || Selectors::Basic(vec![(true, "All".into())]);
        let ok = [trail("org", "us-east-1", true, Some(true), all())];
        assert_eq!(
            trail_row("a eu-west-1", "eu-west-1", Ok(&ok)).status,
            Status::Pass
        );
        let regional = [trail("t", "us-east-1", false, Some(true), all())];
        let r = trail_row("a eu-west-1", "eu-west-1", Ok(&regional));
        assert_eq!(r.status, Status::Fail);
        assert!(r.detail.contains("no trail covers"), "{r:?}");
        assert!(r.fix.as_deref().unwrap().contains("create-trail"));
        let stopped = [trail("t", "eu-west-1", false, Some(false), all())];
        assert_eq!(
            trail_row("p", "eu-west-1", Ok(&stopped)).status,
            Status::Fail
        );
        let reads = [trail(
            "t",
            "eu-west-1",
            false,
            Some(true),
            Selectors::Basic(vec![(true, "ReadOnly".into())]),
        )];
        assert_eq!(trail_row("p", "eu-west-1", Ok(&reads)).status, Status::Fail);
        // An organization trail a member cannot read: unknown, never ✗.
        let mut org = trail(
            "org",
            "us-east-1",
            true,
            None,
            Selectors::Unknown("TrailNotFound".into()),
        );
        org.organization = true;
        let r = trail_row("p", "eu-west-1", Ok(std::slice::from_ref(&org)));
        assert_eq!(r.status, Status::Warn);
        assert!(r.detail.contains("unknown"));
        assert_eq!(
            trail_row("p", "eu-west-1", Err("AccessDenied")).status,
            Status::Warn
        );
    }

    #[test]
    fn rules_and_queues_say_what_they_saw() {
        let a = RuleActivity {
            rule: "imds-guard-LaunchRule-1".into(),
            matched: Some(12.0),
            invoked: Some(12.0),
            ..RuleActivity::default()
        };
        assert_eq!(rule_row("p", &a, 7).status, Status::Pass);
        let silent = RuleActivity {
            rule: "r".into(),
            ..RuleActivity::default()
        };
        assert_eq!(
            rule_row("p", &silent, 7).status,
            Status::Warn,
            "no data is not a pass"
        );
        let failing = RuleActivity {
            failed: Some(1.0),
            ..a.clone()
        };
        assert_eq!(rule_row("p", &failing, 7).status, Status::Fail);
        assert_eq!(
            queue_row(Section::Events, "q", "p", Ok(0), "f").status,
            Status::Pass
        );
        assert_eq!(
            queue_row(Section::Events, "q", "p", Ok(3), "f").status,
            Status::Fail
        );
        assert_eq!(
            queue_row(Section::Events, "q", "p", Err("denied"), "f").status,
            Status::Warn
        );
    }

    #[test]
    fn outputs_are_confirmed_enabled_and_protected() {
        assert_eq!(subscription_row("t", Ok((1, 2))).status, Status::Pass);
        let pending = subscription_row("t", Ok((0, 1)));
        assert_eq!(pending.status, Status::Fail);
        assert!(pending.fix.unwrap().contains("confirm"));
        assert_eq!(subscription_row("t", Ok((0, 0))).status, Status::Warn);
        assert_eq!(hub_row("p", Ok(true)).status, Status::Pass);
        assert_eq!(hub_row("p", Ok(false)).status, Status::Fail);
        let policy = r#"{"Statement":[{"Sid":"OnlyTheGuardWrites","Effect":"Deny"}]}"#;
        assert_eq!(table_policy_row("t", Ok(Some(policy))).status, Status::Pass);
        assert_eq!(table_policy_row("t", Ok(None)).status, Status::Fail);
        assert_eq!(table_policy_row("t", Ok(Some("{}"))).status, Status::Fail);
    }

    #[test]
    fn the_self_checks_results_become_rows_and_a_stale_or_missing_one_is_said() {
        let c = RegionCheck {
            account: "111122223333".into(),
            region: "us-east-1".into(),
            role: "the function's role".into(),
            at: 1_000_000,
            trigger: "deploy".into(),
            error: None,
            outcomes: vec![
                judge(Check::FixAllowed, &Answer::DryRun),
                judge(Check::OptionalRefused, &Answer::DryRun),
            ],
        };
        let rows = self_check_rows("p", Some(&c), 1_000_060);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, Status::Pass);
        assert_eq!(rows[1].status, Status::Fail);
        assert!(rows[1].fix.as_deref().unwrap().contains("least privilege"));
        let stale = self_check_rows("p", Some(&c), 1_000_000 + probe::STALE_AFTER_SECS + 1);
        assert_eq!(stale[0].status, Status::Warn);
        assert!(stale[0].detail.contains("stale"));
        let none = self_check_rows("p", None, 0);
        assert_eq!(none[0].status, Status::Warn);
        assert_eq!(exit_code(&rows, false), 1);
        assert_eq!(exit_code(&none, false), 0);
        assert_eq!(exit_code(&none, true), 2);
        let text = render(&rows);
        assert!(
            text.contains("✗") && text.contains("fix: least privilege"),
            "{text}"
        );
        assert!(
            text.ends_with("1 passed, 0 to look at (⚠), 1 to fix (✗)\n"),
            "{text}"
        );
    }

    #[test]
    fn the_operators_policy_is_read_only_and_scoped() {
        let p = operator_policy("imds-guard", "aws");
        let actions: Vec<String> = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(actions.len(), OPERATOR_ACTIONS.len());
        for a in &actions {
            let verb = a.split(':').nth(1).unwrap();
            assert!(
                ["Describe", "List", "Get", "Query"]
                    .iter()
                    .any(|v| verb.starts_with(v)),
                "{a} is not a read"
            );
        }
        assert!(p.to_string().contains("table/imds-guard-memory"));
    }
}

//! The SAM template is the product as much as the code: these checks fail if
//! it regresses on least privilege, failure handling, encryption or triggers.
//! Each check is also run against a deliberately broken copy, so it is known
//! to fail when it should.

use serde_norway::{Mapping, Value};

pub fn load(path: &str) -> Value {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::Tagged(t) => vec![format!(
            "{} {}",
            t.tag,
            serde_norway::to_string(&t.value).unwrap_or_default().trim()
        )],
        _ => vec![],
    }
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    let Some(Value::Mapping(res)) = t.get("Resources") else {
        return vec![];
    };
    res.iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
        .map(|(k, r)| (k.as_str().unwrap_or("?"), r))
        .collect()
}

/// Statements, with both branches of any `!If` (a conditional statement is
/// still a permission the role may hold).
fn statements(doc: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Tagged(t) if t.tag == "!If" => {
                if let Value::Sequence(parts) = &t.value {
                    parts.iter().skip(1).for_each(|p| walk(p, out));
                }
            }
            Value::Mapping(m) if m.contains_key("Effect") => out.push(v),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(s) = doc.get("Statement") {
        walk(s, &mut out);
    }
    out
}

const ALLOWED_ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:GetInstanceMetadataDefaults",
    "ec2:ModifyInstanceMetadataDefaults",
    "cloudwatch:GetMetricData",
    "ec2:ModifyInstanceMetadataOptions",
    "ec2:CreateTags",
    "sns:Publish",
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "sqs:SendMessage",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    // Central mode: the member role; the organization's accounts for a sweep.
    "sts:AssumeRole",
    "organizations:ListAccounts",
    // Modes per organizational unit: an account's units, to the root.
    "organizations:ListParents",
    // Central mode with a schedule: EventBridge starts the organization sweep.
    "states:StartExecution",
    // The member stack: forwarding to the central bus; the guard's news on a
    // bus of the user's (EventBusName).
    "events:PutEvents",
    // Findings in Security Hub (SecurityHubFindings), the default product.
    "securityhub:BatchImportFindings",
    // The outputs queue's event source (the outputs function).
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    // Sources: read always; the status tag on groups; fixing opted-in
    // templates only with FixSources.
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeImages",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:CreateOrUpdateTags",
    "ec2:CreateLaunchTemplateVersion",
    "ec2:ModifyLaunchTemplate",
    // The guard's memory, its own table only.
    "dynamodb:PutItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
    // Each sweep checks the memory's resource policy is the stack's.
    "dynamodb:GetResourcePolicy",
    // The exemption check: CloudTrail's own record of a launch.
    "cloudtrail:LookupEvents",
];

/// Actions that support no resource-level permissions: `*` is their only
/// resource.
const NO_RESOURCE_LEVEL: &[&str] = &[
    "ec2:DescribeInstances",
    "cloudtrail:LookupEvents",
    "ec2:GetInstanceMetadataDefaults",
    "ec2:ModifyInstanceMetadataDefaults",
    "cloudwatch:GetMetricData",
    "organizations:ListAccounts",
    // Granted on `*`: what it can read is this organization's own accounts
    // and units, whichever the account is (ModeOverrides names them).
    "organizations:ListParents",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeImages",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLaunchConfigurations",
];

/// Statements the role holds whatever the parameters say (outside any `!If`).
fn unconditional(doc: &Value) -> Vec<&Value> {
    doc.get("Statement")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter(|v| v.get("Effect").is_some()).collect())
        .unwrap_or_default()
}

/// Every string in `v`, at any depth (for targets and intrinsics).
fn strings_deep(v: &Value) -> Vec<String> {
    match v {
        Value::Mapping(m) => m.values().flat_map(strings_deep).collect(),
        Value::Sequence(items) => items.iter().flat_map(strings_deep).collect(),
        other => strings(other),
    }
}

/// A CloudTrail rule leaves out the guard's own changes (each would invoke
/// it again): an `$or` of a caller-role field that is `anything-but` the
/// guard's roles, and the same field missing (IAM users, the root user,
/// services: `anything-but` does not match a missing field).
fn self_exclusion_problems(name: &str, r: &Value, p: &mut Vec<String>) {
    let branches = get(r, &["Properties", "EventPattern", "detail", "$or"])
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    let leaf = |b: &Value| -> Option<(String, Value)> {
        let issuer = get(b, &["userIdentity", "sessionContext", "sessionIssuer"])?;
        let (field, v) = issuer.as_mapping()?.iter().next()?;
        Some((
            field.as_str()?.to_string(),
            v.as_sequence()?.first()?.clone(),
        ))
    };
    let leaves: Vec<(String, Value)> = branches.iter().filter_map(leaf).collect();
    let excluded = leaves.iter().find(|(_, m)| m.get("anything-but").is_some());
    let missing = leaves.iter().any(|(f, m)| {
        m.get("exists").and_then(Value::as_bool) == Some(false)
            && Some(f) == excluded.map(|(f, _)| f)
    });
    match excluded {
        None => p.push(format!("{name}: the guard's own changes are not left out (no anything-but on the caller's role)")),
        Some((_, m)) if strings_deep(m).is_empty() => {
            p.push(format!("{name}: the anything-but names no role"))
        }
        Some(_) if !missing => p.push(format!(
            "{name}: callers with no role (IAM users, root, services) would be left out too: add the exists-false branch"
        )),
        _ => {}
    }
}

/// Everything wrong with the guard's template; empty when it is right.
pub fn problems(t: &Value) -> Vec<String> {
    let mut p = Vec::new();
    role_problems(t, &mut p);
    central_problems(t, &mut p);

    // The functions: the event function, and the sweep function with its
    // own retry setting (docs/design.md), each its own binary.
    let functions = resources_of(t, "AWS::Serverless::Function");
    let binary = |name: &str| {
        get(
            t,
            &["Resources", name, "Metadata", "BuildProperties", "Binary"],
        )
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
    };
    if binary("GuardFunction") != "imds-guard-event" {
        p.push("GuardFunction: should be the event function (Binary imds-guard-event)".into());
    }
    if binary("SourceFunction") != "imds-guard-sweep" {
        p.push("SourceFunction: should be the sweep function's binary (Binary imds-guard-sweep), which carries Auto Scaling".into());
    }
    // The command line (`imds-guard`) is never deployed; the self-check
    // runs the sweep's binary (EC2, STS and the memory it needs are there).
    if binary("SelfCheckFunction") != "imds-guard-sweep" {
        p.push(
            "SelfCheckFunction: should run the sweep function's binary (Binary imds-guard-sweep)"
                .into(),
        );
    }
    for (name, _) in &functions {
        if binary(name) == "imds-guard" {
            p.push(format!(
                "{name}: the command line is never deployed (Binary imds-guard)"
            ));
        }
    }
    for rule in ["SourceRule", "CentralSourceRule"] {
        let targets = get(t, &["Resources", rule, "Properties", "Targets"])
            .map(strings_deep)
            .unwrap_or_default();
        if !targets.iter().any(|a| a.contains("SourceFunction")) {
            p.push(format!("{rule}: source events go to the sources function"));
        }
    }
    if binary("SweepFunction") != "imds-guard-sweep" {
        p.push("SweepFunction: should be the sweep function (Binary imds-guard-sweep)".into());
    }
    let sweep_retries = get(
        t,
        &[
            "Resources",
            "SweepFunction",
            "Properties",
            "EventInvokeConfig",
            "MaximumRetryAttempts",
        ],
    )
    .and_then(Value::as_u64);
    if sweep_retries != Some(0) {
        p.push(format!(
            "SweepFunction: a sweep stopped at its deadline must not be re-run whole by Lambda's retries (MaximumRetryAttempts {sweep_retries:?}, want 0)"
        ));
    }
    let sweep_targets: Vec<String> = get(t, &["Resources", "SweepRule", "Properties", "Targets"])
        .map(strings_deep)
        .unwrap_or_default();
    if !sweep_targets.iter().any(|a| a.contains("SweepFunction")) {
        p.push("SweepRule: the schedule should invoke the sweep function".into());
    }
    for (name, f) in functions {
        let prop = |k: &str| get(f, &["Properties", k]);
        let expect = |k: &str, want: &str, p: &mut Vec<String>| {
            let got = prop(k).map(strings).unwrap_or_default();
            if got != [want] {
                p.push(format!("{name}: {k} should be {want}, got {got:?}"));
            }
        };
        expect("Runtime", "provided.al2023", &mut p);
        expect("Handler", "bootstrap", &mut p);
        expect("Architectures", "arm64", &mut p);
        if prop("MemorySize").and_then(Value::as_u64) != Some(128) {
            p.push(format!("{name}: MemorySize should be 128"));
        }
        if get(f, &["Metadata", "BuildMethod"]).and_then(Value::as_str) != Some("rust-cargolambda")
        {
            p.push(format!(
                "{name}: Metadata.BuildMethod should be rust-cargolambda"
            ));
        }
        if get(f, &["Properties", "LoggingConfig", "LogFormat"]).and_then(Value::as_str)
            != Some("JSON")
        {
            p.push(format!("{name}: LoggingConfig.LogFormat should be JSON"));
        }
        let budget_max = get(t, &["Parameters", "RetryBudgetSeconds", "MaxValue"])
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let timeout = prop("Timeout").and_then(Value::as_u64).unwrap_or(0);
        // A function fed by an SQS queue (the outputs function) waits on no
        // instance, and its queue's redrive policy keeps what fails.
        let sqs_fed = prop("Events")
            .and_then(Value::as_mapping)
            .is_some_and(|events| {
                !events.is_empty()
                    && events.values().all(|e| {
                        e.get("Type").and_then(Value::as_str) == Some("SQS")
                            && get(e, &["Properties", "FunctionResponseTypes"])
                                .map(strings)
                                .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures"))
                    })
            });
        if timeout < budget_max.saturating_add(30) && !sqs_fed {
            p.push(format!("{name}: Timeout {timeout}s does not cover the retry budget's maximum {budget_max}s"));
        }
        if get(
            f,
            &[
                "Properties",
                "EventInvokeConfig",
                "DestinationConfig",
                "OnFailure",
                "Type",
            ],
        )
        .and_then(Value::as_str)
            != Some("SQS")
            // The fan-out's steps are invoked synchronously by the state
            // machine, which retries and records each.
            && name != "FanOutFunction"
            && !sqs_fed
        {
            p.push(format!(
                "{name}: no OnFailure SQS destination for failed events"
            ));
        }
        if prop("Events").is_some() && !sqs_fed {
            p.push(format!(
                "{name}: triggers belong in explicit rules with retry and dead-letter settings, or an SQS queue with partial batch failures"
            ));
        }
    }

    rule_problems(t, &mut p);

    storage_problems(t, &mut p);

    // Alarms on errors and on both queues.
    let alarmed: Vec<String> = resources_of(t, "AWS::CloudWatch::Alarm")
        .iter()
        .filter(|(_, a)| get(a, &["Properties", "AlarmActions"]).is_some())
        .map(|(_, a)| {
            let metric = get(a, &["Properties", "MetricName"])
                .and_then(Value::as_str)
                .unwrap_or("");
            let dims = serde_norway::to_string(
                get(a, &["Properties", "Dimensions"]).unwrap_or(&Value::Null),
            )
            .unwrap_or_default();
            format!("{metric} {dims}")
        })
        .collect();
    let watched = |needle: &str| alarmed.iter().any(|a| a.contains(needle));
    if !watched("Errors") {
        p.push("no alarm on function errors".into());
    }
    for (name, _) in resources_of(t, "AWS::Serverless::Function")
        .into_iter()
        .filter(|(n, f)| *n != "FanOutFunction" && get(f, &["Properties", "Events"]).is_none())
    {
        if !alarmed
            .iter()
            .any(|a| a.starts_with("DestinationDeliveryFailures") && a.contains(name))
        {
            p.push(format!("no alarm on {name}'s failed events that could not be kept (DestinationDeliveryFailures)"));
        }
    }
    let reserved = get(
        t,
        &[
            "Resources",
            "GuardFunction",
            "Properties",
            "ReservedConcurrentExecutions",
        ],
    )
    .map(strings_deep)
    .unwrap_or_default();
    if !reserved.iter().any(|r| r.contains("EventConcurrency")) {
        p.push(
            "GuardFunction: its concurrency must be reserved (EventConcurrency), the sweep's not"
                .into(),
        );
    }
    if get(
        t,
        &[
            "Resources",
            "SweepFunction",
            "Properties",
            "ReservedConcurrentExecutions",
        ],
    )
    .map(strings_deep)
    .unwrap_or_default()
    .iter()
    .any(|r| r.contains("EventConcurrency"))
    {
        p.push("SweepFunction: must not share the event function's reservation".into());
    }
    if !alarmed
        .iter()
        .any(|a| a.starts_with("Throttles") && a.contains("GuardFunction"))
    {
        p.push("no alarm on the event function's throttles".into());
    }
    let env = |k: &str| {
        get(t, &["Globals", "Function", "Environment", "Variables", k])
            .map(strings)
            .unwrap_or_default()
    };
    if env("FAILED_EVENTS_QUEUE_URL") != ["!Ref FailedEventsQueue"] {
        p.push("the functions must keep a message SNS refused in the failed-events queue (FAILED_EVENTS_QUEUE_URL)".into());
    }
    let asserted = get(t, &["Rules"]).map(strings_deep).unwrap_or_default();
    if !asserted
        .iter()
        .any(|a| a.contains("ExemptTagKey") && a.contains("StatusTagKey"))
    {
        p.push(
            "the stack must refuse ExemptTagKey equal to StatusTagKey (a Rules assertion)".into(),
        );
    }
    let memory_policy = get(
        t,
        &[
            "Resources",
            "MemoryTable",
            "Properties",
            "ResourcePolicy",
            "PolicyDocument",
        ],
    )
    .unwrap_or(&Value::Null);
    let only_guard = statements(memory_policy).iter().any(|st| {
        st.get("Effect").and_then(Value::as_str) == Some("Deny")
            && [
                "dynamodb:PutItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ]
            .iter()
            .all(|w| {
                strings(st.get("Action").unwrap_or(&Value::Null))
                    .iter()
                    .any(|a| a == w)
            })
            && get(st, &["Condition", "ArnNotLike", "aws:PrincipalArn"])
                .map(strings_deep)
                .unwrap_or_default()
                .iter()
                .any(|a| a.contains("GuardRole.Arn"))
    });
    if !only_guard {
        p.push("MemoryTable: only the guard may write its memory (a resource policy denying everyone else's writes)".into());
    }
    for (name, q) in resources_of(t, "AWS::SQS::Queue") {
        // A queue that feeds a function is watched through its dead-letter
        // queue, where what fails ends.
        let dead_letter = get(q, &["Properties", "RedrivePolicy", "deadLetterTargetArn"])
            .map(strings)
            .unwrap_or_default();
        let redriven_and_watched = dead_letter.iter().any(|d| {
            d.split_whitespace()
                .nth(1)
                .and_then(|r| r.split('.').next())
                .is_some_and(watched)
        });
        if !watched(name) && !redriven_and_watched {
            p.push(format!("no alarm on messages in {name}"));
        }
    }

    fanout_problems(t, &mut p);
    parameter_problems(t, &mut p);
    for out in [
        "FunctionArn",
        "TopicArn",
        "FailedEventsQueueArn",
        "UndeliveredEventsQueueArn",
    ] {
        if get(t, &["Outputs", out]).is_none() {
            p.push(format!("output {out} missing"));
        }
    }
    p
}

/// The organization sweep: only in central mode with a schedule; a
/// distributed map over the plan's accounts with a concurrency cap, every
/// shard's failure tolerated and recorded (retry, then a catch that names
/// it), results through the memory rather than the state (17,000
/// account-regions are far over 256 KB), and a summary that does not retry
/// itself into a second message.
fn fanout_problems(t: &Value, p: &mut Vec<String>) {
    let cond = |name: &str| {
        get(t, &["Resources", name, "Condition"])
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    for name in [
        "SweepStateMachine",
        "FanOutFunction",
        "SweepStateMachineRule",
    ] {
        if cond(name).as_deref() != Some("FanOut") {
            p.push(format!("{name}: the fan-out exists only in central mode with a schedule (Condition FanOut)"));
        }
    }
    let fan_out = get(t, &["Conditions", "FanOut"])
        .map(strings_deep)
        .unwrap_or_default();
    if !(fan_out.iter().any(|c| c.contains("Central"))
        && fan_out.iter().any(|c| c.contains("ScheduleSweep")))
    {
        p.push(format!(
            "Conditions/FanOut: central mode and a schedule, got {fan_out:?}"
        ));
    }
    let d = get(
        t,
        &["Resources", "SweepStateMachine", "Properties", "Definition"],
    )
    .unwrap_or(&Value::Null);
    let map = get(d, &["States", "Shards"]).unwrap_or(&Value::Null);
    let shard = get(map, &["ItemProcessor", "States", "Shard"]).unwrap_or(&Value::Null);
    let failed = get(map, &["ItemProcessor", "States", "ShardFailed"]).unwrap_or(&Value::Null);
    let checks: [(&str, bool); 9] = [
        (
            "children whose outputs stay empty (OutputPath null on Shard and ShardFailed): the map gathers them under 256 KB",
            shard.get("OutputPath").is_some_and(Value::is_null)
                && failed.get("OutputPath").is_some_and(Value::is_null),
        ),
        (
            "a summary whatever stops the map (Catch to Summarize)",
            get(map, &["Catch"]).map(strings_deep).unwrap_or_default().iter().any(|s| s == "Summarize"),
        ),
        (
            "a distributed map",
            get(map, &["ItemProcessor", "ProcessorConfig", "Mode"]).and_then(Value::as_str)
                == Some("DISTRIBUTED"),
        ),
        (
            "a concurrency cap (MaxConcurrencyPath)",
            map.get("MaxConcurrencyPath").is_some() || map.get("MaxConcurrency").is_some(),
        ),
        (
            "every shard's failure tolerated (ToleratedFailurePercentage 100)",
            map.get("ToleratedFailurePercentage")
                .and_then(Value::as_u64)
                == Some(100),
        ),
        (
            "results through the memory, not the state (ResultPath null)",
            map.get("ResultPath").is_some_and(Value::is_null),
        ),
        ("shards retried with backoff", shard.get("Retry").is_some()),
        (
            "a shard the engine gave up on recorded by name (Catch to ShardFailed)",
            get(shard, &["Catch"])
                .map(strings_deep)
                .unwrap_or_default()
                .iter()
                .any(|s| s == "ShardFailed"),
        ),
        (
            "a summary that never retries itself into a second message",
            !get(d, &["States", "Summarize", "Retry"])
                .map(strings_deep)
                .unwrap_or_default()
                .iter()
                .any(|e| e == "ImdsGuard.Incomplete" || e == "States.ALL"),
        ),
    ];
    for (what, ok) in checks {
        if !ok {
            p.push(format!("SweepStateMachine: needs {what}"));
        }
    }
}

/// Least privilege, for every role a template creates: its permissions,
/// and whom it trusts.
fn role_problems(t: &Value, p: &mut Vec<String>) {
    for (name, role) in resources_of(t, "AWS::IAM::Role") {
        trust_problems(name, role, p);
        let docs = get(role, &["Properties", "Policies"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        if get(role, &["Properties", "ManagedPolicyArns"]).is_some() {
            p.push(format!(
                "{name}: managed policies are broader than this function needs"
            ));
        }
        for doc in &docs {
            for st in statements(doc.get("PolicyDocument").unwrap_or(&Value::Null)) {
                if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                    continue;
                }
                let actions = strings(st.get("Action").unwrap_or(&Value::Null));
                let resource = strings(st.get("Resource").unwrap_or(&Value::Null));
                let sid = st.get("Sid").and_then(Value::as_str).unwrap_or("?");
                for a in &actions {
                    if a.contains('*') {
                        p.push(format!("{name}/{sid}: wildcard action {a}"));
                    } else if !ALLOWED_ACTIONS.contains(&a.as_str()) {
                        p.push(format!("{name}/{sid}: unexpected permission {a}"));
                    }
                }
                if resource.iter().any(|r| r == "*")
                    && !actions
                        .iter()
                        .all(|a| NO_RESOURCE_LEVEL.contains(&a.as_str()))
                {
                    p.push(format!("{name}/{sid}: {actions:?} on every resource"));
                }
                let on_instances = resource
                    .iter()
                    .all(|r| r.contains(":instance/*") || r.contains(":launch-template/*"));
                if actions
                    .iter()
                    .any(|a| a == "ec2:ModifyInstanceMetadataOptions" || a == "ec2:CreateTags")
                    && !on_instances
                {
                    p.push(format!("{name}/{sid}: instance writes must be limited to instance ARNs, got {resource:?}"));
                }
                if actions
                    .iter()
                    .any(|a| a == "ec2:ModifyInstanceMetadataDefaults")
                    && unconditional(doc.get("PolicyDocument").unwrap_or(&Value::Null))
                        .iter()
                        .any(|u| std::ptr::eq(*u, st))
                {
                    p.push(format!("{name}/{sid}: changing the account defaults must depend on SetAccountDefault"));
                }
                imds_write_problems(&format!("{name}/{sid}"), st, &actions, p);
                source_write_problems(
                    &format!("{name}/{sid}"),
                    st,
                    &actions,
                    unconditional(doc.get("PolicyDocument").unwrap_or(&Value::Null))
                        .iter()
                        .any(|u| std::ptr::eq(*u, st)),
                    p,
                );
                if actions.iter().any(|a| a == "ec2:CreateTags") {
                    let keys = get(
                        st,
                        &["Condition", "ForAllValues:StringEquals", "aws:TagKeys"],
                    )
                    .map(strings)
                    .unwrap_or_default();
                    if keys.len() != 1 || !keys[0].contains("StatusTagKey") {
                        p.push(format!("{name}/{sid}: CreateTags must be conditioned on the status tag key alone, got {keys:?}"));
                    }
                }
            }
        }
    }
}

/// A condition's values (`op` → `key`), as strings (`!If`/`!Ref` as text).
fn condition(st: &Value, op: &str, key: &str) -> Vec<String> {
    get(st, &["Condition", op, key])
        .map(|v| match v {
            Value::Bool(b) => vec![b.to_string()],
            Value::Number(n) => vec![n.to_string()],
            other => strings(other),
        })
        .unwrap_or_default()
}

/// The allow that lets a role write IMDS settings rests on what AWS
/// documents alone: the request's `ec2:Attribute/HttpTokens` is `required`,
/// with a `Null` guard so a request that leaves it out is not allowed. Every
/// further limit is a Deny (`iam_conditions` evaluates them on the requests
/// the guard sends, whatever EC2 fills in; `reference_keys` checks each key
/// against AWS's reference).
fn imds_write_problems(at: &str, st: &Value, actions: &[String], p: &mut Vec<String>) {
    let want = |op: &str, key: &str, value: &str, p: &mut Vec<String>| {
        let got = condition(st, op, key);
        if got != [value] {
            p.push(format!("{at}: needs {op} {key} = {value}, got {got:?}"));
        }
    };
    let writes_imds = actions.iter().any(|a| {
        a == "ec2:ModifyInstanceMetadataOptions" || a == "ec2:ModifyInstanceMetadataDefaults"
    });
    if !writes_imds {
        return;
    }
    want("StringEquals", "ec2:Attribute/HttpTokens", "required", p);
    want("Null", "ec2:Attribute/HttpTokens", "false", p);
    let keys: Vec<String> = get(st, &["Condition"])
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .flat_map(|(_, keys)| keys.as_mapping().into_iter().flatten())
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .filter(|k| k != "ec2:Attribute/HttpTokens")
        .collect();
    if !keys.is_empty() {
        p.push(format!(
            "{at}: the allow must rest on ec2:Attribute/HttpTokens alone (every other limit a Deny), got {keys:?}"
        ));
    }
    if get(st, &["Condition", "StringEquals", "ec2:MetadataHttpTokens"]).is_some() {
        p.push(format!(
            "{at}: ec2:MetadataHttpTokens describes the instance, not the request"
        ));
    }
}

/// Writing a template (IAM cannot restrict what a new version contains)
/// only with `FixSources` and only on templates whose owner opted in; a
/// group's tags only the status key.
fn source_write_problems(
    at: &str,
    st: &Value,
    actions: &[String],
    unconditional: bool,
    p: &mut Vec<String>,
) {
    let writes_templates = actions
        .iter()
        .any(|a| a == "ec2:CreateLaunchTemplateVersion" || a == "ec2:ModifyLaunchTemplate");
    if writes_templates {
        if unconditional {
            p.push(format!(
                "{at}: writing launch templates must depend on FixSources"
            ));
        }
        if condition(st, "StringEquals", "aws:ResourceTag/imds-guard:fix-source") != ["true"] {
            p.push(format!("{at}: writing launch templates only where the owner opted in (aws:ResourceTag/imds-guard:fix-source = true)"));
        }
    }
    if actions
        .iter()
        .any(|a| a == "autoscaling:CreateOrUpdateTags")
    {
        let keys = get(
            st,
            &["Condition", "ForAllValues:StringEquals", "aws:TagKeys"],
        )
        .map(strings)
        .unwrap_or_default();
        if keys.len() != 1 || !keys[0].contains("StatusTagKey") {
            p.push(format!(
                "{at}: a group's tags only the status key, got {keys:?}"
            ));
        }
    }
}

const SOURCE_EVENTS: [&str; 5] = [
    "CreateLaunchTemplate",
    "CreateLaunchTemplateVersion",
    "ModifyLaunchTemplate",
    "CreateAutoScalingGroup",
    "UpdateAutoScalingGroup",
];

/// Every rule on CloudTrail calls watches the launches and the changes,
/// drops failed calls and the guard's own changes; a state-change rule
/// watches `pending` and `running` and depends on the triggers chosen; every target has a
/// retry policy (but on a bus) and a dead-letter queue.
fn rule_problems(t: &Value, p: &mut Vec<String>) {
    let rules = resources_of(t, "AWS::Events::Rule");
    // Every rule on events (not on a schedule) watches CloudTrail calls or
    // EC2's state changes.
    let on_events: Vec<&(&str, &Value)> = rules
        .iter()
        .filter(|(_, r)| get(r, &["Properties", "EventPattern"]).is_some())
        .collect();
    if !on_events.iter().any(|(_, r)| {
        get(r, &["Properties", "EventPattern", "detail-type"])
            .map(strings)
            .unwrap_or_default()
            == ["AWS API Call via CloudTrail"]
    }) {
        p.push("no rule on RunInstances".into());
    }
    for (name, r) in on_events {
        let pat = |k: &[&str]| {
            get(r, &[&["Properties", "EventPattern"][..], k].concat())
                .map(strings)
                .unwrap_or_default()
        };
        if pat(&["source"]) == ["aws.dynamodb"] {
            // Tampering with the guard's memory, told to the topic: the
            // calls that could remove its protection, on its own table.
            let mut names = pat(&["detail", "eventName"]);
            names.sort();
            let on_table = get(r, &["Properties", "EventPattern", "detail", "$or"])
                .map(strings_deep)
                .unwrap_or_default();
            if names
                != [
                    "DeleteResourcePolicy",
                    "DeleteTable",
                    "PutResourcePolicy",
                    "UpdateTable",
                    "UpdateTimeToLive",
                ]
                || !on_table.iter().any(|s| s.contains("MemoryTable"))
            {
                p.push(format!("{name}: the tamper rule watches the five calls that could remove the memory's protection, on its table"));
            }
            continue;
        }
        if pat(&["source"]) == ["aws.cloudformation"] {
            // The self-check on deploy: this stack's own status changes
            // only, and a fixed payload (nothing in the event is read).
            let input = get(r, &["Properties", "Targets"])
                .and_then(Value::as_sequence)
                .and_then(|t| t.first())
                .and_then(|t| t.get("Input"))
                .map(strings)
                .unwrap_or_default();
            if pat(&["detail-type"]) != ["CloudFormation Stack Status Change"]
                || !pat(&["detail", "stack-id"])
                    .iter()
                    .any(|s| s.contains("AWS::StackId"))
                || pat(&["detail", "status-details", "status"])
                    != ["CREATE_COMPLETE", "UPDATE_COMPLETE"]
                || !input.iter().any(|i| i.contains("imds_guard_self_check"))
            {
                p.push(format!("{name}: the deploy rule passes this stack's completed creates and updates, as a fixed self-check payload, and nothing else"));
            }
            continue;
        }
        if pat(&["source"]) == ["aws.cloudwatch"] {
            // The members' alarms, to the central topic: theirs only, and
            // only when they go off.
            if pat(&["detail-type"]) != ["CloudWatch Alarm State Change"]
                || pat(&["detail", "state", "value"]) != ["ALARM"]
                || !get(r, &["Properties", "EventPattern", "detail", "alarmName"])
                    .map(strings_deep)
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n.contains("imds-guard-member-"))
            {
                p.push(format!("{name}: an alarm rule passes on the member stacks' alarms going off, and nothing else"));
            }
            continue;
        }
        let names = get(r, &["Properties", "EventPattern", "detail", "eventName"])
            .map(strings)
            .unwrap_or_default();
        if names.iter().any(|n| SOURCE_EVENTS.contains(&n.as_str())) {
            // Sources: templates (EC2) and groups (Auto Scaling), and only
            // those events.
            if pat(&["source"]) != ["aws.ec2", "aws.autoscaling"]
                || names.iter().collect::<Vec<_>>() != SOURCE_EVENTS.iter().collect::<Vec<_>>()
            {
                p.push(format!("{name}: a source rule watches {SOURCE_EVENTS:?} from aws.ec2 and aws.autoscaling, and nothing else"));
            }
            let skip_failed = get(r, &["Properties", "EventPattern", "detail", "errorCode"])
                .and_then(Value::as_sequence)
                .and_then(|s| s.first())
                .and_then(|m| m.get("exists"))
                .and_then(Value::as_bool);
            if skip_failed != Some(false) {
                p.push(format!("{name}: failed calls should be dropped in the pattern (errorCode exists false)"));
            }
            self_exclusion_problems(name, r, p);
            continue;
        }
        if pat(&["source"]) != ["aws.ec2"] {
            p.push(format!("{name}: source should be aws.ec2"));
        }
        if pat(&["detail-type"]) == ["EC2 Instance State-change Notification"] {
            if pat(&["detail", "state"]) != ["pending", "running"] {
                p.push(format!(
                    "{name}: a state-change rule watches pending and running only"
                ));
            }
            if r.get("Condition").is_none() {
                p.push(format!(
                    "{name}: the state-change trigger depends on Triggers"
                ));
            }
            continue;
        }
        if pat(&["detail-type"]) != ["AWS API Call via CloudTrail"] {
            p.push(format!(
                "{name}: detail-type should be the CloudTrail API call"
            ));
        }
        // The names watched: with launches (both branches of an `!If` on
        // Triggers), and the changes whatever the triggers.
        let names = get(r, &["Properties", "EventPattern", "detail", "eventName"]);
        let (with_launches, without): (Vec<String>, Vec<String>) = match names {
            Some(Value::Tagged(tagged)) if tagged.tag == "!If" => {
                let branch = |i: usize| {
                    tagged
                        .value
                        .as_sequence()
                        .and_then(|s| s.get(i))
                        .map(strings)
                        .unwrap_or_default()
                };
                (branch(1), branch(2))
            }
            Some(v) => (strings(v), strings(v)),
            None => (vec![], vec![]),
        };
        for watched in [
            "RunInstances",
            "CreateFleet",
            "ModifyInstanceMetadataOptions",
            "ModifyInstanceMetadataDefaults",
        ] {
            if !with_launches.iter().any(|n| n == watched) {
                p.push(format!("{name}: {watched} is not watched"));
            }
        }
        for watched in [
            "ModifyInstanceMetadataOptions",
            "ModifyInstanceMetadataDefaults",
        ] {
            if !without.iter().any(|n| n == watched) {
                p.push(format!(
                    "{name}: {watched} is not watched whatever the triggers"
                ));
            }
        }
        let skip_failed = get(r, &["Properties", "EventPattern", "detail", "errorCode"])
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(|m| m.get("exists"))
            .and_then(Value::as_bool);
        if skip_failed != Some(false) {
            p.push(format!(
                "{name}: failed calls should be dropped in the pattern (errorCode exists false)"
            ));
        }
        self_exclusion_problems(name, r, p);
    }
    // Events neither delivered nor kept would be lost without a word.
    let lost_alarms: Vec<(String, Option<String>)> = resources_of(t, "AWS::CloudWatch::Alarm")
        .iter()
        .filter(|(_, a)| {
            get(a, &["Properties", "MetricName"]).and_then(Value::as_str)
                == Some("InvocationsFailedToBeSentToDlq")
        })
        .map(|(_, a)| {
            (
                get(a, &["Properties", "Dimensions"])
                    .map(strings_deep)
                    .unwrap_or_default()
                    .join(" "),
                a.get("Condition")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        })
        .collect();
    for (name, r) in &rules {
        let cond = r
            .get("Condition")
            .and_then(Value::as_str)
            .map(str::to_string);
        // A member's alarm-forwarding rule: an alarm on it could only be
        // forwarded by the same rule.
        let forwards_alarms = get(r, &["Properties", "EventPattern", "source"])
            .map(strings)
            .unwrap_or_default()
            == ["aws.cloudwatch"]
            && get(r, &["Properties", "Targets"])
                .map(strings_deep)
                .unwrap_or_default()
                .iter()
                .any(|a| a.contains("CentralEventBusArn"));
        if !forwards_alarms
            && !lost_alarms
                .iter()
                .any(|(dims, c)| dims.contains(&format!("!Ref {name}")) && *c == cond)
        {
            p.push(format!("{name}: no alarm on events it could neither deliver nor keep (InvocationsFailedToBeSentToDlq), under the rule's own condition"));
        }
    }
    for (name, r) in &rules {
        for target in get(r, &["Properties", "Targets"])
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if get(target, &["DeadLetterConfig", "Arn"]).is_none() {
                p.push(format!("{name}: target without a dead-letter queue"));
            }
            // EventBridge refuses a retry policy on an event-bus target.
            let to_bus = target
                .get("Arn")
                .map(strings)
                .unwrap_or_default()
                .iter()
                .any(|a| a.contains("EventBusArn") || a.contains(":event-bus/"));
            match (to_bus, target.get("RetryPolicy").is_some()) {
                (false, false) => p.push(format!("{name}: target without a retry policy")),
                (true, true) => p.push(format!(
                    "{name}: EventBridge refuses a retry policy on an event-bus target"
                )),
                _ => {}
            }
        }
    }
}

/// Whom a role trusts: a service with `aws:SourceAccount`, or an AWS
/// principal narrowed to one role by `aws:PrincipalArn`; never anyone.
fn trust_problems(name: &str, role: &Value, p: &mut Vec<String>) {
    let doc = get(role, &["Properties", "AssumeRolePolicyDocument"]).unwrap_or(&Value::Null);
    for st in statements(doc) {
        if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue;
        }
        let principal = st.get("Principal").unwrap_or(&Value::Null);
        let cond = |op: &str, key: &str| get(st, &["Condition", op, key]).is_some();
        if principal.as_str() == Some("*") {
            p.push(format!("{name}: trusts any principal"));
        } else if principal.get("Service").is_some() {
            if !cond("StringEquals", "aws:SourceAccount") {
                p.push(format!(
                    "{name}: a service may assume it for any account (no aws:SourceAccount)"
                ));
            }
        } else if principal.get("AWS").is_some() && !cond("ArnEquals", "aws:PrincipalArn") {
            p.push(format!(
                "{name}: trusts a whole account, not one role (no aws:PrincipalArn)"
            ));
        }
    }
}

/// Central mode: the central bus admits the organization only, its rule
/// hands launches to the function, and the function may assume the member
/// role only in the organization's accounts, only in central mode.
fn central_problems(t: &Value, p: &mut Vec<String>) {
    let Some(bus) = get(t, &["Resources", "CentralEventBus"]) else {
        p.push("no central event bus (central mode)".into());
        return;
    };
    if bus.get("Condition").and_then(Value::as_str) != Some("Central") {
        p.push("CentralEventBus: must exist only in central mode".into());
    }
    for (name, policy) in resources_of(t, "AWS::Events::EventBusPolicy") {
        let st = get(policy, &["Properties", "Statement"]).unwrap_or(&Value::Null);
        let org = get(st, &["Condition", "StringEquals", "aws:PrincipalOrgID"])
            .map(strings)
            .unwrap_or_default();
        if org != ["!Ref OrganizationId"] {
            p.push(format!("{name}: the central bus must admit the organization only (aws:PrincipalOrgID), got {org:?}"));
        }
        if strings(st.get("Action").unwrap_or(&Value::Null)) != ["events:PutEvents"] {
            p.push(format!("{name}: members may only put events"));
        }
    }
    let on_bus = resources_of(t, "AWS::Events::Rule")
        .into_iter()
        .any(|(_, r)| {
            get(r, &["Properties", "EventBusName"]).map(strings)
                == Some(vec!["!Ref CentralEventBus".into()])
        });
    if !on_bus {
        p.push("no rule on the central bus".into());
    }
    let role = get(t, &["Resources", "GuardRole", "Properties", "Policies"])
        .and_then(Value::as_sequence)
        .and_then(|s| s.first())
        .and_then(|d| d.get("PolicyDocument"))
        .unwrap_or(&Value::Null);
    let unconditional = unconditional(role);
    for st in statements(role) {
        let actions = strings(st.get("Action").unwrap_or(&Value::Null));
        let sid = st.get("Sid").and_then(Value::as_str).unwrap_or("?");
        if actions.iter().any(|a| a == "sts:AssumeRole") {
            if unconditional.iter().any(|u| std::ptr::eq(*u, st)) {
                p.push(format!(
                    "GuardRole/{sid}: assuming roles must depend on central mode"
                ));
            }
            let resource = strings(st.get("Resource").unwrap_or(&Value::Null));
            if resource.len() != 1 || !resource[0].ends_with(":role/${MemberRoleName}") {
                p.push(format!(
                    "GuardRole/{sid}: may assume only the member role, got {resource:?}"
                ));
            }
            // Both branches of the `!If` on AllowedAccountIds.
            let branches: Vec<&Value> = match get(st, &["Condition", "StringEquals"]) {
                Some(Value::Tagged(t)) if t.tag == "!If" => t
                    .value
                    .as_sequence()
                    .map(|s| s.iter().skip(1).collect())
                    .unwrap_or_default(),
                Some(v) => vec![v],
                None => vec![],
            };
            if branches.is_empty()
                || branches
                    .iter()
                    .any(|b| b.get("aws:ResourceOrgID").is_none())
            {
                p.push(format!("GuardRole/{sid}: the member role must be the organization's (aws:ResourceOrgID)"));
            }
            let limited = branches.iter().any(|b| {
                b.get("aws:ResourceAccount")
                    .map(strings_deep)
                    .unwrap_or_default()
                    .iter()
                    .any(|s| s.contains("AllowedAccountIds"))
            });
            if !limited {
                p.push(format!("GuardRole/{sid}: with AllowedAccountIds set, only those accounts' roles may be assumed (aws:ResourceAccount)"));
            }
        }
    }
}

fn storage_problems(t: &Value, p: &mut Vec<String>) {
    // Encryption at rest.
    for (name, q) in resources_of(t, "AWS::SQS::Queue") {
        let sse = get(q, &["Properties", "SqsManagedSseEnabled"]).and_then(Value::as_bool)
            == Some(true)
            || get(q, &["Properties", "KmsMasterKeyId"]).is_some();
        if !sse {
            p.push(format!("{name}: queue not encrypted"));
        }
    }
    for (name, topic) in resources_of(t, "AWS::SNS::Topic") {
        if get(topic, &["Properties", "KmsMasterKeyId"]).is_none() {
            p.push(format!("{name}: topic not encrypted"));
        }
    }
}

fn parameter_problems(t: &Value, p: &mut Vec<String>) {
    // Parameters constrain what they configure.
    let params = t
        .get("Parameters")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_else(Mapping::new);
    for (k, v) in &params {
        let constrained = ["AllowedValues", "AllowedPattern", "MinValue"]
            .iter()
            .any(|c| v.get(*c).is_some());
        if !constrained {
            p.push(format!(
                "parameter {} accepts any value",
                k.as_str().unwrap_or("?")
            ));
        }
    }
}

/// What the console and the Serverless Application Repository show of a
/// stack's parameters: each in exactly one group, each with a label, the
/// groups in the order of the decisions they serve (start here first).
fn interface_problems(t: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let params: Vec<String> = t
        .get("Parameters")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ui = get(t, &["Metadata", "AWS::CloudFormation::Interface"]).unwrap_or(&Value::Null);
    let grouped: Vec<String> = ui
        .get("ParameterGroups")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .flat_map(|g| strings(g.get("Parameters").unwrap_or(&Value::Null)))
        .collect();
    for name in &params {
        match grouped.iter().filter(|g| *g == name).count() {
            1 => {}
            0 => p.push(format!("parameter {name} is in no group")),
            n => p.push(format!("parameter {name} is in {n} groups")),
        }
        let label = get(ui, &["ParameterLabels", name, "default"]).and_then(Value::as_str);
        if label.is_none_or(|l| l.trim().is_empty()) {
            p.push(format!("parameter {name} has no label"));
        }
    }
    for g in &grouped {
        if !params.contains(g) {
            p.push(format!("group names {g}, which is no parameter"));
        }
    }
    p
}

#[test]
fn every_parameter_is_grouped_once_and_labelled_start_here_first() {
    for path in ["template.yaml", "member/template.yaml"] {
        let problems = interface_problems(&load(path));
        assert!(problems.is_empty(), "{path}:\n  {}", problems.join("\n  "));
    }
    let t = load("template.yaml");
    let first = get(
        &t,
        &[
            "Metadata",
            "AWS::CloudFormation::Interface",
            "ParameterGroups",
        ],
    )
    .and_then(Value::as_sequence)
    .and_then(|g| g.first())
    .cloned()
    .unwrap();
    assert!(
        strings(first.get("Label").and_then(|l| l.get("default")).unwrap())
            .concat()
            .starts_with("Start here")
    );
    assert_eq!(
        strings(first.get("Parameters").unwrap())[..3],
        ["GuardMode", "NotificationEmail", "SweepSchedule"]
    );
    // A parameter dropped from the interface is caught.
    let mut broken = t.clone();
    if let Some(m) =
        broken["Metadata"]["AWS::CloudFormation::Interface"]["ParameterLabels"].as_mapping_mut()
    {
        m.remove("GuardMode");
    }
    assert_eq!(
        interface_problems(&broken),
        ["parameter GuardMode has no label"]
    );
}

#[test]
fn the_template_holds() {
    let problems = problems(&load("template.yaml"));
    assert!(
        problems.is_empty(),
        "template.yaml:\n  {}",
        problems.join("\n  ")
    );
}

/// The statements of `role`'s first inline policy, to break a copy with.
fn statements_mut<'a>(t: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
    t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap_or_else(|| panic!("{role} statements"))
}

fn role_statements(t: &mut Value) -> &mut Vec<Value> {
    statements_mut(t, "GuardRole")
}

fn sid_mut<'a>(t: &'a mut Value, sid: &str) -> &'a mut Value {
    role_statements(t)
        .iter_mut()
        .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
        .unwrap_or_else(|| panic!("no statement {sid}"))
}

fn expect_problem(t: &Value, needle: &str) {
    expect_among(problems(t), needle);
}

fn expect_among(found: Vec<String>, needle: &str) {
    assert!(
        found.iter().any(|p| p.contains(needle)),
        "expected a problem with {needle:?}, got {found:?}"
    );
}

#[test]
fn a_wildcard_action_is_caught() {
    let mut t = load("template.yaml");
    sid_mut(&mut t, "RequireImdsV2")["Action"] = Value::String("ec2:*".into());
    expect_problem(&t, "wildcard action ec2:*");
    let mut t = load("template.yaml");
    role_statements(&mut t).push(
        serde_norway::from_str("{Effect: Allow, Action: iam:PassRole, Resource: '*'}").unwrap(),
    );
    expect_problem(&t, "unexpected permission iam:PassRole");
}

#[test]
fn an_unconditioned_create_tags_is_caught() {
    let mut t = load("template.yaml");
    sid_mut(&mut t, "TagStatusOnly")
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_problem(&t, "CreateTags must be conditioned");
    let mut t = load("template.yaml");
    sid_mut(&mut t, "TagStatusOnly")["Resource"] = Value::String("*".into());
    expect_problem(&t, "on every resource");
}

#[test]
fn an_unconditional_account_default_write_is_caught() {
    let mut t = load("template.yaml");
    role_statements(&mut t).push(
        serde_norway::from_str(
            "{Sid: Always, Effect: Allow, Action: ec2:ModifyInstanceMetadataDefaults, Resource: '*'}",
        )
        .unwrap(),
    );
    expect_problem(&t, "must depend on SetAccountDefault");
}

#[test]
fn a_missing_dead_letter_queue_is_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["LaunchRule"]["Properties"]["Targets"][0]
        .as_mapping_mut()
        .unwrap()
        .remove("DeadLetterConfig");
    expect_problem(&t, "target without a dead-letter queue");
    let mut t = load("template.yaml");
    t["Resources"]["GuardFunction"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("EventInvokeConfig");
    expect_problem(&t, "no OnFailure SQS destination");
}

#[test]
fn a_missing_run_instances_pattern_is_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["LaunchRule"]["Properties"]["EventPattern"]["detail"]["eventName"] =
        serde_norway::from_str("[ModifyInstanceMetadataOptions]").unwrap();
    expect_problem(&t, "LaunchRule: RunInstances is not watched");
    let mut t = load("template.yaml");
    t["Resources"]["LaunchRule"]["Properties"]["EventPattern"]["detail"]
        .as_mapping_mut()
        .unwrap()
        .remove("errorCode");
    expect_problem(&t, "failed calls should be dropped");
}

#[test]
fn a_sweep_retried_whole_or_a_rule_that_triggers_itself_is_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["SweepFunction"]["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"] =
        Value::Number(2.into());
    expect_problem(&t, "must not be re-run whole");
    let mut t = load("template.yaml");
    t["Resources"]["LaunchRule"]["Properties"]["EventPattern"]["detail"]
        .as_mapping_mut()
        .unwrap()
        .remove("$or");
    expect_problem(&t, "LaunchRule: the guard's own changes are not left out");
    let mut t = load("template.yaml");
    t["Resources"]["LaunchRule"]["Properties"]["EventPattern"]["detail"]["$or"]
        .as_sequence_mut()
        .unwrap()
        .pop();
    expect_problem(&t, "add the exists-false branch");
    let mut t = load("member/template.yaml");
    t["Resources"]["ForwardRule"]["Properties"]["EventPattern"]["detail"]
        .as_mapping_mut()
        .unwrap()
        .remove("$or");
    expect_among(
        member_problems(&t, &load("template.yaml")),
        "ForwardRule: the guard's own changes are not left out",
    );
    let mut t = load("template.yaml");
    t["Resources"]["StateChangeRule"]
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_problem(&t, "depends on Triggers");
}

#[test]
fn unencrypted_storage_and_short_timeouts_are_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["FailedEventsQueue"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("SqsManagedSseEnabled");
    t["Resources"]["NotificationTopic"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("KmsMasterKeyId");
    t["Resources"]["GuardFunction"]["Properties"]["Timeout"] = Value::Number(60.into());
    expect_problem(&t, "FailedEventsQueue: queue not encrypted");
    expect_problem(&t, "NotificationTopic: topic not encrypted");
    expect_problem(&t, "does not cover the retry budget");
}

/// The actions a role's inline policies grant (both branches of any `!If`).
fn actions_of(t: &Value, role: &str) -> std::collections::BTreeSet<String> {
    get(t, &["Resources", role, "Properties", "Policies"])
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .flat_map(|d| statements(d.get("PolicyDocument").unwrap_or(&Value::Null)))
        .flat_map(|st| strings(st.get("Action").unwrap_or(&Value::Null)))
        .collect()
}

/// Everything wrong with the member stack; empty when it is right. Its role
/// may do in the member exactly what the function's own role may do in EC2
/// and CloudWatch, and trusts the central function's role only.
pub fn member_problems(t: &Value, central: &Value) -> Vec<String> {
    let mut p = Vec::new();
    role_problems(t, &mut p);
    rule_problems(t, &mut p);
    storage_problems(t, &mut p);
    parameter_problems(t, &mut p);
    if t.get("Transform").is_some() {
        p.push(
            "StackSets with service-managed permissions refuse templates with a transform".into(),
        );
    }
    for (name, r) in resources_of(t, "AWS::Events::Rule") {
        if get(r, &["Properties", "EventBusName"]).and_then(Value::as_str) != Some("default") {
            p.push(format!(
                "{name}: CloudTrail's events arrive on the default bus"
            ));
        }
        for target in get(r, &["Properties", "Targets"])
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if target.get("Arn").map(strings) != Some(vec!["!Ref CentralEventBusArn".into()]) {
                p.push(format!(
                    "{name}: forwards somewhere other than the central bus"
                ));
            }
            if target.get("RoleArn").is_none() {
                p.push(format!("{name}: a cross-account bus target needs a role"));
            }
        }
    }
    let Some(role) = get(t, &["Resources", "MemberRole"]) else {
        p.push("no MemberRole".into());
        return p;
    };
    if role.get("Condition").and_then(Value::as_str) != Some("CreateRole") {
        p.push("MemberRole: IAM is global; create it in one region only (CreateRole)".into());
    }
    if get(role, &["Properties", "RoleName"]).map(strings)
        != Some(vec!["!Ref MemberRoleName".into()])
    {
        p.push("MemberRole: its name must be MemberRoleName, which the function assumes".into());
    }
    let trusted = get(
        role,
        &["Properties", "AssumeRolePolicyDocument", "Statement"],
    )
    .and_then(Value::as_sequence)
    .into_iter()
    .flatten()
    .filter_map(|st| get(st, &["Condition", "ArnEquals", "aws:PrincipalArn"]))
    .flat_map(strings)
    .collect::<Vec<_>>();
    if trusted != ["!Ref CentralRoleArn"] {
        p.push(format!(
            "MemberRole: must trust the central function's role only, got {trusted:?}"
        ));
    }
    let function: std::collections::BTreeSet<String> = actions_of(central, "GuardRole")
        .into_iter()
        .filter(|a| {
            a.starts_with("ec2:")
                || a.starts_with("cloudwatch:")
                || a.starts_with("autoscaling:")
                || a.starts_with("securityhub:")
                || a.starts_with("cloudtrail:")
        })
        .collect();
    let member = actions_of(t, "MemberRole");
    if member != function {
        p.push(format!(
            "MemberRole: permissions {member:?} differ from the function's own {function:?}"
        ));
    }
    // Its alarms tell someone: a topic given, or the central stack.
    for (name, a) in resources_of(t, "AWS::CloudWatch::Alarm") {
        let named = get(a, &["Properties", "AlarmName"])
            .map(strings)
            .unwrap_or_default();
        if !named
            .iter()
            .any(|n| n.contains("imds-guard-member-${AWS::StackName}-"))
        {
            p.push(format!(
                "{name}: named imds-guard-member-<stack>-..., which the forwarding rules watch"
            ));
        }
        let actions = get(a, &["Properties", "AlarmActions"])
            .map(strings_deep)
            .unwrap_or_default();
        if !actions.iter().any(|x| x.contains("AlarmTopicArn")) {
            p.push(format!(
                "{name}: tells no one (AlarmActions to AlarmTopicArn)"
            ));
        }
    }
    let forwarded = get(t, &["Resources", "ForwardAlarmRule"]);
    if forwarded
        .and_then(|r| r.get("Condition"))
        .and_then(Value::as_str)
        != Some("AlarmToCentral")
    {
        p.push(
            "ForwardAlarmRule: without AlarmTopicArn, the alarms must reach the central stack"
                .into(),
        );
    }
    let forward = actions_of(t, "ForwardRole");
    if forward.iter().collect::<Vec<_>>() != ["events:PutEvents"] {
        p.push(format!("ForwardRole: may only put events, got {forward:?}"));
    }
    p
}

#[test]
fn the_member_template_holds() {
    let problems = member_problems(&load("member/template.yaml"), &load("template.yaml"));
    assert!(
        problems.is_empty(),
        "member/template.yaml:\n  {}",
        problems.join("\n  ")
    );
}

fn member_statements(t: &mut Value) -> &mut Vec<Value> {
    statements_mut(t, "MemberRole")
}

fn expect_member_problem(t: &Value, needle: &str) {
    expect_among(member_problems(t, &load("template.yaml")), needle);
}

#[test]
fn a_member_role_trusting_more_than_the_function_is_caught() {
    let mut t = load("member/template.yaml");
    t["Resources"]["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_member_problem(&t, "trusts a whole account");
    expect_member_problem(&t, "must trust the central function's role only");
    let mut t = load("member/template.yaml");
    t["Resources"]["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        ["Principal"] = Value::String("*".into());
    expect_member_problem(&t, "trusts any principal");
}

#[test]
fn a_member_role_allowed_more_or_less_than_the_function_is_caught() {
    let mut t = load("member/template.yaml");
    member_statements(&mut t).push(
        serde_norway::from_str(
            "{Sid: Extra, Effect: Allow, Action: ec2:TerminateInstances, Resource: '*'}",
        )
        .unwrap(),
    );
    expect_member_problem(&t, "unexpected permission ec2:TerminateInstances");
    expect_member_problem(&t, "differ from the function's own");
    let mut t = load("member/template.yaml");
    member_statements(&mut t)
        .retain(|s| s.get("Sid").and_then(Value::as_str) != Some("TagStatusOnly"));
    expect_member_problem(&t, "differ from the function's own");
}

#[test]
fn a_member_stack_that_forwards_elsewhere_or_in_every_region_makes_its_role_is_caught() {
    let mut t = load("member/template.yaml");
    t["Resources"]["ForwardRule"]["Properties"]["Targets"][0]["Arn"] =
        Value::String("arn:aws:events:us-east-1:444455556666:event-bus/other".into());
    expect_member_problem(&t, "forwards somewhere other than the central bus");
    let mut t = load("member/template.yaml");
    t["Resources"]["MemberRole"]
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_member_problem(&t, "create it in one region only");
    let mut t = load("member/template.yaml");
    t["Transform"] = Value::String("AWS::Serverless-2016-10-31".into());
    expect_member_problem(&t, "refuse templates with a transform");
    let mut t = load("member/template.yaml");
    t["Resources"]["ForwardRule"]["Properties"]["Targets"][0]["RetryPolicy"] =
        serde_norway::from_str("{MaximumRetryAttempts: 185}").unwrap();
    expect_member_problem(&t, "refuses a retry policy on an event-bus target");
}

#[test]
fn a_central_bus_open_beyond_the_organization_is_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["CentralEventBusPolicy"]["Properties"]["Statement"]
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_problem(&t, "must admit the organization only");
}

#[test]
fn assuming_roles_outside_central_mode_or_the_organization_is_caught() {
    let mut t = load("template.yaml");
    role_statements(&mut t).push(
        serde_norway::from_str(
            "{Sid: AnyRole, Effect: Allow, Action: sts:AssumeRole, Resource: 'arn:aws:iam::*:role/*'}",
        )
        .unwrap(),
    );
    expect_problem(
        &t,
        "GuardRole/AnyRole: assuming roles must depend on central mode",
    );
    expect_problem(&t, "GuardRole/AnyRole: may assume only the member role");
    expect_problem(
        &t,
        "GuardRole/AnyRole: the member role must be the organization's",
    );
}

/// A statement by `sid`, inside an `!If` too.
fn any_sid_mut<'a>(statements: &'a mut [Value], sid: &str) -> &'a mut Value {
    fn find<'a>(v: &'a mut Value, sid: &str) -> Option<&'a mut Value> {
        match v {
            Value::Tagged(t) => t
                .value
                .as_sequence_mut()?
                .iter_mut()
                .skip(1)
                .find_map(|b| find(b, sid)),
            Value::Mapping(_) if v.get("Sid").and_then(Value::as_str) == Some(sid) => Some(v),
            _ => None,
        }
    }
    statements
        .iter_mut()
        .find_map(|s| find(s, sid))
        .unwrap_or_else(|| panic!("no statement {sid}"))
}

#[test]
fn an_imds_write_that_could_loosen_is_caught_in_both_templates() {
    for (path, role) in [
        ("template.yaml", "GuardRole"),
        ("member/template.yaml", "MemberRole"),
    ] {
        let check = |t: &Value| {
            if path == "template.yaml" {
                problems(t)
            } else {
                member_problems(t, &load("template.yaml"))
            }
        };
        // No condition: the role could set HttpTokens=optional anywhere.
        let mut t = load(path);
        any_sid_mut(statements_mut(&mut t, role), "RequireImdsV2")
            .as_mapping_mut()
            .unwrap()
            .remove("Condition");
        expect_among(
            check(&t),
            "RequireImdsV2: needs StringEquals ec2:Attribute/HttpTokens = required",
        );
        // The instance's key instead of the request's.
        let mut t = load(path);
        let cond = &mut any_sid_mut(statements_mut(&mut t, role), "RequireImdsV2")["Condition"];
        cond["StringEquals"] = serde_norway::from_str(
            "{ec2:MetadataHttpTokens: required, ec2:Attribute/HttpEndpoint: enabled}",
        )
        .unwrap();
        expect_among(check(&t), "ec2:MetadataHttpTokens describes the instance");
        // No Null guard: a request without the value would slip through.
        let mut t = load(path);
        any_sid_mut(statements_mut(&mut t, role), "RequireImdsV2")["Condition"]
            .as_mapping_mut()
            .unwrap()
            .remove("Null");
        expect_among(check(&t), "needs Null ec2:Attribute/HttpTokens = false");
        // An allow that rests on a key AWS does not document for this
        // action: a wrong guess would stop every fix.
        let mut t = load(path);
        any_sid_mut(statements_mut(&mut t, role), "RequireImdsV2")["Condition"]["Null"]
            ["ec2:Attribute/HttpEndpoint"] = Value::String("false".into());
        expect_among(
            check(&t),
            "the allow must rest on ec2:Attribute/HttpTokens alone",
        );
    }
}

#[test]
fn assuming_a_role_outside_the_allowed_accounts_is_caught() {
    let mut t = load("template.yaml");
    let st = any_sid_mut(role_statements(&mut t), "ActInMemberAccounts");
    st["Condition"]["StringEquals"] =
        serde_norway::from_str("{aws:ResourceOrgID: !Ref OrganizationId}").unwrap();
    expect_problem(&t, "only those accounts' roles may be assumed");
}

#[test]
fn a_failure_no_one_hears_of_is_caught() {
    let remove = |t: &mut Value, name: &str| {
        t["Resources"].as_mapping_mut().unwrap().remove(name);
    };
    let mut t = load("template.yaml");
    remove(&mut t, "EventDestinationFailuresAlarm");
    expect_problem(
        &t,
        "no alarm on GuardFunction's failed events that could not be kept",
    );
    let mut t = load("template.yaml");
    remove(&mut t, "CentralStateChangeRuleDeadLetterFailuresAlarm");
    expect_problem(
        &t,
        "CentralStateChangeRule: no alarm on events it could neither deliver nor keep",
    );
    let mut t = load("template.yaml");
    remove(&mut t, "EventThrottlesAlarm");
    expect_problem(&t, "no alarm on the event function's throttles");
    let mut t = load("template.yaml");
    t["Resources"]["GuardFunction"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("ReservedConcurrentExecutions");
    expect_problem(&t, "its concurrency must be reserved");
    let mut t = load("template.yaml");
    t["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping_mut()
        .unwrap()
        .remove("FAILED_EVENTS_QUEUE_URL");
    expect_problem(&t, "FAILED_EVENTS_QUEUE_URL");
    let mut t = load("template.yaml");
    t.as_mapping_mut().unwrap().remove("Rules");
    expect_problem(&t, "a Rules assertion");
    let mut t = load("template.yaml");
    t["Resources"]["MemoryTable"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("ResourcePolicy");
    expect_problem(&t, "only the guard may write its memory");
    let mut t = load("template.yaml");
    t["Resources"]["CentralAlarmRule"]["Properties"]["EventPattern"]["detail"]
        .as_mapping_mut()
        .unwrap()
        .remove("alarmName");
    expect_problem(
        &t,
        "passes on the member stacks' alarms going off, and nothing else",
    );

    let mut m = load("member/template.yaml");
    m["Resources"]["UndeliveredEventsAlarm"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("AlarmActions");
    expect_member_problem(&m, "UndeliveredEventsAlarm: tells no one");
    let mut m = load("member/template.yaml");
    remove(&mut m, "ForwardAlarmRule");
    expect_member_problem(&m, "the alarms must reach the central stack");
    let mut m = load("member/template.yaml");
    remove(&mut m, "ForwardDeadLetterFailuresAlarm");
    expect_member_problem(
        &m,
        "ForwardRule: no alarm on events it could neither deliver nor keep",
    );
}

#[test]
fn a_template_write_without_fixing_on_or_its_owners_opt_in_is_caught() {
    for (path, role) in [
        ("template.yaml", "GuardRole"),
        ("member/template.yaml", "MemberRole"),
    ] {
        let check = |t: &Value| {
            if path == "template.yaml" {
                problems(t)
            } else {
                member_problems(t, &load("template.yaml"))
            }
        };
        let mut t = load(path);
        any_sid_mut(statements_mut(&mut t, role), "FixOptedInTemplates")
            .as_mapping_mut()
            .unwrap()
            .remove("Condition");
        expect_among(check(&t), "only where the owner opted in");
        let mut t = load(path);
        let fix = any_sid_mut(statements_mut(&mut t, role), "FixOptedInTemplates").clone();
        statements_mut(&mut t, role).push(fix);
        expect_among(
            check(&t),
            "writing launch templates must depend on FixSources",
        );
        let mut t = load(path);
        any_sid_mut(statements_mut(&mut t, role), "TagGroupStatusOnly")
            .as_mapping_mut()
            .unwrap()
            .remove("Condition");
        expect_among(check(&t), "a group's tags only the status key");
    }
    let mut t = load("template.yaml");
    t["Resources"]["SourceRule"]["Properties"]["EventPattern"]["detail"]
        .as_mapping_mut()
        .unwrap()
        .remove("$or");
    expect_problem(&t, "SourceRule");
    let mut t = load("template.yaml");
    t["Resources"]["SourceRule"]["Properties"]["Targets"][0]["Arn"] =
        serde_norway::from_str("!GetAtt GuardFunction.Arn").unwrap();
    expect_problem(&t, "source events go to the sources function");
}

#[test]
fn a_fan_out_that_could_lose_a_shard_is_caught() {
    let mut t = load("template.yaml");
    t["Resources"]["SweepStateMachine"]["Properties"]["Definition"]["States"]["Shards"]
        ["ToleratedFailurePercentage"] = Value::Number(0.into());
    expect_problem(&t, "every shard's failure tolerated");
    let mut t = load("template.yaml");
    t["Resources"]["SweepStateMachine"]["Properties"]["Definition"]["States"]["Shards"]
        ["ItemProcessor"]["States"]["Shard"]
        .as_mapping_mut()
        .unwrap()
        .remove("Catch");
    expect_problem(&t, "recorded by name");
    let mut t = load("template.yaml");
    t["Resources"]["SweepStateMachine"]["Properties"]["Definition"]["States"]["Shards"]
        .as_mapping_mut()
        .unwrap()
        .remove("ResultPath");
    expect_problem(&t, "results through the memory");
    let mut t = load("template.yaml");
    t["Resources"]["SweepStateMachine"]
        .as_mapping_mut()
        .unwrap()
        .remove("Condition");
    expect_problem(&t, "only in central mode with a schedule");
    let mut t = load("template.yaml");
    t["Resources"]["SweepStateMachine"]["Properties"]["Definition"]["States"]["Shards"]
        ["ItemProcessor"]["States"]["Shard"]
        .as_mapping_mut()
        .unwrap()
        .remove("OutputPath");
    expect_problem(&t, "children whose outputs stay empty");
}

/// The `(metric, dimension names)` an `ImdsGuard` metric of the dashboard
/// reads: a metric array (`["ImdsGuard", name, dim, value, ...]`) or a
/// `SEARCH('{ImdsGuard,Dim,...} MetricName="name"', ...)` expression.
fn dashboard_metrics(
    body: &serde_json::Value,
) -> std::collections::BTreeSet<(String, Vec<String>)> {
    let mut out = std::collections::BTreeSet::new();
    for w in body["widgets"].as_array().expect("widgets") {
        for m in w["properties"]["metrics"].as_array().into_iter().flatten() {
            let m = m.as_array().expect("a metric is an array");
            if m.first().and_then(|v| v.as_str()) == Some("ImdsGuard") {
                let name = m[1].as_str().unwrap().to_string();
                let mut dims: Vec<String> = m[2..]
                    .iter()
                    .step_by(2)
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect();
                dims.sort();
                out.insert((name, dims));
            }
            for e in m.iter().filter_map(|v| v.get("expression")?.as_str()) {
                let Some(schema) = e.split_once("SEARCH('{").map(|(_, r)| r) else {
                    continue;
                };
                let (dims, rest) = schema.split_once('}').unwrap();
                let mut dims: Vec<&str> = dims.split(',').collect();
                if dims.remove(0) != "ImdsGuard" {
                    continue;
                }
                let name = rest
                    .split_once("MetricName=\"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(n, _)| n)
                    .expect("a metric name");
                let mut dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                dims.sort();
                out.insert((name.to_string(), dims));
            }
        }
    }
    out
}

/// Every `ImdsGuard` metric the function emits by default (one report of
/// each kind, every outcome), as `(metric, dimension names)`.
fn emitted_metrics() -> std::collections::BTreeSet<(String, Vec<String>)> {
    use imds_guard::config::{Config, Mode};
    use imds_guard::report::{
        Idle, InstanceReport, Outcome, RegionSweep, Report, Status, SweepSummary,
    };
    let cfg = Config::default();
    let mut event = Report::handled(Status::Handled, Mode::Enforce, Default::default());
    event.instances = [
        Outcome::Remediated,
        Outcome::Flagged,
        Outcome::Exempt,
        Outcome::Failed,
    ]
    .into_iter()
    .map(|o| InstanceReport::new("i-00000000000000001", o, Idle::None))
    .collect();
    let mut sweep = Report::handled(Status::Swept, Mode::Enforce, Default::default());
    // A region where CloudTrail was asked (LOOKUP_IMDSV1_CALLERS) emits
    // IMDSv1CredentialUsers too.
    let mut asked = RegionSweep::new("us-east-1");
    asked.imdsv1_callers = Some(imds_guard::v1_callers::LastMile {
        asked: 1,
        ..Default::default()
    });
    sweep.sweep = Some(SweepSummary {
        regions: vec![asked],
        ..SweepSummary::default()
    });
    let mut out = std::collections::BTreeSet::new();
    for doc in [event, sweep]
        .iter()
        .flat_map(|r| imds_guard::metrics::documents(&cfg, r, 1_795_000_000_000))
    {
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(d["Namespace"], "ImdsGuard");
            for set in d["Dimensions"].as_array().unwrap() {
                let mut dims: Vec<String> = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                dims.sort();
                for m in d["Metrics"].as_array().unwrap() {
                    out.insert((m["Name"].as_str().unwrap().to_string(), dims.clone()));
                }
            }
        }
    }
    out
}

/// The dashboard's body as CloudWatch gets it (`${...}` filled in).
fn dashboard_body(t: &Value) -> serde_json::Value {
    let body = get(
        t,
        &["Resources", "Dashboard", "Properties", "DashboardBody"],
    )
    .expect("a Dashboard");
    let Value::Tagged(sub) = body else {
        panic!("DashboardBody is a !Sub")
    };
    let text = match &sub.value {
        Value::Sequence(parts) => parts[0].as_str().unwrap().to_string(),
        v => v.as_str().unwrap().to_string(),
    };
    // Every ${Name} becomes a plain value; the JSON must then parse.
    let mut filled = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        filled.push_str(&rest[..i]);
        let end = rest[i..].find('}').unwrap() + i;
        filled.push_str("value");
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    serde_json::from_str(&filled).unwrap_or_else(|e| panic!("the dashboard's body: {e}"))
}

#[test]
fn the_dashboard_shows_exactly_the_metrics_the_function_emits() {
    let shown = dashboard_metrics(&dashboard_body(&load("template.yaml")));
    let emitted = emitted_metrics();
    assert_eq!(shown, emitted, "dashboard vs emitted");
    assert_eq!(emitted.len(), 9);
    // The missed-events alarm watches one of them, as emitted.
    let t = load("template.yaml");
    let alarm = get(&t, &["Resources", "MissedEventsAlarm", "Properties"]).unwrap();
    let watched = (
        alarm["MetricName"].as_str().unwrap().to_string(),
        Vec::<String>::new(),
    );
    assert_eq!(alarm["Namespace"], "ImdsGuard");
    assert!(alarm.get("Dimensions").is_none());
    assert!(emitted.contains(&watched), "{watched:?}");
    // And the check can fail: a misspelt metric, or a dimension the
    // function does not emit by default, is caught.
    let mut broken = load("template.yaml");
    let text = serde_norway::to_string(&broken).unwrap();
    broken = serde_norway::from_str(&text.replace("IMDSv1Left", "ImdsV1Left")).unwrap();
    assert_ne!(dashboard_metrics(&dashboard_body(&broken)), emitted);
    let account = serde_norway::from_str(&text.replace(
        "{ImdsGuard,Region} MetricName=\\\"Ready",
        "{ImdsGuard,Account,Region} MetricName=\\\"Ready",
    ))
    .unwrap();
    assert_ne!(dashboard_metrics(&dashboard_body(&account)), emitted);
}

#[test]
fn findings_and_the_bus_are_permitted_only_when_on_and_only_where_they_go() {
    for (path, role) in [
        ("template.yaml", "GuardRole"),
        ("member/template.yaml", "MemberRole"),
    ] {
        let t = load(path);
        let docs = get(&t, &["Resources", role, "Properties", "Policies"])
            .and_then(Value::as_sequence)
            .unwrap();
        let mut found = false;
        for d in docs {
            // Walk the raw statements with their !If wrappers.
            let text = serde_norway::to_string(d).unwrap();
            if !text.contains("securityhub:") {
                continue;
            }
            found = true;
            assert!(
                text.contains("!If\n") && text.contains("- FileFindings"),
                "{path}: Security Hub only with SecurityHubFindings"
            );
            let st: Vec<&Value> = statements(d.get("PolicyDocument").unwrap())
                .into_iter()
                .filter(|s| {
                    strings(s.get("Action").unwrap())
                        .iter()
                        .any(|a| a.starts_with("securityhub:"))
                })
                .collect();
            assert_eq!(st.len(), 1, "{path}");
            assert_eq!(
                strings(st[0].get("Action").unwrap()),
                ["securityhub:BatchImportFindings"]
            );
            let res = strings(st[0].get("Resource").unwrap()).join(" ");
            assert!(
                res.contains(":product/${AWS::AccountId}/default"),
                "{path}: the account's default product only, got {res}"
            );
        }
        assert!(found, "{path}: no Security Hub permission at all");
    }
    let t = load("template.yaml");
    let text = serde_norway::to_string(get(&t, &["Resources", "GuardRole"]).unwrap()).unwrap();
    assert!(text.contains("- RouteEvents") && text.contains("events:PutEvents"));
    assert!(text.contains("event-bus/${EventBusName}"));
}

#[test]
fn the_functions_outputs_are_handed_off_and_never_lost() {
    let t = load("template.yaml");
    let f = get(&t, &["Resources", "OutputsFunction"]).expect("OutputsFunction");
    assert_eq!(f.get("Condition").and_then(Value::as_str), Some("HandOff"));
    assert_eq!(
        get(f, &["Metadata", "BuildProperties", "Binary"]).and_then(Value::as_str),
        Some("imds-guard-outputs"),
        "the outputs function's binary, the only one that carries Security Hub's and EventBridge's clients"
    );
    let source = get(f, &["Properties", "Events", "HandedOff", "Properties"]).unwrap();
    assert_eq!(
        source.get("FunctionResponseTypes").map(strings),
        Some(vec!["ReportBatchItemFailures".to_string()]),
        "a message not done is named, not the whole batch retried or lost"
    );
    assert!(get(source, &["ScalingConfig", "MaximumConcurrency"]).is_some());
    let q = get(&t, &["Resources", "OutputsQueue", "Properties"]).unwrap();
    assert!(get(q, &["RedrivePolicy", "deadLetterTargetArn"]).is_some());
    let visibility = q.get("VisibilityTimeout").and_then(Value::as_u64).unwrap();
    let timeout = get(f, &["Properties", "Timeout"])
        .and_then(Value::as_u64)
        .unwrap();
    assert!(
        visibility >= 6 * timeout,
        "Lambda's advice for an SQS source"
    );
    let alarm = get(&t, &["Resources", "OutputsDeadLetterAlarm", "Properties"]).unwrap();
    assert!(strings_deep(alarm)
        .iter()
        .any(|s| s.contains("OutputsDeadLetterQueue")));
    let env = strings_deep(get(&t, &["Globals", "Function", "Environment"]).unwrap());
    assert!(env.iter().any(|s| s.contains("OutputsQueue")), "{env:?}");
}

/// First boot, safely: the wait is a delayed SQS message, decided by the
/// sweep binary (which carries CloudWatch's client), only the guard's role
/// may send, a failed decision ends in its own alarmed dead-letter queue,
/// and the grace is bounded as init bounds it.
#[test]
fn a_first_boot_waits_in_a_queue_only_the_guard_sends_to() {
    let t = load("template.yaml");
    let p = get(&t, &["Parameters", "FirstBootGraceSeconds"]).unwrap();
    assert_eq!(
        p.get("Default").and_then(Value::as_u64),
        Some(0),
        "switch at once by default"
    );
    assert_eq!(p.get("MinValue").and_then(Value::as_u64), Some(0));
    assert_eq!(
        p.get("MaxValue").and_then(Value::as_u64),
        Some(imds_guard::first_boot::MAX_GRACE_SECS)
    );
    let f = get(&t, &["Resources", "FirstBootFunction"]).expect("FirstBootFunction");
    assert_eq!(
        f.get("Condition").and_then(Value::as_str),
        Some("FirstBootGrace")
    );
    assert_eq!(
        get(f, &["Metadata", "BuildProperties", "Binary"]).and_then(Value::as_str),
        Some("imds-guard-sweep"),
        "not the event bootstrap: CloudWatch's client stays out of its size budget"
    );
    let source = get(f, &["Properties", "Events", "GraceEnded", "Properties"]).unwrap();
    assert_eq!(
        source.get("FunctionResponseTypes").map(strings),
        Some(vec!["ReportBatchItemFailures".to_string()])
    );
    let senders = strings_deep(get(f, &["Properties", "Environment"]).unwrap());
    assert!(
        senders.iter().any(|s| s.contains("GuardRole.RoleId")),
        "{senders:?}"
    );
    let q = get(&t, &["Resources", "FirstBootQueue", "Properties"]).unwrap();
    assert_eq!(
        q.get("SqsManagedSseEnabled").and_then(Value::as_bool),
        Some(true)
    );
    assert!(strings_deep(q)
        .iter()
        .any(|s| s.contains("FirstBootDeadLetterQueue")));
    let visibility = q.get("VisibilityTimeout").and_then(Value::as_u64).unwrap();
    let timeout = get(f, &["Properties", "Timeout"])
        .and_then(Value::as_u64)
        .unwrap();
    assert!(
        visibility >= 6 * timeout,
        "Lambda's advice for an SQS source"
    );
    let policy =
        serde_norway::to_string(get(&t, &["Resources", "FirstBootQueuePolicy"]).unwrap()).unwrap();
    for needed in [
        "OnlyTheGuardSends",
        "aws:PrincipalArn",
        "GuardRole.Arn",
        "aws:SecureTransport",
        "FirstBootDeadLetterQueue",
    ] {
        assert!(policy.contains(needed), "{needed}: {policy}");
    }
    let alarm = get(&t, &["Resources", "FirstBootDeadLetterAlarm", "Properties"]).unwrap();
    assert!(strings_deep(alarm)
        .iter()
        .any(|s| s.contains("FirstBootDeadLetterQueue")));
    let env = strings_deep(get(&t, &["Globals", "Function", "Environment"]).unwrap());
    assert!(
        env.iter().any(|s| s.contains("FirstBootGraceSeconds")),
        "{env:?}"
    );
    assert!(env.iter().any(|s| s.contains("FirstBootQueue")), "{env:?}");
    let role = serde_norway::to_string(get(&t, &["Resources", "GuardRole"]).unwrap()).unwrap();
    assert!(role.contains("WaitForFirstBoots") && role.contains("ec2:DescribeImages"));
}

#[test]
fn the_break_glass_role_may_write_grants_only() {
    // The table denies the break-glass role every write outside the
    // partitions the guard keeps grants in (`break_glass::partition_of`).
    let t = load("template.yaml");
    let text = serde_norway::to_string(get(&t, &["Resources", "MemoryTable"]).unwrap()).unwrap();
    assert!(text.contains("BreakGlassWritesGrantsOnly"), "{text}");
    let pattern = "breakglass#*";
    assert!(text.contains(pattern), "{text}");
    let grants = imds_guard::break_glass::partition_of(&imds_guard::memory::partition(
        "111122223333",
        "eu-west-1",
    ));
    assert!(grants.starts_with(pattern.trim_end_matches('*')));
    // Nothing else the guard keeps lives under that prefix.
    for other in [
        imds_guard::memory::partition("111122223333", "eu-west-1"),
        imds_guard::memory::ORG_PARTITION.to_string(),
        imds_guard::memory::Record::run_partition("r-1"),
    ] {
        assert!(!other.starts_with("breakglass#"), "{other}");
    }
}

/// One version everywhere: the crate's, the Serverless Application
/// Repository's (a literal there), and what `imds-guard --version` says.
#[test]
fn the_version_is_the_crates_everywhere() {
    let crate_version = env!("CARGO_PKG_VERSION");
    let t = load("template.yaml");
    let sar = get(
        &t,
        &[
            "Metadata",
            "AWS::ServerlessRepo::Application",
            "SemanticVersion",
        ],
    )
    .and_then(Value::as_str)
    .expect("the SAR metadata's SemanticVersion, a string");
    assert_eq!(sar, crate_version);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .arg("--version")
        .output()
        .unwrap();
    // The version, then the commit built from (the domain crate's).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "imds-guard {crate_version} (commit {})",
            imds_guard::release::COMMIT
        )
    );
    assert_eq!(imds_guard::release::VERSION, crate_version);
}

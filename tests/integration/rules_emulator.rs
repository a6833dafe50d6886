//! The rules' event patterns, taken from the templates and run on the
//! emulator's own EventBridge engine (a rule with an SQS target shows what
//! matched; its `TestEventPattern` is a stub): the guard's own changes are
//! left out, everyone else's launches and changes are not.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::Region;
use serde_json::{json, Value};

use crate::common::{fixture, moto_endpoint};
use crate::template::load;

const CENTRAL: &str = "111122223333";
const MEMBER: &str = "444455556666";
const GUARD_ROLE: &str = "imds-guard-GuardRole-1A2B3C4D5E6F";
const MEMBER_ROLE: &str = "imds-guard-member";
const MEMORY_TABLE: &str = "imds-guard-memory";

/// A template's YAML value as the JSON pattern CloudFormation would hand
/// EventBridge, with the intrinsics the patterns use resolved as a deployed
/// stack would (`account`: the stack's).
fn resolve(v: &serde_norway::Value, account: &str) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => serde_json::to_value(n).unwrap(),
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.iter().map(|i| resolve(i, account)).collect()),
        Y::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), resolve(v, account)))
                .collect(),
        ),
        Y::Tagged(t) => {
            let arg = &t.value;
            match t.tag.to_string().as_str() {
                "!GetAtt" if arg.as_str() == Some("GuardRole.Arn") => {
                    json!(format!("arn:aws:iam::{CENTRAL}:role/{GUARD_ROLE}"))
                }
                "!Ref" if arg.as_str() == Some("GuardRole") => json!(GUARD_ROLE),
                "!Ref" if arg.as_str() == Some("MemoryTable") => json!(MEMORY_TABLE),
                "!GetAtt" if arg.as_str() == Some("MemoryTable.Arn") => json!(format!(
                    "arn:aws:dynamodb:us-east-1:{account}:table/{MEMORY_TABLE}"
                )),
                "!Ref" if arg.as_str() == Some("MemberRoleName") => json!(MEMBER_ROLE),
                "!Sub" => json!(arg
                    .as_str()
                    .unwrap()
                    .replace("${AWS::Partition}", "aws")
                    .replace("${AWS::AccountId}", account)
                    .replace("${MemberRoleName}", MEMBER_ROLE)),
                // Triggers=both: the branch with the launches.
                "!If" => resolve(&arg.as_sequence().unwrap()[1], account),
                other => panic!("an intrinsic the pattern test does not know: {other} {arg:?}"),
            }
        }
    }
}

fn pattern(path: &str, rule: &str, account: &str) -> Value {
    let t = load(path);
    resolve(&t["Resources"][rule]["Properties"]["EventPattern"], account)
}

/// Launch events by every kind of caller, and the guard's own changes.
fn events(account: &str) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    let base = |name: &str| {
        let mut e = fixture(name);
        e["account"] = account.into();
        e["detail"]["recipientAccountId"] = account.into();
        e
    };
    let who = |e: &mut Value, identity: Value| e["detail"]["userIdentity"] = identity;

    let mut e = base("run-instances-console.json");
    who(
        &mut e,
        json!({"type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/alice"), "accountId": account, "userName": "alice"}),
    );
    out.insert("IAM user", e);
    let mut e = base("run-instances-console.json");
    who(
        &mut e,
        json!({"type": "Root", "arn": format!("arn:aws:iam::{account}:root"), "accountId": account}),
    );
    out.insert("root user", e);
    let mut e = base("run-instances-console.json");
    who(
        &mut e,
        json!({"type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/bob"), "sessionContext": {"sessionIssuer": {}, "attributes": {"mfaAuthenticated": "true"}}}),
    );
    out.insert("console session, empty sessionIssuer", e);
    out.insert("assumed role", base("run-instances-cli-multi.json"));
    out.insert("Auto Scaling", base("run-instances-autoscaling.json"));
    out.insert("EC2 Fleet RunInstances", base("run-instances-fleet.json"));
    out.insert("CreateFleet (Karpenter)", base("create-fleet.json"));
    out.insert(
        "a person's revert",
        base("modify-metadata-options-revert.json"),
    );
    out.insert(
        "defaults weakened",
        base("modify-metadata-defaults-weaken.json"),
    );
    out.insert("failed call", base("run-instances-failed.json"));

    // The guard's own changes: the function's role in its account, and the
    // member role in a member.
    let issued = |arn: String, name: &str| json!({"type": "AssumedRole", "arn": arn, "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{account}:role/{name}"), "userName": name}}});
    let mut e = base("modify-metadata-options-by-guard.json");
    who(
        &mut e,
        issued(
            format!("arn:aws:sts::{account}:assumed-role/{GUARD_ROLE}/imds-guard-event"),
            GUARD_ROLE,
        ),
    );
    out.insert("the guard's own role", e);
    let mut e = base("modify-metadata-options-by-guard.json");
    who(
        &mut e,
        issued(
            format!("arn:aws:sts::{account}:assumed-role/{MEMBER_ROLE}/imds-guard"),
            MEMBER_ROLE,
        ),
    );
    out.insert("the member role", e);
    let mut e = base("modify-metadata-defaults-weaken.json");
    e["detail"]["requestParameters"] =
        json!({"ModifyInstanceMetadataDefaultsRequest": {"HttpTokens": "required"}});
    who(
        &mut e,
        issued(
            format!("arn:aws:sts::{account}:assumed-role/{GUARD_ROLE}/imds-guard"),
            GUARD_ROLE,
        ),
    );
    out.insert("the guard setting the default", e);

    let mut e = fixture("state-change-pending.json");
    e["account"] = account.into();
    out.insert("instance pending", e.clone());
    e["detail"]["state"] = "running".into();
    out.insert("instance running", e.clone());
    for state in ["stopping", "stopped", "shutting-down", "terminated"] {
        e["detail"]["state"] = state.into();
        out.insert(
            match state {
                "stopping" => "instance stopping",
                "stopped" => "instance stopped",
                "shutting-down" => "instance shutting down",
                _ => "instance terminated",
            },
            e.clone(),
        );
    }
    out
}

/// Which of `events` the emulator's EventBridge routes through a rule with
/// `pattern`.
async fn matched(
    pattern: &Value,
    events: &BTreeMap<&'static str, Value>,
    tag: &str,
) -> BTreeSet<String> {
    moto_endpoint();
    let base = crate::common::emulator_sdk().await;
    let region = Region::new("us-east-1");
    let eb = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&base)
            .region(region)
            .build(),
    );
    let name = format!("imds-guard-pattern-{tag}");
    let (sqs, url, arn) = crate::common::emulator_queue(&name).await;
    eb.put_rule()
        .name(&name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule(&name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (label, e) in events {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(e["source"].as_str().unwrap())
            .detail_type(e["detail-type"].as_str().unwrap())
            .detail(e["detail"].to_string())
            .resources(label.to_string())
            .build();
        let out = eb.put_events().entries(entry).send().await.unwrap();
        assert_eq!(out.failed_entry_count(), 0, "{label}: {out:?}");
    }
    let mut seen = BTreeSet::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let delivered: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            seen.insert(delivered["resources"][0].as_str().unwrap().to_string());
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    seen
}

fn all_but(events: &BTreeMap<&'static str, Value>, left_out: &[&str]) -> BTreeSet<String> {
    events
        .keys()
        .filter(|k| !left_out.contains(k) && !k.starts_with("instance "))
        .map(|k| k.to_string())
        .collect()
}

#[tokio::test]
async fn the_guards_own_changes_never_reach_it_and_everyone_elses_do() {
    let own = [
        "failed call",
        "the guard's own role",
        "the guard setting the default",
    ];

    // One account: the function's role is left out, the member role is not
    // the guard's there (no member stack) and any role of that name is
    // another caller.
    let central_events = events(CENTRAL);
    let got = matched(
        &pattern("template.yaml", "LaunchRule", CENTRAL),
        &central_events,
        "launch",
    )
    .await;
    assert_eq!(got, all_but(&central_events, &own));

    // A member forwards all but the member role's own changes.
    let member_events = events(MEMBER);
    let got = matched(
        &pattern("member/template.yaml", "ForwardRule", MEMBER),
        &member_events,
        "forward",
    )
    .await;
    assert_eq!(
        got,
        all_but(&member_events, &["failed call", "the member role"])
    );

    // The central bus leaves out the guard's own role by its ARN, and no
    // role merely named like one of the guard's in another account: a
    // member's own forwarding rule (above) leaves out the member role by
    // its exact ARN there.
    let got = matched(
        &pattern("template.yaml", "CentralLaunchRule", CENTRAL),
        &member_events,
        "central",
    )
    .await;
    assert_eq!(got, all_but(&member_events, &["failed call"]));
    let got = matched(
        &pattern("template.yaml", "CentralLaunchRule", CENTRAL),
        &central_events,
        "central-own",
    )
    .await;
    assert_eq!(
        got,
        all_but(
            &central_events,
            &[
                "failed call",
                "the guard's own role",
                "the guard setting the default"
            ]
        )
    );

    // The state-change trigger takes instances entering pending and
    // running, nothing else.
    let got = matched(
        &pattern("template.yaml", "StateChangeRule", CENTRAL),
        &central_events,
        "state",
    )
    .await;
    let starting = BTreeSet::from([
        "instance pending".to_string(),
        "instance running".to_string(),
    ]);
    assert_eq!(got, starting);
    // The same on the central bus, and in what a member forwards to it.
    let got = matched(
        &pattern("template.yaml", "CentralStateChangeRule", CENTRAL),
        &central_events,
        "central-state",
    )
    .await;
    assert_eq!(got, starting);
    let got = matched(
        &pattern("member/template.yaml", "ForwardStateChangeRule", MEMBER),
        &events(MEMBER),
        "forward-state",
    )
    .await;
    assert_eq!(got, starting);
}

/// Source events by people and pipelines, and the guard's own fixes.
fn source_events(account: &str) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    let base = |name: &str| {
        let mut e = fixture(name);
        e["account"] = account.into();
        e["detail"]["recipientAccountId"] = account.into();
        e
    };
    for (label, name) in [
        ("template created", "create-launch-template.json"),
        ("template version", "create-launch-template-version.json"),
        ("template default", "modify-launch-template.json"),
        ("group created", "create-auto-scaling-group.json"),
        ("group updated", "update-auto-scaling-group.json"),
    ] {
        out.insert(label, base(name));
    }
    let mut failed = base("create-launch-template-version.json");
    failed["detail"]["errorCode"] = "Client.UnauthorizedOperation".into();
    out.insert("failed source call", failed);
    // Not a source event: another Auto Scaling call.
    let mut other = base("create-auto-scaling-group.json");
    other["detail"]["eventName"] = "SetDesiredCapacity".into();
    out.insert("another Auto Scaling call", other);
    let issued = |role: &str| {
        json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/imds-guard"),
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{account}:role/{role}"), "userName": role}}})
    };
    for (label, role, name) in [
        (
            "the guard's new version",
            GUARD_ROLE,
            "create-launch-template-version.json",
        ),
        (
            "the guard's new default",
            GUARD_ROLE,
            "modify-launch-template.json",
        ),
        (
            "the member role's new version",
            MEMBER_ROLE,
            "create-launch-template-version.json",
        ),
    ] {
        let mut e = base(name);
        e["detail"]["userIdentity"] = issued(role);
        out.insert(label, e);
    }
    out
}

#[tokio::test]
async fn source_rules_take_templates_and_groups_but_the_guards_own_fixes() {
    let people: BTreeSet<String> = [
        "template created",
        "template version",
        "template default",
        "group created",
        "group updated",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let central = source_events(CENTRAL);
    let got = matched(
        &pattern("template.yaml", "SourceRule", CENTRAL),
        &central,
        "sources",
    )
    .await;
    let mut want = people.clone();
    want.insert("the member role's new version".into());
    assert_eq!(got, want, "the function's role is left out on its own bus");

    let member = source_events(MEMBER);
    let got = matched(
        &pattern("member/template.yaml", "ForwardSourceRule", MEMBER),
        &member,
        "forward-sources",
    )
    .await;
    let mut want = people.clone();
    want.insert("the guard's new version".into());
    want.insert("the guard's new default".into());
    assert_eq!(got, want, "a member forwards all but the member role's");

    // The central bus leaves out the guard's role by its ARN only: a role
    // merely named like it (or like the member role) in a member is not
    // the guard (the member's forwarding rule, above, leaves out its own
    // member role by ARN).
    let got = matched(
        &pattern("template.yaml", "CentralSourceRule", CENTRAL),
        &member,
        "central-sources",
    )
    .await;
    let all: BTreeSet<String> = member
        .keys()
        .filter(|k| !["failed source call", "another Auto Scaling call"].contains(k))
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, all, "nothing in a member is left out by name");
    let got = matched(
        &pattern("template.yaml", "CentralSourceRule", CENTRAL),
        &central,
        "central-own-sources",
    )
    .await;
    let mut want = people.clone();
    want.insert("the member role's new version".into());
    assert_eq!(got, want, "the function's own role, by ARN");
}

/// Every call that could remove what protects the guard's memory reaches
/// the tamper rule, whether it names the table or its ARN; the same calls
/// on another table, a failed read and the guard's own writes do not.
#[tokio::test]
async fn every_call_that_could_unprotect_the_memory_is_told() {
    let arn = format!("arn:aws:dynamodb:us-east-1:{CENTRAL}:table/{MEMORY_TABLE}");
    let call = |name: &str, params: Value| {
        json!({
            "version": "0", "id": format!("e-{name}"), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.dynamodb", "account": CENTRAL, "time": "2026-12-01T06:00:00Z",
            "region": "us-east-1", "resources": [],
            "detail": {"eventSource": "dynamodb.amazonaws.com", "eventName": name,
                "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{CENTRAL}:assumed-role/Admin/eve")},
                "requestParameters": params}
        })
    };
    let mut events: BTreeMap<&'static str, Value> = BTreeMap::new();
    events.insert(
        "policy deleted",
        call("DeleteResourcePolicy", json!({"resourceArn": arn})),
    );
    events.insert(
        "policy replaced",
        call(
            "PutResourcePolicy",
            json!({"resourceArn": arn, "policy": "{}"}),
        ),
    );
    events.insert(
        "table deleted",
        call("DeleteTable", json!({"tableName": MEMORY_TABLE})),
    );
    events.insert(
        "table deleted by arn",
        call("DeleteTable", json!({"tableName": arn})),
    );
    events.insert(
        "table updated",
        call("UpdateTable", json!({"tableName": MEMORY_TABLE})),
    );
    events.insert(
        "ttl updated by arn",
        call("UpdateTimeToLive", json!({"tableName": arn})),
    );
    events.insert(
        "another table",
        call("DeleteTable", json!({"tableName": "someone-elses"})),
    );
    events.insert(
        "a read",
        call("DescribeTable", json!({"tableName": MEMORY_TABLE})),
    );
    events.insert(
        "a write",
        call("PutItem", json!({"tableName": MEMORY_TABLE})),
    );
    let got = matched(
        &pattern("template.yaml", "MemoryTamperRule", CENTRAL),
        &events,
        "memory-tamper",
    )
    .await;
    assert_eq!(
        got,
        all_but(&events, &["another table", "a read", "a write"])
    );
}

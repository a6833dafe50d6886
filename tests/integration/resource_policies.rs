//! Who may send to the guard's queues, as IAM decides it: the queue
//! policies of template.yaml with the senders' own policies, evaluated by
//! `iam::evaluate_for` (the emulator evaluates no IAM).

use serde_json::{json, Value as Json};

use crate::iam::{evaluate_for, Decision, Deployment, Request};
use crate::template::load;

const GUARD_ROLE: &str = "arn:aws:iam::123456789012:role/imds-guard-GuardRole-1A2B3C";
const ADMIN_ROLE: &str =
    "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123";

/// The ARN a resource's `!GetAtt <name>.Arn` resolves to once deployed:
/// the guard's role's as `GUARD_ROLE`, any other one of its own.
fn arn_of(placeholder: &str) -> String {
    match placeholder {
        "<GuardRole.Arn>" => GUARD_ROLE.to_string(),
        p => format!(
            "arn:aws:cloudformation:us-east-1:123456789012:resource/{}",
            p.trim_start_matches('<').trim_end_matches(".Arn>")
        ),
    }
}

/// The statements with each `!GetAtt <name>.Arn` the deployed ARN.
fn deployed(statements: Vec<Json>) -> Vec<Json> {
    let mut s = Json::Array(statements).to_string();
    while let Some(end) = s.find(".Arn>") {
        let Some(start) = s[..end].rfind('<') else {
            break;
        };
        let placeholder = s[start..end + 5].to_string();
        s = s.replace(&placeholder, &arn_of(&placeholder));
    }
    serde_json::from_str::<Json>(&s)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// A stack that hands off (findings on): the outputs queues exist.
fn handing_off() -> Deployment<'static> {
    Deployment::with(&[("SecurityHubFindings", "true")])
}

fn send(queue: &str, principal: &str, tls: bool) -> Request {
    Request::new("sqs:SendMessage", queue)
        .key("aws:PrincipalArn", principal)
        .key("aws:SecureTransport", if tls { "true" } else { "false" })
}

#[test]
fn only_the_guards_role_may_send_to_the_outputs_queues_and_only_over_tls() {
    only_the_guard_sends(
        &handing_off(),
        "OutputsQueuePolicy",
        ["<OutputsQueue.Arn>", "<OutputsDeadLetterQueue.Arn>"],
        true,
    );
}

#[test]
fn only_the_guards_role_may_send_to_the_first_boot_queues_and_only_over_tls() {
    only_the_guard_sends(
        &Deployment::with(&[("FirstBootGraceSeconds", "600")]),
        "FirstBootQueuePolicy",
        ["<FirstBootQueue.Arn>", "<FirstBootDeadLetterQueue.Arn>"],
        false,
    );
    let t = load("template.yaml");
    let d = Deployment::with(&[("FirstBootGraceSeconds", "0")]);
    assert!(d.policy_statements(&t, "FirstBootQueuePolicy").is_empty());
}

/// A queue pair (`[queue, dead-letter queue]`) that only the guard's role
/// sends to, over TLS, and whose event source (the guard's role) reads.
fn only_the_guard_sends(
    d: &Deployment<'_>,
    policy_name: &str,
    queues: [&str; 2],
    keeps_refusals: bool,
) {
    let t = load("template.yaml");
    let policy = deployed(d.policy_statements(&t, policy_name));
    assert!(
        !policy.is_empty(),
        "{policy_name}: the queues have no policy"
    );
    let guard = deployed(d.role_statements(&t, "GuardRole"));
    // An administrator of the account: allowed everything by its own policy.
    let admin = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
    for (n, queue) in queues.into_iter().enumerate() {
        let queue = &arn_of(queue);
        // The outputs function keeps refusals in its dead-letter queue; the
        // first-boot function keeps nothing in its own.
        let expected = match n == 0 || keeps_refusals {
            true => Decision::Allow,
            false => Decision::ImplicitDeny,
        };
        assert_eq!(
            evaluate_for(&guard, &policy, GUARD_ROLE, &send(queue, GUARD_ROLE, true)),
            expected,
            "the guard's functions send to {queue}"
        );
        assert_eq!(
            evaluate_for(&admin, &policy, ADMIN_ROLE, &send(queue, ADMIN_ROLE, true)),
            Decision::ExplicitDeny,
            "an administrator's role may not send to {queue}"
        );
        assert_eq!(
            evaluate_for(&guard, &policy, GUARD_ROLE, &send(queue, GUARD_ROLE, false)),
            Decision::ExplicitDeny,
            "not over plain HTTP, to {queue}"
        );
        // A role named like the guard's, in another path: not the guard's.
        let lookalike = "arn:aws:iam::123456789012:role/x/imds-guard-GuardRole-1A2B3C";
        assert_eq!(
            evaluate_for(&admin, &policy, lookalike, &send(queue, lookalike, true)),
            Decision::ExplicitDeny
        );
        // A request that names no principal (SQS moving a message to the
        // dead-letter queue itself) is not caught by the sender deny.
        let unnamed = Request::new("sqs:SendMessage", queue).key("aws:SecureTransport", "true");
        let allow_all = [json!({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"})];
        assert_eq!(
            crate::iam::evaluate(&[&policy[..], &allow_all[..]].concat(), &unnamed),
            Decision::Allow
        );
    }
    // The function's event source still reads and deletes.
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    ] {
        let r = Request::new(action, &arn_of(queues[0]))
            .key("aws:PrincipalArn", GUARD_ROLE)
            .key("aws:SecureTransport", "true");
        assert_eq!(
            evaluate_for(&guard, &policy, GUARD_ROLE, &r),
            Decision::Allow,
            "{action}"
        );
    }
}

#[test]
fn a_stack_that_hands_nothing_off_has_no_outputs_queue_policy() {
    let t = load("template.yaml");
    let d = Deployment::with(&[("SecurityHubFindings", "false"), ("EventBusName", "")]);
    assert!(d.policy_statements(&t, "OutputsQueuePolicy").is_empty());
}

/// The break-glass role writes grants only: a write naming another
/// partition, a write naming none, and PartiQL are denied it by the table;
/// its `Query` (for `break-glass list`) is not.
#[test]
fn the_break_glass_role_writes_only_grants_and_names_their_partition() {
    const BREAK_GLASS: &str = "arn:aws:iam::123456789012:role/incident-responder";
    let t = load("template.yaml");
    let d = Deployment::with(&[("BreakGlassRoleArn", BREAK_GLASS)]);
    let table = deployed(d.policy_statements(&t, "MemoryTable"));
    // What the role's own policy grants it on the table (the operator's).
    let own = vec![json!({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"})];
    let ask = |action: &str, keys: Option<&[&str]>| {
        let mut r = Request::new(
            action,
            "arn:aws:dynamodb:us-east-1:123456789012:table/imds-guard-memory",
        )
        .key("aws:PrincipalArn", BREAK_GLASS);
        if let Some(k) = keys {
            r = r.multi("dynamodb:LeadingKeys", k);
        }
        evaluate_for(&own, &table, BREAK_GLASS, &r)
    };
    let grants = ["breakglass#123456789012#us-east-1"];
    for write in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ] {
        assert_eq!(
            ask(write, Some(&grants)),
            Decision::Allow,
            "{write} on grants"
        );
        assert_eq!(
            ask(write, Some(&["123456789012#us-east-1"])),
            Decision::ExplicitDeny,
            "{write} on the guard's own records"
        );
        assert_eq!(
            ask(write, None),
            Decision::ExplicitDeny,
            "{write} naming no partition"
        );
    }
    for partiql in [
        "dynamodb:PartiQLInsert",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
        "dynamodb:PartiQLSelect",
    ] {
        assert_eq!(ask(partiql, None), Decision::ExplicitDeny, "{partiql}");
    }
    assert_eq!(ask("dynamodb:Query", Some(&grants)), Decision::Allow);
    // The guard's own role is not touched by any of it.
    let guard_put = Request::new("dynamodb:PutItem", "*")
        .key("aws:PrincipalArn", GUARD_ROLE)
        .multi("dynamodb:LeadingKeys", &["123456789012#us-east-1"]);
    assert_eq!(
        evaluate_for(&own, &table, GUARD_ROLE, &guard_put),
        Decision::Allow
    );
}

/// The operators (`OperatorRoleArns`, wildcards allowed) record what
/// `enforce-native` changed, in its own partitions only; a stranger writes
/// nothing, and the guard's role is untouched.
#[test]
fn the_operators_write_only_enforce_natives_records() {
    const OPERATORS: &str =
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Ops_*";
    const ALICE: &str = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Ops_0a1b";
    const STRANGER: &str = "arn:aws:iam::123456789012:role/developer";
    let t = load("template.yaml");
    let d = Deployment::with(&[("OperatorRoleArns", OPERATORS)]);
    let table = deployed(d.policy_statements(&t, "MemoryTable"));
    let own = vec![json!({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"})];
    let ask = |who: &str, action: &str, keys: Option<&[&str]>| {
        let mut r = Request::new(
            action,
            "arn:aws:dynamodb:us-east-1:123456789012:table/imds-guard-memory",
        )
        .key("aws:PrincipalArn", who);
        if let Some(k) = keys {
            r = r.multi("dynamodb:LeadingKeys", k);
        }
        evaluate_for(&own, &table, who, &r)
    };
    let native = imds_guard::native::partition("123456789012", "us-east-1");
    let native = [native.as_str()];
    assert_eq!(
        ask(ALICE, "dynamodb:PutItem", Some(&native)),
        Decision::Allow
    );
    assert_eq!(ask(ALICE, "dynamodb:Query", Some(&native)), Decision::Allow);
    for write in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ] {
        assert_eq!(
            ask(ALICE, write, Some(&["123456789012#us-east-1"])),
            Decision::ExplicitDeny,
            "{write}: an exemption record is never an operator's"
        );
        assert_eq!(
            ask(ALICE, write, None),
            Decision::ExplicitDeny,
            "{write} naming no partition"
        );
        assert_eq!(
            ask(STRANGER, write, Some(&native)),
            Decision::ExplicitDeny,
            "{write} by a stranger"
        );
    }
    assert_eq!(
        ask(ALICE, "dynamodb:PartiQLInsert", None),
        Decision::ExplicitDeny
    );
    assert_eq!(
        ask(
            GUARD_ROLE,
            "dynamodb:PutItem",
            Some(&["123456789012#us-east-1"])
        ),
        Decision::Allow
    );
    // Nothing else the guard keeps lives under that prefix.
    for other in [
        imds_guard::memory::partition("123456789012", "us-east-1"),
        imds_guard::memory::ORG_PARTITION.to_string(),
        imds_guard::memory::Record::run_partition("r-1"),
        imds_guard::break_glass::partition_of("123456789012#us-east-1"),
    ] {
        assert!(!other.starts_with("native#"), "{other}");
    }
}

/// A wide operator pattern (`role/*`) that also matches the guard's and the
/// break-glass roles restricts neither: the guard still writes its own
/// records, the break-glass role its grants.
#[test]
fn a_wide_operator_pattern_never_locks_the_guard_out_of_its_memory() {
    const WIDE: &str = "arn:aws:iam::123456789012:role/*";
    const BREAK_GLASS: &str = "arn:aws:iam::123456789012:role/incident-responder";
    let t = load("template.yaml");
    let d = Deployment::with(&[
        ("OperatorRoleArns", WIDE),
        ("BreakGlassRoleArn", BREAK_GLASS),
    ]);
    let table = deployed(d.policy_statements(&t, "MemoryTable"));
    let own = vec![json!({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"})];
    let put = |who: &str, partition: &str| {
        let r = Request::new(
            "dynamodb:BatchWriteItem",
            "arn:aws:dynamodb:us-east-1:123456789012:table/imds-guard-memory",
        )
        .key("aws:PrincipalArn", who)
        .multi("dynamodb:LeadingKeys", &[partition]);
        evaluate_for(&own, &table, who, &r)
    };
    assert_eq!(put(GUARD_ROLE, "123456789012#us-east-1"), Decision::Allow);
    assert_eq!(
        put(BREAK_GLASS, "breakglass#123456789012#us-east-1"),
        Decision::Allow
    );
    let ops = "arn:aws:iam::123456789012:role/ops";
    assert_eq!(put(ops, "native#123456789012#us-east-1"), Decision::Allow);
    assert_eq!(put(ops, "123456789012#us-east-1"), Decision::ExplicitDeny);
}

/// Who sends to the topic and the failed-events queue, each as IAM sees its
/// request: the test names every sender the guard relies on, and fails
/// when a policy drops one (or lets a stranger in).
#[test]
fn the_topic_and_the_failed_events_queue_take_every_sender_the_guard_needs_and_no_other() {
    const BREAK_GLASS: &str = "arn:aws:iam::123456789012:role/incident-responder";
    const OPERATOR: &str =
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_SecOps_0123abcd";
    let t = load("template.yaml");
    let d = Deployment::with(&[
        ("BreakGlassRoleArn", BREAK_GLASS),
        (
            "OperatorRoleArns",
            "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_SecOps_*",
        ),
        ("OrganizationId", "o-abc123def4"),
        ("MemberRoleName", "imds-guard-member"),
        ("MemberRoleExternalId", "imds-guard-0123456789"),
    ]);
    let anyone = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
    let role = |arn: &str| {
        Request::new("", "")
            .key("aws:PrincipalArn", arn)
            .key("aws:PrincipalIsAWSService", "false")
            .key("aws:SecureTransport", "true")
    };
    let service = |source: &str| {
        Request::new("", "")
            .key("aws:PrincipalIsAWSService", "true")
            .key("aws:SourceArn", source)
            .key("aws:SourceAccount", "123456789012")
            .key("aws:SecureTransport", "true")
    };
    for (policy, action, resource) in [
        (
            "NotificationTopicPolicy",
            "sns:Publish",
            "<NotificationTopic>".to_string(),
        ),
        (
            "FailedEventsQueuePolicy",
            "sqs:SendMessage",
            arn_of("<FailedEventsQueue.Arn>"),
        ),
    ] {
        let statements = deployed(d.policy_statements(&t, policy));
        let decide = |principal: &str, identity: &[Json], r: Request| {
            let mut r = r;
            r.action = action.into();
            r.resource = resource.clone();
            evaluate_for(identity, &statements, principal, &r)
        };
        let guard = deployed(d.role_statements(&t, "GuardRole"));
        // The guard's functions (and Lambda's on-failure destinations, which
        // send as the function's role), the break-glass and operator roles.
        assert_eq!(
            decide(GUARD_ROLE, &guard, role(GUARD_ROLE)),
            Decision::Allow,
            "{policy}: the guard"
        );
        assert_eq!(
            decide(BREAK_GLASS, &anyone, role(BREAK_GLASS)),
            Decision::Allow,
            "{policy}: break-glass"
        );
        assert_eq!(
            decide(OPERATOR, &anyone, role(OPERATOR)),
            Decision::Allow,
            "{policy}: an operator"
        );
        // Anyone else of the account, however broad its own policy.
        assert_eq!(
            decide(ADMIN_ROLE, &anyone, role(ADMIN_ROLE)),
            Decision::ExplicitDeny,
            "{policy}: a stranger"
        );
        if policy == "NotificationTopicPolicy" {
            // The alarm path: CloudWatch alarms, and the rules that publish.
            let alarm = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:imds-guard-errors";
            assert_eq!(
                decide("cloudwatch.amazonaws.com", &[], service(alarm)),
                Decision::Allow,
                "alarms"
            );
            for rule in ["<CentralAlarmRule.Arn>", "<MemoryTamperRule.Arn>"] {
                assert_eq!(
                    decide("events.amazonaws.com", &[], service(&arn_of(rule))),
                    Decision::Allow,
                    "{rule}"
                );
            }
            assert_ne!(
                decide(
                    "events.amazonaws.com",
                    &[],
                    service("arn:aws:events:us-east-1:123456789012:rule/other")
                ),
                Decision::Allow,
                "another rule"
            );
        }
    }
}

/// With a deployment role, only it may change what protects the memory.
#[test]
fn with_a_deployment_role_only_it_may_remove_the_memorys_protection() {
    const DEPLOYER: &str = "arn:aws:iam::123456789012:role/imds-guard-deployer";
    let t = load("template.yaml");
    let anyone = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
    let table = "arn:aws:dynamodb:us-east-1:123456789012:table/imds-guard-memory";
    let protected = deployed(
        Deployment::with(&[("DeploymentRoleArn", DEPLOYER)]).policy_statements(&t, "MemoryTable"),
    );
    let unprotected = deployed(Deployment::with(&[]).policy_statements(&t, "MemoryTable"));
    for action in [
        "dynamodb:DeleteResourcePolicy",
        "dynamodb:PutResourcePolicy",
        "dynamodb:DeleteTable",
        "dynamodb:UpdateTable",
        "dynamodb:UpdateTimeToLive",
    ] {
        let by = |who: &str| Request::new(action, table).key("aws:PrincipalArn", who);
        assert_eq!(
            evaluate_for(&anyone, &protected, ADMIN_ROLE, &by(ADMIN_ROLE)),
            Decision::ExplicitDeny,
            "{action}"
        );
        assert_eq!(
            evaluate_for(&anyone, &protected, DEPLOYER, &by(DEPLOYER)),
            Decision::Allow,
            "{action}"
        );
        // Without one, nothing is denied (only told: MemoryTamperRule).
        assert_eq!(
            evaluate_for(&anyone, &unprotected, ADMIN_ROLE, &by(ADMIN_ROLE)),
            Decision::Allow,
            "{action}"
        );
    }
}

/// `cloudtrail:LookupEvents` reads every management event of the account
/// and region: granted only when a setting needs it (the last mile, or
/// principal exemptions' check), in both stacks.
#[test]
fn cloudtrail_is_read_only_when_a_setting_needs_it() {
    let lookup = |path: &str, params: &[(&str, &str)], role: &str| {
        let t = load(path);
        let statements = deployed(Deployment::with(params).role_statements(&t, role));
        let r = Request::new("cloudtrail:LookupEvents", "*");
        crate::iam::evaluate(&statements, &r)
    };
    assert_eq!(
        lookup("template.yaml", &[], "GuardRole"),
        Decision::ImplicitDeny
    );
    assert_eq!(
        lookup(
            "template.yaml",
            &[("LookupImdsV1Callers", "true")],
            "GuardRole"
        ),
        Decision::Allow
    );
    let central = "arn:aws:iam::111122223333:role/imds-guard-GuardRole-1A2B3C";
    let member = [
        (
            "CentralEventBusArn",
            "arn:aws:events:us-east-1:111122223333:event-bus/imds-guard",
        ),
        ("CentralRoleArn", central),
        ("Triggers", "state-change"),
    ];
    assert_eq!(
        lookup("member/template.yaml", &member, "MemberRole"),
        Decision::ImplicitDeny
    );
    let mut with = member.to_vec();
    with.push(("LookupImdsV1Callers", "true"));
    assert_eq!(
        lookup("member/template.yaml", &with, "MemberRole"),
        Decision::Allow
    );
}

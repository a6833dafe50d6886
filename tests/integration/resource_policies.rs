//! Who may send to the guard's queues, as IAM decides it: the queue
//! policies of template.yaml with the senders' own policies, evaluated by
//! `iam::evaluate_for` (the emulator evaluates no IAM).

use serde_json::{json, Value as Json};

use crate::iam::{evaluate_for, Decision, Deployment, Request};
use crate::template::load;

const GUARD_ROLE: &str = "arn:aws:iam::123456789012:role/imds-guard-GuardRole-1A2B3C";
const ADMIN_ROLE: &str =
    "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123";

/// The statements with each `!GetAtt GuardRole.Arn` the deployed ARN.
fn deployed(statements: Vec<Json>) -> Vec<Json> {
    let s = Json::Array(statements)
        .to_string()
        .replace("<GuardRole.Arn>", GUARD_ROLE);
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
    let t = load("template.yaml");
    let d = handing_off();
    let policy = deployed(d.policy_statements(&t, "OutputsQueuePolicy"));
    assert!(!policy.is_empty(), "the outputs queues have no policy");
    let guard = deployed(d.role_statements(&t, "GuardRole"));
    // An administrator of the account: allowed everything by its own policy.
    let admin = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
    for queue in ["<OutputsQueue.Arn>", "<OutputsDeadLetterQueue.Arn>"] {
        assert_eq!(
            evaluate_for(&guard, &policy, GUARD_ROLE, &send(queue, GUARD_ROLE, true)),
            Decision::Allow,
            "the guard's functions hand off to {queue} (and keep refusals)"
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
        let allow_all =
            vec![json!({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"})];
        assert_eq!(
            crate::iam::evaluate(&[&policy[..], &allow_all[..]].concat(), &unnamed),
            Decision::Allow
        );
    }
    // The outputs function's event source still reads and deletes.
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    ] {
        let r = Request::new(action, "<OutputsQueue.Arn>")
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

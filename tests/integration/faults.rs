//! The guard against mocked EC2 and SNS: AWS behaviour the emulator does
//! not model (eventual consistency, pending instances, throttling, 5xx,
//! missing permissions, partial failure), and the exact calls each event costs.

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::Client as DynamoClient;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_tags::{CreateTagsError, CreateTagsOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_options::{
    ModifyInstanceMetadataOptionsError, ModifyInstanceMetadataOptionsOutput,
};
use aws_sdk_ec2::types::{
    HttpTokensState, Instance, InstanceMetadataEndpointState, InstanceMetadataOptionsResponse,
    InstanceState, InstanceStateName, Reservation, Tag,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_sns::operation::publish::{PublishError, PublishOutput};
use aws_sdk_sns::Client as SnsClient;
use aws_smithy_mocks::{mock, Rule};
use imds_guard::guard::GuardError;
use imds_guard::report::{Outcome, Status};

use crate::common::{config, fixture, guard, guard_with_memory, launch_event};

use crate::common::TOPIC;

pub(crate) fn inst(
    id: &str,
    tokens: &str,
    hop: i32,
    state: InstanceStateName,
    tags: &[(&str, &str)],
) -> Instance {
    Instance::builder()
        .instance_id(id)
        .image_id("ami-0c02fb55956c7d316")
        .state(InstanceState::builder().name(state).build())
        .metadata_options(
            InstanceMetadataOptionsResponse::builder()
                .http_tokens(HttpTokensState::from(tokens))
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(hop)
                .build(),
        )
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

pub(crate) fn described(instances: Vec<Instance>) -> DescribeInstancesOutput {
    DescribeInstancesOutput::builder()
        .reservations(
            Reservation::builder()
                .set_instances(Some(instances))
                .build(),
        )
        .build()
}

pub(crate) fn running(id: &str, tokens: &str, hop: i32) -> Instance {
    inst(id, tokens, hop, InstanceStateName::Running, &[])
}

pub(crate) fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("mocked {code}"))
        .build()
}

pub(crate) fn modify_ok() -> Rule {
    mock!(Ec2Client::modify_instance_metadata_options)
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build())
}

pub(crate) fn tag_ok() -> Rule {
    mock!(Ec2Client::create_tags).then_output(|| CreateTagsOutput::builder().build())
}

/// The guard's memory keeps no message of an earlier delivery.
fn no_kept_message() -> Rule {
    mock!(DynamoClient::query).then_output(|| QueryOutput::builder().build())
}

fn publish_ok() -> Rule {
    mock!(SnsClient::publish).then_output(|| PublishOutput::builder().message_id("m-1").build())
}

const MULTI: [&str; 3] = [
    "i-0aaaaaaaaaaaaaaa1",
    "i-0aaaaaaaaaaaaaaa2",
    "i-0aaaaaaaaaaaaaaa3",
];

#[tokio::test]
async fn compliant_launch_with_options_in_the_event_makes_no_call() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let (modify, tag, publish) = (modify_ok(), tag_ok(), publish_ok());
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify, &tag],
        &[&publish],
    );
    let report = g
        .handle(&fixture("run-instances-compliant.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Compliant);
    assert_eq!(report.notification, "not needed");
    let calls = describe.num_calls() + modify.num_calls() + tag.num_calls() + publish.num_calls();
    assert_eq!(calls, 0, "a compliant launch must cost no AWS call");
}

#[tokio::test]
async fn launch_of_three_costs_one_describe_k_modifies_one_tag_one_publish() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running(MULTI[0], "optional", 1),
            running(MULTI[1], "optional", 2),
            running(MULTI[2], "required", 2),
        ])
    });
    // Only the two optional ones: tokens required, and nothing else sent
    // (the endpoint and hop limit omitted are kept as they are).
    let modify1 = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(|r| {
            r.instance_id() == Some(MULTI[0])
                && r.http_tokens() == Some(&HttpTokensState::Required)
                && r.http_endpoint().is_none()
                && r.http_put_response_hop_limit().is_none()
        })
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let modify2 = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(|r| {
            r.instance_id() == Some(MULTI[1])
                && r.http_endpoint().is_none()
                && r.http_put_response_hop_limit().is_none()
        })
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let tag = mock!(Ec2Client::create_tags)
        .match_requests(|r| {
            r.resources() == [MULTI[0], MULTI[1]]
                && r.tags()[0].key() == Some("imds-guard:status")
                && r.tags()[0].value() == Some("remediated")
        })
        .then_output(|| CreateTagsOutput::builder().build());
    let publish = mock!(SnsClient::publish)
        .match_requests(|r| {
            let attrs = r.message_attributes().unwrap();
            r.topic_arn() == Some(TOPIC)
                && r.subject().unwrap().len() <= 100
                && attrs["outcome"].string_value() == Some("[\"compliant\",\"remediated\"]")
                && attrs["account"].string_value() == Some("111122223333")
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify1, &modify2, &tag],
        &[&publish],
    );
    let report = g
        .handle(&fixture("run-instances-cli-multi.json"))
        .await
        .unwrap();
    let outcomes: Vec<_> = report.instances.iter().map(|i| i.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Remediated, Outcome::Remediated, Outcome::Compliant]
    );
    assert_eq!(
        (
            describe.num_calls(),
            modify1.num_calls(),
            modify2.num_calls(),
            tag.num_calls(),
            publish.num_calls()
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(report.notification, "sent m-1");
}

#[tokio::test]
async fn new_instance_not_yet_visible_is_retried_until_it_appears() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances)
        .sequence()
        .output(|| described(vec![]))
        .times(2)
        .output(move || described(vec![running(id, "optional", 1)]))
        .repeatedly()
        .build();
    let (modify, tag) = (modify_ok(), tag_ok());
    let g = guard(
        config(&[("RETRY_BUDGET_SECONDS", "10")]),
        &[&describe, &modify, &tag],
        &[],
    );
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(describe.num_calls(), 3);
    assert_eq!(report.notification, "no topic configured");
}

#[tokio::test]
async fn modify_answering_not_found_then_pending_is_retried() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(vec![inst(
            id,
            "optional",
            1,
            InstanceStateName::Pending,
            &[],
        )])
    });
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .sequence()
        .error(|| ModifyInstanceMetadataOptionsError::generic(meta("InvalidInstanceID.NotFound")))
        .error(|| ModifyInstanceMetadataOptionsError::generic(meta("IncorrectInstanceState")))
        .output(|| ModifyInstanceMetadataOptionsOutput::builder().build())
        .build();
    let tag = tag_ok();
    let g = guard(
        config(&[("RETRY_BUDGET_SECONDS", "10")]),
        &[&describe, &modify, &tag],
        &[],
    );
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(modify.num_calls(), 3);
    assert_eq!(tag.num_calls(), 1);
}

#[tokio::test]
async fn instance_that_never_leaves_pending_fails_the_invocation_by_name() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(vec![inst(
            id,
            "optional",
            1,
            InstanceStateName::Pending,
            &[],
        )])
    });
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .then_error(|| ModifyInstanceMetadataOptionsError::generic(meta("IncorrectInstanceState")));
    let tag = tag_ok();
    let g = guard(
        config(&[("RETRY_BUDGET_SECONDS", "1")]),
        &[&describe, &modify, &tag],
        &[],
    );
    let err = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(id) && msg.contains("IncorrectInstanceState"),
        "{msg}"
    );
    let GuardError::Unhandled { report, .. } = err else {
        panic!()
    };
    assert_eq!(report.instances[0].outcome, Outcome::Failed);
    assert_eq!(tag.num_calls(), 0, "nothing to tag when nothing changed");
}

#[tokio::test]
async fn instance_terminating_during_retry_is_gone_not_an_error() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances)
        .sequence()
        .output(move || {
            described(vec![inst(
                id,
                "optional",
                1,
                InstanceStateName::Pending,
                &[],
            )])
        })
        .output(move || {
            described(vec![inst(
                id,
                "optional",
                1,
                InstanceStateName::ShuttingDown,
                &[],
            )])
        })
        .build();
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .then_error(|| ModifyInstanceMetadataOptionsError::generic(meta("IncorrectInstanceState")));
    let g = guard(
        config(&[("RETRY_BUDGET_SECONDS", "10")]),
        &[&describe, &modify],
        &[],
    );
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Gone);
    assert_eq!(modify.num_calls(), 1);
}

#[tokio::test]
async fn terminated_instance_is_gone_without_a_write() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(vec![inst(
            id,
            "optional",
            1,
            InstanceStateName::Terminated,
            &[],
        )])
    });
    let (modify, tag) = (modify_ok(), tag_ok());
    let g = guard(config(&[]), &[&describe, &modify, &tag], &[]);
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Gone);
    assert_eq!(modify.num_calls() + tag.num_calls(), 0);
}

pub(crate) const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>";
const INTERNAL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InternalError</Code><Message>An internal error has occurred</Message></Error></Errors><RequestID>r-2</RequestID></Response>";

#[tokio::test]
async fn throttling_and_5xx_are_retried_by_the_sdk() {
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances)
        .sequence()
        .http_status(500, Some(INTERNAL.into()))
        .output(move || described(vec![running(id, "optional", 1)]))
        .build();
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .sequence()
        .http_status(503, Some(THROTTLED.into()))
        .times(2)
        .output(|| ModifyInstanceMetadataOptionsOutput::builder().build())
        .build();
    let tag = tag_ok();
    let g = guard(config(&[]), &[&describe, &modify, &tag], &[]);
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!((describe.num_calls(), modify.num_calls()), (2, 3));
}

#[tokio::test]
async fn persistent_throttling_fails_the_instance_after_the_sdk_gives_up() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running("i-0a1b2c3d4e5f60718", "optional", 1)]));
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .sequence()
        .http_status(503, Some(THROTTLED.into()))
        .repeatedly()
        .build();
    let g = guard(config(&[]), &[&describe, &modify], &[]);
    let err = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RequestLimitExceeded"), "{err}");
    assert_eq!(modify.num_calls(), 5, "the SDK's 5 attempts, no more");
}

#[tokio::test]
async fn missing_permission_is_named_not_retried_and_others_still_handled() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running(MULTI[0], "optional", 1),
            running(MULTI[1], "optional", 2),
            running(MULTI[2], "required", 2),
        ])
    });
    let denied = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(|r| r.instance_id() == Some(MULTI[0]))
        .then_error(|| {
            ModifyInstanceMetadataOptionsError::generic(
                ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("You are not authorized to perform this operation. Encoded authorization failure message: AAAA")
                    .build(),
            )
        });
    let modify = modify_ok();
    let tag = mock!(Ec2Client::create_tags)
        .match_requests(|r| r.resources() == [MULTI[1]])
        .then_output(|| CreateTagsOutput::builder().build());
    let publish = publish_ok();
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &denied, &modify, &tag],
        &[&publish],
    );
    let err = g
        .handle(&fixture("run-instances-cli-multi.json"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("1 of 3 not handled"), "{msg}");
    assert!(
        msg.contains(MULTI[0]) && msg.contains("ec2:ModifyInstanceMetadataOptions"),
        "{msg}"
    );
    assert!(
        !msg.contains(MULTI[1]),
        "the remediated one is not named: {msg}"
    );
    assert_eq!(denied.num_calls(), 1, "a missing permission is not retried");
    assert_eq!(
        (modify.num_calls(), tag.num_calls(), publish.num_calls()),
        (1, 1, 1)
    );
    let GuardError::Unhandled { report, .. } = err else {
        panic!()
    };
    let outcomes: Vec<_> = report.instances.iter().map(|i| i.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Failed, Outcome::Remediated, Outcome::Compliant]
    );
}

#[tokio::test]
async fn notification_failure_keeps_the_remediation_and_a_retry_doubles_nothing() {
    let id = "i-0a1b2c3d4e5f60718";
    // EC2 as it is before and after the first delivery.
    let describe = mock!(Ec2Client::describe_instances)
        .sequence()
        .output(move || described(vec![running(id, "optional", 1)]))
        .output(move || {
            described(vec![inst(
                id,
                "required",
                1,
                InstanceStateName::Running,
                &[("imds-guard:status", "remediated")],
            )])
        })
        .repeatedly()
        .build();
    let (modify, tag) = (modify_ok(), tag_ok());
    let publish = mock!(SnsClient::publish).then_error(|| {
        PublishError::generic(
            ErrorMetadata::builder()
                .code("InternalError")
                .message("boom")
                .build(),
        )
    });
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify, &tag],
        &[&publish],
    );
    let event = fixture("run-instances-console.json");
    let err = g.handle(&event).await.unwrap_err();
    assert!(err.to_string().contains("notification failed"), "{err}");
    assert!(err.to_string().contains("1 remediated"), "{err}");
    assert_eq!(
        (modify.num_calls(), tag.num_calls()),
        (1, 1),
        "remediation done despite SNS"
    );

    // The asynchronous retry of the same event.
    let report = g.handle(&event).await.unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Compliant);
    assert_eq!(
        (modify.num_calls(), tag.num_calls()),
        (1, 1),
        "nothing written twice"
    );
}

#[tokio::test]
async fn tag_failure_after_remediation_fails_the_invocation() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running("i-0a1b2c3d4e5f60718", "optional", 1)]));
    let modify = modify_ok();
    let tag = mock!(Ec2Client::create_tags)
        .then_error(|| CreateTagsError::generic(meta("UnauthorizedOperation")));
    let g = guard(config(&[]), &[&describe, &modify, &tag], &[]);
    let err = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("remediated, but tagging failed") && msg.contains("ec2:CreateTags"),
        "{msg}"
    );
}

#[tokio::test]
async fn failed_launch_and_unrelated_events_make_no_call() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let g = guard(config(&[]), &[&describe], &[]);
    let r = g
        .handle(&fixture("run-instances-failed.json"))
        .await
        .unwrap();
    assert_eq!(r.status, Status::FailedCall);
    assert!(r.reason.unwrap().contains("Client.UnauthorizedOperation"));
    for f in ["unrelated-create-tags.json"] {
        let r = g.handle(&fixture(f)).await.unwrap();
        assert_eq!(r.status, Status::Ignored, "{f}");
        assert!(r.reason.is_some());
    }
    assert_eq!(describe.num_calls(), 0);
}

#[tokio::test]
async fn malformed_ec2_event_is_an_error_naming_the_event() {
    let g = guard(config(&[]), &[], &[]);
    let mut ev = fixture("run-instances-console.json");
    ev["detail"]["responseElements"]["instancesSet"]["items"] = "nope".into();
    let err = g.handle(&ev).await.unwrap_err();
    assert!(matches!(err, GuardError::Malformed(_)));
    assert!(
        err.to_string()
            .contains("d3c2b1a0-9f8e-4d7c-b6a5-0f1e2d3c4b5a"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_items_fail_the_invocation_after_the_rest_is_done() {
    let ids = [
        "i-0aaaaaaaaaaaaaaa1".to_string(),
        "i-0aaaaaaaaaaaaaaa2".to_string(),
    ];
    let mut ev = launch_event("run-instances-cli-multi.json", &ids, None);
    ev["detail"]["responseElements"]["instancesSet"]["items"][1]["instanceId"] = 7.into();
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running(MULTI[0], "optional", 1)]));
    let (modify, tag) = (modify_ok(), tag_ok());
    let g = guard(config(&[]), &[&describe, &modify, &tag], &[]);
    let err = g.handle(&ev).await.unwrap_err();
    assert!(err.to_string().contains("instancesSet.items[1]"), "{err}");
    assert_eq!(
        modify.num_calls(),
        1,
        "the readable instance was remediated"
    );
}

#[tokio::test]
async fn exempt_by_tag_is_reported_and_untouched() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![inst(
            "i-0a1b2c3d4e5f60718",
            "optional",
            1,
            InstanceStateName::Running,
            &[("legacy-imds", "true")],
        )])
    });
    let (modify, tag) = (modify_ok(), tag_ok());
    let publish = mock!(SnsClient::publish)
        .match_requests(|r| {
            r.message()
                .unwrap()
                .contains("\"exemption\": \"tag legacy-imds=true\"")
        })
        .then_output(|| PublishOutput::builder().message_id("m-2").build());
    let g = guard(
        config(&[
            ("EXEMPT_TAG_KEY", "legacy-imds"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
        ]),
        &[&describe, &modify, &tag],
        &[&publish],
    );
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Exempt);
    assert_eq!(
        (modify.num_calls(), tag.num_calls(), publish.num_calls()),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn audit_writes_nothing_and_says_what_enforce_would_do() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running("i-0a1b2c3d4e5f60718", "optional", 1)]));
    let (modify, tag) = (modify_ok(), tag_ok());
    let publish = mock!(SnsClient::publish)
        .match_requests(|r| {
            let m = r.message().unwrap();
            m.contains("\"would\": \"set HttpTokens=required")
                && r.subject()
                    .unwrap()
                    .starts_with("imds-guard audit: 1 flagged")
        })
        .then_output(|| PublishOutput::builder().message_id("m-3").build());
    let g = guard(
        config(&[("GUARD_MODE", "audit"), ("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify, &tag],
        &[&publish],
    );
    let report = g
        .handle(&fixture("run-instances-console.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Flagged);
    assert_eq!(
        (modify.num_calls(), tag.num_calls(), publish.num_calls()),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn notify_tags_once_and_a_repeated_launch_event_is_quiet() {
    let id = "i-0a1b2c3d4e5f60718";
    // EC2 shows the tag the first delivery wrote; only the guard's memory,
    // not that tag, makes the second delivery quiet.
    let describe = mock!(Ec2Client::describe_instances)
        .sequence()
        .output(move || described(vec![running(id, "optional", 1)]))
        .output(move || {
            described(vec![inst(
                id,
                "optional",
                1,
                InstanceStateName::Running,
                &[("imds-guard:status", "noncompliant")],
            )])
        })
        .repeatedly()
        .build();
    let modify = modify_ok();
    let tag = mock!(Ec2Client::create_tags)
        .match_requests(|r| r.tags()[0].value() == Some("noncompliant"))
        .then_output(|| CreateTagsOutput::builder().build());
    let publish = publish_ok();
    // The claim: free the first time, told (ConditionalCheckFailed) after.
    let claim = mock!(DynamoClient::put_item)
        .match_requests(|r| {
            r.item()
                .and_then(|i| i.get("sk"))
                .and_then(|v| v.as_s().ok())
                .is_some_and(|sk| sk == "noticed#i-0a1b2c3d4e5f60718")
                && r.condition_expression()
                    .is_some_and(|c| c.contains("attribute_not_exists(told)"))
        })
        .sequence()
        .output(|| PutItemOutput::builder().build())
        .error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .build(),
            )
        })
        .build();
    let mark_told = mock!(DynamoClient::batch_write_item)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let g = guard_with_memory(
        config(&[("GUARD_MODE", "notify"), ("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify, &tag],
        &[&publish],
        &[&claim, &mark_told, &no_kept_message()],
    );
    let event = fixture("run-instances-console.json");
    let first = g.handle(&event).await.unwrap();
    assert_eq!(first.instances[0].outcome, Outcome::Flagged);
    let again = g.handle(&event).await.unwrap();
    assert_eq!(again.instances[0].outcome, Outcome::Flagged);
    assert_eq!(again.notification, "not needed");
    assert_eq!(
        (modify.num_calls(), tag.num_calls(), publish.num_calls()),
        (0, 1, 1)
    );
    assert_eq!((claim.num_calls(), mark_told.num_calls()), (2, 1));
}

#[tokio::test]
async fn a_forged_noncompliant_tag_does_not_silence_the_first_notice() {
    // Launched with the status tag already set: without the guard's own
    // record, it is news like any other launch.
    let id = "i-0a1b2c3d4e5f60718";
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(vec![inst(
            id,
            "optional",
            1,
            InstanceStateName::Running,
            &[("imds-guard:status", "noncompliant")],
        )])
    });
    let tag = tag_ok();
    let publish = publish_ok();
    let claim = mock!(DynamoClient::put_item).then_output(|| PutItemOutput::builder().build());
    let mark_told = mock!(DynamoClient::batch_write_item)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let mut ev = fixture("run-instances-console.json");
    ev["detail"]["responseElements"]["instancesSet"]["items"][0]["tagSet"] =
        serde_json::json!({"items": [{"key": "imds-guard:status", "value": "noncompliant"}]});
    for g in [
        guard(
            config(&[("GUARD_MODE", "notify"), ("NOTIFY_TOPIC_ARN", TOPIC)]),
            &[&describe, &tag],
            &[&publish],
        ),
        guard_with_memory(
            config(&[("GUARD_MODE", "notify"), ("NOTIFY_TOPIC_ARN", TOPIC)]),
            &[&describe, &tag],
            &[&publish],
            &[&claim, &mark_told, &no_kept_message()],
        ),
    ] {
        let r = g.handle(&ev).await.unwrap();
        assert!(r.instances[0].notify, "{:?}", r.instances[0]);
        assert!(r.notification.starts_with("sent "), "{}", r.notification);
    }
    assert_eq!(publish.num_calls(), 2);
}

#[tokio::test]
async fn hop_limit_above_the_maximum_is_lowered_never_raised() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running(MULTI[0], "optional", 1),
            running(MULTI[1], "optional", 8),
            running(MULTI[2], "required", 2),
        ])
    });
    // Within the ceiling: the hop limit is not sent (kept as it is).
    let low = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(|r| {
            r.instance_id() == Some(MULTI[0]) && r.http_put_response_hop_limit().is_none()
        })
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let lowered = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(|r| {
            r.instance_id() == Some(MULTI[1]) && r.http_put_response_hop_limit() == Some(2)
        })
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let tag = tag_ok();
    let g = guard(
        config(&[("MAX_HOP_LIMIT", "2")]),
        &[&describe, &low, &lowered, &tag],
        &[],
    );
    let report = g
        .handle(&fixture("run-instances-cli-multi.json"))
        .await
        .unwrap();
    assert_eq!((low.num_calls(), lowered.num_calls()), (1, 1));
    assert_eq!(report.instances[2].outcome, Outcome::Compliant);
}

#[tokio::test]
async fn metadata_revert_is_looked_up_and_fixed() {
    let id = "i-0fedcba9876543210";
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(move || described(vec![running(id, "optional", 1)]));
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(move |r| r.instance_id() == Some(id))
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let tag = tag_ok();
    let g = guard(config(&[]), &[&describe, &modify, &tag], &[]);
    let report = g
        .handle(&fixture("modify-metadata-options-revert.json"))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(report.event.unwrap().region, "eu-west-1");
    assert_eq!((describe.num_calls(), modify.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_revert_whose_break_glass_grants_cannot_be_read_is_not_undone_blind() {
    // DynamoDB fails the read of the account-region's grants: the instance
    // fails (the event is retried) and nothing is written to it.
    let id = "i-0fedcba9876543210";
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(move || described(vec![running(id, "optional", 1)]));
    let modify = modify_ok();
    let tag = tag_ok();
    let unreadable = mock!(DynamoClient::query).then_error(|| {
        aws_sdk_dynamodb::operation::query::QueryError::generic(
            ErrorMetadata::builder().code("InternalServerError").build(),
        )
    });
    let g = guard_with_memory(
        config(&[("MEMORY_TABLE", "imds-guard-memory")]),
        &[&describe, &modify, &tag],
        &[],
        &[&unreadable],
    );
    let err = g
        .handle(&fixture("modify-metadata-options-revert.json"))
        .await
        .unwrap_err();
    let GuardError::Unhandled { report, .. } = err else {
        panic!("expected the instance to fail: {err}")
    };
    let r = &report.instances[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("break-glass grant"),
        "{r:?}"
    );
    assert_eq!((modify.num_calls(), tag.num_calls()), (0, 0));
}

#[tokio::test]
async fn principal_exemption_matches_the_role_behind_a_session() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running(MULTI[0], "optional", 1),
            running(MULTI[1], "optional", 2),
            running(MULTI[2], "required", 2),
        ])
    });
    let modify = modify_ok();
    let tag = tag_ok();
    // Recorded in the guard's memory, where only it writes, so a sweep
    // (which knows no principal) leaves them alone too: one call for both,
    // each with its entry for CloudTrail's check (`confirm`).
    let recorded = mock!(DynamoClient::batch_write_item)
        .match_requests(|i| {
            let items = &i.request_items().unwrap()["imds-guard-memory"];
            let sk: Vec<&str> = items
                .iter()
                .filter_map(|w| {
                    w.put_request()?
                        .item()
                        .get("sk")?
                        .as_s()
                        .ok()
                        .map(String::as_str)
                })
                .collect();
            let exempt: Vec<&str> = sk
                .iter()
                .copied()
                .filter(|s| s.starts_with("exempt#"))
                .collect();
            exempt
                == [
                    format!("exempt#{}", MULTI[0]).as_str(),
                    format!("exempt#{}", MULTI[1]).as_str(),
                ]
                && sk.iter().filter(|s| s.starts_with("unconfirmed#")).count() == 2
        })
        .then_output(|| BatchWriteItemOutput::builder().build());
    let claim = mock!(DynamoClient::put_item).then_output(|| PutItemOutput::builder().build());
    // No break-glass grant here.
    let grants = no_kept_message();
    let g = guard_with_memory(
        config(&[(
            "EXEMPT_PRINCIPAL_ARNS",
            "arn:aws:iam::111122223333:role/DevOps",
        )]),
        &[&describe, &modify, &tag],
        &[],
        &[&recorded, &claim, &grants],
    );
    let report = g
        .handle(&fixture("run-instances-cli-multi.json"))
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Exempt), 2);
    assert_eq!(modify.num_calls(), 0);
    assert_eq!(
        tag.num_calls(),
        0,
        "nothing is written to an exempt instance"
    );
    assert_eq!(recorded.num_calls(), 1);
}

#[tokio::test]
async fn an_exemption_that_cannot_be_recorded_fails_the_event_for_a_retry() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running(MULTI[0], "optional", 1)]));
    let refused = mock!(DynamoClient::batch_write_item).then_error(|| {
        aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError::generic(
            aws_sdk_dynamodb::error::ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed")
                .build(),
        )
    });
    let claim = mock!(DynamoClient::put_item).then_output(|| PutItemOutput::builder().build());
    // No break-glass grant here.
    let grants = no_kept_message();
    let g = guard_with_memory(
        config(&[(
            "EXEMPT_PRINCIPAL_ARNS",
            "arn:aws:iam::111122223333:role/DevOps",
        )]),
        &[&describe],
        &[],
        &[&refused, &claim, &grants],
    );
    let ev = launch_event(
        "run-instances-cli-multi.json",
        &[MULTI[0].to_string()],
        None,
    );
    let Err(GuardError::Unhandled { summary, report }) = g.handle(&ev).await else {
        panic!("expected a failure")
    };
    assert_eq!(
        report.instances[0].outcome,
        Outcome::Exempt,
        "left as it is"
    );
    assert!(summary.contains("could not be recorded"), "{summary}");
}

/// How an operation misbehaves before (or instead of) answering.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Throttled twice (HTTP 503 RequestLimitExceeded / 400 Throttling), then fine.
    Throttled,
    /// One HTTP 500, then fine.
    ServerError,
    /// Refused for lack of permission, every time.
    Denied,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Describe,
    Modify,
    Tag,
    Publish,
}

fn ec2_error(code: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>mocked</Message></Error></Errors><RequestID>r</RequestID></Response>")
}

fn sns_error(code: &str) -> String {
    format!("<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>mocked</Message></Error><RequestId>r</RequestId></ErrorResponse>")
}

/// (status, body) of each failing answer for `op`, and whether it then succeeds.
fn failures(op: Op, fault: Fault) -> (Vec<(u16, String)>, bool) {
    let sns = op == Op::Publish;
    match fault {
        Fault::Throttled if sns => (vec![(400, sns_error("Throttling")); 2], true),
        Fault::Throttled => (vec![(503, ec2_error("RequestLimitExceeded")); 2], true),
        Fault::ServerError if sns => (vec![(500, sns_error("InternalError"))], true),
        Fault::ServerError => (vec![(500, ec2_error("InternalError"))], true),
        Fault::Denied if sns => (vec![(403, sns_error("AuthorizationError"))], false),
        Fault::Denied => (vec![(403, ec2_error("UnauthorizedOperation"))], false),
    }
}

macro_rules! faulty {
    ($client:ty, $method:ident, $fails:expr, $recovers:expr, $ok:expr) => {{
        let mut seq = mock!(<$client>::$method).sequence();
        for (status, body) in $fails.iter().cloned() {
            seq = seq.http_status(status, Some(body));
        }
        if $recovers {
            seq.output($ok).repeatedly().build()
        } else {
            let (status, body) = $fails[0].clone();
            seq.http_status(status, Some(body)).repeatedly().build()
        }
    }};
}

#[tokio::test]
async fn fault_matrix_every_call_every_fault() {
    let id = "i-0a1b2c3d4e5f60718";
    for op in [Op::Describe, Op::Modify, Op::Tag, Op::Publish] {
        for fault in [Fault::Throttled, Fault::ServerError, Fault::Denied] {
            let (fails, recovers) = failures(op, fault);
            let ok_describe = move || described(vec![running(id, "optional", 1)]);
            let describe = if op == Op::Describe {
                faulty!(Ec2Client, describe_instances, fails, recovers, ok_describe)
            } else {
                mock!(Ec2Client::describe_instances).then_output(ok_describe)
            };
            let modify = if op == Op::Modify {
                faulty!(
                    Ec2Client,
                    modify_instance_metadata_options,
                    fails,
                    recovers,
                    || ModifyInstanceMetadataOptionsOutput::builder().build()
                )
            } else {
                modify_ok()
            };
            let tag = if op == Op::Tag {
                faulty!(Ec2Client, create_tags, fails, recovers, || {
                    CreateTagsOutput::builder().build()
                })
            } else {
                tag_ok()
            };
            let publish = if op == Op::Publish {
                faulty!(SnsClient, publish, fails, recovers, || {
                    PublishOutput::builder().message_id("m").build()
                })
            } else {
                publish_ok()
            };
            let g = guard(
                config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
                &[&describe, &modify, &tag],
                &[&publish],
            );
            let result = g.handle(&fixture("run-instances-console.json")).await;
            let calls = match op {
                Op::Describe => describe.num_calls(),
                Op::Modify => modify.num_calls(),
                Op::Tag => tag.num_calls(),
                Op::Publish => publish.num_calls(),
            };
            let case = format!("{op:?} {fault:?}");
            if recovers {
                let report = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(report.instances[0].outcome, Outcome::Remediated, "{case}");
                assert_eq!(calls, fails.len() + 1, "{case}: retried until it answered");
                let sent = if op == Op::Publish {
                    "sent m"
                } else {
                    "sent m-1"
                };
                assert_eq!(report.notification, sent, "{case}");
            } else {
                let msg = result.expect_err(&case).to_string();
                assert_eq!(calls, 1, "{case}: a missing permission is not retried");
                let permission = match op {
                    Op::Describe => "ec2:DescribeInstances",
                    Op::Modify => "ec2:ModifyInstanceMetadataOptions",
                    Op::Tag => "ec2:CreateTags",
                    Op::Publish => "sns:Publish",
                };
                assert!(msg.contains(permission), "{case}: {msg}");
                if op == Op::Publish {
                    assert!(
                        msg.contains("notification failed") && msg.contains("1 remediated"),
                        "{case}: {msg}"
                    );
                } else {
                    assert!(msg.contains(id), "{case}: {msg}");
                }
                // Whatever failed, nothing was done twice and no write was skipped that could be done.
                assert!(modify.num_calls() <= 1, "{case}");
            }
        }
    }
}

/// A DescribeInstances answered with `ids` when the request filters on
/// `name` = `value` only.
fn describe_by_filter(
    name: &'static str,
    value: &'static str,
    ids: &'static [&'static str],
) -> Rule {
    mock!(Ec2Client::describe_instances)
        .match_requests(move |r| {
            r.filters().len() == 1
                && r.filters()[0].name() == Some(name)
                && r.filters()[0].values() == [value.to_string()]
                && r.instance_ids().is_empty()
        })
        .then_output(move || described(ids.iter().map(|id| running(id, "optional", 2)).collect()))
}

#[tokio::test]
async fn a_cut_launch_is_looked_up_by_client_token_or_reservation_id() {
    const IDS: &[&str] = &["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"];
    // By the client token the request carried (the emulator refuses the
    // filter; real EC2 takes it).
    let by_token = describe_by_filter("client-token", "c0ffee00-1234-4abc-9def-0123456789ab", IDS);
    let (modify, tag, publish) = (modify_ok(), tag_ok(), publish_ok());
    let mut ev = fixture("run-instances-truncated.json");
    ev["detail"]["requestParameters"]["instancesSet"]["items"][0]["minCount"] = 2.into();
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&by_token, &modify, &tag],
        &[&publish],
    );
    let r = g.handle(&ev).await.unwrap();
    assert_eq!(r.count(Outcome::Remediated), 2);
    assert_eq!((by_token.num_calls(), modify.num_calls()), (1, 2));

    // By the reservation id, when the response kept it.
    let by_reservation = describe_by_filter("reservation-id", "r-0123456789abcdef0", IDS);
    ev["detail"]["responseElements"] = serde_json::json!({"reservationId": "r-0123456789abcdef0"});
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&by_reservation, &modify_ok(), &tag_ok()],
        &[&publish_ok()],
    );
    let r = g.handle(&ev).await.unwrap();
    assert_eq!(r.count(Outcome::Remediated), 2);
    assert_eq!(by_reservation.num_calls(), 1);
}

#[tokio::test]
async fn an_event_the_guard_caused_costs_no_call() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let (modify, tag, publish) = (modify_ok(), tag_ok(), publish_ok());
    let g = guard(
        config(&[("NOTIFY_TOPIC_ARN", TOPIC)]),
        &[&describe, &modify, &tag],
        &[&publish],
    );
    let r = g
        .handle(&fixture("modify-metadata-options-by-guard.json"))
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Compliant);
    let calls = describe.num_calls() + modify.num_calls() + tag.num_calls() + publish.num_calls();
    assert_eq!(calls, 0, "decided from the options its event carries");
}

#[tokio::test]
async fn an_event_naming_no_account_is_refused_where_accounts_are_restricted() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let publish = publish_ok();
    let mut ev = fixture("run-instances-console.json");
    ev.as_object_mut().unwrap().remove("account");
    ev["detail"]
        .as_object_mut()
        .unwrap()
        .remove("recipientAccountId");
    let g = guard(
        config(&[
            ("NOTIFY_TOPIC_ARN", TOPIC),
            ("ALLOWED_ACCOUNT_IDS", "111122223333"),
        ]),
        &[&describe],
        &[&publish],
    );
    let r = g.handle(&ev).await.unwrap();
    assert_eq!(r.status, Status::Refused);
    assert_eq!(r.instances[0].outcome, Outcome::Refused);
    assert_eq!(describe.num_calls(), 0, "nothing looked at");
    assert_eq!(publish.num_calls(), 1, "a person is told");
}

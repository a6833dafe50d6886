//! `imds-guard doctor` on mocked AWS: each ✓, ⚠ and ✗ from what each
//! service answers, the exit status, and the operator's policy kept in step
//! with the calls the command makes.

use std::time::Duration;

use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
use aws_sdk_cloudformation::operation::list_stack_resources::ListStackResourcesOutput;
use aws_sdk_cloudformation::types::{Output, Parameter, Stack, StackResourceSummary, StackStatus};
use aws_sdk_cloudtrail::operation::describe_trails::{DescribeTrailsError, DescribeTrailsOutput};
use aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput;
use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
use aws_sdk_cloudtrail::types::{EventSelector, ReadWriteType};
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::types::MetricDataResult;
use aws_sdk_dynamodb::operation::get_resource_policy::{
    GetResourcePolicyError, GetResourcePolicyOutput,
};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_securityhub::operation::describe_hub::{DescribeHubError, DescribeHubOutput};
use aws_sdk_sns::operation::list_subscriptions_by_topic::ListSubscriptionsByTopicOutput;
use aws_sdk_sns::types::Subscription;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_mocks::{mock, Rule};
use imds_guard::doctor::{exit_code, Row, OPERATOR_ACTIONS, PREVENTION_ACTIONS};
use imds_guard::doctor_flow::{Doctor, LaunchProbe, Scope};
use imds_guard::probe::{self, judge, Answer, Check, RegionCheck, Status};

use crate::common::{interceptor, mock_base};

const STACK_ID: &str =
    "arn:aws:cloudformation:us-east-1:111122223333:stack/imds-guard/0b1c2d3e-0000-4000-8000-000000000001";
const TOPIC: &str = "arn:aws:sns:us-east-1:111122223333:imds-guard-NotificationTopic-1";
const QUEUE: &str =
    "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-UndeliveredEventsQueue-1";

fn code(c: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(c)
        .message(format!("mocked {c}"))
        .build()
}

fn stack(central: bool) -> Rule {
    mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(move || {
        let p = |k: &str, v: &str| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        };
        let o = |k: &str, v: &str| Output::builder().output_key(k).output_value(v).build();
        let mut params = vec![p("SweepRegions", ""), p("SecurityHubFindings", "true")];
        if central {
            params.push(p("SweepAccounts", "444455556666"));
        }
        DescribeStacksOutput::builder()
            .stacks(
                Stack::builder()
                    .stack_id(STACK_ID)
                    .stack_name("imds-guard")
                    .stack_status(StackStatus::UpdateComplete)
                    .set_parameters(Some(params))
                    .outputs(o("TopicArn", TOPIC))
                    .outputs(o("MemoryTableName", "imds-guard-memory"))
                    .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                    .build(),
            )
            .build()
    })
}

fn resources() -> Rule {
    mock!(aws_sdk_cloudformation::Client::list_stack_resources).then_output(|| {
        let r = |l: &str, t: &str, p: &str| {
            StackResourceSummary::builder()
                .logical_resource_id(l)
                .resource_type(t)
                .physical_resource_id(p)
                .resource_status(aws_sdk_cloudformation::types::ResourceStatus::CreateComplete)
                .last_updated_timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                .build()
        };
        ListStackResourcesOutput::builder()
            .stack_resource_summaries(r(
                "LaunchRule",
                "AWS::Events::Rule",
                "imds-guard-LaunchRule-1",
            ))
            .stack_resource_summaries(r(
                "SweepRule",
                "AWS::Events::Rule",
                "imds-guard-SweepRule-1",
            ))
            .stack_resource_summaries(r("UndeliveredEventsQueue", "AWS::SQS::Queue", QUEUE))
            .build()
    })
}

fn self_check_item(outcomes: Vec<probe::Outcome>) -> Rule {
    let c = RegionCheck {
        account: "111122223333".into(),
        region: "us-east-1".into(),
        role: "the function's role".into(),
        at: imds_guard::clock::now_secs() - 3600,
        trigger: "deploy".into(),
        error: None,
        outcomes,
    };
    let r = probe::record("111122223333#us-east-1", &c);
    mock!(aws_sdk_dynamodb::Client::query).then_output(move || {
        QueryOutput::builder()
            .items(
                [
                    ("pk".to_string(), AttributeValue::S(r.pk.clone())),
                    ("sk".to_string(), AttributeValue::S(r.sk.clone())),
                    (
                        "result".to_string(),
                        AttributeValue::S(r.data["result"].clone()),
                    ),
                ]
                .into(),
            )
            .build()
    })
}

struct World {
    rules: Vec<Rule>,
}

impl World {
    /// Everything as it should be.
    fn good() -> World {
        World {
            rules: vec![
                stack(false),
                resources(),
                mock!(aws_sdk_dynamodb::Client::get_resource_policy).then_output(|| {
                    GetResourcePolicyOutput::builder()
                        .policy(r#"{"Statement":[{"Sid":"OnlyTheGuardWrites"}]}"#)
                        .build()
                }),
                self_check_item(
                    Check::ALL[..7]
                        .iter()
                        .map(|c| {
                            judge(
                                *c,
                                if c.allowed() {
                                    &Answer::DryRun
                                } else {
                                    &Answer::Unauthorized
                                },
                            )
                        })
                        .collect(),
                ),
                mock!(aws_sdk_cloudtrail::Client::describe_trails).then_output(|| {
                    DescribeTrailsOutput::builder()
                        .trail_list(
                            aws_sdk_cloudtrail::types::Trail::builder()
                                .name("org-trail")
                                .trail_arn(
                                    "arn:aws:cloudtrail:us-east-1:111122223333:trail/org-trail",
                                )
                                .home_region("us-east-1")
                                .is_multi_region_trail(true)
                                .build(),
                        )
                        .build()
                }),
                mock!(aws_sdk_cloudtrail::Client::get_trail_status)
                    .then_output(|| GetTrailStatusOutput::builder().is_logging(true).build()),
                mock!(aws_sdk_cloudtrail::Client::get_event_selectors).then_output(|| {
                    GetEventSelectorsOutput::builder()
                        .event_selectors(
                            EventSelector::builder()
                                .include_management_events(true)
                                .read_write_type(ReadWriteType::All)
                                .build(),
                        )
                        .build()
                }),
                mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
                    GetMetricDataOutput::builder()
                        .metric_data_results(
                            MetricDataResult::builder().id("m0x0").values(5.0).build(),
                        )
                        .metric_data_results(
                            MetricDataResult::builder().id("m0x1").values(5.0).build(),
                        )
                        .build()
                }),
                mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(|| {
                    GetQueueAttributesOutput::builder()
                        .attributes(QueueAttributeName::ApproximateNumberOfMessages, "0")
                        .build()
                }),
                mock!(aws_sdk_sns::Client::list_subscriptions_by_topic).then_output(|| {
                    ListSubscriptionsByTopicOutput::builder()
                        .subscriptions(
                            Subscription::builder()
                                .subscription_arn(format!("{TOPIC}:0b1c2d3e"))
                                .protocol("email")
                                .build(),
                        )
                        .build()
                }),
                mock!(aws_sdk_securityhub::Client::describe_hub)
                    .then_output(|| DescribeHubOutput::builder().build()),
            ],
        }
    }

    /// The same, with `rule` answering instead of the first rule of its
    /// operation (the test's rules come first and win).
    fn with(mut self, rule: Rule) -> World {
        self.rules.insert(0, rule);
        self
    }

    async fn run(&self, organization: bool) -> (Vec<Row>, bool, Vec<(String, String)>) {
        self.run_with(organization, None).await
    }

    async fn run_with(
        &self,
        organization: bool,
        prevention: Option<LaunchProbe>,
    ) -> (Vec<Row>, bool, Vec<(String, String)>) {
        let rules: Vec<&Rule> = self.rules.iter().collect();
        let d = Doctor::new(mock_base()).with_interceptor(interceptor(&rules));
        let scope = Scope {
            stack: "imds-guard".into(),
            regions: Vec::new(),
            accounts: Vec::new(),
            organization,
            days: 7,
            timeout: Duration::from_secs(30),
            endpoint: None,
            prevention,
        };
        let (rows, could_not) = d.run(&scope).await;
        (rows, could_not, d.calls().operations())
    }
}

fn status_of<'a>(rows: &'a [Row], check: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.check.contains(check))
        .unwrap_or_else(|| panic!("no row {check:?} in {rows:#?}"))
}

#[tokio::test]
async fn a_deployment_that_works_passes_every_check_and_exits_0() {
    let (rows, could_not, _) = World::good().run(false).await;
    assert!(!could_not);
    let bad: Vec<&Row> = rows.iter().filter(|r| r.status != Status::Pass).collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for check in [
        "the stack is deployed",
        "only the guard writes its memory",
        "the fix, HttpTokens=required, is allowed",
        "HttpTokens=optional is refused",
        "a trail logs write management events",
        "imds-guard-LaunchRule-1 delivers what it matches",
        "the undelivered-events queue is empty",
        "someone receives the notifications",
        "Security Hub takes the findings",
    ] {
        assert_eq!(status_of(&rows, check).status, Status::Pass, "{check}");
    }
    // A schedule is not evidence of events: not looked at as a rule.
    assert!(!rows.iter().any(|r| r.check.contains("SweepRule")));
    assert_eq!(exit_code(&rows, could_not), 0);
}

#[tokio::test]
async fn each_failure_is_named_with_its_fix_and_exits_1() {
    let w = World::good()
        .with(
            mock!(aws_sdk_securityhub::Client::describe_hub)
                .then_error(|| DescribeHubError::generic(code("InvalidAccessException"))),
        )
        .with(
            mock!(aws_sdk_sns::Client::list_subscriptions_by_topic).then_output(|| {
                ListSubscriptionsByTopicOutput::builder()
                    .subscriptions(
                        Subscription::builder()
                            .subscription_arn("PendingConfirmation")
                            .build(),
                    )
                    .build()
            }),
        )
        .with(
            mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(|| {
                GetQueueAttributesOutput::builder()
                    .attributes(QueueAttributeName::ApproximateNumberOfMessages, "3")
                    .build()
            }),
        )
        .with(
            mock!(aws_sdk_cloudtrail::Client::describe_trails)
                .then_output(|| DescribeTrailsOutput::builder().build()),
        )
        .with(
            mock!(aws_sdk_dynamodb::Client::get_resource_policy)
                .then_error(|| GetResourcePolicyError::generic(code("PolicyNotFoundException"))),
        )
        .with(self_check_item(vec![judge(
            Check::FixAllowed,
            &Answer::Unauthorized,
        )]))
        .with(
            mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(MetricDataResult::builder().id("m0x0").values(5.0).build())
                    .metric_data_results(MetricDataResult::builder().id("m0x2").values(2.0).build())
                    .build()
            }),
        );
    let (rows, could_not, _) = w.run(false).await;
    for check in [
        "Security Hub takes the findings",
        "someone receives the notifications",
        "the undelivered-events queue is empty",
        "a trail logs write management events",
        "only the guard writes its memory",
        "the fix, HttpTokens=required, is allowed",
        "imds-guard-LaunchRule-1 delivers what it matches",
    ] {
        let r = status_of(&rows, check);
        assert_eq!(r.status, Status::Fail, "{check}: {r:?}");
        assert!(r.fix.is_some(), "{check}: a ✗ says how to fix it");
    }
    assert_eq!(exit_code(&rows, could_not), 1);
}

#[tokio::test]
async fn what_cannot_be_read_is_unknown_never_passed() {
    let w = World::good()
        .with(
            mock!(aws_sdk_cloudtrail::Client::describe_trails)
                .then_error(|| DescribeTrailsError::generic(code("AccessDeniedException"))),
        )
        .with(mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build()))
        .with(
            mock!(aws_sdk_cloudwatch::Client::get_metric_data)
                .then_output(|| GetMetricDataOutput::builder().build()),
        );
    let (rows, _, _) = w.run(false).await;
    assert_eq!(status_of(&rows, "a trail logs").status, Status::Warn);
    let sc = status_of(&rows, "self-check");
    assert_eq!(sc.status, Status::Warn, "no result yet: {sc:?}");
    assert!(sc.fix.as_deref().unwrap().contains("lambda invoke"));
    assert_eq!(
        status_of(&rows, "LaunchRule").status,
        Status::Warn,
        "no data is not a pass"
    );
}

#[tokio::test]
async fn a_stack_that_cannot_be_read_means_doctor_could_not_run() {
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
    let w = World::good().with(
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_error(|| DescribeStacksError::generic(code("ValidationError"))),
    );
    let (rows, could_not, _) = w.run(false).await;
    assert!(could_not);
    assert_eq!(exit_code(&rows, could_not), 2);
    assert!(status_of(&rows, "the stack can be read").fix.is_some());
}

/// IAM's prefix for the SDK's service name.
fn prefix(service: &str) -> String {
    match service.to_ascii_lowercase().as_str() {
        "monitoring" => "cloudwatch".into(),
        s => s.replace(' ', ""),
    }
}

/// The read-only policy `--print-policy` prints allows every call the
/// command makes, and names none it never makes: a call added without the
/// policy, or the policy kept after a call is gone, fails here.
#[tokio::test]
async fn the_operators_policy_and_the_calls_doctor_makes_are_the_same() {
    let mut made = std::collections::BTreeSet::new();
    for (central, organization) in [(false, false), (true, true)] {
        let mut w = World::good().with(stack(central));
        if organization {
            use aws_sdk_organizations::operation::list_accounts::ListAccountsOutput;
            w = w.with(
                mock!(aws_sdk_organizations::Client::list_accounts).then_output(|| {
                    ListAccountsOutput::builder()
                        .accounts(
                            aws_sdk_organizations::types::Account::builder()
                                .id("444455556666")
                                .state(aws_sdk_organizations::types::AccountState::Active)
                                .build(),
                        )
                        .build()
                }),
            );
        }
        let (_, _, calls) = w.run(organization).await;
        for (service, op) in calls {
            made.insert(format!("{}:{op}", prefix(&service)));
        }
    }
    let policy: std::collections::BTreeSet<String> = OPERATOR_ACTIONS
        .iter()
        .map(|(a, _)| a.to_ascii_lowercase())
        .collect();
    let made: std::collections::BTreeSet<String> =
        made.into_iter().map(|a| a.to_ascii_lowercase()).collect();
    assert_eq!(made, policy, "calls made vs the policy printed");
}

/// The world where EC2 answers dry-run launches: an image and a default
/// subnet to find, a launch asking for `HttpTokens=optional` refused
/// (`prevented`) or not, one asking for `required` and one without options
/// allowed. Every launch must be a dry run, naming the newest image.
fn launching(prevented: bool) -> World {
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
    use aws_sdk_ec2::operation::run_instances::RunInstancesError;
    use aws_sdk_ec2::types::{HttpTokensState, Image, Subnet};
    World::good()
        .with(mock!(aws_sdk_ec2::Client::describe_images).then_output(|| {
            let i = |id: &str, at: &str| Image::builder().image_id(id).creation_date(at).build();
            DescribeImagesOutput::builder()
                .images(i("ami-0old", "2025-01-01T00:00:00.000Z"))
                .images(i("ami-0new", "2026-11-01T00:00:00.000Z"))
                .build()
        }))
        .with(
            mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
                DescribeSubnetsOutput::builder()
                    .subnets(Subnet::builder().subnet_id("subnet-0default").build())
                    .build()
            }),
        )
        .with(
            mock!(aws_sdk_ec2::Client::run_instances)
                .match_requests(|r| {
                    r.dry_run() == Some(true)
                        && r.image_id() == Some("ami-0new")
                        && r.subnet_id() == Some("subnet-0default")
                        && r.metadata_options().and_then(|m| m.http_tokens())
                            == Some(&HttpTokensState::Optional)
                })
                .then_error(move || {
                    RunInstancesError::generic(code(if prevented {
                        "UnauthorizedOperation"
                    } else {
                        "DryRunOperation"
                    }))
                }),
        )
        .with(
            mock!(aws_sdk_ec2::Client::run_instances)
                .match_requests(|r| {
                    r.dry_run() == Some(true)
                        && r.metadata_options()
                            .is_none_or(|m| m.http_tokens() == Some(&HttpTokensState::Required))
                })
                .then_error(|| RunInstancesError::generic(code("DryRunOperation"))),
        )
}

fn probe() -> Option<LaunchProbe> {
    Some(LaunchProbe {
        instance_type: "t3.micro".into(),
        ..LaunchProbe::default()
    })
}

/// `doctor --prevention`: AWS's answers to the person's own dry-run
/// launches, said as they are; where the account default requires tokens
/// nothing is asserted. (AWS's own IAM is not evaluated here: mocked.)
#[tokio::test]
async fn prevention_is_what_aws_answered_the_persons_dry_run_launches() {
    let check = "a launch asking for IMDSv1 is refused to you";
    let (rows, _, calls) = launching(true).run_with(false, probe()).await;
    let r = status_of(&rows, check);
    assert_eq!(r.status, Status::Pass, "{r:?}");
    assert!(
        r.detail.contains("ami-0new") && r.detail.contains("subnet-0default"),
        "newest image, default subnet: {r:?}"
    );
    assert!(
        r.detail
            .contains("one without metadata options would launch"),
        "{r:?}"
    );
    assert!(calls.iter().any(|(_, op)| op == "RunInstances"));

    let (rows, _, _) = launching(false).run_with(false, probe()).await;
    let r = status_of(&rows, check);
    assert_eq!(r.status, Status::Warn);
    assert!(r.detail.starts_with("no prevention binds you"), "{r:?}");

    // Without --prevention, nothing is launched, even as a dry run.
    let (_, _, calls) = launching(true).run(false).await;
    assert!(
        !calls.iter().any(|(_, op)| op == "RunInstances"),
        "{calls:?}"
    );
}

/// `--print-policy --prevention` allows exactly what `--prevention` adds.
#[tokio::test]
async fn the_prevention_policy_and_the_calls_it_makes_are_the_same() {
    let (_, _, base) = launching(true).run(false).await;
    let (_, _, with) = launching(true).run_with(false, probe()).await;
    let added: std::collections::BTreeSet<String> = with
        .into_iter()
        .filter(|c| !base.contains(c))
        .map(|(service, op)| format!("{}:{op}", prefix(&service)).to_ascii_lowercase())
        .collect();
    let policy: std::collections::BTreeSet<String> = PREVENTION_ACTIONS
        .iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    assert_eq!(added, policy);
    let printed = imds_guard::doctor::prevention_policy("imds-guard", "aws").to_string();
    for a in PREVENTION_ACTIONS {
        assert!(printed.contains(a), "{a}");
    }
}

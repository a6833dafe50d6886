//! The sweep against mocked EC2, CloudWatch and SNS: what the emulator
//! lacks (pagination, the server-side filter, the account-defaults calls,
//! `MetadataNoToken`) and what real AWS does to a long sweep (throttling,
//! refusals, the function's timeout).

use std::time::Duration;

use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataError, GetMetricDataOutput};
use aws_sdk_cloudwatch::types::MetricDataResult;
use aws_sdk_cloudwatch::Client as CwClient;
use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesInput};
use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_defaults::ModifyInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsError;
use aws_sdk_ec2::types::{
    DefaultHttpTokensEnforcedState, HttpTokensEnforcedState, HttpTokensState,
    InstanceMetadataDefaultsResponse, MetadataDefaultHttpTokensState,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_sdk_sns::Client as SnsClient;
use aws_smithy_mocks::{mock, Rule};

use imds_guard::guard::{Guard, GuardError};
use imds_guard::policy::ReadinessVerdict;
use imds_guard::report::{DefaultsAction, Idle, Outcome, Status};

use crate::common::scheduled;
use crate::common::{self, config, fixture, FixedClients};
use crate::faults::{described, meta, modify_ok, running, tag_ok};

use crate::common::TOPIC;

fn ids(n: usize, from: usize) -> Vec<String> {
    (from..from + n).map(|k| format!("i-{k:017x}")).collect()
}

fn has_tokens_filter(input: &DescribeInstancesInput) -> bool {
    input
        .filters()
        .iter()
        .any(|f| f.name() == Some("metadata-options.http-tokens"))
}

fn defaults(tokens: HttpTokensState, enforced: HttpTokensEnforcedState) -> Rule {
    mock!(Ec2Client::get_instance_metadata_defaults).then_output(move || {
        GetInstanceMetadataDefaultsOutput::builder()
            .account_level(
                InstanceMetadataDefaultsResponse::builder()
                    .http_tokens(tokens.clone())
                    .http_tokens_enforced(enforced.clone())
                    .build(),
            )
            .build()
    })
}

fn no_defaults_api() -> Rule {
    mock!(Ec2Client::get_instance_metadata_defaults).then_error(|| {
        aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsError::generic(meta("InvalidAction"))
    })
}

fn publish_ok() -> Rule {
    mock!(SnsClient::publish).then_output(|| PublishOutput::builder().message_id("m-1").build())
}

fn guard_with(
    pairs: &[(&str, &str)],
    ec2: &[&Rule],
    sns: &[&Rule],
    metrics: &[&Rule],
) -> Guard<FixedClients> {
    Guard::new(
        config(pairs),
        FixedClients {
            ec2: common::ec2(ec2),
            sns: common::sns(sns),
            metrics: common::metrics(metrics),
            members: None,
            memory: None,
            failed_events_queue: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    )
}

#[tokio::test]
async fn pages_are_followed_with_the_server_side_filter_and_acted_on_page_by_page() {
    let pages = [ids(2, 0), ids(2, 2), ids(2, 4)];
    let describe = mock!(Ec2Client::describe_instances)
        .match_requests(has_tokens_filter)
        .then_compute_output(move |input| {
            let (page, next) = match input.next_token() {
                None => (0, Some("t1")),
                Some("t1") => (1, Some("t2")),
                _ => (2, None),
            };
            let reservations = described(
                pages[page]
                    .iter()
                    .map(|id| running(id, "optional", 2))
                    .collect(),
            )
            .reservations
            .unwrap_or_default();
            aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
                .set_reservations(Some(reservations))
                .set_next_token(next.map(str::to_string))
                .build()
        });
    let (get, modify, tag, publish) = (
        defaults(HttpTokensState::Required, HttpTokensEnforcedState::Disabled),
        modify_ok(),
        tag_ok(),
        publish_ok(),
    );
    let g = guard_with(
        &[("NOTIFY_TOPIC_ARN", TOPIC)],
        &[&describe, &get, &modify, &tag],
        &[&publish],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.pages, 3);
    assert_eq!(r.count(Outcome::Remediated), 6);
    assert!(r.listing.starts_with("server-side filter"), "{}", r.listing);
    // One call per page, and, since fixing under the filter may shift
    // EC2's later pages, one more pass over the listing, which decides
    // nothing twice.
    assert_eq!(describe.num_calls(), 3 + 3, "one call per page, two passes");
    assert!(r.listing.contains("listed 2 times"), "{}", r.listing);
    assert_eq!(modify.num_calls(), 6);
    assert_eq!(tag.num_calls(), 3, "one tag call per page");
    assert_eq!(publish.num_calls(), 1, "one summary per sweep");
    assert_eq!(r.readiness.verdict, ReadinessVerdict::Ready);
}

#[tokio::test]
async fn a_refused_filter_falls_back_to_listing_everything_and_deciding_here() {
    let filtered = mock!(Ec2Client::describe_instances)
        .match_requests(has_tokens_filter)
        .then_error(|| DescribeInstancesError::generic(meta("InvalidParameterValue")));
    let all = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running("i-00000000000000001", "required", 1),
            running("i-00000000000000002", "optional", 1),
        ])
    });
    let (get, modify, tag) = (no_defaults_api(), modify_ok(), tag_ok());
    let g = guard_with(&[], &[&filtered, &all, &get, &modify, &tag], &[], &[]);
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert!(r.listing.contains("refused"), "{}", r.listing);
    assert_eq!(filtered.num_calls(), 1, "probed once, then never again");
    assert_eq!(all.num_calls(), 1);
    assert_eq!(r.count(Outcome::Compliant), 1);
    assert_eq!(r.count(Outcome::Remediated), 1);
    assert_eq!(modify.num_calls(), 1);
    // The defaults could not be read: readiness cannot be claimed.
    assert_eq!(r.readiness.verdict, ReadinessVerdict::Unknown);
}

#[tokio::test]
async fn a_hop_limit_maximum_lists_every_instance() {
    let describe = mock!(Ec2Client::describe_instances)
        .match_requests(|i| !has_tokens_filter(i))
        .then_output(|| described(vec![running("i-00000000000000001", "required", 5)]));
    let (get, modify, tag) = (no_defaults_api(), modify_ok(), tag_ok());
    let g = guard_with(
        &[("MAX_HOP_LIMIT", "2")],
        &[&describe, &get, &modify, &tag],
        &[],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    assert_eq!(report.count(Outcome::Remediated), 1, "hop limit 5 lowered");
    assert_eq!(describe.num_calls(), 1);
}

#[tokio::test]
async fn a_region_that_cannot_be_counted_is_held_to_the_breakers_floor() {
    // 15 instances to fix; the circuit breaker's share needs the region's
    // count, and the unfiltered listing fails: at most the floor (10) is
    // changed, the rest held and the region warned of.
    let fleet = ids(15, 300);
    let listed = fleet.clone();
    let describe = mock!(Ec2Client::describe_instances)
        .match_requests(has_tokens_filter)
        .then_output(move || {
            described(listed.iter().map(|id| running(id, "optional", 1)).collect())
        });
    let count = mock!(Ec2Client::describe_instances)
        .match_requests(|i| !has_tokens_filter(i))
        .then_error(|| DescribeInstancesError::generic(meta("InternalError")));
    let (get, modify, tag) = (no_defaults_api(), modify_ok(), tag_ok());
    let g = guard_with(
        &[("MAX_CHANGE_PERCENT", "25")],
        &[&describe, &count, &get, &modify, &tag],
        &[],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.count(Outcome::Remediated), 10, "{r:?}");
    assert_eq!(r.held_by_breaker, 5);
    assert_eq!(modify.num_calls(), 10);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("could not be counted")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_fix_of_a_launch_whose_event_never_came_is_counted_from_the_memorys_record() {
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodb::Client as DynamoClient;
    let now = imds_guard::clock::now_secs();
    let hour = 3600;
    let launched = |id: &str, secs: u64| {
        let mut i = running(id, "optional", 1);
        i.launch_time = Some(aws_sdk_ec2::primitives::DateTime::from_secs(secs as i64));
        i
    };
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(vec![
            launched("i-00000000000000001", now - 5 * hour),
            launched("i-00000000000000002", now - 20 * hour),
        ])
    });
    // Enforcing began here ten hours ago, DynamoDB says.
    let since = mock!(DynamoClient::query)
        .match_requests(|q| {
            q.expression_attribute_values()
                .and_then(|v| v.get(":prefix"))
                .and_then(|p| p.as_s().ok())
                .is_some_and(|p| p == "since#")
        })
        .then_output(move || {
            let item = std::collections::HashMap::from([
                (
                    "pk".to_string(),
                    AttributeValue::S("111122223333#us-east-1".into()),
                ),
                ("sk".to_string(), AttributeValue::S("since#events".into())),
                (
                    "at".to_string(),
                    AttributeValue::N((now - 10 * hour).to_string()),
                ),
                (
                    "expires_at".to_string(),
                    AttributeValue::N((now + 300 * 86_400).to_string()),
                ),
                ("mode".to_string(), AttributeValue::S("enforce".into())),
                (
                    "since".to_string(),
                    AttributeValue::S((now - 10 * hour).to_string()),
                ),
            ]);
            QueryOutput::builder().items(item).build()
        });
    let nothing = mock!(DynamoClient::query).then_output(|| QueryOutput::builder().build());
    let written = mock!(DynamoClient::batch_write_item)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let (get, modify, tag) = (no_defaults_api(), modify_ok(), tag_ok());
    let g = crate::common::guard_with_memory(
        config(&[
            ("GUARD_MODE", "enforce"),
            ("MEMORY_TABLE", "imds-guard-memory"),
        ]),
        &[&describe, &get, &modify, &tag],
        &[],
        &[&since, &nothing, &written],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.count(Outcome::Remediated), 2, "{r:?}");
    assert_eq!(
        r.missed_events, 1,
        "only the one launched after enforcing began"
    );
    assert_eq!(since.num_calls(), 1);
}

#[tokio::test]
async fn an_account_whose_units_cannot_be_read_runs_in_the_mildest_mode_and_says_why() {
    // Organizations cannot be asked (these clients have none): the account
    // is swept in the mildest mode any unit is set to, never enforced.
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running("i-00000000000000001", "optional", 1)]));
    let (get, modify, tag) = (no_defaults_api(), modify_ok(), tag_ok());
    let g = guard_with(
        &[
            ("GUARD_MODE", "enforce"),
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("SWEEP_ACCOUNTS", "444455556666"),
            ("MODE_OVERRIDES", "ou-ab12-sandbox01=audit"),
        ],
        &[&describe, &get, &modify, &tag],
        &[],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.mode, Some(imds_guard::config::Mode::Audit));
    assert_eq!(r.count(Outcome::Flagged), 1);
    assert_eq!(modify.num_calls(), 0);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("organizational units could not be read")),
        "{r:?}"
    );
}

#[tokio::test]
async fn throttling_in_the_middle_of_a_sweep_slows_it_down_and_it_still_finishes() {
    let fleet = ids(24, 100);
    let listed = fleet.clone();
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(listed.iter().map(|id| running(id, "optional", 1)).collect())
    });
    // Calm, then a burst of throttling longer than the SDK's own retries
    // absorb, then calm again.
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .sequence()
        .output(|| {
            aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsOutput::builder().build()
        })
        .times(6)
        .error(|| ModifyInstanceMetadataOptionsError::generic(meta("RequestLimitExceeded")))
        .times(14)
        .output(|| {
            aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsOutput::builder().build()
        })
        .repeatedly()
        .build();
    let (get, tag) = (no_defaults_api(), tag_ok());
    let g = guard_with(
        &[("MAX_CHANGE_PERCENT", "100")],
        &[&describe, &get, &modify, &tag],
        &[],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.count(Outcome::Remediated), 24, "{:?}", report.instances);
    assert!(r.throttled >= 1, "the sweep saw the throttling: {r:?}");
    assert_eq!(
        modify.num_calls(),
        24 + 14,
        "each throttled attempt retried"
    );
}

#[tokio::test]
async fn enforce_sets_the_account_default_when_asked_and_never_the_enforcement_switch() {
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = defaults(HttpTokensState::Optional, HttpTokensEnforcedState::Disabled);
    let set = mock!(Ec2Client::modify_instance_metadata_defaults)
        .match_requests(|i| {
            i.http_tokens() == Some(&MetadataDefaultHttpTokensState::Required)
                && i.http_tokens_enforced().is_none()
                && i.http_endpoint().is_none()
                && i.http_put_response_hop_limit().is_none()
        })
        .then_output(|| {
            ModifyInstanceMetadataDefaultsOutput::builder()
                .r#return(true)
                .build()
        });

    let g = guard_with(
        &[("SET_ACCOUNT_DEFAULT", "true")],
        &[&empty, &get, &set],
        &[],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(set.num_calls(), 1);
    assert_eq!(r.account_default_action, DefaultsAction::Set);
    assert_eq!(
        r.account_defaults.as_ref().unwrap().http_tokens.as_deref(),
        Some("required")
    );
    assert_eq!(
        r.readiness.verdict,
        ReadinessVerdict::Ready,
        "{:?}",
        r.readiness
    );

    // Audit mode, or the flag off: read and report, never write.
    for pairs in [
        vec![("SET_ACCOUNT_DEFAULT", "true"), ("GUARD_MODE", "audit")],
        vec![],
    ] {
        let set = mock!(Ec2Client::modify_instance_metadata_defaults)
            .then_output(|| ModifyInstanceMetadataDefaultsOutput::builder().build());
        let g = guard_with(&pairs, &[&empty, &get, &set], &[], &[]);
        let report = g.handle(&scheduled()).await.unwrap();
        let r = &report.sweep.as_ref().unwrap().regions[0];
        assert_eq!(set.num_calls(), 0, "{pairs:?}");
        assert!(
            matches!(r.account_default_action, DefaultsAction::NotOurs(_)),
            "{}",
            r.account_default_action
        );
        assert_eq!(r.readiness.verdict, ReadinessVerdict::NotReady);
        assert!(r.readiness.reasons[0].contains("account default HttpTokens is optional"));
    }
}

#[tokio::test]
async fn readiness_says_already_enforced_when_aws_enforces_and_nothing_is_left() {
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = defaults(HttpTokensState::Required, HttpTokensEnforcedState::Enabled);
    let g = guard_with(&[], &[&empty, &get], &[], &[]);
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.readiness.verdict, ReadinessVerdict::AlreadyEnforced);
}

/// Answers `MetadataNoToken` queries: `calls` IMDSv1 calls for `user`, no
/// data for anyone else.
fn no_token_metric(user: &'static str, calls: f64) -> Rule {
    mock!(CwClient::get_metric_data).then_compute_output(move |input| {
        let results = input
            .metric_data_queries()
            .iter()
            .filter_map(|q| {
                let stat = q.metric_stat()?;
                let metric = stat.metric()?;
                assert_eq!(metric.metric_name(), Some("MetadataNoToken"));
                assert_eq!(metric.namespace(), Some("AWS/EC2"));
                assert_eq!(stat.stat(), Some("Sum"));
                let id = metric.dimensions().first()?.value()?;
                // Data points for every instance: `calls` for the user, zero
                // for the others (no data at all is another case).
                let r = MetricDataResult::builder()
                    .set_id(q.id().map(str::to_string))
                    .values(if id == user { calls } else { 0.0 });
                Some(r.build())
            })
            .collect();
        GetMetricDataOutput::builder()
            .set_metric_data_results(Some(results))
            .build()
    })
}

#[tokio::test]
async fn an_instance_still_using_imdsv1_is_flagged_not_changed() {
    let user = "i-00000000000000002";
    let describe = mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running("i-00000000000000001", "optional", 1),
            running(user, "optional", 1),
            running("i-00000000000000003", "optional", 1),
        ])
    });
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(move |i| i.instance_id() != Some(user))
        .then_output(|| {
            aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsOutput::builder().build()
        });
    let tag_remediated = mock!(Ec2Client::create_tags)
        .match_requests(|i| i.tags()[0].value() == Some("remediated") && i.resources().len() == 2)
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    let tag_flagged = mock!(Ec2Client::create_tags)
        .match_requests(move |i| {
            i.tags()[0].value() == Some("noncompliant") && i.resources() == [user.to_string()]
        })
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    let metric = no_token_metric(user, 5.0);
    let get = no_defaults_api();
    let g = guard_with(
        &[
            ("CHECK_METADATA_NO_TOKEN", "true"),
            ("NO_TOKEN_LOOKBACK_HOURS", "24"),
        ],
        &[&describe, &get, &modify, &tag_remediated, &tag_flagged],
        &[],
        &[&metric],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(metric.num_calls(), 1, "one batched GetMetricData");
    assert_eq!(modify.num_calls(), 2);
    assert_eq!(
        (tag_remediated.num_calls(), tag_flagged.num_calls()),
        (1, 1)
    );
    assert_eq!(r.count(Outcome::Remediated), 2);
    assert_eq!(r.count(Outcome::Flagged), 1);
    assert_eq!(r.v1_in_use, 1);
    let held = report
        .instances
        .iter()
        .find(|i| i.instance_id == user)
        .unwrap();
    assert_eq!(held.action.idle, Idle::HeldBack, "{}", held.action);
    assert!(
        held.findings
            .iter()
            .any(|f| f.contains("answered 5 IMDSv1 call(s) in the last 24h")),
        "{:?}",
        held.findings
    );
    assert_eq!(r.readiness.verdict, ReadinessVerdict::NotReady);
}

#[tokio::test]
async fn when_the_metric_cannot_be_read_nothing_is_changed_blind() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_output(|| described(vec![running("i-00000000000000001", "optional", 1)]));
    let metric = mock!(CwClient::get_metric_data).then_error(|| {
        GetMetricDataError::generic(
            aws_sdk_cloudwatch::error::ErrorMetadata::builder()
                .code("AccessDenied")
                .message("no")
                .build(),
        )
    });
    let (get, modify) = (no_defaults_api(), modify_ok());
    let g = guard_with(
        &[("CHECK_METADATA_NO_TOKEN", "true")],
        &[&describe, &get, &modify],
        &[],
        &[&metric],
    );
    let err = g.handle(&scheduled()).await.unwrap_err();
    let GuardError::Unhandled { summary, report } = err else {
        panic!("expected unhandled")
    };
    assert_eq!(modify.num_calls(), 0);
    assert!(summary.contains("i-00000000000000001"), "{summary}");
    assert!(summary.contains("cloudwatch:GetMetricData"), "{summary}");
    assert_eq!(report.count(Outcome::Failed), 1);
}

#[tokio::test]
async fn a_region_that_cannot_be_listed_fails_the_invocation_and_is_named() {
    let describe = mock!(Ec2Client::describe_instances)
        .then_error(|| DescribeInstancesError::generic(meta("UnauthorizedOperation")));
    let get = no_defaults_api();
    let g = guard_with(
        &[("SWEEP_REGIONS", "eu-central-1")],
        &[&describe, &get],
        &[],
        &[],
    );
    let GuardError::Unhandled { summary, .. } = g.handle(&scheduled()).await.unwrap_err() else {
        panic!("expected unhandled")
    };
    assert!(summary.contains("region eu-central-1"), "{summary}");
    assert!(summary.contains("ec2:DescribeInstances"), "{summary}");
    assert_eq!(
        describe.num_calls(),
        1,
        "a missing permission is not retried or probed around"
    );
}

#[tokio::test]
async fn a_sweep_near_the_function_timeout_stops_and_says_so() {
    let describe = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = no_defaults_api();
    let g = guard_with(&[], &[&describe, &get], &[], &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let GuardError::Unhandled { summary, .. } = g
        .handle_until(&scheduled(), Some(deadline))
        .await
        .unwrap_err()
    else {
        panic!("expected unhandled")
    };
    assert!(
        summary.contains("before the function's timeout"),
        "{summary}"
    );
    assert_eq!(describe.num_calls(), 0);
}

#[tokio::test]
async fn a_large_sweep_sends_one_bounded_summary() {
    let fleet = ids(1500, 1);
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        described(fleet.iter().map(|id| running(id, "optional", 1)).collect())
    });
    let publish = mock!(SnsClient::publish)
        .match_requests(|p| {
            p.message().unwrap().len() <= imds_guard::notify::MAX_BODY
                && p.subject().unwrap().contains("1500 flagged")
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let get = no_defaults_api();
    let g = guard_with(
        &[("GUARD_MODE", "audit"), ("NOTIFY_TOPIC_ARN", TOPIC)],
        &[&describe, &get],
        &[&publish],
        &[],
    );
    let report = g.handle(&scheduled()).await.unwrap();
    assert_eq!(report.status, Status::Swept);
    assert_eq!(publish.num_calls(), 1);
    assert_eq!(report.instances.len(), imds_guard::sweep::MAX_LISTED);
    assert_eq!(report.sweep.as_ref().unwrap().omitted_instances, 500);
    assert_eq!(report.count(Outcome::Flagged), 1500);
}

#[tokio::test]
async fn weakening_the_account_default_is_told_and_put_back_in_enforce() {
    let get = defaults(HttpTokensState::Optional, HttpTokensEnforcedState::Disabled);
    let set = mock!(Ec2Client::modify_instance_metadata_defaults)
        .match_requests(|i| {
            i.http_tokens() == Some(&MetadataDefaultHttpTokensState::Required)
                && i.http_tokens_enforced() != Some(&DefaultHttpTokensEnforcedState::Enabled)
                && i.http_tokens_enforced().is_none()
        })
        .then_output(|| ModifyInstanceMetadataDefaultsOutput::builder().build());
    let publish = mock!(SnsClient::publish)
        .match_requests(|p| {
            p.subject().unwrap()
                == "imds-guard: IMDS account defaults weakened in 111122223333/us-east-1"
                && p.message()
                    .unwrap()
                    .contains("HttpTokensEnforced turned off")
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let g = guard_with(
        &[("SET_ACCOUNT_DEFAULT", "true"), ("NOTIFY_TOPIC_ARN", TOPIC)],
        &[&get, &set],
        &[&publish],
        &[],
    );
    let report = g
        .handle(&fixture("modify-metadata-defaults-weaken.json"))
        .await
        .unwrap();
    assert_eq!(report.status, Status::DefaultsChanged);
    let d = report.account_defaults.as_ref().unwrap();
    assert_eq!(d.weakenings.len(), 2);
    assert_eq!(d.action, DefaultsAction::SetBack, "{}", d.action);
    assert_eq!((set.num_calls(), publish.num_calls()), (1, 1));

    // Strengthening it is not news, and nothing is written.
    let mut ev = fixture("modify-metadata-defaults-weaken.json");
    ev["detail"]["requestParameters"] =
        serde_json::json!({"ModifyInstanceMetadataDefaultsRequest": {"HttpTokens": "required"}});
    let report = g.handle(&ev).await.unwrap();
    assert_eq!(report.notification, "not needed");
    assert_eq!((set.num_calls(), publish.num_calls()), (1, 1));

    // Notify mode tells, and does not write.
    let set2 = mock!(Ec2Client::modify_instance_metadata_defaults)
        .then_output(|| ModifyInstanceMetadataDefaultsOutput::builder().build());
    let publish2 = publish_ok();
    let g = guard_with(
        &[
            ("SET_ACCOUNT_DEFAULT", "true"),
            ("GUARD_MODE", "notify"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
        ],
        &[&get, &set2],
        &[&publish2],
        &[],
    );
    g.handle(&fixture("modify-metadata-defaults-weaken.json"))
        .await
        .unwrap();
    assert_eq!((set2.num_calls(), publish2.num_calls()), (0, 1));
}

#[tokio::test]
async fn metadata_no_token_rejected_is_read_since_the_guard_switched_each_instance() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodb::Client as DynamoClient;
    use std::collections::HashMap;

    let now = imds_guard::clock::now_secs();
    let switched = now - 6 * 3600;
    // Nothing is left at optional; the memory knows two instances the guard
    // switched six hours ago.
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = defaults(HttpTokensState::Required, HttpTokensEnforcedState::Disabled);
    let remembered = mock!(DynamoClient::query)
        .match_requests(|q| {
            q.key_condition_expression() == Some("pk = :pk AND begins_with(sk, :prefix)")
                && q.expression_attribute_values().is_some_and(|v| {
                    v.get(":prefix")
                        .and_then(|p| p.as_s().ok())
                        .map(String::as_str)
                        == Some("remediated#")
                })
        })
        .then_output(move || {
            let item = |id: &str| {
                HashMap::from([
                    (
                        "pk".to_string(),
                        AttributeValue::S("123456789012#us-east-1".into()),
                    ),
                    (
                        "sk".to_string(),
                        AttributeValue::S(format!("remediated#{id}")),
                    ),
                    ("at".to_string(), AttributeValue::N(switched.to_string())),
                    (
                        "expires_at".to_string(),
                        AttributeValue::N((now + 86_400).to_string()),
                    ),
                ])
            };
            QueryOutput::builder()
                .items(item("i-0aaaaaaaaaaaaaaa1"))
                .items(item("i-0aaaaaaaaaaaaaaa2"))
                .build()
        });
    let noticed = mock!(DynamoClient::query).then_output(|| QueryOutput::builder().build());
    // The record of since when the guard enforces here, begun.
    let written = mock!(DynamoClient::batch_write_item).then_output(|| {
        aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput::builder().build()
    });
    // Refused calls, hourly: one instance refused calls after it was
    // switched; the other refused none.
    let rejected = mock!(CwClient::get_metric_data).then_compute_output(move |input| {
        let results = input
            .metric_data_queries()
            .iter()
            .map(|q| {
                let stat = q.metric_stat().unwrap();
                let metric = stat.metric().unwrap();
                assert_eq!(metric.metric_name(), Some("MetadataNoTokenRejected"));
                let id = metric.dimensions()[0].value().unwrap();
                let r = MetricDataResult::builder().set_id(q.id().map(str::to_string));
                let r = if id == "i-0aaaaaaaaaaaaaaa1" {
                    let after = (switched + 3600) as i64;
                    r.values(4.0)
                        .values(3.0)
                        .timestamps(DateTime::from_secs(after))
                        .timestamps(DateTime::from_secs(after + 3600))
                } else {
                    r.values(0.0)
                        .timestamps(DateTime::from_secs(switched as i64 + 3600))
                };
                r.build()
            })
            .collect();
        GetMetricDataOutput::builder()
            .set_metric_data_results(Some(results))
            .build()
    });
    let publish = publish_ok();
    let g = Guard::new(
        config(&[
            ("CHECK_METADATA_NO_TOKEN", "true"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
            ("MEMORY_TABLE", "imds-guard-memory"),
        ]),
        FixedClients {
            ec2: common::ec2(&[&empty, &get]),
            sns: common::sns(&[&publish]),
            metrics: common::metrics(&[&rejected]),
            members: None,
            memory: Some(common::memory(&[&remembered, &noticed, &written])),
            failed_events_queue: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    );
    let mut ev = scheduled();
    ev["account"] = "123456789012".into();
    let report = g.handle(&ev).await.unwrap();
    let sweep = report.sweep.as_ref().unwrap();
    assert_eq!(rejected.num_calls(), 1);
    assert_eq!(sweep.refusing_imdsv1.len(), 1, "{sweep:?}");
    let broken = &sweep.refusing_imdsv1[0];
    assert_eq!(broken.instance_id, "i-0aaaaaaaaaaaaaaa1");
    assert_eq!(broken.refused_calls, 7.0);
    assert_eq!(broken.remediated_at, switched);
    assert_eq!(
        sweep.regions[0].readiness.verdict,
        ReadinessVerdict::NotReady
    );
}

//! The self-check on mocked AWS: every answer EC2 can give a dry run, as
//! the flow reads it, and what the run records, tells and returns. The
//! emulator cannot stand in here: it applies a dry-run modify (so no
//! emulator run ever sends a loosening probe: the first one, a no-op,
//! comes back a success and stops everything, as `the_emulator_...` shows).

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_tags::{CreateTagsError, CreateTagsOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use aws_sdk_ec2::operation::modify_instance_metadata_options::{
    ModifyInstanceMetadataOptionsError, ModifyInstanceMetadataOptionsOutput,
};
use aws_sdk_ec2::types::{HttpTokensState, InstanceStateName};
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{mock, Rule};
use imds_guard::aws::MemberRoles;
use imds_guard::config::MemberRole;
use imds_guard::guard::{Guard, GuardError};
use serde_json::{json, Value};

use crate::common::{self, config, FixedClients, Sent};
use crate::faults::{described, inst, running};

fn code(c: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(c)
        .message(format!("mocked {c}"))
        .build()
}

/// EC2 as a stack deployed as intended answers: the fix and the status tag
/// `DryRunOperation`, everything else `UnauthorizedOperation`.
fn as_intended() -> Vec<Rule> {
    vec![
        mock!(Ec2Client::modify_instance_metadata_options)
            .match_requests(|r| {
                r.http_tokens() == Some(&HttpTokensState::Required)
                    && r.http_put_response_hop_limit().is_none()
                    && r.http_endpoint().is_none()
            })
            .then_error(|| ModifyInstanceMetadataOptionsError::generic(code("DryRunOperation"))),
        mock!(Ec2Client::modify_instance_metadata_options).then_error(|| {
            ModifyInstanceMetadataOptionsError::generic(code("UnauthorizedOperation"))
        }),
        mock!(Ec2Client::create_tags)
            .match_requests(|r| {
                r.tags()
                    .iter()
                    .all(|t| t.key() == Some("imds-guard:status"))
            })
            .then_error(|| CreateTagsError::generic(code("DryRunOperation"))),
        mock!(Ec2Client::create_tags)
            .then_error(|| CreateTagsError::generic(code("UnauthorizedOperation"))),
    ]
}

/// A fleet with an instance at required (hop 1: room for the raise probe)
/// and one at optional.
fn fleet() -> Rule {
    mock!(Ec2Client::describe_instances).then_output(|| {
        described(vec![
            running("i-0aaaaaaaaaaaaaaa1", "optional", 1),
            inst(
                "i-0aaaaaaaaaaaaaaa2",
                "required",
                1,
                InstanceStateName::Running,
                &[("imds-guard:status", "remediated")],
            ),
        ])
    })
}

struct Run {
    result: Result<Value, GuardError>,
    bodies: Vec<String>,
    published: Vec<String>,
    remembered: usize,
}

async fn self_check(
    pairs: &[(&str, &str)],
    ec2_rules: &[&Rule],
    members: Option<Arc<MemberRoles>>,
) -> Run {
    let sent = Sent::default();
    let published = Arc::new(Mutex::new(Vec::new()));
    let seen = published.clone();
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(move |r| {
            seen.lock()
                .unwrap()
                .push(r.message().unwrap_or("").to_string());
            true
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let remembered = Arc::new(Mutex::new(0usize));
    let count = remembered.clone();
    let batch = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .match_requests(move |r| {
            *count.lock().unwrap() += r
                .request_items()
                .map_or(0, |m| m.values().map(Vec::len).sum::<usize>());
            true
        })
        .then_output(|| BatchWriteItemOutput::builder().build());
    let mut all = vec![
        (
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:imds-guard",
        ),
        ("MEMORY_TABLE", "imds-guard-memory"),
        ("SWEEP_REGIONS", "us-east-1"),
    ];
    all.extend_from_slice(pairs);
    let g = Guard::new(
        config(&all),
        FixedClients {
            ec2: common::ec2_seen_by(ec2_rules, sent.clone()),
            sns: common::sns(&[&publish]),
            metrics: common::metrics(&[]),
            members,
            memory: Some(common::memory(&[&batch])),
            failed_events_queue: None,
            autoscaling: common::autoscaling(&[]),
            findings: common::securityhub(&[]),
            events: None,
        },
    );
    let result = g
        .handle_payload(
            &json!({"imds_guard_self_check": "schedule", "region": "us-east-1"}),
            None,
        )
        .await;
    let n = *remembered.lock().unwrap();
    let p = published.lock().unwrap().clone();
    Run {
        result,
        bodies: sent.bodies(),
        published: p,
        remembered: n,
    }
}

/// Each check's status in the run's one account-region.
fn statuses(v: &Value) -> Vec<(String, String)> {
    v["self_check"][0]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["check"].as_str().unwrap().to_string(),
                o["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The writes sent (every request but the listing).
fn writes(bodies: &[String]) -> Vec<&String> {
    bodies
        .iter()
        .filter(|b| !b.contains("Action=DescribeInstances"))
        .collect()
}

#[tokio::test]
async fn a_stack_as_intended_passes_every_check_and_every_probe_is_a_dry_run() {
    let rules = as_intended();
    let f = fleet();
    let mut all: Vec<&Rule> = vec![&f];
    all.extend(rules.iter());
    let run = self_check(&[], &all, None).await;
    let v = run.result.unwrap();
    let st = statuses(&v);
    assert!(st.iter().all(|(_, s)| s == "pass"), "{st:?}");
    assert_eq!(st.len(), 7, "{st:?}");
    let w = writes(&run.bodies);
    assert_eq!(w.len(), 7);
    assert!(
        w.iter().all(|b| b.contains("DryRun=true")),
        "a probe went out without DryRun: {w:?}"
    );
    // The first probe asks the instance at required for required: a no-op.
    assert!(
        w[0].contains("InstanceId=i-0aaaaaaaaaaaaaaa2") && w[0].contains("HttpTokens=required"),
        "{}",
        w[0]
    );
    assert_eq!(
        run.remembered, 1,
        "the account-region's result is remembered"
    );
    assert!(
        run.published.is_empty(),
        "a scheduled run that found nothing wrong tells no one"
    );
    assert_eq!(v["summary"]["pass"], 1);
}

#[tokio::test]
async fn a_fix_aws_refuses_fails_the_check_and_is_told() {
    let refuse_all = [
        mock!(Ec2Client::modify_instance_metadata_options).then_error(|| {
            ModifyInstanceMetadataOptionsError::generic(code("UnauthorizedOperation"))
        }),
        mock!(Ec2Client::create_tags)
            .then_error(|| CreateTagsError::generic(code("UnauthorizedOperation"))),
    ];
    let f = fleet();
    let mut all: Vec<&Rule> = vec![&f];
    all.extend(refuse_all.iter());
    let run = self_check(&[], &all, None).await;
    let v = run.result.unwrap();
    let st = statuses(&v);
    assert!(
        st.contains(&("fix-allowed".into(), "fail".into())),
        "{st:?}"
    );
    // Nothing showed DryRun is honoured: only what changes nothing if
    // applied went out (the no-op fix, and the status tag's own value).
    let w = writes(&run.bodies);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[1].contains("Tag.1.Value=remediated"), "{}", w[1]);
    assert_eq!(run.published.len(), 1);
    assert!(
        run.published[0].contains("the fix, HttpTokens=required, is allowed"),
        "{}",
        run.published[0]
    );
    assert!(
        run.published[0].contains("sts decode-authorization-message"),
        "{}",
        run.published[0]
    );
}

#[tokio::test]
async fn a_loosening_aws_allows_is_least_privilege_not_in_force() {
    let allow_all = [
        mock!(Ec2Client::modify_instance_metadata_options)
            .then_error(|| ModifyInstanceMetadataOptionsError::generic(code("DryRunOperation"))),
        mock!(Ec2Client::create_tags)
            .then_error(|| CreateTagsError::generic(code("DryRunOperation"))),
    ];
    let f = fleet();
    let mut all: Vec<&Rule> = vec![&f];
    all.extend(allow_all.iter());
    let run = self_check(&[], &all, None).await;
    let v = run.result.unwrap();
    let st = statuses(&v);
    for refused in [
        "optional-refused",
        "hop-above-ceiling-refused",
        "hop-raise-refused",
        "endpoint-refused",
        "other-tag-refused",
    ] {
        assert!(
            st.contains(&(refused.into(), "fail".into())),
            "{refused}: {st:?}"
        );
    }
    assert!(
        run.published[0].contains("least privilege is not in force"),
        "{}",
        run.published[0]
    );
}

#[tokio::test]
async fn a_probe_that_succeeds_was_not_a_dry_run_and_stops_everything() {
    let applied = mock!(Ec2Client::modify_instance_metadata_options)
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let tags = mock!(Ec2Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let f = fleet();
    let run = self_check(
        &[("SWEEP_REGIONS", "us-east-1,eu-west-1")],
        &[&f, &applied, &tags],
        None,
    )
    .await;
    let Err(GuardError::Incomplete { summary }) = run.result else {
        panic!("a probe unsafe must fail the invocation: {:?}", run.result)
    };
    assert!(summary.contains("probe unsafe"), "{summary}");
    // One request went out, the no-op; nothing after it, in any region.
    assert_eq!(writes(&run.bodies).len(), 1, "{:?}", run.bodies);
    assert!(
        run.published[0].contains("probe unsafe"),
        "{:?}",
        run.published
    );
    assert_eq!(run.remembered, 2, "both regions' results are remembered");
}

#[tokio::test]
async fn throttling_and_an_instance_gone_are_warnings_never_passes() {
    for (answer, expect) in [
        ("RequestLimitExceeded", "throttled"),
        ("InvalidInstanceID.NotFound", "InvalidInstanceID.NotFound"),
    ] {
        let modify = mock!(Ec2Client::modify_instance_metadata_options)
            .then_error(move || ModifyInstanceMetadataOptionsError::generic(code(answer)));
        let rules = as_intended();
        let f = fleet();
        let mut all: Vec<&Rule> = vec![&f, &modify];
        all.extend(rules.iter());
        let run = self_check(&[], &all, None).await;
        let v = run.result.unwrap();
        let o = &v["self_check"][0]["outcomes"][0];
        assert_eq!(o["status"], "warn", "{answer}: {o}");
        assert!(o["detail"].as_str().unwrap().contains(expect), "{o}");
        let st = statuses(&v);
        let instance_checks: Vec<_> = st.iter().filter(|(c, _)| !c.contains("tag")).collect();
        assert!(
            instance_checks.iter().all(|(_, s)| s == "warn"),
            "{answer}: {st:?}"
        );
        assert!(run.published.is_empty(), "{answer}: {:?}", run.published);
    }
}

#[tokio::test]
async fn a_region_with_no_instance_is_not_probed_and_a_listing_refused_is_said() {
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let run = self_check(&[], &[&empty], None).await;
    let v = run.result.unwrap();
    assert!(statuses(&v).iter().all(|(_, s)| s == "warn"));
    assert!(writes(&run.bodies).is_empty());
    let refused = mock!(Ec2Client::describe_instances)
        .then_error(|| DescribeInstancesError::generic(code("UnauthorizedOperation")));
    let run = self_check(&[], &[&refused], None).await;
    let v = run.result.unwrap();
    assert!(
        v["self_check"][0]["error"]
            .as_str()
            .unwrap()
            .contains("could not be listed"),
        "{v}"
    );
}

#[tokio::test]
async fn account_defaults_are_probed_with_set_account_default_and_managed_ones_are_not() {
    use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
    use aws_sdk_ec2::operation::modify_instance_metadata_defaults::ModifyInstanceMetadataDefaultsError;
    use aws_sdk_ec2::types::{InstanceMetadataDefaultsResponse, ManagedBy};
    for managed in [false, true] {
        let get = mock!(Ec2Client::get_instance_metadata_defaults).then_output(move || {
            let mut l = InstanceMetadataDefaultsResponse::builder();
            if managed {
                l = l.managed_by(ManagedBy::DeclarativePolicy);
            }
            GetInstanceMetadataDefaultsOutput::builder()
                .account_level(l.build())
                .build()
        });
        let set_ok = mock!(Ec2Client::modify_instance_metadata_defaults)
            .match_requests(|r| {
                r.http_tokens_enforced().is_none()
                    && r.http_tokens().map(|t| t.as_str()) == Some("required")
            })
            .then_error(|| ModifyInstanceMetadataDefaultsError::generic(code("DryRunOperation")));
        let set_no = mock!(Ec2Client::modify_instance_metadata_defaults).then_error(|| {
            ModifyInstanceMetadataDefaultsError::generic(code("UnauthorizedOperation"))
        });
        let rules = as_intended();
        let f = fleet();
        let mut all: Vec<&Rule> = vec![&f, &get, &set_ok, &set_no];
        all.extend(rules.iter());
        let run = self_check(&[("SET_ACCOUNT_DEFAULT", "true")], &all, None).await;
        let st = statuses(&run.result.unwrap());
        let want = if managed { "managed" } else { "pass" };
        for c in [
            "default-allowed",
            "default-weaken-refused",
            "enforced-refused",
        ] {
            assert!(st.contains(&(c.into(), want.into())), "{c}: {st:?}");
        }
        let defaults_sent = run
            .bodies
            .iter()
            .filter(|b| b.contains("Action=ModifyInstanceMetadataDefaults"))
            .count();
        assert_eq!(defaults_sent, if managed { 0 } else { 3 });
    }
}

#[tokio::test]
async fn member_accounts_are_probed_in_a_session_of_their_own() {
    use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
    let who = mock!(aws_sdk_sts::Client::get_caller_identity).then_output(|| {
        GetCallerIdentityOutput::builder()
            .account("111122223333")
            .build()
    });
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let seen = sessions.clone();
    let assume = mock!(aws_sdk_sts::Client::assume_role)
        .match_requests(move |r| {
            seen.lock()
                .unwrap()
                .push(r.role_session_name().unwrap_or("").to_string());
            true
        })
        .then_output(|| {
            AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id("ASIAMEMBER")
                        .secret_access_key("secret")
                        .session_token("token")
                        .expiration(aws_sdk_sts::primitives::DateTime::from_secs(4_000_000_000))
                        .build()
                        .unwrap(),
                )
                .build()
        });
    let sts = common::sts(&[&who, &assume]);
    let members = Arc::new(MemberRoles::with_client(
        MemberRole {
            name: "imds-guard-member".into(),
            external_id: None,
        },
        sts,
        None,
    ));
    let rules = as_intended();
    let f = fleet();
    let mut all: Vec<&Rule> = vec![&f];
    all.extend(rules.iter());
    let run = self_check(
        &[
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("SWEEP_ACCOUNTS", "111122223333,444455556666"),
        ],
        &all,
        Some(members),
    )
    .await;
    let v = run.result.unwrap();
    let checks = v["self_check"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["role"], "the function's role");
    assert_eq!(
        checks[1]["role"],
        "arn:aws:iam::444455556666:role/imds-guard-member"
    );
    assert_eq!(*sessions.lock().unwrap(), ["imds-guard-self-check"]);
}

#[tokio::test]
async fn the_in_memory_fake_like_the_emulator_applies_a_dry_run_and_is_told_so() {
    // The fake, like moto, carries out what it is sent: the first probe's
    // success makes the run unsafe, and nothing more is sent.
    let cloud = crate::fake::FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    let g = cloud.guard(&[("SWEEP_REGIONS", "us-east-1")]);
    let r = g
        .handle_payload(&json!({"imds_guard_self_check": "invoke"}), None)
        .await;
    assert!(
        matches!(r, Err(GuardError::Incomplete { ref summary }) if summary.contains("probe unsafe")),
        "{r:?}"
    );
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "optional");
}

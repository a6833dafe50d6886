//! Every door refuses an account outside `ALLOWED_ACCOUNT_IDS` before a
//! single call is sent there: the event function, the sources function,
//! the sweep, a fan-out shard, the outputs function's handoff and the
//! command line. Each goes through `AccountRegion::enter` (or, on the
//! command line, is refused before a client is built), so one test per
//! door shows the door, not a copy of the rule, is what refuses.

use std::process::Command;

use imds_guard::report::{Outcome, Status};
use serde_json::{json, Value};

use crate::common::{fixture, launch_event};
use crate::fake::FakeCloud;

const ALLOWED: &str = "111122223333";
const OTHER: &str = "999999999999";

fn cloud() -> FakeCloud {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.with_security_hub();
    cloud.set_defaults(Some(Default::default()));
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.add_template("lt-0a1b2c3d4e5f60718", &[], 1, &[(1, None)]);
    cloud
}

/// The calls that would have looked at or changed the other account.
fn touched(cloud: &FakeCloud) -> Vec<String> {
    cloud
        .calls()
        .into_keys()
        .filter(|op| !matches!(op.as_str(), "Publish" | "SendMessage" | "GetResourcePolicy"))
        .collect()
}

fn in_other(mut ev: Value) -> Value {
    ev["account"] = OTHER.into();
    ev["detail"]["recipientAccountId"] = OTHER.into();
    ev
}

/// An enforcing guard that tells and remembers, allowed into `ALLOWED` only.
fn allowed_only(cloud: &FakeCloud) -> crate::fake::TestGuard<'_> {
    cloud
        .test_guard()
        .notifying()
        .remembering()
        .enforcing()
        .with(&[("ALLOWED_ACCOUNT_IDS", ALLOWED)])
}

#[tokio::test(start_paused = true)]
async fn the_event_function_refuses_another_account_before_any_call() {
    let cloud = cloud();
    let ev = in_other(launch_event(
        "run-instances-cli-multi.json",
        &["i-0aaaaaaaaaaaaaaa1".into()],
        None,
    ));
    let r = allowed_only(&cloud)
        .build()
        .handle_event(&ev, None)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Refused);
    assert_eq!(r.instances[0].outcome, Outcome::Refused);
    assert!(touched(&cloud).is_empty(), "{:?}", cloud.calls());
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "optional");
}

#[tokio::test(start_paused = true)]
async fn the_sources_function_refuses_another_account_before_any_call() {
    let cloud = cloud();
    let ev = in_other(fixture("create-launch-template.json"));
    let r = allowed_only(&cloud)
        .with(&[("FIX_SOURCES", "true")])
        .build()
        .handle(&ev)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Refused);
    assert!(touched(&cloud).is_empty(), "{:?}", cloud.calls());
}

#[tokio::test(start_paused = true)]
async fn the_sweep_and_a_fan_out_shard_refuse_another_account_before_any_call() {
    // The organization lists the other account: counted as not allowed,
    // never entered.
    let cloud = cloud();
    cloud.set_organization(vec![OTHER.into()]);
    let g = allowed_only(&cloud)
        .with(&[
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("SWEEP_ACCOUNTS", "ORGANIZATION"),
            ("SWEEP_REGIONS", "us-east-1"),
        ])
        .build();
    let r = g
        .handle(&crate::common::scheduled_in("us-east-1"))
        .await
        .unwrap();
    let sweep = r.sweep.expect("a sweep");
    let other = sweep.accounts.iter().find(|a| a.account == OTHER);
    assert!(
        other.is_some_and(|a| a.access == imds_guard::report::Access::NotAllowed),
        "{:?}",
        sweep.accounts
    );
    assert!(sweep
        .regions
        .iter()
        .all(|s| s.account.as_deref() != Some(OTHER)));
    let ops = touched(&cloud);
    assert!(
        ops.iter().all(|op| op == "ListAccounts"
            || op.starts_with("Query")
            || op.starts_with("BatchWrite")),
        "{ops:?}"
    );
    assert_eq!(cloud.count("DescribeInstances"), 0);

    // A shard step naming it (a forged or stale state-machine input): the
    // door refuses it too.
    let cloud = crate::refusals::cloud();
    let g = allowed_only(&cloud)
        .with(&[("MEMBER_ROLE_NAME", "imds-guard-member")])
        .build();
    let answer = g
        .handle_payload(
            &json!({"imds_guard_step": "shard", "run": "r-1", "account": OTHER}),
            None,
        )
        .await;
    assert_eq!(
        answer.ok(),
        Some(json!({"account": OTHER, "status": "failed"}))
    );
    // The shard's record says why, for the run's summary.
    let recorded = format!(
        "{:?}",
        cloud.records(imds_guard::memory::Kind::Shard.prefix())
    );
    assert!(recorded.contains("ALLOWED_ACCOUNT_IDS"), "{recorded}");
    assert_eq!(cloud.count("DescribeInstances"), 0, "{:?}", cloud.calls());
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 0);
}

#[tokio::test(start_paused = true)]
async fn the_outputs_function_files_nothing_for_another_account() {
    let cloud = cloud();
    let g = allowed_only(&cloud)
        .with(&[
            ("SECURITY_HUB_FINDINGS", "true"),
            ("OUTPUTS_SENDERS", "AROAGUARDROLE0000001"),
        ])
        .build();
    // A message as the guard's role sends it, naming the other account:
    // with no bus here, anything but a drop would fail the message.
    let h = imds_guard::handoff::Handoff {
        events: vec![imds_guard::routing::BusEvent {
            detail_type: imds_guard::routing::SWEEP_FINISHED.into(),
            detail: "{}".into(),
        }],
        ..imds_guard::handoff::Handoff::new(OTHER, "us-east-1")
    };
    let body = h.messages().pop().expect("one message");
    let answer = g
        .handle_handoffs(&json!({"Records": [{
            "messageId": "m-0", "eventSource": "aws:sqs", "body": body,
            "attributes": {"SenderId": "AROAGUARDROLE0000001:imds-guard-event"}}]}))
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert!(cloud.findings().is_empty());
    assert!(touched(&cloud).is_empty(), "{:?}", cloud.calls());
}

#[test]
fn the_command_line_refuses_another_account_before_building_a_client() {
    let out = Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .args(["sweep", "--account", OTHER, "--region", "us-east-1"])
        .env("ALLOWED_ACCOUNT_IDS", ALLOWED)
        .env("MEMBER_ROLE_NAME", "imds-guard-member")
        // Nothing listens here: a call sent would fail differently.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("--account {OTHER} is not in ALLOWED_ACCOUNT_IDS")),
        "{stderr}"
    );
}

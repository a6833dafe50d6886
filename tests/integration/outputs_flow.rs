//! The outputs on the in-memory fake (`fake`): Security Hub findings that
//! follow the guard's decisions (filed by the event path, reconciled by the
//! sweep), the news on an EventBridge bus, and that a compliant launch costs
//! no call with every output on.

use imds_guard::finding::{ComplianceStatus, RecordState};
use imds_guard::guard::Guard;
use imds_guard::report::Outcome;
use imds_guard::routing;
use serde_json::{json, Value};

use crate::common::launch_event;
use crate::common::scheduled;
use crate::fake::FakeCloud;

use crate::common::TOPIC;

/// A guard that files its findings and puts its events itself, as the
/// command line does (and the outputs function, whose handoffs are tested
/// below): the fake otherwise wires the functions as production does, the
/// event and sweep functions handing off.
fn direct(cloud: &FakeCloud, pairs: &[(&str, &str)]) -> Guard<crate::fake::FakeClients> {
    cloud.as_event_function(false);
    cloud.test_guard().notifying().filing().with(pairs).build()
}

/// The guard's role's unique id, as the stack hands it to the outputs
/// function (`OUTPUTS_SENDERS`), and a session of it as SQS names the sender.
const GUARD_ROLE_ID: &str = "AROAGUARDROLE0000001";
const GUARD_SENDER: &str = "AROAGUARDROLE0000001:imds-guard-event";

/// An SQS record as Lambda delivers it, sent by `sender`.
fn sqs_from(sender: &str, id: &str, body: &str) -> Value {
    json!({"messageId": id, "eventSource": "aws:sqs", "body": body,
           "attributes": {"SenderId": sender}})
}

fn sqs(id: &str, body: &str) -> Value {
    sqs_from(GUARD_SENDER, id, body)
}

fn launch(ids: &[&str]) -> Value {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    launch_event("run-instances-cli-multi.json", &ids, Some("us-east-1"))
}

/// A person's `ModifyInstanceMetadataOptions` that sets `required`.
fn fixed_by_hand(id: &str) -> Value {
    let mut ev: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("events/modify-metadata-options-revert.json"),
        )
        .unwrap(),
    )
    .unwrap();
    ev["region"] = "us-east-1".into();
    ev["detail"]["awsRegion"] = "us-east-1".into();
    let req = &mut ev["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"];
    req["HttpTokens"] = "required".into();
    req["InstanceId"] = id.into();
    let resp = &mut ev["detail"]["responseElements"]["ModifyInstanceMetadataOptionsResponse"];
    resp["instanceId"] = id.into();
    resp["instanceMetadataOptions"]["httpTokens"] = "required".into();
    ev
}

fn status_of(cloud: &FakeCloud, id: &str) -> Option<(ComplianceStatus, RecordState)> {
    cloud
        .findings()
        .values()
        .find(|f| f.id.ends_with(&format!("/{id}")))
        .map(|f| (f.status().unwrap(), f.record_state))
}

#[tokio::test(start_paused = true)]
async fn a_flagged_launch_fails_its_finding_and_a_fix_by_hand_passes_it() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_memory();
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "required", 2);
    let g = direct(&cloud, &[("GUARD_MODE", "notify")]);
    let report = g
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]))
        .await
        .unwrap();
    let sh = report.security_hub.clone().expect("findings filed");
    assert_eq!(sh.filed.get(&ComplianceStatus::Failed), Some(&1));
    assert_eq!(cloud.findings().len(), 1, "the compliant launch has none");
    let f = cloud.findings().into_values().next().unwrap();
    assert_eq!(
        f.id,
        "imds-guard/111122223333/us-east-1/i-0aaaaaaaaaaaaaaa1"
    );
    assert_eq!(f.aws_account_id, "111122223333");
    assert_eq!(f.status(), Some(ComplianceStatus::Failed));
    assert_eq!(report.aws_calls.get("BatchImportFindings"), Some(&1));
    // Remembered, so the sweep does not file it again.
    let swept = g
        .handle(&json!({
            "version": "0", "id": "e-sweep", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "111122223333",
            "time": "2026-11-29T06:00:00Z", "region": "us-east-1",
            "resources": [], "detail": {}
        }))
        .await
        .unwrap();
    assert_eq!(swept.security_hub.as_ref().unwrap().unchanged, 1);
    assert_eq!(swept.aws_calls.get("BatchImportFindings"), None);

    // Someone sets `required` by hand: the same finding passes.
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.observed.options.http_tokens = Some("required".into())
    });
    let report = g
        .handle(&fixed_by_hand("i-0aaaaaaaaaaaaaaa1"))
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Compliant), 1);
    assert_eq!(cloud.findings().len(), 1, "updated, not a second finding");
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Passed, RecordState::Archived))
    );

    // A regression files the same finding FAILED and ACTIVE again (Security
    // Hub then sets its workflow back to NEW), and a fix right after passes
    // it again: each update is newer than the last, even within one
    // millisecond, or Security Hub (and the fake) would ignore it.
    for round in 0..3 {
        cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
            i.observed.options.http_tokens = Some("optional".into())
        });
        let mut revert = crate::common::revert_event("i-0aaaaaaaaaaaaaaa1");
        revert["region"] = "us-east-1".into();
        revert["detail"]["awsRegion"] = "us-east-1".into();
        let report = g.handle(&revert).await.unwrap();
        assert_eq!(report.count(Outcome::Flagged), 1, "round {round}");
        assert_eq!(cloud.findings().len(), 1, "the same finding, updated");
        assert_eq!(
            status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
            Some((ComplianceStatus::Failed, RecordState::Active)),
            "round {round}"
        );
        cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
            i.observed.options.http_tokens = Some("required".into())
        });
        g.handle(&fixed_by_hand("i-0aaaaaaaaaaaaaaa1"))
            .await
            .unwrap();
        assert_eq!(
            status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
            Some((ComplianceStatus::Passed, RecordState::Archived)),
            "round {round}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn enforce_files_a_passed_finding_for_what_it_fixed() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let g = direct(&cloud, &[]);
    let report = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    assert_eq!(report.count(Outcome::Remediated), 1);
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Passed, RecordState::Archived))
    );
}

#[tokio::test(start_paused = true)]
async fn a_compliant_launch_costs_no_call_with_every_output_on() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_bus();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "required", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .filing()
        .with(&[
            ("CHAT_NOTIFICATIONS", "true"),
            ("EVENT_BUS_NAME", "security-events"),
            ("METRICS_PER_ACCOUNT", "true"),
        ])
        .build();
    // The fixture's item says `required` with complete options.
    let report = g
        .handle(&launch_event(
            "run-instances-compliant.json",
            &["i-0aaaaaaaaaaaaaaa1".to_string()],
            Some("us-east-1"),
        ))
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Compliant), 1);
    assert!(report.aws_calls.is_empty(), "{:?}", report.aws_calls);
    assert!(cloud.calls().is_empty(), "{:?}", cloud.calls());
    assert!(report.security_hub.is_none() && report.routed.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_sweep_files_changes_only_passes_fixed_instances_and_archives_gone_ones() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa3", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa4", "required", 2);
    let g = direct(&cloud, &[("GUARD_MODE", "notify")]);

    let first = g.handle(&scheduled()).await.unwrap();
    let sh = first.security_hub.clone().unwrap();
    assert_eq!(sh.filed.get(&ComplianceStatus::Failed), Some(&3));
    assert_eq!(cloud.findings().len(), 3);

    // Nothing changed: nothing is filed again.
    let again = g.handle(&scheduled()).await.unwrap();
    let sh = again.security_hub.clone().unwrap();
    assert!(sh.filed.is_empty(), "{sh:?}");
    assert_eq!(sh.unchanged, 3);
    assert_eq!(again.aws_calls.get("BatchImportFindings"), None);

    // One is fixed by hand, one terminated: the sweep settles both.
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.observed.options.http_tokens = Some("required".into())
    });
    cloud.edit("i-0aaaaaaaaaaaaaaa2", |i| {
        i.observed.state = Some("terminated".into())
    });
    let third = g.handle(&scheduled()).await.unwrap();
    let sh = third.security_hub.clone().unwrap();
    assert_eq!(sh.archived, 1, "{sh:?}");
    assert_eq!(sh.filed.get(&ComplianceStatus::Passed), Some(&1));
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Passed, RecordState::Archived))
    );
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa2").map(|s| s.1),
        Some(RecordState::Archived)
    );
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa3"),
        Some((ComplianceStatus::Failed, RecordState::Active))
    );
    assert_eq!(status_of(&cloud, "i-0aaaaaaaaaaaaaaa4"), None);
}

#[tokio::test(start_paused = true)]
async fn security_hub_not_enabled_is_a_warning_not_a_failure() {
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let g = direct(&cloud, &[("GUARD_MODE", "notify")]);
    let report = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    let sh = report.security_hub.unwrap();
    assert!(sh.errors.is_empty());
    assert!(sh.warnings[0].contains("Security Hub is not enabled in us-east-1"));
    cloud.add("i-0aaaaaaaaaaaaaaa2", "optional", 2);
    cloud.with_memory();
    let swept = g.handle(&scheduled()).await.unwrap();
    let sh = swept.security_hub.unwrap();
    assert!(sh.errors.is_empty(), "{sh:?}");
    assert_eq!(sh.warnings.len(), 1, "said once for the region: {sh:?}");
    assert_eq!(
        swept.aws_calls.get("BatchImportFindings"),
        Some(&1),
        "nothing more is tried in the region"
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_memory_a_sweep_files_every_decision_and_says_it_settles_none() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.set_defaults(Some(Default::default()));
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let g = direct(&cloud, &[("GUARD_MODE", "notify")]);
    for _ in 0..2 {
        let swept = g.handle(&scheduled()).await.unwrap();
        let sh = swept.security_hub.unwrap();
        assert_eq!(sh.filed.get(&ComplianceStatus::Failed), Some(&1));
        assert!(sh.warnings[0].contains("without MEMORY_TABLE"), "{sh:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_finding_that_cannot_be_filed_fails_the_invocation_naming_it() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    cloud.fail(
        "BatchImportFindings",
        1,
        crate::fake::api_error("InternalException"),
    );
    let g = direct(&cloud, &[("GUARD_MODE", "notify")]);
    let err = g
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Security Hub findings not filed"), "{msg}");
    assert!(
        msg.contains("imds-guard/111122223333/us-east-1/i-0aaaaaaaaaaaaaaa1"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_news_goes_on_the_bus_one_event_per_instance_and_the_sweep_its_summary() {
    let cloud = FakeCloud::new();
    cloud.with_bus();
    // Puts its events itself, as the command line (and the outputs
    // function) does.
    cloud.as_event_function(false);
    cloud.set_defaults(Some(Default::default()));
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 2);
    let g = cloud.guard(&[
        ("NOTIFY_TOPIC_ARN", TOPIC),
        ("EVENT_BUS_NAME", "security-events"),
    ]);
    let report = g
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]))
        .await
        .unwrap();
    assert_eq!(report.routed.as_ref().unwrap().events, 2);
    let routed = cloud.routed();
    assert_eq!(routed.len(), 2);
    assert!(routed
        .iter()
        .all(|e| e.detail_type == routing::INSTANCE_DECIDED));
    let d: Value = serde_json::from_str(&routed[0].detail).unwrap();
    assert_eq!(d["outcome"], "remediated");
    assert_eq!(d["instance"]["instance_id"], "i-0aaaaaaaaaaaaaaa1");

    // The sweep: its summary (and nothing about instances already fixed).
    let swept = g.handle(&scheduled()).await.unwrap();
    assert_eq!(swept.routed.as_ref().unwrap().events, 1);
    let last = cloud.routed().pop().unwrap();
    assert_eq!(last.detail_type, routing::SWEEP_FINISHED);
    let d: Value = serde_json::from_str(&last.detail).unwrap();
    assert!(d["summary"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("sweep of account 111122223333, 1 region(s)"));
}

#[tokio::test(start_paused = true)]
async fn the_event_function_hands_its_findings_and_events_to_the_outputs_function() {
    let cloud = FakeCloud::new();
    let g = handing_off(&cloud, false);

    // The event function: no Security Hub or EventBridge client of its own.
    cloud.as_event_function(true);
    let report = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    assert_eq!(report.security_hub.as_ref().unwrap().queued, 1);
    assert_eq!(report.routed.as_ref().unwrap().queued, 1);
    assert!(cloud.findings().is_empty() && cloud.routed().is_empty());
    assert_eq!(report.aws_calls.get("BatchImportFindings"), None);
    let messages = cloud.take_handed_off();
    assert_eq!(
        messages.len(),
        2,
        "one for the findings, one for the events"
    );

    // The outputs function: files, remembers and puts them; a message it
    // cannot read is named for SQS to deliver again (and keep, at last).
    cloud.as_event_function(false);
    let mut records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, body)| sqs(&format!("m-{i}"), body))
        .collect();
    records.push(sqs("m-bad", "{\"account\": \"x\"}"));
    let answer = g
        .handle_handoffs(&json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
    );
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Failed, RecordState::Active))
    );
    let routed = cloud.routed();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].detail_type, routing::INSTANCE_DECIDED);
    // Remembered: the sweep finds it filed already.
    let swept = g.handle(&scheduled()).await.unwrap();
    assert_eq!(swept.security_hub.as_ref().unwrap().unchanged, 1);

    // Security Hub refusing the call: the message is named, not lost.
    cloud.fail(
        "BatchImportFindings",
        1,
        crate::fake::api_error("InternalException"),
    );
    let answer = g
        .handle_handoffs(&json!({"Records": [sqs("m-0", &messages[0])]}))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-0"}]})
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweep_hands_off_its_findings_and_its_summary_and_remembers_none_itself() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_memory();
    cloud.with_bus();
    cloud.set_defaults(Some(Default::default()));
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 2);
    let pairs = [
        ("GUARD_MODE", "notify"),
        ("EVENT_BUS_NAME", "security-events"),
        (
            "OUTPUTS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-outputs",
        ),
        ("OUTPUTS_SENDERS", GUARD_ROLE_ID),
    ];
    let g = cloud.test_guard().notifying().filing().with(&pairs).build();

    // The sweep's binary carries neither client: its findings and its
    // summary go to the queue, and nothing is remembered as filed yet.
    cloud.as_event_function(true);
    let swept = g.handle(&scheduled()).await.unwrap();
    let sh = swept.security_hub.clone().unwrap();
    assert_eq!(sh.queued, 2, "{sh:?}");
    assert!(sh.filed.is_empty() && sh.errors.is_empty(), "{sh:?}");
    assert!(swept.routed.as_ref().unwrap().queued >= 1);
    assert!(cloud.findings().is_empty() && cloud.routed().is_empty());
    let messages = cloud.take_handed_off();
    assert_eq!(
        messages.len(),
        2,
        "one for the findings, one for the events"
    );
    // Not remembered by the sweep: a second sweep hands them off again.
    let again = g.handle(&scheduled()).await.unwrap();
    assert_eq!(again.security_hub.as_ref().unwrap().queued, 2);
    cloud.take_handed_off();

    // The outputs function files and remembers them; the next sweep finds
    // them filed and hands off nothing more.
    cloud.as_event_function(false);
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, body)| sqs(&format!("m-{i}"), body))
        .collect();
    let answer = g
        .handle_handoffs(&json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(cloud.findings().len(), 2);
    assert_eq!(cloud.routed()[0].detail_type, routing::SWEEP_FINISHED);
    cloud.as_event_function(true);
    let third = g.handle(&scheduled()).await.unwrap();
    let sh = third.security_hub.clone().unwrap();
    assert_eq!((sh.queued, sh.unchanged), (0, 2), "{sh:?}");
}

#[tokio::test(start_paused = true)]
async fn the_outputs_function_takes_only_its_queues_batches() {
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .filing()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    let err = g
        .handle_handoffs(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only batches"), "{err}");
    assert!(cloud.calls().is_empty(), "{:?}", cloud.calls());
}

#[tokio::test(start_paused = true)]
async fn a_sweep_listing_every_instance_passes_one_fixed_by_hand() {
    // With a hop-limit maximum the sweep lists every instance, so one fixed
    // by hand is listed (and makes no finding) rather than missing: its
    // open finding must still pass.
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 2);
    let g = direct(&cloud, &[("GUARD_MODE", "notify"), ("MAX_HOP_LIMIT", "2")]);
    let first = g.handle(&scheduled()).await.unwrap();
    assert_eq!(
        first
            .security_hub
            .unwrap()
            .filed
            .get(&ComplianceStatus::Failed),
        Some(&2)
    );
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.observed.options.http_tokens = Some("required".into())
    });
    let second = g.handle(&scheduled()).await.unwrap();
    let sh = second.security_hub.unwrap();
    assert_eq!(sh.filed.get(&ComplianceStatus::Passed), Some(&1), "{sh:?}");
    assert_eq!(sh.unchanged, 1, "{sh:?}");
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Passed, RecordState::Archived))
    );
}

#[tokio::test(start_paused = true)]
async fn a_sweep_with_nowhere_to_file_its_findings_fails_naming_why() {
    let cloud = FakeCloud::new();
    cloud.with_security_hub();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .filing()
        .with(&[("GUARD_MODE", "notify")])
        .build();
    // No Security Hub client and no OUTPUTS_QUEUE_URL: never a silent skip.
    cloud.as_event_function(true).without_outputs_queue();
    let err = g.handle(&scheduled()).await.unwrap_err();
    assert!(err.to_string().contains("no OUTPUTS_QUEUE_URL"), "{err}");
    assert!(cloud.findings().is_empty());
}

/// A guard that hands off (as the event function and the sweep do) with a
/// noncompliant instance to decide; with `refusals`, an outputs dead-letter
/// queue to keep what the outputs function refuses.
fn handing_off(cloud: &FakeCloud, refusals: bool) -> Guard<crate::fake::FakeClients> {
    cloud.with_security_hub();
    cloud.with_memory();
    cloud.with_bus();
    cloud.set_defaults(Some(Default::default()));
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    let mut pairs = vec![
        ("GUARD_MODE", "notify"),
        ("EVENT_BUS_NAME", "security-events"),
        (
            "OUTPUTS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-outputs",
        ),
        ("OUTPUTS_SENDERS", GUARD_ROLE_ID),
    ];
    if refusals {
        cloud.with_refusals_queue();
        pairs.push((
            "OUTPUTS_DEAD_LETTER_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-outputs-dlq",
        ));
    }
    cloud.test_guard().notifying().filing().with(&pairs).build()
}

/// A handoff the guard's event function really sent, for a noncompliant
/// instance, with the guard that receives it.
async fn sent_by_the_event_function(
    cloud: &FakeCloud,
) -> (Guard<crate::fake::FakeClients>, Vec<String>) {
    let g = handing_off(cloud, true);
    cloud.as_event_function(true);
    g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    cloud.as_event_function(false);
    (g, cloud.take_handed_off())
}

#[tokio::test(start_paused = true)]
async fn a_handoff_sent_by_anyone_but_the_guards_role_is_refused_and_kept_with_why() {
    let cloud = FakeCloud::new();
    let (g, messages) = sent_by_the_event_function(&cloud).await;
    // Word for word what the guard sent, but sent by an operator's role, by
    // a user, or with no sender at all: nothing is filed or put, and each is
    // kept with its reason (and done: delivering it again changes nothing).
    let forged: Vec<Value> = ["AROAOPERATOR00000001:mallory", "AIDAUSER000000000001"]
        .iter()
        .enumerate()
        .flat_map(|(i, who)| {
            messages
                .iter()
                .enumerate()
                .map(move |(j, body)| sqs_from(who, &format!("f-{i}-{j}"), body))
        })
        .chain([json!({"messageId": "f-none", "eventSource": "aws:sqs", "body": messages[0]})])
        .collect();
    let n = forged.len();
    let answer = g
        .handle_handoffs(&json!({ "Records": forged }))
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert!(cloud.findings().is_empty(), "{:?}", cloud.findings());
    assert!(cloud.routed().is_empty());
    let kept = cloud.refused();
    assert_eq!(kept.len(), n);
    assert_eq!(kept[0]["sender"], "AROAOPERATOR00000001:mallory");
    assert!(kept[0]["refused"]
        .as_str()
        .unwrap()
        .contains("not the guard's role"));
    assert_eq!(kept[0]["body"], messages[0].as_str());
    assert!(kept[n - 1]["refused"]
        .as_str()
        .unwrap()
        .contains("no SenderId"));

    // The same messages from the guard's role are filed and put.
    let real: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, b)| sqs(&format!("m-{i}"), b))
        .collect();
    let answer = g
        .handle_handoffs(&json!({ "Records": real }))
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Failed, RecordState::Active))
    );
    assert_eq!(cloud.routed().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_outputs_function_files_what_it_builds_not_what_a_message_says() {
    let cloud = FakeCloud::new();
    let (g, messages) = sent_by_the_event_function(&cloud).await;
    let findings: Value = messages
        .iter()
        .map(|m| serde_json::from_str::<Value>(m).unwrap())
        .find(|m| m.get("filings").is_some())
        .unwrap();
    // What crosses is the decision's facts: no status, severity or words
    // of a finding's own.
    let filing = &findings["filings"][0];
    assert!(filing.get("decided").is_some(), "{filing}");
    for field in ["Compliance", "Severity", "Title", "Description", "Types"] {
        assert!(
            !findings.to_string().contains(field),
            "{field} in {findings}"
        );
    }
    // Forged in the previous format (ASFF) from the guard's own queue: a
    // FAILED finding passed, and one downgraded, are not findings the guard
    // builds, and an event of a type the guard does not put is refused.
    let place = imds_guard::finding::Place {
        account: "111122223333",
        region: "us-east-1",
        now: 1_795_000_000,
        stamp_ms: 0,
    };
    let honest =
        imds_guard::finding::rebuild(&place, &serde_json::from_value(filing.clone()).unwrap())
            .unwrap();
    let mut passed = serde_json::to_value(&honest).unwrap();
    passed["Compliance"]["Status"] = "PASSED".into();
    let mut low = serde_json::to_value(&honest).unwrap();
    low["FindingProviderFields"]["Severity"]["Label"] = "LOW".into();
    low["Severity"]["Label"] = "LOW".into();
    let v1 = |f: &Value| {
        json!({"account": "111122223333", "region": "us-east-1", "findings": [f]}).to_string()
    };
    let event = json!({"v": 2, "account": "111122223333", "region": "us-east-1",
        "events": [{"detail_type": "Instance Exempted Forever", "detail": "{}"}]})
    .to_string();
    let batch = json!({"Records": [
        sqs("p", &v1(&passed)), sqs("l", &v1(&low)), sqs("e", &event),
    ]});
    let answer = g.handle_handoffs(&batch).await.unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert!(cloud.findings().is_empty() && cloud.routed().is_empty());
    let why: Vec<String> = cloud
        .refused()
        .iter()
        .map(|k| k["refused"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("not one of the guard's") && why[1].contains("not one of the guard's"));
    assert!(why[2].contains("not one the guard puts"), "{why:?}");

    // A previous-format message the guard really sent, still queued at an
    // upgrade, is filed as it says.
    let answer = g
        .handle_handoffs(
            &json!({"Records": [sqs("old", &v1(&serde_json::to_value(&honest).unwrap()))]}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(
        status_of(&cloud, "i-0aaaaaaaaaaaaaaa1"),
        Some((ComplianceStatus::Failed, RecordState::Active))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_that_cannot_be_kept_is_named_for_sqs_to_deliver_again() {
    let cloud = FakeCloud::new();
    let (g, messages) = sent_by_the_event_function(&cloud).await;
    cloud.fail("SendMessage", 1, crate::fake::api_error("InternalError"));
    let answer = g
        .handle_handoffs(&json!({"Records": [sqs_from("AIDAUSER000000000001", "x", &messages[0])]}))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "x"}]})
    );
    assert!(cloud.findings().is_empty() && cloud.refused().is_empty());
}

//! First boot, safely (`FIRST_BOOT_GRACE_SECONDS`), on the fake cloud: an
//! instance launched from an AMI that does not declare `ImdsSupport: v2.0`
//! waits in the first-boot queue (a delayed message, no running function)
//! and is decided afresh when it comes back; one whose AMI declares v2.0 is
//! switched at once.

use imds_guard::clock::now_secs;
use imds_guard::first_boot::{Delayed, KIND, MAX_DELAY_SECS, RECHECKS, RECHECK_SECS};
use imds_guard::report::{Idle, Outcome};
use serde_json::{json, Value};

use crate::common::launch_event;
use crate::fake::FakeCloud;

const AMI: &str = "ami-0c02fb55956c7d316";
pub(crate) const ROLE_ID: &str = "AROAGUARDROLE0000001";
pub(crate) const QUEUE: &str =
    "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-first-boot";

fn launch(ids: &[&str]) -> Value {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    launch_event("run-instances-cli-multi.json", &ids, None)
}

/// Instances launched `ago` seconds ago, at `optional`.
fn launched(cloud: &FakeCloud, ids: &[&str], ago: u64) {
    for id in ids {
        cloud.add(id, "optional", 1);
        cloud.edit(id, |i| i.observed.launch_time = Some(now_secs() - ago));
    }
}

/// A batch of the first-boot queue, as Lambda's SQS source delivers it.
pub(crate) fn batch(bodies: &[String], sender: &str) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| {
            json!({
                "messageId": format!("m-{n}"),
                "eventSource": "aws:sqs",
                "body": body,
                "attributes": { "SenderId": format!("{sender}:imds-guard-event") },
                "messageAttributes": { "kind": { "stringValue": KIND, "dataType": "String" } },
            })
        })
        .collect();
    json!({ "Records": records })
}

fn settings(grace: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FIRST_BOOT_GRACE_SECONDS", grace.to_string()),
        ("FIRST_BOOT_QUEUE_URL", QUEUE.to_string()),
        ("FIRST_BOOT_SENDERS", ROLE_ID.to_string()),
    ]
}

fn guard(
    cloud: &FakeCloud,
    grace: &str,
    more: &[(&str, &str)],
) -> imds_guard::guard::Guard<crate::fake::FakeClients> {
    let s = settings(grace);
    let mut all: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(more);
    cloud.test_guard().notifying().with(&all).build()
}

fn failures(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// The whole round: a launch from an undeclared AMI waits (nothing
/// written, the wait said, a delayed message queued); when the message
/// comes back after the grace it is switched and told.
#[tokio::test(start_paused = true)]
async fn an_undeclared_ami_waits_for_its_first_boot_and_is_then_switched() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 30);
    let g = guard(&cloud, "600", &[]);

    let r = g.handle(&launch(&[id])).await.unwrap();
    assert_eq!(
        cloud.tokens(id),
        "optional",
        "not switched within the grace"
    );
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 0);
    assert_eq!(cloud.count("DescribeImages"), 1);
    let i = &r.instances[0];
    assert_eq!(i.outcome, Outcome::Flagged);
    assert!(
        matches!(i.action.idle, Idle::FirstBoot { .. }),
        "{}",
        i.action
    );
    assert!(i.would.as_deref().unwrap().contains("HttpTokens=required"));
    assert!(i
        .findings
        .iter()
        .any(|f| f.contains("does not declare ImdsSupport v2.0")));
    assert!(
        r.tally().contains("1 waiting for first boot"),
        "{}",
        r.tally()
    );
    let told = &cloud.published()[0];
    assert!(
        told.body.contains("waits for its first boot until"),
        "{}",
        told.body
    );

    let delayed = cloud.take_delayed();
    assert_eq!(delayed.len(), 1);
    let (body, seconds) = &delayed[0];
    assert!(
        (565..=570).contains(seconds),
        "the rest of the grace: {seconds}"
    );
    let d = Delayed::parse(body).unwrap();
    assert_eq!(
        (d.instance.as_str(), d.account.as_str(), d.rechecks),
        (id, "111122223333", 0)
    );
    assert!(d.event_id.is_some(), "its launch event named");

    // The grace has passed when it comes back.
    cloud.edit(id, |i| i.observed.launch_time = Some(now_secs() - 601));
    let answer = g
        .handle_payload(&batch(std::slice::from_ref(body), ROLE_ID), None)
        .await
        .unwrap();
    assert!(failures(&answer).is_empty(), "{answer}");
    assert_eq!(cloud.tokens(id), "required");
    assert!(cloud.take_delayed().is_empty());
    let told = cloud.published();
    assert_eq!(told.len(), 2);
    assert!(told[1].body.contains("remediated"), "{}", told[1].body);
}

/// An AMI whose owner declared `ImdsSupport: v2.0` boots with IMDSv2: no
/// wait. Nor is there one without a grace, or once the grace has passed.
#[tokio::test(start_paused = true)]
async fn a_declared_ami_no_grace_or_an_old_launch_is_switched_at_once() {
    for (v2, grace, ago) in [(true, "600", 30), (false, "0", 30), (false, "600", 700)] {
        let id = "i-0aaaaaaaaaaaaaaa1";
        let cloud = FakeCloud::new();
        cloud.with_first_boot_queue();
        cloud.set_image(AMI, v2);
        launched(&cloud, &[id], ago);
        let r = guard(&cloud, grace, &[])
            .handle(&launch(&[id]))
            .await
            .unwrap();
        assert_eq!(
            r.instances[0].outcome,
            Outcome::Remediated,
            "{v2} {grace} {ago}"
        );
        assert_eq!(cloud.tokens(id), "required");
        assert!(cloud.take_delayed().is_empty());
        let images = cloud.count("DescribeImages");
        assert_eq!(
            images,
            u64::from(grace != "0" && ago < 600),
            "{v2} {grace} {ago}"
        );
    }
}

/// An AMI that cannot be read counts as undeclared: the wait is the safe
/// side, and the finding says why.
#[tokio::test(start_paused = true)]
async fn an_unreadable_ami_counts_as_undeclared() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    cloud.set_image(AMI, true);
    cloud.fail(
        "DescribeImages",
        1,
        crate::fake::api_error("UnauthorizedOperation"),
    );
    launched(&cloud, &[id], 10);
    let r = guard(&cloud, "600", &[])
        .handle(&launch(&[id]))
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "optional");
    let f = &r.instances[0].findings;
    assert!(f.iter().any(|f| f.contains("could not be read")), "{f:?}");
    assert_eq!(cloud.take_delayed().len(), 1);
}

/// When it comes back it is decided afresh: exempted, terminated or no
/// longer shown meanwhile, it is left; its message is done.
#[tokio::test(start_paused = true)]
async fn what_changed_while_it_waited_decides() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    for change in ["exempted", "terminated", "gone", "fixed"] {
        let cloud = FakeCloud::new();
        cloud.with_first_boot_queue();
        launched(&cloud, &[id], 30);
        let g = guard(&cloud, "600", &[("EXEMPT_TAG_KEY", "imds-guard:exempt")]);
        g.handle(&launch(&[id])).await.unwrap();
        let (body, _) = cloud.take_delayed().remove(0);
        cloud.edit(id, |i| i.observed.launch_time = Some(now_secs() - 601));
        match change {
            "exempted" => cloud.edit(id, |i| {
                i.observed.tags = Some(vec![("imds-guard:exempt".into(), "true".into())])
            }),
            "terminated" => cloud.edit(id, |i| i.observed.state = Some("terminated".into())),
            "gone" => cloud.remove(id),
            _ => cloud.edit(id, |i| {
                i.observed.options.http_tokens = Some("required".into())
            }),
        }
        let writes = cloud.count("ModifyInstanceMetadataOptions");
        let looks = cloud.count("DescribeInstances");
        let answer = g
            .handle_payload(&batch(&[body], ROLE_ID), None)
            .await
            .unwrap();
        assert!(failures(&answer).is_empty(), "{change}: {answer}");
        assert!(
            cloud.count("DescribeInstances") > looks,
            "{change}: decided, not dropped"
        );
        assert!(
            cloud.take_delayed().is_empty(),
            "{change}: not queued again"
        );
        assert_eq!(
            cloud.count("ModifyInstanceMetadataOptions"),
            writes,
            "{change}"
        );
    }
}

/// With `CHECK_METADATA_NO_TOKEN`: a first boot that used IMDSv1 holds the
/// change back and is told; no data yet waits again, a bounded number of
/// times, then counts as the sweep counts it.
#[tokio::test(start_paused = true)]
async fn a_first_boot_that_used_imdsv1_is_held_and_no_data_waits_a_bounded_time() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let check = [("CHECK_METADATA_NO_TOKEN", "true")];
    let message = |rechecks: u32| {
        Delayed {
            instance: id.into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            event_id: Some("e-launch".into()),
            rechecks,
        }
        .body()
    };

    // Used IMDSv1: held back, told, and not queued again.
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 700);
    cloud.set_no_token(id, 3.0);
    let g = guard(&cloud, "600", &check);
    let answer = g
        .handle_payload(&batch(&[message(0)], ROLE_ID), None)
        .await
        .unwrap();
    assert!(failures(&answer).is_empty(), "{answer}");
    assert_eq!(cloud.tokens(id), "optional");
    assert!(cloud.take_delayed().is_empty());
    let told = cloud.published();
    assert_eq!(told.len(), 1);
    assert!(
        told[0]
            .body
            .contains("first boot, or what runs on it, used IMDSv1"),
        "{}",
        told[0].body
    );

    // No data yet: queued again, its count up, told of nothing.
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 700);
    let g = guard(&cloud, "600", &check);
    for rechecks in 0..RECHECKS {
        let answer = g
            .handle_payload(&batch(&[message(rechecks)], ROLE_ID), None)
            .await
            .unwrap();
        assert!(failures(&answer).is_empty(), "{answer}");
        let again = cloud.take_delayed();
        assert_eq!(again.len(), 1, "{rechecks}");
        // (The clock is read twice: a second may pass between.)
        assert!((RECHECK_SECS - 1..=RECHECK_SECS).contains(&again[0].1));
        assert_eq!(Delayed::parse(&again[0].0).unwrap().rechecks, rechecks + 1);
    }
    assert!(cloud.published().is_empty(), "a wait for data is not news");
    // Out of rechecks: no data is held back as the sweep holds it.
    g.handle_payload(&batch(&[message(RECHECKS)], ROLE_ID), None)
        .await
        .unwrap();
    assert!(cloud.take_delayed().is_empty());
    assert_eq!(cloud.tokens(id), "optional");
    assert_eq!(cloud.published().len(), 1);

    // No IMDSv1 call: switched.
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 700);
    cloud.set_no_token(id, 0.0);
    guard(&cloud, "600", &check)
        .handle_payload(&batch(&[message(0)], ROLE_ID), None)
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "required");

    // The metric cannot be read: the message fails and comes back.
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 700);
    cloud.fail("GetMetricData", 1, crate::fake::api_error("Throttling"));
    let answer = guard(&cloud, "600", &check)
        .handle_payload(&batch(&[message(0)], ROLE_ID), None)
        .await
        .unwrap();
    assert_eq!(failures(&answer), ["m-0"]);
    assert_eq!(cloud.tokens(id), "optional");
}

/// A wait longer than SQS's 900 s ceiling comes back and is delayed again
/// for the rest.
#[tokio::test(start_paused = true)]
async fn a_long_grace_is_delayed_again_for_the_rest() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 0);
    let g = guard(&cloud, "3600", &[]);
    g.handle(&launch(&[id])).await.unwrap();
    let (body, seconds) = cloud.take_delayed().remove(0);
    assert_eq!(seconds, MAX_DELAY_SECS);
    cloud.edit(id, |i| i.observed.launch_time = Some(now_secs() - 900));
    let answer = g
        .handle_payload(&batch(&[body], ROLE_ID), None)
        .await
        .unwrap();
    assert!(failures(&answer).is_empty());
    assert_eq!(cloud.tokens(id), "optional");
    let (_, seconds) = cloud.take_delayed().remove(0);
    assert_eq!(seconds, MAX_DELAY_SECS, "2700 s left: 900 now");
    assert_eq!(
        cloud.published().len(),
        1,
        "the wait was told once, by its launch"
    );
}

/// The circuit breaker counts a waiting change against its launch: more
/// than `MAX_CHANGES_PER_EVENT` trips at the launch, and only what it
/// admitted waits; the delayed decisions of one launch come back together.
#[tokio::test(start_paused = true)]
async fn the_breaker_counts_waiting_changes_against_their_launch() {
    let ids = ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"];
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &ids, 30);
    let r = guard(&cloud, "600", &[("MAX_CHANGES_PER_EVENT", "1")])
        .handle(&launch(&ids))
        .await
        .unwrap();
    assert!(r.breaker.is_some());
    assert!(matches!(r.instances[0].action.idle, Idle::FirstBoot { .. }));
    assert!(matches!(r.instances[1].action.idle, Idle::Breaker(_)));
    let delayed = cloud.take_delayed();
    assert_eq!(delayed.len(), 1, "only what the breaker admitted waits");
    assert!(delayed[0].0.contains(ids[0]));

    // Two delayed decisions of one launch in one batch are one event to the
    // breaker: with a lower limit by the time they come back, it holds.
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &ids, 30);
    guard(&cloud, "600", &[("MAX_CHANGES_PER_EVENT", "2")])
        .handle(&launch(&ids))
        .await
        .unwrap();
    let bodies: Vec<String> = cloud.take_delayed().into_iter().map(|(b, _)| b).collect();
    assert_eq!(bodies.len(), 2);
    for id in ids {
        cloud.edit(id, |i| i.observed.launch_time = Some(now_secs() - 601));
    }
    let answer = guard(&cloud, "600", &[("MAX_CHANGES_PER_EVENT", "1")])
        .handle_payload(&batch(&bodies, ROLE_ID), None)
        .await
        .unwrap();
    assert!(failures(&answer).is_empty());
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
    let told = cloud.published();
    let last = &told.last().unwrap().body;
    assert!(last.contains("circuit breaker"), "{last}");
}

/// With the guard's memory: a redelivery after a send that failed finds
/// the news claimed; it is not lost: it is queued now.
#[tokio::test(start_paused = true)]
async fn a_claimed_launch_is_still_queued() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    cloud.with_memory();
    launched(&cloud, &[id], 30);
    let g = guard(
        &cloud,
        "600",
        &[("MEMORY_TABLE", crate::common::MEMORY_TABLE)],
    );
    cloud.fail("SendMessage", 1, crate::fake::api_error("AccessDenied"));
    let e = g.handle(&launch(&[id])).await.unwrap_err();
    assert!(e.to_string().contains(id), "{e}");
    assert!(cloud.take_delayed().is_empty());
    let r = g.handle(&launch(&[id])).await.unwrap();
    let action = &r.instances[0].action;
    assert!(matches!(action.idle, Idle::FirstBoot { .. }), "{action}");
    assert_eq!(cloud.take_delayed().len(), 1);
}

/// Only the guard's role's messages, and only delayed decisions, are taken:
/// anything else is dropped (and done, so it is not delivered again).
#[tokio::test(start_paused = true)]
async fn a_message_from_anyone_else_decides_nothing() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 700);
    let g = guard(&cloud, "600", &[]);
    let body = Delayed {
        instance: id.into(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
        event_id: None,
        rechecks: 0,
    }
    .body();
    for (body, sender) in [
        (body.clone(), "AROAINTRUDER00000001"),
        (
            r#"{"instance":"i-0aaaaaaaaaaaaaaa1","mode":"enforce"}"#.to_string(),
            ROLE_ID,
        ),
    ] {
        let answer = g
            .handle_payload(&batch(&[body], sender), None)
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
    }
    assert_eq!(cloud.count("DescribeInstances"), 0);
    assert_eq!(cloud.tokens(id), "optional");
}

/// A waiting instance that cannot be queued fails the event, named, so it
/// is delivered again rather than left to the sweep.
#[tokio::test(start_paused = true)]
async fn a_wait_that_cannot_be_queued_fails_the_event() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    launched(&cloud, &[id], 30);
    cloud.fail("SendMessage", 1, crate::fake::api_error("AccessDenied"));
    let e = guard(&cloud, "600", &[])
        .handle(&launch(&[id]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(id), "{e}");
    assert_eq!(cloud.tokens(id), "optional");
}

/// With the guard's memory, a second sweep within the grace finds the
/// instance told of already: quiet, but still waiting and queued.
#[tokio::test(start_paused = true)]
async fn a_sweep_that_told_before_still_queues_the_wait() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    launched(&cloud, &[id], 30);
    let g = guard(
        &cloud,
        "600",
        &[("MEMORY_TABLE", crate::common::MEMORY_TABLE)],
    );
    for run in 0..2 {
        let r = g.handle(&crate::common::scheduled()).await.unwrap();
        assert_eq!(
            r.sweep.as_ref().unwrap().regions[0].first_boot_waiting,
            1,
            "run {run}"
        );
        assert_eq!(cloud.take_delayed().len(), 1, "run {run}");
    }
    assert_eq!(cloud.tokens(id), "optional");
}

/// The sweep does not switch an instance within its grace: it counts it and
/// queues it (its launch's events may have been missed).
#[tokio::test(start_paused = true)]
async fn the_sweep_counts_queues_and_leaves_a_waiting_instance() {
    let id = "i-0aaaaaaaaaaaaaaa1";
    let cloud = FakeCloud::new();
    cloud.with_first_boot_queue();
    cloud.set_defaults(Some(Default::default()));
    launched(&cloud, &[id], 30);
    let r = guard(&cloud, "600", &[])
        .handle(&crate::common::scheduled())
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "optional");
    let queued = cloud.take_delayed();
    assert_eq!(
        queued.len(),
        1,
        "its launch's events may have been missed: queued"
    );
    assert_eq!(Delayed::parse(&queued[0].0).unwrap().event_id, None);
    assert_eq!(r.sweep.as_ref().unwrap().regions[0].first_boot_waiting, 1);
    let named = r
        .instances
        .iter()
        .find(|i| i.instance_id == id)
        .expect("named");
    assert!(named
        .action
        .to_string()
        .contains("waits for its first boot until"));
    assert!(
        r.tally().contains("1 waiting for first boot"),
        "{}",
        r.tally()
    );
}

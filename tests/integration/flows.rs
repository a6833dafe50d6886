//! Flow logic on the in-memory fake (`fake`): what the event path and the
//! sweep do with EC2's answers, through the one acting layer they share. No
//! HTTP, and time is paused (retries and backoff cost no wall time).

use imds_guard::guard::GuardError;
use imds_guard::policy::{AccountDefaults, ReadinessVerdict};
use imds_guard::report::{DefaultsAction, Idle, Outcome, Status};
use serde_json::{json, Value};

use crate::common::launch_event;
use crate::common::scheduled;
use crate::fake::{api_error, FakeCloud};

fn launch(ids: &[&str]) -> Value {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    launch_event("run-instances-cli-multi.json", &ids, None)
}

#[tokio::test(start_paused = true)]
async fn the_event_path_and_the_sweep_fix_the_same_way() {
    let cloud = FakeCloud::new();
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 3)
        .add("i-0bbbbbbbbbbbbbbb1", "optional", 2)
        .add("i-0bbbbbbbbbbbbbbb2", "required", 1);
    cloud.set_defaults(Some(Default::default()));
    let g = cloud.test_guard().notifying().build();

    let by_event = g
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]))
        .await
        .unwrap();
    assert_eq!(by_event.count(Outcome::Remediated), 2);
    let by_sweep = g.handle(&scheduled()).await.unwrap();
    assert_eq!(by_sweep.status, Status::Swept);
    assert_eq!(
        by_sweep.count(Outcome::Remediated),
        1,
        "only the one events missed"
    );

    // Same remedy, same tag, hop limits kept, whichever path fixed it.
    for id in [
        "i-0aaaaaaaaaaaaaaa1",
        "i-0aaaaaaaaaaaaaaa2",
        "i-0bbbbbbbbbbbbbbb1",
    ] {
        assert_eq!(cloud.tokens(id), "required", "{id}");
        assert_eq!(
            cloud.tag(id, "imds-guard:status").as_deref(),
            Some("remediated")
        );
    }
    assert_eq!(cloud.hop("i-0aaaaaaaaaaaaaaa2"), Some(3));
    assert_eq!(cloud.tag("i-0bbbbbbbbbbbbbbb2", "imds-guard:status"), None);
    assert_eq!(
        cloud.published().len(),
        2,
        "one message per event, one per sweep"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_instance_not_yet_visible_and_still_pending_is_fixed_on_the_event_path() {
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.invisible_for = 2;
        i.pending_for = 3;
    });
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "required");
    // 2 describes that missed it and 1 that found it; 3 refused modifies
    // each followed by a describe of its state, then the one that took.
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 4);
    assert_eq!(cloud.count("DescribeInstances"), 3 + 3);
}

#[tokio::test(start_paused = true)]
async fn not_found_means_not_yet_on_the_event_path_and_gone_in_the_sweep() {
    // The event path retries a NotFound modify (a new instance)...
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.fail(
        "ModifyInstanceMetadataOptions",
        2,
        api_error("InvalidInstanceID.NotFound"),
    );
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);

    // ...while the sweep takes it for an instance terminated since listing.
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.set_defaults(Some(Default::default()));
    cloud.fail(
        "ModifyInstanceMetadataOptions",
        1,
        api_error("InvalidInstanceID.NotFound"),
    );
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(r.count(Outcome::Gone), 1);
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
}

#[tokio::test(start_paused = true)]
async fn throttling_fails_an_event_instance_but_slows_the_sweep_down() {
    let throttled = || api_error("RequestLimitExceeded");
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.fail("ModifyInstanceMetadataOptions", 1, throttled());
    let err = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
        .await
        .unwrap_err();
    let GuardError::Unhandled { report, .. } = err else {
        panic!("expected the instance to fail")
    };
    assert_eq!(report.instances[0].outcome, Outcome::Failed);

    let cloud = FakeCloud::new();
    for n in 0..20 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    cloud.set_defaults(Some(Default::default()));
    cloud.set_page_size(7);
    cloud.fail("ModifyInstanceMetadataOptions", 6, throttled());
    // Every instance of the region: no circuit breaker share here.
    let r = cloud
        .test_guard()
        .notifying()
        .with(&[("MAX_CHANGE_PERCENT", "100")])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.pages, 3);
    assert_eq!(region.throttled, 6);
    assert_eq!(
        r.count(Outcome::Remediated),
        20,
        "every instance still fixed"
    );
}

#[tokio::test(start_paused = true)]
async fn notify_tags_once_and_audit_writes_nothing() {
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("GUARD_MODE", "audit")])
        .build();
    let r = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Flagged);
    assert_eq!(
        cloud.count("CreateTags") + cloud.count("ModifyInstanceMetadataOptions"),
        0
    );

    cloud.with_memory();
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("GUARD_MODE", "notify")])
        .build();
    g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    let again = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    assert_eq!(again.notification, "not needed", "a redelivery is quiet");
    assert_eq!(cloud.count("CreateTags"), 1);
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "optional");
    assert_eq!(
        cloud
            .tag("i-0aaaaaaaaaaaaaaa1", "imds-guard:status")
            .as_deref(),
        Some("noncompliant")
    );
}

#[tokio::test(start_paused = true)]
async fn the_account_default_is_set_by_the_sweep_and_put_back_after_a_weakening() {
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("SET_ACCOUNT_DEFAULT", "true")])
        .build();
    let r = g.handle(&scheduled()).await.unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.account_default_action, DefaultsAction::Set);
    assert_eq!(
        cloud.defaults().unwrap().http_tokens.as_deref(),
        Some("required")
    );

    // Someone weakens it; the event path sets it back.
    cloud.set_defaults(Some(imds_guard::policy::AccountDefaults {
        http_tokens: Some("optional".into()),
        ..Default::default()
    }));
    let weaken = crate::common::fixture("modify-metadata-defaults-weaken.json");
    let r = g.handle(&weaken).await.unwrap();
    let d = r.account_defaults.unwrap();
    assert_eq!(d.action, DefaultsAction::SetBack);
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_instance_still_using_imdsv1_is_held_back_by_the_sweep() {
    let cloud = FakeCloud::new();
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 1)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 1);
    cloud.set_defaults(Some(Default::default()));
    cloud.set_no_token("i-0aaaaaaaaaaaaaaa1", 42.0);
    cloud.set_no_token("i-0aaaaaaaaaaaaaaa2", 0.0);
    let r = cloud
        .test_guard()
        .notifying()
        .with(&[("CHECK_METADATA_NO_TOKEN", "true")])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "optional", "held back");
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa2"), "required");
    assert_eq!(
        cloud
            .tag("i-0aaaaaaaaaaaaaaa1", "imds-guard:status")
            .as_deref(),
        Some("noncompliant")
    );
    assert_eq!(r.sweep.unwrap().regions[0].v1_in_use, 1);
}

#[tokio::test(start_paused = true)]
async fn only_ec2_refusing_the_filter_makes_the_sweep_list_everything() {
    // No answer at all (network, credentials): the region fails, named;
    // listing everything instead would only fail again.
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.set_defaults(Some(Default::default()));
    cloud.fail(
        "DescribeInstances",
        1,
        imds_guard::aws::AwsError::Transport {
            service: "ec2",
            message: "dispatch failure".into(),
        },
    );
    let err = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&scheduled())
        .await
        .unwrap_err();
    let GuardError::Unhandled { summary, report } = err else {
        panic!("expected the region to fail")
    };
    assert!(
        summary.starts_with("1 region(s) not swept to the end: region us-east-1"),
        "{summary}"
    );
    assert!(report.sweep.unwrap().regions[0]
        .listing
        .starts_with("server-side filter"));
    assert_eq!(cloud.count("DescribeInstances"), 1);

    // EC2 answering that it does not take the filter: list everything.
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.set_defaults(Some(Default::default()));
    cloud.fail("DescribeInstances", 1, api_error("InvalidParameterValue"));
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert!(r.sweep.unwrap().regions[0].listing.contains("refused"));
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "required");
}

fn fixture(name: &str) -> Value {
    crate::common::fixture(name)
}

/// An optional instance as a launch of `client_token` left it.
fn launched(cloud: &FakeCloud, id: &str, client_token: &str) {
    cloud.add(id, "optional", 2);
    cloud.edit(id, |i| {
        i.client_token = Some(client_token.into());
        i.observed.state = Some("pending".into());
    });
}

#[tokio::test(start_paused = true)]
async fn a_launch_whose_event_was_cut_is_found_by_its_client_token_and_fixed() {
    let cloud = FakeCloud::new();
    let token = "c0ffee00-1234-4abc-9def-0123456789ab";
    for n in 0..40 {
        launched(&cloud, &format!("i-{n:017x}"), token);
    }
    cloud.add("i-0ffffffffffffffff", "optional", 1); // another launch's
                                                     // A new reservation may take a moment to show.
    cloud.edit("i-00000000000000000", |i| i.invisible_for = 1);
    cloud.edit("i-00000000000000001", |i| i.invisible_for = 1);
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&fixture("run-instances-truncated.json"))
        .await
        .unwrap();
    assert_eq!(
        r.count(Outcome::Remediated),
        40,
        "all 40 the launch asked for"
    );
    assert!(r.unreadable.is_empty());
    for n in 0..40 {
        assert_eq!(cloud.tokens(&format!("i-{n:017x}")), "required");
    }
    assert_eq!(
        cloud.tokens("i-0ffffffffffffffff"),
        "optional",
        "not this launch"
    );

    // Nothing found in the retry budget: the invocation fails, naming the
    // event and why.
    let empty = FakeCloud::new();
    let err = empty
        .test_guard()
        .notifying()
        .with(&[("RETRY_BUDGET_SECONDS", "5")])
        .build()
        .handle(&fixture("run-instances-truncated.json"))
        .await
        .unwrap_err();
    let GuardError::Unhandled { summary, .. } = err else {
        panic!("expected a failure")
    };
    assert!(
        summary.contains("launch event a1b2c3d4-0000-4000-8000-000000000010")
            && summary.contains("CloudTrail omitted responseElements")
            && summary.contains("no instance with client token"),
        "{summary}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_instant_fleet_is_fixed_and_a_redelivery_writes_nothing_twice() {
    let cloud = FakeCloud::new();
    cloud.add("i-0c1d2e3f4a5b6c7d8", "optional", 2);
    let g = cloud.test_guard().notifying().build();
    let r = g.handle(&fixture("create-fleet.json")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);
    let again = g.handle(&fixture("create-fleet.json")).await.unwrap();
    assert_eq!(again.instances[0].outcome, Outcome::Compliant);
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
    assert_eq!(cloud.count("CreateTags"), 1);
    assert_eq!(cloud.published().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_guards_own_change_is_decided_from_its_event_with_no_call() {
    let cloud = FakeCloud::new();
    cloud.add("i-0fedcba9876543210", "required", 2);
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&fixture("modify-metadata-options-by-guard.json"))
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Compliant);
    assert!(r.aws_calls.is_empty(), "{:?}", r.aws_calls);
    assert_eq!(r.notification, "not needed");
}

/// The state-change notification and the CloudTrail launch of one instance.
fn both_events(id: &str) -> (Value, Value) {
    let mut pending = fixture("state-change-pending.json");
    pending["detail"]["instance-id"] = id.into();
    let launch = crate::common::launch_event("run-instances-console.json", &[id.into()], None);
    (pending, launch)
}

#[tokio::test(start_paused = true)]
async fn with_both_triggers_a_launch_is_written_and_told_once_in_every_mode() {
    let id = "i-0a1b2c3d4e5f60718";
    for mode in ["enforce", "notify", "audit"] {
        let cloud = FakeCloud::new();
        cloud.with_memory();
        cloud.add(id, "optional", 1);
        let g = cloud
            .test_guard()
            .notifying()
            .with(&[("GUARD_MODE", mode), ("TRIGGERS", "both")])
            .build();
        let (pending, launch) = both_events(id);
        let first = g.handle(&pending).await.unwrap();
        let second = g.handle(&launch).await.unwrap();
        assert!(
            first.notification.starts_with("sent "),
            "{mode}: {}",
            first.notification
        );
        assert_eq!(second.notification, "not needed", "{mode}: {second:?}");
        assert_eq!(cloud.published().len(), 1, "{mode}");
        let writes = cloud.count("ModifyInstanceMetadataOptions") + cloud.count("CreateTags");
        let expected = match mode {
            "enforce" => 2, // one modify, one tag
            "notify" => 1,  // one tag
            _ => 0,
        };
        assert_eq!(writes, expected, "{mode}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_exempt_principals_the_state_change_waits_for_the_launcher() {
    let id = "i-0a1b2c3d4e5f60718";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.add(id, "optional", 1);
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[
            ("TRIGGERS", "both"),
            (
                "EXEMPT_PRINCIPAL_ARNS",
                "arn:aws:iam::111122223333:user/alice",
            ),
        ])
        .build();
    let (pending, launch) = both_events(id);
    let waiting = g.handle(&pending).await.unwrap();
    assert_eq!(waiting.instances[0].outcome, Outcome::Flagged);
    assert_eq!(waiting.notification, "not needed");
    assert_eq!(
        cloud.count("ModifyInstanceMetadataOptions") + cloud.count("CreateTags"),
        0
    );
    // The launch event names alice, who is exempt: left as it is.
    let decided = g.handle(&launch).await.unwrap();
    assert_eq!(decided.instances[0].outcome, Outcome::Exempt);
    assert_eq!(cloud.tokens(id), "optional");
    assert_eq!(cloud.published().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_metric_data_is_not_zero_unless_the_setting_says_so() {
    for (missing_as_zero, expect) in [("false", "optional"), ("true", "required")] {
        let cloud = FakeCloud::new();
        cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
        cloud.set_defaults(Some(Default::default()));
        let r = cloud
            .test_guard()
            .notifying()
            .with(&[
                ("CHECK_METADATA_NO_TOKEN", "true"),
                ("NO_TOKEN_MISSING_AS_ZERO", missing_as_zero),
            ])
            .build()
            .handle(&scheduled())
            .await
            .unwrap();
        assert_eq!(
            cloud.tokens("i-0aaaaaaaaaaaaaaa1"),
            expect,
            "{missing_as_zero}"
        );
        let region = &r.sweep.unwrap().regions[0];
        assert_eq!(region.v1_no_data, 1);
        assert_eq!(region.v1_in_use + region.v1_unused, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_the_guard_broke_is_reported_first_and_the_region_is_not_ready() {
    use imds_guard::memory::{partition, Kind, Record};
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(imds_guard::policy::AccountDefaults {
        http_tokens: Some("required".into()),
        ..Default::default()
    }));
    // Switched by the guard a day ago: required now, so outside the sweep's
    // `optional` listing; its refused IMDSv1 calls since are seeded.
    let broken = "i-0bbbbbbbbbbbbbbb1";
    cloud.add(broken, "required", 2);
    cloud.add("i-0bbbbbbbbbbbbbbb2", "required", 2);
    let day_ago = imds_guard::clock::now_secs() - 24 * 3600;
    for id in [broken, "i-0bbbbbbbbbbbbbbb2"] {
        cloud.put_record(Record::new(
            Kind::Remediated,
            &partition("111122223333", "us-east-1"),
            id,
            None,
            day_ago,
            std::time::Duration::from_secs(168 * 3600),
        ));
    }
    cloud.set_rejected(broken, 17.0);
    let r = cloud
        .test_guard()
        .notifying()
        .with(&[("CHECK_METADATA_NO_TOKEN", "true")])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    let sweep = r.sweep.as_ref().unwrap();
    assert_eq!(sweep.refusing_imdsv1.len(), 1);
    assert_eq!(sweep.refusing_imdsv1[0].instance_id, broken);
    assert_eq!(sweep.refusing_imdsv1[0].remediated_at, day_ago);
    let region = &sweep.regions[0];
    assert_eq!(region.refusing, 1);
    assert_eq!(
        region.readiness.verdict,
        imds_guard::policy::ReadinessVerdict::NotReady
    );
    assert!(region.readiness.reasons[0].contains("refuse IMDSv1 calls"));
    let told = cloud.published().pop().unwrap();
    assert!(
        told.subject.contains("1 REFUSING IMDSv1"),
        "{}",
        told.subject
    );
    let body: Value = serde_json::from_str(&told.body).unwrap();
    assert!(body["summary"]
        .as_str()
        .unwrap()
        .starts_with("1 instance(s) switched"));
    let first_key = told.body.find("refusing_imdsv1").unwrap();
    assert!(
        first_key < told.body.find("\"regions\"").unwrap(),
        "listed first"
    );
}

#[tokio::test(start_paused = true)]
async fn the_guard_remembers_what_it_switched_when_it_watches_imdsv1() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.set_no_token("i-0aaaaaaaaaaaaaaa1", 0.0);
    cloud.set_defaults(Some(Default::default()));
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("CHECK_METADATA_NO_TOKEN", "true")])
        .build();
    g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    let records = cloud.records("remediated#");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].pk, "111122223333#us-east-1");
    assert_eq!(records[0].id(), "i-0aaaaaaaaaaaaaaa1");
}

#[tokio::test(start_paused = true)]
async fn a_sweep_whose_pages_shift_under_the_filter_still_reaches_every_instance() {
    // Were EC2's tokens offsets into the filtered list, fixing a page would
    // shift the next: the sweep lists again until a pass changes nothing.
    let cloud = FakeCloud::new();
    for n in 0..10 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    cloud.set_defaults(Some(Default::default()));
    cloud.set_page_size(3);
    cloud.set_offset_pages();
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    for n in 0..10 {
        assert_eq!(cloud.tokens(&format!("i-{n:017x}")), "required", "{n}");
    }
    let region = &r.sweep.unwrap().regions[0];
    assert_eq!(region.count(Outcome::Remediated), 10, "each decided once");
    assert!(
        region.listing.contains("listed 3 times"),
        "{}",
        region.listing
    );
}

/// A message SNS refused is not lost: the failed-events queue keeps it for
/// a person, the memory for the event's retry, which finds the instance
/// fixed already (nothing new to say) and publishes the kept message, once.
#[tokio::test(start_paused = true)]
async fn a_message_sns_refused_is_kept_and_the_retry_publishes_it_once() {
    let cloud = FakeCloud::new();
    cloud.with_memory().with_failed_events_queue();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
    cloud.fail("Publish", 1, api_error("AuthorizationError"));
    let g = cloud.test_guard().notifying().build();
    let event = launch(&["i-0aaaaaaaaaaaaaaa1"]);

    let Err(GuardError::Unhandled { summary, report }) = g.handle(&event).await else {
        panic!("a message that could not be published fails the invocation");
    };
    assert!(summary.contains("notification"), "{summary}");
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "required");
    assert!(
        report
            .notification
            .contains("kept for the event's retry and in the failed-events queue"),
        "{}",
        report.notification
    );
    let kept = cloud.kept();
    assert_eq!(kept.len(), 1);
    let kept: Value = serde_json::from_str(&kept[0]).unwrap();
    assert_eq!(kept["kind"], "undelivered-notification");
    assert_eq!(kept["message"]["counts"]["remediated"], 1);
    assert!(kept["error"]
        .as_str()
        .unwrap()
        .contains("AuthorizationError"));
    assert!(cloud.published().is_empty());

    // The retry: nothing new (the instance is fixed), the kept message sent.
    let retried = g.handle(&event).await.unwrap();
    assert_eq!(retried.count(Outcome::Compliant), 1);
    let published = cloud.published();
    assert_eq!(published.len(), 1, "{}", retried.notification);
    assert!(
        published[0].subject.contains("1 remediated"),
        "{}",
        published[0].subject
    );
    assert!(retried
        .notification
        .contains("an earlier delivery's message: sent"));

    // Another redelivery: sent once, not twice; and nothing more kept.
    g.handle(&event).await.unwrap();
    assert_eq!(cloud.published().len(), 1);
    assert_eq!(cloud.kept().len(), 1);
}

/// Without the memory, the queue still keeps the message; with neither,
/// the log line does, and the report says which.
#[tokio::test(start_paused = true)]
async fn where_a_refused_message_is_kept_is_said() {
    for (memory, queue, said) in [
        (false, true, "kept in the failed-events queue"),
        (true, false, "kept for the event's retry"),
        (false, false, "kept only in the function's log"),
    ] {
        let cloud = FakeCloud::new();
        if memory {
            cloud.with_memory();
        }
        if queue {
            cloud.with_failed_events_queue();
        }
        cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
        cloud.fail("Publish", 1, api_error("AuthorizationError"));
        let Err(GuardError::Unhandled { report, .. }) = cloud
            .test_guard()
            .notifying()
            .build()
            .handle(&launch(&["i-0aaaaaaaaaaaaaaa1"]))
            .await
        else {
            panic!("the invocation fails");
        };
        assert!(
            report.notification.ends_with(said),
            "{}",
            report.notification
        );
        assert_eq!(cloud.kept().len(), usize::from(queue));
        let kept: Value = cloud
            .kept()
            .first()
            .map_or(Value::Null, |k| serde_json::from_str(k).unwrap());
        if queue {
            // Without the memory, no retry will publish it: the queue says so.
            assert!(!kept["summary"].as_str().unwrap().contains("retry"));
        }
        assert_eq!(cloud.records("notice#").len(), usize::from(memory));
    }
}

/// The deadline passes while the sweep is between pages: it takes no new
/// page, keeps what it fixed on the pages it read, and says the region was
/// not swept to the end (the invocation fails, naming it).
#[tokio::test(start_paused = true)]
async fn a_sweep_whose_deadline_passes_mid_listing_stops_between_pages_and_says_so() {
    let cloud = FakeCloud::new();
    for n in 0..30 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    cloud.set_page_size(3);
    cloud.set_list_delay(std::time::Duration::from_secs(10));
    let g = cloud.test_guard().notifying().build();
    // Time for three pages before the sweep's stop margin.
    let deadline = tokio::time::Instant::now()
        + imds_guard::sweep::STOP_MARGIN
        + std::time::Duration::from_secs(25);
    let Err(GuardError::Unhandled { summary, report }) =
        g.handle_until(&scheduled(), Some(deadline)).await
    else {
        panic!("a sweep cut short fails the invocation");
    };
    let listed = cloud.count("DescribeInstances");
    assert!((2..=4).contains(&listed), "{listed} pages listed");
    let fixed = (0..30)
        .filter(|n| cloud.tokens(&format!("i-{n:017x}")) == "required")
        .count();
    assert_eq!(
        fixed as u64,
        3 * listed,
        "what the read pages held, and no more"
    );
    assert_eq!(report.count(Outcome::Remediated), fixed as u64);
    let region = &report.sweep.as_ref().unwrap().regions[0];
    assert!(
        region
            .errors
            .iter()
            .any(|e| e.contains("before the function's timeout")),
        "{:?}",
        region.errors
    );
    assert!(
        !region.readiness.needs_nothing(),
        "a region not swept to the end is not ready"
    );
    assert!(summary.contains("not swept to the end"), "{summary}");
}

// ------------------------------------------------------------------ sources

fn lt_options(tokens: &str, hop: i32) -> Option<imds_guard::event::MetadataOptions> {
    Some(imds_guard::event::MetadataOptions {
        http_tokens: Some(tokens.into()),
        http_endpoint: Some("enabled".into()),
        http_put_response_hop_limit: Some(hop),
        ..Default::default()
    })
}

const LT: &str = "lt-0a1b2c3d4e5f60718";
const OPT_IN: (&str, &str) = ("imds-guard:fix-source", "true");

fn group(name: &str, version: imds_guard::source::VersionRef) -> imds_guard::source::Group {
    imds_guard::source::Group {
        name: name.into(),
        templates: vec![imds_guard::source::TemplateRef {
            id: Some(LT.into()),
            name: None,
            version,
        }],
        ..Default::default()
    }
}

/// With fixing on, a noncompliant template its owner opted in is fixed by
/// the event that created it: `$Default` and `$Latest` resolve to a new
/// version that requires tokens, hop limit unchanged; a group that pins
/// the old version by number is named, and one notification says so.
#[tokio::test(start_paused = true)]
async fn a_template_created_optional_is_fixed_at_its_source_within_one_event() {
    use imds_guard::source::{SourceOutcome, VersionRef};
    let cloud = FakeCloud::new();
    cloud.add_template(LT, &[OPT_IN], 1, &[(1, lt_options("optional", 3))]);
    cloud.add_group(group("web-asg", VersionRef::Default));
    cloud.add_group(group("pinned-asg", VersionRef::Number(1)));
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("FIX_SOURCES", "true")])
        .build();
    let r = g
        .handle(&fixture("create-launch-template.json"))
        .await
        .unwrap();

    let (t, versions) = cloud.template(LT);
    assert_eq!((t.default_version, t.latest_version), (2, 2));
    let v2 = versions.iter().find(|v| v.version == 2).unwrap();
    let o = v2.options.as_ref().unwrap();
    assert_eq!(o.http_tokens.as_deref(), Some("required"));
    assert_eq!(
        o.http_put_response_hop_limit,
        Some(3),
        "hop limit unchanged"
    );
    assert_eq!(
        v2.image_id.as_deref(),
        Some("ami-0c02fb55956c7d316"),
        "the rest from version 1"
    );

    let s = &r.sources[0];
    assert_eq!(s.outcome, SourceOutcome::Fixed);
    assert!(
        s.action.contains("created version 2 from version 1")
            && s.action.contains("now the default"),
        "{}",
        s.action
    );
    assert_eq!(s.used_by, vec!["pinned-asg", "web-asg"]);
    assert_eq!(s.pinned_by, vec!["pinned-asg"]);
    let sent = cloud.published();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].subject.contains("1 launch template fixed"),
        "{}",
        sent[0].subject
    );
    assert!(sent[0].body.contains("pinned-asg"));
    assert!(sent[0].outcomes.contains(&"source_fixed".to_string()));

    // The guard's own new version comes back as an event: nothing to do.
    let again = g
        .handle(&fixture("create-launch-template-version.json"))
        .await
        .unwrap();
    assert_eq!(again.sources[0].outcome, SourceOutcome::Compliant);
    assert_eq!(
        cloud.template(LT).0.latest_version,
        2,
        "no version written twice"
    );
}

/// What each mode, and each refusal, does with a noncompliant template.
#[tokio::test(start_paused = true)]
async fn a_template_is_fixed_only_when_enforce_fixing_and_its_owner_allow() {
    use imds_guard::source::SourceOutcome;
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Pairs, Pairs, SourceOutcome, &str); 5] = [
        (&[], &[OPT_IN], SourceOutcome::Flagged, "FIX_SOURCES"),
        (
            &[("FIX_SOURCES", "true")],
            &[],
            SourceOutcome::Flagged,
            "opted in",
        ),
        (
            &[("FIX_SOURCES", "true")],
            &[OPT_IN, ("aws:cloudformation:stack-name", "web")],
            SourceOutcome::Flagged,
            "CloudFormation stack web",
        ),
        (
            &[("FIX_SOURCES", "true"), ("GUARD_MODE", "notify")],
            &[OPT_IN],
            SourceOutcome::Flagged,
            "tagged imds-guard:status=noncompliant",
        ),
        (
            &[("FIX_SOURCES", "true"), ("GUARD_MODE", "audit")],
            &[OPT_IN],
            SourceOutcome::Flagged,
            "audit",
        ),
    ];
    for (env, tags, outcome, says) in cases {
        let cloud = FakeCloud::new();
        cloud.add_template(LT, tags, 1, &[(1, lt_options("optional", 2))]);
        let r = cloud
            .test_guard()
            .notifying()
            .with(env)
            .build()
            .handle(&fixture("create-launch-template.json"))
            .await
            .unwrap();
        let s = &r.sources[0];
        assert_eq!(s.outcome, outcome, "{env:?}");
        assert!(s.action.contains(says), "{env:?}: {}", s.action);
        assert_eq!(
            cloud.template(LT).0.latest_version,
            1,
            "{env:?}: no version written"
        );
        assert_eq!(cloud.count("CreateLaunchTemplateVersion"), 0);
        let tagged = cloud
            .template(LT)
            .0
            .tags
            .iter()
            .any(|(k, v)| k == "imds-guard:status" && v == "noncompliant");
        assert_eq!(tagged, env.contains(&("GUARD_MODE", "notify")), "{env:?}");
        assert_eq!(cloud.published().len(), 1, "{env:?}: told");
    }
}

/// A group event: the group is judged by every template it may launch from
/// (a mixed-instances override on `$Latest` here), its template is fixed,
/// and in notify mode the group itself is tagged.
#[tokio::test(start_paused = true)]
async fn a_group_event_decides_the_group_by_its_templates_and_fixes_them() {
    use imds_guard::source::{SourceKind, SourceOutcome, VersionRef};
    let cloud = FakeCloud::new();
    cloud.add_template(
        LT,
        &[OPT_IN],
        1,
        &[
            (1, lt_options("required", 2)),
            (2, lt_options("optional", 2)),
        ],
    );
    let mut g = group("web-asg", VersionRef::Default);
    g.templates.push(imds_guard::source::TemplateRef {
        id: Some(LT.into()),
        name: None,
        version: VersionRef::Latest,
    });
    cloud.add_group(g);
    let r = cloud
        .test_guard()
        .notifying()
        .with(&[("FIX_SOURCES", "true")])
        .build()
        .handle(&fixture("create-auto-scaling-group.json"))
        .await
        .unwrap();
    let asg = r
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::AutoScalingGroup)
        .unwrap();
    assert_eq!(asg.outcome, SourceOutcome::Flagged);
    assert!(
        asg.findings[0].contains("version 2 ($Latest)"),
        "{:?}",
        asg.findings
    );
    let template = r
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::LaunchTemplate)
        .unwrap();
    assert_eq!(template.outcome, SourceOutcome::Fixed);
    let (t, vs) = cloud.template(LT);
    assert_eq!(
        (t.default_version, t.latest_version),
        (1, 3),
        "only $Latest needed a fix"
    );
    assert_eq!(
        vs.last()
            .unwrap()
            .options
            .as_ref()
            .unwrap()
            .http_tokens
            .as_deref(),
        Some("required")
    );

    let cloud = FakeCloud::new();
    cloud.add_template(LT, &[], 1, &[(1, lt_options("optional", 2))]);
    cloud.add_group(group("web-asg", VersionRef::Default));
    cloud
        .test_guard()
        .notifying()
        .with(&[("GUARD_MODE", "notify")])
        .build()
        .handle(&fixture("create-auto-scaling-group.json"))
        .await
        .unwrap();
    assert_eq!(
        cloud.group_tags(),
        vec![(
            "web-asg".into(),
            "imds-guard:status".into(),
            "noncompliant".into()
        )]
    );
}

/// A template that sets no tokens inherits: required when the account
/// default or its AMI says so, optional (and flagged) otherwise.
#[tokio::test(start_paused = true)]
async fn a_template_without_tokens_is_decided_by_the_default_then_the_ami() {
    use imds_guard::policy::AccountDefaults;
    use imds_guard::source::SourceOutcome;
    for (default, v2, outcome) in [
        (Some("required"), false, SourceOutcome::Compliant),
        (None, true, SourceOutcome::Compliant),
        (None, false, SourceOutcome::Flagged),
    ] {
        let cloud = FakeCloud::new();
        cloud.add_template(LT, &[], 1, &[(1, None)]);
        cloud.set_image("ami-0c02fb55956c7d316", v2);
        cloud.set_defaults(Some(AccountDefaults {
            http_tokens: default.map(str::to_string),
            ..AccountDefaults::default()
        }));
        let r = cloud
            .test_guard()
            .notifying()
            .build()
            .handle(&fixture("create-launch-template.json"))
            .await
            .unwrap();
        assert_eq!(
            r.sources[0].outcome, outcome,
            "{default:?} {v2}: {:?}",
            r.sources[0]
        );
    }
    // Neither can be read: it depends, and says on what.
    let cloud = FakeCloud::new();
    cloud.add_template(LT, &[], 1, &[(1, None)]);
    let r = cloud
        .test_guard()
        .notifying()
        .build()
        .handle(&fixture("create-launch-template.json"))
        .await
        .unwrap();
    assert_eq!(r.sources[0].outcome, SourceOutcome::Depends);
}

/// The sweep: every source decided, each noncompliant one with the
/// noncompliant instances it launched (largest first), and the region not
/// ready while any would launch at `optional`.
#[tokio::test(start_paused = true)]
async fn the_sweep_ranks_sources_by_the_instances_they_launched_and_readiness_counts_them() {
    use imds_guard::policy::{AccountDefaults, ReadinessVerdict};
    use imds_guard::source::{LaunchConfiguration, SourceKind, VersionRef};
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(AccountDefaults {
        http_tokens: Some("required".into()),
        ..AccountDefaults::default()
    }));
    cloud.add_template(LT, &[], 1, &[(1, lt_options("optional", 2))]);
    cloud.add_template(
        "lt-0ffffffffffffffff",
        &[],
        1,
        &[(1, lt_options("required", 2))],
    );
    cloud.add_group(group("web-asg", VersionRef::Default));
    cloud.add_configuration(LaunchConfiguration {
        name: "old-lc".into(),
        options: lt_options("optional", 1),
        image_id: None,
    });
    cloud.add_group(imds_guard::source::Group {
        name: "legacy-asg".into(),
        launch_configuration: Some("old-lc".into()),
        ..Default::default()
    });
    // Three instances from web-asg, one from the template alone, one from
    // the launch configuration's group; one compliant, not counted.
    let tag = |id: &str, tags: &[(&str, &str)]| {
        cloud.add(id, "optional", 1);
        cloud.edit(id, |i| {
            i.observed.tags = Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        });
    };
    for n in 1..=3 {
        tag(
            &format!("i-0aaaaaaaaaaaaaaa{n}"),
            &[
                ("aws:autoscaling:groupName", "web-asg"),
                ("aws:ec2launchtemplate:id", LT),
            ],
        );
    }
    tag("i-0bbbbbbbbbbbbbbb1", &[("aws:ec2launchtemplate:id", LT)]);
    tag(
        "i-0ccccccccccccccc1",
        &[("aws:autoscaling:groupName", "legacy-asg")],
    );
    cloud.add("i-0ddddddddddddddd1", "required", 1);
    let r = cloud
        .test_guard()
        .notifying()
        .with(&[("GUARD_MODE", "audit")])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    let sweep = r.sweep.as_ref().unwrap();
    let ranked: Vec<(SourceKind, &str, u64)> = sweep
        .sources
        .iter()
        .map(|s| (s.kind, s.id.as_str(), s.instances))
        .collect();
    assert_eq!(
        ranked,
        vec![
            (SourceKind::AutoScalingGroup, "web-asg", 3),
            (SourceKind::AutoScalingGroup, "legacy-asg", 1),
            (SourceKind::LaunchTemplate, LT, 1),
            (SourceKind::LaunchConfiguration, "old-lc", 0),
        ]
    );
    let region = &sweep.regions[0];
    assert_eq!(region.sources, 4);
    assert_eq!(region.readiness.verdict, ReadinessVerdict::NotReady);
    assert!(
        region.readiness.reasons.iter().any(|r| r
            .contains("4 source(s) would launch at HttpTokens=optional")
            && r.contains("web-asg")),
        "{:?}",
        region.readiness.reasons
    );
    assert!(cloud.published()[0].body.contains("\"sources\""));
}

/// In notify (and audit) mode the retry still has the same news: it sends
/// the kept message alone, not a second one saying the same, and a further
/// redelivery sends nothing.
#[tokio::test(start_paused = true)]
async fn a_retry_in_notify_mode_sends_the_kept_message_alone() {
    for mode in ["notify", "audit"] {
        let cloud = FakeCloud::new();
        cloud.with_memory().with_failed_events_queue();
        cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 2);
        cloud.fail("Publish", 1, api_error("AuthorizationError"));
        let g = cloud
            .test_guard()
            .notifying()
            .with(&[("GUARD_MODE", mode)])
            .build();
        let event = launch(&["i-0aaaaaaaaaaaaaaa1"]);
        assert!(g.handle(&event).await.is_err(), "{mode}");
        let retried = g.handle(&event).await.unwrap();
        assert_eq!(
            cloud.published().len(),
            1,
            "{mode}: {}",
            retried.notification
        );
        assert!(
            retried
                .notification
                .contains("which says all this one would"),
            "{}",
            retried.notification
        );
        let again = g.handle(&event).await.unwrap();
        assert_eq!(cloud.published().len(), 1, "{mode}: {}", again.notification);
        assert_eq!(again.notification, "not needed", "{mode}");
    }
}

/// The new default could not be set: the event fails (and is retried); the
/// retry creates a fresh version and makes it the default, promoting none
/// it finds (anyone who may create versions could have written it); fixes
/// never made the default stop at `MAX_UNPROMOTED_FIXES`, failed and named.
#[tokio::test(start_paused = true)]
async fn a_fix_that_could_not_become_the_default_is_made_afresh_by_the_retry() {
    use imds_guard::source::SourceOutcome;
    let cloud = FakeCloud::new();
    cloud.add_template(LT, &[OPT_IN], 1, &[(1, lt_options("optional", 2))]);
    cloud.fail(
        "ModifyLaunchTemplate",
        1,
        api_error("ConcurrentModification"),
    );
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("FIX_SOURCES", "true")])
        .build();
    let event = fixture("create-launch-template.json");
    let Err(GuardError::Unhandled { report, .. }) = g.handle(&event).await else {
        panic!("a default not set fails the event");
    };
    assert_eq!(report.sources[0].outcome, SourceOutcome::Failed);
    assert_eq!(cloud.template(LT).0.latest_version, 2);
    assert_eq!(cloud.template(LT).0.default_version, 1);
    let r = g.handle(&event).await.unwrap();
    assert_eq!(
        r.sources[0].outcome,
        SourceOutcome::Fixed,
        "{:?}",
        r.sources[0]
    );
    let (t, _) = cloud.template(LT);
    // A fresh fix of version 1 (3) made the default, and the latest (2)
    // copied after it, so `$Latest` launches what it did.
    assert_eq!(
        (t.default_version, t.latest_version),
        (3, 4),
        "a fresh version, made the default; version 2 is not promoted"
    );
    assert_eq!(cloud.count("CreateLaunchTemplateVersion"), 3);

    // A default that can never be set: two fixes, then no more.
    let cloud = FakeCloud::new();
    cloud.add_template(LT, &[OPT_IN], 1, &[(1, lt_options("optional", 2))]);
    cloud.fail(
        "ModifyLaunchTemplate",
        9,
        api_error("UnauthorizedOperation"),
    );
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("FIX_SOURCES", "true")])
        .build();
    let mut made = Vec::new();
    for _ in 0..4 {
        let _ = g.handle(&event).await;
        made.push(cloud.count("CreateLaunchTemplateVersion"));
    }
    // Two fixes of version 1 (and the latest's copy), then none.
    assert_eq!(made, [1, 3, 3, 3]);
    let Err(GuardError::Unhandled { report, .. }) = g.handle(&event).await else {
        panic!("still failed, and named");
    };
    let e = report.sources[0].error.clone().unwrap();
    assert!(e.contains("never made the default"), "{e}");
}

/// An exemption record is honoured, and renewed by sweeps, only while its
/// glob is still configured (a cosmetic edit keeps it); a removed glob's
/// records lapse, named in the summary. A migrated legacy record only while
/// `LEGACY_EXEMPT_BEFORE` is set, and a legacy tag never.
#[tokio::test(start_paused = true)]
async fn a_removed_exemption_glob_ends_the_records_it_made() {
    use imds_guard::memory::{partition, Record, MIGRATED};
    let kept = "i-0ccccccccccccccc1";
    let retired = "i-0ccccccccccccccc2";
    let migrated = "i-0ccccccccccccccc3";
    let tagged = "i-0ccccccccccccccc4";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    let here = partition("111122223333", "us-east-1");
    // A year old, so each is due for renewal.
    let then = imds_guard::clock::now_secs() - 365 * 24 * 3600;
    for (id, glob) in [
        (kept, "arn:aws:iam::*:role/packer-**".to_string()),
        (retired, "arn:aws:iam::*:role/retired-*".to_string()),
        (migrated, format!("imds-guard:status=exempt{MIGRATED}")),
    ] {
        cloud.add(id, "optional", 1);
        cloud.put_record(Record::exempt(&here, id, &glob, None, then));
    }
    cloud.add(tagged, "optional", 1);
    cloud.edit(tagged, |i| {
        i.observed.tags = Some(vec![("imds-guard:status".into(), "exempt".into())]);
        i.observed.launch_time = Some(1);
    });
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[
            ("GUARD_MODE", "enforce"),
            ("EXEMPT_PRINCIPAL_ARNS", " arn:aws:iam::*:role/packer-* "),
        ])
        .build();
    let r = g.handle(&scheduled()).await.unwrap();
    assert_eq!(
        cloud.tokens(kept),
        "optional",
        "its glob is still configured"
    );
    for id in [retired, migrated, tagged] {
        assert_eq!(cloud.tokens(id), "required", "{id}");
    }
    let region = &r.sweep.as_ref().unwrap().regions[0];
    let lapsed = region
        .warnings
        .iter()
        .find(|w| w.contains("no longer honoured"))
        .unwrap_or_else(|| panic!("{:?}", region.warnings));
    assert!(
        lapsed.contains(retired) && lapsed.contains(migrated),
        "{lapsed}"
    );
    assert!(!lapsed.contains(kept), "{lapsed}");
    assert!(
        region
            .warnings
            .iter()
            .any(|w| w.contains("legacy imds-guard:status=exempt tag")),
        "{:?}",
        region.warnings
    );
    // Only the honoured record was renewed.
    let renewed: Vec<_> = cloud
        .records("exempt#")
        .into_iter()
        .filter(|r| r.at > then)
        .map(|r| r.id().to_string())
        .collect();
    assert_eq!(renewed, [kept]);

    // With LEGACY_EXEMPT_BEFORE set, the migrated record is honoured again.
    let cloud2 = FakeCloud::new();
    cloud2.with_memory();
    cloud2.set_defaults(Some(Default::default()));
    cloud2.add(migrated, "optional", 1);
    cloud2.put_record(Record::exempt(
        &here,
        migrated,
        &format!("imds-guard:status=exempt{MIGRATED}"),
        None,
        then,
    ));
    cloud2
        .test_guard()
        .notifying()
        .with(&[
            ("GUARD_MODE", "enforce"),
            ("LEGACY_EXEMPT_BEFORE", "2026-11-01T00:00:00Z"),
        ])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(cloud2.tokens(migrated), "optional");
}

/// Each sweep checks the memory's resource policy is still the stack's; a
/// policy removed or loosened fails the run and heads its notification.
#[tokio::test(start_paused = true)]
async fn a_sweep_fails_loudly_when_the_memorys_protection_is_gone() {
    let guard_role = "arn:aws:iam::111122223333:role/imds-guard-GuardRole-X";
    let stacks = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyTheGuardWrites", "Effect": "Deny", "Principal": "*",
        "Action": imds_guard::memory::GUARDED_WRITES, "Resource": "*",
        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [guard_role]}}
    }]})
    .to_string();
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.set_memory_policy(Some(stacks));
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[
            (
                "MEMORY_TABLE_ARN",
                "arn:aws:dynamodb:us-east-1:111122223333:table/imds-guard-memory",
            ),
            ("MEMORY_WRITERS", guard_role),
        ])
        .build();
    let r = g.handle(&scheduled()).await.unwrap();
    assert_eq!(r.sweep.as_ref().unwrap().memory, None);
    assert_eq!(r.aws_calls.get("GetResourcePolicy"), Some(&1));

    // Someone deletes the policy: the run fails, and says so first.
    cloud.set_memory_policy(None);
    let Err(GuardError::Unhandled { summary, report }) = g.handle(&scheduled()).await else {
        panic!("an unprotected memory fails the sweep");
    };
    assert!(summary.contains("no resource policy"), "{summary}");
    assert!(report.sweep.as_ref().unwrap().memory.is_some());
    let told = cloud.published();
    assert!(
        told.last().unwrap().subject.contains("MEMORY UNPROTECTED"),
        "{}",
        told.last().unwrap().subject
    );
}

/// With `NO_TOKEN_HOLD_DAYS`, an instance held back for its IMDSv1 use is
/// told a day before its switch, then switched; without it, held for as
/// long as anything on it makes an IMDSv1 call.
#[tokio::test(start_paused = true)]
async fn a_hold_back_ceiling_tells_a_day_ahead_then_switches() {
    use imds_guard::memory::partition;
    let id = "i-0aaaaaaaaaaaaaaa1";
    let day = 24 * 3600;
    let now = imds_guard::clock::now_secs();
    let here = partition("111122223333", "us-east-1");
    let setup = || {
        let cloud = FakeCloud::new();
        cloud.with_memory();
        cloud.set_defaults(Some(Default::default()));
        cloud.add(id, "optional", 1);
        cloud.set_no_token(id, 3.0);
        cloud
    };
    let pairs = [
        ("GUARD_MODE", "enforce"),
        ("CHECK_METADATA_NO_TOKEN", "true"),
        ("NO_TOKEN_HOLD_DAYS", "3"),
    ];

    // Held two and a half days: a day from the ceiling, so told when.
    let cloud = setup();
    cloud.put_record(imds_guard::plan::held_record(
        &here,
        id,
        now - 5 * day / 2,
        None,
        now,
        3,
    ));
    let r = cloud
        .test_guard()
        .notifying()
        .with(&pairs)
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "optional");
    let held = r.instances.iter().find(|i| i.instance_id == id).unwrap();
    assert!(
        held.findings.iter().any(|f| f.contains("switched at")),
        "{held:?}"
    );
    assert!(cloud
        .published()
        .last()
        .unwrap()
        .body
        .contains("switched at"));

    // Past three days, told more than a day ago: switched, and said why.
    let cloud = setup();
    cloud.put_record(imds_guard::plan::held_record(
        &here,
        id,
        now - 4 * day,
        Some(now - day - 60),
        now,
        3,
    ));
    let r = cloud
        .test_guard()
        .notifying()
        .with(&pairs)
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "required");
    let switched = r.instances.iter().find(|i| i.instance_id == id).unwrap();
    assert_eq!(switched.outcome, Outcome::Remediated);
    assert!(
        switched
            .findings
            .iter()
            .any(|f| f.contains("NO_TOKEN_HOLD_DAYS=3")),
        "{switched:?}"
    );
    // The last reading before the switch is kept (the metric reads zero
    // afterwards), and said when the switch breaks something.
    assert_eq!(
        switched.metadata_no_token.and_then(|n| n.calls),
        Some(3),
        "{switched:?}"
    );
    let kept = cloud.records("remediated#");
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0].data[imds_guard::memory::NO_TOKEN_BEFORE].contains("\"calls\":3"),
        "{:?}",
        kept[0].data
    );
    cloud.set_rejected(id, 5.0);
    let r = cloud
        .test_guard()
        .notifying()
        .with(&pairs)
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    let refusing = &r.sweep.as_ref().unwrap().refusing_imdsv1;
    assert_eq!(refusing.len(), 1, "{refusing:?}");
    assert_eq!(refusing[0].before_switch.and_then(|n| n.calls), Some(3));
    assert!(cloud
        .published()
        .last()
        .unwrap()
        .body
        .contains("\"before_switch\""));

    // Without the ceiling, the same instance is held, however long.
    let cloud = setup();
    cloud.put_record(imds_guard::plan::held_record(
        &here,
        id,
        now - 400 * day,
        Some(now - 300 * day),
        now,
        3,
    ));
    cloud
        .test_guard()
        .notifying()
        .with(&pairs[..2])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert_eq!(cloud.tokens(id), "optional");

    // A first hold starts the count: recorded, since now.
    let cloud = setup();
    cloud
        .test_guard()
        .notifying()
        .with(&pairs)
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    let rec = cloud.records("heldback#");
    assert_eq!(rec.len(), 1);
    assert!(rec[0].at >= now);
}

#[tokio::test(start_paused = true)]
async fn an_instance_whose_standing_cannot_be_read_is_never_decided_blind_on_either_path() {
    // The one pipeline's recall: with principal exemptions configured, the
    // exemption the guard recorded at launch decides an instance. DynamoDB
    // refuses every read of those records (the other kinds read well): the
    // noncompliant instance fails on both paths, named, is not changed, and
    // makes no finding on what little is known of it; the compliant one is
    // only counted.
    let noncompliant = "i-0ddddddddddddddd1";
    let compliant = "i-0ddddddddddddddd2";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.with_security_hub();
    cloud.as_event_function(false);
    cloud.set_defaults(Some(Default::default()));
    cloud
        .add(noncompliant, "optional", 1)
        .add(compliant, "required", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .enforcing()
        .filing()
        .with(&[
            ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer-*"),
            // Every instance listed, the compliant one too.
            ("MAX_HOP_LIMIT", "2"),
        ])
        .build();
    cloud.fail_reads_of("exempt#", api_error("InternalServerError"));

    let Err(GuardError::Unhandled { summary, report }) = g.handle(&scheduled()).await else {
        panic!("the sweep must fail, naming the instance it could not decide")
    };
    assert!(summary.contains(noncompliant), "{summary}");
    let failed: Vec<_> = report
        .instances
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", report.instances);
    assert_eq!(failed[0].instance_id, noncompliant);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("whether it was exempt at launch could not be read from the guard's memory"),
        "{:?}",
        failed[0]
    );
    assert_eq!(report.count(Outcome::Compliant), 1);
    assert_eq!(cloud.tokens(noncompliant), "optional");
    assert!(
        cloud.findings().is_empty(),
        "an instance not decided makes no finding: {:?}",
        cloud.findings()
    );

    let revert = crate::common::revert_event(noncompliant);
    let Err(GuardError::Unhandled { summary, report }) = g.handle(&revert).await else {
        panic!("the event must fail, naming the instance it could not decide")
    };
    assert!(summary.contains(noncompliant), "{summary}");
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].outcome, Outcome::Failed);
    assert!(
        report.instances[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("whether its launch was exempt could not be read from the guard's memory"),
        "{:?}",
        report.instances[0]
    );
    assert_eq!(cloud.tokens(noncompliant), "optional");
    assert!(cloud.findings().is_empty(), "{:?}", cloud.findings());
}

#[tokio::test(start_paused = true)]
async fn a_container_host_is_switched_with_a_second_hop_in_one_call_and_a_plain_instance_keeps_its_own(
) {
    // Karpenter's node and an EKS node group's, at hop limit 1: their pods
    // reached IMDS through the IMDSv1 fallback. Switched to required with
    // hop limit 2 in the same call, on both paths; a plain instance and a
    // node already at 2 keep theirs.
    let karpenter = "i-0eeeeeeeeeeeeeee1";
    let plain = "i-0eeeeeeeeeeeeeee2";
    let at_two = "i-0eeeeeeeeeeeeeee3";
    let swept = "i-0eeeeeeeeeeeeeee4";
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    for (id, hop, tags) in [
        (karpenter, 1, vec![("karpenter.sh/nodepool", "default")]),
        (plain, 1, vec![("team", "web")]),
        (at_two, 2, vec![("eks:cluster-name", "prod")]),
        // As Auto Scaling launches a node group's node: through a fleet.
        (
            swept,
            1,
            vec![
                (
                    "aws:ec2:fleet-id",
                    "fleet-180da986-0bb4-c936-0c9a-0e20a0c6d1aa",
                ),
                ("eks:nodegroup-name", "ng-1"),
            ],
        ),
    ] {
        cloud.add(id, "optional", hop);
        let tags: Vec<(String, String)> = tags
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cloud.edit(id, |i| i.observed.tags = Some(tags));
    }
    let g = cloud.test_guard().notifying().enforcing().build();
    let report = g.handle(&launch(&[karpenter, plain])).await.unwrap();
    assert_eq!(
        report.count(Outcome::Remediated),
        2,
        "{:?}",
        report.instances
    );
    assert_eq!(
        cloud.count("ModifyInstanceMetadataOptions"),
        2,
        "one call each"
    );
    for (id, hop) in [(karpenter, 2), (plain, 1)] {
        assert_eq!(cloud.tokens(id), "required", "{id}");
        assert_eq!(cloud.hop(id), Some(hop), "{id}");
    }
    let node = &report.instances[0];
    assert_eq!(node.launcher.as_deref(), Some("Karpenter"));
    assert!(
        node.findings.iter().any(|f| f.contains("container host")),
        "{node:?}"
    );

    // The sweep: the node group's node raised, the node at 2 kept.
    let report = g.handle(&scheduled()).await.unwrap();
    assert_eq!(
        report.count(Outcome::Remediated),
        2,
        "{:?}",
        report.instances
    );
    for (id, hop) in [(swept, 2), (at_two, 2)] {
        assert_eq!(cloud.tokens(id), "required", "{id}");
        assert_eq!(cloud.hop(id), Some(hop), "{id}");
    }
}

/// Tags an instance of the fake carries.
fn with_tags(cloud: &FakeCloud, id: &str, tags: &[(&str, &str)]) {
    let tags: Vec<(String, String)> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cloud.edit(id, |i| i.observed.tags = Some(tags));
}

fn managed_by(cloud: &FakeCloud, id: &str, principal: &str) {
    cloud.edit(id, |i| {
        i.observed.operator = Some(imds_guard::launcher::Operator {
            managed: true,
            principal: Some(principal.into()),
        })
    });
}

#[tokio::test(start_paused = true)]
async fn a_managed_instance_is_reported_by_the_sweep_counted_apart_and_never_written() {
    // An EKS Auto Mode node at optional (its service's choice), beside a
    // plain instance. Enforce mode, principal exemptions and a container
    // tag change nothing for it: nothing is written to it, on either path.
    let node = "i-0fffffffffffffff1";
    let plain = "i-0fffffffffffffff2";
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(AccountDefaults {
        http_tokens: Some("required".into()),
        ..Default::default()
    }));
    cloud.add(node, "optional", 1);
    cloud.add(plain, "optional", 1);
    with_tags(&cloud, node, &[("eks:eks-cluster-name", "prod")]);
    managed_by(&cloud, node, "eks.amazonaws.com");
    let g = cloud.test_guard().notifying().enforcing().build();

    // The event path: looked at, left alone, not told of.
    let report = g.handle(&launch(&[node])).await.unwrap();
    let r = &report.instances[0];
    assert_eq!(r.outcome, Outcome::Exempt, "{r:?}");
    assert!(
        r.exemption
            .as_ref()
            .is_some_and(|e| e.to_string().contains("eks.amazonaws.com operates it")),
        "{r:?}"
    );
    assert_eq!(r.launcher.as_deref(), Some("EKS Auto Mode"));
    assert!(cloud.published().is_empty(), "{:?}", cloud.published());

    // The sweep: listed with its options and its operator, counted apart.
    let report = g.handle(&scheduled()).await.unwrap();
    let region = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.managed, 1);
    assert_eq!(region.count(Outcome::Remediated), 1, "the plain one");
    let listed = report
        .instances
        .iter()
        .find(|i| i.instance_id == node)
        .expect("the managed instance is listed");
    assert_eq!(
        listed.before.as_ref().unwrap().http_tokens.as_deref(),
        Some("optional")
    );
    assert!(
        region.readiness.reasons[0].starts_with("1 managed instance(s) at HttpTokens=optional"),
        "{:?}",
        region.readiness
    );
    assert!(
        !region
            .readiness
            .reasons
            .iter()
            .any(|r| r.contains("exempt instance")),
        "{:?}",
        region.readiness
    );
    let body = cloud.published().last().unwrap().body.clone();
    assert!(body.contains(node), "{body}");

    // Nothing was ever written to it.
    assert_eq!(cloud.tokens(node), "optional");
    assert_eq!(cloud.hop(node), Some(1));
    assert_eq!(cloud.tag(node, "imds-guard:status"), None);
    assert_eq!(cloud.tokens(plain), "required");
    assert_eq!(
        cloud.count("ModifyInstanceMetadataOptions"),
        1,
        "the plain one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_version_gated_launchers_instance_is_switched_only_once_its_metric_shows_no_imdsv1() {
    // An EMR node (EMR sets the aws: tags; before 5.32/6.2 it needs
    // IMDSv1), with CHECK_METADATA_NO_TOKEN off. Its launch is held for the
    // sweep; the sweep holds it while the metric has no data, and switches
    // it once the metric shows zero.
    let emr = "i-0ddddddddddddddd1";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(emr, "optional", 1);
    with_tags(
        &cloud,
        emr,
        &[
            ("aws:elasticmapreduce:job-flow-id", "j-2AXXXXXXGAPLF"),
            ("aws:elasticmapreduce:instance-group-role", "CORE"),
        ],
    );
    let g = cloud.test_guard().notifying().enforcing().build();

    let report = g.handle(&launch(&[emr])).await.unwrap();
    let r = &report.instances[0];
    assert_eq!(
        (r.outcome, &r.action.idle),
        (Outcome::Flagged, &Idle::Unproven)
    );
    assert!(r.needs_version.is_some(), "{r:?}");
    assert_eq!(cloud.tokens(emr), "optional");

    // No data: held, and said why.
    let report = g.handle(&scheduled()).await.unwrap();
    let region = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.version_gated, 1);
    assert_eq!(region.v1_no_data, 1);
    assert_eq!(cloud.tokens(emr), "optional");
    assert_eq!(
        cloud.count("GetMetricData"),
        1,
        "asked though the check is off"
    );

    // In use: held.
    cloud.set_no_token(emr, 4.0);
    g.handle(&scheduled()).await.unwrap();
    assert_eq!(cloud.tokens(emr), "optional");

    // Zero over the lookback: switched.
    cloud.set_no_token(emr, 0.0);
    let report = g.handle(&scheduled()).await.unwrap();
    assert_eq!(cloud.tokens(emr), "required");
    let r = report
        .instances
        .iter()
        .find(|i| i.instance_id == emr)
        .unwrap();
    assert_eq!(r.outcome, Outcome::Remediated);

    // And watched afterwards, the check still off: an old agent that
    // fails at its next restart refuses IMDSv1 calls, and is told first.
    cloud.set_rejected(emr, 3.0);
    let report = g.handle(&scheduled()).await.unwrap();
    let region = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.refusing, 1, "{region:?}");
    assert_eq!(region.readiness.verdict, ReadinessVerdict::NotReady);
}

#[tokio::test(start_paused = true)]
async fn a_version_gated_instance_without_data_is_switched_once_the_ceiling_passes() {
    use imds_guard::memory::partition;
    let emr = "i-0ddddddddddddddd2";
    let day = 24 * 3600;
    let now = imds_guard::clock::now_secs();
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(emr, "optional", 1);
    with_tags(&cloud, emr, &[("aws:elasticmapreduce:job-flow-id", "j-1")]);
    // Held four days, told more than a day ago, never any metric data.
    cloud.put_record(imds_guard::plan::held_record(
        &partition("111122223333", "us-east-1"),
        emr,
        now - 4 * day,
        Some(now - day - 60),
        now,
        3,
    ));
    let g = cloud
        .test_guard()
        .notifying()
        .with(&[("GUARD_MODE", "enforce"), ("NO_TOKEN_HOLD_DAYS", "3")])
        .build();
    let report = g.handle(&scheduled()).await.unwrap();
    assert_eq!(cloud.tokens(emr), "required");
    let r = report
        .instances
        .iter()
        .find(|i| i.instance_id == emr)
        .unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| f.contains("switched after 4 day(s)")
                && f.contains("its launcher needs no IMDSv1")),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forged_launcher_tag_chooses_the_fix_but_never_exempts_or_holds() {
    // Anyone who may tag can write `AmazonECSManaged` or
    // `elasticbeanstalk:environment-name`: the first makes the switch raise
    // the hop limit (a container host), neither holds or exempts.
    let ecs = "i-0ccccccccccccccc1";
    let beanstalk = "i-0ccccccccccccccc2";
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(ecs, "optional", 1);
    cloud.add(beanstalk, "optional", 1);
    with_tags(&cloud, ecs, &[("AmazonECSManaged", "")]);
    with_tags(
        &cloud,
        beanstalk,
        &[("elasticbeanstalk:environment-name", "prod")],
    );
    let g = cloud.test_guard().notifying().enforcing().build();
    let report = g.handle(&launch(&[ecs, beanstalk])).await.unwrap();
    assert_eq!(
        report.count(Outcome::Remediated),
        2,
        "{:?}",
        report.instances
    );
    assert_eq!(
        (cloud.tokens(ecs), cloud.hop(ecs)),
        ("required".into(), Some(2))
    );
    assert_eq!(
        (cloud.tokens(beanstalk), cloud.hop(beanstalk)),
        ("required".into(), Some(1))
    );
    assert!(report.instances.iter().all(|r| r.needs_version.is_none()));
}

/// EC2's state-change notification of `id` entering `state`.
fn state_change(id: &str, state: &str) -> Value {
    let mut e = fixture("state-change-pending.json");
    e["detail"]["instance-id"] = id.into();
    e["detail"]["state"] = state.into();
    e
}

#[tokio::test(start_paused = true)]
async fn a_running_notification_fixes_with_one_describe_and_one_modify() {
    let id = "i-0b1b2c3d4e5f60718";
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    let g = cloud.test_guard().notifying().enforcing().build();
    let started = tokio::time::Instant::now();
    let r = g.handle(&state_change(id, "running")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    assert_eq!(cloud.count("DescribeInstances"), 1);
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
    assert_eq!(started.elapsed(), std::time::Duration::ZERO, "no wait");
    assert_eq!(cloud.tokens(id), "required");
}

#[tokio::test(start_paused = true)]
async fn a_running_notification_retries_briefly_when_ec2_does_not_show_it_yet() {
    let id = "i-0b1b2c3d4e5f60719";
    // Shown at the third look (eventual consistency): within the bounded
    // retry, in the same invocation.
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    cloud.edit(id, |i| i.invisible_for = 2);
    let g = cloud.test_guard().notifying().enforcing().build();
    let started = tokio::time::Instant::now();
    let r = g.handle(&state_change(id, "running")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    assert_eq!(cloud.count("DescribeInstances"), 3);
    assert!(started.elapsed() <= imds_guard::event::RUNNING_RETRY);

    // Never shown: the retry ends at RUNNING_RETRY, not the whole budget,
    // and the invocation fails naming it (EventBridge delivers it again).
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    cloud.edit(id, |i| i.invisible_for = 1000);
    let g = cloud
        .test_guard()
        .notifying()
        .enforcing()
        .with(&[("RETRY_BUDGET_SECONDS", "60")])
        .build();
    let started = tokio::time::Instant::now();
    let err = g.handle(&state_change(id, "running")).await.unwrap_err();
    assert!(err.to_string().contains(id), "{err}");
    assert!(
        started.elapsed() <= imds_guard::event::RUNNING_RETRY,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_notification_tries_once_and_its_running_one_decides_telling_once() {
    let id = "i-0b1b2c3d4e5f6071a";
    for mode in ["enforce", "notify"] {
        // Still pending: EC2 refuses the change. One try, no wait, nothing
        // written or told, the invocation succeeds.
        let cloud = FakeCloud::new();
        cloud.with_memory();
        cloud.add(id, "optional", 1);
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        cloud.edit(id, |i| i.pending_until = Some(until));
        let g = cloud
            .test_guard()
            .notifying()
            .with(&[("GUARD_MODE", mode), ("TRIGGERS", "state-change")])
            .build();
        let started = tokio::time::Instant::now();
        let r = g.handle(&state_change(id, "pending")).await.unwrap();
        assert_eq!(
            started.elapsed(),
            std::time::Duration::ZERO,
            "{mode}: no wait"
        );
        let i = &r.instances[0];
        if mode == "enforce" {
            assert_eq!(i.action.idle, Idle::AwaitingRunning, "{mode}: {i:?}");
            assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1, "one try");
            assert_eq!(r.notification, "not needed");
            assert!(cloud.published().is_empty());
            assert_eq!(cloud.tag(id, "imds-guard:status"), None);
        } else {
            // Notify writes nothing EC2 could refuse: flagged and told now.
            assert_eq!(i.outcome, Outcome::Flagged, "{mode}: {i:?}");
            assert_eq!(cloud.published().len(), 1, "{mode}");
        }

        // Running: decided, and told once in all.
        tokio::time::sleep_until(until).await;
        let r = g.handle(&state_change(id, "running")).await.unwrap();
        let i = &r.instances[0];
        if mode == "enforce" {
            assert_eq!(i.outcome, Outcome::Remediated, "{mode}: {i:?}");
        } else {
            assert_eq!(i.action.idle, Idle::AlreadyTold, "{mode}: {i:?}");
        }
        assert_eq!(cloud.published().len(), 1, "{mode}: told once");
        if mode == "enforce" {
            assert_eq!(cloud.tokens(id), "required");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_pending_notification_ec2_takes_fixes_before_the_instance_runs() {
    let id = "i-0b1b2c3d4e5f6071b";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.add(id, "optional", 1);
    cloud.edit(id, |i| i.observed.state = Some("pending".into()));
    let g = cloud.test_guard().notifying().enforcing().build();
    let r = g.handle(&state_change(id, "pending")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    // Its running notification finds it compliant: nothing more is done
    // or told.
    let r = g.handle(&state_change(id, "running")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Compliant, "{r:?}");
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
    assert_eq!(cloud.published().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_notification_leaves_an_unshown_instance_to_running_and_fails_a_failed_call() {
    let id = "i-0b1b2c3d4e5f6071c";
    // Not shown yet: its running notification decides.
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    cloud.edit(id, |i| i.invisible_for = 1);
    let g = cloud.test_guard().notifying().enforcing().build();
    let r = g.handle(&state_change(id, "pending")).await.unwrap();
    assert_eq!(r.instances[0].action.idle, Idle::AwaitingRunning, "{r:?}");
    assert_eq!(cloud.count("DescribeInstances"), 1, "one look, no wait");
    let r = g.handle(&state_change(id, "running")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");

    // A describe that fails (a missing permission) is no reason to wait:
    // the invocation fails, naming the instance.
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    cloud.fail("DescribeInstances", 1, api_error("UnauthorizedOperation"));
    let g = cloud.test_guard().notifying().enforcing().build();
    let err = g.handle(&state_change(id, "pending")).await.unwrap_err();
    assert!(err.to_string().contains(id), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_running_notification_retries_a_refused_change_within_its_bound() {
    let id = "i-0b1b2c3d4e5f6071d";
    let cloud = FakeCloud::new();
    cloud.add(id, "optional", 1);
    // EC2 refuses the first two modifies (IncorrectInstanceState), then
    // takes the third: within the 10 s bound, in one invocation.
    cloud.edit(id, |i| i.pending_for = 2);
    let g = cloud.test_guard().notifying().enforcing().build();
    let started = tokio::time::Instant::now();
    let r = g.handle(&state_change(id, "running")).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 3);
    assert!(started.elapsed() <= imds_guard::event::RUNNING_RETRY);
}

#[tokio::test(start_paused = true)]
async fn with_both_triggers_three_events_of_one_launch_write_and_tell_once() {
    let id = "i-0b1b2c3d4e5f6071e";
    for mode in ["enforce", "notify", "audit"] {
        let cloud = FakeCloud::new();
        cloud.with_memory();
        cloud.add(id, "optional", 1);
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        cloud.edit(id, |i| i.pending_until = Some(until));
        let g = cloud
            .test_guard()
            .notifying()
            .with(&[("GUARD_MODE", mode), ("TRIGGERS", "both")])
            .build();
        g.handle(&state_change(id, "pending")).await.unwrap();
        tokio::time::sleep_until(until).await;
        g.handle(&state_change(id, "running")).await.unwrap();
        let launch = crate::common::launch_event("run-instances-console.json", &[id.into()], None);
        g.handle(&launch).await.unwrap();
        assert_eq!(cloud.published().len(), 1, "{mode}: told once");
        let writes = (
            cloud.count("ModifyInstanceMetadataOptions"),
            cloud.count("CreateTags"),
        );
        let expected = match mode {
            // One refused try at pending, one taken at running; one tag.
            "enforce" => (2, 1),
            "notify" => (0, 1),
            _ => (0, 0),
        };
        assert_eq!(writes, expected, "{mode}");
    }
}

//! Flow logic on the in-memory fake (`fake`): what the event path and the
//! sweep do with EC2's answers, through the one acting layer they share. No
//! HTTP, and time is paused (retries and backoff cost no wall time).

use imds_guard::guard::{Guard, GuardError};
use imds_guard::report::{DefaultsAction, Outcome, Status};
use serde_json::{json, Value};

use crate::common::{config, launch_event};
use crate::fake::{api_error, FakeCloud};

const TOPIC: &str = "arn:aws:sns:us-east-1:111122223333:imds-guard";

fn guard(cloud: &FakeCloud, pairs: &[(&str, &str)]) -> Guard<crate::fake::FakeClients> {
    let mut all = vec![("NOTIFY_TOPIC_ARN", TOPIC)];
    all.extend_from_slice(pairs);
    Guard::new(config(&all), cloud.clients())
}

fn launch(ids: &[&str]) -> Value {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    launch_event("run-instances-cli-multi.json", &ids, None)
}

fn scheduled() -> Value {
    json!({
        "version": "0", "id": "e-sweep", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "111122223333",
        "time": "2026-11-29T06:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}
    })
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
    let g = guard(&cloud, &[]);

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
    let r = guard(&cloud, &[])
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
    let r = guard(&cloud, &[])
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
    let r = guard(&cloud, &[]).handle(&scheduled()).await.unwrap();
    assert_eq!(r.count(Outcome::Gone), 1);
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
}

#[tokio::test(start_paused = true)]
async fn throttling_fails_an_event_instance_but_slows_the_sweep_down() {
    let throttled = || api_error("RequestLimitExceeded");
    let cloud = FakeCloud::new();
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    cloud.fail("ModifyInstanceMetadataOptions", 1, throttled());
    let err = guard(&cloud, &[])
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
    let r = guard(&cloud, &[]).handle(&scheduled()).await.unwrap();
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
    let g = guard(&cloud, &[("GUARD_MODE", "audit")]);
    let r = g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Flagged);
    assert_eq!(
        cloud.count("CreateTags") + cloud.count("ModifyInstanceMetadataOptions"),
        0
    );

    let g = guard(&cloud, &[("GUARD_MODE", "notify")]);
    g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
    g.handle(&launch(&["i-0aaaaaaaaaaaaaaa1"])).await.unwrap();
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
    let g = guard(&cloud, &[("SET_ACCOUNT_DEFAULT", "true")]);
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
    let r = guard(&cloud, &[("CHECK_METADATA_NO_TOKEN", "true")])
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
    let err = guard(&cloud, &[]).handle(&scheduled()).await.unwrap_err();
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
    let r = guard(&cloud, &[]).handle(&scheduled()).await.unwrap();
    assert!(r.sweep.unwrap().regions[0].listing.contains("refused"));
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "required");
}

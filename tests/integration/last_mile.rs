//! The last mile (`LOOKUP_IMDSV1_CALLERS`) on the fake cloud: the sweep
//! asks CloudTrail about the instances it leaves at `optional`, attributes
//! IMDSv1-delivered calls to their software, reports a call from elsewhere
//! as possible theft, and keeps within its budget, carrying the rest over.

use imds_guard::clock::now_secs;
use imds_guard::v1_callers::CALLS_PER_REGION;

use crate::common::scheduled;
use crate::fake::{api_error, FakeCloud};

const ID: &str = "i-0aaaaaaaaaaaaaaa1";

/// A CloudTrail record of a call made with instance `id`'s role
/// credentials, shaped as AWS's own documentation examples (AWS
/// Marketplace Metering's `MeterUsage`, CodeGuru Profiler's
/// `ConfigureAgent`), `delivery` its `ec2RoleDelivery` (none: left out).
fn record(id: &str, delivery: Option<&str>, source: &str, agent: &str) -> String {
    let delivery = delivery
        .map(|d| format!(r#","ec2RoleDelivery":"{d}""#))
        .unwrap_or_default();
    format!(
        r#"{{"eventVersion":"1.05","userIdentity":{{"type":"AssumedRole","principalId":"AROAEXAMPLE:{id}","arn":"arn:aws:sts::111122223333:assumed-role/app-role/{id}","accountId":"111122223333","sessionContext":{{"sessionIssuer":{{"type":"Role","arn":"arn:aws:iam::111122223333:role/app-role","userName":"app-role"}},"attributes":{{"mfaAuthenticated":"false","creationDate":"2026-11-30T10:00:00Z"}}{delivery}}}}},"eventTime":"2026-11-30T10:05:00Z","eventSource":"metering-marketplace.amazonaws.com","eventName":"MeterUsage","awsRegion":"us-east-1","sourceIPAddress":"{source}","userAgent":"{agent}"}}"#
    )
}

const OLD_CLI: &str =
    "aws-cli/1.16.102 Python/2.7.16 Linux/4.14.133-113.112.amzn2.x86_64 botocore/1.12.92";

fn instance(cloud: &FakeCloud, id: &str) {
    cloud.add(id, "optional", 1);
    cloud.edit(id, |i| {
        i.observed.addresses.private = vec!["10.0.0.12".into()];
        i.observed.addresses.public = vec!["54.1.2.3".into()];
    });
}

fn guard(cloud: &FakeCloud) -> imds_guard::guard::Guard<crate::fake::FakeClients> {
    cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "audit"), ("LOOKUP_IMDSV1_CALLERS", "true")])
        .build()
}

#[tokio::test(start_paused = true)]
async fn the_sweep_names_the_software_and_a_call_from_elsewhere() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    instance(&cloud, ID);
    cloud.add("i-0aaaaaaaaaaaaaaa9", "required", 1);
    let t = now_secs() - 3600;
    for (delivery, source, agent) in [
        (Some("1.0"), "10.0.0.12", OLD_CLI),
        (Some("1.0"), "10.0.0.12", OLD_CLI),
        (Some("1.0"), "AWS Internal", "AWS Internal"),
        (Some("2.0"), "10.0.0.12", "aws-cli/2.17.23 Python/3.12.2"),
        (None, "10.0.0.12", OLD_CLI),
        (
            Some("1.0"),
            "45.142.212.18",
            "aws-cli/2.17.23 Python/3.12.2 Linux/6.1.0 botocore/2.4.5",
        ),
    ] {
        cloud.record_user_event(ID, t, &record(ID, delivery, source, agent));
    }
    let r = guard(&cloud).handle(&scheduled()).await.unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    let m = region.imdsv1_callers.as_ref().expect("asked");
    assert_eq!(
        (m.asked, m.not_asked, m.lookups),
        (1, 0, 1),
        "only the instance left at optional"
    );
    let seen = &m.instances[0].seen;
    assert_eq!(
        seen.events, 5,
        "the record without ec2RoleDelivery is not an instance role's call"
    );
    assert_eq!(seen.v2_calls, 1);
    let software: Vec<(&str, u64)> = seen
        .callers
        .iter()
        .map(|c| (c.agent.as_str(), c.calls))
        .collect();
    assert_eq!(
        software,
        [
            ("AWS Internal", 1),
            ("aws-cli/1.16.102 botocore/1.12.92", 2)
        ]
    );
    let cli = &seen.callers[1];
    assert!(
        cli.hypothesis.text.contains("before 1.16.289"),
        "{}",
        cli.hypothesis.text
    );
    assert!(cli
        .hypothesis
        .source
        .starts_with("https://docs.aws.amazon.com/"));
    assert_eq!(seen.suspects.len(), 1);
    assert_eq!(seen.suspects[0].address, "45.142.212.18");
    assert!(
        region.warnings[0].starts_with("possible credential theft: i-0aaaaaaaaaaaaaaa1"),
        "{:?}",
        region.warnings
    );
    assert!(region
        .readiness
        .reasons
        .iter()
        .any(|r| r.contains("software still uses IMDSv1-delivered credentials") && r.contains(ID)));
    // Never the instance's addresses or the OS in what is kept.
    let json = serde_json::to_string(m).unwrap();
    assert!(
        !json.contains("10.0.0.12") && !json.contains("Linux/") && !json.contains("Python"),
        "{json}"
    );
    let told = &cloud.published()[0].body;
    assert!(told.contains("possible credential theft"), "{told}");
}

#[tokio::test(start_paused = true)]
async fn nothing_seen_is_not_proof_and_says_what_was_not_looked_at() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    instance(&cloud, ID);
    let r = guard(&cloud).handle(&scheduled()).await.unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    let m = region.imdsv1_callers.as_ref().unwrap();
    assert_eq!(m.asked, 1);
    assert!(m.instances.is_empty());
    let note = region
        .readiness
        .reasons
        .iter()
        .find(|r| r.contains("no IMDSv1-delivered credentials seen"))
        .expect("a caveat");
    assert!(
        note.contains("data events") && note.contains("other regions"),
        "{note}"
    );
}

/// At most `CALLS_PER_REGION` calls a run; the rest are asked first next
/// run, and the report says so. A busy instance's events are read page by
/// page, at most `PAGES_PER_INSTANCE` pages.
#[tokio::test(start_paused = true)]
async fn the_budget_holds_and_the_rest_are_asked_next_run() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    let n = CALLS_PER_REGION as usize + 10;
    let ids: Vec<String> = (0..n).map(|k| format!("i-0b{k:015x}")).collect();
    for id in &ids {
        instance(&cloud, id);
    }
    // The first in id order is busy: three pages.
    let t = now_secs() - 3600;
    for _ in 0..120 {
        cloud.record_user_event(
            &ids[0],
            t,
            &record(&ids[0], Some("2.0"), "10.0.0.12", OLD_CLI),
        );
    }
    let g = guard(&cloud);
    let r = g.handle(&scheduled()).await.unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    let m = region.imdsv1_callers.as_ref().unwrap();
    assert_eq!(m.lookups, u64::from(CALLS_PER_REGION));
    assert_eq!(cloud.count("LookupEvents"), u64::from(CALLS_PER_REGION));
    assert_eq!(m.asked + m.not_asked, n as u64);
    assert_eq!(
        m.asked,
        u64::from(CALLS_PER_REGION) - 2,
        "the busy one cost three"
    );
    assert!(
        region
            .warnings
            .iter()
            .any(|w| w.contains("asked first next run")),
        "{:?}",
        region.warnings
    );

    // The next run asks the ones left first: every instance has been asked.
    let r = g.handle(&scheduled()).await.unwrap();
    let m = r.sweep.as_ref().unwrap().regions[0]
        .imdsv1_callers
        .clone()
        .unwrap();
    assert!(m.asked >= 12, "{m:?}");
    let remembered = cloud.memory_keys("callers#");
    assert_eq!(remembered.len(), n, "each asked once at least");
}

/// CloudTrail throttling (two calls a second per account and region) stops
/// the asking for this run, named; nothing fails.
#[tokio::test(start_paused = true)]
async fn throttling_stops_the_asking_and_says_so() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    instance(&cloud, ID);
    instance(&cloud, "i-0aaaaaaaaaaaaaaa2");
    cloud.fail("LookupEvents", 1, api_error("ThrottlingException"));
    let r = guard(&cloud).handle(&scheduled()).await.unwrap();
    let region = &r.sweep.as_ref().unwrap().regions[0];
    let m = region.imdsv1_callers.as_ref().unwrap();
    assert_eq!((m.asked, m.not_asked), (0, 2));
    assert!(
        m.errors[0].contains("ThrottlingException"),
        "{:?}",
        m.errors
    );
    assert!(
        region.errors.is_empty(),
        "not a failed sweep: {:?}",
        region.errors
    );
}

/// Off by default: no CloudTrail call, nothing in the report.
#[tokio::test(start_paused = true)]
async fn off_by_default() {
    let cloud = FakeCloud::new();
    instance(&cloud, ID);
    let r = cloud
        .test_guard()
        .with(&[("GUARD_MODE", "audit")])
        .build()
        .handle(&scheduled())
        .await
        .unwrap();
    assert!(r.sweep.unwrap().regions[0].imdsv1_callers.is_none());
    assert_eq!(cloud.count("LookupEvents"), 0);
}

/// The CloudTrail adapter as the SDK sees it (aws-smithy-mocks): a lookup
/// by user name (the instance id), from the start of the lookback, 50 a
/// page, its token carried to the next page and back.
#[tokio::test]
async fn the_adapter_looks_up_by_user_name_page_by_page() {
    use aws_sdk_cloudtrail::operation::lookup_events::LookupEventsOutput;
    use aws_sdk_cloudtrail::types::{Event, LookupAttributeKey};
    use aws_smithy_mocks::mock;
    use imds_guard::aws::TrailApi;

    let page = |n: usize, token: Option<&str>| {
        let events: Vec<Event> = (0..n)
            .map(|_| {
                Event::builder()
                    .cloud_trail_event(record(ID, Some("1.0"), "10.0.0.12", OLD_CLI))
                    .build()
            })
            .collect();
        LookupEventsOutput::builder()
            .set_events(Some(events))
            .set_next_token(token.map(str::to_string))
            .build()
    };
    let first = mock!(aws_sdk_cloudtrail::Client::lookup_events)
        .match_requests(|r| {
            let a = &r.lookup_attributes()[0];
            a.attribute_key() == &LookupAttributeKey::Username
                && a.attribute_value() == ID
                && r.start_time().map(|t| t.secs()) == Some(1_795_000_000)
                && r.max_results() == Some(50)
                && r.next_token().is_none()
        })
        .then_output(move || page(50, Some("t-2")));
    let second = mock!(aws_sdk_cloudtrail::Client::lookup_events)
        .match_requests(|r| r.next_token() == Some("t-2"))
        .then_output(move || page(3, None));
    let conf = aws_sdk_cloudtrail::config::Builder::from(&crate::common::mock_base())
        .interceptor(crate::common::interceptor(&[&first, &second]));
    let trail =
        imds_guard::aws::cloudtrail::Trail(aws_sdk_cloudtrail::Client::from_conf(conf.build()));
    let (records, next) = trail.user_events(ID, 1_795_000_000, None).await.unwrap();
    assert_eq!((records.len(), next.as_deref()), (50, Some("t-2")));
    let call = imds_guard::v1_callers::read(&records[0]).unwrap().unwrap();
    assert_eq!(call.instance, ID);
    let (records, next) = trail
        .user_events(ID, 1_795_000_000, Some("t-2".into()))
        .await
        .unwrap();
    assert_eq!((records.len(), next), (3, None));
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

/// With `SECURITY_HUB_FINDINGS`, a call from elsewhere is also a finding:
/// high, in the TTPs namespace, with no compliance status, one per
/// instance, role and address, updated (not doubled) by the next run that
/// sees it; software seen using IMDSv1 makes none of its own.
#[tokio::test(start_paused = true)]
async fn possible_theft_is_a_finding_and_the_next_run_updates_it() {
    use imds_guard::finding::theft;
    let cloud = FakeCloud::new();
    cloud.with_memory().with_security_hub();
    cloud.set_defaults(Some(Default::default()));
    instance(&cloud, ID);
    let t = now_secs() - 3600;
    cloud.record_user_event(ID, t, &record(ID, Some("1.0"), "10.0.0.12", OLD_CLI));
    cloud.record_user_event(
        ID,
        t,
        &record(ID, Some("1.0"), "45.142.212.18", "aws-cli/2.17.23"),
    );
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .filing()
        .with(&[
            ("GUARD_MODE", "audit"),
            ("LOOKUP_IMDSV1_CALLERS", "true"),
            (
                "OUTPUTS_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-outputs",
            ),
            ("OUTPUTS_SENDERS", "AROAGUARDROLE0000001"),
        ])
        .build();
    let thefts = |cloud: &FakeCloud| -> Vec<imds_guard::finding::Finding> {
        cloud
            .findings()
            .into_values()
            .filter(|f| f.generator_id == theft::GENERATOR_ID)
            .collect()
    };
    // The sweep function, as deployed, hands its findings to the outputs
    // function, which files them.
    cloud.as_event_function(true);
    let r = g.handle(&scheduled()).await.unwrap();
    assert_eq!(r.security_hub.as_ref().map(|s| s.queued), Some(2));
    cloud.as_event_function(false);
    let records: Vec<serde_json::Value> = cloud
        .take_handed_off()
        .iter()
        .enumerate()
        .map(|(i, body)| {
            serde_json::json!({"messageId": format!("m-{i}"), "eventSource": "aws:sqs",
                "body": body, "attributes": {"SenderId": "AROAGUARDROLE0000001:imds-guard-sweep"}})
        })
        .collect();
    let answer = g
        .handle_handoffs(&serde_json::json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
    let found = thefts(&cloud);
    assert_eq!(found.len(), 1, "{:?}", cloud.findings().keys());
    let f = &found[0];
    assert!(f.id.contains(ID) && f.id.ends_with("/app-role/45.142.212.18"));
    assert_eq!(f.status(), None);
    assert_eq!(f.types, [theft::FINDING_TYPE]);
    assert!(f.description.contains("45.142.212.18"), "{}", f.description);
    assert_eq!(f.product_fields["imds-guard/Calls"], "1");
    // The instance's own check is still one finding, as before.
    assert_eq!(
        cloud
            .findings()
            .values()
            .filter(|f| f.generator_id == imds_guard::finding::GENERATOR_ID)
            .count(),
        1
    );
    // Nothing kept of it in the memory: only checks are reconciled.
    assert!(cloud
        .records("finding#")
        .iter()
        .all(|r| !r.sk.contains("imdsv1-credentials")));

    // A later run that sees more calls from the same address updates it.
    cloud.record_user_event(
        ID,
        t + 60,
        &record(ID, Some("1.0"), "45.142.212.18", "aws-cli/2.17.23"),
    );
    tokio::time::advance(std::time::Duration::from_secs(3600)).await;
    // Filed directly this time (a binary with Security Hub's client).
    let r = g.handle(&scheduled()).await.unwrap();
    assert_eq!(r.security_hub.as_ref().map(|s| s.theft), Some(1));
    let found = thefts(&cloud);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].product_fields["imds-guard/Calls"], "2");
}

/// Real instance-role records captured by other projects (`events/real/lookup-events/`,
/// with provenance in `events/real/PROVENANCE.md`): `2.0` deliveries are counted and never named as
/// IMDSv1 software; a record from before `ec2RoleDelivery` existed is not
/// a call to attribute. (No real `1.0` record with a licence to copy was
/// found: the `1.0` shapes above follow AWS's documentation.)
#[tokio::test(start_paused = true)]
async fn real_instance_role_records_are_read_as_their_delivery_says() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/real/lookup-events");
    let provenance = std::fs::read_to_string(dir.parent().unwrap().join("PROVENANCE.md")).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut v2, mut older) = (0, 0);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            provenance.contains(&format!("`lookup-events/{name}`")),
            "{name} has no provenance"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Some(delivery) = v["userIdentity"]["sessionContext"]["ec2RoleDelivery"].as_str() else {
            // From before CloudTrail recorded the delivery: nothing to read.
            assert_eq!(imds_guard::v1_callers::read(&text), Ok(None), "{name}");
            older += 1;
            continue;
        };
        assert_eq!(delivery, "2.0", "{name}: a real 1.0 record is new: test it");
        let id = v["userIdentity"]["arn"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let call = imds_guard::v1_callers::read(&text).unwrap().expect(&name);
        assert_eq!((call.instance.as_str(), call.v1), (id.as_str(), false));
        // Through the sweep: counted, never named as IMDSv1 software.
        let cloud = FakeCloud::new();
        cloud.with_memory();
        cloud.set_defaults(Some(Default::default()));
        instance(&cloud, &id);
        cloud.record_user_event(&id, now_secs() - 3600, &text);
        let r = guard(&cloud).handle(&scheduled()).await.unwrap();
        let m = r.sweep.unwrap().regions[0].imdsv1_callers.clone().unwrap();
        assert_eq!(m.asked, 1, "{name}");
        assert!(m.instances.is_empty(), "{name}: {:?}", m.instances);
        v2 += 1;
    }
    assert_eq!((v2, older), (3, 1));
}

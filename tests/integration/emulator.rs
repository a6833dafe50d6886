//! End to end against moto's server: real SDK calls through the product's own
//! adapters and regional clients, asserting on the emulator's state. Started
//! by `make test` (tools/with-moto.sh), which sets MOTO_ENDPOINT and points
//! AWS_ENDPOINT_URL at it.

use std::io::{Read, Write};

use aws_config::Region;
use aws_sdk_ec2::types::{
    HttpTokensState, InstanceMetadataOptionsRequest, ResourceType, Tag, TagSpecification,
};
use imds_guard::aws::RegionalClients;
use imds_guard::guard::Guard;
use imds_guard::report::Outcome;
use serde_json::Value;

use crate::common::{config, launch_event, moto_endpoint};

const AMI: &str = "ami-0c02fb55956c7d316";
const OTHER_AMI: &str = "ami-0123456789abcdef0";

pub(crate) async fn ec2(region: &str) -> aws_sdk_ec2::Client {
    moto_endpoint();
    let base = crate::common::emulator_sdk().await;
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&base)
            .region(Region::new(region.to_string()))
            .build(),
    )
}

pub(crate) async fn topic(name: &str) -> String {
    let base = crate::common::emulator_sdk().await;
    topic_with(&base, name).await
}

/// As `topic`, as whoever `base`'s credentials name.
pub(crate) async fn topic_with(base: &aws_config::SdkConfig, name: &str) -> String {
    let sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(base)
            .region(Region::new("us-east-1"))
            .build(),
    );
    sns.create_topic()
        .name(name)
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string()
}

/// A table for the guard's memory in the emulator (as the stack creates
/// it: `pk`/`sk` keys, on demand), named `name`; returns the name.
pub(crate) async fn memory_table(name: &str) -> String {
    moto_endpoint();
    let base = crate::common::emulator_sdk().await;
    memory_table_with(&base, name).await
}

/// As `memory_table`, as whoever `base`'s credentials name.
pub(crate) async fn memory_table_with(base: &aws_config::SdkConfig, name: &str) -> String {
    let db = aws_sdk_dynamodb::Client::new(base);
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let created = db
        .create_table()
        .table_name(name)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    if let Err(e) = created {
        let text = format!("{e:?}");
        assert!(text.contains("ResourceInUse"), "{text}");
    }
    name.to_string()
}

pub(crate) struct Launch<'a> {
    pub(crate) count: i32,
    pub(crate) tokens: &'a str,
    pub(crate) hop: i32,
    pub(crate) image: &'a str,
    pub(crate) tags: &'a [(&'a str, &'a str)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            count: 1,
            tokens: "optional",
            hop: 1,
            image: AMI,
            tags: &[],
        }
    }
}

pub(crate) async fn launch(ec2: &aws_sdk_ec2::Client, l: Launch<'_>) -> Vec<String> {
    let mut req = ec2
        .run_instances()
        .image_id(l.image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(l.count)
        .max_count(l.count)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::from(l.tokens))
                .http_put_response_hop_limit(l.hop)
                .build(),
        );
    if !l.tags.is_empty() {
        req = req.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(
                    l.tags
                        .iter()
                        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                        .collect(),
                ))
                .build(),
        );
    }
    let out = req.send().await.expect("emulator launches");
    out.instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect()
}

#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) tokens: String,
    endpoint: String,
    pub(crate) hop: i32,
    pub(crate) status_tag: Option<String>,
}

pub(crate) async fn seen(ec2: &aws_sdk_ec2::Client, id: &str) -> Seen {
    let out = ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    seen_in(&out.reservations()[0].instances()[0])
}

/// Many instances in one call: the emulator scans every instance it holds
/// per describe, so one call instead of hundreds keeps the tests fast.
pub(crate) async fn seen_all(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
) -> std::collections::HashMap<String, Seen> {
    let out = ec2
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .unwrap();
    let all: std::collections::HashMap<String, Seen> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| (i.instance_id().unwrap().to_string(), seen_in(i)))
        .collect();
    assert_eq!(all.len(), ids.len(), "every instance described");
    all
}

fn seen_in(i: &aws_sdk_ec2::types::Instance) -> Seen {
    let mo = i.metadata_options().unwrap();
    Seen {
        tokens: mo.http_tokens().unwrap().as_str().to_string(),
        endpoint: mo
            .http_endpoint()
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        hop: mo.http_put_response_hop_limit().unwrap(),
        status_tag: i
            .tags()
            .iter()
            .find(|t| t.key() == Some("imds-guard:status"))
            .and_then(|t| t.value())
            .map(str::to_string),
    }
}

/// Messages moto recorded as published to `topic_arn`: (subject, body JSON, attributes).
pub(crate) fn sent(topic_arn: &str) -> Vec<(String, Value, Value)> {
    let endpoint = moto_endpoint();
    let host = endpoint.trim_start_matches("http://");
    // The emulator's dump can fail while other tests change its state at
    // the same moment: asked again, it answers.
    let mut data = Value::Null;
    for attempt in 0..10 {
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /moto-api/data.json HTTP/1.0\r\nHost: {host}\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        match serde_json::from_str(body) {
            Ok(v) => {
                data = v;
                break;
            }
            Err(e) if attempt == 9 => {
                panic!("the emulator's state: {e}: {}", &raw[..raw.len().min(300)])
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
    data["sns"]["Topic"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["arn"] == topic_arn)
        .flat_map(|t| t["sent_notifications"].as_array().unwrap().clone())
        .map(|n| {
            (
                n[2].as_str().unwrap().to_string(),
                serde_json::from_str(n[1].as_str().unwrap()).unwrap(),
                n[3].clone(),
            )
        })
        .collect()
}

/// The launch event CloudTrail would write for `ids`: the fixture's envelope
/// and principal, each item carrying the instance's real effective options,
/// image and tags as the emulator reports them.
pub(crate) async fn event_for(
    ec2: &aws_sdk_ec2::Client,
    fixture: &str,
    ids: &[String],
    region: Option<&str>,
) -> Value {
    let mut ev = launch_event(fixture, ids, region);
    let items = ev["detail"]["responseElements"]["instancesSet"]["items"]
        .as_array_mut()
        .unwrap();
    for item in items.iter_mut() {
        let id = item["instanceId"].as_str().unwrap().to_string();
        let out = ec2
            .describe_instances()
            .instance_ids(&id)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        let mo = i.metadata_options().unwrap();
        item["imageId"] = i.image_id().unwrap().into();
        item["metadataOptions"]["httpTokens"] = mo.http_tokens().unwrap().as_str().into();
        item["metadataOptions"]["httpPutResponseHopLimit"] =
            mo.http_put_response_hop_limit().unwrap().into();
        item["metadataOptions"]["httpEndpoint"] = mo.http_endpoint().unwrap().as_str().into();
        let tags: Vec<Value> = i
            .tags()
            .iter()
            .map(|t| serde_json::json!({"key": t.key(), "value": t.value()}))
            .collect();
        if tags.is_empty() {
            item.as_object_mut().unwrap().remove("tagSet");
        } else {
            item["tagSet"] = serde_json::json!({ "items": tags });
        }
    }
    ev
}

async fn guard(pairs: &[(&str, &str)]) -> Guard<RegionalClients> {
    Guard::new(
        config(pairs),
        RegionalClients::new(crate::common::emulator_sdk().await),
    )
}

#[tokio::test]
async fn a_launch_costs_k_plus_3_calls_and_a_compliant_one_none() {
    // Counted where the SDK transmits (the product's own counter), on real
    // requests to the emulator: n = 10 instances, k = 4 at optional.
    let ec2 = ec2("us-west-1").await;
    let mut ids = launch(
        &ec2,
        Launch {
            count: 4,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let compliant = launch(
        &ec2,
        Launch {
            count: 6,
            tokens: "required",
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    ids.extend(compliant.iter().cloned());
    let topic = topic("calls").await;
    let g = guard(&[("NOTIFY_TOPIC_ARN", &topic)]).await;
    let region = Some("us-west-1");

    let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, region).await;
    let report = g.handle(&event).await.unwrap();
    assert_eq!(report.counts().get(&Outcome::Remediated), Some(&4));
    let expected: std::collections::BTreeMap<String, u64> = [
        ("CreateTags", 1),
        ("DescribeInstances", 1),
        ("ModifyInstanceMetadataOptions", 4),
        ("Publish", 1),
    ]
    .into_iter()
    .map(|(op, n)| (op.to_string(), n))
    .collect();
    assert_eq!(
        report.aws_calls, expected,
        "describe 1 + modify k + tag 1 + publish 1"
    );

    let event = event_for(&ec2, "run-instances-cli-multi.json", &compliant, region).await;
    let report = g.handle(&event).await.unwrap();
    assert_eq!(report.counts().get(&Outcome::Compliant), Some(&6));
    assert!(report.aws_calls.is_empty(), "{:?}", report.aws_calls);
}

#[tokio::test]
async fn enforce_fixes_every_optional_instance_of_a_launch_and_notifies_once() {
    let ec2 = ec2("us-east-1").await;
    let mut ids = launch(
        &ec2,
        Launch {
            hop: 1,
            ..Default::default()
        },
    )
    .await;
    ids.extend(
        launch(
            &ec2,
            Launch {
                hop: 3,
                ..Default::default()
            },
        )
        .await,
    );
    ids.extend(
        launch(
            &ec2,
            Launch {
                tokens: "required",
                hop: 2,
                ..Default::default()
            },
        )
        .await,
    );
    let topic = topic("enforce-multi").await;
    let g = guard(&[("NOTIFY_TOPIC_ARN", &topic)]).await;
    let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, None).await;

    let report = g.handle(&event).await.unwrap();

    let outcomes: Vec<_> = report.instances.iter().map(|i| i.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Remediated, Outcome::Remediated, Outcome::Compliant]
    );
    let (a, b, c) = (
        seen(&ec2, &ids[0]).await,
        seen(&ec2, &ids[1]).await,
        seen(&ec2, &ids[2]).await,
    );
    assert_eq!(
        (a.tokens.as_str(), a.hop, a.endpoint.as_str()),
        ("required", 1, "enabled")
    );
    assert_eq!(
        (b.tokens.as_str(), b.hop),
        ("required", 3),
        "hop limit kept"
    );
    assert_eq!(a.status_tag.as_deref(), Some("remediated"));
    assert_eq!(b.status_tag.as_deref(), Some("remediated"));
    assert_eq!(c.status_tag, None, "compliant instance untouched");

    let msgs = sent(&topic);
    assert_eq!(msgs.len(), 1, "one message per event");
    let (subject, body, attrs) = &msgs[0];
    assert!(
        subject.starts_with("imds-guard enforce: 2 remediated, 1 compliant"),
        "{subject}"
    );
    assert_eq!(body["instances"][0]["instance_id"], ids[0].as_str());
    assert_eq!(body["instances"][0]["before"]["http_tokens"], "optional");
    assert_eq!(
        body["principal"],
        "arn:aws:sts::111122223333:assumed-role/DevOps/bob"
    );
    assert_eq!(attrs["outcome"]["Value"], "[\"compliant\",\"remediated\"]");

    // Duplicate delivery: nothing changes, nobody is told twice.
    let again = g.handle(&event).await.unwrap();
    assert!(again
        .instances
        .iter()
        .all(|i| i.outcome == Outcome::Compliant));
    assert_eq!(sent(&topic).len(), 1);
}

#[tokio::test]
async fn notify_tags_and_tells_but_leaves_tokens_alone() {
    let ec2 = ec2("us-east-1").await;
    let ids = launch(&ec2, Launch::default()).await;
    let topic = topic("notify-mode").await;
    let g = guard(&[("GUARD_MODE", "notify"), ("NOTIFY_TOPIC_ARN", &topic)]).await;
    let report = g
        .handle(&event_for(&ec2, "run-instances-console.json", &ids, None).await)
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Flagged);
    let s = seen(&ec2, &ids[0]).await;
    assert_eq!(s.tokens, "optional");
    assert_eq!(s.status_tag.as_deref(), Some("noncompliant"));
    let msgs = sent(&topic);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1["instances"][0]["outcome"], "flagged");
}

#[tokio::test]
async fn audit_writes_nothing_and_reports_what_enforce_would_do() {
    let ec2 = ec2("us-east-1").await;
    let ids = launch(
        &ec2,
        Launch {
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let topic = topic("audit-mode").await;
    let g = guard(&[("GUARD_MODE", "audit"), ("NOTIFY_TOPIC_ARN", &topic)]).await;
    g.handle(&event_for(&ec2, "run-instances-console.json", &ids, None).await)
        .await
        .unwrap();
    let s = seen(&ec2, &ids[0]).await;
    assert_eq!((s.tokens.as_str(), s.status_tag), ("optional", None));
    let msgs = sent(&topic);
    assert_eq!(msgs.len(), 1);
    let would = msgs[0].1["instances"][0]["would"].as_str().unwrap();
    assert_eq!(would, "set HttpTokens=required");
}

#[tokio::test]
async fn each_exemption_kind_leaves_its_instance_alone() {
    let ec2 = ec2("us-east-1").await;
    let by_tag = launch(
        &ec2,
        Launch {
            tags: &[("legacy-imds", "true")],
            ..Default::default()
        },
    )
    .await;
    let by_image = launch(
        &ec2,
        Launch {
            image: OTHER_AMI,
            ..Default::default()
        },
    )
    .await;
    let plain = launch(&ec2, Launch::default()).await;
    let ids = [by_tag[0].clone(), by_image[0].clone(), plain[0].clone()];
    let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, None).await;
    let topic = topic("exemptions").await;
    let g = guard(&[
        ("NOTIFY_TOPIC_ARN", &topic),
        ("EXEMPT_TAG_KEY", "legacy-imds"),
        ("EXEMPT_IMAGE_IDS", OTHER_AMI),
    ])
    .await;
    let report = g.handle(&event).await.unwrap();
    let outcomes: Vec<_> = report.instances.iter().map(|i| i.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Exempt, Outcome::Exempt, Outcome::Remediated]
    );
    assert_eq!(seen(&ec2, &ids[0]).await.tokens, "optional");
    assert_eq!(seen(&ec2, &ids[1]).await.tokens, "optional");
    assert_eq!(seen(&ec2, &ids[2]).await.tokens, "required");
    let body = &sent(&topic)[0].1;
    assert_eq!(body["instances"][0]["exemption"], "tag legacy-imds=true");
    assert_eq!(
        body["instances"][1]["exemption"],
        format!("image {OTHER_AMI} is exempt")
    );

    // The principal kind: the same launch by an exempt role changes nothing,
    // and is recorded in the guard's memory (not on the instance).
    let more = launch(&ec2, Launch::default()).await;
    let table = memory_table("imds-guard-memory-exemption-kinds").await;
    let g = Guard::new(
        config(&[
            ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/DevOps"),
            ("MEMORY_TABLE", &table),
        ]),
        RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table.clone())),
    );
    let r = g
        .handle(&event_for(&ec2, "run-instances-cli-multi.json", &more, None).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Exempt);
    let s = seen(&ec2, &more[0]).await;
    assert_eq!(s.tokens, "optional");
    assert_eq!(s.status_tag, None, "nothing written to the instance");
    assert_eq!(
        recorded_exemption(&table, "111122223333#us-east-1", &more[0])
            .await
            .as_deref(),
        Some("arn:aws:iam::*:role/DevOps"),
        "recorded for the sweep"
    );
}

/// The glob the guard's memory recorded for `instance`'s launch, if any.
pub(crate) async fn recorded_exemption(
    table: &str,
    partition: &str,
    instance: &str,
) -> Option<String> {
    let db = aws_sdk_dynamodb::Client::new(&crate::common::emulator_sdk().await);
    let out = db
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(partition.into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("exempt#{instance}")),
        )
        .send()
        .await
        .unwrap();
    out.item()?.get("glob")?.as_s().ok().cloned()
}

#[tokio::test]
async fn acts_in_the_region_of_the_event() {
    let west = ec2("eu-west-1").await;
    let ids = launch(&west, Launch::default()).await;
    // The same launch stamped with another region: nothing of it is there.
    let elsewhere = event_for(&west, "run-instances-console.json", &ids, Some("us-west-2")).await;
    let g = guard(&[]).await;
    let report = g
        .handle(&event_for(&west, "run-instances-console.json", &ids, Some("eu-west-1")).await)
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(seen(&west, &ids[0]).await.tokens, "required");
    let g = guard(&[("RETRY_BUDGET_SECONDS", "1")]).await;
    let err = g.handle(&elsewhere).await.unwrap_err();
    assert!(err.to_string().contains(&ids[0]), "{err}");
}

#[tokio::test]
async fn a_revert_to_optional_is_undone() {
    let ec2 = ec2("eu-west-1").await;
    let ids = launch(
        &ec2,
        Launch {
            tokens: "required",
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    // Someone turns IMDSv1 back on.
    ec2.modify_instance_metadata_options()
        .instance_id(&ids[0])
        .http_tokens(HttpTokensState::Optional)
        .http_put_response_hop_limit(2)
        .http_endpoint(aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(seen(&ec2, &ids[0]).await.tokens, "optional");
    let mut event = crate::common::fixture("modify-metadata-options-revert.json");
    event["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"]["InstanceId"] =
        ids[0].clone().into();
    let report = guard(&[]).await.handle(&event).await.unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    let s = seen(&ec2, &ids[0]).await;
    assert_eq!((s.tokens.as_str(), s.hop), ("required", 2));
}

#[tokio::test]
async fn with_both_triggers_a_launch_is_told_once_by_the_memory_in_dynamodb() {
    // The memory's conditional writes on the emulator's DynamoDB: the
    // state-change notification tells and tags, the CloudTrail launch that
    // follows is quiet, and so is a redelivery of either.
    let table = memory_table("imds-guard-memory-both-triggers").await;
    let topic = topic("both-triggers").await;
    let ec2 = ec2("us-east-1").await;
    let ids = launch(&ec2, Launch::default()).await;
    let g = Guard::new(
        config(&[
            ("GUARD_MODE", "notify"),
            ("TRIGGERS", "both"),
            ("NOTIFY_TOPIC_ARN", &topic),
            ("MEMORY_TABLE", &table),
        ]),
        RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table.clone())),
    );
    let mut pending = crate::common::fixture("state-change-pending.json");
    pending["detail"]["instance-id"] = ids[0].clone().into();
    let launched = event_for(&ec2, "run-instances-console.json", &ids, None).await;

    let first = g.handle(&pending).await.unwrap();
    assert_eq!(first.instances[0].outcome, Outcome::Flagged);
    assert!(
        first.notification.starts_with("sent "),
        "{}",
        first.notification
    );
    for again in [&launched, &pending, &launched] {
        let r = g.handle(again).await.unwrap();
        assert_eq!(r.notification, "not needed", "{r:?}");
    }
    assert_eq!(sent(&topic).len(), 1, "told once");
    assert_eq!(
        seen(&ec2, &ids[0]).await.status_tag.as_deref(),
        Some("noncompliant")
    );
}

/// SNS refuses the message (its topic does not exist yet): the emulator's
/// SQS queue keeps it for a person and its DynamoDB for the event's retry;
/// once the topic exists, the retry publishes it, and a further redelivery
/// does not again.
#[tokio::test]
async fn a_message_sns_refused_lands_in_the_queue_and_a_retry_sends_it_once() {
    let table = memory_table("imds-guard-memory-kept").await;
    let base = crate::common::emulator_sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&base);
    let queue = sqs
        .create_queue()
        .queue_name("imds-guard-failed-events-kept")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let topic = format!(
        "arn:aws:sns:us-east-1:{}:kept-later",
        crate::sweep_emulator::EMULATOR_ACCOUNT
    );
    let ec2 = ec2("us-east-1").await;
    let ids = launch(&ec2, Launch::default()).await;
    let cfg = config(&[
        ("NOTIFY_TOPIC_ARN", &topic),
        ("MEMORY_TABLE", &table),
        ("FAILED_EVENTS_QUEUE_URL", &queue),
    ]);
    let g = Guard::new(cfg.clone(), RegionalClients::for_config(base.clone(), &cfg));
    let event = event_for(&ec2, "run-instances-console.json", &ids, None).await;

    let Err(imds_guard::guard::GuardError::Unhandled { report, .. }) = g.handle(&event).await
    else {
        panic!("a message that could not be published fails the invocation");
    };
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert!(
        report
            .notification
            .contains("kept for the event's retry and in the failed-events queue"),
        "{}",
        report.notification
    );
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .message_attribute_names("All")
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    assert_eq!(messages.len(), 1);
    let kind = messages[0].message_attributes().unwrap()["kind"].string_value();
    assert_eq!(kind, Some("undelivered-notification"));
    let kept: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(kept["topic_arn"], topic.as_str());
    assert_eq!(
        kept["message"]["instances"][0]["instance_id"],
        ids[0].as_str()
    );

    // The topic exists now; the event's retry finds the instance fixed and
    // publishes what the first delivery could not.
    assert_eq!(crate::emulator::topic("kept-later").await, topic);
    let retried = g.handle(&event).await.unwrap();
    assert_eq!(retried.instances[0].outcome, Outcome::Compliant);
    let told = sent(&topic);
    assert_eq!(told.len(), 1, "{}", retried.notification);
    assert_eq!(told[0].1["counts"]["remediated"], 1);
    g.handle(&event).await.unwrap();
    assert_eq!(sent(&topic).len(), 1, "once");
}

/// The self-check against the emulator, which applies a dry-run modify: its
/// first probe (the instance's own HttpTokens, a no-op) comes back a
/// success, so it stops there, says "probe unsafe" and fails the run; no
/// loosening probe is ever sent, and the instances are as they were.
#[tokio::test]
async fn the_self_check_stops_at_its_no_op_probe_on_an_emulator_that_applies_dry_runs() {
    let region = "ap-south-2";
    let ec2 = ec2(region).await;
    let optional = launch(&ec2, Launch::default()).await;
    let required = launch(
        &ec2,
        Launch {
            tokens: "required",
            ..Default::default()
        },
    )
    .await;
    let g = guard(&[("SWEEP_REGIONS", region)]).await;
    let r = g
        .handle_payload(
            &serde_json::json!({"imds_guard_self_check": "invoke", "region": region}),
            None,
        )
        .await;
    let Err(imds_guard::guard::GuardError::Incomplete { summary }) = r else {
        panic!("the emulator applies dry runs: the self-check must stop, unsafe: {r:?}")
    };
    assert!(summary.contains("probe unsafe"), "{summary}");
    // Had a loosening probe gone out, the instance at required would now
    // be at optional: the emulator applies what it is sent.
    assert_eq!(seen(&ec2, &optional[0]).await.tokens, "optional");
    let s = seen(&ec2, &required[0]).await;
    assert_eq!(
        (s.tokens.as_str(), s.hop, s.endpoint.as_str()),
        ("required", 1, "enabled")
    );
}

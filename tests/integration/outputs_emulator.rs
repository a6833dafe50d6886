//! The outputs end to end against moto's server: Security Hub findings that
//! follow an instance from FAILED to PASSED and to ARCHIVED (read back with
//! `GetFindings`), the news on a custom EventBridge bus routed by a rule of
//! the user's to a queue, and the Chatbot card beside the usual body.

use aws_config::Region;
use aws_sdk_ec2::types::HttpTokensState;
use imds_guard::aws::RegionalClients;
use imds_guard::guard::Guard;
use imds_guard::report::Outcome;
use serde_json::Value;

use crate::common::config;
use crate::common::scheduled_in;
use crate::emulator::{ec2, event_for, launch, memory_table, sent, topic, Launch};

/// The guard's findings the emulator holds for `ids` (its `GetFindings`
/// applies no filter: they are picked here), as (instance, status, state).
/// Read on a thread with a large stack: a debug build of the SDK's
/// deserializer for a whole ASFF finding needs more than a test thread's
/// 2 MB (the guard itself never reads findings).
async fn findings_of(region: &str, ids: &[String]) -> Vec<(String, String, String)> {
    let base = crate::common::emulator_sdk().await;
    let (region, ids) = (region.to_string(), ids.to_vec());
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(read_findings(base, region, ids))
        })
        .unwrap()
        .join()
        .unwrap()
}

async fn read_findings(
    base: aws_config::SdkConfig,
    region: String,
    ids: Vec<String>,
) -> Vec<(String, String, String)> {
    let sh = aws_sdk_securityhub::Client::from_conf(
        aws_sdk_securityhub::config::Builder::from(&base)
            .region(Region::new(region))
            .build(),
    );
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = sh
            .get_findings()
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        for f in page.findings() {
            let Some(id) = f.id().and_then(imds_guard::finding::instance_of) else {
                continue;
            };
            if ids.iter().any(|i| i == id) {
                out.push((
                    id.to_string(),
                    f.compliance()
                        .and_then(|c| c.status())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    f.record_state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                ));
            }
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_finding_per_noncompliant_instance_passes_when_fixed_and_archives_when_terminated() {
    // Each test launches in a region of its own: other tests sweep theirs.
    let region = "eu-central-1";
    let ec2 = ec2(region).await;
    let ids = launch(
        &ec2,
        Launch {
            count: 2,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let table = memory_table("findings-memory").await;
    let topic = topic("findings").await;
    let g = Guard::new(
        config(&[
            ("NOTIFY_TOPIC_ARN", &topic),
            ("GUARD_MODE", "notify"),
            ("SECURITY_HUB_FINDINGS", "true"),
            ("MEMORY_TABLE", &table),
            ("SWEEP_REGIONS", region),
        ]),
        RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table.clone())),
    );
    let mut event = event_for(&ec2, "run-instances-cli-multi.json", &ids, Some(region)).await;
    // The emulator's own account, as CloudTrail would name it: the event
    // path and the sweep then share the memory's partition.
    let sts = aws_sdk_sts::Client::new(&crate::common::emulator_sdk().await);
    let account = sts.get_caller_identity().send().await.unwrap();
    let account = account.account().unwrap();
    event["account"] = account.into();
    event["detail"]["recipientAccountId"] = account.into();
    let report = g.handle(&event).await.unwrap();
    assert_eq!(report.count(Outcome::Flagged), 2);
    assert_eq!(report.aws_calls.get("BatchImportFindings"), Some(&1));
    let mut expected = vec![
        (ids[0].clone(), "FAILED".to_string(), "ACTIVE".to_string()),
        (ids[1].clone(), "FAILED".to_string(), "ACTIVE".to_string()),
    ];
    expected.sort();
    assert_eq!(findings_of(region, &ids).await, expected);

    // A sweep with nothing changed files nothing.
    let swept = g.handle(&scheduled_in(region)).await.unwrap();
    let sh = swept.security_hub.clone().unwrap();
    assert_eq!(sh.unchanged, 2, "{sh:?}");
    assert_eq!(swept.aws_calls.get("BatchImportFindings"), None);

    // One fixed by someone, one terminated.
    // (All three named: the emulator forgets what a change leaves out.)
    ec2.modify_instance_metadata_options()
        .instance_id(&ids[0])
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(2)
        .send()
        .await
        .unwrap();
    ec2.terminate_instances()
        .instance_ids(&ids[1])
        .send()
        .await
        .unwrap();
    let swept = g.handle(&scheduled_in(region)).await.unwrap();
    let sh = swept.security_hub.clone().unwrap();
    assert_eq!(sh.archived, 1, "{sh:?}");
    let mut expected = vec![
        // Passed and archived: Security Hub resolves only its own
        // controls' findings, so a passed custom one leaves the default
        // view by its RecordState.
        (ids[0].clone(), "PASSED".to_string(), "ARCHIVED".to_string()),
        (ids[1].clone(), "FAILED".to_string(), "ARCHIVED".to_string()),
    ];
    expected.sort();
    assert_eq!(
        findings_of(region, &ids).await,
        expected,
        "one finding per instance, updated in place"
    );
}

#[tokio::test]
async fn the_news_reaches_a_rule_on_the_users_bus() {
    let region = "ap-northeast-2";
    let base = crate::common::emulator_sdk().await;
    // The bus is in the function's own region, whatever the instance's.
    let eb = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&base)
            .region(Region::new("us-east-1"))
            .build(),
    );
    eb.create_event_bus()
        .name("security-news")
        .send()
        .await
        .unwrap();
    let (sqs, url, arn) = crate::common::emulator_queue("security-news-pager").await;
    // The example rule of docs/outputs.md: remediations only.
    eb.put_rule()
        .name("imds-guard-remediated")
        .event_bus_name("security-news")
        .event_pattern(
            serde_json::json!({
                "source": ["imds-guard"],
                "detail-type": ["Instance Decided"],
                "detail": {"outcome": ["remediated"]}
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule("imds-guard-remediated")
        .event_bus_name("security-news")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let ec2 = ec2(region).await;
    let ids = launch(
        &ec2,
        Launch {
            count: 1,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let g = Guard::new(
        config(&[("EVENT_BUS_NAME", "security-news")]),
        RegionalClients::new(base.clone()).with_bus(Some("security-news".into())),
    );
    let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, Some(region)).await;
    let report = g.handle(&event).await.unwrap();
    assert_eq!(report.count(Outcome::Remediated), 1);
    assert_eq!(report.routed.as_ref().unwrap().events, 1);
    assert_eq!(report.aws_calls.get("PutEvents"), Some(&1));

    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    assert_eq!(messages.len(), 1);
    let e: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(e["source"], "imds-guard");
    assert_eq!(e["detail-type"], "Instance Decided");
    assert_eq!(e["detail"]["instance"]["instance_id"], ids[0].as_str());
    assert_eq!(e["detail"]["region"], region);
}

#[tokio::test]
async fn chat_subscribers_get_a_card_and_a_queue_the_usual_body() {
    let region = "ap-northeast-3";
    let base = crate::common::emulator_sdk().await;
    let topic = topic("chat-news").await;
    let sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(&base)
            .region(Region::new("us-east-1"))
            .build(),
    );
    let (sqs, url, arn) = crate::common::emulator_queue("chat-news-mail").await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();

    let ec2 = ec2(region).await;
    let ids = launch(
        &ec2,
        Launch {
            count: 1,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let g = Guard::new(
        config(&[("NOTIFY_TOPIC_ARN", &topic), ("CHAT_NOTIFICATIONS", "true")]),
        RegionalClients::new(base.clone()),
    );
    let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, Some(region)).await;
    let report = g.handle(&event).await.unwrap();
    assert!(
        report.notification.starts_with("sent "),
        "{}",
        report.notification
    );

    // The queue (as e-mail would) gets the body as ever.
    let got = sqs.receive_message().queue_url(&url).send().await.unwrap();
    let body: Value = serde_json::from_str(got.messages()[0].body().unwrap()).unwrap();
    assert!(
        body["summary"].as_str().unwrap().contains("remediated"),
        "{body}"
    );
    assert_eq!(body["instances"][0]["instance_id"], ids[0].as_str());

    // What SNS was given: a body per protocol, the card for https (Chatbot).
    let (_, message, _) = sent(&topic).pop().unwrap();
    let card: Value = serde_json::from_str(message["https"].as_str().unwrap()).unwrap();
    assert_eq!(card["version"], "1.0");
    assert_eq!(card["source"], "custom");
    assert!(card["content"]["description"]
        .as_str()
        .unwrap()
        .contains(&ids[0]));
    assert_eq!(
        message["default"].as_str().unwrap(),
        got.messages()[0].body().unwrap()
    );
}

/// The sender id the emulator gives every message.
const EMULATOR_SENDER: &str = "AIDAIT2UOQQY3AUEKVGXU";

/// A received message as Lambda's SQS event source hands it over, with the
/// sender SQS recorded.
fn as_lambda_delivers(m: &aws_sdk_sqs::types::Message) -> serde_json::Value {
    let sender = m
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SenderId))
        .expect("SQS names the sender");
    assert_eq!(sender, EMULATOR_SENDER);
    serde_json::json!({"Records": [{
        "messageId": m.message_id().unwrap(),
        "eventSource": "aws:sqs",
        "body": m.body().unwrap(),
        "attributes": {"SenderId": sender},
    }]})
}

#[tokio::test]
async fn the_event_functions_and_the_sweeps_findings_reach_security_hub_through_the_outputs_queue()
{
    use imds_guard::aws::clients::NoOutputs;
    let region = "me-south-1";
    let base = crate::common::emulator_sdk().await;
    let (sqs, url, _) = crate::common::emulator_queue("imds-guard-outputs").await;
    let table = memory_table("outputs-memory").await;
    let pairs = [
        ("GUARD_MODE", "notify"),
        ("SECURITY_HUB_FINDINGS", "true"),
        ("MEMORY_TABLE", table.as_str()),
        ("OUTPUTS_QUEUE_URL", url.as_str()),
        // The emulator names every sender by this one id (as SQS names a
        // role's session by its role's unique id, which the stack passes).
        ("OUTPUTS_SENDERS", EMULATOR_SENDER),
    ];
    let cfg = config(&pairs);

    // The event function's clients: no Security Hub client at all.
    let event_function = Guard::new(
        cfg.clone(),
        RegionalClients::<NoOutputs>::for_config_with(base.clone(), &cfg),
    );
    let ec2 = ec2(region).await;
    let ids = launch(
        &ec2,
        Launch {
            count: 1,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let mut event = event_for(&ec2, "run-instances-cli-multi.json", &ids, Some(region)).await;
    // The emulator's own account, which the sweep below names (as a real
    // launch names the function's account).
    event["account"] = "123456789012".into();
    event["detail"]["recipientAccountId"] = "123456789012".into();
    let report = event_function.handle(&event).await.unwrap();
    assert_eq!(report.security_hub.as_ref().unwrap().queued, 1);
    assert_eq!(report.aws_calls.get("SendMessage"), Some(&1));
    assert_eq!(report.aws_calls.get("BatchImportFindings"), None);
    assert!(findings_of(region, &ids).await.is_empty());

    // The outputs function, fed the queue's messages as Lambda's SQS event
    // source would.
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::SenderId)
        .send()
        .await
        .unwrap();
    assert_eq!(got.messages().len(), 1);
    let m = &got.messages()[0];
    assert_eq!(
        m.message_attributes().unwrap()["kind"].string_value(),
        Some(imds_guard::handoff::KIND)
    );
    let batch = as_lambda_delivers(m);
    let outputs_function = Guard::new(cfg.clone(), RegionalClients::for_config(base.clone(), &cfg));
    let answer = outputs_function.handle_handoffs(&batch).await.unwrap();
    assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(
        findings_of(region, &ids).await,
        [(ids[0].clone(), "FAILED".to_string(), "ACTIVE".to_string())]
    );

    // Someone requires tokens by hand; the sweep (whose binary carries no
    // Security Hub client either) reads what the outputs function
    // remembered filing, and hands off the finding's move to PASSED.
    ec2.modify_instance_metadata_options()
        .instance_id(&ids[0])
        .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
        .http_put_response_hop_limit(2)
        .http_endpoint(aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
        .send()
        .await
        .unwrap();
    let swept = event_function.handle(&scheduled_in(region)).await.unwrap();
    let sh = swept.security_hub.clone().unwrap();
    assert_eq!(sh.queued, 1, "{sh:?}");
    assert!(sh.filed.is_empty() && sh.errors.is_empty(), "{sh:?}");
    assert_eq!(swept.aws_calls.get("BatchImportFindings"), None);
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::SenderId)
        .send()
        .await
        .unwrap();
    assert_eq!(got.messages().len(), 1);
    let m = &got.messages()[0];
    let batch = as_lambda_delivers(m);
    let answer = outputs_function.handle_handoffs(&batch).await.unwrap();
    assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(
        findings_of(region, &ids).await,
        [(ids[0].clone(), "PASSED".to_string(), "ARCHIVED".to_string())]
    );
    // And the next sweep finds it as filed: nothing handed off again.
    let again = event_function.handle(&scheduled_in(region)).await.unwrap();
    assert_eq!(
        again.aws_calls.get("SendMessage"),
        None,
        "{:?}",
        again.security_hub
    );
}

//! The controls of a bad day against the emulator: a break-glass grant
//! written by the real command line to the memory in DynamoDB, honoured by
//! the event path (a revert under it reported, not undone) until revoked;
//! and the circuit breaker holding a sweep at its ceiling. Each test in a
//! region of its own (other tests sweep theirs).

use aws_sdk_ec2::types::{HttpTokensState, InstanceMetadataEndpointState};
use imds_guard::aws::RegionalClients;
use imds_guard::guard::Guard;
use imds_guard::report::Outcome;
use serde_json::Value;

use crate::common::{config, fixture};
use crate::emulator::{ec2, launch, memory_table, seen, Launch};
use crate::sweep_emulator::cli;

/// Someone turns IMDSv1 back on, and CloudTrail records it.
async fn revert(ec2: &aws_sdk_ec2::Client, id: &str, region: &str) -> Value {
    ec2.modify_instance_metadata_options()
        .instance_id(id)
        .http_tokens(HttpTokensState::Optional)
        .http_put_response_hop_limit(2)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .send()
        .await
        .unwrap();
    let mut ev = crate::common::revert_event(id);
    ev["region"] = region.into();
    ev["account"] = "123456789012".into();
    ev["detail"]["awsRegion"] = region.into();
    ev["detail"]["recipientAccountId"] = "123456789012".into();
    ev
}

#[tokio::test]
async fn a_grant_from_the_command_line_keeps_a_revert_until_it_is_revoked() {
    let region = "af-south-1";
    let table = memory_table("imds-guard-memory-break-glass").await;
    let ec2 = ec2(region).await;
    let ids = launch(
        &ec2,
        Launch {
            tokens: "required",
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let env = [("MEMORY_TABLE", table.as_str()), ("NOTIFY_TOPIC_ARN", "")];

    let (code, out, err) = cli(
        &[
            "break-glass",
            "grant",
            "--region",
            region,
            "--target",
            &ids[0],
            "--reason",
            "INC-7: vendor agent",
            "--for",
            "2h",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "break-glass granted: {} in 123456789012/{region} until ",
            ids[0]
        )),
        "{out}"
    );
    let (code, out, err) = cli(
        &[
            "break-glass",
            "list",
            "--region",
            region,
            "--output",
            "json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["target"], ids[0].as_str());
    assert_eq!(listed[0]["reason"], "INC-7: vendor agent");
    assert!(
        listed[0]["by"].as_str().unwrap().starts_with("arn:aws:"),
        "{listed}"
    );

    let g = Guard::new(
        config(&[("GUARD_MODE", "enforce"), ("MEMORY_TABLE", table.as_str())]),
        RegionalClients::for_config(
            crate::common::emulator_sdk().await,
            &config(&[("MEMORY_TABLE", table.as_str())]),
        ),
    );
    let report = g
        .handle(&revert(&ec2, &ids[0], region).await)
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Exempt, "{report:?}");
    assert_eq!(
        seen(&ec2, &ids[0]).await.tokens,
        "optional",
        "reported, not undone"
    );

    // Revoked: the same change is undone.
    let (code, out, err) = cli(
        &[
            "break-glass",
            "revoke",
            "--region",
            region,
            "--target",
            &ids[0],
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let report = g
        .handle(&revert(&ec2, &ids[0], region).await)
        .await
        .unwrap();
    assert_eq!(
        report.instances[0].outcome,
        Outcome::Remediated,
        "{report:?}"
    );
    assert_eq!(seen(&ec2, &ids[0]).await.tokens, "required");

    // A grant with no reason, or for longer than a week, is refused.
    let (code, _, err) = cli(
        &[
            "break-glass",
            "grant",
            "--region",
            region,
            "--target",
            &ids[0],
            "--reason",
            "x",
            "--for",
            "8d",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 168h"), "{err}");
}

#[tokio::test]
async fn the_circuit_breaker_holds_a_sweep_at_its_ceiling() {
    let region = "eu-south-2";
    let ec2 = ec2(region).await;
    launch(
        &ec2,
        Launch {
            count: 5,
            hop: 2,
            ..Default::default()
        },
    )
    .await;
    let cfg = config(&[("GUARD_MODE", "enforce"), ("MAX_CHANGES_PER_RUN", "2")]);
    let g = Guard::new(
        cfg.clone(),
        RegionalClients::for_config(crate::common::emulator_sdk().await, &cfg),
    );
    let mut ev = fixture("scheduled-event.json");
    ev["region"] = region.into();
    ev["resources"] = serde_json::json!([]);
    let report = g.handle(&ev).await.unwrap();
    assert_eq!(report.count(Outcome::Remediated), 2, "{report:?}");
    assert_eq!(report.count(Outcome::Flagged), 3);
    assert_eq!(
        report.aws_calls.get("ModifyInstanceMetadataOptions"),
        Some(&2)
    );
    let tripped = report.breaker.as_ref().unwrap();
    assert_eq!(
        (tripped.held, tripped.limits.clone()),
        (3, vec!["MAX_CHANGES_PER_RUN=2".to_string()])
    );
}

#[tokio::test]
async fn the_first_enforcing_sweep_begins_the_record_of_since_when_in_dynamodb() {
    let region = "eu-central-2";
    let table = memory_table("imds-guard-memory-since").await;
    let ec2 = ec2(region).await;
    launch(&ec2, Launch::default()).await;
    let cfg = config(&[("GUARD_MODE", "enforce"), ("MEMORY_TABLE", table.as_str())]);
    let g = Guard::new(
        cfg.clone(),
        RegionalClients::for_config(crate::common::emulator_sdk().await, &cfg),
    );
    let mut ev = fixture("scheduled-event.json");
    ev["region"] = region.into();
    ev["resources"] = serde_json::json!([]);
    let first = g.handle(&ev).await.unwrap();
    assert_eq!(first.count(Outcome::Remediated), 1);
    assert_eq!(first.sweep.as_ref().unwrap().regions[0].missed_events, 0);

    // The record, read back from DynamoDB: since this sweep, in enforce.
    let dynamo = aws_sdk_dynamodb::Client::new(&crate::common::emulator_sdk().await);
    let got = dynamo
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("123456789012#{region}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("since#events".into()),
        )
        .send()
        .await
        .unwrap();
    let item = got.item().expect("the first enforcing sweep wrote it");
    assert_eq!(item["mode"].as_s().unwrap(), "enforce");
    let since: u64 = item["since"].as_s().unwrap().parse().unwrap();
    let now = imds_guard::clock::now_secs();
    assert!(since <= now && since + 600 > now, "{since} vs {now}");

    // A launch fixed within its grace is not counted: its event may be on
    // the way (the emulator's launch time is now).
    launch(&ec2, Launch::default()).await;
    let second = g.handle(&ev).await.unwrap();
    assert_eq!(second.count(Outcome::Remediated), 1);
    assert_eq!(second.sweep.as_ref().unwrap().regions[0].missed_events, 0);
}

//! The fan-out's three steps through the real sweep binary under the local
//! Lambda Runtime API, against the emulator: plan lists an organization of
//! 1,000 accounts (17 regions: 17,000 account-regions), a shard sweeps one
//! member and records its report in DynamoDB, and summarize turns 1,000
//! recorded shards into one SNS message within the limit. The payloads are
//! the state machine's (`fanout_flow` builds them from its definition).

use std::time::Duration;

use aws_config::Region;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

use crate::common::emulator_sdk;
use crate::emulator::{memory_table_with, sent, topic_with};
use crate::runtime::{start_sweep_function, RuntimeApi};

/// This test's management account: an organization of its own, apart from
/// the other emulator tests' (the emulator keeps accounts apart by the
/// credentials a role session gives).
const MANAGEMENT: &str = "999900000001";
const REGIONS: [&str; 17] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "sa-east-1",
];

async fn session(account: &str) -> aws_sdk_sts::types::Credentials {
    let base = emulator_sdk().await;
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&base)
            .region(Region::new("us-east-1"))
            .build(),
    );
    sts.assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/security-admin"))
        .role_session_name("fanout-test")
        .send()
        .await
        .unwrap()
        .credentials()
        .unwrap()
        .clone()
}

fn shard_report(account: &str, ready: bool) -> String {
    let regions: Vec<Value> = REGIONS
        .iter()
        .map(|r| {
            json!({"account": account, "region": r, "listing": "server-side filter", "pages": 1,
                "examined": 4, "counts": {"compliant": 3, "flagged": if ready { 0 } else { 1 }},
                "account_default_action": "none",
                "readiness": if ready { json!({"verdict": "ready"}) } else {
                    json!({"verdict": "not ready", "reasons": ["1 instance(s) still at HttpTokens=optional"]}) }})
        })
        .collect();
    json!({"status": "swept", "mode": "audit", "instances": [], "notification": "",
        "sweep": {"regions": regions, "accounts": []}})
    .to_string()
}

#[tokio::test]
async fn plan_shard_and_summary_run_in_the_real_binary_at_organization_scale() {
    let base = emulator_sdk().await;
    let endpoint = base.endpoint_url().unwrap().to_string();
    let creds = session(MANAGEMENT).await;
    // The function's own account is the management account here: its
    // memory table and topic are created there.
    let as_function = base
        .clone()
        .into_builder()
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new(
                creds.access_key_id(),
                creds.secret_access_key(),
                Some(creds.session_token().to_string()),
                None,
                "management",
            ),
        ))
        .build();
    let as_management = aws_sdk_organizations::config::Builder::from(&base)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_organizations::config::Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_string()),
            None,
            "management",
        ))
        .build();
    let org = aws_sdk_organizations::Client::from_conf(as_management);
    org.create_organization().send().await.unwrap();
    let mut members = Vec::new();
    for n in 0..999 {
        let out = org
            .create_account()
            .account_name(format!("member-{n}"))
            .email(format!("member-{n}@example.com"))
            .send()
            .await
            .unwrap();
        members.push(
            out.create_account_status()
                .unwrap()
                .account_id()
                .unwrap()
                .to_string(),
        );
    }

    // The summary's input: 1,000 shards recorded for run "sum-1", one
    // failed by the engine, and the plan that names them all.
    let table = memory_table_with(&as_function, "imds-guard-memory-fanout").await;
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&as_function)
            .region(Region::new("us-east-1"))
            .build(),
    );
    let mut accounts: Vec<String> = members.clone();
    accounts.push(MANAGEMENT.to_string());
    // Every other account ready in all its regions.
    let ready = |a: &String| accounts.iter().position(|x| x == a).unwrap() % 2 == 0;
    for chunk in accounts.chunks(25) {
        let mut batch = db.batch_write_item();
        let writes: Vec<_> = chunk
            .iter()
            .map(|a| {
                let mut item = std::collections::HashMap::from([
                    ("pk".to_string(), AttributeValue::S("run#sum-1".into())),
                    ("sk".to_string(), AttributeValue::S(format!("shard#{a}"))),
                    ("at".to_string(), AttributeValue::N("1".into())),
                    (
                        "expires_at".to_string(),
                        AttributeValue::N("99999999999".into()),
                    ),
                ]);
                if a == &members[500] {
                    item.insert(
                        "error".into(),
                        AttributeValue::S("States.Timeout: the shard ran out of time".into()),
                    );
                } else {
                    item.insert(
                        "report".into(),
                        AttributeValue::S(shard_report(a, ready(a))),
                    );
                }
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        batch = batch.request_items(&table, writes);
        batch.send().await.unwrap();
    }
    let topic = topic_with(&as_function, "imds-guard-fanout").await;

    // A member with an instance for the shard to sweep.
    let shard_account = &members[3];
    let member = session(shard_account).await;
    let ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&base)
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                member.access_key_id(),
                member.secret_access_key(),
                Some(member.session_token().to_string()),
                None,
                "member",
            ))
            .build(),
    );
    let open = crate::emulator::launch(&ec2, crate::emulator::Launch::default()).await;

    let plan_all = json!({
        "run": "sum-1", "single": false, "accounts": accounts, "regions": REGIONS, "concurrency": 40
    });
    let steps = vec![
        serde_json::to_vec(&json!({"imds_guard_step": "plan", "run": "plan-1",
            "input": {"version": "0", "detail-type": "Scheduled Event"}}))
        .unwrap(),
        serde_json::to_vec(
            &json!({"imds_guard_step": "shard", "run": "shard-1", "account": shard_account}),
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"imds_guard_step": "summarize", "run": "sum-1", "plan": plan_all}),
        )
        .unwrap(),
    ];
    let api = RuntimeApi::start(steps);
    let regions = REGIONS.join(",");
    let function = start_sweep_function(
        &api,
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", creds.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key()),
            ("AWS_SESSION_TOKEN", creds.session_token()),
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("SWEEP_ACCOUNTS", "ORGANIZATION"),
            ("SWEEP_REGIONS", regions.as_str()),
            ("MEMORY_TABLE", table.as_str()),
            ("NOTIFY_TOPIC_ARN", topic.as_str()),
            ("GUARD_MODE", "audit"),
        ],
    );
    let answers = api.answers(3, Duration::from_secs(240));
    let (_, log) = function.stop();
    assert_eq!(answers.len(), 3, "{log}");

    // Plan: 1,000 accounts × 17 regions, over the threshold: fanned out.
    assert_eq!(answers[0].kind, "response", "{}", answers[0].body);
    let plan: Value = serde_json::from_str(&answers[0].body).unwrap();
    assert_eq!(plan["single"], false);
    assert_eq!(plan["accounts"].as_array().unwrap().len(), 1000);
    assert_eq!(plan["regions"].as_array().unwrap().len(), 17);
    assert!(
        answers[0].body.len() < 256 * 1024,
        "within a state's payload"
    );

    // Shard: the member swept (in audit: flagged), its report recorded.
    assert_eq!(answers[1].kind, "response", "{}", answers[1].body);
    let recorded = db
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("run#shard-1".into()))
        .key("sk", AttributeValue::S(format!("shard#{shard_account}")))
        .send()
        .await
        .unwrap();
    let report: Value =
        serde_json::from_str(recorded.item().unwrap()["report"].as_s().unwrap()).unwrap();
    let flagged: u64 = report["sweep"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["counts"]["flagged"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(flagged, open.len() as u64, "{report}");

    // Summarize: 17,000 account-regions in one message within the limit;
    // the failed shard named first; the run fails so its alarm fires.
    assert_eq!(answers[2].kind, "error", "{}", answers[2].body);
    assert!(
        answers[2].body.contains("ImdsGuard.Incomplete"),
        "{}",
        answers[2].body
    );
    assert!(
        answers[2].body.contains(&members[500]),
        "{}",
        answers[2].body
    );
    let told = sent(&topic);
    assert_eq!(told.len(), 1);
    let (subject, body, _) = &told[0];
    assert!(
        subject.len() <= 100 && subject.contains("1 SHARD(S) NOT SWEPT"),
        "{subject}"
    );
    assert!(body.to_string().len() <= imds_guard::notify::MAX_BODY);
    assert_eq!(body["planned"], 1000);
    assert_eq!(body["account_regions"], 17_000);
    assert_eq!(
        body["swept"].as_u64().unwrap()
            + body["failed"].as_u64().unwrap()
            + body["not_reached"].as_u64().unwrap(),
        1000
    );
    assert_eq!(body["problems"][0]["account"], members[500].as_str());
    let ready_accounts = accounts
        .iter()
        .filter(|a| ready(a) && **a != members[500])
        .count();
    assert_eq!(body["ready"], ready_accounts * 17, "{}", body["summary"]);
}

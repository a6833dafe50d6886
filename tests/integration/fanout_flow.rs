//! The organization sweep's steps, driven as the state machine drives them:
//! each payload is built from template.yaml's definition (its `Payload`
//! templates, with their paths resolved against the state's input as Step
//! Functions would), and handed to the same function code. The emulator's
//! Step Functions engine runs Lambda tasks only in containers, which these
//! machines lack: the definition itself is validated (cfn-lint, sam
//! validate), and these tests prove what it passes is what the steps read.

use serde_json::{json, Value};

use imds_guard::guard::{Guard, GuardError};

use crate::fake::{api_error, FakeCloud};

/// The state machine's definition, as JSON (intrinsics left as written).
pub fn definition() -> Value {
    let t = crate::template::load("template.yaml");
    let d = &t["Resources"]["SweepStateMachine"]["Properties"]["Definition"];
    serde_json::to_value(d).expect("the definition is JSON-shaped")
}

/// A state of the definition: `path` names states, nested through a map's
/// `ItemProcessor`.
pub fn state<'a>(d: &'a Value, path: &[&str]) -> &'a Value {
    let mut states = &d["States"];
    let mut s = &Value::Null;
    for (i, name) in path.iter().enumerate() {
        s = &states[*name];
        assert!(!s.is_null(), "no state {name}");
        if i + 1 < path.len() {
            states = &s["ItemProcessor"]["States"];
        }
    }
    s
}

/// A JSONPath as the definition writes them: `$.a.b` on the state's input,
/// `$$.Execution.Name` / `$$.Execution.Input` / `$$.Map.Item.Value` on the
/// context.
fn path(p: &str, input: &Value, ctx: &Value) -> Value {
    let (root, rest) = match p.strip_prefix("$$") {
        Some(rest) => (ctx, rest),
        None => (input, p.strip_prefix('$').expect("a path")),
    };
    rest.split('.')
        .filter(|k| !k.is_empty())
        .fold(root.clone(), |v, k| v[k].clone())
}

/// A `Parameters`/`ItemSelector` template instantiated: keys ending `.$`
/// take the value at their path.
pub fn instantiate(template: &Value, input: &Value, ctx: &Value) -> Value {
    match template {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match k.strip_suffix(".$") {
                    Some(k) => (k.to_string(), path(v.as_str().unwrap(), input, ctx)),
                    None => (k.clone(), instantiate(v, input, ctx)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The Lambda payload a task state sends.
pub fn payload(task: &Value, input: &Value, ctx: &Value) -> Value {
    instantiate(&task["Parameters"]["Payload"], input, ctx)
}

const ORG: [&str; 4] = [
    "111111111111",
    "222222222222",
    "333333333333",
    "444444444444",
];

/// The organization's settings every test here shares, then its own.
fn org_guard(cloud: &FakeCloud, own: &[(&str, &str)]) -> Guard<crate::fake::FakeClients> {
    let mut all = vec![
        (
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:imds-guard",
        ),
        ("MEMBER_ROLE_NAME", "imds-guard-member"),
        ("SWEEP_ACCOUNTS", "ORGANIZATION"),
        ("MEMORY_TABLE", "imds-guard-memory"),
    ];
    all.extend_from_slice(own);
    cloud.guard(&all)
}

fn guard(cloud: &FakeCloud, threshold: &str) -> Guard<crate::fake::FakeClients> {
    org_guard(
        cloud,
        &[
            ("SWEEP_REGIONS", "us-east-1,eu-west-1"),
            (
                "ALLOWED_ACCOUNT_IDS",
                "111111111111,222222222222,333333333333",
            ),
            ("FANOUT_THRESHOLD", threshold),
        ],
    )
}

/// Plan → a shard per account (one failing past the engine's retries, so
/// the definition's catch sends its error) → summarize: every planned shard
/// ends swept or failed, none lost, and one message says so.
#[tokio::test(start_paused = true)]
async fn plan_shards_and_summary_as_the_state_machine_passes_them() {
    let d = definition();
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_organization(ORG.iter().map(|s| s.to_string()).collect());
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    let g = guard(&cloud, "1");
    let ctx = json!({"Execution": {"Name": "run-42", "Input": {"version": "0", "detail-type": "Scheduled Event"}}});

    // Plan: the execution's input is the schedule's event.
    let plan_task = state(&d, &["Plan"]);
    let answer = g
        .handle_payload(&payload(plan_task, &json!({}), &ctx), None)
        .await
        .unwrap();
    let input = instantiate(
        &plan_task["ResultSelector"],
        &json!({"Payload": answer}),
        &ctx,
    );
    assert_eq!(input["plan"]["single"], false);
    assert_eq!(
        input["plan"]["accounts"],
        json!(["111111111111", "222222222222", "333333333333"])
    );
    assert_eq!(input["plan"]["not_allowed"], json!(["444444444444"]));
    assert_eq!(input["plan"]["concurrency"], 40);

    // The map: its items, its selector, and each shard's task.
    let map = state(&d, &["Shards"]);
    assert_eq!(
        path(map["ItemsPath"].as_str().unwrap(), &input, &ctx),
        input["plan"]["accounts"]
    );
    assert_eq!(
        path(map["MaxConcurrencyPath"].as_str().unwrap(), &input, &ctx),
        40
    );
    let shard = state(&d, &["Shards", "Shard"]);
    let failed = state(&d, &["Shards", "ShardFailed"]);
    for account in input["plan"]["accounts"].as_array().unwrap() {
        let item_ctx = json!({"Map": {"Item": {"Value": account}}, "Execution": ctx["Execution"]});
        let item = instantiate(&map["ItemSelector"], &input, &item_ctx);
        if account == "333333333333" {
            // The engine gave up on this one: its catch puts the error at
            // `ResultPath` and the next state records it.
            let catch = &shard["Catch"][0];
            assert_eq!(catch["Next"], "ShardFailed");
            let mut caught = item.clone();
            caught["error"] =
                json!({"Error": "States.Timeout", "Cause": "the shard ran out of time"});
            assert_eq!(catch["ResultPath"], "$.error");
            let answer = g
                .handle_payload(&payload(failed, &caught, &item_ctx), None)
                .await
                .unwrap();
            assert_eq!(answer["status"], "failed");
            continue;
        }
        let answer = g
            .handle_payload(&payload(shard, &item, &item_ctx), None)
            .await
            .unwrap();
        assert_eq!(answer["account"], *account);
        assert_eq!(answer["status"], "swept");
    }
    assert!(
        cloud.published().is_empty(),
        "shards tell no one; the summary does"
    );

    // Summarize: the children's outputs are empty, the map's results are
    // dropped (ResultPath null), the plan passed on; a map that fails
    // still reaches the summary, with the plan.
    assert_eq!(map["ResultPath"], Value::Null);
    assert_eq!(shard["OutputPath"], Value::Null);
    assert_eq!(map["Catch"][0]["Next"], "Summarize");
    assert_ne!(map["Catch"][0]["ResultPath"], "$.plan");
    let summarize = state(&d, &["Summarize"]);
    let Err(GuardError::Incomplete { summary }) = g
        .handle_payload(&payload(summarize, &input, &ctx), None)
        .await
    else {
        panic!("a shard not swept fails the run");
    };
    assert!(summary.starts_with("1 of 3 shard(s) not swept to the end (1 failed, 0 not reached): 333333333333 (States.Timeout: the shard ran out of time)"), "{summary}");
    let sent = cloud.published();
    assert_eq!(sent.len(), 1, "one summary");
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(
        (
            body["planned"].as_u64(),
            body["swept"].as_u64(),
            body["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(body["account_regions"], 6);
    assert_eq!(body["problems"][0]["account"], "333333333333");
    assert!(
        sent[0].subject.contains("1 SHARD(S) NOT SWEPT"),
        "{}",
        sent[0].subject
    );
    // The summary does not retry itself into a second message.
    assert!(!state(&d, &["Summarize"])["Retry"][0]["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "ImdsGuard.Incomplete"));
}

/// Below the threshold the plan sweeps here, as one invocation always did,
/// and the choice ends the run; a re-run names its accounts in the input.
#[tokio::test(start_paused = true)]
async fn a_small_organization_is_swept_by_the_plan_and_a_rerun_names_its_shards() {
    let d = definition();
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_organization(ORG.iter().map(|s| s.to_string()).collect());
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    let g = guard(&cloud, "100");
    let ctx = json!({"Execution": {"Name": "run-7", "Input": {}}});
    let plan_task = state(&d, &["Plan"]);
    let answer = g
        .handle_payload(&payload(plan_task, &json!({}), &ctx), None)
        .await
        .unwrap();
    assert_eq!(answer["single"], true);
    assert_eq!(answer["accounts"], json!([]));
    assert_eq!(cloud.published().len(), 1, "the single sweep's summary");
    let choice = state(&d, &["SweptAlready"]);
    assert_eq!(choice["Choices"][0]["Variable"], "$.plan.single");
    assert_eq!(choice["Choices"][0]["Next"], "Done");

    // `{"accounts": [...]}`: those shards only, still within the allow list.
    let ctx = json!({"Execution": {"Name": "rerun-1", "Input": {"accounts": ["222222222222", "444444444444"]}}});
    let g = guard(&cloud, "1");
    let answer = g
        .handle_payload(&payload(plan_task, &json!({}), &ctx), None)
        .await
        .unwrap();
    assert_eq!(answer["accounts"], json!(["222222222222"]));
    assert_eq!(answer["not_allowed"], json!(["444444444444"]));
    let bad = json!({"Execution": {"Name": "rerun-2", "Input": {"accounts": ["nope"]}}});
    assert!(g
        .handle_payload(&payload(plan_task, &json!({}), &bad), None)
        .await
        .is_err());
}

/// A shard whose report cannot be recorded fails, for the engine to retry
/// (the definition retries `ImdsGuard.Incomplete` on shards).
#[tokio::test(start_paused = true)]
async fn a_shard_that_cannot_record_fails_for_the_engine_to_retry() {
    let d = definition();
    let retried = state(&d, &["Shards", "Shard"])["Retry"][0]["ErrorEquals"].clone();
    assert!(retried
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "ImdsGuard.Incomplete"));
    let cloud = FakeCloud::new();
    cloud.with_memory();
    // The first writes are the two regions' records of since when the
    // guard enforces there (a warning each if they fail); the third, the
    // shard's.
    cloud.fail(
        "BatchWriteItem",
        3,
        api_error("ProvisionedThroughputExceededException"),
    );
    let g = guard(&cloud, "1");
    let e = g
        .handle_payload(
            &json!({"imds_guard_step": "shard", "run": "r", "account": "111111111111"}),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, GuardError::Incomplete { .. }), "{e}");
    assert_eq!(
        imds_guard::lambda::diagnostic(e).error_type,
        "ImdsGuard.Incomplete"
    );
}

/// A shard whose sweep could not handle an instance is a failed shard in
/// the summary, as the single sweep would fail; what the shards told of is
/// remembered once the summary is sent, so the next run does not list it
/// again.
#[tokio::test(start_paused = true)]
async fn a_shards_own_failures_count_and_what_it_told_of_is_remembered_after_the_summary() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_organization(vec!["111111111111".into(), "222222222222".into()]);
    cloud.add("i-0aaaaaaaaaaaaaaa1", "optional", 1);
    let g = org_guard(
        &cloud,
        &[
            ("SWEEP_REGIONS", "us-east-1"),
            ("FANOUT_THRESHOLD", "1"),
            ("GUARD_MODE", "notify"),
        ],
    );
    let plan = json!({"run": "r-1", "single": false, "accounts": ["111111111111", "222222222222"],
        "regions": ["us-east-1"], "concurrency": 2});
    // The first shard cannot tag what it flags.
    cloud.fail("CreateTags", 1, api_error("UnauthorizedOperation"));
    for account in ["111111111111", "222222222222"] {
        g.handle_payload(
            &json!({"imds_guard_step": "shard", "run": "r-1", "account": account}),
            None,
        )
        .await
        .unwrap();
    }
    assert!(
        cloud.records("noticed#").is_empty(),
        "not before the summary is sent"
    );
    let Err(GuardError::Incomplete { summary }) = g
        .handle_payload(
            &json!({"imds_guard_step": "summarize", "run": "r-1", "plan": plan}),
            None,
        )
        .await
    else {
        panic!("a shard that could not tag fails the run");
    };
    assert!(
        summary.contains("111111111111") && summary.contains("UnauthorizedOperation"),
        "{summary}"
    );
    assert!(summary.contains("(1 failed, 0 not reached)"), "{summary}");
    assert!(
        cloud.records("noticed#").iter().all(|r| r.is_told())
            && !cloud.records("noticed#").is_empty(),
        "remembered as told once the summary was sent"
    );
}

/// An organization summary SNS refuses fails the run, saying where the
/// message is: kept in the failed-events queue only when it was.
#[tokio::test(start_paused = true)]
async fn an_unpublished_summary_says_where_it_was_kept_or_that_it_was_not() {
    for (queue, keep_fails, said) in [
        (true, false, "; kept in the failed-events queue"),
        (true, true, "could not be kept in the failed-events queue"),
        (false, false, "there is no failed-events queue"),
    ] {
        let cloud = FakeCloud::new();
        cloud.with_memory();
        if queue {
            cloud.with_failed_events_queue();
        }
        cloud.set_organization(vec!["111111111111".into()]);
        let g = org_guard(
            &cloud,
            &[("SWEEP_REGIONS", "us-east-1"), ("FANOUT_THRESHOLD", "1")],
        );
        g.handle_payload(
            &json!({"imds_guard_step": "shard", "run": "r-1", "account": "111111111111"}),
            None,
        )
        .await
        .unwrap();
        cloud.fail("Publish", 9, api_error("AuthorizationError"));
        if keep_fails {
            cloud.fail("SendMessage", 9, api_error("AccessDenied"));
        }
        let plan = json!({"run": "r-1", "single": false, "accounts": ["111111111111"],
            "regions": ["us-east-1"], "concurrency": 1});
        let Err(GuardError::Incomplete { summary }) = g
            .handle_payload(
                &json!({"imds_guard_step": "summarize", "run": "r-1", "plan": plan}),
                None,
            )
            .await
        else {
            panic!("an unpublished summary fails the run");
        };
        assert!(summary.contains(said), "{queue} {keep_fails}: {summary}");
        assert_eq!(cloud.kept().len(), usize::from(queue && !keep_fails));
    }
}

//! The guard's memory per event (`make bench-memory`, part of `make bench`,
//! not of `make test`): the DynamoDB calls one 50-instance launch event
//! sends, and how long they keep the event waiting, on the in-memory fake
//! with paused time.
//!
//! The call counts are measured: they are what the event path sends. The
//! time is simulated, and fixed by its inputs: every DynamoDB call is
//! assumed to take 8 ms and every EC2 call 40 ms (no throttling, no
//! errors), so the figure says how the calls are arranged (in sequence or
//! side by side), not how fast DynamoDB is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::launch_event;
use crate::fake::{FakeCloud, Pace};

use crate::common::TOPIC;
/// Who launched, in the fixture.
const LAUNCHER: &str = "arn:aws:iam::111122223333:role/DevOps";

fn pace() -> Arc<Pace> {
    let ms = Duration::from_millis;
    Arc::new(Pace::new(
        HashMap::from([
            ("Query", ms(8)),
            ("PutItem", ms(8)),
            ("BatchWriteItem", ms(8)),
            ("GetResourcePolicy", ms(8)),
        ]),
        ms(40),
        HashMap::new(),
        0,
    ))
}

/// One event of `n` noncompliant instances: (DynamoDB calls, simulated ms).
async fn one(n: usize, pairs: &[(&str, &str)]) -> (u64, u64, u64) {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    let ids: Vec<String> = (0..n).map(|i| format!("i-0{i:016x}")).collect();
    for id in &ids {
        cloud.add(id, "optional", 1);
    }
    cloud.with_pace(pace());
    let mut all = vec![("NOTIFY_TOPIC_ARN", TOPIC), ("MEMORY_TABLE", "memory")];
    all.extend_from_slice(pairs);
    let g = cloud.guard(&all);
    let mut event = launch_event("run-instances-cli-multi.json", &ids, Some("us-east-1"));
    // Every item as the fixture's first (noncompliant), with its own id.
    if let Some(items) = event["detail"]["responseElements"]["instancesSet"]["items"].as_array_mut()
    {
        let first = items[0].clone();
        for (item, id) in items.iter_mut().zip(&ids) {
            *item = first.clone();
            item["instanceId"] = id.as_str().into();
        }
    }
    let start = Instant::now();
    let r = g.handle_event(&event, None).await;
    let took = start.elapsed().as_millis() as u64;
    assert!(r.is_ok(), "{r:?}");
    let calls = cloud.calls();
    let dynamodb: u64 = ["Query", "PutItem", "BatchWriteItem", "GetResourcePolicy"]
        .iter()
        .map(|op| calls.get(*op).copied().unwrap_or(0))
        .sum();
    (dynamodb, calls.get("PutItem").copied().unwrap_or(0), took)
}

#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: run with `make bench-memory`"]
async fn dynamodb_calls_and_time_per_50_instance_launch() {
    println!(
        "| 50-instance launch event | DynamoDB calls | of them conditional claims | simulated ms |"
    );
    println!("|---|---:|---:|---:|");
    for (label, pairs) in [
        ("notify mode", vec![("GUARD_MODE", "notify")]),
        ("enforce mode", vec![("GUARD_MODE", "enforce")]),
        (
            "an exempt launcher (notify)",
            vec![
                ("GUARD_MODE", "notify"),
                ("EXEMPT_PRINCIPAL_ARNS", LAUNCHER),
            ],
        ),
    ] {
        let (calls, claims, ms) = one(50, &pairs).await;
        println!("| {label} | {calls} | {claims} | {ms} |");
    }
    println!(
        "(simulated: 8 ms a DynamoDB call and 40 ms an EC2 call, assumed; the counts are measured)"
    );
}

//! The load benchmark (`make load`, not part of `make test`): a burst of 500
//! launch events of 10 instances each, delivered to several function
//! processes at once, each under its own local Runtime API, against the
//! emulator. Asserts that all 5,000 instances end remediated, none twice,
//! and prints events per second and peak memory per process. Timings are
//! printed, never asserted: this machine is shared and noisy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types::{HttpTokensState, InstanceMetadataOptionsRequest};

use crate::common::{launch_event, moto_endpoint};
use crate::runtime::{start_binary, RuntimeApi};

/// A benchmark's knob from the environment, or its default.
pub(crate) fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with `make load`"]
async fn burst_of_launches_across_processes() {
    let events = setting("LOAD_EVENTS", 500);
    let per_event = setting("LOAD_INSTANCES_PER_EVENT", 10);
    let processes = setting("LOAD_PROCESSES", 4);
    let bin = std::env::var("IMDS_GUARD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_imds-guard-event").to_string());
    let endpoint = moto_endpoint();

    let base = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&base);
    let sns = aws_sdk_sns::Client::new(&base);
    let topic = sns
        .create_topic()
        .name("load")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();

    // Seed: one RunInstances of `per_event` instances per event, IMDSv1 open.
    let seed_start = Instant::now();
    let mut payloads = Vec::with_capacity(events);
    let mut all_ids = Vec::with_capacity(events * per_event);
    for _ in 0..events {
        let out = ec2
            .run_instances()
            .image_id("ami-0c02fb55956c7d316")
            .min_count(per_event as i32)
            .max_count(per_event as i32)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Optional)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = out
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        let mut ev = launch_event("run-instances-cli-multi.json", &ids, None);
        for item in ev["detail"]["responseElements"]["instancesSet"]["items"]
            .as_array_mut()
            .unwrap()
        {
            item["metadataOptions"]["httpTokens"] = "optional".into();
            item["metadataOptions"]["httpPutResponseHopLimit"] = 2.into();
        }
        payloads.push(serde_json::to_vec(&ev).unwrap());
        all_ids.extend(ids);
    }
    eprintln!(
        "seeded {} instances in {:.1}s",
        all_ids.len(),
        seed_start.elapsed().as_secs_f64()
    );

    // Deal the events out to the processes, start them all, wait for every answer.
    let mut shares: Vec<Vec<Vec<u8>>> = vec![Vec::new(); processes];
    for (n, p) in payloads.into_iter().enumerate() {
        shares[n % processes].push(p);
    }
    let apis: Vec<(RuntimeApi, usize)> = shares
        .into_iter()
        .map(|s| {
            let n = s.len();
            (RuntimeApi::start(s), n)
        })
        .collect();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("NOTIFY_TOPIC_ARN", topic.as_str()),
        ("GUARD_MODE", "enforce"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ];
    let start = Instant::now();
    let functions: Vec<_> = apis
        .iter()
        .map(|(api, _)| start_binary(&bin, api, &env))
        .collect();
    let answers: Vec<_> = apis
        .iter()
        .map(|(api, n)| api.answers(*n, Duration::from_secs(1800)))
        .collect();
    let elapsed = start.elapsed();
    let peaks: Vec<u64> = functions
        .iter()
        .map(|f| f.peak_rss_kib().unwrap_or(0))
        .collect();
    for f in functions {
        f.stop();
    }

    // Every instance remediated exactly once, across all processes.
    let mut remediated: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    let mut notified = 0;
    for a in answers.iter().flatten() {
        if a.kind != "response" {
            errors.push(a.body.clone());
            continue;
        }
        let report: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        notified += usize::from(
            report["notification"]
                .as_str()
                .is_some_and(|n| n.starts_with("sent ")),
        );
        for i in report["instances"].as_array().unwrap() {
            if i["outcome"] == "remediated" {
                *remediated
                    .entry(i["instance_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    let answered: usize = answers.iter().map(Vec::len).sum();
    assert_eq!(answered, events, "every event answered");
    assert!(
        errors.is_empty(),
        "{} failed invocations, e.g. {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(remediated.len(), all_ids.len(), "every instance remediated");
    assert!(
        remediated.values().all(|&n| n == 1),
        "an instance remediated twice"
    );

    let eps = events as f64 / elapsed.as_secs_f64();
    println!("\nload: {events} events x {per_event} instances = {} instances, {processes} function processes ({bin})", all_ids.len());
    println!(
        "load: all {} remediated, none twice; {notified} notifications sent (one per event)",
        remediated.len()
    );
    println!(
        "load: wall {:.1}s, {eps:.1} events/s, {:.1} instances/s",
        elapsed.as_secs_f64(),
        eps * per_event as f64
    );
    println!(
        "load: peak RSS per process (MiB): {}",
        peaks
            .iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // And the emulator agrees (looked up as the function does: by instance-id filter, 200 at a time).
    let mut required = 0;
    for chunk in all_ids.chunks(200) {
        let out = ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        required += out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                i.metadata_options().and_then(|m| m.http_tokens())
                    == Some(&HttpTokensState::Required)
            })
            .count();
    }
    println!(
        "load: the emulator shows {required} of {} instances at HttpTokens=required",
        all_ids.len()
    );
    assert_eq!(
        required,
        all_ids.len(),
        "the emulator shows every instance at HttpTokens=required"
    );
}

//! The function benchmark (`make bench`, not part of `make test`): the
//! release build under the local Runtime API (`runtime.rs`) against the
//! emulator. Measures
//! - init: process start to the function's first `/invocation/next`, over
//!   repeated starts, for the event function, the sweep function and a bare
//!   Rust function (`examples/bare_function.rs`) under the same harness;
//! - first-event and warm-event latency: event handed out to answer received;
//! - peak resident memory (VmHWM) after every event;
//! - AWS calls per event, from the function's own report.
//!
//! Timings are printed (one `BENCH {json}` line that tools/bench_function.py
//! tabulates), never asserted: the machine is shared and noisy. What is
//! asserted is that the work was done and the call counts are exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::emulator::{ec2, event_for, launch, topic, Launch};
use crate::load::setting;
use crate::runtime::{start_binary, RuntimeApi};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, 90th percentile, min and max of `xs`, in milliseconds.
fn stats(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    json!({"runs": xs.len(), "median": at(0.5), "p90": at(0.9), "min": xs[0], "max": xs[xs.len() - 1]})
}

/// Starts `bin` `runs` times with no event queued and times each start to
/// its first poll; also returns the largest peak RSS seen at that point.
fn init_times(bin: &str, runs: usize, env: &[(&str, &str)]) -> (Value, u64) {
    let mut times = Vec::with_capacity(runs);
    let mut rss = 0;
    for _ in 0..runs {
        let api = RuntimeApi::start(vec![]);
        let start = Instant::now();
        let function = start_binary(bin, &api, env);
        let polled = api.first_poll(Duration::from_secs(30));
        rss = rss.max(function.peak_rss_kib().unwrap_or(0));
        let (_, log) = function.stop();
        let polled = polled.unwrap_or_else(|| panic!("{bin} never polled; log:\n{log}"));
        times.push(ms(polled - start));
    }
    (stats(times), rss)
}

fn calls(report: &Value) -> BTreeMap<String, u64> {
    report["aws_calls"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with `make bench`"]
async fn function_init_latency_memory_and_calls() {
    // The event function takes the events; the sweep function's init is
    // measured beside it.
    let bin = std::env::var("IMDS_GUARD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_imds-guard-event").to_string());
    let sweep_bin = std::env::var("SWEEP_FUNCTION_BIN").ok();
    let bare = std::env::var("BARE_FUNCTION_BIN").ok();
    let runs = setting("BENCH_INIT_RUNS", 50);
    let warm = setting("BENCH_WARM_EVENTS", 50);
    let endpoint = crate::common::moto_endpoint();
    let topic = topic("bench").await;
    // The template's settings: enforce, INFO application logs in JSON.
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("NOTIFY_TOPIC_ARN", topic.as_str()),
        ("GUARD_MODE", "enforce"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_SESSION_TOKEN", "testing"),
    ];

    let (init, init_rss) = init_times(&bin, runs, &env);
    let bare_init = bare.as_deref().map(|b| init_times(b, runs, &env));
    let sweep_init = sweep_bin.as_deref().map(|b| init_times(b, runs, &env));
    // Most of the init above is the SDK reading the root certificates: here
    // a bundle and every file of a 300-file directory. Lambda's image keeps
    // them as one bundle; the same starts with only that bundle:
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let one_bundle: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("SSL_CERT_FILE", bundle), ("SSL_CERT_DIR", "/nonexistent")])
        .collect();
    let (bundle_init, bundle_bare) = if std::path::Path::new(bundle).exists() {
        (
            Some(init_times(&bin, runs, &one_bundle).0),
            bare.as_deref().map(|b| init_times(b, runs, &one_bundle).0),
        )
    } else {
        (None, None)
    };

    // Events: the first and `warm` more, each one launch of one instance at
    // optional (k = 1 of n = 1); then a compliant launch whose event carries
    // its options; then a launch of n = 10 with k = 4 at optional.
    let ec2 = ec2("us-east-1").await;
    let single = |tokens| Launch {
        tokens,
        hop: 2,
        ..Default::default()
    };
    let mut payloads = Vec::new();
    for _ in 0..=warm {
        let ids = launch(&ec2, single("optional")).await;
        payloads.push(event_for(&ec2, "run-instances-console.json", &ids, None).await);
    }
    let ids = launch(&ec2, single("required")).await;
    payloads.push(event_for(&ec2, "run-instances-console.json", &ids, None).await);
    let mut ids = launch(
        &ec2,
        Launch {
            count: 4,
            ..single("optional")
        },
    )
    .await;
    ids.extend(
        launch(
            &ec2,
            Launch {
                count: 6,
                ..single("required")
            },
        )
        .await,
    );
    payloads.push(event_for(&ec2, "run-instances-cli-multi.json", &ids, None).await);

    let n = payloads.len();
    let api = RuntimeApi::start(
        payloads
            .iter()
            .map(|p| serde_json::to_vec(p).unwrap())
            .collect(),
    );
    let function = start_binary(&bin, &api, &env);
    let answers = api.answers(n, Duration::from_secs(600));
    let peak_rss = function.peak_rss_kib().unwrap_or(0);
    let (_, log) = function.stop();
    assert_eq!(answers.len(), n, "every event answered; log:\n{log}");
    let reports: Vec<Value> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.kind, "response", "{}", a.body);
            serde_json::from_str(&a.body).unwrap()
        })
        .collect();

    // The work was done, at the counted price.
    let one_of_one: BTreeMap<String, u64> = [
        ("CreateTags", 1),
        ("DescribeInstances", 1),
        ("ModifyInstanceMetadataOptions", 1),
        ("Publish", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for r in &reports[..=warm] {
        assert_eq!(r["instances"][0]["outcome"], "remediated", "{r}");
        assert_eq!(calls(r), one_of_one, "k = 1: k + 3 calls");
    }
    let compliant = &reports[warm + 1];
    assert_eq!(compliant["instances"][0]["outcome"], "compliant");
    assert!(calls(compliant).is_empty(), "{compliant}");
    let four_of_ten = calls(&reports[warm + 2]);
    assert_eq!(four_of_ten.values().sum::<u64>(), 4 + 3, "{four_of_ten:?}");
    assert_eq!(four_of_ten["ModifyInstanceMetadataOptions"], 4);

    let warm_latency: Vec<f64> = answers[1..=warm].iter().map(|a| ms(a.took)).collect();
    let figures = json!({
        "binary": bin,
        "init_ms": init,
        "init_peak_rss_kib": init_rss,
        "bare_init_ms": bare_init.as_ref().map(|(s, _)| s.clone()),
        "bare_init_peak_rss_kib": bare_init.as_ref().map(|(_, r)| *r),
        "sweep_init_ms": sweep_init.as_ref().map(|(s, _)| s.clone()),
        "one_bundle_init_ms": bundle_init,
        "one_bundle_bare_init_ms": bundle_bare,
        "first_event_ms": ms(answers[0].took),
        "warm_event_ms": stats(warm_latency),
        "compliant_event_ms": ms(answers[warm + 1].took),
        "ten_instance_event_ms": ms(answers[warm + 2].took),
        "events": n,
        "peak_rss_kib": peak_rss,
        "calls": {
            "compliant launch, options in the event (n=1, k=0)": calls(compliant),
            "launch n=1, k=1": calls(&reports[0]),
            "launch n=10, k=4": four_of_ten,
        },
    });
    println!("BENCH {figures}");
}

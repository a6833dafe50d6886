//! Parsing and deciding one event, without I/O: the work the function does
//! between receiving a payload and its first AWS call. From the payload's
//! bytes (the runtime hands the handler a parsed `Value`), through
//! `event::parse`, to the policy's verdict for every instance it names; and
//! the same from the parsed `Value`, which is imds-guard's own share.
//! `make bench` reads the estimates criterion writes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imds_guard_domain::config::Config;
use imds_guard_domain::event::{self, GuardEvent};
use imds_guard_domain::policy::{Policy, Verdict};

/// What the handler learns before acting: how many instances need a look.
fn parse_and_decide(cfg: &Config, bytes: &[u8]) -> usize {
    let payload: serde_json::Value = serde_json::from_slice(bytes).expect("fixture is JSON");
    decide(cfg, &payload)
}

/// The same from the `Value` the runtime hands the handler: imds-guard's own
/// share of the work.
fn decide(cfg: &Config, payload: &serde_json::Value) -> usize {
    match event::parse(payload) {
        Ok(GuardEvent::Instances { ctx, instances, .. }) => {
            let policy = Policy::of(cfg);
            instances
                .iter()
                .filter(|o| policy.decide(o, &ctx.principal) != Verdict::Compliant)
                .count()
        }
        Ok(_) => 0,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    // The production shape of the configuration: every kind of exemption set.
    let cfg = Config::from_lookup(|name| {
        match name {
            "GUARD_MODE" => Some("enforce"),
            "EXEMPT_TAG_KEY" => Some("legacy-imds"),
            "EXEMPT_PRINCIPAL_ARNS" => {
                Some("arn:aws:iam::*:role/legacy-*,arn:aws:iam::111122223333:role/batch")
            }
            "EXEMPT_IMAGE_IDS" => Some("ami-0123456789abcdef0"),
            "MAX_HOP_LIMIT" => Some("2"),
            _ => None,
        }
        .map(str::to_string)
    })
    .expect("valid configuration");

    let mut group = c.benchmark_group("parse_and_decide");
    let mut values = Vec::new();
    for name in [
        "run-instances-console.json",
        "run-instances-cli-multi.json",
        "modify-metadata-options-revert.json",
        "run-instances-compliant.json",
    ] {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // A fixture that decides nothing would measure nothing.
        assert!(
            name.contains("compliant") || parse_and_decide(&cfg, &bytes) > 0,
            "{name} names no noncompliant instance"
        );
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| parse_and_decide(black_box(&cfg), black_box(&bytes)))
        });
        values.push((
            name,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        ));
    }
    group.finish();

    let mut group = c.benchmark_group("decide_from_value");
    for (name, payload) in &values {
        group.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| decide(black_box(&cfg), black_box(payload)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Golden outputs of emulator scenarios: the same record as `golden.rs`
//! keeps for the fake, made through the real SDK, the product's own
//! adapters and regional clients against moto's server, so a reshaping of
//! an adapter (how a request is built, an answer read, a client made) that
//! changes what the guard says, does or sends fails here, naming the
//! scenario. Each scenario has a region of its own in the shared emulator.
//!
//! What the emulator makes up (the instance ids a scenario launches,
//! message ids) is replaced by its place (`<i-0>`, `<i-1>`, in launch
//! order; `<uuid>`), and clocks as in `golden.rs`. `UPDATE_GOLDEN=1` rewrites the files.

use std::collections::BTreeMap;

use imds_guard::aws::RegionalClients;
use imds_guard::guard::{Guard, GuardError};
use imds_guard::report::Report;
use serde_json::{json, Value};

use crate::common::{config, revert_event, scheduled_in};
use crate::emulator::{ec2, event_for, launch, memory_table, seen_all, sent, topic, Launch};
use crate::golden::{check, normalize};

/// The guard as the functions build it (`lambda::run`: the clients its
/// configuration asks for), against the emulator.
async fn guard(pairs: &[(&str, &str)]) -> Guard<RegionalClients> {
    let cfg = config(pairs);
    let clients = RegionalClients::for_config(crate::common::emulator_sdk().await, &cfg);
    Guard::new(cfg, clients)
}

/// A report, or the report of a failed invocation, with its summary.
fn answer(result: Result<Report, GuardError>) -> Value {
    match result {
        Ok(report) => json!({"ok": report}),
        Err(GuardError::Unhandled { summary, report }) => {
            json!({"failed": summary, "report": report})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// What `ids` are now in the emulator: tokens, hop limit, status tag.
async fn end_states(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> Value {
    let all = seen_all(ec2, ids).await;
    ids.iter()
        .map(|id| {
            let s = &all[id];
            json!({"id": id, "tokens": s.tokens, "hop": s.hop, "status": s.status_tag})
        })
        .collect()
}

/// The messages the topic holds: subject, body and attributes (by name:
/// the SDK sends them in no fixed order).
fn messages(topic: &str) -> Value {
    sent(topic)
        .into_iter()
        .map(|(subject, body, attributes)| {
            let attributes: BTreeMap<String, Value> = attributes
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            json!({"subject": subject, "body": body, "attributes": attributes})
        })
        .collect()
}

/// Replaces what the emulator made up: each of `ids` (every instance a
/// scenario launches) by its place, and every UUID by a marker; then the
/// clocks.
fn stable(mut v: Value, ids: &[String]) -> Value {
    let places: BTreeMap<&str, String> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), format!("<i-{n}>")))
        .collect();
    fn walk(v: &mut Value, places: &BTreeMap<&str, String>) {
        match v {
            Value::String(s) => {
                for (id, place) in places {
                    if s.contains(id) {
                        *s = s.replace(id, place);
                    }
                }
                *s = uuids_out(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, places)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, places)),
            _ => {}
        }
    }
    walk(&mut v, &places);
    normalize(&mut v);
    v
}

/// `8-4-4-4-12` hex runs become `<uuid>`.
fn uuids_out(s: &str) -> String {
    let groups = [8, 4, 4, 4, 12];
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < b.len() {
        let mut j = i;
        for (k, n) in groups.iter().enumerate() {
            if j + n > b.len() || !b[j..j + n].iter().all(u8::is_ascii_hexdigit) {
                break;
            }
            j += n;
            if k < 4 {
                if b.get(j) != Some(&b'-') {
                    break;
                }
                j += 1;
            } else if i == 0 || !b[i - 1].is_ascii_hexdigit() {
                out.push_str("<uuid>");
                i = j;
                continue 'outer;
            }
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[tokio::test]
async fn every_emulator_scenario_says_and_does_what_its_golden_file_says() {
    let mut failures = Vec::new();

    // A launch in enforce mode, delivered twice: two instances at
    // `optional` (hop limits 1 and 3), one at `required`.
    {
        let region = "ap-east-1";
        let ec2 = ec2(region).await;
        let mut ids = launch(&ec2, Launch::default()).await;
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
        let topic = topic("golden-launch").await;
        let table = memory_table("golden-launch").await;
        let g = guard(&[
            ("GUARD_MODE", "enforce"),
            ("NOTIFY_TOPIC_ARN", &topic),
            ("MEMORY_TABLE", &table),
        ])
        .await;
        let event = event_for(&ec2, "run-instances-cli-multi.json", &ids, Some(region)).await;
        let first = answer(g.handle(&event).await);
        let second = answer(g.handle(&event).await);
        let record = json!({
            "first": first, "second": second,
            "instances": end_states(&ec2, &ids).await,
            "messages": messages(&topic),
        });
        check("emulator-launch", &stable(record, &ids), &mut failures);
    }

    // A sweep in notify mode, twice: what was told is not told again.
    {
        let region = "ca-west-1";
        let ec2 = ec2(region).await;
        let mut ids = launch(
            &ec2,
            Launch {
                count: 2,
                ..Default::default()
            },
        )
        .await;
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
        let topic = topic("golden-sweep").await;
        let table = memory_table("golden-sweep").await;
        let g = guard(&[
            ("GUARD_MODE", "notify"),
            ("NOTIFY_TOPIC_ARN", &topic),
            ("MEMORY_TABLE", &table),
            ("SWEEP_REGIONS", region),
        ])
        .await;
        let first = answer(g.handle(&scheduled_in(region)).await);
        let second = answer(g.handle(&scheduled_in(region)).await);
        let record = json!({
            "first": first, "second": second,
            "instances": end_states(&ec2, &ids).await,
            "messages": messages(&topic),
        });
        check("emulator-sweep", &stable(record, &ids), &mut failures);
    }

    // Someone turns IMDSv1 back on: enforce mode puts it back.
    {
        let region = "il-central-1";
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
        ec2.modify_instance_metadata_options()
            .instance_id(&ids[0])
            .http_tokens(aws_sdk_ec2::types::HttpTokensState::Optional)
            .send()
            .await
            .unwrap();
        let topic = topic("golden-revert").await;
        let g = guard(&[("GUARD_MODE", "enforce"), ("NOTIFY_TOPIC_ARN", &topic)]).await;
        let mut event = revert_event(&ids[0]);
        event["region"] = region.into();
        event["detail"]["awsRegion"] = region.into();
        let first = answer(g.handle(&event).await);
        let record = json!({
            "first": first,
            "instances": end_states(&ec2, &ids).await,
            "messages": messages(&topic),
        });
        check("emulator-revert", &stable(record, &ids), &mut failures);
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn what_the_emulator_makes_up_is_replaced_and_nothing_else() {
    assert_eq!(
        uuids_out("sent (message 3f2a9c1e-0b7d-4c55-9e61-2d8f0a1b2c3d) to topic, r-0abc"),
        "sent (message <uuid>) to topic, r-0abc"
    );
    let ids = vec!["i-0123456789abcdef0".to_string()];
    let v = stable(json!({"a": "i-0123456789abcdef0 fixed", "b": 7}), &ids);
    assert_eq!(v, json!({"a": "<i-0> fixed", "b": 7}));
}

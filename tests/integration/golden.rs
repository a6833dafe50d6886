//! Golden outputs: what the guard says and does for every event fixture and
//! a set of sweep and source scenarios, on the in-memory fake with the
//! production wiring (the event function hands off; the outputs function
//! files what it is handed). Each scenario's report, notifications,
//! handoffs, findings, bus events, memory records, instance end states and
//! AWS call counts are written to `tests/golden/<name>.json` and compared
//! byte for byte, so a reshaping of the code that changes any of them fails
//! here, naming the scenario. A change that is meant rewrites them:
//! `UPDATE_GOLDEN=1 cargo test --test integration golden`, then review the
//! diff like code.
//!
//! Wall-clock times (the fake pauses tokio's clock, not the system's) are
//! replaced by `<time>`/`<epoch>` so the files are stable from run to run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use imds_guard::guard::Guard;
use serde_json::{json, Map, Value};

use crate::common::scheduled_in;
use crate::fake::{FakeClients, FakeCloud};

use crate::common::TOPIC;
const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-outputs";
const GUARD_ROLE_ID: &str = "AROAGUARDROLE0000001";
const GUARD_SENDER: &str = "AROAGUARDROLE0000001:imds-guard-event";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The deployed wiring: a topic, the memory, Security Hub and a bus behind
/// the outputs queue, in `mode`.
fn settings<'a>(mode: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("GUARD_MODE", mode),
        ("NOTIFY_TOPIC_ARN", TOPIC),
        ("SECURITY_HUB_FINDINGS", "true"),
        ("EVENT_BUS_NAME", "security-events"),
        ("OUTPUTS_QUEUE_URL", QUEUE),
        ("OUTPUTS_SENDERS", GUARD_ROLE_ID),
        ("MEMORY_TABLE", "imds-guard-memory"),
    ];
    all.extend_from_slice(extra);
    all
}

fn cloud() -> FakeCloud {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.with_security_hub();
    cloud.with_bus();
    cloud.with_failed_events_queue();
    cloud.set_defaults(Some(Default::default()));
    cloud.as_event_function(true);
    cloud
}

/// Every string in `v` that looks like an id with `prefix` (`i-`, `lt-`).
fn ids_in(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s)
            if s.starts_with(prefix)
                && s.len() > prefix.len() + 7
                && s[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|x| ids_in(x, prefix, out)),
        Value::Object(o) => o.values().for_each(|x| ids_in(x, prefix, out)),
        _ => {}
    }
}

/// Seeds the fake with what a fixture names: each instance at `optional`
/// (hop limit 1) from the fixture's reservation, each launch template with
/// an `optional` default version.
fn seed(cloud: &FakeCloud, event: &Value) {
    let mut instances = BTreeSet::new();
    ids_in(event, "i-", &mut instances);
    let reservation = event["detail"]["responseElements"]["reservationId"]
        .as_str()
        .map(str::to_string);
    let token = event["detail"]["requestParameters"]["clientToken"]
        .as_str()
        .map(str::to_string);
    for id in &instances {
        cloud.add(id, "optional", 1);
        cloud.edit(id, |i| {
            i.reservation_id = reservation.clone();
            i.client_token = token.clone();
        });
    }
    let mut templates = BTreeSet::new();
    ids_in(event, "lt-", &mut templates);
    for id in &templates {
        cloud.add_template(
            id,
            &[],
            1,
            &[(
                1,
                Some(imds_guard::event::MetadataOptions {
                    http_tokens: Some("optional".into()),
                    ..Default::default()
                }),
            )],
        );
    }
}

/// Replaces wall-clock times: ISO 8601 stamps inside any string, and
/// numbers that are seconds or milliseconds since the epoch of this decade;
/// and the commit a `release` names (it changes with every commit; the
/// version stays).
pub(crate) fn normalize(v: &mut Value) {
    if let Some(commit) = v.pointer_mut("/release/commit") {
        assert_eq!(
            *commit,
            imds_guard::release::COMMIT,
            "a release names this build's commit"
        );
        *commit = json!("<commit>");
    }
    match v {
        Value::String(s) => *s = without_commit(&without_stamps(s)),
        Value::Number(n) => {
            if let Some(x) = n.as_u64() {
                if (1_600_000_000..2_600_000_000).contains(&x) {
                    *v = json!("<epoch>");
                } else if (1_600_000_000_000..2_600_000_000_000).contains(&x) {
                    *v = json!("<epoch-ms>");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        Value::Object(o) => o.values_mut().for_each(normalize),
        _ => {}
    }
}

/// The commit inside JSON carried as text (a message body, an event's
/// detail, once or twice encoded), where `normalize` cannot reach the key.
fn without_commit(s: &str) -> String {
    let c = imds_guard::release::COMMIT;
    [
        (format!("\"commit\": \"{c}\""), "\"commit\": \"<commit>\""),
        (format!("\"commit\":\"{c}\""), "\"commit\":\"<commit>\""),
        (
            format!("\\\"commit\\\":\\\"{c}\\\""),
            "\\\"commit\\\":\\\"<commit>\\\"",
        ),
    ]
    .iter()
    .fold(s.to_string(), |s, (from, to)| s.replace(from.as_str(), to))
}

/// `2026-12-01T11:26:38Z`, `2026-12-01T11:26:38.123Z` and
/// `2026-12-01 11:26 UTC`-style stamps become `<time>`, and ten-digit
/// epoch seconds inside text become `<epoch>`; the fixtures' own times
/// (2019–2026) are replaced too, which costs nothing: they are inputs.
fn without_stamps(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let digit = |j: usize| j < b.len() && b[j].is_ascii_digit();
    while i < b.len() {
        // YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z]
        let date = (0..4).all(|k| digit(i + k))
            && b.get(i + 4) == Some(&b'-')
            && digit(i + 5)
            && digit(i + 6)
            && b.get(i + 7) == Some(&b'-')
            && digit(i + 8)
            && digit(i + 9)
            && (i == 0 || !b[i - 1].is_ascii_digit());
        if date && matches!(b.get(i + 10), Some(b'T') | Some(b' ')) && digit(i + 11) {
            let mut j = i + 11;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b':' || b[j] == b'.') {
                j += 1;
            }
            if b.get(j) == Some(&b'Z') {
                j += 1;
            }
            if s[j..].starts_with(" UTC") {
                j += 4;
            }
            out.push_str("<time>");
            i = j;
            continue;
        }
        if date {
            out.push_str("<date>");
            i += 10;
            continue;
        }
        // A run of exactly ten or thirteen digits starting 16..25: epoch.
        if digit(i) && (i == 0 || !b[i - 1].is_ascii_digit()) {
            let mut j = i;
            while digit(j) {
                j += 1;
            }
            let run = &s[i..j];
            let epochish = (run.len() == 10 || run.len() == 13)
                && matches!(
                    &run[..2],
                    "16" | "17" | "18" | "19" | "20" | "21" | "22" | "23" | "24" | "25"
                );
            out.push_str(if epochish { "<epoch>" } else { run });
            i = j;
            continue;
        }
        // Copy one (possibly multi-byte) character.
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A handed-off message as the outputs function reads it: JSON if it is.
fn message(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()))
}

/// What one run left behind, beyond its answer.
fn effects(cloud: &FakeCloud, handed_off: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "notifications".into(),
        cloud
            .published()
            .iter()
            .map(|n| {
                json!({"subject": n.subject, "body": n.body, "outcomes": n.outcomes,
                       "attributes": n.attributes})
            })
            .collect(),
    );
    m.insert(
        "handoffs".into(),
        handed_off.iter().map(|b| message(b)).collect(),
    );
    m.insert(
        "findings".into(),
        serde_json::to_value(cloud.findings()).unwrap_or(Value::Null),
    );
    m.insert(
        "bus".into(),
        cloud
            .routed()
            .iter()
            .map(|r| json!({"detail_type": r.detail_type, "detail": message(&r.detail)}))
            .collect(),
    );
    m.insert(
        "memory".into(),
        cloud
            .records("")
            .iter()
            .map(|r| {
                json!({"pk": r.pk, "sk": r.sk, "event_id": r.event_id, "at": r.at,
                       "expires_at": r.expires_at, "data": r.data})
            })
            .collect(),
    );
    m.insert("kept".into(), json!(cloud.kept()));
    m.insert("calls".into(), json!(cloud.calls()));
    m
}

/// The instances' end states: tokens, hop limit and the guard's status tag.
fn instances(cloud: &FakeCloud, ids: &BTreeSet<String>) -> Value {
    ids.iter()
        .map(|id| {
            json!({"id": id, "tokens": cloud.tokens(id), "hop": cloud.hop(id),
                   "status": cloud.tag(id, "imds-guard:status")})
        })
        .collect()
}

/// Runs `payload` through the function that takes it in production, then
/// hands what it handed off to the outputs function: the whole record.
async fn run(
    cloud: &FakeCloud,
    g: &Guard<FakeClients>,
    payload: &Value,
    function: &str,
    ids: &BTreeSet<String>,
) -> Value {
    let answer = match function {
        "event" => match g.handle_event(payload, None).await {
            Ok(r) => json!({"ok": r}),
            Err(e) => json!({"error": e.to_string()}),
        },
        _ => match g.handle_payload(payload, None).await {
            Ok(v) => json!({"ok": v}),
            Err(e) => json!({"error": e.to_string()}),
        },
    };
    let handed_off = cloud.take_handed_off();
    // The outputs function: what the queue delivers, from the guard's role.
    let records: Vec<Value> = handed_off
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("m-{i}"), "eventSource": "aws:sqs", "body": body,
                   "attributes": {"SenderId": GUARD_SENDER}})
        })
        .collect();
    let outputs = if records.is_empty() {
        Value::Null
    } else {
        cloud.as_event_function(false);
        let answer = g
            .handle_handoffs(&json!({ "Records": records }))
            .await
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        cloud.as_event_function(true);
        answer
    };
    let mut m = Map::new();
    m.insert("function".into(), json!(function));
    m.insert("answer".into(), answer);
    m.insert("outputs_answer".into(), outputs);
    m.extend(effects(cloud, &handed_off));
    m.insert("instances".into(), instances(cloud, ids));
    let mut v = Value::Object(m);
    normalize(&mut v);
    v
}

/// Which function takes a fixture in production: the schedule and source
/// events go to the sweep binary; the rest to the event function.
fn function_of(event: &Value) -> &'static str {
    let name = event["detail"]["eventName"].as_str().unwrap_or("");
    let scheduled = event["detail-type"].as_str() == Some("Scheduled Event")
        || event["source"].as_str() == Some("aws.scheduler");
    let source = matches!(
        name,
        "CreateLaunchTemplate"
            | "CreateLaunchTemplateVersion"
            | "ModifyLaunchTemplate"
            | "CreateAutoScalingGroup"
            | "UpdateAutoScalingGroup"
    );
    if scheduled || source {
        "sweep"
    } else {
        "event"
    }
}

/// Compares `actual` with the golden file `name`, or writes it when
/// `UPDATE_GOLDEN` is set.
pub(crate) fn check(name: &str, actual: &Value, failures: &mut Vec<String>) {
    let path = root().join("tests/golden").join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual).unwrap_or_default() + "\n";
    // A golden file never holds the commit: it would fail at the next one.
    let commit = imds_guard::release::COMMIT;
    if commit != "unknown" && text.contains(commit) {
        failures.push(format!(
            "{name}: the commit {commit} is left in it: normalize() missed it"
        ));
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).ok();
        std::fs::write(&path, &text).ok();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(want) if want == text => {}
        Ok(want) => {
            let line = want
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .map(|n| n + 1)
                .unwrap_or(want.lines().count().min(text.lines().count()) + 1);
            let out = std::env::temp_dir().join(format!("golden-{name}.json"));
            std::fs::write(&out, &text).ok();
            failures.push(format!(
                "{name}: differs from tests/golden/{name}.json from line {line} (this run's: {})",
                out.display()
            ));
        }
        Err(e) => failures.push(format!("{name}: no golden file ({e})")),
    }
}

fn fixtures() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in ["events", "events/real"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let name = if dir == "events" {
                stem
            } else {
                format!("real-{stem}")
            };
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push((name, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn every_event_fixture_says_and_does_what_its_golden_file_says() {
    let mut failures = Vec::new();
    let all = fixtures();
    assert!(
        all.len() >= 30,
        "the fixtures were not found: {}",
        all.len()
    );
    for (name, event) in &all {
        let mut by_mode = Map::new();
        for mode in ["enforce", "notify", "audit"] {
            let cloud = cloud();
            seed(&cloud, event);
            let mut ids = BTreeSet::new();
            ids_in(event, "i-", &mut ids);
            let g = cloud.guard(&settings(mode, &[]));
            let function = function_of(event);
            let first = run(&cloud, &g, event, function, &ids).await;
            // Delivered again (EventBridge delivers at least once): what a
            // retry says and does once the first has been remembered.
            let again = run(&cloud, &g, event, function, &ids).await;
            by_mode.insert(mode.into(), json!({"first": first, "again": again}));
        }
        check(
            &format!("event-{name}"),
            &Value::Object(by_mode),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A fleet with one of each kind the sweep tells apart.
fn fleet(cloud: &FakeCloud) -> BTreeSet<String> {
    cloud
        .add("i-0aaaaaaaaaaaaaaa1", "optional", 1)
        .add("i-0aaaaaaaaaaaaaaa2", "optional", 2)
        .add("i-0aaaaaaaaaaaaaaa3", "required", 2)
        .add("i-0aaaaaaaaaaaaaaa4", "optional", 1)
        .add("i-0aaaaaaaaaaaaaaa5", "optional", 1);
    cloud.edit("i-0aaaaaaaaaaaaaaa4", |i| {
        i.observed.tags = Some(vec![("imds-guard:exempt".into(), "true".into())]);
    });
    cloud.edit("i-0aaaaaaaaaaaaaaa5", |i| {
        i.observed.instance_profile = Some("arn:aws:iam::111122223333:instance-profile/app".into());
    });
    cloud.set_no_token("i-0aaaaaaaaaaaaaaa2", 12.0);
    cloud.add_template(
        "lt-0aaaaaaaaaaaaaaa1",
        &[],
        1,
        &[(
            1,
            Some(imds_guard::event::MetadataOptions {
                http_tokens: Some("optional".into()),
                ..Default::default()
            }),
        )],
    );
    [1, 2, 3, 4, 5]
        .iter()
        .map(|n| format!("i-0aaaaaaaaaaaaaaa{n}"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_sweep_scenario_says_and_does_what_its_golden_file_says() {
    let mut failures = Vec::new();
    let scenarios: &[(&str, &[(&str, &str)])] = &[
        ("default", &[]),
        ("fix-sources", &[("FIX_SOURCES", "true")]),
        ("no-token", &[("CHECK_METADATA_NO_TOKEN", "true")]),
        ("account-default", &[("SET_ACCOUNT_DEFAULT", "true")]),
        ("breaker", &[("MAX_CHANGES_PER_RUN", "1")]),
        ("state-change", &[("TRIGGERS", "both")]),
    ];
    for (label, extra) in scenarios {
        let mut by_mode = Map::new();
        for mode in ["enforce", "notify", "audit"] {
            let cloud = cloud();
            let ids = fleet(&cloud);
            let g = cloud.guard(&settings(mode, extra));
            let first = run(&cloud, &g, &scheduled_in("us-east-1"), "sweep", &ids).await;
            let second = run(&cloud, &g, &scheduled_in("us-east-1"), "sweep", &ids).await;
            by_mode.insert(mode.into(), json!({"first": first, "second": second}));
        }
        check(
            &format!("sweep-{label}"),
            &Value::Object(by_mode),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_normalizer_hides_clocks_and_keeps_everything_else() {
    assert_eq!(
        without_stamps("at 2026-12-01T11:26:38.123Z, since 2026-11-30 06:00 UTC; i-0abc 42"),
        "at <time>, since <time>; i-0abc 42"
    );
    assert_eq!(without_stamps("t=1764588398 n=123"), "t=<epoch> n=123");
    let mut v = json!({"a": 1764588398u64, "b": 1764588398123u64, "c": 7});
    normalize(&mut v);
    assert_eq!(v, json!({"a": "<epoch>", "b": "<epoch-ms>", "c": 7}));
}

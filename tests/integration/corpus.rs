//! Hostile and malformed input at the front door, through the real binaries
//! (the event function and the sweep function) and the real runtime loop:
//! every case gets a clear error or a logged ignore, never a crash, and the
//! process serves every case that follows.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::fixture;
use crate::runtime::{start_function, start_sweep_function, Function, RuntimeApi};

/// What the function must answer: a response (`Ok`) or an error, and a
/// piece of text the answer must contain.
struct Case {
    name: &'static str,
    payload: Vec<u8>,
    error: bool,
    expect: &'static str,
}

fn case(name: &'static str, payload: Vec<u8>, error: bool, expect: &'static str) -> Case {
    Case {
        name,
        payload,
        error,
        expect,
    }
}

fn js(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn launch() -> Value {
    fixture("run-instances-compliant.json")
}

fn edit(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = launch();
    f(&mut v);
    js(&v)
}

fn items(v: &mut Value) -> &mut Value {
    &mut v["detail"]["responseElements"]["instancesSet"]["items"]
}

fn corpus() -> Vec<Case> {
    let compliant_item = launch()["detail"]["responseElements"]["instancesSet"]["items"][0].clone();
    let thousand: Vec<Value> = (0..1000)
        .map(|n| {
            let mut i = compliant_item.clone();
            i["instanceId"] = format!("i-{n:017x}").into();
            i
        })
        .collect();
    let mut deep = String::new();
    for _ in 0..5000 {
        deep.push('[');
    }
    vec![
        case(
            "empty object",
            b"{}".to_vec(),
            false,
            "not an EventBridge event",
        ),
        case("null", b"null".to_vec(), false, "not an EventBridge event"),
        case(
            "empty list",
            b"[]".to_vec(),
            false,
            "not an EventBridge event",
        ),
        case(
            "a number",
            b"42".to_vec(),
            false,
            "not an EventBridge event",
        ),
        case(
            "a string",
            b"\"RunInstances\"".to_vec(),
            false,
            "not an EventBridge event",
        ),
        case(
            "not JSON",
            b"hello, lambda".to_vec(),
            true,
            "failed to deserialize the incoming data",
        ),
        case(
            "empty body",
            Vec::new(),
            true,
            "failed to deserialize the incoming data",
        ),
        case(
            "truncated JSON",
            b"{\"source\": \"aws.ec2\", \"detail-type\": \"AWS API Ca".to_vec(),
            true,
            "failed to deserialize the incoming data",
        ),
        case(
            "nesting 5000 deep",
            deep.into_bytes(),
            true,
            "failed to deserialize the incoming data",
        ),
        case(
            "unknown source",
            js(&json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {}})),
            false,
            "is not aws.ec2",
        ),
        case(
            "state-change notification naming no region",
            js(
                &json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"instance-id": "i-0123456789abcdef0", "state": "pending"}}),
            ),
            true,
            "names no region",
        ),
        case(
            "state-change notification of an instance stopping",
            js(&{
                let mut v = fixture("state-change-pending.json");
                v["detail"]["state"] = json!("stopping");
                v
            }),
            false,
            "only pending and running start one",
        ),
        case(
            "state-change notification with an instance id not one",
            js(&{
                let mut v = fixture("state-change-pending.json");
                v["detail"]["instance-id"] = json!("i-../../etc");
                v
            }),
            true,
            "is not an instance id",
        ),
        case(
            "scheduled event naming no usable region",
            js(&{
                let mut v = fixture("scheduled-event.json");
                v["region"] = json!("not/a-region");
                v
            }),
            true,
            "names no region",
        ),
        case(
            "unknown event name",
            edit(|v| v["detail"]["eventName"] = "TerminateInstances".into()),
            false,
            "not one imds-guard acts on",
        ),
        case(
            "event name not a string",
            edit(|v| v["detail"]["eventName"] = json!(7)),
            false,
            "without eventName",
        ),
        case(
            "detail null",
            edit(|v| v["detail"] = Value::Null),
            true,
            "detail is null",
        ),
        case(
            "detail a string",
            edit(|v| v["detail"] = "RunInstances".into()),
            true,
            "detail is a string",
        ),
        case(
            "detail a list",
            edit(|v| v["detail"] = json!([1, 2])),
            true,
            "detail is a list",
        ),
        case(
            "ec2 envelope with bad time",
            edit(|v| v["time"] = "yesterday".into()),
            true,
            "unreadable EventBridge envelope",
        ),
        case(
            // Taken for a response CloudTrail cut: the instances are looked
            // up by the client token (EC2 is unreachable here).
            "responseElements null, no errorCode",
            edit(|v| v["detail"]["responseElements"] = Value::Null),
            true,
            "by client token",
        ),
        case(
            "responseElements null, and no client token either",
            edit(|v| {
                v["detail"]["responseElements"] = Value::Null;
                v["detail"]["requestParameters"]
                    .as_object_mut()
                    .map(|p| p.remove("clientToken"));
            }),
            true,
            "neither a reservation id nor a client token",
        ),
        // (One item as the object itself is read as a list of one:
        // event::tests::an_items_list_of_one_may_be_the_object_itself.)
        case(
            "items a string",
            edit(|v| *items(v) = json!("i-0123456789abcdef0")),
            true,
            "is a string, not a list",
        ),
        case(
            "items empty",
            edit(|v| *items(v) = json!([])),
            true,
            "items is empty",
        ),
        case(
            "item a string",
            edit(|v| *items(v) = json!(["i-0123456789abcdef0"])),
            true,
            "items[0]: item is a string",
        ),
        case(
            "id a number",
            edit(|v| items(v)[0]["instanceId"] = json!(12345)),
            true,
            "instanceId is a number",
        ),
        case(
            "id malformed",
            edit(|v| items(v)[0]["instanceId"] = "i-xyz".into()),
            true,
            "is not an instance id",
        ),
        case(
            "id with a newline",
            edit(|v| items(v)[0]["instanceId"] = "i-0123456789abcdef0\nSubject: hi".into()),
            true,
            "is not an instance id",
        ),
        case(
            "region with a newline",
            edit(|v| v["detail"]["awsRegion"] = "us-east-1\n".into()),
            true,
            "is not a region",
        ),
        case(
            "no region anywhere",
            edit(|v| {
                v["detail"].as_object_mut().unwrap().remove("awsRegion");
                v.as_object_mut().unwrap().remove("region");
            }),
            true,
            "no awsRegion",
        ),
        case(
            "errorCode a number",
            edit(|v| v["detail"]["errorCode"] = json!(403)),
            false,
            "failed with 403",
        ),
        case(
            "1,000 instances",
            edit(|v| *items(v) = Value::Array(thousand.clone())),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "duplicate ids",
            edit(|v| {
                let i = items(v)[0].clone();
                *items(v) = json!([i.clone(), i]);
            }),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "100 KB user agent",
            edit(|v| v["detail"]["userAgent"] = "A".repeat(100 * 1024).into()),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "control characters in text",
            edit(|v| {
                v["detail"]["userAgent"] = "curl\r\n\u{1b}[31mred\u{7}".into();
                v["detail"]["userIdentity"]["arn"] =
                    "arn:aws:iam::111122223333:user/a\nb\u{0}".into();
            }),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "unicode tag values",
            edit(|v| {
                items(v)[0]["tagSet"] =
                    json!({"items": [{"key": "Name", "value": "ωeb-\u{202e}1"}, {"key": 5}]})
            }),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "identity fields of the wrong type",
            edit(|v| {
                v["detail"]["userIdentity"] =
                    json!({"arn": 1, "sessionContext": "x", "invokedBy": []})
            }),
            false,
            "\"outcome\":\"compliant\"",
        ),
        case(
            "modify without InstanceId",
            js(&{
                let mut m = fixture("modify-metadata-options-revert.json");
                m["detail"]["requestParameters"] =
                    json!({"ModifyInstanceMetadataOptionsRequest": {"HttpTokens": "optional"}});
                m["detail"]
                    .as_object_mut()
                    .unwrap()
                    .remove("responseElements");
                m
            }),
            true,
            "names no InstanceId",
        ),
        case(
            "modify with an id list",
            js(&{
                let mut m = fixture("modify-metadata-options-revert.json");
                m["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"]
                    ["InstanceId"] = json!(["i-0123456789abcdef0"]);
                m
            }),
            true,
            "is not an instance id",
        ),
        case(
            "and then a good event",
            js(&launch()),
            false,
            "\"outcome\":\"compliant\"",
        ),
    ]
}

/// Thirty cases that differ: no name, and no payload, twice (a copied case
/// would count without testing anything new), and both answers, an error
/// and a logged ignore, among them.
#[test]
fn the_corpus_has_thirty_distinct_cases_of_both_kinds() {
    let cases = corpus();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    let payloads: std::collections::BTreeSet<&[u8]> =
        cases.iter().map(|c| c.payload.as_slice()).collect();
    assert_eq!(names.len(), cases.len(), "a name is used twice");
    assert_eq!(payloads.len(), cases.len(), "a payload is used twice");
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let errors = cases.iter().filter(|c| c.error).count();
    assert!(
        errors >= 5 && cases.len() - errors >= 5,
        "{errors} errors of {}",
        cases.len()
    );
}

#[test]
fn every_hostile_case_gets_an_answer_and_the_event_function_keeps_serving() {
    serves_the_corpus(start_function, true);
}

#[test]
fn every_hostile_case_gets_an_answer_and_the_sweep_function_keeps_serving() {
    serves_the_corpus(start_sweep_function, false);
}

/// Runs the corpus through one binary. The event function takes no
/// scheduled event: it answers one as ignored, naming the sweep function.
fn serves_the_corpus(start: fn(&RuntimeApi, &[(&str, &str)]) -> Function, event_function: bool) {
    let cases = corpus();
    let api = RuntimeApi::start(cases.iter().map(|c| c.payload.clone()).collect());
    let mut function = start(&api, &[]);
    let answers = api.answers(cases.len(), Duration::from_secs(120));
    let alive = function.alive();
    let (_, log) = function.stop();
    assert!(
        alive,
        "the function died; log tail:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    assert_eq!(answers.len(), cases.len(), "every case answered");
    let mut wrong = Vec::new();
    for (c, a) in cases.iter().zip(&answers) {
        let scheduled = String::from_utf8_lossy(&c.payload).contains("Scheduled Event");
        let (error, expect) = if event_function && scheduled {
            (false, "the sweep function sweeps")
        } else {
            (c.error, c.expect)
        };
        let kind_ok = (a.kind == "error") == error;
        if !kind_ok || !a.body.contains(expect) {
            wrong.push(format!(
                "{}: got {} {}",
                c.name,
                a.kind,
                &a.body[..a.body.len().min(300)]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n  {}",
        wrong.join("\n  ")
    );
    assert!(!log.contains("panicked"), "a panic was logged");
    // Logs are capped: no 100 KB line came from the user agent.
    assert!(
        log.lines().all(|l| l.len() < 32 * 1024),
        "an uncapped log line"
    );
}

//! Real CloudTrail and EventBridge records, captured by other projects
//! (events/real/, each with its source and licence in PROVENANCE.md),
//! through the parser, the event function's path (on the in-memory AWS) and
//! `imds-guard check`: each ends decided, ignored with a reason, or failed
//! naming why; never a panic, never a silent success.

use std::path::PathBuf;
use std::process::Command;

use imds_guard::event::{self, EventError, GuardEvent};
use imds_guard::guard::GuardError;
use imds_guard::report::{Outcome, Status};
use serde_json::{json, Value};

use crate::fake::FakeCloud;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events/real")
}

/// Every record, by file name, as EventBridge delivers it: a raw CloudTrail
/// record (no `detail-type`) is wrapped in the envelope CloudTrail's events
/// arrive in.
fn records() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, envelope(v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn envelope(record: Value) -> Value {
    if record.get("detail-type").is_some() {
        return record;
    }
    let source = match record["eventSource"].as_str() {
        Some("autoscaling.amazonaws.com") => "aws.autoscaling",
        _ => "aws.ec2",
    };
    let time = record["eventTime"]
        .as_str()
        .filter(|t| t.contains('T'))
        .unwrap_or("2024-01-01T00:00:00Z");
    json!({
        "version": "0",
        "id": record["eventID"].as_str().unwrap_or("00000000-0000-4000-8000-000000000000"),
        "detail-type": "AWS API Call via CloudTrail",
        "source": source,
        "account": record["recipientAccountId"].as_str().or(record["userIdentity"]["accountId"].as_str()).unwrap_or("111122223333"),
        "time": time,
        "region": record["awsRegion"].as_str().unwrap_or("us-east-1"),
        "resources": [],
        "detail": record,
    })
}

#[test]
fn the_corpus_holds_real_records_of_the_events_the_guard_handles() {
    let names: Vec<String> = records().into_iter().map(|(n, _)| n).collect();
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert!(count("run-instances-") >= 3, "{names:?}");
    assert!(count("state-change-") >= 3, "{names:?}");
    assert!(count("scheduled-event-") >= 3, "{names:?}");
    assert!(count("modify-instance-metadata-options-") >= 1, "{names:?}");
    let provenance = std::fs::read_to_string(dir().join("PROVENANCE.md")).unwrap();
    for n in &names {
        assert!(
            provenance.contains(&format!("`{n}`")),
            "{n} has no provenance"
        );
    }
}

/// What the parser makes of each: an event, or an error naming why.
#[test]
fn every_real_record_parses_to_an_event_or_a_named_error() {
    for (name, ev) in records() {
        match event::parse(&ev) {
            Ok(GuardEvent::Ignored { reason }) => assert!(!reason.is_empty(), "{name}"),
            Ok(GuardEvent::Instances {
                instances,
                unreadable,
                ..
            }) => assert!(!instances.is_empty() || !unreadable.is_empty(), "{name}"),
            Ok(_) => {}
            Err(EventError::Malformed { reason, .. }) => assert!(!reason.is_empty(), "{name}"),
        }
    }
}

/// Each through the event function's path, on an in-memory AWS that shows
/// every instance a record names (at optional: the guard must decide it).
#[tokio::test(start_paused = true)]
async fn every_real_record_through_the_event_path_is_decided_ignored_or_failed_by_name() {
    let mut seen = Vec::new();
    for (name, ev) in records() {
        let cloud = FakeCloud::new();
        if let Ok(GuardEvent::Instances { instances, .. }) = event::parse(&ev) {
            for i in &instances {
                cloud.add(&i.instance_id, "optional", 1);
            }
        }
        let g = cloud.guard(&[("GUARD_MODE", "enforce")]);
        let outcome = match g.handle_event(&ev, None).await {
            Ok(r) => {
                match r.status {
                    Status::Ignored | Status::Refused => {
                        assert!(
                            r.reason.as_deref().is_some_and(|x| !x.is_empty()),
                            "{name}: ignored silently"
                        )
                    }
                    Status::Handled => {
                        assert!(!r.instances.is_empty(), "{name}: handled, nothing decided");
                        for i in &r.instances {
                            // Decided: compliant as launched, or fixed.
                            match i.outcome {
                                Outcome::Compliant => {}
                                Outcome::Remediated => assert_eq!(
                                    cloud.tokens(&i.instance_id),
                                    "required",
                                    "{name}: {} reported fixed, not fixed",
                                    i.instance_id
                                ),
                                other => panic!("{name}: {} ended {other:?}", i.instance_id),
                            }
                        }
                    }
                    Status::FailedCall => {}
                    other => panic!("{name}: {other:?} from the event function"),
                }
                format!("{:?}", r.status)
            }
            Err(GuardError::Malformed(e)) => {
                assert!(!e.to_string().is_empty(), "{name}");
                "malformed".into()
            }
            Err(e) => panic!("{name}: {e}"),
        };
        seen.push((name, outcome));
    }
    let is = |prefix: &str, want: &str| {
        seen.iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .all(|(_, o)| o == want)
    };
    // A launch that answered its instances is decided, a failed call is
    // said to have launched nothing; what the guard does not act on is
    // ignored with its reason.
    for (n, o) in &seen {
        let want = match n.as_str() {
            // A dry run that failed (errorCode, no responseElements).
            "run-instances-panther-4.json" => "FailedCall",
            // A failed call in a region that does not exist ("ca-south-3r",
            // as the source has it): refused as malformed, by name.
            "run-instances-panther-2.json" => "malformed",
            // Their envelope says `source: aws.sqs`: not an event of EC2's.
            n if n.contains("-flatiron-") => "Ignored",
            n if n.starts_with("run-instances-") => "Handled",
            // Pending and running start one (the running record is most of
            // what other projects captured); stopped and terminated do not.
            "state-change-pending-lambda-events-1.json" => "Handled",
            "state-change-running-manageiq-1.json" => "Handled",
            n if n.starts_with("state-change-") => "Ignored",
            _ => continue,
        };
        assert_eq!(o, want, "{n}: {seen:?}");
    }
    assert!(is("scheduled-event-", "Ignored"), "{seen:?}");
}

/// `imds-guard check` on each: exit 0, 1 or 2 with something said; a panic
/// (exit 101) or a signal fails.
#[test]
fn imds_guard_check_answers_every_real_record() {
    let tmp = std::env::temp_dir().join(format!("imds-guard-real-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (name, ev) in records() {
        let file = tmp.join(&name);
        std::fs::write(&file, serde_json::to_vec(&ev).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_imds-guard"))
            .arg("check")
            .arg(&file)
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{name}: {:?}\n{said}",
            out.status
        );
        assert!(!said.trim().is_empty(), "{name}: said nothing");
        assert!(!said.contains("panicked"), "{name}: {said}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

//! Two processes claim the news of the same 50 launches at once, as two
//! event functions do when both triggers (CloudTrail's `RunInstances` and
//! EC2's state change) arrive together: each launch is won by exactly one
//! of them, though each sends its claims side by side
//! (`account_region::claim_each`). Against the emulator's DynamoDB, whose
//! conditional writes are what this rests on; the processes are this test
//! binary started twice as workers.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use imds_guard::account_region::claim_each;
use imds_guard::memory::{Claim, Kind, Record};

const PARTITION: &str = "111122223333#us-east-1";
const LAUNCHES: usize = 50;

fn ids() -> Vec<String> {
    (0..LAUNCHES).map(|i| format!("i-0race{i:012x}")).collect()
}

/// One worker: claims every launch for its own event, and prints what it
/// won. Runs only when started by the test below (which sets its table).
#[tokio::test]
#[ignore = "a worker process of two_processes_claiming_the_same_launches_win_each_once"]
async fn claim_worker() {
    let (Ok(table), Ok(event)) = (
        std::env::var("CLAIM_RACE_TABLE"),
        std::env::var("CLAIM_RACE_EVENT"),
    ) else {
        return;
    };
    let base = crate::common::emulator_sdk().await;
    let memory = imds_guard::aws::memory::Memory {
        client: aws_sdk_dynamodb::Client::new(&base),
        table,
    };
    let now = imds_guard::clock::now_secs();
    let records: Vec<Record> = ids()
        .iter()
        .map(|id| {
            Record::new(
                Kind::Noticed,
                PARTITION,
                id,
                Some(&event),
                now,
                Duration::from_secs(3600),
            )
        })
        .collect();
    for (r, claim) in records.iter().zip(claim_each(&memory, &records, now).await) {
        match claim {
            Ok(Claim::Ours) => println!("WON {}", r.id()),
            Ok(Claim::Taken) => println!("LOST {}", r.id()),
            Err(e) => println!("ERROR {} {e}", r.id()),
        }
    }
}

#[tokio::test]
async fn two_processes_claiming_the_same_launches_win_each_once() {
    let table = crate::emulator::memory_table("imds-guard-claims-race").await;
    let start = |event: &str| {
        Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "claims_race::claim_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CLAIM_RACE_TABLE", &table)
            .env("CLAIM_RACE_EVENT", event)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker starts")
    };
    // Both started before either is waited for: their claims interleave.
    let workers = [start("event-cloudtrail"), start("event-state-change")];
    let mut won: Vec<BTreeSet<String>> = Vec::new();
    for w in workers {
        let out = w.wait_with_output().expect("a worker ends");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("ERROR"), "{text}");
        // The harness's own "test ... " may open a line the worker writes.
        let answers = text
            .lines()
            .filter(|l| l.contains("WON ") || l.contains("LOST "))
            .count();
        assert_eq!(answers, LAUNCHES, "every claim answered: {text}");
        won.push(
            text.lines()
                .filter_map(|l| l.split("WON ").nth(1))
                .map(str::to_string)
                .collect(),
        );
    }
    let all: BTreeSet<String> = ids().into_iter().collect();
    assert!(won[0].is_disjoint(&won[1]), "a launch won twice");
    let union: BTreeSet<String> = won[0].union(&won[1]).cloned().collect();
    assert_eq!(union, all, "a launch won by no one");
}

//! Principal exemptions confirmed by CloudTrail (`confirm`,
//! `exemption_check`), on the in-memory fake: a forged launch records no
//! exemption that lasts, a real one is left alone while CloudTrail lags and
//! kept once it confirms, and a record that names another principal ends
//! it at once.

use imds_guard::clock::now_secs;
use imds_guard::confirm::TrailRecord;
use imds_guard::memory::Record;
use imds_guard::report::Outcome;
use serde_json::{json, Value};

use crate::common::launch_event;
use crate::common::scheduled;
use crate::fake::FakeCloud;

const VICTIM: &str = "i-0ddddddddddddddd1";
const EVENT: &str = "a1b2c3d4-0000-4000-8000-00000000e001";
const PACKER: &str = "arn:aws:iam::111122223333:role/packer-ci";

fn cloud() -> FakeCloud {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(VICTIM, "optional", 2);
    cloud
}

/// A launch event of `VICTIM` by `role`, with CloudTrail's event id `id`:
/// what anyone who may invoke the function can write.
fn launch_by(role: &str, id: &str) -> Value {
    let mut e = launch_event("run-instances-cli-multi.json", &[VICTIM.into()], None);
    let name = role.rsplit('/').next().unwrap();
    e["detail"]["eventID"] = id.into();
    e["detail"]["userIdentity"] = json!({
        "type": "AssumedRole",
        "arn": format!("arn:aws:sts::111122223333:assumed-role/{name}/build-7"),
        "accountId": "111122223333",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role,
            "accountId": "111122223333", "userName": name}}
    });
    e
}

/// CloudTrail's own record of that launch, by `role`.
fn trail_record(role: &str, id: &str) -> TrailRecord {
    TrailRecord {
        record: launch_by(role, id)["detail"].to_string(),
        instances: vec![VICTIM.into()],
    }
}

fn check() -> Value {
    json!({"imds_guard_check_exemptions": true})
}

/// Every entry waiting for CloudTrail, seen as `ago` seconds ago.
fn age_entries(cloud: &FakeCloud, ago: u64) {
    for mut r in cloud.records("unconfirmed#") {
        r.at = now_secs() - ago;
        cloud.put_record(r);
    }
}

fn live_exemption(cloud: &FakeCloud) -> Option<Record> {
    cloud
        .records("exempt#")
        .into_iter()
        .find(|r| r.id() == VICTIM && r.live(now_secs()))
}

/// The guard these tests run: enforcing, telling, remembering, with Packer's
/// roles exempt at launch (the exemption CloudTrail must confirm).
fn packer_exempt(cloud: &FakeCloud) -> crate::fake::TestGuard<'_> {
    cloud
        .test_guard()
        .enforcing()
        .notifying()
        .remembering()
        .with(&[("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer-*")])
}

#[tokio::test(start_paused = true)]
async fn a_forged_launch_with_the_victims_real_ids_but_no_cloudtrail_record_records_no_exemption() {
    let cloud = cloud();
    let g = packer_exempt(&cloud).build();
    // The launch time and reservation id are the victim's real ones (the
    // fake describes the instance as it is); only the principal is forged.
    let r = g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Exempt);
    assert_eq!(cloud.tokens(VICTIM), "optional");
    let held = live_exemption(&cloud).expect("held while CloudTrail is asked");
    assert!(imds_guard::confirm::is_unconfirmed(&held));
    assert!(held.expires_at <= now_secs() + imds_guard::confirm::WINDOW_SECS);

    // A sweep honours it, and does not renew it.
    let swept = g.handle(&scheduled()).await.unwrap();
    assert_eq!(swept.count(Outcome::Exempt), 1);
    assert_eq!(live_exemption(&cloud).unwrap().expires_at, held.expires_at);

    // The check: no record yet, within the window: it waits.
    let answer = g.handle_payload(&check(), None).await.unwrap();
    assert_eq!(answer["waiting"], 1, "{answer}");
    assert_eq!(cloud.tokens(VICTIM), "optional");

    // An hour on, still no record: ended, and the instance decided again.
    age_entries(&cloud, imds_guard::confirm::WINDOW_SECS + 60);
    let answer = g.handle_payload(&check(), None).await.unwrap();
    assert_eq!(
        answer["ended"][0]["instance"],
        format!("111122223333/us-east-1/{VICTIM}")
    );
    assert!(
        answer["ended"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no record"),
        "{answer}"
    );
    assert_eq!(answer["decided"]["remediated"], 1, "{answer}");
    assert_eq!(cloud.tokens(VICTIM), "required");
    assert!(live_exemption(&cloud).is_none(), "nothing of it is kept");
    // And the next check has nothing left to ask.
    let answer = g.handle_payload(&check(), None).await.unwrap();
    assert_eq!(
        (
            answer["waiting"].as_u64(),
            answer["ended"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test(start_paused = true)]
async fn a_real_exempt_launch_is_left_alone_while_cloudtrail_lags_and_kept_once_it_confirms() {
    let cloud = cloud();
    let g = packer_exempt(&cloud).build();
    g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    // CloudTrail lags: checked, waiting; a sweep meanwhile leaves it alone.
    assert_eq!(
        g.handle_payload(&check(), None).await.unwrap()["waiting"],
        1
    );
    g.handle(&scheduled()).await.unwrap();
    assert_eq!(cloud.tokens(VICTIM), "optional");
    // CloudTrail's record arrives: kept, as any confirmed exemption.
    cloud.record_in_trail(EVENT, trail_record(PACKER, EVENT));
    let answer = g.handle_payload(&check(), None).await.unwrap();
    assert_eq!(
        answer["confirmed"][0],
        format!("111122223333/us-east-1/{VICTIM}"),
        "{answer}"
    );
    let kept = live_exemption(&cloud).unwrap();
    assert!(!imds_guard::confirm::is_unconfirmed(&kept));
    assert!(kept.expires_at > now_secs() + 300 * 24 * 3600);
    // Past the window it stands, and sweeps honour it.
    age_entries(&cloud, imds_guard::confirm::WINDOW_SECS + 60);
    g.handle(&scheduled()).await.unwrap();
    assert_eq!(cloud.tokens(VICTIM), "optional");
    assert_eq!(cloud.count("LookupEvents"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_record_of_the_launch_by_another_principal_ends_the_exemption_at_once() {
    let cloud = cloud();
    let g = packer_exempt(&cloud).build();
    g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    // The real launch was someone else's: the event named an exempt role.
    cloud.record_in_trail(
        EVENT,
        trail_record("arn:aws:iam::111122223333:role/DevOps", EVENT),
    );
    let answer = g.handle_payload(&check(), None).await.unwrap();
    let why = answer["ended"][0]["why"].as_str().unwrap();
    assert!(why.contains("role/DevOps"), "{why}");
    assert_eq!(cloud.tokens(VICTIM), "required");
    assert!(live_exemption(&cloud).is_none());
}

#[tokio::test(start_paused = true)]
async fn forging_the_launch_again_does_not_restart_its_window() {
    let cloud = cloud();
    let g = packer_exempt(&cloud).build();
    g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    age_entries(&cloud, 50 * 60);
    // The same forged event again, and another with a new id.
    g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    g.handle(&launch_by(PACKER, "a1b2c3d4-0000-4000-8000-00000000e002"))
        .await
        .unwrap();
    let entries = cloud.records("unconfirmed#");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].event_id.as_deref(), Some(EVENT));
    assert!(
        entries[0].at <= now_secs() - 50 * 60,
        "the first claim's time stands"
    );
    // So the window still ends an hour after the first.
    age_entries(&cloud, imds_guard::confirm::WINDOW_SECS + 60);
    g.handle_payload(&check(), None).await.unwrap();
    assert_eq!(cloud.tokens(VICTIM), "required");
}

/// The exemption could not be written: the launch event fails, and its
/// retry (the same event) writes it; only then is the entry marked told.
#[tokio::test(start_paused = true)]
async fn a_retried_launch_event_writes_the_exemption_its_first_delivery_could_not() {
    let cloud = cloud();
    let g = packer_exempt(&cloud).build();
    cloud.fail(
        "BatchWriteItem",
        1,
        crate::fake::api_error("ProvisionedThroughputExceededException"),
    );
    let first = g.handle(&launch_by(PACKER, EVENT)).await;
    assert!(
        first.is_err(),
        "a launch whose exemption was not recorded fails"
    );
    assert!(live_exemption(&cloud).is_none());
    g.handle(&launch_by(PACKER, EVENT)).await.unwrap();
    let held = live_exemption(&cloud).expect("the retry records it");
    assert!(imds_guard::confirm::is_unconfirmed(&held));
    assert_eq!(cloud.tokens(VICTIM), "optional");
}

//! `imds-guard enforce-native` on every path (`native_flow`), against the
//! in-memory fake: not ready, ready, `--apply` recording the prior values,
//! `--undo` restoring them, refused by IAM, managed by a declarative policy,
//! `--force`; and the EC2 adapter's request as the SDK sends it
//! (aws-smithy-mocks). AWS's own answer to a real account is not shown here.

use imds_guard::config::Config;
use imds_guard::memory::Kind;
use imds_guard::native::{Ask, Decision, Values};
use imds_guard::native_flow::enforce;
use imds_guard::policy::AccountDefaults;

use crate::common::config;
use crate::fake::{api_error, FakeCloud};

const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

fn settings(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![
        ("MEMORY_TABLE", "imds-guard-memory"),
        (
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:imds-guard",
        ),
        ("CHECK_METADATA_NO_TOKEN", "true"),
        ("LOOKUP_IMDSV1_CALLERS", "true"),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

/// One compliant instance, the account default at `required`, no
/// enforcement yet: ready.
fn ready_cloud() -> FakeCloud {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.add("i-0aaaaaaaaaaaaaaaa", "required", 1);
    cloud.set_defaults(Some(AccountDefaults {
        http_tokens: Some("required".into()),
        ..AccountDefaults::default()
    }));
    cloud
}

fn ask() -> Ask {
    Ask {
        account: ACCOUNT.into(),
        region: REGION.into(),
        ..Ask::default()
    }
}

fn native_records(cloud: &FakeCloud) -> Vec<imds_guard::memory::Record> {
    cloud.records(Kind::Native.prefix())
}

#[tokio::test]
async fn ready_without_apply_says_what_it_would_change_and_changes_nothing() {
    let cloud = ready_cloud();
    let done = enforce(&settings(&[]), &cloud.clients(), &ask(), false)
        .await
        .unwrap();
    assert_eq!(
        done.decision,
        Decision::Change {
            from: Values {
                http_tokens: "required".into(),
                http_tokens_enforced: "no-preference".into()
            },
            to: Values::enforced(),
            forced: None
        }
    );
    assert_eq!(
        done.step.unwrap().status,
        imds_guard::rollout::Status::Ready
    );
    assert!(!done.applied);
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 0);
    assert_eq!(
        cloud.count("ModifyInstanceMetadataOptions"),
        0,
        "an audit sweep"
    );
    assert!(native_records(&cloud).is_empty());
    assert!(cloud.published().is_empty());
}

#[tokio::test]
async fn apply_records_the_prior_values_then_undo_puts_back_exactly_those() {
    let cloud = ready_cloud();
    let cfg = settings(&[]);
    let done = enforce(&cfg, &cloud.clients(), &ask(), true).await.unwrap();
    assert!(done.applied);
    let d = cloud.defaults().unwrap();
    assert_eq!(d.http_tokens.as_deref(), Some("required"));
    assert_eq!(d.http_tokens_enforced.as_deref(), Some("enabled"));
    let records = native_records(&cloud);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].pk, "native#111122223333#us-east-1");
    assert_eq!(records[0].data["http_tokens"], "required");
    assert_eq!(records[0].data["http_tokens_enforced"], "no-preference");
    assert_eq!(records[0].data["by"], crate::fake::RESPONDER);
    let sent = cloud.published();
    assert_eq!(sent.len(), 1, "always published");
    assert!(sent[0]
        .subject
        .contains("switched on in 111122223333/us-east-1"));
    let body: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(body["before"]["http_tokens_enforced"], "no-preference");
    assert_eq!(body["after"]["http_tokens_enforced"], "enabled");
    assert_eq!(body["applied"], true);

    // Run again: nothing to change.
    let again = enforce(&cfg, &cloud.clients(), &ask(), true).await.unwrap();
    assert!(matches!(again.decision, Decision::Nothing(_)));
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 1);

    let mut undo = ask();
    undo.undo = true;
    let done = enforce(&cfg, &cloud.clients(), &undo, true).await.unwrap();
    assert!(done.applied);
    let d = cloud.defaults().unwrap();
    assert_eq!(d.http_tokens.as_deref(), Some("required"));
    assert_eq!(d.http_tokens_enforced, None, "back to no preference");
    assert_eq!(cloud.published().len(), 2);
    assert!(cloud.published()[1].subject.contains("undone"));
    // A second undo finds the values already as recorded.
    let again = enforce(&cfg, &cloud.clients(), &undo, true).await.unwrap();
    assert!(matches!(again.decision, Decision::Nothing(_)));
}

#[tokio::test]
async fn not_ready_refuses_naming_the_blockers_and_force_needs_its_reason_and_account() {
    let cloud = ready_cloud();
    cloud.add("i-0bbbbbbbbbbbbbbbb", "optional", 1);
    cloud.set_no_token("i-0bbbbbbbbbbbbbbbb", 0.0);
    let cfg = settings(&[]);
    let done = enforce(&cfg, &cloud.clients(), &ask(), true).await.unwrap();
    let Decision::Refuse(why) = &done.decision else {
        panic!("{:?}", done.decision)
    };
    assert!(
        why.contains("1 instance(s) still at HttpTokens=optional"),
        "{why}"
    );
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 0);
    assert!(native_records(&cloud).is_empty());

    let mut forced = ask();
    forced.force = Some(("maintenance window CHG-42".into(), "111122223334".into()));
    let done = enforce(&cfg, &cloud.clients(), &forced, true)
        .await
        .unwrap();
    assert!(matches!(&done.decision, Decision::Refuse(w) if w.contains("type it again")));
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 0);

    forced.force = Some(("maintenance window CHG-42".into(), ACCOUNT.into()));
    let done = enforce(&cfg, &cloud.clients(), &forced, true)
        .await
        .unwrap();
    assert!(done.applied);
    assert_eq!(
        cloud.defaults().unwrap().http_tokens_enforced.as_deref(),
        Some("enabled")
    );
    let sent = cloud.published();
    assert!(sent[0].subject.ends_with("(forced)"), "{}", sent[0].subject);
    let body: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap();
    let f = body["forced"].as_str().unwrap();
    assert!(
        f.contains("CHG-42") && f.contains("still at HttpTokens=optional"),
        "{f}"
    );
}

#[tokio::test]
async fn imdsv1_use_not_measured_is_not_ready() {
    let cloud = ready_cloud();
    let cfg = config(&[
        ("MEMORY_TABLE", "imds-guard-memory"),
        ("CHECK_METADATA_NO_TOKEN", "true"),
    ]);
    let done = enforce(&cfg, &cloud.clients(), &ask(), true).await.unwrap();
    assert!(
        matches!(&done.decision, Decision::Refuse(w) if w.contains("IMDSv1 use not measured") && w.contains("LOOKUP_IMDSV1_CALLERS")),
        "{:?}",
        done.decision
    );
}

#[tokio::test]
async fn refused_by_iam_changes_nothing_says_so_and_keeps_the_record() {
    let cloud = ready_cloud();
    cloud.fail(
        "ModifyInstanceMetadataDefaults",
        1,
        api_error("UnauthorizedOperation"),
    );
    let err = enforce(&settings(&[]), &cloud.clients(), &ask(), true)
        .await
        .unwrap_err();
    assert!(
        err.contains("EC2 refused the change") && err.contains("UnauthorizedOperation"),
        "{err}"
    );
    assert_eq!(cloud.defaults().unwrap().http_tokens_enforced, None);
    let sent = cloud.published();
    assert_eq!(sent.len(), 1, "what was tried is published too");
    let body: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(body["applied"], false);
    assert_eq!(native_records(&cloud).len(), 1);
}

#[tokio::test]
async fn defaults_a_declarative_policy_manages_are_refused_before_any_sweep() {
    let cloud = ready_cloud();
    cloud.set_defaults(Some(AccountDefaults {
        http_tokens: Some("required".into()),
        managed_by: Some("declarative-policy".into()),
        ..AccountDefaults::default()
    }));
    let done = enforce(&settings(&[]), &cloud.clients(), &ask(), true)
        .await
        .unwrap();
    assert!(matches!(&done.decision, Decision::Refuse(w) if w.contains("declarative policy")));
    assert_eq!(cloud.count("DescribeInstances"), 0);
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 0);
}

#[tokio::test]
async fn another_account_or_no_memory_is_refused_before_anything_is_read() {
    let cloud = ready_cloud();
    let mut other = ask();
    other.account = "444455556666".into();
    let err = enforce(&settings(&[]), &cloud.clients(), &other, true)
        .await
        .unwrap_err();
    assert!(
        err.contains("act in account 111122223333, not 444455556666"),
        "{err}"
    );
    let err = enforce(&config(&[]), &cloud.clients(), &ask(), true)
        .await
        .unwrap_err();
    assert!(err.contains("MEMORY_TABLE"), "{err}");
    assert_eq!(cloud.count("GetInstanceMetadataDefaults"), 0);
}

/// The request EC2 receives: both defaults, never a dry run.
#[tokio::test]
async fn the_adapter_sends_both_defaults() {
    use aws_sdk_ec2::operation::modify_instance_metadata_defaults::ModifyInstanceMetadataDefaultsOutput;
    use aws_sdk_ec2::types::{DefaultHttpTokensEnforcedState, MetadataDefaultHttpTokensState};
    use aws_smithy_mocks::mock;
    use imds_guard::aws::Ec2Api;
    let set = mock!(aws_sdk_ec2::Client::modify_instance_metadata_defaults)
        .match_requests(|r| {
            r.http_tokens() == Some(&MetadataDefaultHttpTokensState::Required)
                && r.http_tokens_enforced() == Some(&DefaultHttpTokensEnforcedState::Enabled)
                && r.dry_run().is_none()
        })
        .then_output(|| {
            ModifyInstanceMetadataDefaultsOutput::builder()
                .r#return(true)
                .build()
        });
    let ec2 = imds_guard::aws::ec2::Ec2(crate::common::ec2(&[&set]));
    ec2.set_native_defaults("required", "enabled")
        .await
        .unwrap();
    assert_eq!(set.num_calls(), 1);
}

/// `imds-guard plan --from` a saved report: the table, whole units that are
/// ready first, and the exit status saying something is blocked.
#[test]
fn plan_reads_a_saved_report_and_puts_ready_units_first() {
    use imds_guard::report::{Outcome, RegionSweep, Report, Status, SweepSummary};
    let region = |account: &str, unit: &str, left: u64| {
        let mut r = RegionSweep::new("eu-west-1");
        r.account = Some(account.into());
        r.unit = Some(unit.into());
        r.counts.insert(Outcome::Flagged, left);
        r.imdsv1_measured = imds_guard::report::Measured {
            metadata_no_token: true,
            credentials: true,
        };
        r.account_defaults = Some(AccountDefaults {
            http_tokens: Some("required".into()),
            ..AccountDefaults::default()
        });
        r
    };
    let regions = vec![
        region("111111111111", "ou-blocked", 3),
        region("222222222222", "ou-ready", 0),
    ];
    let rollout = imds_guard::rollout::Rollout::of(
        regions
            .iter()
            .map(|r| imds_guard::rollout::step(&r.rollout_facts(&[])))
            .collect(),
    );
    let mut report = Report::handled(
        Status::Swept,
        imds_guard::config::Mode::Audit,
        Default::default(),
    );
    report.sweep = Some(SweepSummary {
        regions,
        native_enforcement: Some(rollout),
        ..SweepSummary::default()
    });
    let dir = std::env::temp_dir().join(format!("imds-guard-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sweep.json");
    std::fs::write(&file, serde_json::to_string(&report).unwrap()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .args(["plan", "--from"])
        .arg(&file)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "something is blocked: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("1 of 2 account-region(s) ready"), "{out}");
    assert!(
        lines[2].starts_with("ou-ready")
            && lines[2]
                .contains("imds-guard enforce-native --account 222222222222 --region eu-west-1"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("ou-blocked")
            && lines[3].contains("3 instance(s) still at HttpTokens=optional"),
        "{out}"
    );
    // A file without the section is refused with what to do.
    std::fs::write(&file, "{\"sweep\": {}}").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .args(["plan", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no native_enforcement section"),
        "{o:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

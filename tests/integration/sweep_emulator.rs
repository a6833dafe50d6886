//! The sweep end to end against moto's server, through both doors: the
//! function's scheduled event and the `imds-guard sweep` command. Each test
//! owns a region, so the emulator's shared state does not mix them up.

use std::process::Command;

use imds_guard::aws::RegionalClients;
use imds_guard::guard::Guard;
use imds_guard::policy::{Exemption, ReadinessVerdict};
use imds_guard::report::{Outcome, Status};
use serde_json::Value;

use crate::common::scheduled_in;
use crate::common::{config, fixture, moto_endpoint};
use crate::emulator::{ec2, launch, memory_table, seen, seen_all, sent, topic, Launch};

/// A region's mixed fleet: what a sweep must fix, leave, skip and ignore.
struct Fleet {
    optional_running: Vec<String>,
    optional_stopped: Vec<String>,
    required: Vec<String>,
    exempt: Vec<String>,
    terminated: Vec<String>,
}

impl Fleet {
    /// Every instance seeded at `optional`, running or stopped: what a sweep fixes.
    fn optional(&self) -> Vec<String> {
        self.optional_running
            .iter()
            .chain(&self.optional_stopped)
            .cloned()
            .collect()
    }
}

async fn seed(region: &str, scale: i32) -> Fleet {
    let ec2 = ec2(region).await;
    let optional_running = launch(
        &ec2,
        Launch {
            count: scale,
            hop: 2,
            ..Launch::default()
        },
    )
    .await;
    let mut optional_stopped = launch(
        &ec2,
        Launch {
            count: scale / 4 + 1,
            ..Launch::default()
        },
    )
    .await;
    ec2.stop_instances()
        .set_instance_ids(Some(optional_stopped.clone()))
        .send()
        .await
        .unwrap();
    let required = launch(
        &ec2,
        Launch {
            count: scale / 2 + 1,
            tokens: "required",
            ..Launch::default()
        },
    )
    .await;
    let exempt = launch(
        &ec2,
        Launch {
            count: 3,
            tags: &[("legacy-imds", "true")],
            ..Launch::default()
        },
    )
    .await;
    let terminated = launch(
        &ec2,
        Launch {
            count: 5,
            ..Launch::default()
        },
    )
    .await;
    ec2.terminate_instances()
        .set_instance_ids(Some(terminated.clone()))
        .send()
        .await
        .unwrap();
    optional_stopped.sort();
    Fleet {
        optional_running,
        optional_stopped,
        required,
        exempt,
        terminated,
    }
}

#[tokio::test]
async fn the_scheduled_event_sweeps_a_mixed_region_to_zero_noncompliant() {
    let region = "ap-southeast-2";
    let fleet = seed(region, 200).await;
    let topic = topic("imds-guard-sweep").await;
    let g = Guard::new(
        config(&[
            ("NOTIFY_TOPIC_ARN", &topic),
            ("EXEMPT_TAG_KEY", "legacy-imds"),
            // To zero in one run: no circuit breaker share.
            ("MAX_CHANGE_PERCENT", "100"),
        ]),
        RegionalClients::new(crate::common::emulator_sdk().await),
    );

    let report = g.handle(&scheduled_in(region)).await.unwrap();
    assert_eq!(report.status, Status::Swept);
    let sweep = report.sweep.as_ref().unwrap();
    let r = &sweep.regions[0];
    let to_fix = fleet.optional_running.len() + fleet.optional_stopped.len();
    assert_eq!(r.count(Outcome::Remediated), to_fix as u64);
    assert_eq!(r.count(Outcome::Exempt), 3);
    assert_eq!(r.count(Outcome::Flagged) + r.count(Outcome::Failed), 0);
    // The emulator refuses the server-side filter, so every live instance
    // was listed and decided here; terminated ones were never listed.
    assert!(r.listing.contains("refused"), "{}", r.listing);
    assert_eq!(
        r.examined as usize,
        to_fix + fleet.required.len() + fleet.exempt.len()
    );
    assert_eq!(r.count(Outcome::Compliant) as usize, fleet.required.len());
    assert_eq!(r.readiness.verdict, ReadinessVerdict::NotReady);
    assert!(r.readiness.reasons.iter().any(|x| x.contains("3 exempt")));
    let calls = &report.aws_calls;
    assert!(calls["DescribeInstances"] >= 2, "{calls:?}");
    assert_eq!(calls["ModifyInstanceMetadataOptions"] as usize, to_fix);
    assert_eq!(calls["Publish"], 1, "one summary, counted: {calls:?}");

    let ec2 = ec2(region).await;
    for (id, s) in seen_all(&ec2, &fleet.optional()).await {
        assert_eq!(s.tokens, "required", "{id}");
        assert_eq!(s.status_tag.as_deref(), Some("remediated"), "{id}");
    }
    // The hop limit each had is kept (moto resets fields a modify omits,
    // so this also proves every field is written back).
    assert_eq!(seen(&ec2, &fleet.optional_running[0]).await.hop, 2);
    for id in &fleet.exempt {
        assert_eq!(
            seen(&ec2, id).await.tokens,
            "optional",
            "exempt {id} untouched"
        );
    }
    for id in &fleet.terminated {
        assert_eq!(
            seen(&ec2, id).await.status_tag,
            None,
            "terminated {id} untouched"
        );
    }

    // One summary for the whole sweep, with the full counts.
    let msgs = sent(&topic);
    assert_eq!(msgs.len(), 1, "one notification per sweep");
    let (subject, body, attrs) = &msgs[0];
    assert!(
        subject.starts_with(&format!(
            "imds-guard enforce sweep: {to_fix} remediated, 3 exempt"
        )),
        "{subject}"
    );
    assert_eq!(body["counts"]["remediated"], to_fix as u64);
    assert_eq!(body["sweep"]["regions"][0]["region"], region);
    assert!(attrs["outcome"]["Value"]
        .as_str()
        .unwrap()
        .contains("remediated"));

    // A second sweep finds nothing left to do.
    let again = g.handle(&scheduled_in(region)).await.unwrap();
    let r = &again.sweep.as_ref().unwrap().regions[0];
    assert_eq!(r.count(Outcome::Remediated), 0);
    assert_eq!(
        r.count(Outcome::Compliant) as usize,
        to_fix + fleet.required.len()
    );
}

/// The sweep function's binary as a person runs it: status, stdout, stderr.
pub(crate) fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    moto_endpoint();
    let out = Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_audits_then_enforces_and_its_exit_status_gates_a_pipeline() {
    let region = "ca-central-1";
    let fleet = seed(region, 40).await;
    let to_fix = (fleet.optional_running.len() + fleet.optional_stopped.len()) as u64;
    let env = [
        ("EXEMPT_TAG_KEY", "legacy-imds"),
        ("NOTIFY_TOPIC_ARN", ""),
        ("MAX_CHANGE_PERCENT", "100"),
    ];

    // Audit writes nothing and exits 1: noncompliant instances are left.
    let (code, out, err) = cli(
        &[
            "sweep", "--region", region, "--mode", "audit", "--output", "json",
        ],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["sweep"]["regions"][0]["counts"]["flagged"], to_fix);
    assert_eq!(
        report["event"]["account"], "123456789012",
        "named from the instances' owner, without another call"
    );
    let ec2 = ec2(region).await;
    assert_eq!(
        seen(&ec2, &fleet.optional_running[0]).await.tokens,
        "optional"
    );

    // Enforce fixes them all and exits 0 (exempt instances are policy).
    let (code, out, err) = cli(&["sweep", "--region", region, "--mode", "enforce"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("REGION") && header.contains("REMEDIATED"),
        "{out}"
    );
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with(region), "{out}");
    assert!(row.contains(&format!(" {to_fix} ")), "{row}");
    for (id, s) in seen_all(&ec2, &fleet.optional()).await {
        assert_eq!(s.tokens, "required", "{id}");
    }

    // Nothing left: a pipeline gate passes, in any mode.
    let (code, _, err) = cli(&["sweep", "--region", region, "--mode", "audit"], &env);
    assert_eq!(code, 0, "{err}");

    // A run the function would have failed (its notification could not be
    // published: here, a topic that does not exist) exits 2 and names why,
    // though nothing is left to fix.
    let (code, _, err) = cli(
        &["sweep", "--region", region, "--mode", "audit"],
        &[(
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:ca-central-1:123456789012:no-such-topic",
        )],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("imds-guard sweep:"), "{err}");

    // Errors exit 2 and say what is wrong.
    let (code, _, err) = cli(&["sweep", "--region", "Mars"], &env);
    assert_eq!(code, 2);
    assert!(err.contains("not a region"), "{err}");
    let (code, _, err) = cli(&["sweep", "--region", region], &[("GUARD_MODE", "fix-it")]);
    assert_eq!(code, 2);
    assert!(err.contains("GUARD_MODE"), "{err}");
}

#[tokio::test]
async fn sweep_regions_covers_each_region_in_one_report() {
    let (a, b) = ("sa-east-1", "ap-northeast-1");
    let fa = seed(a, 6).await;
    let fb = seed(b, 10).await;
    let table = memory_table("imds-guard-memory-sweep-regions").await;
    let g = Guard::new(
        config(&[
            ("SWEEP_REGIONS", &format!("{a},{b}")),
            ("GUARD_MODE", "notify"),
            ("MEMORY_TABLE", &table),
            ("NOTIFY_TOPIC_ARN", &topic("sweep-regions").await),
        ]),
        RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table.clone())),
    );
    // The rule's own region is not in the list: only the listed ones count.
    let report = g.handle(&scheduled_in("us-west-2")).await.unwrap();
    let regions = &report.sweep.as_ref().unwrap().regions;
    assert_eq!(
        regions
            .iter()
            .map(|r| r.region.as_str())
            .collect::<Vec<_>>(),
        vec![a, b]
    );
    // Notify mode tags and leaves the tokens alone.
    let expect =
        |f: &Fleet| (f.optional_running.len() + f.optional_stopped.len() + f.exempt.len()) as u64;
    assert_eq!(regions[0].count(Outcome::Flagged), expect(&fa));
    assert_eq!(regions[1].count(Outcome::Flagged), expect(&fb));
    let ec2b = ec2(b).await;
    let s = seen(&ec2b, &fb.optional_running[0]).await;
    assert_eq!(
        (s.tokens.as_str(), s.status_tag.as_deref()),
        ("optional", Some("noncompliant"))
    );

    // A second notify sweep does not tag again or list them as news: the
    // guard's memory says it told of them (a tag, anyone could write).
    let again = g.handle(&scheduled_in("us-west-2")).await.unwrap();
    assert!(again.instances.is_empty(), "{:?}", again.instances);
    assert_eq!(
        again.sweep.as_ref().unwrap().regions[1].count(Outcome::Flagged),
        expect(&fb),
        "still counted as left"
    );
}

/// The account the emulator's resources belong to.
pub(crate) const EMULATOR_ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn a_principal_exemption_recorded_at_launch_holds_and_nothing_forged_does() {
    let region = "eu-north-1";
    let ec2 = ec2(region).await;
    let by_exempt_role = launch(&ec2, Launch::default()).await;
    let other = launch(&ec2, Launch::default()).await;
    // Launched with the old record on it, by anyone who may tag: forged.
    let forged = launch(
        &ec2,
        Launch {
            tags: &[("imds-guard:status", "exempt")],
            ..Default::default()
        },
    )
    .await;
    // Changed back to optional by the exempt role, but launched by another.
    let changed_by_exempt = launch(&ec2, Launch::default()).await;
    let table = memory_table("imds-guard-memory-principal-sweep").await;
    let pairs = [
        ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/DevOps"),
        ("MEMORY_TABLE", table.as_str()),
    ];
    let g = Guard::new(
        config(&pairs),
        RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table.clone())),
    );

    // The events name the emulator's account, as AWS's name the instances'.
    let in_account = |mut e: Value| {
        e["account"] = EMULATOR_ACCOUNT.into();
        e["detail"]["recipientAccountId"] = EMULATOR_ACCOUNT.into();
        e
    };
    // The launch event: DevOps launched it, so it is exempt and recorded.
    let event = crate::emulator::event_for(
        &ec2,
        "run-instances-cli-multi.json",
        &by_exempt_role,
        Some(region),
    )
    .await;
    let r = g.handle(&in_account(event)).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Exempt);

    // The forged launch, by someone not exempt: the tag counts for nothing.
    let mut event =
        crate::emulator::event_for(&ec2, "run-instances-console.json", &forged, Some(region)).await;
    event["detail"]["userIdentity"]["arn"] = "arn:aws:iam::111122223333:user/mallory".into();
    let r = g.handle(&in_account(event)).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);

    // DevOps turning another's instance back to optional: not exempt.
    let mut change = crate::common::fixture("modify-metadata-options-revert.json");
    change["region"] = region.into();
    change["detail"]["awsRegion"] = region.into();
    change["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"]["InstanceId"] =
        changed_by_exempt[0].clone().into();
    change["detail"]["responseElements"]["ModifyInstanceMetadataOptionsResponse"]["instanceId"] =
        changed_by_exempt[0].clone().into();
    let r = g.handle(&in_account(change)).await.unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");

    // The sweep cannot know who launched an instance; the guard's record
    // tells, and nothing else does: the forged one is fixed too.
    let forged_again = launch(
        &ec2,
        Launch {
            tags: &[("imds-guard:status", "exempt")],
            ..Default::default()
        },
    )
    .await;
    let report = g.handle(&scheduled_in(region)).await.unwrap();
    let r = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(
        (r.count(Outcome::Exempt), r.count(Outcome::Remediated)),
        (1, 2),
        "{r:?}"
    );
    assert_eq!(seen(&ec2, &by_exempt_role[0]).await.tokens, "optional");
    assert_eq!(seen(&ec2, &other[0]).await.tokens, "required");
    assert_eq!(seen(&ec2, &forged_again[0]).await.tokens, "required");
    let exempt = report
        .instances
        .iter()
        .find(|i| i.instance_id == by_exempt_role[0])
        .unwrap();
    // Unconfirmed: the emulator has no CloudTrail to confirm the launch
    // (the exemption check is tested on the fake, `exemption_check`).
    assert!(
        matches!(exempt.exemption, Some(Exemption::Unconfirmed(_))),
        "{exempt:?}"
    );
}

#[tokio::test]
async fn legacy_tags_count_only_once_migrated_and_while_the_cutoff_is_set() {
    let region = "eu-south-1";
    let ec2 = ec2(region).await;
    let legacy = launch(
        &ec2,
        Launch {
            count: 2,
            tags: &[("imds-guard:status", "exempt")],
            ..Default::default()
        },
    )
    .await;
    let table = memory_table("imds-guard-memory-legacy").await;
    let now = imds_guard::clock::now_secs();
    let utc = |secs: u64| {
        // The cutoff as the operator writes it (UTC).
        let d = secs / 86_400;
        let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
        // Days to a civil date (Howard Hinnant's algorithm).
        let z = d as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    };
    let after_launch = utc(now + 3600);
    let before_launch = utc(now - 3600);
    let base = [
        ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/DevOps"),
        ("MEMORY_TABLE", table.as_str()),
        ("GUARD_MODE", "audit"),
    ];
    let sweep_with = |extra: Vec<(&'static str, String)>| {
        let mut pairs: Vec<(&str, &str)> = base.to_vec();
        for (k, v) in &extra {
            pairs.push((k, v.as_str()));
        }
        let cfg = config(&pairs);
        let table = table.clone();
        async move {
            let g = Guard::new(
                cfg,
                RegionalClients::new(crate::common::emulator_sdk().await).with_memory(Some(table)),
            );
            g.handle(&scheduled_in(region)).await.unwrap()
        }
    };

    // A legacy tag itself counts for nothing, cutoff or not (anyone who may
    // tag could have written it after the upgrade): the summary says how
    // to migrate them.
    let r = sweep_with(vec![("LEGACY_EXEMPT_BEFORE", after_launch.clone())]).await;
    let g = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(g.count(Outcome::Flagged), 2, "{g:?}");
    assert!(
        g.warnings[0].contains("migrate-exemptions"),
        "{:?}",
        g.warnings
    );
    let r = sweep_with(vec![]).await;
    assert_eq!(
        r.sweep.as_ref().unwrap().regions[0].count(Outcome::Flagged),
        2
    );

    // The migration trusts only records older than the cutoff...
    let env = |before: &str| {
        vec![
            ("MEMORY_TABLE", table.clone()),
            ("LEGACY_EXEMPT_BEFORE", before.to_string()),
            ("EXEMPT_PRINCIPAL_ARNS", String::new()),
        ]
    };
    let run = |before: &str| {
        let env = env(before);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(
            &["migrate-exemptions", "--region", region, "--output", "json"],
            &env,
        )
    };
    let (code, out, err) = run(&before_launch);
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done[0]["recorded"].as_array().unwrap().len(), 0);
    assert_eq!(done[0]["refused"].as_array().unwrap().len(), 2);
    // ...and copies them into the memory in one step.
    let (code, out, err) = run(&after_launch);
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    let mut recorded: Vec<String> = done[0]["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    recorded.sort();
    let mut expect = legacy.clone();
    expect.sort();
    assert_eq!(recorded, expect);

    // Now the snapshot holds, while the cutoff stays set (the explicit
    // flag)...
    let r = sweep_with(vec![("LEGACY_EXEMPT_BEFORE", after_launch.clone())]).await;
    let g = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(g.count(Outcome::Exempt), 2, "{g:?}");
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    // ...and lapses, named, once it is unset.
    let r = sweep_with(vec![]).await;
    let g = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(g.count(Outcome::Flagged), 2, "{g:?}");
    assert!(
        g.warnings.iter().any(|w| w.contains("no longer honoured")),
        "{:?}",
        g.warnings
    );

    // The migration acts only where the guard may: an account outside
    // ALLOWED_ACCOUNT_IDS, or an organization it was not asked to walk, is
    // refused before any call.
    let mut refused = env(&after_launch);
    refused.push(("MEMBER_ROLE_NAME", "imds-guard-member".into()));
    refused.push(("MEMBER_ROLE_EXTERNAL_ID", "imds-guard-0123456789".into()));
    refused.push(("ALLOWED_ACCOUNT_IDS", "111122223333".into()));
    let pairs: Vec<(&str, &str)> = refused.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, _, err) = cli(
        &[
            "migrate-exemptions",
            "--region",
            region,
            "--account",
            "444455556666",
        ],
        &pairs,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("444455556666 is not in ALLOWED_ACCOUNT_IDS"),
        "{err}"
    );
    let mut org = pairs.clone();
    org.push(("SWEEP_ACCOUNTS", "ORGANIZATION"));
    let (code, _, err) = cli(&["migrate-exemptions", "--region", region], &org);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--organization"), "{err}");
}

/// Sources end to end on the emulator's launch templates and Auto Scaling:
/// a template asking for `optional`, used by a group that follows
/// `$Default` and one that pins version 1. The event fixes the template (a
/// new default requiring tokens, hop limit kept) and names the pinned
/// group; the sweep then finds the pinned group still launching `optional`
/// and attributes its instance to it. (The emulator neither merges a
/// `SourceVersion`'s data nor applies a template's options to the
/// instances it launches: the template's versions are checked, not the
/// instances.)
#[tokio::test]
async fn a_template_fixed_at_its_source_and_the_sweep_naming_what_still_launches_optional() {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
    use aws_sdk_ec2::types::{
        LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptionsRequest,
        RequestLaunchTemplateData,
    };
    use imds_guard::source::{SourceKind, SourceOutcome};
    let region = "eu-west-2";
    let base = crate::common::emulator_sdk().await;
    let ec2 = ec2(region).await;
    let asg = aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(&base)
            .region(aws_config::Region::new(region))
            .build(),
    );
    let created = ec2
        .create_launch_template()
        .launch_template_name("web-sources")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0c02fb55956c7d316")
                .metadata_options(
                    LaunchTemplateInstanceMetadataOptionsRequest::builder()
                        .http_tokens(LaunchTemplateHttpTokensState::Optional)
                        .http_put_response_hop_limit(2)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::LaunchTemplate)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("imds-guard:fix-source")
                        .value("true")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lt = created
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string();
    for (name, version, size) in [("web-follows", "$Default", 2), ("web-pinned", "1", 1)] {
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&lt)
                    .version(version)
                    .build(),
            )
            .min_size(size)
            .max_size(size)
            .desired_capacity(size)
            .availability_zones(format!("{region}a"))
            .send()
            .await
            .unwrap();
    }

    let mut event = fixture("create-launch-template.json");
    event["region"] = region.into();
    event["detail"]["awsRegion"] = region.into();
    event["detail"]["responseElements"]["CreateLaunchTemplateResponse"]["launchTemplate"]
        ["launchTemplateId"] = lt.clone().into();
    let g = Guard::new(
        config(&[("FIX_SOURCES", "true"), ("SWEEP_REGIONS", region)]),
        RegionalClients::new(base.clone()),
    );
    let r = g.handle(&event).await.unwrap();
    let s = &r.sources[0];
    assert_eq!(s.outcome, SourceOutcome::Fixed, "{s:?}");
    assert_eq!(s.used_by, vec!["web-follows", "web-pinned"]);
    assert_eq!(s.pinned_by, vec!["web-pinned"]);

    // $Default and $Latest now require tokens, hop limit unchanged.
    let now = ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt)
        .versions("$Default")
        .versions("$Latest")
        .send()
        .await
        .unwrap();
    let versions = now.launch_template_versions();
    assert!(!versions.is_empty());
    for v in versions {
        assert_eq!(v.version_number(), Some(2), "{v:?}");
        let m = v
            .launch_template_data()
            .unwrap()
            .metadata_options()
            .unwrap();
        assert_eq!(
            m.http_tokens(),
            Some(&LaunchTemplateHttpTokensState::Required)
        );
        assert_eq!(m.http_put_response_hop_limit(), Some(2));
    }

    // The sweep (audit): the pinned group still launches optional, with
    // the instance it launched; the region is not ready.
    let swept = Guard::new(
        config(&[("GUARD_MODE", "audit"), ("SWEEP_REGIONS", region)]),
        RegionalClients::new(base),
    )
    .handle(&scheduled_in(region))
    .await
    .unwrap();
    let sweep = swept.sweep.as_ref().unwrap();
    let pinned = sweep
        .sources
        .iter()
        .find(|s| s.id == "web-pinned")
        .unwrap_or_else(|| panic!("{:?}", sweep.sources));
    assert_eq!(pinned.kind, SourceKind::AutoScalingGroup);
    assert_eq!(pinned.instances, 1, "{pinned:?}");
    assert!(
        !sweep
            .sources
            .iter()
            .any(|s| s.id == "web-follows" || s.id == lt),
        "fixed sources are not listed: {:?}",
        sweep.sources
    );
    let readiness = &sweep.regions[0].readiness;
    assert_eq!(readiness.verdict, ReadinessVerdict::NotReady);
    assert!(
        readiness.reasons.iter().any(|r| r.contains("web-pinned")),
        "{readiness:?}"
    );
}

//! Central mode end to end against moto's server, which models accounts:
//! credentials from a role assumed in another account act in that account.
//! The function runs in the central account (moto's own, 123456789012) and
//! acts in two members through their role; a third account is refused.
//! Regions here (ap-south-1, eu-west-3) are this file's alone, so the other
//! emulator tests' sweeps never meet these instances.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_async::time::TimeSource;
use imds_guard::aws::{MemberRoles, RegionalClients};
use imds_guard::config::MemberRole;
use imds_guard::guard::{Guard, GuardError};
use imds_guard::report::{Access, Outcome, Report, Status};
use serde_json::Value;

use crate::common::{config, moto_endpoint, FixedClients};
use crate::emulator::{event_for, launch, seen, topic, Launch};

const CENTRAL: &str = "123456789012";
const MEMBER_A: &str = "111111111111";
const MEMBER_B: &str = "222222222222";
const OUTSIDER: &str = "333333333333";
const R1: &str = "ap-south-1";
const R2: &str = "eu-west-3";
/// The organization sweep's region, its own: it enforces in every account
/// the organization lists, the central account too, so in R1 it would fix
/// another test's instance there before that test's event is handled.
const R_ORG: &str = "me-central-1";
const ROLE: &str = "imds-guard-member";
const EXTERNAL_ID: &str = "o-exampleorg1";

/// The SDK's clock, offset by hand: moves the function's idea of "now" past
/// its credentials' expiry without waiting an hour.
#[derive(Debug, Clone, Default)]
struct Clock(Arc<Mutex<Duration>>);

impl Clock {
    fn jump(&self, by: Duration) {
        *self.0.lock().unwrap() = by;
    }
}

impl TimeSource for Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + *self.0.lock().unwrap()
    }
}

/// An EC2 client acting in `account`, as that account's own people would:
/// through a role assumed there (the emulator's way of modelling accounts).
async fn ec2_in(account: &str, region: &str) -> aws_sdk_ec2::Client {
    moto_endpoint();
    let base = crate::common::emulator_sdk().await;
    let base_ec2 =
        aws_sdk_ec2::config::Builder::from(&base).region(Region::new(region.to_string()));
    if account == CENTRAL {
        return aws_sdk_ec2::Client::from_conf(base_ec2.build());
    }
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&base)
            .region(Region::new(region.to_string()))
            .build(),
    );
    let c = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/workload-admin"))
        .role_session_name("workload")
        .send()
        .await
        .unwrap();
    let c = c.credentials().unwrap();
    aws_sdk_ec2::Client::from_conf(
        base_ec2
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "test member",
            )))
            .build(),
    )
}

/// The launch event as the member's default bus forwards it to the central
/// bus: the envelope's and CloudTrail's account are the member's.
async fn launch_event_in(
    ec2: &aws_sdk_ec2::Client,
    account: &str,
    region: &str,
    ids: &[String],
) -> Value {
    let mut ev = event_for(ec2, "run-instances-cli-multi.json", ids, Some(region)).await;
    ev["account"] = account.into();
    ev["detail"]["recipientAccountId"] = account.into();
    ev["detail"]["userIdentity"]["accountId"] = account.into();
    ev
}

/// The emulator's organization (made once; tests share the server).
async fn organization(base: &aws_config::SdkConfig) -> aws_sdk_organizations::Client {
    let org = aws_sdk_organizations::Client::from_conf(
        aws_sdk_organizations::config::Builder::from(base)
            .region(Region::new("us-east-1"))
            .build(),
    );
    // Another test may have made it already.
    let _ = org.create_organization().send().await;
    org
}

fn calls(report: &Report, op: &str) -> u64 {
    report.aws_calls.get(op).copied().unwrap_or(0)
}

async fn central_guard(pairs: &[(&str, &str)], clock: &Clock) -> Guard<RegionalClients> {
    let cfg = config(pairs);
    let sdk = crate::common::emulator_sdk()
        .await
        .into_builder()
        .time_source(clock.clone())
        .build();
    let clients = RegionalClients::new(sdk).with_member_role(cfg.member_role.clone());
    Guard::new(cfg, clients)
}

#[tokio::test]
async fn one_central_function_fixes_each_members_instance_in_that_member_only() {
    let topic = topic("org-central").await;
    let allowed = format!("{CENTRAL},{MEMBER_A},{MEMBER_B}");
    let clock = Clock::default();
    let guard = central_guard(
        &[
            ("MEMBER_ROLE_NAME", ROLE),
            ("MEMBER_ROLE_EXTERNAL_ID", EXTERNAL_ID),
            ("ALLOWED_ACCOUNT_IDS", &allowed),
            ("NOTIFY_TOPIC_ARN", &topic),
            ("RETRY_BUDGET_SECONDS", "5"),
        ],
        &clock,
    )
    .await;

    let (a1, b1, c1, x1) = (
        ec2_in(MEMBER_A, R1).await,
        ec2_in(MEMBER_B, R1).await,
        ec2_in(CENTRAL, R1).await,
        ec2_in(OUTSIDER, R1).await,
    );
    let in_a = launch(
        &a1,
        Launch {
            count: 3,
            ..Launch::default()
        },
    )
    .await;
    let in_b = launch(&b1, Launch::default()).await;
    let in_c = launch(&c1, Launch::default()).await;
    let in_x = launch(&x1, Launch::default()).await;

    // Member A: the event's instance is fixed in A, through A's role.
    let r = guard
        .handle(&launch_event_in(&a1, MEMBER_A, R1, &in_a[..1]).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    assert_eq!(calls(&r, "AssumeRole"), 1, "{:?}", r.aws_calls);
    assert_eq!(seen(&a1, &in_a[0]).await.tokens, "required");
    assert_eq!(
        seen(&a1, &in_a[0]).await.status_tag.as_deref(),
        Some("remediated")
    );
    assert_eq!(
        seen(&a1, &in_a[1]).await.tokens,
        "optional",
        "only the event's instance"
    );
    // The instance is A's: the central account does not even see it.
    // EC2 answers an id it does not know with InvalidInstanceID.NotFound;
    // any other error (throttling, a refused call) would prove nothing.
    match c1.describe_instances().instance_ids(&in_a[0]).send().await {
        Ok(out) => assert!(
            out.reservations().is_empty(),
            "the central account sees A's instance"
        ),
        Err(e) => {
            let code = aws_sdk_ec2::error::ProvideErrorMetadata::code(&e.into_service_error())
                .map(str::to_string);
            assert_eq!(
                code.as_deref(),
                Some("InvalidInstanceID.NotFound"),
                "the central account's view of A's instance"
            );
        }
    }

    // Member B: its own role, its own instance; A's others untouched.
    let r = guard
        .handle(&launch_event_in(&b1, MEMBER_B, R1, &in_b).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);
    assert_eq!(calls(&r, "AssumeRole"), 1);
    assert_eq!(seen(&b1, &in_b[0]).await.tokens, "required");
    assert_eq!(seen(&a1, &in_a[1]).await.tokens, "optional");

    // The central account's own launch needs no role.
    let r = guard
        .handle(&launch_event_in(&c1, CENTRAL, R1, &in_c).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);
    assert_eq!(calls(&r, "AssumeRole"), 0, "{:?}", r.aws_calls);
    assert_eq!(seen(&c1, &in_c[0]).await.tokens, "required");

    // An account outside ALLOWED_ACCOUNT_IDS: refused, reported, told, and
    // not one call made in it.
    let r = guard
        .handle(&launch_event_in(&x1, OUTSIDER, R1, &in_x).await)
        .await
        .expect("a refusal is an answer, not an error to retry");
    assert_eq!(r.status, Status::Refused);
    assert_eq!(r.instances[0].instance_id, in_x[0]);
    assert_eq!(r.instances[0].outcome, Outcome::Refused);
    assert!(r.reason.as_deref().unwrap().contains(OUTSIDER));
    assert_eq!(
        r.aws_calls.keys().collect::<Vec<_>>(),
        vec!["Publish"],
        "only the notification: {:?}",
        r.aws_calls
    );
    assert_eq!(seen(&x1, &in_x[0]).await.tokens, "optional");
    assert!(r.notification.starts_with("sent "), "{}", r.notification);
    // (The message as built; reading it back from the emulator's state dump
    // costs seconds once it holds several accounts.)
    let told = imds_guard::notify::build(&r);
    assert!(
        told.subject.contains("refused") && told.subject.contains(OUTSIDER),
        "{}",
        told.subject
    );
    let body: Value = serde_json::from_str(&told.body).unwrap();
    assert_eq!(body["counts"]["refused"], 1);

    // A's credentials are reused while fresh...
    let r = guard
        .handle(&launch_event_in(&a1, MEMBER_A, R1, &in_a[1..2]).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated);
    assert_eq!(calls(&r, "AssumeRole"), 0, "cached: {:?}", r.aws_calls);
    // ...and renewed once expired (two hours on; they last one).
    clock.jump(Duration::from_secs(2 * 3600));
    let r = guard
        .handle(&launch_event_in(&a1, MEMBER_A, R1, &in_a[2..]).await)
        .await
        .unwrap();
    assert_eq!(r.instances[0].outcome, Outcome::Remediated, "{r:?}");
    assert_eq!(calls(&r, "AssumeRole"), 1, "renewed: {:?}", r.aws_calls);
    assert_eq!(seen(&a1, &in_a[2]).await.tokens, "required");
}

#[tokio::test]
async fn a_central_sweep_covers_each_listed_account_and_region_and_counts_per_account() {
    let clock = Clock::default();
    let (a2, b2, c2) = (
        ec2_in(MEMBER_A, R2).await,
        ec2_in(MEMBER_B, R2).await,
        ec2_in(CENTRAL, R2).await,
    );
    let a_open = launch(
        &a2,
        Launch {
            count: 2,
            ..Launch::default()
        },
    )
    .await;
    let b_open = launch(&b2, Launch::default()).await;
    let b_done = launch(
        &b2,
        Launch {
            tokens: "required",
            ..Launch::default()
        },
    )
    .await;
    let c_open = launch(&c2, Launch::default()).await;
    let accounts = format!("{CENTRAL},{MEMBER_A},{MEMBER_B}");
    let guard = central_guard(
        &[
            ("MEMBER_ROLE_NAME", ROLE),
            ("SWEEP_ACCOUNTS", &accounts),
            ("SWEEP_REGIONS", R2),
        ],
        &clock,
    )
    .await;
    let r = guard
        .handle(&crate::common::fixture("scheduled-event.json"))
        .await
        .unwrap();
    assert_eq!(r.status, Status::Swept);
    let sweep = r.sweep.as_ref().unwrap();
    let per: Vec<(&str, &Access, u64, u64)> = sweep
        .accounts
        .iter()
        .map(|a| {
            (
                a.account.as_str(),
                &a.access,
                a.counts.get(&Outcome::Remediated).copied().unwrap_or(0),
                a.counts.get(&Outcome::Compliant).copied().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        per,
        vec![
            (MEMBER_A, &Access::MemberRole, 2, 0),
            (CENTRAL, &Access::Own, 1, 0),
            (MEMBER_B, &Access::MemberRole, 1, 1),
        ],
        "{sweep:?}"
    );
    for id in &a_open {
        assert_eq!(seen(&a2, id).await.tokens, "required");
    }
    assert_eq!(seen(&b2, &b_open[0]).await.tokens, "required");
    assert_eq!(seen(&b2, &b_done[0]).await.tokens, "required");
    assert_eq!(seen(&c2, &c_open[0]).await.tokens, "required");
    assert_eq!(
        calls(&r, "AssumeRole"),
        2,
        "one per member: {:?}",
        r.aws_calls
    );
    // Each instance with news names its account.
    let named: Vec<(&str, &str)> = r
        .instances
        .iter()
        .map(|i| (i.account.as_deref().unwrap(), i.instance_id.as_str()))
        .collect();
    assert!(named.contains(&(MEMBER_B, b_open[0].as_str())), "{named:?}");
    assert!(named.contains(&(CENTRAL, c_open[0].as_str())), "{named:?}");
}

#[tokio::test]
async fn an_organization_sweep_lists_the_accounts_and_leaves_out_the_not_allowed() {
    let clock = Clock::default();
    let base = crate::common::emulator_sdk().await;
    let org = organization(&base).await;
    let mut created = Vec::new();
    for n in 1..=2 {
        let out = org
            .create_account()
            .account_name(format!("workload-{n}"))
            .email(format!("workload-{n}@example.com"))
            .send()
            .await
            .unwrap();
        created.push(
            out.create_account_status()
                .unwrap()
                .account_id()
                .unwrap()
                .to_string(),
        );
    }
    let (in_scope, out_of_scope) = (&created[0], &created[1]);
    let ec2 = ec2_in(in_scope, R_ORG).await;
    let open = launch(&ec2, Launch::default()).await;
    let outside = ec2_in(out_of_scope, R_ORG).await;
    let untouched = launch(&outside, Launch::default()).await;

    let allowed = format!("{CENTRAL},{in_scope}");
    let guard = central_guard(
        &[
            ("MEMBER_ROLE_NAME", ROLE),
            ("ALLOWED_ACCOUNT_IDS", &allowed),
            ("SWEEP_ACCOUNTS", "ORGANIZATION"),
            ("SWEEP_REGIONS", R_ORG),
            ("GUARD_MODE", "enforce"),
        ],
        &clock,
    )
    .await;
    let r = guard
        .handle(&crate::common::fixture("scheduled-event.json"))
        .await
        .unwrap();
    let sweep = r.sweep.as_ref().unwrap();
    let access = |id: &str| {
        sweep
            .accounts
            .iter()
            .find(|a| a.account == id)
            .map(|a| a.access.clone())
    };
    assert_eq!(access(in_scope), Some(Access::MemberRole), "{sweep:?}");
    assert_eq!(access(CENTRAL), Some(Access::Own));
    assert_eq!(access(out_of_scope), Some(Access::NotAllowed));
    assert_eq!(calls(&r, "ListAccounts"), 1);
    assert_eq!(seen(&ec2, &open[0]).await.tokens, "required");
    assert_eq!(seen(&outside, &untouched[0]).await.tokens, "optional");
}

/// Real STS refuses a role that does not trust the caller; the emulator
/// never does, so this one is mocked: every instance is named, the
/// invocation fails (to be retried, and kept if it never works).
#[tokio::test]
async fn a_member_role_that_cannot_be_assumed_fails_the_event_and_names_it() {
    use aws_sdk_sts::error::ErrorMetadata;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
    use aws_smithy_mocks::mock;

    let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
        AssumeRoleError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform: sts:AssumeRole")
                .build(),
        )
    });
    let whoami = mock!(aws_sdk_sts::Client::get_caller_identity)
        .then_output(|| GetCallerIdentityOutput::builder().account(CENTRAL).build());
    let roles = MemberRoles::with_client(
        MemberRole {
            name: ROLE.into(),
            external_id: None,
        },
        crate::common::sts(&[&denied, &whoami]),
        None,
    );
    let ec2_untouched = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| unreachable!("no EC2 call without the member's credentials"));
    let guard = Guard::new(
        config(&[("MEMBER_ROLE_NAME", ROLE)]),
        FixedClients {
            ec2: crate::common::ec2(&[&ec2_untouched]),
            sns: crate::common::sns(&[]),
            metrics: crate::common::metrics(&[]),
            members: Some(Arc::new(roles)),
            memory: None,
            failed_events_queue: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    );
    let mut ev = crate::common::launch_event(
        "run-instances-cli-multi.json",
        &[
            "i-0aaaaaaaaaaaaaaa1".to_string(),
            "i-0aaaaaaaaaaaaaaa2".to_string(),
        ],
        Some(R1),
    );
    ev["account"] = MEMBER_A.into();
    ev["detail"]["recipientAccountId"] = MEMBER_A.into();
    let Err(GuardError::Unhandled { summary, report }) = guard.handle(&ev).await else {
        panic!("the invocation must fail");
    };
    assert!(summary.contains("2 of 2 not handled"), "{summary}");
    assert!(summary.contains("i-0aaaaaaaaaaaaaaa1") && summary.contains("i-0aaaaaaaaaaaaaaa2"));
    assert!(
        summary.contains("could not assume arn:aws:iam::111111111111:role/imds-guard-member"),
        "{summary}"
    );
    assert!(report
        .instances
        .iter()
        .all(|i| i.outcome == Outcome::Failed));
    assert_eq!(ec2_untouched.num_calls(), 0);
    assert_eq!(denied.num_calls(), 1, "AccessDenied is not retried");
}

/// The command line sweeps other accounts the same way, and says which.
#[tokio::test]
async fn the_cli_sweeps_listed_accounts_and_prints_a_line_per_account() {
    const R: &str = "ap-southeast-1";
    let (a, c) = (ec2_in(MEMBER_A, R).await, ec2_in(CENTRAL, R).await);
    let open = launch(&a, Launch::default()).await;
    launch(
        &c,
        Launch {
            tokens: "required",
            ..Launch::default()
        },
    )
    .await;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imds-guard"));
        cmd.args(args)
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("SWEEP_ACCOUNTS")
            .env_remove("ALLOWED_ACCOUNT_IDS")
            .env_remove("MEMBER_ROLE_NAME")
            .envs(env.iter().copied());
        cmd.output().expect("binary runs")
    };
    let accounts = [
        "sweep",
        "--region",
        R,
        "--account",
        MEMBER_A,
        "--account",
        CENTRAL,
    ];

    let o = run(&accounts, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs MEMBER_ROLE_NAME"), "{err}");

    let o = run(
        &accounts,
        &[("MEMBER_ROLE_NAME", ROLE), ("GUARD_MODE", "enforce")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with(needle))
            .map(str::to_string)
    };
    let a_row = line(&format!("{MEMBER_A}/{R}")).expect("a row for A's region");
    assert_eq!(
        a_row.split_whitespace().take(4).collect::<Vec<_>>(),
        vec![format!("{MEMBER_A}/{R}").as_str(), "1", "0", "1"],
        "examined 1, compliant 0, remediated 1: {out}"
    );
    let a_line = line(&format!("{MEMBER_A} ")).expect("a line for A");
    assert!(
        a_line.contains("member role") && a_line.contains("1 remediated"),
        "{a_line}"
    );
    let c_line = line(&format!("{CENTRAL} ")).expect("a line for the central account");
    assert!(
        c_line.contains("own account") && c_line.contains("1 compliant"),
        "{c_line}"
    );
    assert!(
        out.contains(&format!("{MEMBER_A}/{R} {}  remediated", open[0])),
        "{out}"
    );
    assert_eq!(seen(&a, &open[0]).await.tokens, "required");
}

/// A sweep that cannot enter one account still sweeps the others, and names
/// the one it could not.
#[tokio::test]
async fn a_sweep_names_the_account_whose_role_cannot_be_assumed() {
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_sts::error::ErrorMetadata;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
    use aws_smithy_mocks::mock;

    let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
        AssumeRoleError::generic(ErrorMetadata::builder().code("AccessDenied").build())
    });
    let whoami = mock!(aws_sdk_sts::Client::get_caller_identity)
        .then_output(|| GetCallerIdentityOutput::builder().account(CENTRAL).build());
    let roles = MemberRoles::with_client(
        MemberRole {
            name: ROLE.into(),
            external_id: None,
        },
        crate::common::sts(&[&denied, &whoami]),
        None,
    );
    let listing = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let defaults = mock!(aws_sdk_ec2::Client::get_instance_metadata_defaults).then_output(|| {
        aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput::builder().build()
    });
    let accounts = format!("{CENTRAL},{MEMBER_A}");
    let guard = Guard::new(
        config(&[
            ("MEMBER_ROLE_NAME", ROLE),
            ("SWEEP_ACCOUNTS", &accounts),
            ("SWEEP_REGIONS", "us-east-1"),
        ]),
        FixedClients {
            ec2: crate::common::ec2(&[&listing, &defaults]),
            sns: crate::common::sns(&[]),
            metrics: crate::common::metrics(&[]),
            members: Some(Arc::new(roles)),
            memory: None,
            failed_events_queue: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    );
    let Err(GuardError::Unhandled { summary, report }) = guard
        .handle(&crate::common::fixture("scheduled-event.json"))
        .await
    else {
        panic!("the sweep must fail for the account it could not enter");
    };
    assert!(
        summary.contains("account 111111111111 region us-east-1 (not swept: could not assume arn:aws:iam::111111111111:role/imds-guard-member"),
        "{summary}"
    );
    let n = imds_guard::notify::build(&report);
    let sweep = report.sweep.unwrap();
    let lines: Vec<(&str, &Access)> = sweep
        .accounts
        .iter()
        .map(|a| (a.account.as_str(), &a.access))
        .collect();
    assert_eq!(
        lines,
        vec![(MEMBER_A, &Access::NoMemberStack), (CENTRAL, &Access::Own),],
        "a refused member role is named as such: no member stack there"
    );
    assert!(
        n.subject.contains("1 ACCOUNT(S) WITHOUT THE MEMBER STACK"),
        "{}",
        n.subject
    );
    assert!(
        listing.num_calls() >= 1,
        "the central account was still swept"
    );
}

/// Modes per organizational unit on the emulator's Organizations: a sandbox
/// unit set to audit, the default enforce. The sweep learns the account's
/// units (ListParents, walked to the root), runs it in audit, says so, and
/// remembers its units for its events.
#[tokio::test]
async fn an_account_in_a_sandbox_unit_is_audited_while_the_default_enforces() {
    let region = "ap-southeast-3";
    let base = crate::common::emulator_sdk().await;
    let org = organization(&base).await;
    let root = org.list_roots().send().await.unwrap().roots()[0]
        .id()
        .unwrap()
        .to_string();
    let sandbox = org
        .create_organizational_unit()
        .parent_id(&root)
        .name("sandbox-modes")
        .send()
        .await
        .unwrap()
        .organizational_unit()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    let account = org
        .create_account()
        .account_name("sandbox-modes")
        .email("sandbox-modes@example.com")
        .send()
        .await
        .unwrap()
        .create_account_status()
        .unwrap()
        .account_id()
        .unwrap()
        .to_string();
    org.move_account()
        .account_id(&account)
        .source_parent_id(&root)
        .destination_parent_id(&sandbox)
        .send()
        .await
        .unwrap();
    let ec2 = ec2_in(&account, region).await;
    let ids = launch(&ec2, Launch::default()).await;
    let table = crate::emulator::memory_table("imds-guard-memory-modes").await;

    let overrides = format!("{sandbox}=audit");
    let cfg = config(&[
        ("MEMBER_ROLE_NAME", ROLE),
        ("SWEEP_ACCOUNTS", &account),
        ("SWEEP_REGIONS", region),
        ("GUARD_MODE", "enforce"),
        ("MODE_OVERRIDES", &overrides),
        ("MEMORY_TABLE", &table),
    ]);
    let clients = RegionalClients::new(base.clone())
        .with_member_role(cfg.member_role.clone())
        .with_memory(cfg.memory_table.clone());
    let guard = Guard::new(cfg, clients);
    let mut ev = crate::common::fixture("scheduled-event.json");
    ev["region"] = region.into();
    let r = guard.handle(&ev).await.unwrap();
    let swept = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(
        swept.mode,
        Some(imds_guard::config::Mode::Audit),
        "{swept:?}"
    );
    assert!(
        calls(&r, "ListParents") >= 2,
        "walked to the root: {:?}",
        r.aws_calls
    );
    assert_eq!(r.count(Outcome::Flagged), 1);
    assert_eq!(seen(&ec2, &ids[0]).await.tokens, "optional");

    // Its units, remembered for its events, in DynamoDB.
    let dynamo = aws_sdk_dynamodb::Client::new(&base);
    let got = dynamo
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("org".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("units#{account}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.item().unwrap()["units"].as_s().unwrap(),
        &format!("{sandbox},{root}")
    );
}

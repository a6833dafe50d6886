//! The controls of a bad day, on the in-memory fake: a person's break-glass
//! grant (honoured by the event path and the sweep until it ends, a revert
//! under it reported and not undone, every grant, use and end told) and the
//! circuit breaker (per event, per run, per account-region share).

use imds_guard::break_glass::{Grant, State};
use imds_guard::break_glass_flow as flow;
use imds_guard::clock::now_secs;
use imds_guard::memory::partition;
use imds_guard::report::Outcome;

use crate::common::scheduled_in;
use crate::common::{fixture, launch_event, revert_event};
use crate::fake::{api_error, FakeCloud, RESPONDER};

use crate::common::TOPIC;
const ID: &str = "i-0fedcba9876543210";
const REGION: &str = "eu-west-1";

#[tokio::test(start_paused = true)]
async fn a_revert_under_break_glass_is_reported_not_undone_until_the_grant_ends() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(ID, "optional", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    let now = now_secs();

    // A responder grants it, with a reason, for four hours: written to the
    // memory and told.
    let done = flow::grant(
        g.config(),
        &cloud.clients(),
        None,
        REGION,
        ID,
        4 * 3600,
        "INC-42: the legacy agent needs IMDSv1",
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.grant.by, RESPONDER);
    assert!(done.notification.starts_with("sent "));
    let told = cloud.published();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].outcomes, ["break_glass_granted"]);
    assert!(told[0].body.contains("INC-42"), "{}", told[0].body);

    // The responder's revert: reported, with the grant, and not undone.
    let report = g.handle(&revert_event(ID)).await.unwrap();
    let r = &report.instances[0];
    assert_eq!(r.outcome, Outcome::Exempt, "{r:?}");
    assert!(r.action.steps.is_empty(), "nothing written: {r:?}");
    assert_eq!(cloud.tokens(ID), "optional");
    let used = cloud.published();
    let used = used.last().unwrap();
    assert!(
        used.body.contains(
            "break-glass granted by arn:aws:sts::111122223333:assumed-role/Responder/alice"
        ) && used.body.contains("INC-42"),
        "{}",
        used.body
    );
    // The sweep honours it too, and lists it in force.
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(swept.count(Outcome::Exempt), 1);
    assert_eq!(cloud.tokens(ID), "optional");
    let region = &swept.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.break_glass.len(), 1);
    assert_eq!(region.break_glass[0].state, State::Active);

    // The grant ends: the next sweep handles the instance as usual and
    // tells of the end, once.
    let mut ended = Grant::from_record(&cloud.records("breakglass#")[0]).unwrap();
    ended.granted_at = now - 3600;
    ended.until = now - 1;
    cloud.put_record(
        ended.record(&imds_guard::break_glass::partition_of(&partition(
            "111122223333",
            REGION,
        ))),
    );
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(swept.count(Outcome::Remediated), 1);
    assert_eq!(cloud.tokens(ID), "required");
    let region = &swept.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.break_glass.len(), 1);
    assert_eq!(region.break_glass[0].state, State::Expired);
    let again = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert!(again.sweep.as_ref().unwrap().regions[0]
        .break_glass
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_launch_template_grant_covers_its_instances_and_a_revoke_ends_it() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    let template = "lt-0123456789abcdef0";
    for id in ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"] {
        cloud.add(id, "optional", 2);
    }
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.observed.tags = Some(vec![("aws:ec2launchtemplate:id".into(), template.into())])
    });
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    let now = now_secs();
    flow::grant(
        g.config(),
        &cloud.clients(),
        None,
        "us-east-1",
        template,
        3600,
        "load test",
        now,
    )
    .await
    .unwrap();
    let ids = [
        "i-0aaaaaaaaaaaaaaa1".to_string(),
        "i-0aaaaaaaaaaaaaaa2".to_string(),
    ];
    let report = g
        .handle(&launch_event(
            "run-instances-cli-multi.json",
            &ids,
            Some("us-east-1"),
        ))
        .await
        .unwrap();
    let outcome = |id: &str| {
        report
            .instances
            .iter()
            .find(|r| r.instance_id == id)
            .map(|r| r.outcome)
    };
    assert_eq!(outcome("i-0aaaaaaaaaaaaaaa1"), Some(Outcome::Exempt));
    assert_eq!(outcome("i-0aaaaaaaaaaaaaaa2"), Some(Outcome::Remediated));

    // Revoked: the next decision handles it as usual.
    let done = flow::revoke(
        g.config(),
        &cloud.clients(),
        None,
        "us-east-1",
        template,
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.grant.state(now), State::Revoked);
    assert_eq!(
        cloud.published().last().unwrap().outcomes,
        ["break_glass_revoked"]
    );
    let mut sweep = scheduled_in(REGION);
    sweep["region"] = "us-east-1".into();
    let swept = g.handle(&sweep).await.unwrap();
    assert_eq!(swept.count(Outcome::Remediated), 1);
    assert_eq!(cloud.tokens("i-0aaaaaaaaaaaaaaa1"), "required");
    // And nothing is left to revoke.
    let e = flow::revoke(
        g.config(),
        &cloud.clients(),
        None,
        "us-east-1",
        template,
        now,
    )
    .await
    .unwrap_err();
    assert!(e.contains("no break-glass grant is in force"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_grant_needs_the_memory_and_a_reason() {
    let cloud = FakeCloud::new();
    let g = cloud.guard(&[]);
    let now = now_secs();
    let e = flow::grant(
        g.config(),
        &cloud.clients(),
        None,
        REGION,
        ID,
        60,
        "why",
        now,
    )
    .await
    .unwrap_err();
    assert!(e.contains("MEMORY_TABLE"), "{e}");
    cloud.with_memory();
    let g = cloud.test_guard().notifying().remembering().build();
    let e = flow::grant(g.config(), &cloud.clients(), None, REGION, ID, 60, " ", now)
        .await
        .unwrap_err();
    assert!(e.contains("needs a reason"), "{e}");
    assert!(cloud.records("breakglass#").is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_breaker_caps_an_event_and_says_so_first() {
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    let ids: Vec<String> = (1..=3).map(|n| format!("i-0aaaaaaaaaaaaaaa{n}")).collect();
    for id in &ids {
        cloud.add(id, "optional", 2);
    }
    let g = cloud.guard(&[
        ("NOTIFY_TOPIC_ARN", TOPIC),
        ("GUARD_MODE", "enforce"),
        ("MAX_CHANGES_PER_EVENT", "1"),
    ]);
    let report = g
        .handle(&launch_event("run-instances-cli-multi.json", &ids, None))
        .await
        .unwrap();
    // The fixture's third instance launched compliant: two to fix, one may.
    assert_eq!(report.count(Outcome::Remediated), 1);
    assert_eq!(report.count(Outcome::Flagged), 1);
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 1);
    let held = report
        .instances
        .iter()
        .find(|r| r.outcome == Outcome::Flagged)
        .unwrap();
    // Its options left as they are; flagged, and tagged as such.
    assert!(
        held.action
            .to_string()
            .starts_with("none: circuit breaker (MAX_CHANGES_PER_EVENT=1)"),
        "{}",
        held.action
    );
    assert!(held
        .would
        .as_deref()
        .unwrap()
        .contains("HttpTokens=required"));
    assert_eq!(report.breaker.as_ref().unwrap().held, 1);
    let n = cloud.published();
    assert!(
        n[0].subject.starts_with("CIRCUIT BREAKER held 1 change(s)"),
        "{}",
        n[0].subject
    );
    assert!(n[0].outcomes.iter().any(|o| o == "breaker_tripped"));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_caps_a_run_and_an_account_regions_share() {
    // 40 instances, 30 at optional: a quarter of 40 is 10 changes.
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    for n in 0..40 {
        let tokens = if n < 30 { "optional" } else { "required" };
        cloud.add(&format!("i-{n:017x}"), tokens, 1);
    }
    cloud.set_page_size(7);
    let g = cloud.guard(&[("NOTIFY_TOPIC_ARN", TOPIC), ("GUARD_MODE", "enforce")]);
    let report = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 10);
    assert_eq!(report.count(Outcome::Remediated), 10);
    let region = &report.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.held_by_breaker, 20);
    let tripped = report.breaker.as_ref().unwrap();
    assert_eq!(tripped.held, 20);
    assert_eq!(tripped.limits, ["MAX_CHANGE_PERCENT=25 of 40 instance(s)"]);
    let n = cloud.published();
    assert!(
        n[0].subject.starts_with("CIRCUIT BREAKER held 20"),
        "{}",
        n[0].subject
    );

    // The run's ceiling, below the share: it holds first.
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    for n in 0..12 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    let g = cloud.guard(&[
        ("GUARD_MODE", "enforce"),
        ("MAX_CHANGES_PER_RUN", "4"),
        ("MAX_CHANGE_PERCENT", "100"),
    ]);
    let report = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), 4);
    assert_eq!(
        report.breaker.as_ref().unwrap().limits,
        ["MAX_CHANGES_PER_RUN=4"]
    );
    assert_eq!(report.breaker.as_ref().unwrap().held, 8);
    // Within the floor, a small region is not counted at all.
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    for n in 0..3 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    let g = cloud.guard(&[("GUARD_MODE", "enforce")]);
    let report = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(report.count(Outcome::Remediated), 3);
    assert!(report.breaker.is_none());
    assert_eq!(
        cloud.count("DescribeInstances"),
        1,
        "no counting pass: {:?}",
        cloud.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_sweep_that_fixes_a_launch_after_enforcing_began_says_events_were_missed_first() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    let now = now_secs();
    let hour = 3600;
    for (id, launched) in [
        ("i-0aaaaaaaaaaaaaaa1", now - 5 * hour), // after: its event never came
        ("i-0aaaaaaaaaaaaaaa2", now - 20 * hour), // before the guard enforced
        ("i-0aaaaaaaaaaaaaaa3", now - 600),      // its event may be on the way
    ] {
        cloud.add(id, "optional", 2);
        cloud.edit(id, |i| i.observed.launch_time = Some(launched));
    }
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();

    // The first enforcing sweep here begins the record: nothing it fixes
    // can be a missed event.
    let first = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(first.sweep.as_ref().unwrap().regions[0].missed_events, 0);
    assert_eq!(cloud.records("since#").len(), 1);

    // Enforcing began ten hours ago.
    let partition = partition("111122223333", REGION);
    cloud.put_record(imds_guard::watch::since_record(
        &partition,
        imds_guard::config::Mode::Enforce,
        now - 10 * hour,
        now,
    ));
    for id in [
        "i-0aaaaaaaaaaaaaaa1",
        "i-0aaaaaaaaaaaaaaa2",
        "i-0aaaaaaaaaaaaaaa3",
    ] {
        cloud.edit(id, |i| {
            i.observed.options.http_tokens = Some("optional".into())
        });
    }
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(swept.count(Outcome::Remediated), 3);
    let region = &swept.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.missed_events, 1);
    let n = cloud.published();
    let n = n.last().unwrap();
    assert!(
        n.subject
            .starts_with("imds-guard enforce sweep: 1 EVENTS MISSED; "),
        "{}",
        n.subject
    );
    assert!(
        n.body.contains(&format!("did not arrive ({REGION})")),
        "{}",
        n.body
    );

    // A sweep in another mode records it; enforcing again starts afresh:
    // what was launched meanwhile is no missed event.
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "notify")])
        .build();
    g.handle(&scheduled_in(REGION)).await.unwrap();
    cloud.edit("i-0aaaaaaaaaaaaaaa1", |i| {
        i.observed.options.http_tokens = Some("optional".into())
    });
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(swept.count(Outcome::Remediated), 1);
    assert_eq!(swept.sweep.as_ref().unwrap().regions[0].missed_events, 0);
}

#[tokio::test(start_paused = true)]
async fn each_account_runs_in_the_mode_of_its_own_setting_or_its_unit() {
    const SANDBOX: &str = "222233334444";
    const PROD: &str = "555566667777";
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(ID, "optional", 2);
    cloud.set_units(SANDBOX, &["ou-ab12-sandbox01", "r-ab12"]);
    cloud.set_units(PROD, &["ou-ab12-prod0001", "r-ab12"]);
    let pairs = |accounts: &'static str| {
        [
            ("GUARD_MODE", "enforce"),
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("MODE_OVERRIDES", "ou-ab12-sandbox01=audit"),
            ("SWEEP_ACCOUNTS", accounts),
        ]
    };

    // A sandbox account's sweep audits: nothing changed, and the summary
    // says the mode it ran in; its units are remembered for its events.
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&pairs(SANDBOX))
        .build();
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    let region = &swept.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.mode, Some(imds_guard::config::Mode::Audit));
    assert_eq!(swept.count(Outcome::Flagged), 1);
    assert_eq!(cloud.tokens(ID), "optional");
    assert_eq!(cloud.records("units#").len(), 1);

    // Its events, in the same mode, from what the sweep remembered.
    let mut ev = revert_event(ID);
    ev["account"] = SANDBOX.into();
    ev["detail"]["recipientAccountId"] = SANDBOX.into();
    let report = g.handle(&ev).await.unwrap();
    assert_eq!(report.mode, imds_guard::config::Mode::Audit);
    assert_eq!(report.instances[0].outcome, Outcome::Flagged);
    assert_eq!(cloud.tokens(ID), "optional");

    // An account whose units are not known yet runs in the mildest mode
    // any unit is set to, never enforced by surprise.
    let mut ev = revert_event(ID);
    ev["account"] = "888899990000".into();
    ev["detail"]["recipientAccountId"] = "888899990000".into();
    let report = g.handle(&ev).await.unwrap();
    assert_eq!(report.mode, imds_guard::config::Mode::Audit);
    assert_eq!(cloud.tokens(ID), "optional");
    // ...and its notification says so.
    let fallback = report.fallback.as_deref().unwrap_or_default();
    assert!(
        fallback.contains("888899990000's organizational units are not known"),
        "{report:?}"
    );
    let told = cloud.published();
    assert!(
        told.last().unwrap().body.contains("not known yet"),
        "{}",
        told.last().unwrap().body
    );
    // An account whose units the sweep learnt says nothing of the kind.
    let mut ev = revert_event(ID);
    ev["account"] = SANDBOX.into();
    ev["detail"]["recipientAccountId"] = SANDBOX.into();
    assert_eq!(g.handle(&ev).await.unwrap().fallback, None);

    // A production account enforces, as the default says.
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&pairs(PROD))
        .build();
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    let region = &swept.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.mode, Some(imds_guard::config::Mode::Enforce));
    assert_eq!(cloud.tokens(ID), "required");
}

#[tokio::test(start_paused = true)]
async fn a_weakened_account_default_is_judged_in_the_accounts_own_mode() {
    // Enforce by default, with the default set back; this account audits:
    // its weakened default is told of, and not written.
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(imds_guard::policy::AccountDefaults {
        http_tokens: Some("optional".into()),
        ..Default::default()
    }));
    let weaken = fixture("modify-metadata-defaults-weaken.json");
    let pairs = |overrides: &'static str| {
        [
            ("GUARD_MODE", "enforce"),
            ("SET_ACCOUNT_DEFAULT", "true"),
            ("MODE_OVERRIDES", overrides),
        ]
    };
    let audited = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&pairs("111122223333=audit"))
        .build()
        .handle(&weaken)
        .await
        .unwrap();
    assert_eq!(audited.mode, imds_guard::config::Mode::Audit);
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 0);
    assert!(!audited.account_defaults.unwrap().weakenings.is_empty());
    // Another account's setting leaves this one in enforce: set back.
    let enforced = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&pairs("444455556666=audit"))
        .build()
        .handle(&weaken)
        .await
        .unwrap();
    assert_eq!(
        enforced.account_defaults.unwrap().action,
        imds_guard::report::DefaultsAction::SetBack
    );
    assert_eq!(cloud.count("ModifyInstanceMetadataDefaults"), 1);
}

/// A grant is stamped with AWS's time, not a skewed laptop's; one stamped
/// ahead of the reader's clock (written by hand to outlast its seven days,
/// or by a clock ten minutes fast) is not honoured, and the sweep lists it.
#[tokio::test(start_paused = true)]
async fn a_grant_stands_by_aws_time_and_one_stamped_ahead_is_not_honoured() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    cloud.add(ID, "optional", 2);
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    let aws = now_secs();
    cloud.set_aws_clock(aws);
    // This laptop's clock runs a day fast: the grant is AWS's.
    let done = flow::grant(
        g.config(),
        &cloud.clients(),
        None,
        REGION,
        ID,
        3600,
        "INC-7",
        aws + 24 * 3600,
    )
    .await
    .unwrap();
    assert_eq!((done.grant.granted_at, done.grant.until), (aws, aws + 3600));
    let report = g.handle(&revert_event(ID)).await.unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Exempt);

    // Written by hand, stamped ten minutes ahead: the revert is undone.
    let mut ahead = Grant::from_record(&cloud.records("breakglass#")[0]).unwrap();
    ahead.granted_at = aws + 600;
    ahead.until = aws + 600 + 7 * 24 * 3600;
    cloud.put_record(
        ahead.record(&imds_guard::break_glass::partition_of(&partition(
            "111122223333",
            REGION,
        ))),
    );
    let report = g.handle(&revert_event(ID)).await.unwrap();
    assert_eq!(
        report.instances[0].outcome,
        Outcome::Remediated,
        "{:?}",
        report.instances[0]
    );
    assert_eq!(cloud.tokens(ID), "required");
    let swept = g.handle(&scheduled_in(REGION)).await.unwrap();
    let listed = &swept.sweep.as_ref().unwrap().regions[0].break_glass;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, State::NotHonoured);
}

/// The command line tells through the same outbox as the functions, and a
/// grant's message SNS refuses is reported to the operator, kept nowhere:
/// the function's failed-events queue is not the operator's to fill.
#[tokio::test(start_paused = true)]
async fn a_grants_message_that_cannot_be_sent_is_reported_not_kept_from_the_command_line() {
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.with_failed_events_queue();
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[("GUARD_MODE", "enforce")])
        .build();
    cloud.fail("Publish", 1, api_error("AuthorizationError"));
    let done = flow::grant(
        g.config(),
        &cloud.clients(),
        None,
        REGION,
        ID,
        3600,
        "INC-43: a vendor agent",
        now_secs(),
    )
    .await
    .unwrap();
    assert!(
        done.notification.starts_with("failed: ")
            && done.notification.ends_with("; not kept (command line)"),
        "{}",
        done.notification
    );
    assert!(cloud.kept().is_empty(), "{:?}", cloud.kept());
    // The grant itself stands: it was written before it was told.
    assert_eq!(
        cloud
            .records(imds_guard::memory::Kind::BreakGlass.prefix())
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_the_breaker_holds_is_news_every_sweep_it_is_held() {
    // What a person was told of is not listed again, but a change the
    // circuit breaker held is: the guard is not doing its job there, each
    // run it is held, until the breaker lets it through.
    let cloud = FakeCloud::new();
    cloud.with_memory();
    cloud.set_defaults(Some(Default::default()));
    for n in 0..3 {
        cloud.add(&format!("i-{n:017x}"), "optional", 1);
    }
    let g = cloud
        .test_guard()
        .notifying()
        .remembering()
        .with(&[
            ("GUARD_MODE", "enforce"),
            ("MAX_CHANGES_PER_RUN", "1"),
            ("MAX_CHANGE_PERCENT", "100"),
        ])
        .build();
    let held = |report: &imds_guard::report::Report| -> Vec<String> {
        report
            .instances
            .iter()
            .filter(|r| matches!(r.action.idle, imds_guard::report::Idle::Breaker(_)))
            .map(|r| r.instance_id.clone())
            .collect()
    };
    let first = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(first.count(Outcome::Remediated), 1);
    assert_eq!(held(&first).len(), 2, "{:?}", first.instances);
    let second = g.handle(&scheduled_in(REGION)).await.unwrap();
    assert_eq!(second.count(Outcome::Remediated), 1);
    let still = held(&second);
    assert_eq!(still.len(), 1, "{:?}", second.instances);
    assert_eq!(cloud.tokens(&still[0]), "optional");
    assert!(held(&first).contains(&still[0]));
}

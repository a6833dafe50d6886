//! `imds-guard policy`: the generated SCP and identity policy evaluated by
//! the tests' IAM evaluator (`iam.rs`, IAM's documented semantics) against
//! the seed's cases and the guard's own, their condition keys checked
//! against the Service Authorization Reference (`reference_keys`), their
//! limits and determinism; the declarative policy's shape; the evidence
//! `--with-role-delivery` needs; and the binary as a person runs it.
//!
//! What this cannot show: AWS's own evaluation (which keys EC2 fills for a
//! request that leaves a parameter out, an SCP's effect in a real
//! organization). Those are `doctor`'s dry runs, in the user's account.

use std::process::{Command, Output};

use imds_guard::glob::Glob;
use imds_guard::prevention::{self, Inputs, Kind};
use imds_guard::v1_callers::{Caller, Hypothesis, InstanceCallers, LastMile, Seen};
use serde_json::{json, Value};

use crate::iam::{evaluate, Decision, Request};

const ADMIN: &str = "arn:aws:iam::111122223333:role/Admin";
const GUARD: &str = "arn:aws:iam::111122223333:role/imds-guard-GuardRole";
const BOUND: &str = "arn:aws:iam::111122223333:role/app-deployer";
const PACKER: &str = "arn:aws:iam::444455556666:role/packer";
const INSTANCE: &str = "arn:aws:ec2:us-east-1:111122223333:instance/i-0aaaaaaaaaaaaaaa1";

fn inputs() -> Inputs {
    Inputs {
        exempt_principals: vec![Glob::parse("arn:aws:iam::*:role/packer").unwrap()],
        exempt_tag_key: Some("imds-exempt".into()),
        status_tag_key: "imds-guard:status".into(),
        max_hop_limit: Some(2),
        admin_roles: vec![ADMIN.into()],
        guard_roles: vec![GUARD.into()],
        ..Inputs::default()
    }
}

/// The policy's statements, behind an allow of everything: an SCP filters
/// (FullAWSAccess is what is attached beside it), so `Allow` here means
/// "not denied by this policy".
fn statements(kind: Kind, i: &Inputs) -> Vec<Value> {
    let printed = prevention::policy(kind, i).unwrap();
    let doc: Value = serde_json::from_str(&printed.policy).unwrap();
    let mut all = doc["Statement"].as_array().unwrap().clone();
    all.push(json!({"Effect": "Allow", "Action": "*", "Resource": "*"}));
    all
}

fn launch(by: &str) -> Request {
    Request::new("ec2:RunInstances", INSTANCE).key("aws:PrincipalArn", by)
}

fn modify(by: &str) -> Request {
    Request::new("ec2:ModifyInstanceMetadataOptions", INSTANCE).key("aws:PrincipalArn", by)
}

fn defaults(by: &str) -> Request {
    Request::new("ec2:ModifyInstanceMetadataDefaults", "*").key("aws:PrincipalArn", by)
}

#[test]
fn the_seeds_cases_and_the_guards_own_as_iam_decides_them() {
    for kind in [Kind::Scp, Kind::Iam] {
        let st = statements(kind, &inputs());
        let d = |r: Request| evaluate(&st, &r);
        // A launch without options by a bound role: denied; at optional too.
        assert_eq!(d(launch(BOUND)), Decision::ExplicitDeny, "{kind:?}");
        assert_eq!(
            d(launch(BOUND).key("ec2:MetadataHttpTokens", "optional")),
            Decision::ExplicitDeny
        );
        // With required: allowed; above the hop limit: denied.
        let required = launch(BOUND)
            .key("ec2:MetadataHttpTokens", "required")
            .key("ec2:MetadataHttpPutResponseHopLimit", "2");
        assert_eq!(d(required.clone()), Decision::Allow);
        assert_eq!(
            d(required.key("ec2:MetadataHttpPutResponseHopLimit", "3")),
            Decision::ExplicitDeny
        );
        // By an exempt role (the guard's glob, carried over): allowed.
        assert_eq!(
            d(launch(PACKER).key("ec2:MetadataHttpTokens", "optional")),
            Decision::Allow
        );
        // Tagged as the exempt tag says, by a platform role: allowed; by a
        // bound role the tag itself is denied.
        let tagged = |by: &str| {
            launch(by)
                .key("ec2:MetadataHttpTokens", "optional")
                .key("aws:RequestTag/imds-exempt", "true")
                .multi("aws:TagKeys", &["imds-exempt"])
        };
        assert_eq!(d(tagged(BOUND)), Decision::ExplicitDeny);
        let mut platform = inputs();
        platform.platform_roles = vec!["arn:aws:iam::111122223333:role/platform".into()];
        let pst = statements(kind, &platform);
        assert_eq!(
            evaluate(&pst, &tagged("arn:aws:iam::111122223333:role/platform")),
            Decision::Allow
        );
        // `True`, as the guard reads it, too.
        assert_eq!(
            evaluate(
                &pst,
                &tagged("arn:aws:iam::111122223333:role/platform")
                    .key("aws:RequestTag/imds-exempt", "True")
            ),
            Decision::Allow
        );
        // Without the guard's roles the tag is unprotected: not carried.
        let mut open = platform.clone();
        open.guard_roles.clear();
        let ost = statements(kind, &open);
        assert_eq!(
            evaluate(&ost, &tagged("arn:aws:iam::111122223333:role/platform")),
            Decision::ExplicitDeny
        );
        // A change to optional: denied. The guard's own fix (the instance
        // is at optional as it asks): allowed. A hop-limit change alone:
        // allowed. The administrator's undo: allowed.
        assert_eq!(
            d(modify(BOUND).key("ec2:Attribute/HttpTokens", "optional")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            d(modify(GUARD)
                .key("ec2:Attribute/HttpTokens", "required")
                .key("ec2:MetadataHttpTokens", "optional")),
            Decision::Allow
        );
        assert_eq!(
            d(modify(BOUND).key("ec2:Attribute/HttpPutResponseHopLimit", "2")),
            Decision::Allow
        );
        assert_eq!(
            d(modify(ADMIN).key("ec2:Attribute/HttpTokens", "optional")),
            Decision::Allow
        );
        // The hop limit after launch, and as the default: the guard's
        // ceiling holds; the guard's own container fix (2) passes.
        assert_eq!(
            d(modify(BOUND).key("ec2:Attribute/HttpPutResponseHopLimit", "3")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            d(modify(GUARD)
                .key("ec2:Attribute/HttpTokens", "required")
                .key("ec2:Attribute/HttpPutResponseHopLimit", "2")),
            Decision::Allow
        );
        assert_eq!(
            d(defaults(BOUND).key("ec2:Attribute/HttpPutResponseHopLimit", "5")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            d(defaults(BOUND).key("ec2:Attribute/HttpPutResponseHopLimit", "-1")),
            Decision::Allow
        );
        // The account default: weakening it denied, but to the
        // administrator; the guard's SET_ACCOUNT_DEFAULT (required) allowed.
        assert_eq!(
            d(defaults(BOUND).key("ec2:Attribute/HttpTokens", "optional")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            d(defaults(BOUND).key("ec2:Attribute/HttpTokensEnforced", "disabled")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            d(defaults(GUARD).key("ec2:Attribute/HttpTokens", "required")),
            Decision::Allow
        );
        assert_eq!(
            d(defaults(ADMIN).key("ec2:Attribute/HttpTokensEnforced", "disabled")),
            Decision::Allow
        );
        // The guard's tags: only its roles (and the administrator) write
        // them; other tags are anyone's.
        let tag = |by: &str, keys: &[&str]| {
            Request::new("ec2:CreateTags", INSTANCE)
                .key("aws:PrincipalArn", by)
                .multi("aws:TagKeys", keys)
        };
        assert_eq!(
            d(tag(BOUND, &["team", "imds-guard:status"])),
            Decision::ExplicitDeny
        );
        assert_eq!(d(tag(GUARD, &["imds-guard:status"])), Decision::Allow);
        assert_eq!(d(tag(BOUND, &["team"])), Decision::Allow);
        // DeleteTags naming no tag deletes them all.
        let delete_all =
            |by: &str| Request::new("ec2:DeleteTags", INSTANCE).key("aws:PrincipalArn", by);
        assert_eq!(d(delete_all(BOUND)), Decision::ExplicitDeny);
        assert_eq!(d(delete_all(GUARD)), Decision::Allow);
        let group = Request::new("autoscaling:CreateOrUpdateTags", "*")
            .key("aws:PrincipalArn", BOUND)
            .multi("aws:TagKeys", &["imds-exempt"]);
        assert_eq!(d(group), Decision::ExplicitDeny);
    }
}

#[test]
fn credentials_imdsv1_delivered_are_refused_only_when_asked() {
    let call = |delivery: Option<&str>| {
        let r =
            Request::new("s3:GetObject", "arn:aws:s3:::bucket/key").key("aws:PrincipalArn", BOUND);
        match delivery {
            Some(d) => r.key("ec2:RoleDelivery", d),
            None => r,
        }
    };
    let plain = statements(Kind::Scp, &inputs());
    assert_eq!(evaluate(&plain, &call(Some("1.0"))), Decision::Allow);
    let mut i = inputs();
    i.role_delivery = true;
    let st = statements(Kind::Scp, &i);
    assert_eq!(evaluate(&st, &call(Some("1.0"))), Decision::ExplicitDeny);
    assert_eq!(evaluate(&st, &call(Some("2.0"))), Decision::Allow);
    // A user's call, with no delivered credentials: not this statement's.
    assert_eq!(evaluate(&st, &call(None)), Decision::Allow);
}

#[test]
fn every_condition_key_is_one_aws_lists_for_its_action() {
    let mut i = inputs();
    i.role_delivery = true;
    for kind in [Kind::Scp, Kind::Iam] {
        let doc: Value =
            serde_json::from_str(&prevention::policy(kind, &i).unwrap().policy).unwrap();
        let problems = crate::reference_keys::policy_problems(&doc);
        assert!(problems.is_empty(), "{kind:?}: {problems:#?}");
    }
}

#[test]
fn a_glob_iam_reads_otherwise_is_refused_with_the_reason() {
    // The guard's `*` stops at `/`; IAM's, in the resource part, does not.
    let mut i = inputs();
    i.exempt_principals = vec![Glob::parse("arn:aws:iam::*:role/packer-*").unwrap()];
    let e = prevention::policy(Kind::Scp, &i).unwrap_err();
    assert!(
        e.contains("packer-team/x") && e.contains("literally"),
        "{e}"
    );
    // An account `*` means the same to both: carried over.
    let g = Glob::parse("arn:aws:iam::*:role/ci/packer").unwrap();
    assert!(prevention::iam_means_the_same(&g).is_ok());
    assert!(crate::iam::glob(
        "arn:aws:iam::*:role/ci/packer",
        PACKER.replace("packer", "ci/packer").as_str()
    ));
    // And the refused one really differs: IAM's ArnLike takes a deeper
    // path the guard's glob does not.
    let deeper = "arn:aws:iam::111122223333:role/packer-team/x";
    assert!(!Glob::new("arn:aws:iam::*:role/packer-*").matches(deeper));
    let st = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*",
        "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/packer-*"}}})];
    assert_eq!(
        evaluate(&st, &launch(deeper)),
        Decision::Allow,
        "IAM's ArnLike crosses the slash"
    );
    // A session's ARN is never aws:PrincipalArn: refused, with the fix.
    let mut session = inputs();
    session.admin_roles = vec!["arn:aws:sts::111122223333:assumed-role/Admin/me".into()];
    assert!(prevention::policy(Kind::Scp, &session)
        .unwrap_err()
        .contains("name the role"));
    // Without an administrator role, no way back: refused.
    let mut none = inputs();
    none.admin_roles.clear();
    assert!(prevention::policy(Kind::Scp, &none)
        .unwrap_err()
        .contains("--admin-role"));
}

#[test]
fn the_text_is_deterministic_and_within_the_limit_and_a_larger_one_is_refused() {
    let with = |n: usize| {
        let mut i = inputs();
        i.exempt_principals = (0..n)
            .rev()
            .map(|k| Glob::parse(&format!("arn:aws:iam::*:role/build/packer-{k:02}")).unwrap())
            .collect();
        i
    };
    let twenty = with(20);
    let a = prevention::policy(Kind::Scp, &twenty).unwrap();
    let b = prevention::policy(Kind::Scp, &twenty).unwrap();
    assert_eq!(a, b);
    // Order of the settings does not change the text.
    let mut shuffled = twenty.clone();
    shuffled.exempt_principals.reverse();
    assert_eq!(
        prevention::policy(Kind::Scp, &shuffled).unwrap().policy,
        a.policy
    );
    assert!(!a.policy.contains([' ', '\n']), "minified");
    assert!(
        a.policy.chars().count() <= prevention::SCP_LIMIT,
        "{}",
        a.policy.len()
    );
    let e = prevention::policy(Kind::Scp, &with(60)).unwrap_err();
    assert!(e.contains("5,120") && e.contains("60"), "{e}");
}

/// The declarative policy as the AWS Organizations guide's "Instance
/// metadata defaults" example writes it (the guide's page as read on
/// 2026-12-03, `prevention::DECLARATIVE_GUIDE`): `ec2_attributes` →
/// `instance_metadata_defaults` → each attribute an `@@assign` of a string.
#[test]
fn the_declarative_policy_has_the_guides_shape() {
    let p = prevention::policy(Kind::Declarative, &inputs()).unwrap();
    let doc: Value = serde_json::from_str(&p.policy).unwrap();
    assert_eq!(
        doc,
        json!({"ec2_attributes": {"instance_metadata_defaults": {
            "http_tokens": {"@@assign": "required"}
        }}})
    );
    assert!(p.policy.len() <= prevention::DECLARATIVE_LIMIT);
    assert!(p.notes.iter().any(|n| n.contains("HttpTokensEnforced")));
    // MAX_HOP_LIMIT is a ceiling: never made every launch's default.
    assert!(p.notes.iter().any(|n| n.contains("ceiling, not a default")));
}

fn sweep_report(callers: Value) -> Value {
    json!({"sweep": {"regions": [
        {"account": "111122223333", "region": "us-east-1", "imdsv1_callers": callers},
        {"account": "111122223333", "region": "eu-west-1"}
    ]}})
}

/// What the sweep writes, as its own types serialize it.
fn last_mile(asked: u64, not_asked: u64, callers: Vec<Caller>) -> Value {
    let mut m = LastMile {
        asked,
        not_asked,
        lookups: asked,
        ..LastMile::default()
    };
    if !callers.is_empty() {
        m.instances.push(InstanceCallers {
            instance_id: "i-0aaaaaaaaaaaaaaa1".into(),
            asked_at: 0,
            seen: Seen {
                callers,
                events: 2,
                ..Seen::default()
            },
        });
    }
    serde_json::to_value(&m).unwrap()
}

#[test]
fn role_delivery_needs_evidence_and_says_what_it_did_not_see() {
    // Software seen: refused, named.
    let cli = Caller {
        role: "app".into(),
        agent: "aws-cli/1.16.102".into(),
        first_seen: 0,
        last_seen: 0,
        calls: 2,
        example: "s3:ListBuckets".into(),
        through: None,
        hypothesis: Hypothesis {
            text: "t".into(),
            source: "s".into(),
        },
    };
    let seen = sweep_report(last_mile(3, 0, vec![cli]));
    let e = prevention::role_delivery_evidence(&seen).unwrap_err();
    assert!(
        e.contains("i-0aaaaaaaaaaaaaaa1") && e.contains("aws-cli/1.16.102"),
        "{e}"
    );
    // None seen: allowed, with what was not looked at.
    let clean = sweep_report(last_mile(2, 1, vec![]));
    let blind = prevention::role_delivery_evidence(&clean).unwrap();
    let all = blind.join("\n");
    assert!(all.contains("data events"), "{all}");
    assert!(
        all.contains("111122223333/eu-west-1: CloudTrail was not asked"),
        "{all}"
    );
    assert!(
        all.contains("1 instance(s) left at optional not asked yet"),
        "{all}"
    );
    // Nothing measured: refused; a region whose first call was throttled
    // asked no instance, which is nothing measured too.
    let unmeasured = json!({"sweep": {"regions": [{"region": "us-east-1"}]}});
    assert!(prevention::role_delivery_evidence(&unmeasured)
        .unwrap_err()
        .contains("not measured"));
    let throttled = sweep_report(last_mile(0, 3, vec![]));
    assert!(prevention::role_delivery_evidence(&throttled)
        .unwrap_err()
        .contains("not measured"));
    assert!(prevention::role_delivery_evidence(&json!({"instances": []})).is_err());
}

fn policy_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imds-guard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("policy")
        .args(args);
    for var in [
        "AWS_ENDPOINT_URL",
        "MOTO_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "EXEMPT_TAG_KEY",
        "EXEMPT_PRINCIPAL_ARNS",
        "EXEMPT_IMAGE_IDS",
        "MAX_HOP_LIMIT",
        "STATUS_TAG_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("binary runs")
}

#[test]
fn the_command_prints_the_policy_alone_on_stdout_and_refuses_with_a_reason() {
    let out = policy_cli(
        &[
            "--kind",
            "scp",
            "--admin-role",
            ADMIN,
            "--guard-role",
            GUARD,
        ],
        &[
            ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer"),
            ("EXEMPT_IMAGE_IDS", "ami-0c02fb55956c7d316"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: Value = serde_json::from_str(&stdout).expect("stdout is the policy alone");
    assert_eq!(doc["Statement"][0]["Sid"], "RequireImdsV2AtLaunch");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("management account"), "{stderr}");
    assert!(stderr.contains("service-linked roles"), "{stderr}");
    assert!(stderr.contains("ami-0c02fb55956c7d316"), "{stderr}");

    let refused = policy_cli(
        &["--kind", "scp", "--admin-role", ADMIN],
        &[("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer-*")],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty(), "nothing half-printed");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("means something else to IAM"));

    // --with-role-delivery without evidence: a usage error.
    let no_evidence = policy_cli(
        &[
            "--kind",
            "scp",
            "--admin-role",
            ADMIN,
            "--with-role-delivery",
        ],
        &[],
    );
    assert_eq!(no_evidence.status.code(), Some(2));
    assert!(no_evidence.stdout.is_empty());
}

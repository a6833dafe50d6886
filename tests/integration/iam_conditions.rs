//! The roles' conditions, against the requests the guard really sends.
//!
//! The emulator does not evaluate IAM, and a condition that never matches
//! would deny every fix on real AWS. So these tests capture each
//! `ModifyInstanceMetadataOptions` and `ModifyInstanceMetadataDefaults` the
//! guard sends (serialized by the SDK, seen by an interceptor as they would
//! leave), turn each into its IAM request context (`ec2:Attribute/<Name>`
//! for every parameter it sets, as the Service Authorization Reference keys
//! them, and the instance resource's `ec2:MetadataHttp*` keys) and evaluate
//! both templates' statements on them with `iam::evaluate`.
//!
//! AWS documents `ec2:Attribute/HttpTokens` for this action; whether it
//! fills the other attribute keys, and with what when a request leaves one
//! out, it does not. So a fix must be allowed in every world: the keys it
//! sets, every key filled, each key but HttpTokens absent. A loosening
//! request, sent the same way, must be denied, by the key it loosens.

use std::collections::BTreeMap;

use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_defaults::ModifyInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::types::{
    HttpTokensEnforcedState, HttpTokensState, InstanceMetadataDefaultsResponse,
    InstanceMetadataEndpointState, MetadataDefaultHttpTokensState,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_smithy_mocks::{mock, Rule};
use imds_guard::guard::Guard;

use crate::common::{self, config, fixture, FixedClients, Sent};
use crate::faults::{described, modify_ok, tag_ok};
use crate::iam::{evaluate, Decision, Deployment, Request};
use crate::template::load;

/// An instance as EC2 holds it when a request reaches IAM: what the
/// `ec2:MetadataHttp*` keys of the instance resource describe.
#[derive(Clone, Copy, Debug)]
struct Held {
    tokens: &'static str,
    hop: i32,
    endpoint: &'static str,
}

const INSTANCE: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaa1";

/// A sent request's IAM context: the action, `ec2:Attribute/<Name>` for each
/// parameter it sets (EC2's query protocol: `Name=value&...`, as the Service
/// Authorization Reference keys them), and, for an instance, the instance
/// resource's keys as it is.
fn context(body: &str, held: Option<Held>) -> Option<Request> {
    let pairs: BTreeMap<&str, &str> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let action = pairs.get("Action")?.to_string();
    if !action.starts_with("ModifyInstanceMetadata") {
        return None;
    }
    let resource = if action == "ModifyInstanceMetadataOptions" {
        INSTANCE
    } else {
        "*"
    };
    let mut r = Request::new(&format!("ec2:{action}"), resource);
    for (k, v) in &pairs {
        if !["Action", "Version", "InstanceId", "DryRun"].contains(k) {
            r = r.key(&format!("ec2:Attribute/{k}"), v);
        }
    }
    if let Some(h) = held.filter(|_| resource == INSTANCE) {
        r = r
            .key("ec2:MetadataHttpTokens", h.tokens)
            .key("ec2:MetadataHttpPutResponseHopLimit", &h.hop.to_string())
            .key("ec2:MetadataHttpEndpoint", h.endpoint);
    }
    Some(r)
}

/// The metadata writes sent, as IAM sees them.
fn writes(sent: &Sent, held: Option<Held>) -> Vec<Request> {
    sent.bodies()
        .iter()
        .filter_map(|body| context(body, held))
        .collect()
}

/// The request if EC2 filled every attribute key, those the request left
/// out with the instance's own values (nothing AWS documents either way).
fn all_filled(r: &Request, h: Held) -> Request {
    let mut r = r.clone();
    for (k, v) in [
        ("HttpTokens", h.tokens.to_string()),
        ("HttpPutResponseHopLimit", h.hop.to_string()),
        ("HttpEndpoint", h.endpoint.to_string()),
    ] {
        r.keys
            .entry(format!("ec2:Attribute/{k}"))
            .or_insert_with(|| vec![v]);
    }
    r
}

/// The worlds the fix must be allowed in: the keys the request sets; every
/// attribute key filled; and, from there, each attribute key but
/// `HttpTokens` absent in turn.
fn worlds(r: &Request, h: Held) -> Vec<(String, Request)> {
    let full = all_filled(r, h);
    let mut out = vec![
        ("the keys it sets".to_string(), r.clone()),
        ("every key filled".to_string(), full.clone()),
    ];
    for k in full.keys.keys() {
        if k.starts_with("ec2:Attribute/") && k != "ec2:Attribute/HttpTokens" {
            out.push((format!("{k} absent"), full.clone().without(k)));
        }
    }
    out
}

const TEMPLATES: [(&str, &str); 2] = [
    ("template.yaml", "GuardRole"),
    ("member/template.yaml", "MemberRole"),
];

/// Each template's decision on each request, under `params`.
fn decide(requests: &[Request], params: &[(&str, &str)]) -> Vec<Decision> {
    decide_with(requests, params, |_| {})
}

/// As `decide`, with the statements changed by `mutate` first.
fn decide_with(
    requests: &[Request],
    params: &[(&str, &str)],
    mutate: impl Fn(&mut Vec<serde_json::Value>),
) -> Vec<Decision> {
    TEMPLATES
        .iter()
        .flat_map(|(path, role)| {
            let t = load(path);
            let mut statements = Deployment::with(params).role_statements(&t, role);
            mutate(&mut statements);
            requests
                .iter()
                .map(|r| evaluate(&statements, r))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn guard(pairs: &[(&str, &str)], rules: &[&Rule], sent: &Sent) -> Guard<FixedClients> {
    Guard::new(
        config(pairs),
        FixedClients {
            ec2: common::ec2_seen_by(rules, sent.clone()),
            sns: common::sns(&[]),
            metrics: common::metrics(&[]),
            members: None,
            memory: None,
            failed_events_queue: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    )
}

/// One fix the guard sends, as IAM would see it.
struct Fix {
    label: String,
    params: Vec<(&'static str, &'static str)>,
    held: Held,
    request: Request,
}

/// The fixes the guard really sends (through the event path, serialized by
/// the SDK), for hop limits kept (no ceiling) and lowered to a ceiling of
/// each kind (1, 2, above 2), on optional and on required instances; and
/// the self-check's first probe, `HttpTokens=required` on an instance that
/// already requires tokens (a no-op if it were ever applied).
async fn fixes() -> Vec<Fix> {
    let mut out = Vec::new();
    // The last three: a container host (Karpenter's tag), switched from
    // optional at hop 1 with hop 2 in the same call, without a ceiling and
    // under one of 2 and of 5.
    for (ceiling, tokens, hop, sent_hop, host) in [
        ("", "optional", 1, None, false),
        ("", "optional", 3, None, false),
        ("", "optional", 64, None, false),
        ("2", "optional", 8, Some("2"), false),
        ("2", "optional", 1, None, false),
        ("1", "optional", 3, Some("1"), false),
        ("5", "optional", 9, Some("5"), false),
        ("2", "required", 8, Some("2"), false),
        ("", "optional", 1, Some("2"), true),
        ("2", "optional", 1, Some("2"), true),
        ("5", "optional", 1, Some("2"), true),
    ] {
        let sent = Sent::default();
        let tags: &[(&str, &str)] = if host {
            &[("karpenter.sh/nodepool", "default")]
        } else {
            &[]
        };
        let describe = mock!(Ec2Client::describe_instances).then_output(move || {
            described(vec![crate::faults::inst(
                "i-0aaaaaaaaaaaaaaa1",
                tokens,
                hop,
                aws_sdk_ec2::types::InstanceStateName::Running,
                tags,
            )])
        });
        let (modify, tag) = (modify_ok(), tag_ok());
        let g = guard(
            &[("MAX_HOP_LIMIT", ceiling)],
            &[&describe, &modify, &tag],
            &sent,
        );
        let mut event = fixture("run-instances-console.json");
        event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] =
            "i-0aaaaaaaaaaaaaaa1".into();
        g.handle(&event).await.unwrap();
        let held = Held {
            tokens: if tokens == "optional" {
                "optional"
            } else {
                "required"
            },
            hop,
            endpoint: "enabled",
        };
        let writes = writes(&sent, Some(held));
        assert_eq!(writes.len(), 1, "{writes:?}");
        let w = &writes[0];
        assert_eq!(w.keys["ec2:Attribute/HttpTokens"], ["required"]);
        assert!(
            !w.keys.contains_key("ec2:Attribute/HttpEndpoint"),
            "the endpoint is never sent: {w:?}"
        );
        assert_eq!(
            w.keys
                .get("ec2:Attribute/HttpPutResponseHopLimit")
                .map(|v| v[0].as_str()),
            sent_hop,
            "the hop limit is sent only when lowered, or raised on a container host"
        );
        out.push(Fix {
            label: format!("ceiling {ceiling:?}, {tokens} at hop {hop}, container host {host}"),
            params: vec![("MaxHopLimit", ceiling)],
            held,
            request: w.clone(),
        });
    }
    let sent = Sent::default();
    let modify = modify_ok();
    let ec2 = common::ec2_seen_by(&[&modify], sent.clone());
    ec2.modify_instance_metadata_options()
        .instance_id("i-0aaaaaaaaaaaaaaa1")
        .http_tokens(HttpTokensState::Required)
        .dry_run(true)
        .send()
        .await
        .unwrap();
    let held = Held {
        tokens: "required",
        hop: 1,
        endpoint: "enabled",
    };
    out.push(Fix {
        label: "the self-check's no-op probe".into(),
        params: vec![("MaxHopLimit", "")],
        held,
        request: writes(&sent, Some(held)).remove(0),
    });
    out
}

#[tokio::test]
async fn every_fix_the_guard_sends_is_allowed_by_both_roles_whatever_ec2_fills_in() {
    for fix in fixes().await {
        for (world, r) in worlds(&fix.request, fix.held) {
            assert_eq!(
                decide(std::slice::from_ref(&r), &fix.params),
                [Decision::Allow, Decision::Allow],
                "{} ({world}): {r:?}",
                fix.label
            );
        }
        // HttpTokens absent: the one key the allow rests on.
        let r = all_filled(&fix.request, fix.held).without("ec2:Attribute/HttpTokens");
        assert!(
            decide(std::slice::from_ref(&r), &fix.params)
                .iter()
                .all(|d| !d.allowed()),
            "{}: allowed without HttpTokens: {r:?}",
            fix.label
        );
    }
}

/// Removing the `Null` guard of any Deny that has one must stop one of the
/// guard's own fixes (or the account default it sets): each guard is what
/// keeps its Deny from biting when AWS leaves the key out.
#[tokio::test]
async fn every_null_guard_on_a_deny_is_load_bearing() {
    let fixes = fixes().await;
    let default = default_request().await;
    for (path, role) in TEMPLATES {
        let t = load(path);
        let statements =
            Deployment::with(&[("SetAccountDefault", "true")]).role_statements(&t, role);
        let guarded: Vec<String> = statements
            .iter()
            .filter(|st| st["Effect"] == "Deny" && st["Condition"].get("Null").is_some())
            .map(|st| st["Sid"].as_str().unwrap().to_string())
            .collect();
        assert!(guarded.len() >= 5, "{path}: {guarded:?}");
        for sid in guarded {
            let strip = |sts: &mut Vec<serde_json::Value>| {
                for st in sts.iter_mut().filter(|st| st["Sid"] == sid.as_str()) {
                    st["Condition"].as_object_mut().unwrap().remove("Null");
                }
            };
            let mut bitten = false;
            for fix in &fixes {
                let d = decide_with(std::slice::from_ref(&fix.request), &fix.params, strip);
                bitten |= d.iter().any(|d| !d.allowed());
            }
            let d = decide_with(
                std::slice::from_ref(&default),
                &[("SetAccountDefault", "true")],
                strip,
            );
            bitten |= d.iter().any(|d| !d.allowed());
            assert!(bitten, "{path}: {sid} without its Null guard stops no fix");
        }
    }
}

/// The `ModifyInstanceMetadataDefaults` the guard sends with SetAccountDefault.
async fn default_request() -> Request {
    let sent = Sent::default();
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = mock!(Ec2Client::get_instance_metadata_defaults).then_output(|| {
        GetInstanceMetadataDefaultsOutput::builder()
            .account_level(
                InstanceMetadataDefaultsResponse::builder()
                    .http_tokens(HttpTokensState::Optional)
                    .http_tokens_enforced(HttpTokensEnforcedState::Disabled)
                    .build(),
            )
            .build()
    });
    let set = mock!(Ec2Client::modify_instance_metadata_defaults).then_output(|| {
        ModifyInstanceMetadataDefaultsOutput::builder()
            .r#return(true)
            .build()
    });
    let g = guard(
        &[("SET_ACCOUNT_DEFAULT", "true")],
        &[&empty, &get, &set],
        &sent,
    );
    g.handle(&fixture("scheduled-event.json")).await.unwrap();
    let mut writes = writes(&sent, None);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].action, "ec2:ModifyInstanceMetadataDefaults");
    writes.remove(0)
}

#[tokio::test]
async fn the_account_default_the_guard_sets_is_allowed_by_both_roles() {
    let r = default_request().await;
    let on = [("SetAccountDefault", "true")];
    assert_eq!(decide(std::slice::from_ref(&r), &on), [Decision::Allow; 2]);
    // Without SetAccountDefault the roles have no such permission at all.
    let off = [("SetAccountDefault", "false")];
    assert_eq!(decide(&[r], &off), [Decision::ImplicitDeny; 2]);
}

/// A loosening request, the instance it is sent to, the parameters, and
/// the key its denial rests on.
struct Loosening {
    what: &'static str,
    held: Held,
    params: &'static [(&'static str, &'static str)],
    key: &'static str,
}

/// What someone holding the roles' credentials might try, sent through the
/// same SDK and read the same way: each is denied by both templates, and
/// each by the key it names (without that key the same request passes, so
/// the case tests the restriction it claims to).
#[tokio::test]
async fn a_request_that_would_loosen_imds_is_denied_by_both_roles() {
    let modify = modify_ok();
    let optional = Held {
        tokens: "optional",
        hop: 1,
        endpoint: "enabled",
    };
    let required = Held {
        tokens: "required",
        ..optional
    };
    let disabled = Held {
        endpoint: "disabled",
        ..optional
    };
    let no_ceiling: &[(&str, &str)] = &[("MaxHopLimit", "")];
    let ceiling_5: &[(&str, &str)] = &[("MaxHopLimit", "5")];
    type Build = fn(
        aws_sdk_ec2::operation::modify_instance_metadata_options::builders::ModifyInstanceMetadataOptionsFluentBuilder,
    ) -> aws_sdk_ec2::operation::modify_instance_metadata_options::builders::ModifyInstanceMetadataOptionsFluentBuilder;
    let cases: Vec<(Loosening, Build)> = vec![
        (
            Loosening {
                what: "tokens optional",
                held: required,
                params: no_ceiling,
                key: "ec2:Attribute/HttpTokens",
            },
            |m| m.http_tokens(HttpTokensState::Optional),
        ),
        (
            Loosening {
                what: "the endpoint switched off",
                held: optional,
                params: no_ceiling,
                key: "ec2:Attribute/HttpEndpoint",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Disabled)
            },
        ),
        (
            Loosening {
                what: "the endpoint switched on",
                held: disabled,
                params: no_ceiling,
                key: "ec2:Attribute/HttpEndpoint",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
            },
        ),
        (
            Loosening {
                what: "hop limit 3 without a ceiling",
                held: optional,
                params: no_ceiling,
                key: "ec2:Attribute/HttpPutResponseHopLimit",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(3)
            },
        ),
        (
            Loosening {
                what: "hop limit 6 above a ceiling of 5",
                held: optional,
                params: ceiling_5,
                key: "ec2:Attribute/HttpPutResponseHopLimit",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(6)
            },
        ),
        (
            Loosening {
                what: "hop limit 2 on a required instance at 1",
                held: required,
                params: no_ceiling,
                key: "ec2:Attribute/HttpPutResponseHopLimit",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(2)
            },
        ),
        (
            Loosening {
                what: "hop limit 5 on a required instance at 1, ceiling 5",
                held: required,
                params: ceiling_5,
                key: "ec2:Attribute/HttpPutResponseHopLimit",
            },
            |m| {
                m.http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(5)
            },
        ),
    ];
    for (case, build) in cases {
        let sent = Sent::default();
        let ec2 = common::ec2_seen_by(&[&modify], sent.clone());
        build(
            ec2.modify_instance_metadata_options()
                .instance_id("i-0aaaaaaaaaaaaaaa1"),
        )
        .send()
        .await
        .unwrap();
        let r = writes(&sent, Some(case.held)).remove(0);
        assert!(
            decide(std::slice::from_ref(&r), case.params)
                .iter()
                .all(|d| !d.allowed()),
            "{}: allowed: {r:?}",
            case.what
        );
        // The denial rests on the key the case names: with the loosening
        // left out, what remains is a fix both roles allow (for the
        // tokens case, nothing remains to allow).
        let without = r.clone().without(case.key);
        let expect = if case.key == "ec2:Attribute/HttpTokens" {
            [Decision::ImplicitDeny; 2]
        } else {
            [Decision::Allow; 2]
        };
        assert_eq!(
            decide(&[without], case.params),
            expect,
            "{}: not denied by {}",
            case.what,
            case.key
        );
    }
}

/// Loosening the account default: each attribute other than
/// `HttpTokens=required` is denied, whatever else the request says.
#[tokio::test]
async fn a_weakened_account_default_is_denied_by_both_roles() {
    let set = mock!(Ec2Client::modify_instance_metadata_defaults)
        .then_output(|| ModifyInstanceMetadataDefaultsOutput::builder().build());
    let sent = Sent::default();
    let ec2 = common::ec2_seen_by(&[&set], sent.clone());
    let d = || ec2.modify_instance_metadata_defaults();
    d().http_tokens(MetadataDefaultHttpTokensState::NoPreference)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Optional)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_tokens_enforced(aws_sdk_ec2::types::DefaultHttpTokensEnforcedState::Disabled)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_tokens_enforced(aws_sdk_ec2::types::DefaultHttpTokensEnforcedState::Enabled)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_put_response_hop_limit(64)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_endpoint(aws_sdk_ec2::types::DefaultInstanceMetadataEndpointState::Disabled)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .instance_metadata_tags(aws_sdk_ec2::types::DefaultInstanceMetadataTagsState::Enabled)
        .send()
        .await
        .unwrap();
    d().http_put_response_hop_limit(1).send().await.unwrap();
    let defaults = writes(&sent, None);
    assert_eq!(defaults.len(), 8);
    let on = [("SetAccountDefault", "true")];
    for r in defaults {
        assert!(
            decide(std::slice::from_ref(&r), &on)
                .iter()
                .all(|d| !d.allowed()),
            "allowed: {r:?}"
        );
    }
}

/// The status tag, and only it, on an instance: what the self-check's tag
/// probes expect of both roles.
#[test]
fn the_roles_may_write_the_status_tag_and_no_other() {
    let tag = |keys: &[&str]| Request::new("ec2:CreateTags", INSTANCE).multi("aws:TagKeys", keys);
    let status = [("StatusTagKey", "imds-guard:status")];
    assert_eq!(
        decide(&[tag(&["imds-guard:status"])], &status),
        [Decision::Allow; 2]
    );
    for keys in [
        &["imds-guard-self-check"][..],
        &["imds-guard:status", "imds-exempt"][..],
        &["aws:cloudformation:stack-name"][..],
    ] {
        assert_eq!(
            decide(&[tag(keys)], &status),
            [Decision::ImplicitDeny; 2],
            "{keys:?}"
        );
    }
    // No key at all: the Null guard keeps a tagless request out.
    assert_eq!(
        decide(&[Request::new("ec2:CreateTags", INSTANCE)], &status),
        [Decision::ImplicitDeny; 2]
    );
}

/// Both roles may read `MetadataNoToken` whatever `CheckMetadataNoToken`
/// says: a version-gated launcher's instance is switched only on its proof,
/// and watched afterwards with `MetadataNoTokenRejected`.
#[test]
fn both_roles_read_the_metric_with_the_check_off() {
    let read = Request::new("cloudwatch:GetMetricData", "*");
    for check in ["false", "true"] {
        let decisions = decide(
            std::slice::from_ref(&read),
            &[("CheckMetadataNoToken", check)],
        );
        assert_eq!(decisions.len(), TEMPLATES.len());
        assert!(
            decisions.iter().all(|d| *d == Decision::Allow),
            "CheckMetadataNoToken={check}: {decisions:?}"
        );
    }
}

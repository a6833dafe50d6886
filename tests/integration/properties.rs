//! Properties over generated instances, configurations and AWS answers:
//! enforce never disables the endpoint, never raises the hop limit, never
//! touches an exempt instance; audit never writes to an instance; every
//! instance an event names ends in exactly one outcome, or the invocation
//! fails and names it.

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_options::{
    ModifyInstanceMetadataOptionsError, ModifyInstanceMetadataOptionsOutput,
};
use aws_sdk_ec2::types::{
    HttpTokensState, Instance, InstanceMetadataEndpointState, InstanceMetadataOptionsResponse,
    InstanceState, InstanceStateName, Reservation, Tag,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_smithy_mocks::mock;
use imds_guard::config::{Config, Exemptions, Mode};
use imds_guard::event::{EventContext, MetadataOptions, Observed, Principal, Trigger};
use imds_guard::glob::Glob;
use imds_guard::guard::GuardError;
use imds_guard::plan::plan;
use imds_guard::report::Outcome;
use proptest::prelude::*;

use crate::common::{config, guard, launch_event};

const EXEMPT_AMI: &str = "ami-0fffffffffffffff0";
const EXEMPT_ROLE: &str = "arn:aws:iam::111122223333:role/legacy";

fn arb_observed(id: String) -> impl Strategy<Value = Observed> {
    (
        prop::option::of(prop::sample::select(vec!["required", "optional", "weird"])),
        prop::option::of(prop::sample::select(vec!["enabled", "disabled"])),
        prop::option::of(1i32..=64),
        prop::option::of(prop::sample::select(vec![
            "pending",
            "running",
            "stopped",
            "shutting-down",
            "terminated",
        ])),
        prop::sample::select(vec![None, Some("true"), Some("TRUE"), Some("false")]),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["enabled", "disabled"])),
    )
        .prop_map(
            move |(tokens, endpoint, hop, state, exempt_tag, exempt_image, ipv6)| Observed {
                instance_id: id.clone(),
                image_id: Some(
                    if exempt_image {
                        EXEMPT_AMI
                    } else {
                        "ami-0c02fb55956c7d316"
                    }
                    .to_string(),
                ),
                state: state.map(str::to_string),
                options: MetadataOptions {
                    http_tokens: tokens.map(str::to_string),
                    http_endpoint: endpoint.map(str::to_string),
                    http_put_response_hop_limit: hop,
                    http_protocol_ipv6: ipv6.map(str::to_string),
                    instance_metadata_tags: Some("disabled".into()),
                },
                tags: Some(
                    exempt_tag
                        .map(|v| vec![("legacy-imds".to_string(), v.to_string())])
                        .unwrap_or_default(),
                ),
                ..Observed::default()
            },
        )
}

fn arb_config() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec![Mode::Enforce, Mode::Notify, Mode::Audit]),
        prop::option::of(1i32..=64),
        any::<bool>(),
    )
        .prop_map(|(mode, max_hop_limit, exemptions_on)| Config {
            mode,
            max_hop_limit,
            exemptions: if exemptions_on {
                Exemptions {
                    tag_key: Some("legacy-imds".into()),
                    principals: vec![Glob::new(EXEMPT_ROLE)],
                    image_ids: vec![EXEMPT_AMI.into()],
                }
            } else {
                Exemptions::default()
            },
            ..Config::default()
        })
}

fn principal(exempt: bool) -> Principal {
    Principal {
        arn: Some("arn:aws:sts::111122223333:assumed-role/x/session".into()),
        role_arn: Some(
            if exempt {
                EXEMPT_ROLE
            } else {
                "arn:aws:iam::111122223333:role/dev"
            }
            .into(),
        ),
        ..Principal::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decisions_are_safe(cfg in arb_config(), o in arb_observed("i-0123456789abcdef0".into()), exempt_principal in any::<bool>()) {
        let ctx = EventContext { principal: principal(exempt_principal), region: "us-east-1".into(), ..EventContext::default() };
        let (report, remedy) = plan(&cfg, &o, &ctx, Trigger::Launch);

        // Only enforce ever writes options.
        if cfg.mode != Mode::Enforce {
            prop_assert!(remedy.is_none());
            prop_assert_ne!(report.outcome, Outcome::Remediated);
        }
        if let Some(r) = &remedy {
            // The endpoint is never part of a remedy (the type has no field
            // for it); the hop limit is sent only to lower it to the ceiling.
            prop_assert_eq!(r.http_tokens, "required");
            let hop = o.options.http_put_response_hop_limit;
            match (r.http_put_response_hop_limit, cfg.max_hop_limit) {
                (Some(sent), Some(max)) => {
                    prop_assert_eq!(sent, max);
                    prop_assert!(hop.is_some_and(|h| h > max), "never raises the hop limit");
                }
                (Some(_), None) => prop_assert!(false, "hop limit sent without MAX_HOP_LIMIT"),
                (None, Some(max)) => prop_assert!(hop.is_some_and(|h| h <= max), "a hop limit above the ceiling is lowered"),
                (None, None) => {}
            }
            prop_assert_eq!(&r.http_protocol_ipv6, &o.options.http_protocol_ipv6, "other options kept");
        }

        // Never touches an exempt instance.
        let ex = &cfg.exemptions;
        let exempt = ex.tag_key.is_some() && o.tag("legacy-imds").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || !ex.image_ids.is_empty() && o.image_id.as_deref() == Some(EXEMPT_AMI)
            || !ex.principals.is_empty() && exempt_principal;
        if exempt {
            prop_assert!(remedy.is_none(), "an exempt instance is never written to");
        }

        // Compliant instances are left alone, in every mode.
        let gone = matches!(o.state.as_deref(), Some("shutting-down" | "terminated"));
        let endpoint_off = o.options.http_endpoint.as_deref() == Some("disabled");
        let hop_ok = cfg.max_hop_limit.is_none_or(|m| o.options.http_put_response_hop_limit.is_some_and(|h| h <= m));
        if !gone && (endpoint_off || o.options.http_endpoint.is_some() && o.options.http_tokens.as_deref() == Some("required") && hop_ok) {
            prop_assert_eq!(report.outcome, Outcome::Compliant);
            prop_assert!(remedy.is_none());
        }
        if gone {
            prop_assert_eq!(report.outcome, Outcome::Gone);
        }
    }
}

/// How EC2 answers for one instance of a generated event.
#[derive(Clone, Debug)]
struct Answer {
    tokens: &'static str,
    state: InstanceStateName,
    exempt_tag: bool,
    modify_denied: bool,
}

fn arb_answer() -> impl Strategy<Value = Answer> {
    (
        prop::sample::select(vec!["required", "optional"]),
        prop::sample::select(vec![
            InstanceStateName::Running,
            InstanceStateName::Stopped,
            InstanceStateName::Terminated,
        ]),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(tokens, state, exempt_tag, modify_denied)| Answer {
            tokens,
            state,
            exempt_tag,
            modify_denied,
        })
}

fn run_guard(
    mode: &str,
    answers: &[Answer],
) -> (Result<imds_guard::report::Report, GuardError>, usize, usize) {
    let ids: Vec<String> = (0..answers.len())
        .map(|n| format!("i-{:017x}", n + 1))
        .collect();
    let instances: Vec<Instance> = ids
        .iter()
        .zip(answers)
        .map(|(id, a)| {
            Instance::builder()
                .instance_id(id)
                .image_id("ami-0c02fb55956c7d316")
                .state(InstanceState::builder().name(a.state.clone()).build())
                .metadata_options(
                    InstanceMetadataOptionsResponse::builder()
                        .http_tokens(HttpTokensState::from(a.tokens))
                        .http_endpoint(InstanceMetadataEndpointState::Enabled)
                        .http_put_response_hop_limit(2)
                        .build(),
                )
                .set_tags(
                    a.exempt_tag
                        .then(|| vec![Tag::builder().key("legacy-imds").value("true").build()]),
                )
                .build()
        })
        .collect();
    let describe = mock!(Ec2Client::describe_instances).then_output(move || {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .set_instances(Some(instances.clone()))
                    .build(),
            )
            .build()
    });
    let denied: Vec<String> = ids
        .iter()
        .zip(answers)
        .filter(|(_, a)| a.modify_denied)
        .map(|(i, _)| i.clone())
        .collect();
    let deny = mock!(Ec2Client::modify_instance_metadata_options)
        .match_requests(move |r| denied.iter().any(|d| Some(d.as_str()) == r.instance_id()))
        .then_error(|| {
            ModifyInstanceMetadataOptionsError::generic(
                ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .build(),
            )
        });
    let modify = mock!(Ec2Client::modify_instance_metadata_options)
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build());
    let tag = mock!(Ec2Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    // Every launch item says "optional": the function must look at EC2.
    let mut event = launch_event("run-instances-console.json", &ids, None);
    for item in event["detail"]["responseElements"]["instancesSet"]["items"]
        .as_array_mut()
        .unwrap()
    {
        item["metadataOptions"]["httpTokens"] = "optional".into();
    }
    let g = guard(
        config(&[("GUARD_MODE", mode), ("EXEMPT_TAG_KEY", "legacy-imds")]),
        &[&describe, &deny, &modify, &tag],
        &[],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(g.handle(&event));
    (
        result,
        deny.num_calls() + modify.num_calls(),
        tag.num_calls(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_instance_ends_in_one_outcome_or_is_named(
        answers in prop::collection::vec(arb_answer(), 1..12),
        mode in prop::sample::select(vec!["enforce", "notify", "audit"]),
    ) {
        let (result, modifies, tags) = run_guard(mode, &answers);
        let report = match &result {
            Ok(r) => r.clone(),
            Err(GuardError::Unhandled { report, .. }) => (**report).clone(),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        };
        // Exactly one outcome per instance, in event order.
        prop_assert_eq!(report.instances.len(), answers.len());
        for (n, r) in report.instances.iter().enumerate() {
            prop_assert_eq!(&r.instance_id, &format!("i-{:017x}", n + 1));
        }
        // Expected outcome of each, from EC2's answer alone.
        for (r, a) in report.instances.iter().zip(&answers) {
            let want = match (a.state.clone(), a.tokens, a.exempt_tag, mode) {
                (InstanceStateName::Terminated, ..) => Outcome::Gone,
                (_, "required", ..) => Outcome::Compliant,
                (_, _, true, _) => Outcome::Exempt,
                (_, _, _, "enforce") if a.modify_denied => Outcome::Failed,
                (_, _, _, "enforce") => Outcome::Remediated,
                _ => Outcome::Flagged,
            };
            prop_assert_eq!(r.outcome, want, "{:?}", a);
        }
        // Failure is never silent: the error names every failed instance, and only those.
        let failed: Vec<&str> = report.instances.iter().filter(|r| r.outcome == Outcome::Failed).map(|r| r.instance_id.as_str()).collect();
        match &result {
            Ok(_) => prop_assert!(failed.is_empty()),
            Err(e) => {
                prop_assert!(!failed.is_empty());
                for id in &failed {
                    prop_assert!(e.to_string().contains(id));
                }
                for r in report.instances.iter().filter(|r| r.outcome != Outcome::Failed) {
                    prop_assert!(!e.to_string().contains(&r.instance_id));
                }
            }
        }
        // Audit never writes; notify never modifies.
        if mode == "audit" {
            prop_assert_eq!((modifies, tags), (0, 0));
        }
        if mode == "notify" {
            prop_assert_eq!(modifies, 0);
        }
    }
}

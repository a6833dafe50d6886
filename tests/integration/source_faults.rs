//! Sources against mocked EC2 and Auto Scaling: what the emulator lacks.
//! Real EC2 merges a new version's data into its `SourceVersion`'s (the
//! emulator does not), so the guard sends only a whole `MetadataOptions`
//! block and the source version; mixed-instances policies with per-override
//! templates, versions pinned by number, AMIs with `ImdsSupport`, and
//! throttling on the new calls.

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    MixedInstancesPolicy,
};
use aws_sdk_autoscaling::Client as AsgClient;
use aws_sdk_ec2::operation::create_launch_template_version::CreateLaunchTemplateVersionOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::operation::modify_launch_template::ModifyLaunchTemplateOutput;
use aws_sdk_ec2::types::{
    Image, ImdsSupportValues, LaunchTemplate as Ec2Template, LaunchTemplateHttpTokensState,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptions,
    LaunchTemplateVersion, ResponseLaunchTemplateData, Tag,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_smithy_mocks::{mock, Rule};
use imds_guard::guard::{Guard, GuardError};
use imds_guard::source::{SourceKind, SourceOutcome};

use crate::common::{self, config, fixture, FixedClients};
use crate::faults::THROTTLED;

const LT: &str = "lt-0a1b2c3d4e5f60718";

fn guard(pairs: &[(&str, &str)], ec2: &[&Rule], asg: &[&Rule]) -> Guard<FixedClients> {
    Guard::new(
        config(pairs),
        FixedClients {
            ec2: common::ec2(ec2),
            sns: common::sns(&[]),
            metrics: common::metrics(&[]),
            members: None,
            memory: None,
            failed_events_queue: None,
            autoscaling: common::autoscaling(asg),
            findings: common::securityhub(&[]),
            events: None,
        },
    )
}

fn template(id: &'static str, default: i64, latest: i64, opted_in: bool) -> Rule {
    templates(vec![(id, default, latest, opted_in)])
}

/// `DescribeLaunchTemplates` answering each template asked for (all when
/// none is named): (id, default, latest, opted in).
fn templates(all: Vec<(&'static str, i64, i64, bool)>) -> Rule {
    mock!(Ec2Client::describe_launch_templates).then_compute_output(move |r| {
        let asked = r.launch_template_ids();
        let mut out = DescribeLaunchTemplatesOutput::builder();
        for (id, default, latest, opted_in) in &all {
            if !asked.is_empty() && !asked.contains(&id.to_string()) {
                continue;
            }
            let mut t = Ec2Template::builder()
                .launch_template_id(*id)
                .launch_template_name(format!("{id}-name"))
                .default_version_number(*default)
                .latest_version_number(*latest);
            if *opted_in {
                t = t.tags(
                    Tag::builder()
                        .key("imds-guard:fix-source")
                        .value("true")
                        .build(),
                );
            }
            out = out.launch_templates(t.build());
        }
        out.build()
    })
}

/// A version as EC2 answers it: the image, the instance type, and metadata
/// options (`None`: the version sets none).
fn version(id: &str, n: i64, tokens: Option<&str>, hop: Option<i32>) -> LaunchTemplateVersion {
    let mut data = ResponseLaunchTemplateData::builder()
        .image_id("ami-0c02fb55956c7d316")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro);
    if let Some(t) = tokens {
        data = data.metadata_options(
            LaunchTemplateInstanceMetadataOptions::builder()
                .http_tokens(LaunchTemplateHttpTokensState::from(t))
                .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                .set_http_put_response_hop_limit(hop)
                .build(),
        );
    }
    LaunchTemplateVersion::builder()
        .launch_template_id(id)
        .version_number(n)
        .launch_template_data(data.build())
        .build()
}

fn versions(vs: Vec<LaunchTemplateVersion>) -> Rule {
    mock!(Ec2Client::describe_launch_template_versions).then_output(move || {
        DescribeLaunchTemplateVersionsOutput::builder()
            .set_launch_template_versions(Some(vs.clone()))
            .build()
    })
}

/// The new version: only the source version and a whole metadata block, so
/// real EC2 copies the rest (AMI, user data, network) from the source.
#[tokio::test]
async fn a_fix_sends_the_source_version_and_a_whole_metadata_block_only() {
    let t = template(LT, 1, 1, true);
    let v = versions(vec![version(LT, 1, Some("optional"), Some(3))]);
    let create = mock!(Ec2Client::create_launch_template_version)
        .match_requests(|r| {
            let Some(data) = r.launch_template_data() else {
                return false;
            };
            let Some(m) = data.metadata_options() else {
                return false;
            };
            r.launch_template_id() == Some(LT)
                && r.source_version() == Some("1")
                && data.image_id().is_none()
                && data.instance_type().is_none()
                && data.user_data().is_none()
                && m.http_tokens() == Some(&LaunchTemplateHttpTokensState::Required)
                && m.http_endpoint() == Some(&LaunchTemplateInstanceMetadataEndpointState::Enabled)
                && m.http_put_response_hop_limit() == Some(3)
        })
        .then_output(|| {
            CreateLaunchTemplateVersionOutput::builder()
                .launch_template_version(LaunchTemplateVersion::builder().version_number(7).build())
                .build()
        });
    let set = mock!(Ec2Client::modify_launch_template)
        .match_requests(|r| r.launch_template_id() == Some(LT) && r.default_version() == Some("7"))
        .then_output(|| ModifyLaunchTemplateOutput::builder().build());
    let g = guard(&[("FIX_SOURCES", "true")], &[&t, &v, &create, &set], &[]);
    let r = g
        .handle(&fixture("create-launch-template.json"))
        .await
        .unwrap();
    assert_eq!(
        r.sources[0].outcome,
        SourceOutcome::Fixed,
        "{:?}",
        r.sources[0]
    );
    assert_eq!((create.num_calls(), set.num_calls()), (1, 1));
    assert!(
        r.sources[0].action.contains("created version 7"),
        "{}",
        r.sources[0].action
    );
}

/// A mixed-instances policy whose override launches from another template,
/// pinned by number: the group is judged by that version too.
#[tokio::test]
async fn a_mixed_instances_override_pinned_to_a_bad_version_flags_its_group() {
    const OTHER: &str = "lt-0f0e0d0c0b0a09080";
    let group = mock!(AsgClient::describe_auto_scaling_groups).then_output(|| {
        let spec = |id: &str, v: &str| {
            LaunchTemplateSpecification::builder()
                .launch_template_id(id)
                .version(v)
                .build()
        };
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(
                AutoScalingGroup::builder()
                    .auto_scaling_group_name("web-asg")
                    .mixed_instances_policy(
                        MixedInstancesPolicy::builder()
                            .launch_template(
                                LaunchTemplate::builder()
                                    .launch_template_specification(spec(LT, "$Default"))
                                    .overrides(
                                        LaunchTemplateOverrides::builder()
                                            .instance_type("m5.large")
                                            .build(),
                                    )
                                    .overrides(
                                        LaunchTemplateOverrides::builder()
                                            .instance_type("m6g.large")
                                            .launch_template_specification(spec(OTHER, "4"))
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let both = templates(vec![(LT, 1, 1, false), (OTHER, 5, 5, false)]);
    let v1 = mock!(Ec2Client::describe_launch_template_versions)
        .match_requests(|r| r.launch_template_id() == Some(LT))
        .then_output(|| {
            DescribeLaunchTemplateVersionsOutput::builder()
                .launch_template_versions(version(LT, 1, Some("required"), Some(2)))
                .build()
        });
    let v2 = mock!(Ec2Client::describe_launch_template_versions)
        .match_requests(|r| {
            r.launch_template_id() == Some(OTHER) && r.versions().contains(&"4".to_string())
        })
        .then_output(|| {
            DescribeLaunchTemplateVersionsOutput::builder()
                .launch_template_versions(version(OTHER, 4, Some("optional"), Some(2)))
                .launch_template_versions(version(OTHER, 5, Some("required"), Some(2)))
                .build()
        });
    let g = guard(&[], &[&both, &v1, &v2], &[&group]);
    let r = g
        .handle(&fixture("create-auto-scaling-group.json"))
        .await
        .unwrap();
    let asg = r
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::AutoScalingGroup)
        .unwrap();
    assert_eq!(asg.outcome, SourceOutcome::Flagged);
    assert!(
        asg.findings
            .iter()
            .any(|f| f.contains(OTHER) && f.contains("version 4 (4)")),
        "{:?}",
        asg.findings
    );
    let other = r.sources.iter().find(|s| s.id == OTHER).unwrap();
    assert_eq!(
        other.outcome,
        SourceOutcome::Compliant,
        "its default and latest are fine"
    );
    assert_eq!(other.pinned_by, vec!["web-asg"]);
}

/// A template that sets no tokens, from an AMI with `ImdsSupport` v2.0:
/// compliant; from one without, in an account whose default is not
/// required: it would launch optional.
#[tokio::test]
async fn an_ami_with_imds_support_v2_makes_a_template_without_tokens_compliant() {
    use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
    use aws_sdk_ec2::types::InstanceMetadataDefaultsResponse;
    for (v2, outcome) in [
        (true, SourceOutcome::Compliant),
        (false, SourceOutcome::Flagged),
    ] {
        let t = template(LT, 1, 1, false);
        let v = versions(vec![version(LT, 1, None, None)]);
        let defaults = mock!(Ec2Client::get_instance_metadata_defaults).then_output(|| {
            GetInstanceMetadataDefaultsOutput::builder()
                .account_level(InstanceMetadataDefaultsResponse::builder().build())
                .build()
        });
        let images = mock!(Ec2Client::describe_images)
            .match_requests(|r| {
                r.filters().iter().any(|f| {
                    f.name() == Some("image-id")
                        && f.values().contains(&"ami-0c02fb55956c7d316".to_string())
                })
            })
            .then_output(move || {
                let mut i = Image::builder().image_id("ami-0c02fb55956c7d316");
                if v2 {
                    i = i.imds_support(ImdsSupportValues::V20);
                }
                DescribeImagesOutput::builder().images(i.build()).build()
            });
        let g = guard(&[], &[&t, &v, &defaults, &images], &[]);
        let r = g
            .handle(&fixture("create-launch-template.json"))
            .await
            .unwrap();
        assert_eq!(r.sources[0].outcome, outcome, "{v2}: {:?}", r.sources[0]);
        assert_eq!(images.num_calls(), 1);
    }
}

/// Throttling on the new calls: the SDK retries; past its retries, the
/// template fails and the invocation names it, so the event is retried.
#[tokio::test]
async fn throttling_on_a_fix_is_retried_and_then_fails_the_event_by_name() {
    let ok = || {
        CreateLaunchTemplateVersionOutput::builder()
            .launch_template_version(LaunchTemplateVersion::builder().version_number(2).build())
            .build()
    };
    let set = || {
        mock!(Ec2Client::modify_launch_template)
            .then_output(|| ModifyLaunchTemplateOutput::builder().build())
    };

    let t = template(LT, 1, 1, true);
    let v = versions(vec![version(LT, 1, Some("optional"), Some(2))]);
    let create = mock!(Ec2Client::create_launch_template_version)
        .sequence()
        .http_status(503, Some(THROTTLED.into()))
        .times(2)
        .output(ok)
        .build();
    let s = set();
    let g = guard(&[("FIX_SOURCES", "true")], &[&t, &v, &create, &s], &[]);
    let r = g
        .handle(&fixture("create-launch-template.json"))
        .await
        .unwrap();
    assert_eq!(r.sources[0].outcome, SourceOutcome::Fixed);
    assert_eq!(create.num_calls(), 3);

    let t = template(LT, 1, 1, true);
    let v = versions(vec![version(LT, 1, Some("optional"), Some(2))]);
    let throttled = mock!(Ec2Client::create_launch_template_version)
        .sequence()
        .http_status(503, Some(THROTTLED.into()))
        .repeatedly()
        .build();
    let s = set();
    let g = guard(&[("FIX_SOURCES", "true")], &[&t, &v, &throttled, &s], &[]);
    let Err(GuardError::Unhandled { summary, report }) =
        g.handle(&fixture("create-launch-template.json")).await
    else {
        panic!("a template that could not be fixed fails the invocation")
    };
    assert_eq!(report.sources[0].outcome, SourceOutcome::Failed);
    assert!(
        summary.contains("1 source(s) not handled") && summary.contains(LT),
        "{summary}"
    );
    assert!(summary.contains("RequestLimitExceeded"), "{summary}");
    assert_eq!(
        s.num_calls(),
        0,
        "no default moved to a version that does not exist"
    );
}

/// Notify mode tags a noncompliant group with the status key alone, and
/// never onto the instances it launches (`PropagateAtLaunch=false`).
#[tokio::test]
async fn a_group_is_tagged_without_propagating_to_its_instances() {
    use aws_sdk_autoscaling::operation::create_or_update_tags::CreateOrUpdateTagsOutput;
    let group = mock!(AsgClient::describe_auto_scaling_groups).then_output(|| {
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(
                AutoScalingGroup::builder()
                    .auto_scaling_group_name("web-asg")
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .launch_template_id(LT)
                            .version("$Default")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let tag = mock!(AsgClient::create_or_update_tags)
        .match_requests(|r| {
            let t = &r.tags()[0];
            r.tags().len() == 1
                && t.resource_id() == Some("web-asg")
                && t.resource_type() == Some("auto-scaling-group")
                && t.key() == Some("imds-guard:status")
                && t.value() == Some("noncompliant")
                && t.propagate_at_launch() == Some(false)
        })
        .then_output(|| CreateOrUpdateTagsOutput::builder().build());
    let t = template(LT, 1, 1, false);
    let v = versions(vec![version(LT, 1, Some("optional"), Some(2))]);
    let ec2_tag = mock!(Ec2Client::create_tags)
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    let g = guard(
        &[("GUARD_MODE", "notify")],
        &[&t, &v, &ec2_tag],
        &[&group, &tag],
    );
    let r = g
        .handle(&fixture("create-auto-scaling-group.json"))
        .await
        .unwrap();
    assert_eq!(tag.num_calls(), 1);
    assert_eq!(ec2_tag.num_calls(), 1, "its template is tagged too");
    assert!(
        r.sources
            .iter()
            .all(|s| s.outcome == SourceOutcome::Flagged),
        "{:?}",
        r.sources
    );
}

/// The account default EC2 answers: `HttpTokens=required`.
fn defaults_required() -> Rule {
    use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
    mock!(Ec2Client::get_instance_metadata_defaults)
        .sequence()
        .output(|| {
            GetInstanceMetadataDefaultsOutput::builder()
                .account_level(
                    aws_sdk_ec2::types::InstanceMetadataDefaultsResponse::builder()
                        .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build()
}

/// Templates as services make them, every one opted in (a service copies
/// the user's tags): a Batch copy (`Batch-lt-<uuid>`, pinned by Batch), an
/// EKS node group's (`eks-<uuid>`, created by its service-linked role), an
/// EMR cluster's (an `aws:` tag), Beanstalk's, Karpenter's, and an ECS
/// managed instance's (`Operator`). With `FIX_SOURCES` in enforce mode,
/// none is written: each is reported with its launcher and its setting.
#[tokio::test]
async fn service_templates_are_reported_with_their_setting_and_never_written() {
    fn shaped(
        id: &str,
        name: &str,
        created_by: Option<&str>,
        tag: Option<(&str, &str)>,
        operator: Option<&str>,
    ) -> Ec2Template {
        let mut t = Ec2Template::builder()
            .launch_template_id(id)
            .launch_template_name(name)
            .default_version_number(1)
            .latest_version_number(1)
            .tags(
                Tag::builder()
                    .key("imds-guard:fix-source")
                    .value("true")
                    .build(),
            )
            .set_created_by(created_by.map(str::to_string));
        if let Some((k, v)) = tag {
            t = t.tags(Tag::builder().key(k).value(v).build());
        }
        if let Some(p) = operator {
            t = t.operator(
                aws_sdk_ec2::types::OperatorResponse::builder()
                    .managed(true)
                    .principal(p)
                    .build(),
            );
        }
        t.build()
    }
    const IDS: [&str; 6] = [
        "lt-0000000000000b001",
        "lt-0000000000000e001",
        "lt-0000000000000e002",
        "lt-0000000000000b002",
        "lt-0000000000000k001",
        "lt-0000000000000c001",
    ];
    // Answered only when managed resources are asked for, as in an
    // account whose managed-resource visibility is `hidden`.
    let listed = mock!(Ec2Client::describe_launch_templates)
        .match_requests(|r| r.include_managed_resources() == Some(true))
        .then_output(|| {
            DescribeLaunchTemplatesOutput::builder()
                .launch_templates(shaped(IDS[0], "Batch-lt-0d8a7e2c-1b3f-4c5d-9e6f-0a1b2c3d4e5f", Some("arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForBatch/aws-batch"), None, None))
                .launch_templates(shaped(IDS[1], "eks-5ec4a6b0-7d6c-4f3e-9a1b-2c3d4e5f6a7b", Some("arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAmazonEKSNodegroup/EKS"), Some(("eks:nodegroup-name", "ng-1")), None))
                .launch_templates(shaped(IDS[2], "emr-core", None, Some(("aws:elasticmapreduce:job-flow-id", "j-2AXXXXXXGAPLF")), None))
                .launch_templates(shaped(IDS[3], "AWSEBEC2LaunchTemplate_1a2b3c4d5e6f", None, Some(("elasticbeanstalk:environment-name", "prod")), None))
                .launch_templates(shaped(IDS[4], "karpenter.k8s.aws/12345678901234567890", None, Some(("karpenter.k8s.aws/ec2nodeclass", "default")), None))
                .launch_templates(shaped(IDS[5], "ecs-managed", None, None, Some("ecs.amazonaws.com")))
                .build()
        });
    let v = mock!(Ec2Client::describe_launch_template_versions)
        .match_requests(|r| r.include_managed_resources() == Some(true))
        .then_compute_output(|r| {
            let id = r.launch_template_id().unwrap_or_default().to_string();
            DescribeLaunchTemplateVersionsOutput::builder()
                .launch_template_versions(version(&id, 1, Some("optional"), Some(1)))
                .build()
        });
    let create = mock!(Ec2Client::create_launch_template_version).then_output(|| {
        CreateLaunchTemplateVersionOutput::builder()
            .launch_template_version(LaunchTemplateVersion::builder().version_number(2).build())
            .build()
    });
    let set = mock!(Ec2Client::modify_launch_template)
        .then_output(|| ModifyLaunchTemplateOutput::builder().build());
    let none = mock!(Ec2Client::describe_instances).then_output(|| {
        aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder().build()
    });
    let d = defaults_required();
    let g = guard(
        &[("FIX_SOURCES", "true"), ("GUARD_MODE", "enforce")],
        &[&listed, &v, &create, &set, &none, &d],
        &[],
    );
    let r = g.handle(&crate::common::scheduled()).await.unwrap();
    assert_eq!(listed.num_calls(), 1, "asked with IncludeManagedResources");
    assert_eq!(
        (create.num_calls(), set.num_calls()),
        (0, 0),
        "no CreateLaunchTemplateVersion, no ModifyLaunchTemplate"
    );
    let expect = [
        (IDS[0], "AWS Batch", "compute environment"),
        (IDS[1], "EKS managed node group", "UpdateNodegroupVersion"),
        (IDS[2], "Amazon EMR", "security configuration"),
        (IDS[3], "Elastic Beanstalk", "DisableIMDSv1"),
        (IDS[4], "Karpenter", "EC2NodeClass"),
        (
            IDS[5],
            "ECS Managed Instances",
            "managed by ecs.amazonaws.com",
        ),
    ];
    for (id, owner, setting) in expect {
        let s = r
            .sweep
            .as_ref()
            .unwrap()
            .sources
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id} reported: {:?}", r.sources));
        assert_eq!(s.kind, SourceKind::LaunchTemplate);
        assert_eq!(s.outcome, SourceOutcome::Flagged, "{s:?}");
        assert!(
            s.owner.as_deref().unwrap_or_default().starts_with(owner),
            "{id}: {s:?}"
        );
        assert!(s.action.contains(setting), "{id}: {}", s.action);
    }
}

/// The sweep asks for managed instances (`IncludeManagedResources`), reads
/// EC2's `Operator`, and never writes to one.
#[tokio::test]
async fn a_managed_instance_is_asked_for_and_never_written() {
    use crate::faults::{described, running};
    let id = "i-0abcdef0123456789";
    let listing = mock!(Ec2Client::describe_instances)
        .match_requests(|r| r.include_managed_resources() == Some(true))
        .then_compute_output(move |_| {
            let mut i = running(id, "optional", 1);
            i.operator = Some(
                aws_sdk_ec2::types::OperatorResponse::builder()
                    .managed(true)
                    .principal("ecs.amazonaws.com")
                    .build(),
            );
            described(vec![i])
        });
    let modify = mock!(Ec2Client::modify_instance_metadata_options).then_output(|| {
        aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsOutput::builder().build()
    });
    let tag = mock!(Ec2Client::create_tags)
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    let d = defaults_required();
    let g = guard(
        &[("GUARD_MODE", "enforce")],
        &[&listing, &modify, &tag, &d],
        &[],
    );
    let r = g.handle(&crate::common::scheduled()).await.unwrap();
    assert!(listing.num_calls() >= 1);
    assert_eq!((modify.num_calls(), tag.num_calls()), (0, 0));
    let region = &r.sweep.as_ref().unwrap().regions[0];
    assert_eq!(region.managed, 1);
    let i = &r.instances[0];
    assert_eq!(i.launcher.as_deref(), Some("ECS Managed Instances"));
    assert!(
        i.exemption.as_ref().is_some_and(|e| e.is_managed()),
        "{i:?}"
    );
}

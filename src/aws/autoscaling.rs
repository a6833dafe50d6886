//! Auto Scaling through the SDK: groups and launch configurations, read to
//! decide what they launch, and the status tag on a group.

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};

use crate::event::MetadataOptions;
use crate::source::{Group, LaunchConfiguration, TemplateRef, VersionRef};

use super::api::AutoScalingApi;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct AutoScaling(pub aws_sdk_autoscaling::Client);

fn template_ref(s: &LaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: s.launch_template_id().map(str::to_string),
        name: s.launch_template_name().map(str::to_string),
        version: VersionRef::parse(s.version()),
    }
}

impl AutoScalingApi for AutoScaling {
    async fn groups(
        &self,
        names: &[String],
        token: Option<String>,
    ) -> Result<(Vec<Group>, Option<String>), AwsError> {
        let mut req = self
            .0
            .describe_auto_scaling_groups()
            .set_next_token(token)
            .max_records(100);
        if !names.is_empty() {
            req = req.set_auto_scaling_group_names(Some(names.to_vec()));
        }
        let out = req.send().await.map_err(|e| {
            AwsError::classify(e, "autoscaling", "autoscaling:DescribeAutoScalingGroups")
        })?;
        let groups = out
            .auto_scaling_groups()
            .iter()
            .filter_map(|g| {
                let mut templates = Vec::new();
                if let Some(lt) = g.launch_template() {
                    templates.push(template_ref(lt));
                }
                if let Some(lt) = g.mixed_instances_policy().and_then(|m| m.launch_template()) {
                    if let Some(spec) = lt.launch_template_specification() {
                        templates.push(template_ref(spec));
                    }
                    for o in lt.overrides() {
                        if let Some(spec) = o.launch_template_specification() {
                            templates.push(template_ref(spec));
                        }
                    }
                }
                templates.sort();
                templates.dedup();
                Some(Group {
                    name: g.auto_scaling_group_name()?.to_string(),
                    templates,
                    launch_configuration: g.launch_configuration_name().map(str::to_string),
                    tags: g
                        .tags()
                        .iter()
                        .filter_map(|t| {
                            Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                        })
                        .collect(),
                })
            })
            .collect();
        Ok((groups, out.next_token().map(str::to_string)))
    }

    async fn launch_configurations(
        &self,
        names: &[String],
        token: Option<String>,
    ) -> Result<(Vec<LaunchConfiguration>, Option<String>), AwsError> {
        let mut req = self
            .0
            .describe_launch_configurations()
            .set_next_token(token)
            .max_records(100);
        if !names.is_empty() {
            req = req.set_launch_configuration_names(Some(names.to_vec()));
        }
        let out = req.send().await.map_err(|e| {
            AwsError::classify(e, "autoscaling", "autoscaling:DescribeLaunchConfigurations")
        })?;
        let configurations = out
            .launch_configurations()
            .iter()
            .filter_map(|c| {
                Some(LaunchConfiguration {
                    name: c.launch_configuration_name()?.to_string(),
                    options: c.metadata_options().map(|m| MetadataOptions {
                        http_tokens: m.http_tokens().map(|x| x.as_str().to_string()),
                        http_endpoint: m.http_endpoint().map(|x| x.as_str().to_string()),
                        http_put_response_hop_limit: m.http_put_response_hop_limit(),
                        ..MetadataOptions::default()
                    }),
                    image_id: c.image_id().map(str::to_string),
                })
            })
            .collect();
        Ok((configurations, out.next_token().map(str::to_string)))
    }

    /// `PropagateAtLaunch=false`: the tag describes the group, and the
    /// instances it launches get their own status from the guard.
    async fn tag_group(&self, name: &str, key: &str, value: &str) -> Result<(), AwsError> {
        self.0
            .create_or_update_tags()
            .tags(
                Tag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    .propagate_at_launch(false)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "autoscaling", "autoscaling:CreateOrUpdateTags"))
    }
}

//! EC2 through the SDK: describe, modify, tag, list, and the account's IMDS
//! defaults.

use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataProtocolState,
    InstanceMetadataTagsState, Tag,
};

use crate::event::{Lookup, MetadataOptions, Observed, Standing};
use crate::launcher::Operator;
use crate::policy::{AccountDefaults, Remedy};
use crate::probe;
use crate::source::{NewVersion, Template, TemplateVersion};

use super::api::{Ec2Api, Page};
use super::error::AwsError;
use super::sdk::{page_timeouts, sdk_retry};

/// Instance ids per `DescribeInstances` / `CreateTags` call.
const IDS_PER_CALL: usize = 200;
/// Instances per page when sweeping: `DescribeInstances` allows up to 1,000.
pub const SWEEP_PAGE_SIZE: i32 = 1000;
/// The states a sweep looks at: everything that can still serve IMDS.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

#[derive(Clone, Debug)]
pub struct Ec2(pub aws_sdk_ec2::Client);

impl Ec2Api for Ec2 {
    /// The instances among `ids` that EC2 shows now. Uses an `instance-id`
    /// filter rather than `InstanceIds`, so one id EC2 does not show yet
    /// cannot fail the call for the others: it is simply absent.
    async fn describe(&self, ids: &[String]) -> Result<Vec<Observed>, AwsError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .0
                    .describe_instances()
                    .include_managed_resources(true)
                    .filters(
                        Filter::builder()
                            .name("instance-id")
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
                for r in out.reservations() {
                    found.extend(r.instances().iter().filter_map(observe));
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// The instances of one launch, by its reservation id (exact) or else
    /// its client token (every instance of that request).
    async fn describe_launch(&self, lookup: &Lookup) -> Result<Vec<Observed>, AwsError> {
        let (name, value) = match (&lookup.reservation_id, &lookup.client_token) {
            (Some(r), _) => ("reservation-id", r.clone()),
            (None, Some(t)) => ("client-token", t.clone()),
            (None, None) => return Ok(Vec::new()),
        };
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .0
                .describe_instances()
                .include_managed_resources(true)
                .filters(Filter::builder().name(name).values(value.clone()).build())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
            for r in out.reservations() {
                found.extend(r.instances().iter().filter_map(observe));
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    /// Sends what the remedy names: tokens required, the hop limit only when
    /// lowered or raised on a container host, never the endpoint (omitted, EC2 keeps both as they are),
    /// the IPv6 and tags settings as they were.
    async fn modify(&self, instance_id: &str, remedy: &Remedy) -> Result<(), AwsError> {
        self.0
            .modify_instance_metadata_options()
            .instance_id(instance_id)
            .http_tokens(HttpTokensState::from(remedy.http_tokens))
            .set_http_put_response_hop_limit(remedy.http_put_response_hop_limit)
            .set_http_protocol_ipv6(
                remedy
                    .http_protocol_ipv6
                    .as_deref()
                    .map(InstanceMetadataProtocolState::from),
            )
            .set_instance_metadata_tags(
                remedy
                    .instance_metadata_tags
                    .as_deref()
                    .map(InstanceMetadataTagsState::from),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataOptions"))
    }

    /// One `CreateTags` call for many instances (idempotent: same key, same value).
    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        for chunk in ids.chunks(IDS_PER_CALL) {
            self.0
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .tags(Tag::builder().key(key).value(value).build())
                .send()
                .await
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:CreateTags"))?;
        }
        Ok(())
    }

    /// One page of the instances a sweep looks at (pending, running,
    /// stopping, stopped). With `only_optional`, EC2 itself leaves out
    /// instances already at `HttpTokens=required`; a refusal of that filter
    /// is the caller's cue to list everything and decide here.
    async fn list_page(
        &self,
        only_optional: bool,
        token: Option<String>,
    ) -> Result<Page, AwsError> {
        let mut req = self
            .0
            .describe_instances()
            .include_managed_resources(true)
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
            .max_results(SWEEP_PAGE_SIZE)
            .set_next_token(token.clone());
        let probe = only_optional && token.is_none();
        if only_optional {
            req = req.filters(
                Filter::builder()
                    .name("metadata-options.http-tokens")
                    .values("optional")
                    .build(),
            );
        }
        // A page of up to 1,000 instances is megabytes of XML: give it time
        // rather than abandon it at the small calls' 10 s and pay for it
        // again. The first filtered page doubles as the probe for the
        // filter, and a refusal should not cost the full retry schedule.
        let retry = if probe {
            sdk_retry().with_max_attempts(2)
        } else {
            sdk_retry()
        };
        let out = req
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(retry)
                    .timeout_config(page_timeouts()),
            )
            .send()
            .await;
        let out = out.map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
        let instances = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().filter_map(observe))
            .collect();
        Ok(Page {
            instances,
            next_token: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            owner: out
                .reservations()
                .iter()
                .find_map(|r| r.owner_id())
                .map(str::to_string),
        })
    }

    async fn list_tagged(
        &self,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page, AwsError> {
        let out = self
            .0
            .describe_instances()
            .include_managed_resources(true)
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .max_results(SWEEP_PAGE_SIZE)
            .set_next_token(token)
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default().timeout_config(page_timeouts()),
            )
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
        Ok(Page {
            instances: out
                .reservations()
                .iter()
                .flat_map(|r| r.instances().iter().filter_map(observe))
                .collect(),
            next_token: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            owner: out
                .reservations()
                .iter()
                .find_map(|r| r.owner_id())
                .map(str::to_string),
        })
    }

    /// The account's IMDS defaults for new launches in this region.
    async fn metadata_defaults(&self) -> Result<AccountDefaults, AwsError> {
        let out = self
            .0
            .get_instance_metadata_defaults()
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:GetInstanceMetadataDefaults"))?;
        let level = out.account_level();
        Ok(AccountDefaults {
            http_tokens: level
                .and_then(|l| l.http_tokens())
                .map(|v| v.as_str().to_string()),
            http_tokens_enforced: level
                .and_then(|l| l.http_tokens_enforced())
                .map(|v| v.as_str().to_string()),
            http_put_response_hop_limit: level.and_then(|l| l.http_put_response_hop_limit()),
            managed_by: level
                .and_then(|l| l.managed_by())
                .map(|v| v.as_str().to_string()),
        })
    }

    async fn launch_templates(
        &self,
        ids: &[String],
        names: &[String],
        token: Option<String>,
    ) -> Result<(Vec<Template>, Option<String>), AwsError> {
        let mut req = self
            .0
            .describe_launch_templates()
            .include_managed_resources(true)
            .set_next_token(token);
        if !ids.is_empty() {
            req = req.set_launch_template_ids(Some(ids.to_vec()));
        }
        if !names.is_empty() {
            req = req.set_launch_template_names(Some(names.to_vec()));
        }
        if ids.is_empty() && names.is_empty() {
            req = req.max_results(200);
        }
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeLaunchTemplates"))?;
        let templates = out
            .launch_templates()
            .iter()
            .filter_map(|t| {
                Some(Template {
                    id: t.launch_template_id()?.to_string(),
                    name: t.launch_template_name().map(str::to_string),
                    default_version: t.default_version_number()?,
                    latest_version: t.latest_version_number()?,
                    tags: t
                        .tags()
                        .iter()
                        .filter_map(|t| {
                            Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                        })
                        .collect(),
                    created_by: t.created_by().map(str::to_string),
                    operator: t.operator().map(operator),
                })
            })
            .collect();
        Ok((templates, out.next_token().map(str::to_string)))
    }

    async fn template_versions(
        &self,
        template_id: &str,
        versions: &[String],
    ) -> Result<Vec<TemplateVersion>, AwsError> {
        let out = self
            .0
            .describe_launch_template_versions()
            .include_managed_resources(true)
            .launch_template_id(template_id)
            .set_versions(Some(versions.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeLaunchTemplateVersions"))?;
        Ok(out
            .launch_template_versions()
            .iter()
            .filter_map(|v| {
                let data = v.launch_template_data();
                let mo = data.and_then(|d| d.metadata_options());
                Some(TemplateVersion {
                    template_id: v.launch_template_id()?.to_string(),
                    version: v.version_number()?,
                    description: v.version_description().map(str::to_string),
                    options: mo.map(|m| MetadataOptions {
                        http_tokens: m.http_tokens().map(|x| x.as_str().to_string()),
                        http_endpoint: m.http_endpoint().map(|x| x.as_str().to_string()),
                        http_put_response_hop_limit: m.http_put_response_hop_limit(),
                        http_protocol_ipv6: m.http_protocol_ipv6().map(|x| x.as_str().to_string()),
                        instance_metadata_tags: m
                            .instance_metadata_tags()
                            .map(|x| x.as_str().to_string()),
                    }),
                    image_id: data.and_then(|d| d.image_id()).map(str::to_string),
                })
            })
            .collect())
    }

    async fn create_template_version(&self, v: &NewVersion) -> Result<i64, AwsError> {
        use aws_sdk_ec2::types::{
            LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
            LaunchTemplateInstanceMetadataOptionsRequest,
            LaunchTemplateInstanceMetadataProtocolIpv6, LaunchTemplateInstanceMetadataTagsState,
            RequestLaunchTemplateData,
        };
        let o = &v.options;
        // The whole block: EC2 replaces a source version's MetadataOptions
        // with what a new version sets, it does not merge inside it.
        let options = LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .set_http_tokens(
                o.http_tokens
                    .as_deref()
                    .map(LaunchTemplateHttpTokensState::from),
            )
            .set_http_endpoint(
                o.http_endpoint
                    .as_deref()
                    .map(LaunchTemplateInstanceMetadataEndpointState::from),
            )
            .set_http_put_response_hop_limit(o.http_put_response_hop_limit)
            .set_http_protocol_ipv6(
                o.http_protocol_ipv6
                    .as_deref()
                    .map(LaunchTemplateInstanceMetadataProtocolIpv6::from),
            )
            .set_instance_metadata_tags(
                o.instance_metadata_tags
                    .as_deref()
                    .map(LaunchTemplateInstanceMetadataTagsState::from),
            )
            .build();
        let out = self
            .0
            .create_launch_template_version()
            .launch_template_id(&v.template_id)
            .source_version(v.from.to_string())
            .version_description(crate::source::fix_description(v.from))
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .metadata_options(options)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:CreateLaunchTemplateVersion"))?;
        out.launch_template_version()
            .and_then(|n| n.version_number())
            .ok_or_else(|| AwsError::Api {
                code: "NoVersionNumber".into(),
                message: "CreateLaunchTemplateVersion named no version".into(),
            })
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), AwsError> {
        self.0
            .modify_launch_template()
            .launch_template_id(template_id)
            .default_version(version.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyLaunchTemplate"))
    }

    /// By an `image-id` filter, so an AMI that is gone (or not shared any
    /// more) is simply absent rather than failing the call for the rest.
    async fn images(&self, ids: &[String]) -> Result<Vec<(String, bool)>, AwsError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            let out = self
                .0
                .describe_images()
                .filters(
                    Filter::builder()
                        .name("image-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeImages"))?;
            found.extend(out.images().iter().filter_map(|i| {
                Some((
                    i.image_id()?.to_string(),
                    i.imds_support().is_some_and(|s| s.as_str() == "v2.0"),
                ))
            }));
        }
        Ok(found)
    }

    /// Sets the account default to `HttpTokens=required` and nothing else:
    /// every other default is left as it is, and `HttpTokensEnforced`, which
    /// refuses launches, is never touched.
    async fn require_tokens_by_default(&self) -> Result<(), AwsError> {
        self.0
            .modify_instance_metadata_defaults()
            .http_tokens(aws_sdk_ec2::types::MetadataDefaultHttpTokensState::Required)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataDefaults"))
    }

    async fn set_native_defaults(
        &self,
        http_tokens: &str,
        http_tokens_enforced: &str,
    ) -> Result<(), AwsError> {
        use aws_sdk_ec2::types::{DefaultHttpTokensEnforcedState, MetadataDefaultHttpTokensState};
        self.0
            .modify_instance_metadata_defaults()
            .http_tokens(MetadataDefaultHttpTokensState::from(http_tokens))
            .http_tokens_enforced(DefaultHttpTokensEnforcedState::from(http_tokens_enforced))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataDefaults"))
    }

    /// Up to `n` running or stopped instances: the self-check's pick.
    async fn sample(&self, n: i32) -> Result<Vec<Observed>, AwsError> {
        let out = self
            .0
            .describe_instances()
            .include_managed_resources(true)
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .values("stopped")
                    .build(),
            )
            .max_results(n.clamp(5, 1000))
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().filter_map(observe))
            .collect())
    }

    /// Sends `r` with `DryRun=true`, always, and says what EC2 answered.
    async fn dry_run(&self, r: &probe::Request) -> probe::Answer {
        use aws_sdk_ec2::types::{DefaultHttpTokensEnforcedState, MetadataDefaultHttpTokensState};
        let sent = match r {
            probe::Request::Modify {
                instance,
                tokens,
                hop,
                endpoint,
            } => self
                .0
                .modify_instance_metadata_options()
                .instance_id(instance)
                .http_tokens(HttpTokensState::from(tokens.as_str()))
                .set_http_put_response_hop_limit(*hop)
                .set_http_endpoint(endpoint.as_deref().map(InstanceMetadataEndpointState::from))
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataOptions")),
            probe::Request::Tag {
                instance,
                key,
                value,
            } => self
                .0
                .create_tags()
                .resources(instance)
                .tags(Tag::builder().key(key).value(value).build())
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:CreateTags")),
            probe::Request::Defaults { tokens, enforced } => self
                .0
                .modify_instance_metadata_defaults()
                .http_tokens(MetadataDefaultHttpTokensState::from(tokens.as_str()))
                .set_http_tokens_enforced(
                    enforced
                        .as_deref()
                        .map(DefaultHttpTokensEnforcedState::from),
                )
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataDefaults")),
        };
        answer(sent)
    }
}

/// What a dry run's result means (`probe::judge` says what that means for
/// its check).
fn answer(sent: Result<(), AwsError>) -> probe::Answer {
    let e = match sent {
        Ok(()) => return probe::Answer::Applied,
        Err(e) => e,
    };
    if e.is_throttle() {
        return probe::Answer::Throttled;
    }
    match e.code() {
        Some("DryRunOperation") => probe::Answer::DryRun,
        Some("UnauthorizedOperation") => probe::Answer::Unauthorized,
        Some(c @ ("InvalidInstanceID.NotFound" | "IncorrectInstanceState")) => {
            probe::Answer::Gone(c.to_string())
        }
        Some(c) => probe::Answer::Other(c.to_string()),
        None => probe::Answer::Other(e.to_string()),
    }
}

fn observe(i: &aws_sdk_ec2::types::Instance) -> Option<Observed> {
    let id = i.instance_id()?.to_string();
    let mo = i.metadata_options();
    Some(Observed {
        instance_id: id,
        image_id: i.image_id().map(str::to_string),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string()),
        options: MetadataOptions {
            http_tokens: mo
                .and_then(|m| m.http_tokens())
                .map(|v| v.as_str().to_string()),
            http_endpoint: mo
                .and_then(|m| m.http_endpoint())
                .map(|v| v.as_str().to_string()),
            http_put_response_hop_limit: mo.and_then(|m| m.http_put_response_hop_limit()),
            http_protocol_ipv6: mo
                .and_then(|m| m.http_protocol_ipv6())
                .map(|v| v.as_str().to_string()),
            instance_metadata_tags: mo
                .and_then(|m| m.instance_metadata_tags())
                .map(|v| v.as_str().to_string()),
        },
        tags: Some(
            i.tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
        ),
        launch_time: i.launch_time().and_then(|t| u64::try_from(t.secs()).ok()),
        instance_profile: i
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .map(str::to_string),
        operator: i.operator().map(operator),
        addresses: addresses(i),
        standing: Standing::default(),
    })
}

/// Every private and public address of an instance's interfaces.
fn addresses(i: &aws_sdk_ec2::types::Instance) -> crate::event::Addresses {
    fn add(list: &mut Vec<String>, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            if !list.iter().any(|x| x == v) {
                list.push(v.to_string());
            }
        }
    }
    let mut a = crate::event::Addresses::default();
    add(&mut a.private, i.private_ip_address());
    add(&mut a.public, i.public_ip_address());
    for n in i.network_interfaces() {
        for p in n.private_ip_addresses() {
            add(&mut a.private, p.private_ip_address());
            add(&mut a.public, p.association().and_then(|x| x.public_ip()));
        }
        for v6 in n.ipv6_addresses() {
            add(&mut a.private, v6.ipv6_address());
        }
        for p in n.ipv4_prefixes() {
            add(&mut a.prefixes, p.ipv4_prefix());
        }
        for p in n.ipv6_prefixes() {
            add(&mut a.prefixes, p.ipv6_prefix());
        }
    }
    a
}

/// EC2's `Operator` of an instance or template: managed, and by whom.
fn operator(o: &aws_sdk_ec2::types::OperatorResponse) -> Operator {
    Operator {
        managed: o.managed().unwrap_or(false),
        principal: o.principal().map(str::to_string),
    }
}

//! EC2 through the SDK: describe, modify, tag, list, and the account's IMDS
//! defaults.

use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataProtocolState,
    InstanceMetadataTagsState, Tag,
};

use crate::event::{Lookup, MetadataOptions, Observed};
use crate::policy::{AccountDefaults, Remedy};

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

    /// Writes every metadata option explicitly (tokens required, endpoint on,
    /// hop limit as decided, the rest as they were).
    async fn modify(&self, instance_id: &str, remedy: &Remedy) -> Result<(), AwsError> {
        self.0
            .modify_instance_metadata_options()
            .instance_id(instance_id)
            .http_tokens(HttpTokensState::from(remedy.http_tokens))
            .http_endpoint(InstanceMetadataEndpointState::from(remedy.http_endpoint))
            .http_put_response_hop_limit(remedy.http_put_response_hop_limit)
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
        recorded_exemption: None,
    })
}

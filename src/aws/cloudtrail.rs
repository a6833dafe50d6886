//! CloudTrail through the SDK: its own record of one event, by id, and the
//! events one user (an instance role's session) made (`LookupEvents`:
//! management events of the last 90 days, in the region called, at two
//! calls a second per account and region).

use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};

use crate::confirm::TrailRecord;

use super::api::TrailApi;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct Trail(pub aws_sdk_cloudtrail::Client);

impl TrailApi for Trail {
    async fn event(&self, event_id: &str) -> Result<Option<TrailRecord>, AwsError> {
        let attribute = lookup(LookupAttributeKey::EventId, event_id)?;
        let out = self
            .0
            .lookup_events()
            .lookup_attributes(attribute)
            .max_results(1)
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "cloudtrail", "cloudtrail:LookupEvents"))?;
        Ok(out.events().first().map(|e| TrailRecord {
            record: e.cloud_trail_event().unwrap_or_default().to_string(),
            instances: e
                .resources()
                .iter()
                .filter(|r| r.resource_type() == Some("AWS::EC2::Instance"))
                .filter_map(|r| r.resource_name().map(str::to_string))
                .collect(),
        }))
    }

    async fn user_events(
        &self,
        name: &str,
        start: u64,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), AwsError> {
        let attribute = lookup(LookupAttributeKey::Username, name)?;
        let start = i64::try_from(start).unwrap_or(0);
        let out = self
            .0
            .lookup_events()
            .lookup_attributes(attribute)
            .start_time(aws_sdk_cloudtrail::primitives::DateTime::from_secs(start))
            .max_results(50)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "cloudtrail", "cloudtrail:LookupEvents"))?;
        let records = out
            .events()
            .iter()
            .filter_map(|e| e.cloud_trail_event().map(str::to_string))
            .collect();
        Ok((records, out.next_token().map(str::to_string)))
    }
}

/// The one attribute a `LookupEvents` call looks up by.
fn lookup(key: LookupAttributeKey, value: &str) -> Result<LookupAttribute, AwsError> {
    LookupAttribute::builder()
        .attribute_key(key)
        .attribute_value(value)
        .build()
        .map_err(|e| AwsError::Api {
            code: "InvalidLookup".into(),
            message: e.to_string(),
        })
}

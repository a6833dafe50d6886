//! EventBridge through the SDK: the guard's news on a bus of the user's
//! choosing (`EVENT_BUS_NAME`), for their own rules to route.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::routing::{BusEvent, SOURCE};

use super::api::EventsApi;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct Bus {
    pub client: aws_sdk_eventbridge::Client,
    /// The bus's name or ARN.
    pub name: String,
}

impl EventsApi for Bus {
    async fn put(&self, events: &[BusEvent]) -> Result<Vec<String>, AwsError> {
        let entries = events
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(SOURCE)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .build()
            })
            .collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "events", "events:PutEvents"))?;
        // Entries answer in the request's order: a refused one has an error
        // code instead of an event id.
        Ok(out
            .entries()
            .iter()
            .zip(events)
            .filter_map(|(r, e)| {
                r.error_code().map(|code| {
                    format!(
                        "{} ({code}: {})",
                        e.detail_type,
                        r.error_message().unwrap_or("")
                    )
                })
            })
            .collect())
    }

    fn bus(&self) -> &str {
        &self.name
    }
}

//! SQS through the SDK: one `Queue` (the `QueueApi` port) for the three queues of
//! the function's own account, each message with a `kind` attribute: the
//! failed-events queue, where a message SNS refused is kept for a person (its
//! depth alarms); the outputs queue, where findings and events are handed to
//! the outputs function (`handoff`); and that function's dead-letter queue,
//! where it keeps what it refuses, with the reason; and the first-boot
//! queue, where a delayed message brings back an instance whose first boot
//! was waited for.

use aws_sdk_sqs::types::MessageAttributeValue;

use super::api::QueueApi;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct Queue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl QueueApi for Queue {
    async fn keep(&self, body: &str, kind: &str) -> Result<(), AwsError> {
        self.send(body, kind, None).await
    }

    async fn delay(&self, body: &str, kind: &str, seconds: u64) -> Result<(), AwsError> {
        let seconds = seconds.min(crate::first_boot::MAX_DELAY_SECS) as i32;
        self.send(body, kind, Some(seconds)).await
    }
}

impl Queue {
    async fn send(&self, body: &str, kind: &str, delay: Option<i32>) -> Result<(), AwsError> {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(kind)
            .build()
            .map_err(|e| AwsError::Api {
                code: "InvalidMessageAttribute".into(),
                message: e.to_string(),
            })?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_attributes("kind", attr)
            .set_delay_seconds(delay)
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sqs", "sqs:SendMessage"))?;
        Ok(())
    }
}

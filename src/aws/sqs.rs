//! SQS through the SDK: a message SNS refused, kept in the failed-events
//! queue for a person (the queue's depth alarms).

use aws_sdk_sqs::types::MessageAttributeValue;

use super::api::Keeper;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct Queue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl Keeper for Queue {
    async fn keep(&self, body: &str, kind: &str) -> Result<(), AwsError> {
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
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sqs", "sqs:SendMessage"))?;
        Ok(())
    }
}

//! SNS through the SDK: one message, with attributes for filter policies.

use aws_sdk_sns::types::MessageAttributeValue;

use crate::notify::Notification;

use super::api::Publisher;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct Sns(pub aws_sdk_sns::Client);

impl Publisher for Sns {
    /// Publishes; returns the message id.
    async fn publish(
        &self,
        topic_arn: &str,
        n: &Notification,
        chat: bool,
    ) -> Result<String, AwsError> {
        let mut req = self.0.publish().topic_arn(topic_arn).subject(&n.subject);
        req = if chat {
            req.message_structure("json")
                .message(crate::notify::per_protocol(n))
        } else {
            req.message(&n.body)
        };
        let outcomes = serde_json::to_string(&n.outcomes).unwrap_or_else(|_| "[]".into());
        let attrs = std::iter::once(("outcome", "String.Array", outcomes)).chain(
            n.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), "String", v.clone())),
        );
        for (name, data_type, value) in attrs {
            let attr = MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .map_err(|e| AwsError::Api {
                    code: "InvalidMessageAttribute".into(),
                    message: e.to_string(),
                })?;
            req = req.message_attributes(name, attr);
        }
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sns", "sns:Publish"))?;
        Ok(out.message_id().unwrap_or("").to_string())
    }
}

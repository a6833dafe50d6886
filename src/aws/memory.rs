//! The guard's memory through the SDK: one DynamoDB table (`MEMORY_TABLE`),
//! written with conditions where two writers can race, and read one partition
//! at a time, by sort-key prefix, with consistent reads. The partitions
//! (`crate::memory`): `<account>#<region>` for most kinds,
//! `breakglass#<account>#<region>` for grants, `org` for accounts' units,
//! `run#<execution>` for a fan-out run's shards, and `exemption-check` for the
//! exemptions waiting for CloudTrail.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use crate::memory::{Claim, Record};

use super::api::MemoryApi;
use super::error::AwsError;

/// `BatchWriteItem` takes at most 25 items.
const ITEMS_PER_BATCH: usize = 25;

#[derive(Clone, Debug)]
pub struct Memory {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

fn item(r: &Record) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("pk".to_string(), AttributeValue::S(r.pk.clone())),
        ("sk".to_string(), AttributeValue::S(r.sk.clone())),
        ("at".to_string(), AttributeValue::N(r.at.to_string())),
        (
            "expires_at".to_string(),
            AttributeValue::N(r.expires_at.to_string()),
        ),
    ]);
    if let Some(e) = &r.event_id {
        item.insert("event_id".into(), AttributeValue::S(e.clone()));
    }
    // What a kind keeps beside: top-level attributes (a condition can test
    // them), never one of the fixed names above.
    for (k, v) in &r.data {
        if !FIXED.contains(&k.as_str()) {
            item.insert(k.clone(), AttributeValue::S(v.clone()));
        }
    }
    item
}

const FIXED: [&str; 5] = ["pk", "sk", "event_id", "at", "expires_at"];

/// A record read back; `None` for an item that is not one of ours.
fn record(item: &HashMap<String, AttributeValue>) -> Option<Record> {
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let data: BTreeMap<String, String> = item
        .iter()
        .filter(|(k, _)| !FIXED.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
        .collect();
    Some(Record {
        pk: s("pk")?,
        sk: s("sk")?,
        event_id: s("event_id"),
        at: n("at").unwrap_or(0),
        expires_at: n("expires_at").unwrap_or(u64::MAX),
        data,
    })
}

impl MemoryApi for Memory {
    async fn policy(&self, table_arn: &str) -> Result<Option<String>, AwsError> {
        match self
            .client
            .get_resource_policy()
            .resource_arn(table_arn)
            .send()
            .await
        {
            Ok(out) => Ok(out.policy().map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_policy_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(AwsError::classify(
                e,
                "dynamodb",
                "dynamodb:GetResourcePolicy",
            )),
        }
    }

    async fn claim(&self, r: &Record, now: u64) -> Result<Claim, AwsError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(r)))
            // Free, lapsed, or claimed by this same event without telling
            // (a retry): `Record::free_for`.
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at <= :now OR (event_id = :event AND attribute_not_exists(told))",
            )
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        req = req.expression_attribute_values(
            ":event",
            AttributeValue::S(r.event_id.clone().unwrap_or_default()),
        );
        match req.send().await {
            Ok(_) => Ok(Claim::Ours),
            Err(e) => {
                let taken = e
                    .as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception());
                if taken {
                    Ok(Claim::Taken)
                } else {
                    Err(AwsError::classify(e, "dynamodb", "dynamodb:PutItem"))
                }
            }
        }
    }

    async fn put(&self, records: &[Record]) -> Result<(), AwsError> {
        for chunk in records.chunks(ITEMS_PER_BATCH) {
            let mut pending: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for r in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(item(r)))
                    .build()
                    .map_err(|e| AwsError::Api {
                        code: "InvalidRecord".into(),
                        message: e.to_string(),
                    })?;
                pending.push(WriteRequest::builder().put_request(put).build());
            }
            // DynamoDB may leave some items unprocessed under load: send
            // them again, a few times, before calling it a failure.
            for _ in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "dynamodb", "dynamodb:BatchWriteItem"))?;
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(AwsError::Api {
                    code: "UnprocessedItems".into(),
                    message: format!("{} record(s) were not written", pending.len()),
                });
            }
        }
        Ok(())
    }

    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        now: u64,
        after: Option<String>,
    ) -> Result<(Vec<Record>, Option<String>), AwsError> {
        let start = after.map(|sk| {
            HashMap::from([
                ("pk".to_string(), AttributeValue::S(pk.to_string())),
                ("sk".to_string(), AttributeValue::S(sk)),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "dynamodb", "dynamodb:Query"))?;
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get("sk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        let records = out
            .items()
            .iter()
            .filter_map(record)
            .filter(|r| r.live(now))
            .collect();
        Ok((records, next))
    }

    async fn query(&self, pk: &str, prefix: &str, now: u64) -> Result<Vec<Record>, AwsError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                // What was written a moment ago counts (a claim, a shard).
                .consistent_read(true)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::classify(e, "dynamodb", "dynamodb:Query"))?;
            found.extend(
                out.items()
                    .iter()
                    .filter_map(record)
                    .filter(|r| r.live(now)),
            );
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(found)
    }
}

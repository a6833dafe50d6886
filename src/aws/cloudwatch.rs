//! CloudWatch through the SDK: the `MetadataNoToken` metric.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::api::MetricsApi;
use super::error::AwsError;

/// `GetMetricData` takes at most 500 queries per call.
const QUERIES_PER_CALL: usize = 500;

/// CloudWatch, for the `MetadataNoToken` metric: IMDSv1 calls an instance
/// still at `optional` answered.
#[derive(Clone, Debug)]
pub struct Metrics(pub aws_sdk_cloudwatch::Client);

impl MetricsApi for Metrics {
    /// IMDSv1 calls each instance answered in the last `lookback`, summed.
    /// Instances with no data points are absent (no call, or no metric yet).
    /// Batches 500 queries per `GetMetricData` call.
    async fn no_token_calls(
        &self,
        ids: &[String],
        lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

        let end = SystemTime::now();
        let start = end.checked_sub(lookback).unwrap_or(SystemTime::UNIX_EPOCH);
        // One data point per instance: the period is the whole lookback,
        // rounded up to the hour (CloudWatch wants multiples of 60 s, and of
        // 3,600 s for data older than 15 days).
        let period =
            i32::try_from(lookback.as_secs().div_ceil(3600).max(1) * 3600).unwrap_or(i32::MAX);
        let mut calls = HashMap::new();
        for chunk in ids.chunks(QUERIES_PER_CALL) {
            let queries: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(n, id)| {
                    MetricDataQuery::builder()
                        .id(format!("q{n}"))
                        .return_data(true)
                        .metric_stat(
                            MetricStat::builder()
                                .metric(
                                    Metric::builder()
                                        .namespace("AWS/EC2")
                                        .metric_name("MetadataNoToken")
                                        .dimensions(
                                            Dimension::builder()
                                                .name("InstanceId")
                                                .value(id)
                                                .build(),
                                        )
                                        .build(),
                                )
                                .period(period)
                                .stat("Sum")
                                .build(),
                        )
                        .build()
                })
                .collect();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .0
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(DateTime::from(start))
                    .end_time(DateTime::from(end))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "monitoring", "cloudwatch:GetMetricData"))?;
                for r in out.metric_data_results() {
                    let Some(n) = r
                        .id()
                        .and_then(|q| q.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let Some(id) = chunk.get(n) else { continue };
                    let sum: f64 = r.values().iter().sum();
                    if !r.values().is_empty() {
                        *calls.entry(id.clone()).or_insert(0.0) += sum;
                    }
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(calls)
    }
}

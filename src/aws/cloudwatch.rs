//! CloudWatch through the SDK: `MetadataNoToken` (IMDSv1 calls an instance
//! at `optional` answered) and `MetadataNoTokenRejected` (IMDSv1 calls it
//! refused once tokens were required: what enforcing broke).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

use super::api::MetricsApi;
use super::error::AwsError;

/// `GetMetricData` takes at most 500 queries per call.
const QUERIES_PER_CALL: usize = 500;
const HOUR: u64 = 3600;

#[derive(Clone, Debug)]
pub struct Metrics(pub aws_sdk_cloudwatch::Client);

/// A metric's sum per instance, counting only the data points each
/// instance's `since` (seconds since the epoch) does not exclude.
struct Sums<'a> {
    metric: &'static str,
    since: &'a [(String, u64)],
    /// The whole window, and the width of one data point.
    start: SystemTime,
    period: u64,
}

impl Metrics {
    async fn sums(&self, q: Sums<'_>) -> Result<HashMap<String, f64>, AwsError> {
        let end = SystemTime::now();
        let period = i32::try_from(q.period).unwrap_or(i32::MAX);
        let mut found = HashMap::new();
        for chunk in q.since.chunks(QUERIES_PER_CALL) {
            let queries: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(n, (id, _))| {
                    MetricDataQuery::builder()
                        .id(format!("q{n}"))
                        .return_data(true)
                        .metric_stat(
                            MetricStat::builder()
                                .metric(
                                    Metric::builder()
                                        .namespace("AWS/EC2")
                                        .metric_name(q.metric)
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
                    .start_time(DateTime::from(q.start))
                    .end_time(DateTime::from(end))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "monitoring", "cloudwatch:GetMetricData"))?;
                for r in out.metric_data_results() {
                    let Some((id, since)) = r
                        .id()
                        .and_then(|q| q.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| chunk.get(n))
                    else {
                        continue;
                    };
                    // A data point covers [timestamp, timestamp + period).
                    let values: Vec<f64> = r
                        .values()
                        .iter()
                        .zip(r.timestamps())
                        .filter(|(_, t)| {
                            u64::try_from(t.secs()).map_or(true, |t| t + q.period > *since)
                        })
                        .map(|(v, _)| *v)
                        .chain(r.values().iter().skip(r.timestamps().len()).copied())
                        .collect();
                    if !values.is_empty() {
                        *found.entry(id.clone()).or_insert(0.0) += values.iter().sum::<f64>();
                    }
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(found)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MetricsApi for Metrics {
    async fn no_token_calls(
        &self,
        ids: &[String],
        lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        let start = SystemTime::now()
            .checked_sub(lookback)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let since: Vec<(String, u64)> = ids.iter().map(|id| (id.clone(), 0)).collect();
        self.sums(Sums {
            metric: "MetadataNoToken",
            since: &since,
            start,
            // One data point per instance: the whole lookback, rounded up to
            // the hour (CloudWatch wants multiples of 60 s, and of 3,600 s
            // for data older than 15 days).
            period: lookback.as_secs().div_ceil(HOUR).max(1) * HOUR,
        })
        .await
    }

    async fn rejected_calls(
        &self,
        since: &[(String, u64)],
        lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        let now = SystemTime::now();
        let floor = secs(now).saturating_sub(lookback.as_secs());
        let earliest = since
            .iter()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(floor)
            .max(floor);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(earliest - earliest % HOUR);
        // Hourly points, widened so one query stays under a few hundred.
        let span = secs(now).saturating_sub(earliest).max(HOUR);
        let period = (span / 200).div_ceil(HOUR).max(1) * HOUR;
        self.sums(Sums {
            metric: "MetadataNoTokenRejected",
            since,
            start,
            period,
        })
        .await
    }
}

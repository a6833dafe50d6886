//! The SDK's shared settings: retries, timeouts, and the configuration
//! loaded once at start.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Shared SDK settings: the SDK retries throttling and 5xx with backoff
/// (standard mode), and no call may hang past the function's timeout.
pub fn sdk_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
}

pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

/// A sweep's listing pages: large responses, so longer than `sdk_timeouts`.
pub fn page_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(90))
        .operation_timeout(Duration::from_secs(240))
        .build()
}

/// Loads the SDK configuration once (credentials chain, `AWS_ENDPOINT_URL`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(sdk_retry())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

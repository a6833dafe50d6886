//! The call counter: what each client sent, by service and operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::{ConfigBag, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Counts the requests each client sends, by service and operation: the
/// figure behind "AWS calls per instance", measured where the SDK transmits
/// (so retries count), not where our code asks; and what `doctor`'s
/// read-only policy must allow.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl CallCounter {
    /// Requests sent, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut by_op = BTreeMap::new();
        for ((_, op), n) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *by_op.entry(op.clone()).or_insert(0) += n;
        }
        by_op
    }

    /// Every (service, operation) that sent a request.
    pub fn operations(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "imds-guard call counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, name) = cfg.load::<Metadata>().map_or_else(
            || ("unknown".to_string(), "unknown".to_string()),
            |m| (m.service().to_string(), m.name().to_string()),
        );
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((service, name))
            .or_insert(0) += 1;
        Ok(())
    }
}

/// The `Date` of the last answer a client saw: AWS's clock, which the
/// command line stamps a break-glass grant with rather than the laptop's.
#[derive(Clone, Debug, Default)]
pub struct ServerDate(Arc<Mutex<Option<u64>>>);

impl ServerDate {
    /// Seconds since the epoch, when an answer carried a readable `Date`.
    pub fn seconds(&self) -> Option<u64> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "imds-guard server date"
    }

    fn read_after_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| {
                aws_sdk_sts::primitives::DateTime::from_str(
                    d,
                    aws_sdk_sts::primitives::DateTimeFormat::HttpDate,
                )
                .ok()
            })
            .and_then(|d| u64::try_from(d.secs()).ok());
        if date.is_some() {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = date;
        }
        Ok(())
    }
}

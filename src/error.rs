//! The invocation's error, and how a report becomes the invocation's
//! result: an event that cannot be read, instances (or the notification)
//! not handled, a fan-out step not finished.

use tracing::{error, info};

use crate::event::EventError;
use crate::plan::failure_summary;
use crate::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// An EC2 call event we could not read: kept for a person to look at.
    #[error(transparent)]
    Malformed(#[from] EventError),
    /// Some instances (or the notification) could not be handled.
    #[error("{summary}")]
    Unhandled {
        summary: String,
        report: Box<Report>,
    },
    /// A fan-out step could not finish (a shard not recorded, shards not
    /// swept to the end): the engine retries it, or the run fails.
    #[error("{summary}")]
    Incomplete { summary: String },
}

/// The invocation's result: the report, or an error that names every
/// instance (and the notification) that could not be handled.
pub fn conclude(report: Report, notify_error: Option<String>) -> Result<Report, GuardError> {
    info!(tally = %report.tally(), notification = %report.notification, "event handled");
    let Some(summary) = failure_summary(&report, notify_error.as_deref()) else {
        return Ok(report);
    };
    error!(report = %serde_json::to_string(&report).unwrap_or_default(), "{summary}");
    Err(GuardError::Unhandled {
        summary,
        report: Box::new(report),
    })
}

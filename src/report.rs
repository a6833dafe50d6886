//! What happened: one outcome per instance, and the invocation's report
//! (the function's response, the CLI's output and the notification's source).

use serde::Serialize;

use crate::config::Mode;
use crate::event::{EventContext, MetadataOptions};

/// Every instance an event names ends in exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already `HttpTokens=required` (or the endpoint is off).
    Compliant,
    /// Changed to `HttpTokens=required` by this invocation.
    Remediated,
    /// Noncompliant and left as is: tagged (notify) or only reported (audit).
    Flagged,
    /// Noncompliant, but exempt: nothing written.
    Exempt,
    /// Shutting down or terminated.
    Gone,
    /// Could not be handled; the invocation fails and names it.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Compliant => "compliant",
            Outcome::Remediated => "remediated",
            Outcome::Flagged => "flagged",
            Outcome::Exempt => "exempt",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub outcome: Outcome,
    /// What this invocation did, in words.
    pub action: String,
    /// What enforce would have done, where nothing was done (audit, exempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<String>,
    /// The metadata options as found, before any change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<MetadataOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this outcome is news a person should be told about.
    #[serde(skip)]
    pub notify: bool,
}

impl InstanceReport {
    pub fn new(instance_id: &str, outcome: Outcome, action: impl Into<String>) -> Self {
        InstanceReport {
            instance_id: instance_id.to_string(),
            outcome,
            action: action.into(),
            would: None,
            findings: Vec::new(),
            exemption: None,
            before: None,
            image_id: None,
            error: None,
            notify: false,
        }
    }

    pub fn failed(instance_id: &str, error: impl Into<String>) -> Self {
        let mut r = InstanceReport::new(instance_id, Outcome::Failed, "none");
        r.error = Some(error.into());
        r.notify = true;
        r
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The event named instances and each has an outcome.
    Handled,
    /// The API call failed, so nothing was launched or changed.
    FailedCall,
    /// Not an event imds-guard acts on.
    Ignored,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventContext>,
    pub instances: Vec<InstanceReport>,
    /// Items of the event that could not be read at all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// `sent <message id>`, `not needed`, `no topic configured`, `failed: ...`.
    pub notification: String,
}

impl Report {
    pub fn ignored(mode: Mode, reason: String) -> Report {
        Report {
            status: Status::Ignored,
            mode,
            reason: Some(reason),
            event: None,
            instances: Vec::new(),
            unreadable: Vec::new(),
            notification: "not needed".into(),
        }
    }

    /// The API call itself failed: nothing was launched or changed.
    pub fn failed_call(mode: Mode, ctx: EventContext, error_code: &str) -> Report {
        Report {
            status: Status::FailedCall,
            mode,
            reason: Some(format!(
                "{} failed with {error_code}: nothing was launched or changed",
                ctx.event_name
            )),
            event: Some(ctx),
            instances: Vec::new(),
            unreadable: Vec::new(),
            notification: "not needed".into(),
        }
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.instances
            .iter()
            .filter(|i| i.outcome == outcome)
            .count()
    }

    /// Instances and items that could not be handled, with why.
    pub fn unhandled(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.outcome == Outcome::Failed || i.error.is_some())
            .map(|i| match i.outcome {
                Outcome::Failed => {
                    format!(
                        "{} ({})",
                        i.instance_id,
                        i.error.as_deref().unwrap_or("failed")
                    )
                }
                done => format!(
                    "{} ({}, but {})",
                    i.instance_id,
                    done.as_str(),
                    i.error.as_deref().unwrap_or("an error")
                ),
            })
            .chain(self.unreadable.iter().cloned())
            .collect()
    }

    /// `2 remediated, 1 exempt`, in a fixed order, zero counts left out.
    pub fn tally(&self) -> String {
        let order = [
            Outcome::Remediated,
            Outcome::Flagged,
            Outcome::Exempt,
            Outcome::Failed,
            Outcome::Compliant,
            Outcome::Gone,
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|&o| match self.count(o) {
                0 => None,
                n => Some(format!("{n} {}", o.as_str())),
            })
            .collect();
        if parts.is_empty() {
            "no instances".into()
        } else {
            parts.join(", ")
        }
    }
}

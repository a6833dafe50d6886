//! A message as the guard sends it: subject, body, the attributes that
//! subscription filters read, and how it is kept when it cannot be sent
//! (in a memory record, in the failed-events queue). Plain data at the
//! bottom of the crate: records, grants and the notification all build one;
//! what a message says is `notify`'s.

/// SNS allows 100 characters of subject.
pub const MAX_SUBJECT: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub subject: String,
    pub body: String,
    /// Message attributes for subscription filter policies: (name, value).
    /// `outcome` is a `String.Array` (every outcome in the message); the rest
    /// are `String`.
    pub outcomes: Vec<String>,
    pub attributes: Vec<(String, String)>,
}

/// The `data` keys of a notice kept in the guard's memory.
const SUBJECT: &str = "subject";

const BODY: &str = "body";

const OUTCOMES: &str = "outcomes";

const ATTRIBUTE: &str = "attribute.";

impl Notification {
    /// The message as a memory record's data, to be published again by a
    /// retry of the event when publishing it failed.
    pub fn to_data(&self) -> std::collections::BTreeMap<String, String> {
        let mut d = std::collections::BTreeMap::from([
            (SUBJECT.to_string(), self.subject.clone()),
            (BODY.to_string(), self.body.clone()),
            (OUTCOMES.to_string(), self.outcomes.join(",")),
        ]);
        for (k, v) in &self.attributes {
            d.insert(format!("{ATTRIBUTE}{k}"), v.clone());
        }
        d
    }

    /// The message a record's data keeps; `None` if it keeps none.
    pub fn from_data(d: &std::collections::BTreeMap<String, String>) -> Option<Notification> {
        Some(Notification {
            subject: d.get(SUBJECT)?.clone(),
            body: d.get(BODY)?.clone(),
            outcomes: d
                .get(OUTCOMES)?
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
            attributes: d
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(ATTRIBUTE)?.to_string(), v.clone())))
                .collect(),
        })
    }

    /// What the failed-events queue keeps of a message that could not be
    /// published: the message whole, where it was going, and why it did
    /// not get there. A person reads it there (the queue's depth alarms).
    pub fn kept(&self, topic_arn: &str, why: &str, event_id: Option<&str>) -> String {
        serde_json::json!({
            "kind": KEPT_KIND,
            "summary": format!(
                "imds-guard could not publish this message to {topic_arn} ({why}); it is kept here so it is not lost{}",
                if event_id.is_some() {
                    ", and a retry of the event publishes it again"
                } else {
                    ""
                }
            ),
            "topic_arn": topic_arn,
            "error": why,
            "event_id": event_id,
            "subject": self.subject,
            // The body is JSON: kept as a value, so a reader sees it whole.
            "message": serde_json::from_str::<serde_json::Value>(&self.body)
                .unwrap_or_else(|_| serde_json::Value::String(self.body.clone())),
            "outcomes": self.outcomes,
        })
        .to_string()
    }
}

/// The `kind` of a kept message (also a message attribute), beside the
/// failed invocations Lambda sends to the same queue.
pub const KEPT_KIND: &str = "undelivered-notification";

/// Printable ASCII only, no line breaks, at most 100 characters.
pub fn subject(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.len() > MAX_SUBJECT {
        s.truncate(MAX_SUBJECT - 3);
        s.push_str("...");
    }
    s
}

//! What became of one message the guard sent a person: sent, failed (and
//! kept where), no topic, not needed. Every flow that tells (an event, a
//! sweep, the organization's summary, a break-glass grant, the self-check)
//! gets one of these from the outbox, and decides on it, never on its text;
//! the text is what the report says (`notification`).

use std::fmt;

/// Where a message that could not be published was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptIn {
    /// In the guard's memory, for the event's retry to publish it once.
    EventRetry,
    /// In the failed-events queue, for a person (its depth alarms).
    FailedEventsQueue,
}

impl KeptIn {
    fn as_str(self) -> &'static str {
        match self {
            KeptIn::EventRetry => "for the event's retry",
            KeptIn::FailedEventsQueue => "in the failed-events queue",
        }
    }
}

/// Why a message that failed is kept nowhere but the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotKept {
    /// Nowhere to keep it, or every place refused: the log line carries it.
    LogOnly,
    /// Sent from the command line: the operator sees the failure at once,
    /// and the function's queues are not the operator's to fill.
    CommandLine,
}

/// What became of this delivery's own message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Nothing worth telling.
    NotNeeded,
    /// News, but no topic to tell it on (`NOTIFY_TOPIC_ARN`).
    NoTopic,
    /// Published: SNS's message id.
    Published { id: String },
    /// Not published: why, where it was kept (empty: see `not_kept`), and
    /// each place that refused to keep it, with why.
    Failed {
        why: String,
        kept: Vec<KeptIn>,
        not_kept: NotKept,
        refused: Vec<(KeptIn, String)>,
    },
}

/// What became of a message an earlier delivery of the same event kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Earlier {
    /// Published now, beside this delivery's own message.
    Published { id: String },
    /// Failed again (it stays kept).
    FailedAgain { why: String },
    /// It says all this delivery would: it is the one message, published
    /// (`Sent::Published` names it) or still kept (`Sent::Failed`).
    Covers,
}

/// One delivery: this message, and an earlier delivery's kept one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub sent: Sent,
    pub earlier: Option<Earlier>,
}

impl Delivery {
    pub fn new(sent: Sent) -> Self {
        Delivery {
            sent,
            earlier: None,
        }
    }

    /// Whether this delivery's message went out (what a flow remembers as
    /// told only then).
    pub fn published(&self) -> bool {
        matches!(self.sent, Sent::Published { .. })
    }

    /// The failure that fails the invocation (so the event is retried):
    /// this message's, else an earlier kept one's.
    pub fn error(&self) -> Option<&str> {
        match (&self.sent, &self.earlier) {
            (Sent::Failed { why, .. }, _) => Some(why),
            (_, Some(Earlier::FailedAgain { why })) => Some(why),
            _ => None,
        }
    }

    /// Where a failed message was kept, as the report says it.
    pub fn kept_text(kept: &[KeptIn], not_kept: NotKept) -> String {
        if kept.is_empty() {
            return match not_kept {
                NotKept::LogOnly => "kept only in the function's log".into(),
                NotKept::CommandLine => "not kept (command line)".into(),
            };
        }
        let places: Vec<&str> = kept.iter().map(|k| k.as_str()).collect();
        format!("kept {}", places.join(" and "))
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let covers = self.earlier == Some(Earlier::Covers);
        match &self.sent {
            Sent::NotNeeded => f.write_str("not needed")?,
            Sent::NoTopic => f.write_str("no topic configured")?,
            Sent::Published { id } if covers => write!(
                f,
                "sent {id} (the message an earlier delivery kept, which says all this one would)"
            )?,
            Sent::Published { id } => write!(f, "sent {id}")?,
            Sent::Failed { why, .. } if covers => write!(
                f,
                "failed: {why}; the message an earlier delivery kept, which says all this one would, is kept still"
            )?,
            Sent::Failed {
                why,
                kept,
                not_kept,
                ..
            } => write!(f, "failed: {why}; {}", Delivery::kept_text(kept, *not_kept))?,
        }
        match &self.earlier {
            Some(Earlier::Published { id }) => {
                write!(f, "; an earlier delivery's message: sent {id}")
            }
            Some(Earlier::FailedAgain { why }) => {
                write!(f, "; an earlier delivery's message failed again: {why}")
            }
            Some(Earlier::Covers) | None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kept: Vec<KeptIn>, not_kept: NotKept) -> Sent {
        Sent::Failed {
            why: "SNS down".into(),
            kept,
            not_kept,
            refused: Vec::new(),
        }
    }

    #[test]
    fn each_delivery_says_what_became_of_its_message() {
        let says = |sent, earlier| Delivery { sent, earlier }.to_string();
        assert_eq!(says(Sent::NotNeeded, None), "not needed");
        assert_eq!(says(Sent::NoTopic, None), "no topic configured");
        assert_eq!(says(Sent::Published { id: "m-1".into() }, None), "sent m-1");
        assert_eq!(
            says(
                failed(
                    vec![KeptIn::EventRetry, KeptIn::FailedEventsQueue],
                    NotKept::LogOnly
                ),
                None
            ),
            "failed: SNS down; kept for the event's retry and in the failed-events queue"
        );
        assert_eq!(
            says(failed(vec![], NotKept::LogOnly), None),
            "failed: SNS down; kept only in the function's log"
        );
        assert_eq!(
            says(failed(vec![], NotKept::CommandLine), None),
            "failed: SNS down; not kept (command line)"
        );
        assert_eq!(
            says(
                Sent::NotNeeded,
                Some(Earlier::Published { id: "m-0".into() })
            ),
            "not needed; an earlier delivery's message: sent m-0"
        );
        assert_eq!(
            says(Sent::Published { id: "m-0".into() }, Some(Earlier::Covers)),
            "sent m-0 (the message an earlier delivery kept, which says all this one would)"
        );
    }

    #[test]
    fn an_earlier_message_that_failed_again_fails_the_invocation_too() {
        let d = Delivery {
            sent: Sent::Published { id: "m-1".into() },
            earlier: Some(Earlier::FailedAgain {
                why: "throttled".into(),
            }),
        };
        assert!(d.published());
        assert_eq!(d.error(), Some("throttled"));
        let d = Delivery::new(failed(vec![KeptIn::FailedEventsQueue], NotKept::LogOnly));
        assert!(!d.published());
        assert_eq!(d.error(), Some("SNS down"));
        assert_eq!(Delivery::new(Sent::NoTopic).error(), None);
    }
}

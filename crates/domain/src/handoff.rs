//! What the event function hands to the outputs function. The event
//! function's bootstrap carries neither Security Hub's nor EventBridge's
//! client (its 8 MB budget), so the findings its decisions make and the
//! events its news makes go, as they are, through a queue (`OUTPUTS_QUEUE_URL`)
//! to a function of the sweep's binary, which files and puts them within
//! seconds: the same findings and events the event path would have sent.

use serde::{Deserialize, Serialize};

use crate::finding::Finding;
use crate::routing::Routed;

/// The `kind` attribute of a handoff message.
pub const KIND: &str = "imds-guard-outputs";
/// A message stays well under SQS's 256 KB.
pub const MAX_MESSAGE: usize = 200 * 1024;

/// Findings and events for one account and region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The instances' account: the findings name it, and in central mode
    /// the member role files them there.
    pub account: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Routed>,
}

impl Handoff {
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.events.is_empty()
    }

    /// The handoff as messages of at most `MAX_MESSAGE` bytes each, every
    /// finding and event in exactly one of them. (One finding or event is
    /// a few KB; a single one larger than a message is sent alone and SQS
    /// says whether it takes it.)
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let empty = Handoff {
            account: self.account.clone(),
            region: self.region.clone(),
            ..Handoff::default()
        };
        let mut current = empty.clone();
        let mut size = serde_json::to_string(&empty).map_or(0, |s| s.len());
        let base = size;
        let flush = |current: &mut Handoff, out: &mut Vec<String>| {
            if !current.is_empty() {
                out.push(serde_json::to_string(&*current).unwrap_or_default());
            }
            *current = empty.clone();
        };
        for f in &self.findings {
            let n = serde_json::to_string(f).map_or(0, |s| s.len()) + 1;
            if size + n > MAX_MESSAGE && !current.is_empty() {
                flush(&mut current, &mut out);
                size = base;
            }
            size += n;
            current.findings.push(f.clone());
        }
        for e in &self.events {
            let n = serde_json::to_string(e).map_or(0, |s| s.len()) + 1;
            if size + n > MAX_MESSAGE && !current.is_empty() {
                flush(&mut current, &mut out);
                size = base;
            }
            size += n;
            current.events.push(e.clone());
        }
        flush(&mut current, &mut out);
        out
    }

    /// A message as the outputs function reads it.
    pub fn parse(body: &str) -> Result<Handoff, String> {
        let h: Handoff =
            serde_json::from_str(body).map_err(|e| format!("not a handoff message: {e}"))?;
        if !crate::validate::is_account_id(&h.account) || !crate::validate::is_region(&h.region) {
            return Err(format!(
                "a handoff names no valid account and region ({:?}, {:?})",
                crate::validate::clean(&h.account, 32),
                crate::validate::clean(&h.region, 32)
            ));
        }
        // Only the guard's own findings, of the account and region named:
        // a message cannot have the outputs function file anything else.
        for f in &h.findings {
            let place = crate::finding::Place {
                account: &h.account,
                region: &h.region,
                now: 0,
                stamp_ms: 0,
            };
            let ours = crate::finding::instance_of(&f.id).is_some_and(|id| {
                f.id == crate::finding::finding_id(&place, id)
                    && f.resources.len() == 1
                    && f.resources[0]
                        .id
                        .ends_with(&format!(":ec2:{}:{}:instance/{id}", h.region, h.account))
            });
            if !ours
                || f.aws_account_id != h.account
                || f.region != h.region
                || f.product_arn != crate::finding::product_arn(&h.account, &h.region)
                || f.generator_id != crate::finding::GENERATOR_ID
            {
                return Err(format!(
                    "finding {} is not one of the guard's in {}/{}",
                    crate::validate::clean(&f.id, 128),
                    h.account,
                    h.region
                ));
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::event::Trigger;
    use crate::finding::{for_report, Place};
    use crate::report::{Idle, InstanceReport, Outcome};

    fn handoff(n: usize) -> Handoff {
        let place = Place {
            account: "111122223333",
            region: "eu-west-1",
            now: 1_795_000_000,
            stamp_ms: 0,
        };
        Handoff {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            findings: (0..n)
                .map(|i| {
                    let r =
                        InstanceReport::new(&format!("i-{i:017x}"), Outcome::Flagged, Idle::None);
                    for_report(&place, Mode::Notify, &r, Trigger::Launch).unwrap()
                })
                .collect(),
            events: vec![Routed {
                detail_type: crate::routing::INSTANCE_DECIDED.into(),
                detail: "{}".into(),
            }],
        }
    }

    #[test]
    fn a_handoff_splits_into_messages_that_fit_and_lose_nothing() {
        let h = handoff(500);
        let messages = h.messages();
        assert!(messages.len() > 1);
        let mut back = Handoff {
            account: h.account.clone(),
            region: h.region.clone(),
            ..Handoff::default()
        };
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
            let part = Handoff::parse(m).unwrap();
            back.findings.extend(part.findings);
            back.events.extend(part.events);
        }
        assert_eq!(back, h);
        assert_eq!(handoff(1).messages().len(), 1);
        assert!(Handoff::default().messages().is_empty());
    }

    #[test]
    fn a_message_cannot_make_the_outputs_function_file_what_is_not_the_guards() {
        let h = handoff(1);
        let mut other_account = h.clone();
        other_account.findings[0].aws_account_id = "444455556666".into();
        let mut other_generator = h.clone();
        other_generator.findings[0].generator_id = "someone-else".into();
        let mut bad_place = h.clone();
        bad_place.region = "nowhere".into();
        let mut no_resource = h.clone();
        no_resource.findings[0].resources.clear();
        let mut other_product = h.clone();
        other_product.findings[0].product_arn =
            "arn:aws:securityhub:eu-west-1:111122223333:product/aquasecurity/aquasecurity".into();
        let mut other_id = h.clone();
        other_id.findings[0].id = "imds-guard/444455556666/eu-west-1/i-00000000000000000".into();
        for bad in [
            other_account,
            other_generator,
            bad_place,
            no_resource,
            other_product,
            other_id,
        ] {
            let body = serde_json::to_string(&bad).unwrap();
            assert!(Handoff::parse(&body).is_err(), "{body}");
        }
        assert!(Handoff::parse("not json").is_err());
        assert!(Handoff::parse(&serde_json::to_string(&h).unwrap()).is_ok());
    }
}

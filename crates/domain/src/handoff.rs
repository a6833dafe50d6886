//! What the event function and the sweep functions' binary (a sweep, a fan-out
//! shard or summary, a source event) hand to the outputs function.
//! Their bootstraps carry neither Security Hub's nor EventBridge's client
//! (each binary's budget), so the findings their decisions make and the
//! events their news makes go through a queue (`OUTPUTS_QUEUE_URL`) to the
//! outputs function, which files and puts them within seconds.
//!
//! The queue is a way in, so the outputs function takes nobody's word:
//! only the guard's role may send (the queue's policy, and SQS's
//! `SenderId` checked again by the function: `sender_allowed`); a finding
//! crosses as the facts it is made of (`Filing`), which the outputs
//! function rebuilds with the domain's own words, status and severity; an
//! event only of the detail types the guard puts, with a JSON object for
//! its detail. What is refused is kept, with the reason, in the queue's
//! dead-letter queue (`refusal`).

use serde::{Deserialize, Serialize};

use crate::finding::{Filing, Finding};
use crate::routing::BusEvent;

/// The `kind` attribute of a handoff message.
pub const KIND: &str = "imds-guard-outputs";
/// The `kind` attribute of a message the outputs function refused, kept
/// in its dead-letter queue with the reason.
pub const REFUSED_KIND: &str = "imds-guard-refused-handoff";
/// The message format: 2 hands findings over as `Filing`s, which the
/// outputs function rebuilds. The previous release's (1, no `v`) handed
/// ASFF over; such messages still queued at an upgrade are read for one
/// release (checked as before, and more), then refused.
pub const VERSION: u32 = 2;
/// A message stays well under SQS's 256 KB.
pub const MAX_MESSAGE: usize = 200 * 1024;

/// Findings and events for one account and region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    #[serde(default = "previous")]
    pub v: u32,
    /// The instances' account: the findings name it, and in central mode
    /// the member role files them there.
    pub account: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filings: Vec<Filing>,
    /// A previous-format message's findings, as ASFF (read, never sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<BusEvent>,
}

fn previous() -> u32 {
    1
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff {
            v: VERSION,
            account: String::new(),
            region: String::new(),
            filings: Vec::new(),
            findings: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// The detail types the guard puts on a bus: a message naming another is
/// refused, so the queue cannot be used to put arbitrary events as the
/// guard.
pub const DETAIL_TYPES: [&str; 4] = [
    crate::routing::INSTANCE_DECIDED,
    crate::routing::SOURCE_DECIDED,
    crate::routing::SWEEP_FINISHED,
    crate::routing::DEFAULTS_WEAKENED,
];

impl Handoff {
    pub fn new(account: &str, region: &str) -> Handoff {
        Handoff {
            account: account.into(),
            region: region.into(),
            ..Handoff::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filings.is_empty() && self.findings.is_empty() && self.events.is_empty()
    }

    /// The handoff as messages of at most `MAX_MESSAGE` bytes each, every
    /// filing and event in exactly one of them. (One filing or event is
    /// a few KB; a single one larger than a message is sent alone and SQS
    /// says whether it takes it.)
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let empty = Handoff::new(&self.account, &self.region);
        let mut current = empty.clone();
        let base = serde_json::to_string(&empty).map_or(0, |s| s.len());
        let mut size = base;
        let flush = |current: &mut Handoff, out: &mut Vec<String>| {
            if !current.is_empty() {
                out.push(serde_json::to_string(&*current).unwrap_or_default());
            }
            *current = empty.clone();
        };
        for f in &self.filings {
            let n = serde_json::to_string(f).map_or(0, |s| s.len()) + 1;
            if size + n > MAX_MESSAGE && !current.is_empty() {
                flush(&mut current, &mut out);
                size = base;
            }
            size += n;
            current.filings.push(f.clone());
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

    /// A message as the outputs function reads it, or why it is refused:
    /// not a handoff, not of an account and region, a version it does not
    /// read, a finding that is not the guard's own, an event the guard
    /// does not put. (Who sent it is `sender_allowed`'s question.)
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
        match h.v {
            1 if h.filings.is_empty() => h.previous_findings_ours()?,
            VERSION if h.findings.is_empty() => {
                if let Some(f) = h
                    .filings
                    .iter()
                    .find(|f| !crate::validate::is_instance_id(f.instance_id()))
                {
                    return Err(format!(
                        "a filing names no instance ({:?})",
                        crate::validate::clean(f.instance_id(), 64)
                    ));
                }
            }
            1 | VERSION => {
                return Err(format!(
                    "a version {} handoff carries {}",
                    h.v,
                    if h.v == 1 { "filings" } else { "ASFF findings" }
                ))
            }
            v => {
                return Err(format!(
                    "handoff version {v} is not one this function reads (1 or {VERSION})"
                ))
            }
        }
        for e in &h.events {
            if !DETAIL_TYPES.contains(&e.detail_type.as_str()) {
                return Err(format!(
                    "an event of detail type {:?} is not one the guard puts",
                    crate::validate::clean(&e.detail_type, 64)
                ));
            }
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&e.detail)
                .is_err()
            {
                return Err(format!(
                    "a {} event's detail is not a JSON object",
                    e.detail_type
                ));
            }
        }
        Ok(h)
    }

    /// A previous-format message's findings: only the guard's own, of the
    /// account and region named, as the guard builds them (its title and
    /// type, and a status, severity and record state it gives together).
    fn previous_findings_ours(&self) -> Result<(), String> {
        use crate::finding::{ComplianceStatus as C, RecordState as R, Severity as S};
        for f in &self.findings {
            let place = crate::finding::Place {
                account: &self.account,
                region: &self.region,
                now: 0,
                stamp_ms: 0,
            };
            let ours = crate::finding::instance_of(&f.id).is_some_and(|id| {
                f.id == crate::finding::finding_id(&place, id)
                    && f.resources.len() == 1
                    && f.resources[0].id.ends_with(&format!(
                        ":ec2:{}:{}:instance/{id}",
                        self.region, self.account
                    ))
            });
            let types = [crate::finding::FINDING_TYPE.to_string()];
            let severity = f.finding_provider_fields.severity.label;
            let as_built = match (f.status(), f.record_state) {
                (Some(C::Passed), R::Archived) => severity == S::Informational,
                (Some(C::Failed), R::Active) => matches!(severity, S::High | S::Medium),
                (Some(C::Warning), R::Active) => severity == S::Low,
                (Some(_), R::Archived) => severity == S::Informational,
                _ => false,
            };
            if !ours
                || !as_built
                || f.severity.label != severity
                || f.types != types
                || f.finding_provider_fields.types != types
                || f.title != crate::finding::TITLE
                || f.aws_account_id != self.account
                || f.region != self.region
                || f.product_arn != crate::finding::product_arn(&self.account, &self.region)
                || f.generator_id != crate::finding::GENERATOR_ID
            {
                return Err(format!(
                    "finding {} is not one of the guard's in {}/{}",
                    crate::validate::clean(&f.id, 128),
                    self.account,
                    self.region
                ));
            }
        }
        Ok(())
    }
}

/// Whether SQS's `SenderId` of a message (the sender's IAM unique id, with
/// `:<session>` for a role's session; set by SQS, not by the sender) is
/// one of `allowed` (`OUTPUTS_SENDERS`: the guard's role's unique id).
/// Refused, with the reason, when it is not, or cannot be known.
pub fn sender_allowed(sender: Option<&str>, allowed: &[String]) -> Result<(), String> {
    sender_in(sender, allowed, "OUTPUTS_SENDERS")
}

/// As `sender_allowed`, for the senders the setting `setting` names.
pub fn sender_in(sender: Option<&str>, allowed: &[String], setting: &str) -> Result<(), String> {
    if allowed.is_empty() {
        return Err(format!(
            "{setting} names no sender, so no message's sender can be proven the guard's"
        ));
    }
    let Some(sender) = sender.filter(|s| !s.is_empty()) else {
        return Err("the message carries no SenderId".into());
    };
    let principal = sender.split(':').next().unwrap_or(sender);
    if allowed.iter().any(|a| a == principal) {
        Ok(())
    } else {
        Err(format!(
            "sent by {}, which is not the guard's role ({setting})",
            crate::validate::clean(sender, 160)
        ))
    }
}

/// What a refused message is kept as: its body as received, who sent it,
/// and why it was refused.
pub fn refusal(message_id: &str, sender: Option<&str>, reason: &str, body: &str) -> String {
    serde_json::json!({
        "refused": reason,
        "message_id": message_id,
        "sender": sender,
        "body": body,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::event::Trigger;
    use crate::finding::{for_report, Place};
    use crate::report::{Idle, InstanceReport, Outcome};

    fn place() -> Place<'static> {
        Place {
            account: "111122223333",
            region: "eu-west-1",
            now: 1_795_000_000,
            stamp_ms: 0,
        }
    }

    fn finding(i: usize) -> Finding {
        let r = InstanceReport::new(&format!("i-{i:017x}"), Outcome::Flagged, Idle::None);
        for_report(&place(), Mode::Notify, &r, Trigger::Launch).unwrap()
    }

    fn handoff(n: usize) -> Handoff {
        Handoff {
            filings: (0..n).map(|i| finding(i).filing.0.unwrap()).collect(),
            events: vec![BusEvent {
                detail_type: crate::routing::INSTANCE_DECIDED.into(),
                detail: "{}".into(),
            }],
            ..Handoff::new("111122223333", "eu-west-1")
        }
    }

    /// A message of the previous release: ASFF findings, no `v`.
    fn previous(n: usize) -> serde_json::Value {
        serde_json::json!({
            "account": "111122223333",
            "region": "eu-west-1",
            "findings": (0..n).map(finding).collect::<Vec<_>>(),
            "events": [{"detail_type": crate::routing::INSTANCE_DECIDED, "detail": "{}"}],
        })
    }

    #[test]
    fn a_handoff_splits_into_messages_that_fit_and_lose_nothing() {
        let h = handoff(2000);
        let messages = h.messages();
        assert!(messages.len() > 1);
        let mut back = Handoff::new(&h.account, &h.region);
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
            let part = Handoff::parse(m).unwrap();
            assert_eq!(part.v, VERSION);
            back.filings.extend(part.filings);
            back.events.extend(part.events);
        }
        assert_eq!(back, h);
        assert_eq!(handoff(1).messages().len(), 1);
        assert!(Handoff::default().messages().is_empty());
    }

    #[test]
    fn a_filing_rebuilds_the_finding_the_sender_would_have_filed() {
        let sent = finding(7);
        let body = handoff(0).messages();
        assert_eq!(body.len(), 1);
        let h = Handoff {
            filings: vec![sent.filing.0.clone().unwrap()],
            ..Handoff::new("111122223333", "eu-west-1")
        };
        let got = Handoff::parse(&h.messages()[0]).unwrap();
        let rebuilt = crate::finding::rebuild(&place(), &got.filings[0]).unwrap();
        assert_eq!(rebuilt, sent);
    }

    #[test]
    fn a_previous_format_message_is_read_for_one_release_and_checked() {
        let body = previous(2).to_string();
        let h = Handoff::parse(&body).unwrap();
        assert_eq!((h.v, h.findings.len(), h.events.len()), (1, 2, 1));
        assert_eq!(h.findings[0], finding(0));
        // As before: another account's, another generator's, another place.
        let tamper = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = previous(1);
            f(&mut v);
            Handoff::parse(&v.to_string()).unwrap_err()
        };
        tamper(&|v| v["findings"][0]["AwsAccountId"] = "444455556666".into());
        tamper(&|v| v["findings"][0]["GeneratorId"] = "someone-else".into());
        tamper(&|v| v["region"] = "nowhere".into());
        tamper(&|v| v["findings"][0]["Resources"] = serde_json::json!([]));
        tamper(&|v| {
            v["findings"][0]["ProductArn"] =
                "arn:aws:securityhub:eu-west-1:111122223333:product/aquasecurity/aquasecurity"
                    .into()
        });
        tamper(&|v| {
            v["findings"][0]["Id"] = "imds-guard/444455556666/eu-west-1/i-00000000000000000".into()
        });
        // And now what it says: a failed finding passed, or quietly
        // downgraded, or retitled, is not one the guard builds.
        tamper(&|v| v["findings"][0]["Compliance"]["Status"] = "PASSED".into());
        tamper(&|v| {
            v["findings"][0]["FindingProviderFields"]["Severity"]["Label"] = "LOW".into();
            v["findings"][0]["Severity"]["Label"] = "LOW".into();
        });
        tamper(&|v| v["findings"][0]["Severity"]["Label"] = "INFORMATIONAL".into());
        tamper(&|v| v["findings"][0]["Title"] = "Nothing to see".into());
        tamper(&|v| v["findings"][0]["Types"] = serde_json::json!(["Effects/Data Exposure"]));
        tamper(&|v| v["findings"][0]["RecordState"] = "ARCHIVED".into());
        assert!(Handoff::parse("not json").is_err());
    }

    #[test]
    fn a_message_cannot_put_events_the_guard_does_not_put() {
        let with = |detail_type: &str, detail: &str| {
            let mut h = handoff(0);
            h.events = vec![BusEvent {
                detail_type: detail_type.into(),
                detail: detail.into(),
            }];
            Handoff::parse(&serde_json::to_string(&h).unwrap())
        };
        for t in DETAIL_TYPES {
            assert!(with(t, r#"{"instance":"i-1"}"#).is_ok(), "{t}");
        }
        let e = with("Account Takeover Approved", "{}").unwrap_err();
        assert!(e.contains("not one the guard puts"), "{e}");
        for detail in ["[]", "\"x\"", "12", "not json", ""] {
            let e = with(crate::routing::SWEEP_FINISHED, detail).unwrap_err();
            assert!(e.contains("not a JSON object"), "{detail}: {e}");
        }
    }

    #[test]
    fn versions_are_not_mixed_and_an_unknown_one_is_refused() {
        let mut v3 = serde_json::to_value(handoff(1)).unwrap();
        v3["v"] = 3.into();
        let e = Handoff::parse(&v3.to_string()).unwrap_err();
        assert!(e.contains("version 3"), "{e}");
        let mut mixed = previous(1);
        mixed["filings"] = serde_json::to_value(&handoff(1).filings).unwrap();
        assert!(Handoff::parse(&mixed.to_string()).is_err());
        let mut asff_in_v2 = serde_json::to_value(handoff(1)).unwrap();
        asff_in_v2["findings"] = previous(1)["findings"].clone();
        assert!(Handoff::parse(&asff_in_v2.to_string()).is_err());
        let mut not_an_instance = serde_json::to_value(handoff(1)).unwrap();
        not_an_instance["filings"][0]["decided"]["facts"]["instance_id"] = "../../etc".into();
        assert!(Handoff::parse(&not_an_instance.to_string()).is_err());
    }

    #[test]
    fn only_the_guards_role_is_an_allowed_sender() {
        let allowed = vec!["AROAGUARDROLE0000001".to_string()];
        assert!(sender_allowed(Some("AROAGUARDROLE0000001:imds-guard-event"), &allowed).is_ok());
        assert!(sender_allowed(Some("AROAGUARDROLE0000001"), &allowed).is_ok());
        for other in [
            "AROAOPERATOR00000001:alice",
            "AIDAUSER000000000001",
            "AROAGUARDROLE00000012:x",
            "AROAGUARDROLE000000",
            "",
        ] {
            let e = sender_allowed(Some(other), &allowed).unwrap_err();
            assert!(
                e.contains("not the guard's role") || e.contains("no SenderId"),
                "{e}"
            );
        }
        assert!(sender_allowed(None, &allowed).is_err());
        let e = sender_allowed(Some("AROAGUARDROLE0000001:x"), &[]).unwrap_err();
        assert!(e.contains("OUTPUTS_SENDERS"), "{e}");
    }
}

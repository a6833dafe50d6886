//! The finding for possible credential theft: an instance role's
//! credentials, delivered by IMDSv1, used from an address that is not one
//! of the instance's (`v1_callers::Suspect`, found by the sweep's last
//! mile). One finding per instance, role and address, so a later sweep that
//! sees more calls updates it.
//!
//! It is not a control check: it carries no `Compliance` (ASFF keeps that
//! for checks), and the guard never archives it. A person closes it through
//! its workflow; Security Hub archives a finding no one updates for 90 days.
//! GuardDuty's `UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration`
//! findings look at the same thing from the network side, for every
//! delivery: both can be open for one theft.

use std::collections::BTreeMap;

use super::{
    build, Desired, Filing, Finding, InstanceDetails, MadeFrom, Place, RecordState, Severity,
};
use crate::time::iso8601;
use crate::v1_callers::Suspect;
use crate::validate::clean;

/// How the sweep finds its theft findings among a region's.
pub const GENERATOR_ID: &str = "imds-guard/imdsv1-credentials-used-elsewhere";
/// `namespace/category/classifier`: ASFF's TTPs namespace, MITRE's tactic.
pub const FINDING_TYPE: &str =
    "TTPs/Credential Access/Instance credentials delivered by IMDSv1 used elsewhere";
pub const TITLE: &str =
    "An instance's IMDSv1-delivered role credentials were used from another address";
const REVOKE_URL: &str =
    "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html";

/// The id: stable for an instance, role and address, and never one that
/// `finding::instance_of` reads as an instance's check (so the sweep's
/// reconciling of its checks leaves it alone).
pub fn finding_id(place: &Place<'_>, instance_id: &str, role: &str, address: &str) -> String {
    format!(
        "imds-guard/{}/{}/{instance_id}/imdsv1-credentials-used-from/{}/{}",
        place.account,
        place.region,
        clean(role, 64),
        clean(address, 64)
    )
}

/// The finding for one suspect of `instance_id`: `None` when what it names
/// is not an instance (a message's filing gets no finding it could not
/// build). Every text from CloudTrail (the address, the user agent, the
/// example) is the caller's to choose: each is cleaned and cut.
pub fn finding(place: &Place<'_>, instance_id: &str, s: &Suspect) -> Option<Finding> {
    if !crate::validate::is_instance_id(instance_id) {
        return None;
    }
    let role = clean(&s.role, 64);
    let address = clean(&s.address, 64);
    let agent = clean(&s.agent, 128);
    let example = clean(&s.example, 128);
    let description = format!(
        "{instance_id}'s role {role} credentials, delivered by IMDSv1 (CloudTrail ec2RoleDelivery 1.0), were used from {address}, not one of the instance's addresses, {} time(s) between {} and {}, e.g. {example} ({agent}). Anyone who makes the instance send one GET to IMDSv1 gets these credentials. GuardDuty's InstanceCredentialExfiltration findings cover this too.",
        s.calls,
        iso8601(s.first_seen),
        iso8601(s.last_seen),
    );
    let fields = BTreeMap::from([
        ("imds-guard/Role".to_string(), role.clone()),
        ("imds-guard/UsedFrom".to_string(), address),
        ("imds-guard/Calls".to_string(), s.calls.to_string()),
        ("imds-guard/UserAgent".to_string(), agent),
        ("imds-guard/ExampleCall".to_string(), example),
    ]);
    let mut f = build(
        place,
        instance_id,
        Desired {
            // Unused: a theft finding has no compliance status.
            status: crate::report::ComplianceStatus::Failed,
            severity: Severity::High,
            record: RecordState::Active,
        },
        description,
        fields,
        InstanceDetails::default(),
        Some(s.first_seen),
    );
    f.id = finding_id(place, instance_id, &s.role, &s.address);
    f.generator_id = GENERATOR_ID.into();
    f.types = vec![FINDING_TYPE.into()];
    f.finding_provider_fields.types = vec![FINDING_TYPE.into()];
    f.title = TITLE.into();
    f.last_observed_at = Some(iso8601(s.last_seen));
    f.compliance = None;
    f.remediation.recommendation.text = format!(
        "Treat it as a compromise of role {role}: revoke its active sessions (IAM: Revoke active sessions), look up what the address did in CloudTrail, require IMDSv2 on the instance (HttpTokens=required), and find how its metadata was reached (an SSRF, a proxy)."
    );
    f.remediation.recommendation.url = REVOKE_URL.into();
    f.filing = MadeFrom(Some(Filing::Theft {
        instance_id: instance_id.into(),
        suspect: s.clone(),
    }));
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PLACE: Place<'static> = Place {
        account: "111122223333",
        region: "eu-west-1",
        now: 1_795_000_000,
        stamp_ms: 0,
    };

    fn suspect() -> Suspect {
        Suspect {
            role: "app".into(),
            address: "203.0.113.9".into(),
            agent: "aws-cli/2.15.0".into(),
            first_seen: 1_794_900_000,
            last_seen: 1_794_990_000,
            calls: 4,
            example: "s3:ListBuckets".into(),
        }
    }

    #[test]
    fn a_suspect_is_a_high_ttp_finding_with_no_compliance_and_never_a_check() {
        let f = finding(&PLACE, "i-0123456789abcdef0", &suspect()).unwrap();
        let v: Value = serde_json::to_value(&f).unwrap();
        assert!(v.get("Compliance").is_none(), "{v}");
        assert_eq!(v["Severity"]["Label"], "HIGH");
        assert_eq!(v["RecordState"], "ACTIVE");
        assert_eq!(v["Types"][0], FINDING_TYPE);
        assert!(FINDING_TYPE.starts_with("TTPs/"));
        assert_eq!(v["GeneratorId"], GENERATOR_ID);
        assert_eq!(v["FirstObservedAt"], "2026-11-17T07:20:00.000Z");
        assert_eq!(v["LastObservedAt"], "2026-11-18T08:20:00.000Z");
        assert_eq!(v["ProductFields"]["imds-guard/UsedFrom"], "203.0.113.9");
        assert!(v["Description"]
            .as_str()
            .unwrap()
            .contains("used from 203.0.113.9"));
        assert!(v["Description"].as_str().unwrap().len() <= super::super::MAX_DESCRIPTION);
        // Not an instance's check: the sweep's reconciling never reads it.
        assert_eq!(super::super::instance_of(&f.id), None);
        // One per instance, role and address.
        let mut other = suspect();
        other.address = "198.51.100.7".into();
        let g = finding(&PLACE, "i-0123456789abcdef0", &other).unwrap();
        assert_ne!(f.id, g.id);
        let mut more = suspect();
        more.calls = 9;
        assert_eq!(
            finding(&PLACE, "i-0123456789abcdef0", &more).unwrap().id,
            f.id
        );
    }

    #[test]
    fn what_the_caller_chose_is_cleaned_and_a_filing_is_rebuilt_as_built() {
        let mut s = suspect();
        s.agent = format!("evil\n{}", "x".repeat(2000));
        s.address = "203.0.113.9\r\nX-Injected: 1".into();
        let f = finding(&PLACE, "i-0123456789abcdef0", &s).unwrap();
        assert!(!f.description.contains('\n'));
        assert!(!f.id.contains('\n'));
        assert!(f.product_fields.values().all(|v| v.chars().count() <= 129));
        // Across the outputs queue it is the suspect that crosses.
        let filing = f.filing.0.clone().unwrap();
        assert_eq!(super::super::rebuild(&PLACE, &filing), Some(f));
        assert!(finding(&PLACE, "not-an-instance", &s).is_none());
    }
}

//! What the stack refuses before deploying (its `Rules`), evaluated as
//! CloudFormation would for given parameters (`iam::Deployment`): each rule
//! the function would otherwise refuse at init.

use crate::iam::Deployment;
use crate::template::load;

#[test]
fn state_change_only_with_exempt_principals_needs_a_sweep() {
    let t = load("template.yaml");
    let principals = ("ExemptPrincipalArns", "arn:aws:iam::*:role/packer-*");
    let refused = |params: &[(&str, &str)]| Deployment::with(params).refused_by(&t);
    assert_eq!(
        refused(&[("Triggers", "state-change"), principals]),
        ["StateChangeWithExemptPrincipalsNeedsASweep"]
    );
    for ok in [
        vec![
            ("Triggers", "state-change"),
            principals,
            ("SweepSchedule", "rate(1 day)"),
        ],
        vec![("Triggers", "both"), principals],
        vec![("Triggers", "state-change")],
        vec![],
    ] {
        assert!(refused(&ok).is_empty(), "{ok:?}");
    }
    // And the rule the stack had already: the exempt tag is not the status tag.
    assert_eq!(
        refused(&[("ExemptTagKey", "imds-guard:status")]),
        ["ExemptTagIsNotTheStatusTag"]
    );
}

#[test]
fn break_glass_needs_a_sweep_to_announce_its_grants() {
    let t = load("template.yaml");
    let role = (
        "BreakGlassRoleArn",
        "arn:aws:iam::123456789012:role/incident-responder",
    );
    assert_eq!(
        Deployment::with(&[role]).refused_by(&t),
        ["BreakGlassNeedsASweep"]
    );
    assert!(Deployment::with(&[role, ("SweepSchedule", "rate(1 day)")])
        .refused_by(&t)
        .is_empty());
}

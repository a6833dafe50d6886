//! The report of an event that could not enter its account-region: refused
//! (not an account this function may act in) or unreachable (its
//! credentials could not be had). One builder for every kind of event, so
//! each names what it was about the same way.

use crate::config::Mode;
use crate::event::{DefaultsChange, EventContext, SourceChange};
use crate::source::SourceReport;

use super::{DefaultsAction, DefaultsReport, Idle, InstanceReport, Outcome, Report, Status};

/// What the event was about.
pub enum Named<'a> {
    /// The instances it names, and the items of it that could not be read.
    Instances {
        ids: &'a [String],
        unreadable: &'a [String],
    },
    /// A change of the account's metadata defaults.
    Defaults(&'a DefaultsChange),
    /// A launch template or Auto Scaling group created or changed.
    Source(&'a SourceChange),
}

/// Why the event could not enter.
pub enum NotEntered {
    /// Not an account this function may act in: nothing is looked at or
    /// written there, and a retry would be refused the same way.
    Refused(String),
    /// Its credentials could not be had: what it names fails, so the
    /// invocation fails and the event is retried and kept.
    Unreachable(String),
}

impl Report {
    /// The report of an event that never entered its account-region.
    pub fn not_entered(mode: Mode, ctx: EventContext, named: Named<'_>, why: NotEntered) -> Report {
        match why {
            NotEntered::Refused(why) => {
                let mut report = Report::handled(Status::Refused, mode, ctx);
                if let Named::Instances { ids, unreadable } = named {
                    report.instances = ids
                        .iter()
                        .map(|id| {
                            let mut r = InstanceReport::new(id, Outcome::Refused, Idle::NotAllowed);
                            r.notify = true;
                            r
                        })
                        .collect();
                    report.unreadable = unreadable.to_vec();
                }
                report.reason = Some(why);
                report
            }
            NotEntered::Unreachable(why) => match named {
                Named::Instances { ids, unreadable } => {
                    // Not one instance can be looked at: each is named.
                    let mut report = Report::handled(Status::Handled, mode, ctx);
                    report.instances = ids
                        .iter()
                        .map(|id| InstanceReport::failed(id, why.clone()))
                        .collect();
                    report.unreadable = unreadable.to_vec();
                    if ids.is_empty() && unreadable.is_empty() {
                        report
                            .unreadable
                            .push(format!("the event could not be acted on: {why}"));
                    }
                    report
                }
                Named::Defaults(change) => {
                    let mut report = Report::handled(Status::DefaultsChanged, mode, ctx);
                    report.account_defaults = Some(DefaultsReport {
                        weakenings: change.weakenings(),
                        requested: change.clone(),
                        current: None,
                        action: DefaultsAction::None,
                        error: Some(why),
                    });
                    report
                }
                Named::Source(change) => {
                    let mut report = Report::handled(Status::Handled, mode, ctx);
                    report.sources = vec![SourceReport::failed_change(change, why)];
                    report
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Principal;
    use crate::source::{SourceKind, SourceOutcome};

    fn ctx() -> EventContext {
        EventContext {
            event_name: "RunInstances".into(),
            event_id: None,
            event_time: None,
            account: Some("999999999999".into()),
            region: "eu-west-1".into(),
            principal: Principal::default(),
            source_ip: None,
            user_agent: None,
            state: None,
        }
    }

    fn ids() -> Vec<String> {
        vec!["i-0a".into(), "i-0b".into()]
    }

    #[test]
    fn refused_instances_are_each_named_refused_and_told() {
        let ids = ids();
        let unreadable = vec!["item 2".to_string()];
        let r = Report::not_entered(
            Mode::Enforce,
            ctx(),
            Named::Instances {
                ids: &ids,
                unreadable: &unreadable,
            },
            NotEntered::Refused("not allowed".into()),
        );
        assert_eq!(r.status, Status::Refused);
        assert_eq!(r.reason.as_deref(), Some("not allowed"));
        assert_eq!(r.unreadable, unreadable);
        let got: Vec<_> = r
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), i.outcome, i.notify))
            .collect();
        assert_eq!(
            got,
            [
                ("i-0a", Outcome::Refused, true),
                ("i-0b", Outcome::Refused, true)
            ]
        );
    }

    #[test]
    fn unreachable_instances_each_fail_with_the_reason() {
        let ids = ids();
        let r = Report::not_entered(
            Mode::Notify,
            ctx(),
            Named::Instances {
                ids: &ids,
                unreadable: &[],
            },
            NotEntered::Unreachable("AccessDenied".into()),
        );
        assert_eq!(r.status, Status::Handled);
        assert!(r.reason.is_none());
        assert!(r.unreadable.is_empty());
        for i in &r.instances {
            assert_eq!(i.outcome, Outcome::Failed);
            assert_eq!(i.error.as_deref(), Some("AccessDenied"));
        }
        assert_eq!(r.instances.len(), 2);
    }

    #[test]
    fn an_unreachable_event_that_names_nothing_still_says_so() {
        let r = Report::not_entered(
            Mode::Notify,
            ctx(),
            Named::Instances {
                ids: &[],
                unreadable: &[],
            },
            NotEntered::Unreachable("throttled".into()),
        );
        assert_eq!(r.unreadable, ["the event could not be acted on: throttled"]);
    }

    #[test]
    fn an_unreachable_defaults_change_keeps_what_it_asked_and_its_weakenings() {
        let change = DefaultsChange {
            http_tokens: Some("optional".into()),
            ..DefaultsChange::default()
        };
        let r = Report::not_entered(
            Mode::Enforce,
            ctx(),
            Named::Defaults(&change),
            NotEntered::Unreachable("no role".into()),
        );
        assert_eq!(r.status, Status::DefaultsChanged);
        let d = r.account_defaults.expect("defaults reported");
        assert_eq!(d.requested, change);
        assert_eq!(d.weakenings, change.weakenings());
        assert!(!d.weakenings.is_empty());
        assert_eq!(d.action, DefaultsAction::None);
        assert_eq!(d.error.as_deref(), Some("no role"));
    }

    #[test]
    fn a_refused_defaults_change_or_source_says_why_and_names_nothing() {
        let group = SourceChange::Group {
            name: "web".into(),
            templates: Vec::new(),
            launch_configuration: None,
        };
        for named in [
            Named::Defaults(&DefaultsChange::default()),
            Named::Source(&group),
        ] {
            let r =
                Report::not_entered(Mode::Notify, ctx(), named, NotEntered::Refused("no".into()));
            assert_eq!(r.status, Status::Refused);
            assert_eq!(r.reason.as_deref(), Some("no"));
            assert!(r.instances.is_empty() && r.sources.is_empty() && r.account_defaults.is_none());
        }
    }

    #[test]
    fn an_unreachable_source_fails_named_as_its_change_names_it() {
        let template = SourceChange::Template {
            id: None,
            name: Some("web".into()),
            requested: None,
        };
        let r = Report::not_entered(
            Mode::Enforce,
            ctx(),
            Named::Source(&template),
            NotEntered::Unreachable("denied".into()),
        );
        assert_eq!(r.status, Status::Handled);
        let [s] = r.sources.as_slice() else {
            panic!("one source expected: {:?}", r.sources)
        };
        assert_eq!((s.kind, s.id.as_str()), (SourceKind::LaunchTemplate, "web"));
        assert_eq!(s.outcome, SourceOutcome::Failed);
        assert_eq!(s.error.as_deref(), Some("denied"));
        assert!(s.notify);
    }
}

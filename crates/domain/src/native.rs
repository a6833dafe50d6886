//! `imds-guard enforce-native`'s decision: whether a person may switch
//! AWS's own enforcement on in one account-region now (the account default
//! `HttpTokens=required` and `HttpTokensEnforced=enabled`), and what an undo
//! puts back. Pure: the flow reads the live defaults, the rollout's step
//! from an audit sweep and the recorded prior values, and carries it out.

use crate::memory::{Kind, Record};
use crate::policy::AccountDefaults;
use crate::rollout::{Status, Step};

/// The two account defaults this command changes, as EC2 names their
/// values (`no-preference` where none is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    pub http_tokens: String,
    pub http_tokens_enforced: String,
}

impl Values {
    pub fn of(d: &AccountDefaults) -> Values {
        Values {
            http_tokens: d
                .http_tokens
                .clone()
                .unwrap_or_else(|| "no-preference".into()),
            http_tokens_enforced: d
                .http_tokens_enforced
                .clone()
                .unwrap_or_else(|| "no-preference".into()),
        }
    }

    /// AWS's own enforcement, on.
    pub fn enforced() -> Values {
        Values {
            http_tokens: "required".into(),
            http_tokens_enforced: "enabled".into(),
        }
    }
}

impl std::fmt::Display for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HttpTokens={}, HttpTokensEnforced={}",
            self.http_tokens, self.http_tokens_enforced
        )
    }
}

/// What the person asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    pub account: String,
    pub region: String,
    pub undo: bool,
    /// `--force --reason R --confirm-account A`: the reason, and the
    /// account id typed again.
    pub force: Option<(String, String)>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Change the defaults `from` → `to`; `forced` names the blockers a
    /// person chose to override, with their reason.
    Change {
        from: Values,
        to: Values,
        forced: Option<String>,
    },
    /// Nothing to change: already so.
    Nothing(String),
    Refuse(String),
}

/// The decision, from the live defaults, the step an audit sweep just
/// computed (`None` for an undo, which needs none) and, for an undo, the
/// prior values recorded when enforcement was switched on.
pub fn decide(
    ask: &Ask,
    live: &AccountDefaults,
    step: Option<&Step>,
    recorded: Option<&Values>,
) -> Decision {
    if !live.settable() {
        return Decision::Refuse(format!(
            "a declarative policy manages the metadata defaults of {} in {}: only the organization's administrators can change them there (Organizations, EC2 declarative policy)",
            ask.account, ask.region
        ));
    }
    let now = Values::of(live);
    if ask.undo {
        if ask.force.is_some() {
            return Decision::Refuse(
                "--undo never takes --force: it puts back exactly what was recorded".into(),
            );
        }
        let Some(before) = recorded else {
            return Decision::Refuse(format!(
                "no record of enforce-native switching {} in {} on in the guard's memory: nothing to undo (set the defaults by hand: aws ec2 modify-instance-metadata-defaults)",
                ask.account, ask.region
            ));
        };
        if now == *before {
            return Decision::Nothing(format!("the defaults are already {before}"));
        }
        return Decision::Change {
            from: now,
            to: before.clone(),
            forced: None,
        };
    }
    let to = Values::enforced();
    if now == to {
        return Decision::Nothing(format!("AWS's enforcement is already on: {to}"));
    }
    let Some(step) = step else {
        return Decision::Refuse(
            "readiness was not re-checked: sweep this account-region first".into(),
        );
    };
    if step.status == Status::Ready || step.status == Status::Enforced {
        return Decision::Change {
            from: now,
            to,
            forced: None,
        };
    }
    let blockers: Vec<&str> = step.blockers.iter().map(|b| b.detail.as_str()).collect();
    match &ask.force {
        None => Decision::Refuse(format!(
            "{} in {} is not ready: {} (--force --reason ... --confirm-account {} overrides, and launches that ask for IMDSv1 then fail)",
            ask.account,
            ask.region,
            blockers.join("; "),
            ask.account
        )),
        Some((reason, _)) if reason.trim().is_empty() => {
            Decision::Refuse("--force needs a --reason a person reading the message will understand".into())
        }
        Some((_, typed)) if *typed != ask.account => Decision::Refuse(format!(
            "--confirm-account {typed:?} is not the account being changed ({}): type it again",
            ask.account
        )),
        Some((reason, _)) => Decision::Change {
            from: now,
            to,
            forced: Some(format!(
                "forced by a person ({}) over: {}",
                crate::validate::clean(reason, 500),
                blockers.join("; ")
            )),
        },
    }
}

/// The partition a switch's record lives in: its own prefix, so the
/// operators who may write it write nothing else (the table's policy).
pub fn partition(account: &str, region: &str) -> String {
    format!("native#{}", crate::memory::partition(account, region))
}

/// The record of the values before enforcement was switched on, and who
/// did it: what `--undo` puts back. One per switch, by its time, never
/// overwritten: the latest is what an undo restores, the earlier ones stay
/// as the history.
pub fn record(account: &str, region: &str, before: &Values, by: &str, now: u64) -> Record {
    let mut r = Record::new(
        Kind::Native,
        &partition(account, region),
        &format!("{now:020}"),
        None,
        now,
        std::time::Duration::ZERO,
    );
    r.data
        .insert("http_tokens".into(), before.http_tokens.clone());
    r.data.insert(
        "http_tokens_enforced".into(),
        before.http_tokens_enforced.clone(),
    );
    r.data.insert("by".into(), by.to_string());
    r
}

/// The prior values the latest switch recorded, who switched and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub values: Values,
    pub by: String,
    pub at: u64,
}

/// The latest record of a switch among `records`, or why an undo cannot
/// trust it. An unreadable latest record is refused, never skipped: an
/// older record holds what was there before an earlier switch, and putting
/// that back would not undo the latest one.
pub fn recorded(records: &[Record]) -> Result<Option<Recorded>, String> {
    let Some(latest) = records
        .iter()
        .filter(|r| r.is_kind(Kind::Native))
        .max_by_key(|r| r.at)
    else {
        return Ok(None);
    };
    let value = |key: &str| {
        latest.data.get(key).cloned().ok_or_else(|| {
            format!(
                "the latest recorded switch ({} at {}) has no {key}: an undo from an older record would not put back what that switch replaced; set the defaults by hand (aws ec2 modify-instance-metadata-defaults)",
                latest.sk,
                crate::time::iso8601(latest.at)
            )
        })
    };
    Ok(Some(Recorded {
        values: Values {
            http_tokens: value("http_tokens")?,
            http_tokens_enforced: value("http_tokens_enforced")?,
        },
        by: latest.data.get("by").cloned().unwrap_or_default(),
        at: latest.at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Blocker, Blocking};

    fn ask() -> Ask {
        Ask {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            ..Ask::default()
        }
    }

    fn step(status: Status) -> Step {
        Step {
            account: Some("111122223333".into()),
            region: "eu-west-1".into(),
            unit: None,
            status,
            next: String::new(),
            blockers: if status == Status::Blocked {
                vec![Blocking {
                    kind: Blocker::Instances,
                    count: 2,
                    detail: "2 instance(s) still at HttpTokens=optional".into(),
                }]
            } else {
                vec![]
            },
        }
    }

    fn live(tokens: Option<&str>, enforced: Option<&str>) -> AccountDefaults {
        AccountDefaults {
            http_tokens: tokens.map(str::to_string),
            http_tokens_enforced: enforced.map(str::to_string),
            ..AccountDefaults::default()
        }
    }

    #[test]
    fn ready_changes_blocked_refuses_force_needs_reason_and_the_account_again() {
        let d = live(Some("required"), None);
        assert_eq!(
            decide(&ask(), &d, Some(&step(Status::Ready)), None),
            Decision::Change {
                from: Values {
                    http_tokens: "required".into(),
                    http_tokens_enforced: "no-preference".into()
                },
                to: Values::enforced(),
                forced: None
            }
        );
        let Decision::Refuse(why) = decide(&ask(), &d, Some(&step(Status::Blocked)), None) else {
            panic!("blocked must refuse");
        };
        assert!(
            why.contains("2 instance(s) still at HttpTokens=optional"),
            "{why}"
        );
        let mut forced = ask();
        forced.force = Some(("".into(), "111122223333".into()));
        assert!(
            matches!(decide(&forced, &d, Some(&step(Status::Blocked)), None), Decision::Refuse(w) if w.contains("--reason"))
        );
        forced.force = Some(("change window 42".into(), "111122223334".into()));
        assert!(
            matches!(decide(&forced, &d, Some(&step(Status::Blocked)), None), Decision::Refuse(w) if w.contains("type it again"))
        );
        forced.force = Some(("change window 42".into(), "111122223333".into()));
        let Decision::Change {
            forced: Some(f), ..
        } = decide(&forced, &d, Some(&step(Status::Blocked)), None)
        else {
            panic!("forced with reason and account changes");
        };
        assert!(f.contains("change window 42") && f.contains("still at HttpTokens=optional"));
        assert!(matches!(
            decide(
                &ask(),
                &live(Some("required"), Some("enabled")),
                Some(&step(Status::Ready)),
                None
            ),
            Decision::Nothing(_)
        ));
    }

    #[test]
    fn declarative_policy_refuses_and_undo_puts_back_exactly_what_was_recorded() {
        let mut managed = live(Some("required"), None);
        managed.managed_by = Some("declarative-policy".into());
        assert!(
            matches!(decide(&ask(), &managed, Some(&step(Status::Ready)), None), Decision::Refuse(w) if w.contains("declarative policy"))
        );
        let mut undo = ask();
        undo.undo = true;
        let on = live(Some("required"), Some("enabled"));
        assert!(
            matches!(decide(&undo, &on, None, None), Decision::Refuse(w) if w.contains("nothing to undo"))
        );
        let before = Values::of(&live(Some("optional"), None));
        let r = record(
            "111122223333",
            "eu-west-1",
            &before,
            "arn:aws:iam::111122223333:role/Ops",
            100,
        );
        assert_eq!(r.pk, "native#111122223333#eu-west-1");
        assert_eq!(r.sk, "native#00000000000000000100");
        let earlier = record("111122223333", "eu-west-1", &Values::enforced(), "x", 50);
        // The latest unreadable: refused, not the older one restored.
        let mut torn = r.clone();
        torn.at = 200;
        torn.sk = "native#00000000000000000200".into();
        torn.data.remove("http_tokens_enforced");
        let refused = recorded(&[r.clone(), torn, earlier.clone()]).unwrap_err();
        assert!(
            refused.contains("native#00000000000000000200")
                && refused.contains("http_tokens_enforced"),
            "{refused}"
        );
        assert_eq!(recorded(&[]), Ok(None));
        let back = recorded(&[r, earlier]).unwrap().unwrap();
        assert_eq!(
            (back.by.as_str(), back.at),
            ("arn:aws:iam::111122223333:role/Ops", 100),
            "the latest"
        );
        let back = back.values;
        assert_eq!(
            decide(&undo, &on, None, Some(&back)),
            Decision::Change {
                from: Values::enforced(),
                to: Values {
                    http_tokens: "optional".into(),
                    http_tokens_enforced: "no-preference".into()
                },
                forced: None
            }
        );
        undo.force = Some(("x".into(), "111122223333".into()));
        assert!(matches!(
            decide(&undo, &on, None, Some(&back)),
            Decision::Refuse(_)
        ));
    }
}

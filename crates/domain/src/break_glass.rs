//! Break-glass: a time-boxed, audited exemption a person grants during an
//! incident, for one instance or for every instance launched from one
//! launch template (the template's own fixing, `FIX_SOURCES`, is not held:
//! untag it for that). A grant names who granted it, why, and until when. It
//! lives in the guard's memory, in the account-region's own grants partition
//! (`partition_of`: `breakglass#<account>#<region>`), never in a tag anyone can
//! write: only the guard's role, the migration role while `MigrationRoleArn`
//! is set, and the break-glass role (`BreakGlassRoleArn`, in the grants'
//! partitions only) may write the memory. The event path and the sweep both
//! honour a grant until it expires, then handle the instance as usual. Pure:
//! the flows read and write the records, and the policy decides with what is
//! read here.

use serde::Serialize;

use crate::memory::{Kind, Record};

/// The longest grant: an incident's worth, not a standing exemption (that
/// is what `EXEMPT_*` settings are for).
pub const MAX_GRANT_SECS: u64 = 7 * 24 * 3600;
/// A lapsed grant is kept this long, so the sweep can tell of its expiry.
pub const KEEP_AFTER_EXPIRY_SECS: u64 = 14 * 24 * 3600;
/// The tag EC2 puts on an instance launched from a launch template.
pub const TEMPLATE_TAG: &str = "aws:ec2launchtemplate:id";
/// The longest reason kept.
pub const MAX_REASON: usize = 256;
/// How far ahead of the reader's clock a grant may say it was made and
/// still be honoured: clocks differ by seconds, not minutes. A grant
/// stamped further ahead (a skewed laptop, or a record written by hand to
/// outlast its seven days) is not honoured.
pub const MAX_SKEW_SECS: u64 = 5 * 60;

const UNTIL: &str = "until";
const REASON: &str = "reason";
const BY: &str = "by";
const GRANTED_AT: &str = "granted_at";
const REVOKED: &str = "revoked";

/// One grant, as a person made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// An instance id (`i-...`) or a launch template id (`lt-...`).
    pub target: String,
    /// When it lapses, in seconds since the epoch.
    pub until: u64,
    pub reason: String,
    /// Who granted it (the caller's ARN, as STS named it).
    pub by: String,
    pub granted_at: u64,
    /// Ended early by `imds-guard break-glass revoke`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// Where a grant stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    Expired,
    Revoked,
    /// Says it was made in the future (beyond `MAX_SKEW_SECS`), or lasts
    /// past seven days from now: never honoured, and told.
    NotHonoured,
}

impl Grant {
    /// A new grant, checked: a target the guard can match, a reason, and an
    /// expiry in the future no further than `MAX_GRANT_SECS`.
    pub fn new(
        target: &str,
        until: u64,
        reason: &str,
        by: &str,
        now: u64,
    ) -> Result<Grant, String> {
        if !crate::validate::is_instance_id(target)
            && !crate::validate::is_launch_template_id(target)
        {
            return Err(format!(
                "{} is neither an instance id (i-...) nor a launch template id (lt-...)",
                crate::validate::clean(target, 64)
            ));
        }
        let reason = crate::validate::clean(reason.trim(), MAX_REASON);
        if reason.is_empty() {
            return Err("a break-glass grant needs a reason (--reason)".into());
        }
        if until <= now {
            return Err("a break-glass grant must end in the future".into());
        }
        if until - now > MAX_GRANT_SECS {
            return Err(format!(
                "a break-glass grant lasts at most {} hours; grant it again if the incident lasts longer",
                MAX_GRANT_SECS / 3600
            ));
        }
        Ok(Grant {
            target: target.to_string(),
            until,
            reason,
            by: crate::validate::clean(by, 256),
            granted_at: now,
            revoked: false,
        })
    }

    /// Where it stands by the reader's clock, whatever the record says of
    /// itself: nothing is honoured that was made more than `MAX_SKEW_SECS`
    /// ahead of `now`, or that lasts past `MAX_GRANT_SECS` from `now`.
    pub fn state(&self, now: u64) -> State {
        if self.revoked {
            State::Revoked
        } else if self.granted_at > now.saturating_add(MAX_SKEW_SECS)
            || self.until > now.saturating_add(MAX_GRANT_SECS)
        {
            State::NotHonoured
        } else if now < self.until {
            State::Active
        } else {
            State::Expired
        }
    }

    pub fn is_template(&self) -> bool {
        self.target.starts_with("lt-")
    }

    /// The record of it in the account-region's partition: kept until two
    /// weeks after it ends, so the sweep can tell of its expiry.
    pub fn record(&self, partition: &str) -> Record {
        let mut r = Record::new(
            Kind::BreakGlass,
            partition,
            &self.target,
            None,
            self.granted_at,
            std::time::Duration::ZERO,
        );
        r.expires_at = self.until + KEEP_AFTER_EXPIRY_SECS;
        r.data.insert(UNTIL.into(), self.until.to_string());
        r.data.insert(REASON.into(), self.reason.clone());
        r.data.insert(BY.into(), self.by.clone());
        r.data
            .insert(GRANTED_AT.into(), self.granted_at.to_string());
        if self.revoked {
            r.data.insert(REVOKED.into(), "true".into());
        }
        r
    }

    /// The grant a record holds; `None` for a record of another kind or
    /// one that does not hold a whole grant (never honoured).
    pub fn from_record(r: &Record) -> Option<Grant> {
        if !r.is_kind(Kind::BreakGlass) {
            return None;
        }
        let target = r.id();
        if !crate::validate::is_instance_id(target)
            && !crate::validate::is_launch_template_id(target)
        {
            return None;
        }
        let g = Grant {
            target: target.to_string(),
            until: r.data.get(UNTIL)?.parse().ok()?,
            // Anyone who may write the record chose these: cleaned as read
            // (terminal escapes, bidirectional overrides), wherever shown.
            reason: crate::validate::clean(r.data.get(REASON)?, MAX_REASON),
            by: crate::validate::clean(r.data.get(BY)?, 256),
            granted_at: r.data.get(GRANTED_AT)?.parse().ok()?,
            revoked: r.data.contains_key(REVOKED),
        };
        // A record that grants more than a grant may (written by hand, not
        // by the command line) is never honoured.
        (g.until >= g.granted_at && g.until - g.granted_at <= MAX_GRANT_SECS).then_some(g)
    }

    /// The same grant, ended now.
    pub fn revoke(mut self, now: u64) -> Grant {
        self.revoked = true;
        self.until = self.until.min(now);
        self
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "break-glass granted by {} until {}: {}",
            self.by,
            crate::finding::iso8601(self.until),
            self.reason
        )
    }
}

/// The grants in these records, ignoring any record that does not hold one.
pub fn grants(records: &[Record]) -> Vec<Grant> {
    records.iter().filter_map(Grant::from_record).collect()
}

/// A grant as a sweep's summary lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantView {
    pub target: String,
    pub state: State,
    pub until: String,
    pub by: String,
    pub reason: String,
}

impl GrantView {
    pub fn of(g: &Grant, now: u64) -> GrantView {
        GrantView {
            target: g.target.clone(),
            state: g.state(now),
            until: crate::finding::iso8601(g.until),
            by: g.by.clone(),
            reason: g.reason.clone(),
        }
    }
}

/// What a person did with a grant, as the message about it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Granted,
    Revoked,
}

/// The message a grant or a revocation sends, so every one reaches the
/// people the guard's notifications reach (and their filter policies:
/// `outcome` `break_glass_granted` / `break_glass_revoked`).
pub fn notification(
    act: Act,
    g: &Grant,
    account: &str,
    region: &str,
) -> crate::message::Notification {
    let (verb, outcome) = match act {
        Act::Granted => ("granted", "break_glass_granted"),
        Act::Revoked => ("revoked", "break_glass_revoked"),
    };
    let what = if g.is_template() {
        format!(
            "launch template {} (and the instances launched from it)",
            g.target
        )
    } else {
        format!("instance {}", g.target)
    };
    let subject = crate::message::subject(&format!(
        "imds-guard: break-glass {verb} for {} in {account}/{region}",
        g.target
    ));
    let body = match act {
        Act::Granted => format!(
            "Break-glass granted for {what} in account {account} region {region} by {} until {}: {}.\n\nThe guard leaves it as it is (and reports, does not undo, a change back to HttpTokens=optional) until then, and handles it as usual after. Revoke it early: imds-guard break-glass revoke --target {} --region {region}.",
            g.by,
            crate::finding::iso8601(g.until),
            g.reason,
            g.target
        ),
        Act::Revoked => format!(
            "Break-glass revoked for {what} in account {account} region {region} by {}: the guard handles it as usual from now on (granted until {} for: {}).",
            g.by,
            crate::finding::iso8601(g.until),
            g.reason
        ),
    };
    crate::message::Notification {
        subject,
        body,
        outcomes: vec![outcome.to_string()],
        attributes: vec![
            ("account".to_string(), account.to_string()),
            ("region".to_string(), region.to_string()),
        ],
    }
}

/// The partition of one account-region's grants, apart from everything
/// else the guard keeps there: the break-glass role may write this one only
/// (the table's policy, on `dynamodb:LeadingKeys`).
pub fn partition_of(partition: &str) -> String {
    format!("breakglass#{partition}")
}

impl Grant {
    /// The record that says this grant's end was told, beside the grant
    /// (never over it: a new grant for the same target must not be lost).
    pub fn end_told(&self, grants_partition: &str) -> Record {
        let mut r = Record::new(
            Kind::BreakGlass,
            grants_partition,
            &format!("{}#told#{}", self.target, self.granted_at),
            None,
            self.granted_at,
            std::time::Duration::ZERO,
        );
        r.expires_at = self.until + KEEP_AFTER_EXPIRY_SECS;
        r
    }

    /// Whether `records` hold the record that this grant's end was told.
    pub fn end_was_told(&self, records: &[Record]) -> bool {
        let id = format!("{}#told#{}", self.target, self.granted_at);
        records
            .iter()
            .any(|r| r.is_kind(Kind::BreakGlass) && r.id() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Observed;
    use crate::policy::grant_in_force as in_force;

    const NOW: u64 = 1_795_000_000;
    const HOUR: u64 = 3600;

    fn instance(id: &str, template: Option<&str>) -> Observed {
        Observed {
            instance_id: id.into(),
            tags: Some(
                template
                    .map(|t| vec![(TEMPLATE_TAG.to_string(), t.to_string())])
                    .unwrap_or_default(),
            ),
            ..Observed::default()
        }
    }

    fn grant(target: &str, hours: u64) -> Grant {
        Grant::new(
            target,
            NOW + hours * HOUR,
            "incident 42: legacy agent",
            "arn:aws:sts::111122223333:assumed-role/Responder/alice",
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn a_grant_needs_a_target_a_reason_and_an_expiry_within_a_week() {
        let by = "arn:aws:iam::111122223333:user/alice";
        assert!(Grant::new("i-0123456789abcdef0", NOW + HOUR, "why", by, NOW).is_ok());
        assert!(Grant::new("lt-0123456789abcdef0", NOW + HOUR, "why", by, NOW).is_ok());
        for (target, until, reason, want) in [
            ("i-xyz", NOW + HOUR, "why", "neither an instance id"),
            ("sg-0123456789abcdef0", NOW + HOUR, "why", "neither"),
            ("i-0123456789abcdef0", NOW + HOUR, "  ", "needs a reason"),
            ("i-0123456789abcdef0", NOW, "why", "in the future"),
            (
                "i-0123456789abcdef0",
                NOW + MAX_GRANT_SECS + 1,
                "why",
                "at most 168 hours",
            ),
        ] {
            let e = Grant::new(target, until, reason, by, NOW).unwrap_err();
            assert!(e.contains(want), "{target} {until} {reason:?}: {e}");
        }
    }

    #[test]
    fn a_grant_survives_its_record_and_a_partial_record_is_never_honoured() {
        let g = grant("i-0123456789abcdef0", 4);
        let r = g.record("111122223333#eu-west-1");
        assert_eq!(r.sk, "breakglass#i-0123456789abcdef0");
        assert_eq!(r.expires_at, g.until + KEEP_AFTER_EXPIRY_SECS);
        assert_eq!(Grant::from_record(&r), Some(g.clone()));
        for key in [UNTIL, REASON, BY, GRANTED_AT] {
            let mut partial = r.clone();
            partial.data.remove(key);
            assert_eq!(Grant::from_record(&partial), None, "without {key}");
        }
        let mut other = r.clone();
        other.sk = "exempt#i-0123456789abcdef0".into();
        assert_eq!(Grant::from_record(&other), None);
        let revoked = g.revoke(NOW + 60);
        assert_eq!(
            Grant::from_record(&revoked.record("p")).map(|g| g.state(NOW + 61)),
            Some(State::Revoked)
        );
    }

    #[test]
    fn a_grant_covers_its_instance_or_its_templates_instances_until_it_ends() {
        let own = grant("i-0123456789abcdef0", 4);
        let template = grant("lt-0123456789abcdef0", 8);
        let grants = vec![own.clone(), template.clone()];
        let a = instance("i-0123456789abcdef0", Some("lt-0123456789abcdef0"));
        let b = instance("i-0fedcba9876543210", Some("lt-0123456789abcdef0"));
        let c = instance("i-0aaaaaaaaaaaaaaaa", Some("lt-0bbbbbbbbbbbbbbbb"));
        // Its own grant first, though the template's lasts longer.
        assert_eq!(in_force(&grants, &a, NOW), Some(&own));
        assert_eq!(in_force(&grants, &b, NOW), Some(&template));
        assert_eq!(in_force(&grants, &c, NOW), None);
        // Once its own has ended, the template's still covers it.
        assert_eq!(in_force(&grants, &a, NOW + 5 * HOUR), Some(&template));
        assert_eq!(in_force(&grants, &a, NOW + 8 * HOUR), None);
        // A revoked grant covers nothing.
        let revoked = vec![own.revoke(NOW)];
        assert_eq!(in_force(&revoked, &a, NOW), None);
    }

    #[test]
    fn a_grant_and_a_revocation_each_send_a_message_naming_who_why_and_until_when() {
        let g = grant("lt-0123456789abcdef0", 4);
        let n = notification(Act::Granted, &g, "111122223333", "eu-west-1");
        assert_eq!(
            n.subject,
            "imds-guard: break-glass granted for lt-0123456789abcdef0 in 111122223333/eu-west-1"
        );
        assert!(n
            .body
            .contains("launch template lt-0123456789abcdef0 (and the instances launched from it)"));
        assert!(n
            .body
            .contains("by arn:aws:sts::111122223333:assumed-role/Responder/alice until "));
        assert!(n.body.contains("incident 42: legacy agent"));
        assert_eq!(n.outcomes, ["break_glass_granted"]);
        let n = notification(Act::Revoked, &g.revoke(NOW), "111122223333", "eu-west-1");
        assert_eq!(n.outcomes, ["break_glass_revoked"]);
        assert!(n.body.contains("handles it as usual from now on"));
    }

    #[test]
    fn an_end_is_told_beside_the_grant_and_a_grant_too_long_is_never_honoured() {
        let g = grant("i-0123456789abcdef0", 4);
        let partition = partition_of("111122223333#eu-west-1");
        assert_eq!(partition, "breakglass#111122223333#eu-west-1");
        let told = g.end_told(&partition);
        assert_ne!(told.sk, g.record(&partition).sk, "never over the grant");
        assert_eq!(Grant::from_record(&told), None, "a marker is no grant");
        assert!(g.end_was_told(&[told]));
        // A new grant for the same target is another grant: not told.
        let mut again = g.clone();
        again.granted_at += 60;
        assert!(!again.end_was_told(&[g.end_told(&partition)]));
        let mut r = g.record(&partition);
        r.data.insert(
            UNTIL.into(),
            (g.granted_at + MAX_GRANT_SECS + 1).to_string(),
        );
        assert_eq!(Grant::from_record(&r), None);
    }

    #[test]
    fn a_grant_is_bounded_by_the_readers_clock_not_by_what_it_says() {
        let i = instance("i-0aaaaaaaaaaaaaaa1", None);
        let at = |granted_at: u64, until: u64| Grant {
            target: i.instance_id.clone(),
            until,
            reason: "incident 42".into(),
            by: "arn:aws:sts::111122223333:assumed-role/oncall/alice".into(),
            granted_at,
            revoked: false,
        };
        // Clocks four minutes apart, either way: honoured.
        for skew in [NOW - 4 * 60, NOW + 4 * 60] {
            let g = at(skew, skew + HOUR);
            assert_eq!(g.state(NOW), State::Active, "granted at {skew}");
            assert!(in_force(std::slice::from_ref(&g), &i, NOW).is_some());
        }
        // Ten minutes ahead: a skewed writer, or a record written to
        // outlast its seven days. Not honoured, whatever it lasts.
        let ahead = at(NOW + 10 * 60, NOW + 10 * 60 + HOUR);
        assert_eq!(ahead.state(NOW), State::NotHonoured);
        assert!(in_force(std::slice::from_ref(&ahead), &i, NOW).is_none());
        // A week ahead and seven days long: it would have stood for two.
        let far = at(NOW + 7 * 24 * HOUR, NOW + 14 * 24 * HOUR);
        assert!(Grant::from_record(&far.record("p")).is_some());
        assert_eq!(far.state(NOW), State::NotHonoured);
        // Once the reader's clock reaches it, it is honoured as any other.
        assert_eq!(ahead.state(NOW + 10 * 60), State::Active);
    }

    #[test]
    fn a_grants_words_are_cleaned_as_they_are_read() {
        let g = Grant::new("i-0aaaaaaaaaaaaaaa1", NOW + HOUR, "ok", "me", NOW).unwrap();
        let mut r = g.record("p");
        r.data.insert(
            REASON.into(),
            "fine\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}txet".into(),
        );
        r.data.insert(BY.into(), "alice\u{1b}[31m".into());
        let read = Grant::from_record(&r).unwrap();
        assert!(!read.reason.contains('\u{1b}') && !read.reason.contains('\u{202e}'));
        assert!(!read.by.contains('\u{1b}'), "{:?}", read.by);
        assert!(read.reason.starts_with("fine"), "{:?}", read.reason);
    }
}

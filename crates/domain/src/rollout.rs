//! The way out: for each account-region, whether AWS's own enforcement
//! (`HttpTokensEnforced`) can go on there now without breaking anything,
//! with the exact next step, or what blocks it, named; and the same rolled
//! up per organizational unit. A sweep's JSON and HTML reports carry it
//! (`native_enforcement`), `imds-guard plan` prints it, `enforce-native`
//! re-checks it live before it changes anything.
//!
//! Stricter than the sweep's readiness line: absence of evidence is never
//! proof, so IMDSv1 use that was not measured (the `MetadataNoToken` check
//! or the last mile's CloudTrail lookup off, or not finished) blocks.

use serde::{Deserialize, Serialize};

use crate::policy::AccountDefaults;

/// What one account-region's sweep saw, as the rollout needs it (built by
/// the report from its region; plain data so this module knows no report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub account: Option<String>,
    pub region: String,
    /// The account's nearest organizational unit, when the sweep read it.
    pub unit: Option<String>,
    /// Every page was listed and every instance ended in an outcome.
    pub complete: bool,
    /// Instances left at `optional` (flagged, held back, failed).
    pub left_optional: u64,
    /// Of those, by the source that launched them (label, instances); the
    /// rest were launched outside any template or group the sweep read.
    pub by_source: Vec<(String, u64)>,
    /// Sources that would launch at `optional` (labels), exempt ones too:
    /// under `HttpTokensEnforced` their launches fail all the same.
    pub sources_optional: Vec<String>,
    /// The exemptions the guard is configured with (`EXEMPT_*`), each
    /// named: AWS's enforcement has none, so a launch one would exempt
    /// fails once it is on, whether or not such an instance runs today.
    pub exemptions_configured: Vec<String>,
    pub sources_read: bool,
    /// Instances left at `optional` because an exemption applies.
    pub exempt: u64,
    /// EC2 managed instances left at `optional` by their service.
    pub managed: u64,
    /// Break-glass grants in force.
    pub grants: Vec<String>,
    /// Instances at `optional` that answered IMDSv1 calls (`MetadataNoToken`).
    pub v1_in_use: u64,
    /// Instances where software used IMDSv1-delivered credentials, with the
    /// software (`instance: agent, agent`).
    pub v1_credentials: Vec<String>,
    /// Instances switched to `required` that refuse IMDSv1 calls since.
    pub refusing: u64,
    /// What the sweep did not measure of IMDSv1 use, each said (`None`:
    /// measured): `MetadataNoToken` for every instance at `optional`
    /// (`CHECK_METADATA_NO_TOKEN`), and CloudTrail asked about each
    /// (`LOOKUP_IMDSV1_CALLERS`).
    pub metric_gap: Option<String>,
    pub credentials_gap: Option<String>,
    pub defaults: Option<AccountDefaults>,
}

/// Where an account-region stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Nothing stands in the way: the next step switches it on.
    Ready,
    /// AWS's switch is already on and nothing is left at `optional`.
    Enforced,
    Blocked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Enforced => "enforced",
            Status::Blocked => "blocked",
        }
    }
}

/// What blocks one account-region, one kind at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blocker {
    /// The sweep did not finish: nothing can be said.
    Incomplete,
    /// A declarative policy manages the defaults: only it can change them.
    DeclarativePolicy,
    /// Workloads switched to `required` refuse IMDSv1 calls since: broken now.
    Refusing,
    /// Software used IMDSv1-delivered credentials (the last mile).
    Imdsv1Credentials,
    /// Instances at `optional` answered IMDSv1 calls (`MetadataNoToken`).
    Imdsv1InUse,
    /// IMDSv1 use was not measured, or not to the end.
    NotMeasured,
    /// Instances still at `optional` (by source).
    Instances,
    /// Exempt instances at `optional`: enforcement has no exemptions.
    Exemptions,
    /// Break-glass grants in force.
    Grants,
    /// EC2 managed instances set to `optional` by their service.
    Managed,
    /// Launch templates and groups that would launch at `optional`.
    Sources,
    /// The account default does not require tokens (or was not read).
    AccountDefault,
}

/// One blocker, with what it counts and names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocking {
    pub kind: Blocker,
    #[serde(default)]
    pub count: u64,
    /// What it is, in a sentence, naming the instances' sources, the
    /// software or the setting (left out in a compact step).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One account-region of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub status: Status,
    /// The exact next step: the command for a ready one, the first
    /// blocker's fix for a blocked one (left out where the record must be
    /// small: a fan-out shard's, `compact`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocking>,
}

/// Shown of a list in one sentence.
const NAMED: usize = 5;

fn named(items: &[String]) -> String {
    let more = items.len().saturating_sub(NAMED);
    format!(
        "{}{}",
        items[..items.len().min(NAMED)].join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// The command that switches AWS's enforcement on here (run by a person,
/// with their own credentials: the guard's roles cannot).
pub fn command(account: Option<&str>, region: &str) -> String {
    format!(
        "imds-guard enforce-native --account {} --region {region}",
        account.unwrap_or("<account id>")
    )
}

/// Where one account-region stands, and why.
pub fn step(f: &Facts) -> Step {
    let mut b: Vec<Blocking> = Vec::new();
    let mut add = |kind, count, detail: String| {
        b.push(Blocking {
            kind,
            count,
            detail,
        })
    };
    if !f.complete {
        add(
            Blocker::Incomplete,
            0,
            "the sweep did not finish here: sweep it again to the end".into(),
        );
    }
    if let Some(d) = &f.defaults {
        if !d.settable() {
            add(
                Blocker::DeclarativePolicy,
                0,
                "a declarative policy manages this account's metadata defaults: HttpTokensEnforced can be set only by the organization's administrators there".into(),
            );
        }
    }
    if f.refusing > 0 {
        add(
            Blocker::Refusing,
            f.refusing,
            format!(
                "{} instance(s) switched to HttpTokens=required refuse IMDSv1 calls since (MetadataNoTokenRejected): fix those workloads first",
                f.refusing
            ),
        );
    }
    if !f.v1_credentials.is_empty() {
        add(
            Blocker::Imdsv1Credentials,
            f.v1_credentials.len() as u64,
            format!(
                "software used IMDSv1-delivered credentials on {} instance(s): {}",
                f.v1_credentials.len(),
                named(&f.v1_credentials)
            ),
        );
    }
    if f.v1_in_use > 0 {
        add(
            Blocker::Imdsv1InUse,
            f.v1_in_use,
            format!(
                "{} instance(s) at HttpTokens=optional answered IMDSv1 calls in the lookback (MetadataNoToken)",
                f.v1_in_use
            ),
        );
    }
    let unmeasured: Vec<&str> = [&f.metric_gap, &f.credentials_gap]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if !unmeasured.is_empty() {
        add(
            Blocker::NotMeasured,
            0,
            format!("IMDSv1 use not measured: {}", unmeasured.join("; ")),
        );
    }
    let attributed: u64 = f.by_source.iter().map(|(_, n)| n).sum();
    if f.left_optional > 0 {
        let mut parts: Vec<String> = f
            .by_source
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} from {s}"))
            .collect();
        let outside = f.left_optional.saturating_sub(attributed);
        if outside > 0 {
            parts.push(format!("{outside} launched outside any template or group"));
        }
        add(
            Blocker::Instances,
            f.left_optional,
            format!(
                "{} instance(s) still at HttpTokens=optional: {}",
                f.left_optional,
                named(&parts)
            ),
        );
    }
    if f.exempt > 0 {
        add(
            Blocker::Exemptions,
            f.exempt,
            format!(
                "{} exempt instance(s) at HttpTokens=optional: HttpTokensEnforced has no exemptions, so end each exemption (or the workload) first",
                f.exempt
            ),
        );
    } else if !f.exemptions_configured.is_empty() {
        add(
            Blocker::Exemptions,
            0,
            format!(
                "exemptions are configured ({}): HttpTokensEnforced has none, so a launch one would exempt fails once it is on; remove them first",
                named(&f.exemptions_configured)
            ),
        );
    }
    if !f.grants.is_empty() {
        add(
            Blocker::Grants,
            f.grants.len() as u64,
            format!("break-glass grant(s) in force: {}", named(&f.grants)),
        );
    }
    if f.managed > 0 {
        add(
            Blocker::Managed,
            f.managed,
            format!(
                "{} managed instance(s) at HttpTokens=optional, set so by the service that operates each: change it in that service first",
                f.managed
            ),
        );
    }
    if !f.sources_optional.is_empty() {
        add(
            Blocker::Sources,
            f.sources_optional.len() as u64,
            format!(
                "{} source(s) would launch at HttpTokens=optional, and under HttpTokensEnforced those launches fail: {}",
                f.sources_optional.len(),
                named(&f.sources_optional)
            ),
        );
    } else if !f.sources_read {
        add(
            Blocker::Sources,
            0,
            "the launch templates and Auto Scaling groups could not be read".into(),
        );
    }
    match &f.defaults {
        None => add(
            Blocker::AccountDefault,
            0,
            "the account defaults could not be read (ec2:GetInstanceMetadataDefaults)".into(),
        ),
        Some(d) if !d.requires_tokens() => add(
            Blocker::AccountDefault,
            0,
            format!(
                "the account default HttpTokens is {}: set it to required first (SET_ACCOUNT_DEFAULT, or aws ec2 modify-instance-metadata-defaults --http-tokens required)",
                d.http_tokens.as_deref().unwrap_or("unset")
            ),
        ),
        _ => {}
    }
    b.sort_by_key(|x| x.kind);
    let enforced = f.defaults.as_ref().is_some_and(AccountDefaults::enforced);
    let (status, next) = match (b.first(), enforced) {
        (None, true) => (
            Status::Enforced,
            "nothing: HttpTokensEnforced is on here".to_string(),
        ),
        (None, false) => (Status::Ready, command(f.account.as_deref(), &f.region)),
        (Some(first), _) => (Status::Blocked, first.detail.clone()),
    };
    Step {
        account: f.account.clone(),
        region: f.region.clone(),
        unit: f.unit.clone(),
        status,
        next,
        blockers: b,
    }
}

/// An organizational unit (or, where units are not known, an account)
/// rolled up: ready as a whole only when every account-region in it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPlan {
    /// The unit's id (`ou-...`, `r-...`), else the account's.
    pub unit: String,
    pub account_regions: u64,
    pub ready: u64,
    pub enforced: u64,
    pub blocked: u64,
    pub status: Status,
    /// Each blocker kind in it, with how many account-regions it blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<(Blocker, u64)>,
}

/// The plan: every account-region, ordered for a reader (ready first, then
/// blocked by the fewest blockers, then enforced), and the units rolled up
/// (whole units that are ready first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(default)]
    pub units: Vec<UnitPlan>,
    #[serde(default)]
    pub account_regions: Vec<Step>,
    /// Account-regions beyond those listed (the list is bounded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Account-regions a rollout lists at most; every one is counted in its unit.
pub const MAX_LISTED: usize = 2000;

fn unit_of(s: &Step) -> String {
    s.unit
        .clone()
        .or_else(|| s.account.clone())
        .unwrap_or_else(|| "this account".into())
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Ready => 0,
        Status::Blocked => 1,
        Status::Enforced => 2,
    }
}

impl Rollout {
    /// The plan of `steps`, rolled up and ordered.
    pub fn of(steps: Vec<Step>) -> Rollout {
        let mut units: std::collections::BTreeMap<String, UnitPlan> = Default::default();
        for s in &steps {
            let u = units.entry(unit_of(s)).or_insert_with(|| UnitPlan {
                unit: unit_of(s),
                account_regions: 0,
                ready: 0,
                enforced: 0,
                blocked: 0,
                status: Status::Enforced,
                blockers: Vec::new(),
            });
            u.account_regions += 1;
            match s.status {
                Status::Ready => u.ready += 1,
                Status::Enforced => u.enforced += 1,
                Status::Blocked => u.blocked += 1,
            }
            for b in &s.blockers {
                match u.blockers.iter_mut().find(|(k, _)| *k == b.kind) {
                    Some((_, n)) => *n += 1,
                    None => u.blockers.push((b.kind, 1)),
                }
            }
        }
        let mut units: Vec<UnitPlan> = units
            .into_values()
            .map(|mut u| {
                u.status = if u.blocked > 0 {
                    Status::Blocked
                } else if u.ready > 0 {
                    Status::Ready
                } else {
                    Status::Enforced
                };
                u.blockers.sort();
                u
            })
            .collect();
        // Whole units ready first, then the blocked with the least left.
        units.sort_by(|a, b| {
            rank(a.status)
                .cmp(&rank(b.status))
                .then(a.blocked.cmp(&b.blocked))
                .then(a.unit.cmp(&b.unit))
        });
        let order: std::collections::HashMap<&str, usize> = units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.unit.as_str(), i))
            .collect();
        let mut steps = steps;
        // Keyed once per step: an organization's thousands sort fast.
        steps.sort_by_cached_key(|s| {
            (
                order
                    .get(unit_of(s).as_str())
                    .copied()
                    .unwrap_or(usize::MAX),
                rank(s.status),
                s.blockers.len(),
                s.account.clone(),
                s.region.clone(),
            )
        });
        let omitted = steps.len().saturating_sub(MAX_LISTED) as u64;
        steps.truncate(MAX_LISTED);
        Rollout {
            units,
            account_regions: steps,
            omitted,
        }
    }

    /// The same plan without its sentences (each step's status and
    /// blocker kinds and counts): what a fan-out shard records, within its
    /// record's size, for the summary to roll up.
    pub fn compact(&self) -> Rollout {
        Rollout {
            units: Vec::new(),
            account_regions: self
                .account_regions
                .iter()
                .map(|s| Step {
                    next: String::new(),
                    blockers: s
                        .blockers
                        .iter()
                        .map(|b| Blocking {
                            detail: String::new(),
                            ..b.clone()
                        })
                        .collect(),
                    ..s.clone()
                })
                .collect(),
            omitted: self.omitted,
        }
    }

    /// Account-regions ready now.
    pub fn ready(&self) -> u64 {
        self.units.iter().map(|u| u.ready).sum()
    }

    /// The plan as a table for a terminal: one row per account-region,
    /// whole units that are ready first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let total: u64 = self.units.iter().map(|u| u.account_regions).sum();
        let whole = self
            .units
            .iter()
            .filter(|u| u.status == Status::Ready)
            .count();
        out.push_str(&format!(
            "native enforcement: {} of {total} account-region(s) ready, {} enforced; {whole} whole unit(s) ready\n",
            self.ready(),
            self.units.iter().map(|u| u.enforced).sum::<u64>()
        ));
        let rows: Vec<[String; 5]> = self
            .account_regions
            .iter()
            .map(|s| {
                [
                    unit_of(s),
                    s.account.clone().unwrap_or_else(|| "-".into()),
                    s.region.clone(),
                    s.status.as_str().to_string(),
                    crate::validate::clean(&s.next, 400),
                ]
            })
            .collect();
        let head = ["UNIT", "ACCOUNT", "REGION", "STATUS", "NEXT STEP"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r.iter()).take(4) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i < 4 {
                    l.push_str(&format!("{c:<w$}  ", w = width[i]));
                } else {
                    l.push_str(c);
                }
            }
            l.push('\n');
            l
        };
        out.push_str(&line(head));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
        if self.omitted > 0 {
            out.push_str(&format!(
                "... and {} more account-region(s), counted in their units\n",
                self.omitted
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_facts(account: &str, region: &str) -> Facts {
        Facts {
            account: Some(account.into()),
            region: region.into(),
            complete: true,
            sources_read: true,
            metric_gap: None,
            credentials_gap: None,
            defaults: Some(AccountDefaults {
                http_tokens: Some("required".into()),
                ..AccountDefaults::default()
            }),
            ..Facts::default()
        }
    }

    #[test]
    fn ready_only_when_nothing_is_left_and_use_was_measured() {
        let s = step(&ready_facts("111122223333", "eu-west-1"));
        assert_eq!(s.status, Status::Ready);
        assert_eq!(
            s.next,
            "imds-guard enforce-native --account 111122223333 --region eu-west-1"
        );
        assert!(s.blockers.is_empty());

        let mut f = ready_facts("111122223333", "eu-west-1");
        f.credentials_gap = Some("LOOKUP_IMDSV1_CALLERS is off".into());
        let s = step(&f);
        assert_eq!(s.status, Status::Blocked);
        assert_eq!(s.blockers[0].kind, Blocker::NotMeasured);
        assert_eq!(
            s.next,
            "IMDSv1 use not measured: LOOKUP_IMDSV1_CALLERS is off"
        );
    }

    #[test]
    fn each_blocker_is_named_with_what_it_counts() {
        let mut f = ready_facts("111122223333", "eu-west-1");
        f.left_optional = 5;
        f.by_source = vec![("launch-template lt-1 (web)".into(), 3)];
        f.exempt = 1;
        f.grants = vec!["i-0abc until 2026-12-04T00:00:00Z".into()];
        f.sources_optional = vec!["launch-template lt-1 (web)".into()];
        f.v1_credentials = vec!["i-0abc: aws-cli/1.18".into()];
        f.v1_in_use = 2;
        f.defaults = Some(AccountDefaults {
            http_tokens: Some("optional".into()),
            ..AccountDefaults::default()
        });
        let s = step(&f);
        assert_eq!(s.status, Status::Blocked);
        let kinds: Vec<Blocker> = s.blockers.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Blocker::Imdsv1Credentials,
                Blocker::Imdsv1InUse,
                Blocker::Instances,
                Blocker::Exemptions,
                Blocker::Grants,
                Blocker::Sources,
                Blocker::AccountDefault
            ]
        );
        let instances = &s.blockers[2];
        assert_eq!(instances.count, 5);
        assert!(
            instances
                .detail
                .contains("3 from launch-template lt-1 (web)")
                && instances
                    .detail
                    .contains("2 launched outside any template or group"),
            "{}",
            instances.detail
        );
        assert!(s.next.contains("aws-cli/1.18"), "the worst blocker first");
    }

    #[test]
    fn exemptions_configured_block_even_with_no_exempt_instance_running() {
        let mut f = ready_facts("111122223333", "eu-west-1");
        f.exemptions_configured = vec!["EXEMPT_PRINCIPAL_ARNS (2 glob(s))".into()];
        let s = step(&f);
        assert_eq!(s.status, Status::Blocked);
        assert_eq!(s.blockers[0].kind, Blocker::Exemptions);
        assert!(
            s.next.contains("EXEMPT_PRINCIPAL_ARNS (2 glob(s))"),
            "{}",
            s.next
        );
        // A compact step keeps what the roll-up needs, and nothing else.
        let r = Rollout::of(vec![s]);
        let c = r.compact();
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("EXEMPT_PRINCIPAL_ARNS") && !json.contains("\"next\""),
            "{json}"
        );
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(Rollout::of(back.account_regions).units, r.units);
    }

    #[test]
    fn enforced_declarative_and_unread_defaults() {
        let mut f = ready_facts("111122223333", "eu-west-1");
        f.defaults.as_mut().unwrap().http_tokens_enforced = Some("enabled".into());
        assert_eq!(step(&f).status, Status::Enforced);
        f.defaults.as_mut().unwrap().managed_by = Some("declarative-policy".into());
        f.defaults.as_mut().unwrap().http_tokens_enforced = None;
        let s = step(&f);
        assert_eq!(s.blockers[0].kind, Blocker::DeclarativePolicy);
        f.defaults = None;
        assert_eq!(step(&f).blockers[0].kind, Blocker::AccountDefault);
        let mut f = ready_facts("111122223333", "eu-west-1");
        f.complete = false;
        assert_eq!(step(&f).blockers[0].kind, Blocker::Incomplete);
    }

    #[test]
    fn whole_units_ready_come_first() {
        let mut steps = Vec::new();
        for (account, unit, ready) in [
            ("111111111111", "ou-b", false),
            ("222222222222", "ou-b", true),
            ("333333333333", "ou-a", true),
            ("444444444444", "ou-a", true),
            ("555555555555", "ou-c", true),
        ] {
            let mut f = ready_facts(account, "eu-west-1");
            f.unit = Some(unit.into());
            f.left_optional = if ready { 0 } else { 1 };
            steps.push(step(&f));
        }
        let mut f = ready_facts("666666666666", "eu-west-1");
        f.unit = Some("ou-c".into());
        f.defaults.as_mut().unwrap().http_tokens_enforced = Some("enabled".into());
        steps.push(step(&f));
        let r = Rollout::of(steps);
        let units: Vec<(&str, Status)> = r
            .units
            .iter()
            .map(|u| (u.unit.as_str(), u.status))
            .collect();
        assert_eq!(
            units,
            vec![
                ("ou-a", Status::Ready),
                ("ou-c", Status::Ready),
                ("ou-b", Status::Blocked)
            ]
        );
        assert_eq!(r.units[2].blockers, vec![(Blocker::Instances, 1)]);
        let order: Vec<&str> = r
            .account_regions
            .iter()
            .map(|s| s.account.as_deref().unwrap())
            .collect();
        assert_eq!(
            order,
            vec![
                "333333333333",
                "444444444444",
                "555555555555",
                "666666666666",
                "222222222222",
                "111111111111"
            ]
        );
        assert_eq!(r.ready(), 4);
        let table = r.table();
        let rows: Vec<&str> = table.lines().collect();
        assert!(
            rows[0].contains("4 of 6 account-region(s) ready, 1 enforced; 2 whole unit(s) ready"),
            "{table}"
        );
        assert!(rows[1].starts_with("UNIT"));
        assert!(
            rows[2].starts_with("ou-a") && rows[2].contains("ready"),
            "{table}"
        );
        assert!(
            rows[7].starts_with("ou-b") && rows[7].contains("blocked"),
            "{table}"
        );
        // Round trip: the org summary reads each shard's plan back.
        let back: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}

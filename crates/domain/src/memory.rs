//! The guard's memory, as records (docs/design.md): what each kind of record
//! says, where it lives and how long it lasts. Pure: the DynamoDB adapter
//! stores and reads these, and the flows decide with them.
//!
//! Most records of one account and region share a partition
//! (`pk = <account>#<region>`), so a sweep reads what it needs of that
//! account-region with one query per kind (`sk` begins with `<kind>#`). A few
//! kinds have partitions of their own: break-glass grants in
//! `breakglass#<account>#<region>` (`break_glass::partition_of`, the only one the
//! break-glass role may write), accounts' units in `org` (`ORG_PARTITION`), a
//! fan-out run's shards in `run#<execution>` (`Record::run_partition`), and the
//! exemptions waiting for CloudTrail in `exemption-check`
//! (`confirm::CHECK_PARTITION`).

use std::collections::BTreeMap;
use std::time::Duration;

const DAY: u64 = 24 * 3600;

/// What a record remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// News of this instance's launch was claimed for telling by one event
    /// (`event_id`), and, once told, marked so (`told`): a second event
    /// naming the same launch is not news, and a redelivery of the one that
    /// told is not either; a retry of the one that claimed but could not
    /// tell tells.
    Noticed,
    /// The guard set `HttpTokens=required` on this instance, at `at`.
    Remediated,
    /// The instance was launched by an exempt principal: the glob that
    /// matched, as the launch event showed (`data["glob"]`). Only the guard
    /// writes these; a sweep, which cannot know who launched an instance,
    /// honours them.
    Exempt,
    /// A message this event could not publish (`data`: the message), kept
    /// for the event's retry to publish, and marked `told` once it has.
    Notice,
    /// One fan-out shard's end (`data`: its report, or why the engine gave
    /// up), in the run's partition (`run#<execution>`), for the summary.
    Shard,
    /// The Security Hub finding the guard last filed for this instance
    /// (`data["status"]`: PASSED, WARNING, FAILED or ARCHIVED): what a sweep
    /// compares its decisions with, so it files only changes and settles the
    /// findings of instances it no longer lists.
    Finding,
    /// A person's break-glass grant for this instance or launch template
    /// (`break_glass::Grant`: until, reason, who), in the account-region's
    /// grants partition (`break_glass::partition_of`), kept two weeks past its
    /// end so the sweep can tell of it; beside it, once told, a record that
    /// its end was (`<target>#told#<granted_at>`).
    BreakGlass,
    /// Since when the guard has enforced in this account-region (`at` of
    /// the first enforcing sweep; `data["mode"]`): an instance launched
    /// after it that a sweep had to fix is an event that never arrived.
    EventsSince,
    /// The organizational units an account is in (`data["units"]`, nearest
    /// first), as the sweep read them from the organization, in the
    /// partition `org`: how the event path knows an account's mode when it
    /// is set per unit.
    Units,
    /// The self-check's last result in this account-region
    /// (`probe::RegionCheck`, as JSON, under `latest`): what
    /// `imds-guard doctor` reads.
    SelfCheck,
    /// A principal exemption a launch event claimed, waiting for CloudTrail
    /// to confirm it (`confirm::Waiting`), in the partition
    /// `exemption-check`: what the check asks CloudTrail about.
    Unconfirmed,
    /// Since when (`at`) a sweep has held this instance back for its
    /// IMDSv1 use, and when (`data["told"]`) it was told the switch is a day
    /// off (`NO_TOKEN_HOLD_DAYS`).
    HeldBack,
    /// When (`at`) the sweep last asked CloudTrail who used this instance's
    /// IMDSv1-delivered credentials, and what it saw (`data["seen"]`:
    /// `v1_callers::Seen` as JSON): the next run asks the instances asked
    /// longest ago first, and reports what it did not ask again.
    Callers,
    /// The account defaults before a person switched AWS's enforcement on
    /// with `imds-guard enforce-native` (`native::record`), in the
    /// partition `native#<account>#<region>`: what `--undo` puts back.
    Native,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Noticed => "noticed#",
            Kind::Remediated => "remediated#",
            Kind::Exempt => "exempt#",
            Kind::Notice => "notice#",
            Kind::Shard => "shard#",
            Kind::Finding => "finding#",
            Kind::BreakGlass => "breakglass#",
            Kind::EventsSince => "since#",
            Kind::Units => "units#",
            Kind::SelfCheck => "selfcheck#",
            Kind::Unconfirmed => "unconfirmed#",
            Kind::HeldBack => "heldback#",
            Kind::Callers => "callers#",
            Kind::Native => "native#",
        }
    }

    fn lifetime(self, lookback: Duration) -> u64 {
        match self {
            // Longer than any redelivery of the events of one launch.
            Kind::Noticed => 7 * DAY,
            // As long as `MetadataNoTokenRejected` is watched for it.
            Kind::Remediated => lookback.as_secs() + DAY,
            // Long-lived instances keep theirs: each sweep that still finds
            // the instance exempt renews it before half of this has passed.
            Kind::Exempt => EXEMPT_LIFETIME,
            // Lambda retries an event for up to six hours.
            Kind::Notice => DAY,
            // Longer than any run; a re-run of one shard finds its run's.
            Kind::Shard => 7 * DAY,
            // Security Hub deletes a finding 90 days after its last update:
            // once this lapses, the next sweep files the finding again,
            // which keeps it alive.
            Kind::Finding => FINDING_LIFETIME,
            // Set from the grant's own end (`Grant::record`).
            Kind::BreakGlass => 0,
            // Renewed by the sweeps while they find it (as exemptions are).
            Kind::EventsSince => EXEMPT_LIFETIME,
            // The last known units stand until a sweep learns new ones:
            // letting them lapse would put the account in the mildest mode.
            Kind::Units => EXEMPT_LIFETIME,
            // Each run writes it again (weekly by default); `doctor` calls
            // one older than `probe::STALE_AFTER_SECS` stale.
            Kind::SelfCheck => 30 * DAY,
            // Set from the window (`confirm::Waiting::entry`).
            Kind::Unconfirmed => 0,
            // Set by `plan::held_record`: lapses unless sweeps keep finding it.
            Kind::HeldBack => 0,
            // As long as `MetadataNoToken` is looked back over.
            Kind::Callers => lookback.as_secs(),
            // Kept until an undo reads it: a person may undo years later.
            Kind::Native => 10 * 365 * DAY,
        }
    }
}

/// One remembered fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub pk: String,
    pub sk: String,
    /// The event that wrote it (a retry of the same event is not a repeat).
    pub event_id: Option<String>,
    /// When it was written, in seconds since the epoch.
    pub at: u64,
    /// When it lapses (DynamoDB's TTL attribute; readers check it too, as
    /// DynamoDB deletes expired items only within days).
    pub expires_at: u64,
    /// Anything else the kind keeps, as text.
    pub data: BTreeMap<String, String>,
}

/// How long an exemption record lasts unless a sweep renews it.
pub const EXEMPT_LIFETIME: u64 = 400 * DAY;
/// How long the guard trusts its record of a finding (then files it again).
pub const FINDING_LIFETIME: u64 = 30 * DAY;
/// The `data` key of a finding record: the status filed.
pub const FINDING_STATUS: &str = "status";

/// The `data` key of a remediation record: `MetadataNoToken` as the guard
/// last read it before the switch (`report::NoToken`, in JSON).
pub const NO_TOKEN_BEFORE: &str = "no_token_before";

/// The `data` key of an exemption record: the glob that matched.
pub const GLOB: &str = "glob";

/// How a record copied by `migrate-exemptions` from a legacy status tag
/// ends its `glob`: honoured only while `LEGACY_EXEMPT_BEFORE` is set.
pub const MIGRATED: &str = " (a legacy record, migrated)";

/// The partition of records about the organization (`Kind::Units`).
pub const ORG_PARTITION: &str = "org";

impl Record {
    /// The units `account` is in, nearest first.
    pub fn units(account: &str, units: &[String], now: u64) -> Record {
        let mut r = Record::new(
            Kind::Units,
            ORG_PARTITION,
            account,
            None,
            now,
            Duration::ZERO,
        );
        r.data.insert("units".into(), units.join(","));
        r
    }

    /// The units a `Kind::Units` record holds.
    pub fn units_of(&self) -> Option<Vec<String>> {
        if !self.is_kind(Kind::Units) {
            return None;
        }
        let units = self.data.get("units")?;
        Some(
            units
                .split(',')
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

/// The partition of one account and region.
pub fn partition(account: &str, region: &str) -> String {
    format!("{account}#{region}")
}

impl Record {
    pub fn new(
        kind: Kind,
        partition: &str,
        id: &str,
        event_id: Option<&str>,
        now: u64,
        lookback: Duration,
    ) -> Record {
        Record {
            pk: partition.to_string(),
            sk: format!("{}{id}", kind.prefix()),
            event_id: event_id.map(str::to_string),
            at: now,
            expires_at: now + kind.lifetime(lookback),
            data: BTreeMap::new(),
        }
    }

    /// The instance (or event) the record is about.
    pub fn id(&self) -> &str {
        self.sk.split_once('#').map_or("", |(_, id)| id)
    }

    pub fn is_kind(&self, kind: Kind) -> bool {
        self.sk.starts_with(kind.prefix())
    }

    /// Still in force at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// The `data` keys of a shard record.
pub const SHARD_REPORT: &str = "report";
pub const SHARD_ERROR: &str = "error";
pub const SHARD_FAILURE: &str = "failure";
pub const SHARD_TOLD: &str = "told_instances";
/// Other records a shard's report tells of (a break-glass grant's end),
/// written by the summary once it is sent: `pk sk expires_at` a line.
pub const SHARD_MARKS: &str = "marks";

/// The `data` key marking a `Noticed` record as told.
pub const TOLD: &str = "told";

impl Record {
    /// This record, marked as told.
    pub fn told(mut self) -> Record {
        self.data.insert(TOLD.into(), "true".into());
        self
    }

    /// The exemption record of a launch by a principal matching `glob`.
    pub fn exempt(
        partition: &str,
        instance: &str,
        glob: &str,
        event_id: Option<&str>,
        now: u64,
    ) -> Record {
        let mut r = Record::new(
            Kind::Exempt,
            partition,
            instance,
            event_id,
            now,
            Duration::ZERO,
        );
        r.data.insert(GLOB.into(), glob.into());
        r
    }

    /// The message event `event_id` could not publish, kept for its retry.
    pub fn notice(
        partition: &str,
        event_id: &str,
        n: &crate::message::Notification,
        now: u64,
    ) -> Record {
        let mut r = Record::new(
            Kind::Notice,
            partition,
            event_id,
            Some(event_id),
            now,
            Duration::ZERO,
        );
        r.data = n.to_data();
        r
    }

    /// The partition of one fan-out run.
    pub fn run_partition(run: &str) -> String {
        format!("run#{run}")
    }

    /// A shard's end: its report's JSON, or the engine's error.
    pub fn shard(run: &str, account: &str, outcome: Result<String, String>, now: u64) -> Record {
        let mut r = Record::new(
            Kind::Shard,
            &Record::run_partition(run),
            account,
            None,
            now,
            Duration::ZERO,
        );
        match outcome {
            Ok(report) => r.data.insert(SHARD_REPORT.into(), report),
            Err(error) => r.data.insert(SHARD_ERROR.into(), error),
        };
        r
    }

    /// A shard whose sweep could not handle everything (a region, an
    /// instance, a source): why, as the invocation would say it.
    pub fn shard_failure(&self) -> Option<&str> {
        self.data.get(SHARD_FAILURE).map(String::as_str)
    }

    /// The instances a shard told of for the first time (`partition` and id),
    /// to remember as told once the run's summary is sent.
    pub fn shard_told(&self) -> Vec<(String, String)> {
        self.data
            .get(SHARD_TOLD)
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(p, i)| (p.to_string(), i.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The records a shard's summary writes once it is sent (`SHARD_MARKS`).
    pub fn shard_marks(&self, now: u64) -> Vec<Record> {
        self.data
            .get(SHARD_MARKS)
            .map(|t| {
                t.lines()
                    .filter_map(|l| {
                        let mut f = l.split(' ');
                        let (pk, sk, expires) = (f.next()?, f.next()?, f.next()?);
                        Some(Record {
                            pk: pk.to_string(),
                            sk: sk.to_string(),
                            event_id: None,
                            at: now,
                            expires_at: expires.parse().ok()?,
                            data: BTreeMap::new(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A record as a `SHARD_MARKS` line (its keys hold no spaces).
    pub fn mark_line(&self) -> String {
        format!("{} {} {}", self.pk, self.sk, self.expires_at)
    }

    /// What a shard record holds: its report, or why it failed.
    pub fn shard_outcome(&self) -> Result<&str, &str> {
        match (self.data.get(SHARD_REPORT), self.data.get(SHARD_ERROR)) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(e),
            (None, None) => Err("the shard's record holds neither a report nor an error"),
        }
    }

    /// Whether a sweep should renew it: more than half its life has passed.
    pub fn due_for_renewal(&self, now: u64) -> bool {
        self.expires_at.saturating_sub(now) < EXEMPT_LIFETIME / 2
    }

    pub fn is_told(&self) -> bool {
        self.data.contains_key(TOLD)
    }

    /// Whether a claim for `event_id` finds this (existing) record free:
    /// lapsed, or claimed by that same event and not told yet.
    pub fn free_for(&self, event_id: Option<&str>, now: u64) -> bool {
        !self.live(now) || (self.event_id.as_deref() == event_id && !self.is_told())
    }
}

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours: written now, or earlier by this same event, which did not get
    /// to tell (a retry).
    Ours,
    /// Told already, or claimed by another event: this one is a repeat.
    Taken,
}

/// The writes the table's policy denies to all but the guard's writers
/// (`OnlyTheGuardWrites`).
pub const GUARDED_WRITES: [&str; 7] = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
];

/// What is wrong with the memory's resource policy, as `GetResourcePolicy`
/// returned it (`None`: the table has none), against the stack's: its
/// `OnlyTheGuardWrites` statement denies every guarded write to every
/// principal but `writers` (the guard's role, and the migration and
/// break-glass roles while the stack names them). `None` when it holds.
/// Anyone who may change the policy could forge exemption records; this
/// makes such a change loud, it does not prevent it.
pub fn policy_problem(
    policy: Option<&str>,
    writers: &[String],
    operators: &[String],
) -> Option<String> {
    let Some(policy) = policy else {
        return Some("the table has no resource policy: anyone the account lets write to DynamoDB can write exemption records".into());
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(policy) else {
        return Some("the table's resource policy is not JSON".into());
    };
    let statements: Vec<&serde_json::Value> = match &doc["Statement"] {
        serde_json::Value::Array(a) => a.iter().collect(),
        one @ serde_json::Value::Object(_) => vec![one],
        _ => Vec::new(),
    };
    let Some(st) = statements.iter().find(|s| s["Sid"] == "OnlyTheGuardWrites") else {
        return Some("the table's resource policy has no OnlyTheGuardWrites statement".into());
    };
    let actions = strings(&st["Action"]);
    let everyone = st["Principal"] == "*" || st["Principal"]["AWS"] == "*";
    // `ArnNotLike` since the operators (who may be named with wildcards)
    // write too; `ArnNotEquals` in stacks made before. IAM reads both alike.
    let operator = if st["Condition"].get("ArnNotLike").is_some() {
        "ArnNotLike"
    } else {
        "ArnNotEquals"
    };
    let excepted = strings(&st["Condition"][operator]["aws:PrincipalArn"]);
    let mut expected = writers.to_vec();
    expected.sort();
    let other_conditions = st["Condition"]
        .as_object()
        .is_some_and(|c| c.keys().any(|k| k != operator));
    if st["Effect"] != "Deny"
        || !everyone
        || !GUARDED_WRITES
            .iter()
            .all(|a| actions.iter().any(|x| x == a))
        || strings(&st["Resource"]) != ["*"]
        || other_conditions
        || excepted != expected
    {
        return Some(format!(
            "the table's OnlyTheGuardWrites statement is not the stack's (it must deny {} to every principal but {})",
            GUARDED_WRITES.join(", "),
            expected.join(", ")
        ));
    }
    operators_problem(&statements, writers, operators)
}

/// A policy element's strings (one string, or a list of them), sorted:
/// IAM reads the order of neither.
fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    out.sort();
    out
}

/// The operators write only enforce-native's partitions: the three
/// statements that keep them there must be the stack's, whole (everyone,
/// the writes, the operators, nothing else excepted, no other condition),
/// or an operator could write exemption records.
fn operators_problem(
    statements: &[&serde_json::Value],
    writers: &[String],
    operators: &[String],
) -> Option<String> {
    if operators.is_empty() {
        return None;
    }
    let mut expected = operators.to_vec();
    expected.sort();
    // The writers the statements leave out by name: all but the operators.
    let mut others: Vec<String> = writers
        .iter()
        .filter(|w| !operators.contains(w))
        .cloned()
        .collect();
    others.sort();
    const WRITES: [&str; 4] = [
        "dynamodb:PutItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ];
    const PARTIQL: [&str; 3] = [
        "dynamodb:PartiQLInsert",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
    ];
    // `own`: the statement's own condition (operator, key, value), if any.
    let holds = |sid: &str, actions: &[&str], own: Option<(&str, &str, &str)>| {
        statements.iter().any(|st| {
            let c = &st["Condition"];
            let keys: Vec<&str> = c
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let mut wanted = vec!["ArnLike", "ArnNotEquals"];
            wanted.extend(own.map(|(op, ..)| op));
            st["Sid"] == sid
                && st["Effect"] == "Deny"
                && (st["Principal"] == "*" || st["Principal"]["AWS"] == "*")
                && strings(&st["Resource"]) == ["*"]
                && actions
                    .iter()
                    .all(|a| strings(&st["Action"]).iter().any(|x| x == a))
                && keys.len() == wanted.len()
                && wanted.iter().all(|k| keys.contains(k))
                && strings(&c["ArnLike"]["aws:PrincipalArn"]) == expected
                && strings(&c["ArnNotEquals"]["aws:PrincipalArn"]) == others
                && own.is_none_or(|(op, key, value)| {
                    // `Null`'s value may come back a JSON boolean.
                    strings(&c[op][key]) == [value]
                        || (value == "true" && c[op][key] == serde_json::Value::Bool(true))
                })
        })
    };
    if !holds(
        "OperatorsWriteNativeRecordsOnly",
        &WRITES,
        Some((
            "ForAnyValue:StringNotLike",
            "dynamodb:LeadingKeys",
            "native#*",
        )),
    ) || !holds(
        "OperatorsWritesNameTheirPartition",
        &WRITES,
        Some(("Null", "dynamodb:LeadingKeys", "true")),
    ) || !holds("OperatorsNoPartiQLWrites", &PARTIQL, None)
    {
        return Some(format!(
            "the table's policy no longer keeps the operators ({}) to enforce-native's partitions (statements OperatorsWriteNativeRecordsOnly, OperatorsWritesNameTheirPartition, OperatorsNoPartiQLWrites)",
            expected.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_live_in_their_account_regions_partition_for_their_kinds_lifetime() {
        let week = Duration::from_secs(7 * DAY);
        let n = Record::new(
            Kind::Noticed,
            &partition("111122223333", "eu-west-1"),
            "i-0123456789abcdef0",
            Some("e-1"),
            1_000,
            week,
        );
        assert_eq!(n.pk, "111122223333#eu-west-1");
        assert_eq!(n.sk, "noticed#i-0123456789abcdef0");
        assert_eq!(n.id(), "i-0123456789abcdef0");
        assert!(n.is_kind(Kind::Noticed) && !n.is_kind(Kind::Remediated));
        assert_eq!(n.expires_at, 1_000 + 7 * DAY);
        assert!(n.live(1_000 + 7 * DAY - 1) && !n.live(1_000 + 7 * DAY));

        let r = Record::new(
            Kind::Remediated,
            &partition("111122223333", "eu-west-1"),
            "i-0123456789abcdef0",
            None,
            1_000,
            Duration::from_secs(48 * 3600),
        );
        assert_eq!(
            r.expires_at,
            1_000 + 48 * 3600 + DAY,
            "the lookback and a day"
        );
    }

    #[test]
    fn a_claim_is_free_for_a_retry_that_did_not_tell_and_nothing_else() {
        let week = Duration::from_secs(7 * DAY);
        let claimed = Record::new(Kind::Noticed, "p", "i-1", Some("e-1"), 1_000, week);
        assert!(
            claimed.free_for(Some("e-1"), 2_000),
            "a retry of the claimer"
        );
        assert!(!claimed.free_for(Some("e-2"), 2_000), "another event");
        let told = claimed.clone().told();
        assert!(told.is_told());
        assert!(
            !told.free_for(Some("e-1"), 2_000),
            "a redelivery of the teller"
        );
        assert!(told.free_for(Some("e-2"), 1_000 + 7 * DAY), "lapsed");
    }

    #[test]
    fn the_memorys_policy_is_the_stacks_or_the_difference_is_named() {
        let guard = "arn:aws:iam::111122223333:role/imds-guard-GuardRole-X".to_string();
        let writers = vec![guard.clone()];
        let policy = |st: serde_json::Value| {
            serde_json::json!({"Version": "2012-10-17", "Statement": [st]}).to_string()
        };
        let stacks = serde_json::json!({
            "Sid": "OnlyTheGuardWrites", "Effect": "Deny", "Principal": "*",
            "Action": GUARDED_WRITES, "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [guard]}}
        });
        assert_eq!(
            policy_problem(Some(&policy(stacks.clone())), &writers, &[]),
            None
        );
        assert!(policy_problem(None, &writers, &[])
            .unwrap()
            .contains("no resource policy"));
        let tampered = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut st = stacks.clone();
            f(&mut st);
            policy_problem(Some(&policy(st)), &writers, &[])
        };
        // Another writer added, a write left out, an Allow, a narrower
        // principal, a condition that disarms it: each named.
        assert!(
            tampered(&|s| s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
                .as_array_mut()
                .unwrap()
                .push("arn:aws:iam::111122223333:role/mallory".into()))
            .is_some()
        );
        assert!(tampered(&|s| s["Action"] = serde_json::json!(["dynamodb:DeleteItem"])).is_some());
        assert!(tampered(&|s| s["Effect"] = "Allow".into()).is_some());
        assert!(
            tampered(&|s| s["Principal"] = serde_json::json!({"AWS": "arn:aws:iam::1:root"}))
                .is_some()
        );
        assert!(tampered(&|s| s["Condition"]["StringEquals"] =
            serde_json::json!({"aws:PrincipalTag/x": "never"}))
        .is_some());
        assert!(tampered(&|s| s["Sid"] = "Renamed".into())
            .unwrap()
            .contains("no OnlyTheGuardWrites"));
    }

    #[test]
    fn with_operators_the_policy_must_keep_them_to_their_partitions() {
        let guard = "arn:aws:iam::111122223333:role/imds-guard-GuardRole-X".to_string();
        let ops = "arn:aws:iam::111122223333:role/ops-*".to_string();
        let writers = vec![guard.clone(), ops.clone()];
        let only = serde_json::json!({
            "Sid": "OnlyTheGuardWrites", "Effect": "Deny", "Principal": "*",
            "Action": GUARDED_WRITES, "Resource": "*",
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": [guard.clone(), ops.clone()]}}
        });
        // As CloudFormation renders the stack's: each names the operators,
        // and leaves out the other writers by name.
        let op = |sid: &str, actions: &[&str], own: serde_json::Value| {
            let mut c = serde_json::json!({
                "ArnLike": {"aws:PrincipalArn": [ops.clone()]},
                "ArnNotEquals": {"aws:PrincipalArn": [guard.clone()]}
            });
            c.as_object_mut()
                .unwrap()
                .extend(own.as_object().unwrap().clone());
            serde_json::json!({"Sid": sid, "Effect": "Deny", "Principal": "*",
                "Action": actions, "Resource": "*", "Condition": c})
        };
        let writes = [
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
        ];
        let native = op(
            "OperatorsWriteNativeRecordsOnly",
            &writes,
            serde_json::json!({"ForAnyValue:StringNotLike": {"dynamodb:LeadingKeys": "native#*"}}),
        );
        let named = op(
            "OperatorsWritesNameTheirPartition",
            &writes,
            serde_json::json!({"Null": {"dynamodb:LeadingKeys": "true"}}),
        );
        let partiql = op(
            "OperatorsNoPartiQLWrites",
            &[
                "dynamodb:PartiQLInsert",
                "dynamodb:PartiQLUpdate",
                "dynamodb:PartiQLDelete",
            ],
            serde_json::json!({}),
        );
        let ops_list = [ops.clone()];
        let check = |sts: Vec<&serde_json::Value>| {
            let doc = serde_json::json!({"Statement": sts}).to_string();
            policy_problem(Some(&doc), &writers, &ops_list)
        };
        assert_eq!(check(vec![&only, &native, &named, &partiql]), None);
        // `Null`'s value given back as a boolean is the same statement.
        let mut as_bool = named.clone();
        as_bool["Condition"]["Null"]["dynamodb:LeadingKeys"] = true.into();
        assert_eq!(check(vec![&only, &native, &as_bool, &partiql]), None);
        // Each way an operator could come to write exemption records: named.
        assert!(check(vec![&only, &named, &partiql])
            .unwrap()
            .contains("no longer keeps the operators"));
        assert!(check(vec![&only, &native, &named]).is_some(), "PartiQL");
        let tampered = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut st = native.clone();
            f(&mut st);
            check(vec![&only, &st, &named, &partiql])
        };
        assert!(tampered(
            &|s| s["Condition"]["ForAnyValue:StringNotLike"]["dynamodb:LeadingKeys"] = "*".into()
        )
        .is_some());
        assert!(
            tampered(&|s| s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] =
                serde_json::json!([guard.clone(), "arn:aws:iam::*:role/*"]))
            .is_some()
        );
        assert!(tampered(&|s| s["Condition"]["StringEquals"] =
            serde_json::json!({"aws:PrincipalTag/x": "never"}))
        .is_some());
        assert!(
            tampered(&|s| s["Principal"] = serde_json::json!({"AWS": "arn:aws:iam::1:root"}))
                .is_some()
        );
    }
}

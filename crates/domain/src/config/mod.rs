//! The function's configuration: one typed struct, read from the environment
//! once at start and validated there, so a bad deployment fails at init with
//! a message naming the variable instead of misbehaving on the first launch.

mod read;

use std::fmt;
use std::time::Duration;

use crate::glob::Glob;
use crate::validate::{is_account_id, is_image_id, is_region, partition, sns_topic_region};

/// What the guardrail does with a noncompliant instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Set `HttpTokens=required`, tag, notify.
    Enforce,
    /// Tag and notify; change nothing else.
    Notify,
    /// Write nothing to any instance; notify what enforce would have done.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Notify => "notify",
            Mode::Audit => "audit",
        }
    }

    pub fn parse(value: &str) -> Option<Mode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "enforce" => Some(Mode::Enforce),
            "notify" => Some(Mode::Notify),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Mode {
    /// How far a mode goes: audit writes nothing, notify tags, enforce
    /// changes options. An account whose setting cannot be known yet runs
    /// in the mildest mode any could give it.
    fn strength(self) -> u8 {
        match self {
            Mode::Audit => 0,
            Mode::Notify => 1,
            Mode::Enforce => 2,
        }
    }
}

/// A setting for one account (`111122223333`) or one organizational unit
/// (`ou-...`, or the root `r-...`), over the default
/// (`MODE_OVERRIDES`, `FIX_SOURCES_OVERRIDES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub target: String,
    pub mode: Option<Mode>,
    pub fix_sources: Option<bool>,
}

impl Override {
    pub fn is_ou(&self) -> bool {
        !is_account_id(&self.target)
    }
}

/// `ou-` and 4 to 32 lowercase letters or digits, `-`, 8 to 32 more; or a
/// root, `r-` and 4 to 32.
pub fn is_ou_id(s: &str) -> bool {
    let ok = |p: &str, min: usize| {
        (min..=32).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if let Some(rest) = s.strip_prefix("ou-") {
        return rest
            .split_once('-')
            .is_some_and(|(root, ou)| ok(root, 4) && ok(ou, 8));
    }
    s.strip_prefix("r-").is_some_and(|r| ok(r, 4))
}

/// Who and what is exempt from enforcement.
#[derive(Clone, Debug, Default)]
pub struct Exemptions {
    /// An instance whose tag `key` has the value `true` is exempt.
    pub tag_key: Option<String>,
    /// Launches (or changes) by a principal matching one of these are exempt.
    pub principals: Vec<Glob>,
    /// Instances launched from these AMIs are exempt.
    pub image_ids: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub topic_arn: Option<String>,
    pub status_tag_key: String,
    pub exemptions: Exemptions,
    /// In enforce mode, a higher `HttpPutResponseHopLimit` is lowered to this.
    pub max_hop_limit: Option<i32>,
    /// A container host (a launcher whose hosts run containers, or an
    /// instance tagged `container_host_tag`) switched from `optional` to
    /// `required` gets at least this hop limit in the same call, so its
    /// pods and tasks keep reaching IMDS (`CONTAINER_HOP_LIMIT`: 2; 1
    /// blocks them, for teams on pod identities). Never above
    /// `max_hop_limit`.
    pub container_hop_limit: i32,
    /// An instance carrying this tag key is a container host too
    /// (`CONTAINER_HOST_TAG`).
    pub container_host_tag: Option<String>,
    /// How long one invocation keeps retrying an instance that EC2 does not
    /// show yet or that is still `pending` (a state-change notification's is
    /// shorter: `event::act_within`). Must fit the function's timeout.
    pub retry_budget: Duration,
    /// Regions a scheduled sweep covers; empty means the function's own.
    pub sweep_regions: Vec<String>,
    /// Enforce mode sets the account default to `HttpTokens=required` (never
    /// `HttpTokensEnforced`, which refuses launches: a person's decision).
    pub set_account_default: bool,
    /// Consult CloudWatch `MetadataNoToken` before changing an instance; one
    /// that answered IMDSv1 calls recently is flagged instead of changed.
    pub check_metadata_no_token: bool,
    /// The last mile (`LOOKUP_IMDSV1_CALLERS`): the sweep asks CloudTrail
    /// which software used IMDSv1-delivered credentials on the instances
    /// it leaves at `optional` (`v1_callers`).
    pub lookup_imdsv1_callers: bool,
    pub no_token_lookback: Duration,
    /// With `CHECK_METADATA_NO_TOKEN`: after this many days held back for
    /// IMDSv1 use, an instance is switched anyway, told a day before
    /// (`NO_TOKEN_HOLD_DAYS`; unset: held back for as long as it is used).
    pub no_token_hold_days: Option<u64>,
    /// Central mode: the role, in every member account, that the function
    /// assumes to act there. Unset: the function acts with its own role only.
    pub member_role: Option<MemberRole>,
    /// When set, the only accounts the function acts in; an event from any
    /// other is refused and reported, and not retried.
    pub allowed_accounts: Vec<String>,
    /// The accounts a scheduled sweep covers.
    pub sweep_accounts: SweepAccounts,
    /// The guard's memory (docs/design.md): a DynamoDB table in the
    /// function's account and region that only the guard writes.
    pub memory_table: Option<String>,
    /// Account-region pairs a sweep covers at once (each holds at most one
    /// page of instances in memory; the function has 128 MB).
    pub sweep_concurrency: usize,
    /// The circuit breaker (`breaker`): at most this many instances changed
    /// by one event (`MAX_CHANGES_PER_EVENT`), by one sweep run or fan-out
    /// shard (`MAX_CHANGES_PER_RUN`), and this share of one account-region's
    /// instances per run (`MAX_CHANGE_PERCENT`; 100 turns the share off).
    pub max_changes_per_event: u64,
    pub max_changes_per_run: u64,
    pub max_change_percent: u8,
    /// How long after its launch an instance's event may still be on its
    /// way (`EVENTS_GRACE_MINUTES`): a sweep that fixes one launched after
    /// enforcing began and longer ago than this counts a missed event.
    pub events_grace: Duration,
    /// An organization sweep of at least this many account-regions fans out
    /// (Step Functions, one shard per account); below it, one invocation.
    pub fanout_threshold: usize,
    /// Shards (accounts) swept at once by the fan-out.
    pub fanout_concurrency: u32,
    /// Enforce fixes a noncompliant launch template (a new version that
    /// requires tokens) when its owner opted in with `fix_source_tag_key`.
    pub fix_sources: bool,
    /// The mode and the source-fixing switch per account and per
    /// organizational unit (`MODE_OVERRIDES`, `FIX_SOURCES_OVERRIDES`), over
    /// `mode` and `fix_sources` for the rest.
    pub overrides: Vec<Override>,
    /// The tag (value `true`) by which a template's owner lets the guard fix it.
    pub fix_source_tag_key: String,
    /// Where a message that could not be published is kept for a person
    /// (the stack's failed-events queue, whose depth alarms).
    pub failed_events_queue_url: Option<String>,
    /// The events the stack delivers; with both, two events can name one
    /// launch and the memory keeps a person from being told twice.
    pub triggers: Triggers,
    /// Principal exemptions recorded on instances (`STATUS_TAG_KEY=exempt`)
    /// by versions before the guard's memory are honoured on instances
    /// launched before this time (seconds since the epoch); unset, none is.
    pub legacy_exempt_before: Option<u64>,
    /// With `CHECK_METADATA_NO_TOKEN`: an instance with no `MetadataNoToken`
    /// data at all in the lookback (stopped throughout, just launched) counts
    /// as not using IMDSv1. Off: it is held back like an IMDSv1 user.
    pub no_token_missing_as_zero: bool,
    /// File an ASFF finding in Security Hub for each instance found
    /// noncompliant, from the instance's own account and region.
    pub security_hub_findings: bool,
    /// EMF metrics in the function's log (`METRICS=false` turns them off).
    pub metrics: Option<MetricsConfig>,
    /// Put each report's news on this EventBridge bus too (name or ARN).
    pub event_bus: Option<String>,
    /// Where the event function hands its findings and events to the
    /// outputs function (it carries neither client itself).
    pub outputs_queue_url: Option<String>,
    /// The outputs function takes a message only from these senders (IAM
    /// unique ids: the guard's role's `AROA...`), as SQS's `SenderId` says.
    pub outputs_senders: Vec<String>,
    /// Where the outputs function keeps a message it refuses, with the
    /// reason (its queue's dead-letter queue).
    pub outputs_refused_queue_url: Option<String>,
    /// An instance whose AMI does not declare `ImdsSupport: v2.0` is
    /// switched only once this long has passed since its launch
    /// (`FIRST_BOOT_GRACE_SECONDS`, 0 to 3600; 0: at once): its first boot
    /// may still need IMDSv1 (`first_boot`).
    pub first_boot_grace: Duration,
    /// Where the wait is kept (`FIRST_BOOT_QUEUE_URL`): an SQS queue whose
    /// delayed messages bring each waiting instance back to be decided.
    pub first_boot_queue_url: Option<String>,
    /// The delayed decisions are taken only from these senders (IAM unique
    /// ids, as SQS's `SenderId` says): the guard's role.
    pub first_boot_senders: Vec<String>,
    /// The stack's sweep schedule (`SWEEP_SCHEDULE`), when it has one:
    /// what settings that only a sweep can complete need.
    pub sweep_schedule: Option<String>,
    /// The memory table's ARN (`MEMORY_TABLE_ARN`) and the principals its
    /// policy lets write (`MEMORY_WRITERS`): with both, each sweep checks
    /// the policy is still the stack's (`memory::policy_problem`).
    pub memory_table_arn: Option<String>,
    pub memory_writers: Vec<String>,
    /// Of those, the operators' patterns (`MEMORY_OPERATORS`, the stack's
    /// `OperatorRoleArns`): the policy must also keep them to
    /// enforce-native's partitions.
    pub memory_operators: Vec<String>,
    /// Set by `for_account` when the account's units are not known and it
    /// runs in the mildest mode a unit gives: said in its notification.
    pub fallback_units: Option<String>,
    /// Publish with a Chatbot card for chat subscribers (SNS
    /// `MessageStructure=json`: the `https` protocol gets the card, every
    /// other the usual JSON body).
    pub chat_notifications: bool,
}

/// Which events reach the function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Triggers {
    /// CloudTrail's `RunInstances` and `CreateFleet` (minutes after a
    /// launch; needs a trail; names who launched).
    #[default]
    Cloudtrail,
    /// EC2's `pending` and `running` state-change notifications (seconds; no
    /// trail; no principal).
    StateChange,
    Both,
}

/// The role assumed in a member account: `arn:<partition>:iam::<account>:role/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRole {
    /// The role's name, with its path if it has one (`security/imds-guard`).
    pub name: String,
    /// Passed to `sts:AssumeRole` when the member role's trust policy asks for one.
    pub external_id: Option<String>,
}

impl MemberRole {
    pub fn arn(&self, account: &str, region: &str) -> String {
        format!(
            "arn:{}:iam::{account}:role/{}",
            partition(region),
            self.name
        )
    }
}

/// Which accounts a scheduled sweep covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SweepAccounts {
    /// The function's own account (the default).
    #[default]
    Own,
    /// These accounts (the own one needs no role if listed).
    Listed(Vec<String>),
    /// Every active account of the organization (`organizations:ListAccounts`,
    /// which only the management account or a delegated administrator may call).
    Organization,
}

/// What one sweep covers: a value of the run, never a change to the
/// deployment's settings. The deployment's own is `SweepScope::configured`; the
/// command line (`--account`, `--organization`, `--region`), a fan-out
/// shard (its one account) and a re-run (its accounts) each name theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepScope {
    pub accounts: SweepAccounts,
    pub regions: Vec<String>,
}

impl SweepScope {
    /// The deployment's: `SWEEP_ACCOUNTS`, and `SWEEP_REGIONS`, else `here`,
    /// the region the run was asked in, when one is known.
    pub fn configured(cfg: &Config, here: Option<&str>) -> SweepScope {
        let regions = if cfg.sweep_regions.is_empty() {
            here.filter(|r| !r.is_empty())
                .map(str::to_string)
                .into_iter()
                .collect()
        } else {
            cfg.sweep_regions.clone()
        };
        SweepScope {
            accounts: cfg.sweep_accounts.clone(),
            regions,
        }
    }

    /// The same regions, in these accounts.
    pub fn in_accounts(self, accounts: SweepAccounts) -> SweepScope {
        SweepScope { accounts, ..self }
    }

    /// Whether it names accounts (a listed account, or the organization's),
    /// rather than the function's own.
    pub fn names_accounts(&self) -> bool {
        self.accounts != SweepAccounts::Own
    }
}

/// The hop limit a container host is switched with: AWS's own choice for
/// IMDSv2-only images (`ImdsSupport: v2.0`).
pub const DEFAULT_CONTAINER_HOP_LIMIT: i32 = 2;

pub const DEFAULT_STATUS_TAG_KEY: &str = "imds-guard:status";
pub const DEFAULT_RETRY_BUDGET_SECS: u64 = 60;
/// The longest `FIRST_BOOT_GRACE_SECONDS` (an hour: a first boot that needs
/// longer is not a first boot the guard should wait for).
pub const MAX_FIRST_BOOT_GRACE_SECS: u64 = 3600;
/// A week: long enough to see weekly jobs that still call IMDSv1.
pub const DEFAULT_NO_TOKEN_LOOKBACK_HOURS: u64 = 168;

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            topic_arn: None,
            status_tag_key: DEFAULT_STATUS_TAG_KEY.to_string(),
            exemptions: Exemptions::default(),
            max_hop_limit: None,
            container_hop_limit: DEFAULT_CONTAINER_HOP_LIMIT,
            container_host_tag: None,
            retry_budget: Duration::from_secs(DEFAULT_RETRY_BUDGET_SECS),
            sweep_regions: Vec::new(),
            set_account_default: false,
            check_metadata_no_token: false,
            lookup_imdsv1_callers: false,
            no_token_lookback: Duration::from_secs(DEFAULT_NO_TOKEN_LOOKBACK_HOURS * 3600),
            no_token_hold_days: None,
            member_role: None,
            allowed_accounts: Vec::new(),
            sweep_accounts: SweepAccounts::Own,
            memory_table: None,
            failed_events_queue_url: None,
            fix_sources: false,
            overrides: Vec::new(),
            sweep_concurrency: 4,
            max_changes_per_event: 50,
            max_changes_per_run: 500,
            max_change_percent: 25,
            events_grace: Duration::from_secs(GRACE_SECS),
            fanout_threshold: 100,
            fanout_concurrency: 40,
            fix_source_tag_key: "imds-guard:fix-source".into(),
            triggers: Triggers::Cloudtrail,
            no_token_missing_as_zero: false,
            legacy_exempt_before: None,
            security_hub_findings: false,
            metrics: Some(MetricsConfig {
                namespace: DEFAULT_NAMESPACE.into(),
                per_account: false,
            }),
            event_bus: None,
            outputs_queue_url: None,
            outputs_senders: Vec::new(),
            outputs_refused_queue_url: None,
            first_boot_grace: Duration::ZERO,
            first_boot_queue_url: None,
            first_boot_senders: Vec::new(),
            sweep_schedule: None,
            memory_table_arn: None,
            memory_writers: Vec::new(),
            memory_operators: Vec::new(),
            fallback_units: None,
            chat_notifications: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// Whether some setting is per organizational unit (an account's units
    /// must then be known to know how it runs).
    pub fn has_ou_overrides(&self) -> bool {
        self.overrides.iter().any(Override::is_ou)
    }

    /// Whether a sweep reads each account's organizational units even with
    /// nothing set per unit: an organization's sweep in central mode, whose
    /// rollout rolls account-regions up per unit (`rollout`).
    pub fn learns_units(&self) -> bool {
        self.member_role.is_some() && self.sweep_accounts == SweepAccounts::Organization
    }

    /// The exemptions configured, each named (the rollout's blocker: AWS's
    /// enforcement has none).
    pub fn exemptions_configured(&self) -> Vec<String> {
        let e = &self.exemptions;
        let mut out = Vec::new();
        if let Some(k) = &e.tag_key {
            out.push(format!("EXEMPT_TAG_KEY={k}"));
        }
        if !e.principals.is_empty() {
            out.push(format!(
                "EXEMPT_PRINCIPAL_ARNS ({} glob(s))",
                e.principals.len()
            ));
        }
        if !e.image_ids.is_empty() {
            out.push(format!("EXEMPT_IMAGE_IDS ({} AMI(s))", e.image_ids.len()));
        }
        if self.legacy_exempt_before.is_some() {
            out.push("LEGACY_EXEMPT_BEFORE".into());
        }
        out
    }

    /// The mildest mode, and whether to fix sources, that the default and
    /// the settings `among` could give: for an account whose own place is
    /// not known.
    fn mildest(&self, among: impl Fn(&Override) -> bool) -> (Mode, bool) {
        let settings = || self.overrides.iter().filter(|o| among(o));
        let mode = settings()
            .filter_map(|o| o.mode)
            .chain([self.mode])
            .min_by_key(|m| m.strength())
            .unwrap_or(self.mode);
        let fix = self.fix_sources && settings().all(|o| o.fix_sources != Some(false));
        (mode, fix)
    }

    /// The configuration of an account that cannot even be named: the
    /// mildest mode any account or unit is set to, and fixing sources only
    /// if every setting does.
    pub fn for_unnamed_account(&self) -> Config {
        let mut c = self.clone();
        (c.mode, c.fix_sources) = self.mildest(|_| true);
        c
    }

    /// The hop limit a container host is switched with: `CONTAINER_HOP_LIMIT`,
    /// capped by `MAX_HOP_LIMIT` when that is lower.
    pub fn container_hop(&self) -> i32 {
        self.max_hop_limit.map_or(self.container_hop_limit, |max| {
            self.container_hop_limit.min(max)
        })
    }

    /// What a person deploying these settings should know, said once at
    /// init: a setting another one overrides.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.container_hop() < self.container_hop_limit {
            out.push(format!(
                "CONTAINER_HOP_LIMIT={} is capped by MAX_HOP_LIMIT={}: container hosts are switched at hop limit {}, where their pods and tasks cannot reach IMDS",
                self.container_hop_limit,
                self.container_hop(),
                self.container_hop()
            ));
        }
        out
    }

    /// Whether anything is set per account or unit.
    pub fn has_overrides(&self) -> bool {
        !self.overrides.is_empty()
    }

    /// The configuration `account` runs under: its own setting, else its
    /// nearest unit's (`ous`, nearest first, up to the root), else the
    /// default. With `ous` unknown (`None`: the guard has not learnt them
    /// yet) and no setting of its own, the mildest any unit could give it:
    /// a sandbox is never enforced by mistake.
    pub fn for_account(&self, account: &str, ous: Option<&[String]>) -> Config {
        let mut c = self.clone();
        if self.overrides.is_empty() {
            return c;
        }
        let Some(ous) = ous else {
            // Units not known: the mildest any unit could give, unless the
            // account's own setting says.
            let (mode, fix) = self.mildest(Override::is_ou);
            let own = self.overrides.iter().find(|o| o.target == account);
            c.mode = own.and_then(|o| o.mode).unwrap_or(mode);
            c.fix_sources = own.and_then(|o| o.fix_sources).unwrap_or(fix);
            if self.has_ou_overrides() && own.is_none_or(|o| o.mode.is_none()) {
                c.fallback_units = Some(format!(
                    "account {account}'s organizational units are not known yet (a sweep of the organization learns them), so it ran in the mildest mode any unit is set to ({})",
                    c.mode.as_str()
                ));
            }
            return c;
        };
        // The account's own setting, else its nearest unit's, else the
        // default: each of the two settings on its own.
        let setting = |pick: &dyn Fn(&Override) -> bool| {
            std::iter::once(account)
                .chain(ous.iter().map(String::as_str))
                .find_map(|t| self.overrides.iter().find(|o| o.target == t && pick(o)))
        };
        if let Some(o) = setting(&|o| o.mode.is_some()) {
            c.mode = o.mode.unwrap_or(self.mode);
        }
        if let Some(o) = setting(&|o| o.fix_sources.is_some()) {
            c.fix_sources = o.fix_sources.unwrap_or(self.fix_sources);
        }
        c
    }

    /// Where the guard runs for real (the function, a sweep from a shell),
    /// what needs its memory must have one: a principal exemption is
    /// recorded there when its launch is seen, and read there afterwards.
    /// (`check`, offline, decides without.)
    pub fn needs_memory(&self) -> Result<(), ConfigError> {
        if self.security_hub_findings && self.memory_table.is_none() {
            return Err(ConfigError {
                variable: "SECURITY_HUB_FINDINGS",
                value: "true".into(),
                reason: "needs MEMORY_TABLE: the guard remembers there which findings it filed, so a sweep files only changes and archives the findings of terminated instances".into(),
            });
        }
        if !self.exemptions.principals.is_empty() && self.memory_table.is_none() {
            return Err(ConfigError {
                variable: "EXEMPT_PRINCIPAL_ARNS",
                value: self
                    .exemptions
                    .principals
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                reason: "needs MEMORY_TABLE: the guard records each principal exemption there when it sees the launch, where nobody else can write one (a tag anyone could)".into(),
            });
        }
        Ok(())
    }

    /// Whether an instance's exemption record can count (`Policy::
    /// honours_record`): with principal exemptions, or migrated legacy
    /// records, configured. Otherwise no record is read.
    pub fn reads_exemption_records(&self) -> bool {
        !self.exemptions.principals.is_empty() || self.legacy_exempt_before.is_some()
    }

    /// Settings that would fail open where the stack runs the guard (the
    /// functions' init; the stack's `Rules` refuse what they can say
    /// before deploying): each completes only through a sweep, so without a
    /// scheduled one it would quietly never enforce.
    pub fn fails_open(&self) -> Result<(), ConfigError> {
        if !self.first_boot_grace.is_zero() && self.first_boot_queue_url.is_none() {
            return Err(ConfigError {
                variable: "FIRST_BOOT_GRACE_SECONDS",
                value: self.first_boot_grace.as_secs().to_string(),
                reason: "needs FIRST_BOOT_QUEUE_URL: a first boot is waited for in that queue (a delayed message brings the instance back), never in a running function; without it an instance left waiting would be decided only by a sweep".into(),
            });
        }
        let no_sweep = self.sweep_schedule.is_none();
        if self.triggers == Triggers::StateChange
            && !self.exemptions.principals.is_empty()
            && no_sweep
        {
            return Err(ConfigError {
                variable: "TRIGGERS",
                value: "state-change".into(),
                reason: "with EXEMPT_PRINCIPAL_ARNS and no SWEEP_SCHEDULE, no launch would ever be enforced or reported: a state-change names no principal, so each launch waits for a decision only CloudTrail (TRIGGERS=both) or a sweep can make".into(),
            });
        }
        if self.has_ou_overrides()
            && (no_sweep
                || (self.member_role.is_some()
                    && self.sweep_accounts != SweepAccounts::Organization))
        {
            return Err(ConfigError {
                variable: "MODE_OVERRIDES",
                value: self
                    .overrides
                    .iter()
                    .filter(|o| o.is_ou())
                    .map(|o| o.target.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                reason: "settings per organizational unit need a scheduled sweep of the organization (SWEEP_SCHEDULE, and SWEEP_ACCOUNTS=ORGANIZATION in central mode): only it learns each account's units, and until it does every account runs in the mildest mode any unit is set to".into(),
            });
        }
        Ok(())
    }

    /// Why the function may not act in `account`, or `None` when it may.
    /// An event that names no account (only a direct invoke can send one) is
    /// the function's own account's, unless accounts are restricted or
    /// central mode is on: then it is refused, not guessed.
    pub fn refusal(&self, account: Option<&str>) -> Option<String> {
        let Some(account) = account else {
            return (!self.allowed_accounts.is_empty() || self.member_role.is_some()).then(|| {
                "the event names no account, and with ALLOWED_ACCOUNT_IDS or central mode set the guard acts only in an account an event names: nothing was looked at or changed".to_string()
            });
        };
        if self.allowed_accounts.is_empty() || self.allowed_accounts.iter().any(|a| a == account) {
            return None;
        }
        Some(format!(
            "account {account} is not in ALLOWED_ACCOUNT_IDS: nothing was looked at or changed there"
        ))
    }
}

/// By default, an instance launched within this long before the sweep may
/// still have its event on the way (CloudTrail delivers within minutes;
/// Lambda retries a failed event for longer): not counted yet
/// (`EVENTS_GRACE_MINUTES`).
pub const GRACE_SECS: u64 = 3600;

/// Where the metrics go and how finely they are cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub namespace: String,
    /// Adds an `Account` dimension to the sweep's metrics (one more metric
    /// per account and region: opt-in).
    pub per_account: bool,
}

pub const DEFAULT_NAMESPACE: &str = "ImdsGuard";

#[cfg(test)]
mod tests {
    #[test]
    fn a_runs_scope_is_the_deployments_unless_named_and_leaves_the_settings_alone() {
        let mut c = Config::default();
        assert_eq!(
            SweepScope::configured(&c, Some("eu-west-1")).regions,
            ["eu-west-1"]
        );
        assert!(SweepScope::configured(&c, Some("")).regions.is_empty());
        assert!(SweepScope::configured(&c, None).regions.is_empty());
        c.sweep_regions = vec!["us-east-1".into(), "eu-central-1".into()];
        c.sweep_accounts = SweepAccounts::Organization;
        let scope = SweepScope::configured(&c, Some("eu-west-1"));
        assert_eq!(scope.regions, ["us-east-1", "eu-central-1"]);
        assert!(scope.names_accounts());
        let shard = scope.in_accounts(SweepAccounts::Listed(vec!["444455556666".into()]));
        assert_eq!(shard.regions, ["us-east-1", "eu-central-1"]);
        assert_eq!(
            shard.accounts,
            SweepAccounts::Listed(vec!["444455556666".into()])
        );
        assert_eq!(c.sweep_accounts, SweepAccounts::Organization);
    }

    #[test]
    fn a_container_hosts_hop_limit_is_2_unless_set_or_capped_and_a_cap_is_said() {
        let c = Config::default();
        assert_eq!((c.container_hop(), c.notices().len()), (2, 0));
        let one = from(&[("CONTAINER_HOP_LIMIT", "1")]).unwrap();
        assert_eq!((one.container_hop(), one.notices().len()), (1, 0));
        let capped = from(&[("MAX_HOP_LIMIT", "1")]).unwrap();
        assert_eq!(capped.container_hop(), 1);
        let said = capped.notices();
        assert!(
            said.len() == 1 && said[0].contains("capped by MAX_HOP_LIMIT=1"),
            "{said:?}"
        );
        for bad in ["3", "0", "two"] {
            let e = from(&[("CONTAINER_HOP_LIMIT", bad)]).unwrap_err();
            assert_eq!(e.variable, "CONTAINER_HOP_LIMIT");
        }
        let tagged = from(&[("CONTAINER_HOST_TAG", "platform:containers")]).unwrap();
        assert_eq!(
            tagged.container_host_tag.as_deref(),
            Some("platform:containers")
        );
        for bad in ["aws:eks:cluster-name", "imds-guard:status"] {
            let e = from(&[("CONTAINER_HOST_TAG", bad)]).unwrap_err();
            assert_eq!(e.variable, "CONTAINER_HOST_TAG", "{bad}");
        }
    }

    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_enforce_with_standard_tag_and_no_exemptions() {
        let cfg = from(&[]).unwrap();
        assert_eq!(cfg.mode, Mode::Enforce);
        assert_eq!(cfg.status_tag_key, "imds-guard:status");
        assert!(cfg.topic_arn.is_none());
        assert!(cfg.exemptions.tag_key.is_none());
        assert!(cfg.exemptions.principals.is_empty());
        assert!(cfg.max_hop_limit.is_none());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let cfg = from(&[
            ("GUARD_MODE", ""),
            ("NOTIFY_TOPIC_ARN", " "),
            ("MAX_HOP_LIMIT", ""),
        ])
        .unwrap();
        assert_eq!(cfg.mode, Mode::Enforce);
        assert!(cfg.topic_arn.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let cfg = from(&[
            ("GUARD_MODE", "Audit"),
            (
                "NOTIFY_TOPIC_ARN",
                "arn:aws:sns:eu-west-1:123456789012:guard",
            ),
            ("STATUS_TAG_KEY", "sec:imds"),
            ("EXEMPT_TAG_KEY", "sec:imds-exempt"),
            (
                "EXEMPT_PRINCIPAL_ARNS",
                "arn:aws:iam::*:role/packer-*, arn:aws:iam::123456789012:role/Legacy",
            ),
            ("EXEMPT_IMAGE_IDS", "ami-0abcdef1234567890,ami-12345678"),
            ("MAX_HOP_LIMIT", "2"),
            ("RETRY_BUDGET_SECONDS", "30"),
            ("SWEEP_REGIONS", "us-east-1, eu-west-1,us-east-1"),
            ("SET_ACCOUNT_DEFAULT", "True"),
            ("CHECK_METADATA_NO_TOKEN", "yes"),
            ("NO_TOKEN_LOOKBACK_HOURS", "48"),
            ("MEMORY_TABLE", "imds-guard-memory"),
            (
                "FAILED_EVENTS_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/guard-failed-events",
            ),
            ("TRIGGERS", "Both"),
            ("NO_TOKEN_MISSING_AS_ZERO", "true"),
        ])
        .unwrap();
        assert_eq!(cfg.mode, Mode::Audit);
        assert_eq!(
            cfg.topic_arn.as_deref(),
            Some("arn:aws:sns:eu-west-1:123456789012:guard")
        );
        assert_eq!(cfg.status_tag_key, "sec:imds");
        assert_eq!(cfg.exemptions.tag_key.as_deref(), Some("sec:imds-exempt"));
        assert_eq!(cfg.exemptions.principals.len(), 2);
        assert_eq!(
            cfg.exemptions.image_ids,
            vec!["ami-0abcdef1234567890", "ami-12345678"]
        );
        assert_eq!(cfg.max_hop_limit, Some(2));
        assert_eq!(cfg.retry_budget, Duration::from_secs(30));
        assert_eq!(
            cfg.sweep_regions,
            vec!["us-east-1", "eu-west-1"],
            "deduplicated"
        );
        assert!(cfg.set_account_default && cfg.check_metadata_no_token);
        assert_eq!(cfg.no_token_lookback, Duration::from_secs(48 * 3600));
        assert_eq!(cfg.memory_table.as_deref(), Some("imds-guard-memory"));
        assert_eq!(
            cfg.failed_events_queue_url.as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/guard-failed-events")
        );
        assert_eq!(cfg.triggers, Triggers::Both);
        assert!(cfg.no_token_missing_as_zero);
        assert_eq!(cfg.needs_memory(), Ok(()));
        let without = from(&[("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer")]).unwrap();
        let e = without.needs_memory().unwrap_err();
        assert_eq!(e.variable, "EXEMPT_PRINCIPAL_ARNS");
        assert!(e.reason.contains("MEMORY_TABLE"));
    }

    #[test]
    fn sweep_settings_default_to_off_and_a_week() {
        let cfg = from(&[]).unwrap();
        assert!(cfg.sweep_regions.is_empty());
        assert!(!cfg.set_account_default && !cfg.check_metadata_no_token);
        assert_eq!(cfg.no_token_lookback, Duration::from_secs(168 * 3600));
    }

    #[test]
    fn modes_per_account_and_unit_are_read_and_checked_at_init() {
        let central = [("MEMBER_ROLE_NAME", "imds-guard-member")];
        let with = |pairs: &[(&str, &str)]| {
            let mut all = central.to_vec();
            all.extend_from_slice(pairs);
            from(&all)
        };
        let c = with(&[
            ("GUARD_MODE", "enforce"),
            (
                "MODE_OVERRIDES",
                "111122223333=audit, ou-ab12-sandbox01=audit,ou-ab12-prod0001=enforce",
            ),
            ("FIX_SOURCES_OVERRIDES", "ou-ab12-prod0001=true"),
        ])
        .unwrap();
        assert_eq!(c.overrides.len(), 3);
        assert!(c.has_ou_overrides());
        let prod = c
            .overrides
            .iter()
            .find(|o| o.target == "ou-ab12-prod0001")
            .unwrap();
        assert_eq!(
            (prod.mode, prod.fix_sources),
            (Some(Mode::Enforce), Some(true))
        );
        for (name, value, why) in [
            ("MODE_OVERRIDES", "111122223333", "target=value"),
            ("MODE_OVERRIDES", "sandbox=audit", "neither an account id"),
            (
                "MODE_OVERRIDES",
                "111122223333=fix",
                "expected enforce, notify or audit",
            ),
            (
                "MODE_OVERRIDES",
                "111122223333=audit,111122223333=notify",
                "named twice",
            ),
            (
                "FIX_SOURCES_OVERRIDES",
                "ou-ab12-prod0001=maybe",
                "expected true or false",
            ),
        ] {
            let e = with(&[(name, value)]).unwrap_err();
            assert_eq!(e.variable, name);
            assert!(e.reason.contains(why), "{value}: {}", e.reason);
        }
        // A unit needs central mode; an account does not.
        let e = from(&[("MODE_OVERRIDES", "ou-ab12-sandbox01=audit")]).unwrap_err();
        assert!(e.reason.contains("needs central mode"), "{}", e.reason);
        assert!(from(&[("MODE_OVERRIDES", "111122223333=audit")]).is_ok());
        assert!(is_ou_id("r-ab12") && is_ou_id("ou-ab12-cdefgh34"));
        assert!(!is_ou_id("ou-ab12") && !is_ou_id("ou-AB12-cdefgh34") && !is_ou_id("r-a"));
    }

    #[test]
    fn an_account_runs_in_its_own_mode_else_its_nearest_units_else_the_default() {
        let c = from(&[
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("GUARD_MODE", "enforce"),
            ("FIX_SOURCES", "true"),
            (
                "MODE_OVERRIDES",
                "111122223333=notify,ou-ab12-sandbox01=audit,ou-ab12-workload=enforce",
            ),
            ("FIX_SOURCES_OVERRIDES", "ou-ab12-sandbox01=false"),
        ])
        .unwrap();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Its own setting wins over every unit.
        let own = c.for_account("111122223333", Some(&path(&["ou-ab12-sandbox01"])));
        assert_eq!(own.mode, Mode::Notify);
        // The nearest unit: a sandbox inside the workload unit audits.
        let nested = path(&["ou-ab12-sandbox01", "ou-ab12-workload", "r-ab12"]);
        let sandbox = c.for_account("444455556666", Some(&nested));
        assert_eq!((sandbox.mode, sandbox.fix_sources), (Mode::Audit, false));
        let prod = c.for_account("444455556666", Some(&path(&["ou-ab12-workload", "r-ab12"])));
        assert_eq!((prod.mode, prod.fix_sources), (Mode::Enforce, true));
        // Neither: the default.
        let other = c.for_account("777788889999", Some(&path(&["ou-ab12-other001"])));
        assert_eq!((other.mode, other.fix_sources), (Mode::Enforce, true));
        // Units not known yet: the mildest any unit gives, never enforce.
        let unknown = c.for_account("777788889999", None);
        assert_eq!((unknown.mode, unknown.fix_sources), (Mode::Audit, false));
        // Without overrides, the configuration as it is.
        let plain = from(&[("GUARD_MODE", "notify")]).unwrap();
        let same = plain.for_account("777788889999", None);
        assert_eq!((same.mode, same.fix_sources), (Mode::Notify, false));
    }

    #[test]
    fn the_circuit_breaker_has_conservative_defaults_and_reads_its_settings() {
        let d = from(&[]).unwrap();
        assert_eq!(
            (
                d.max_changes_per_event,
                d.max_changes_per_run,
                d.max_change_percent
            ),
            (50, 500, 25)
        );
        let c = from(&[
            ("MAX_CHANGES_PER_EVENT", "5"),
            ("MAX_CHANGES_PER_RUN", " 7000 "),
            ("MAX_CHANGE_PERCENT", "100"),
        ])
        .unwrap();
        assert_eq!(
            (
                c.max_changes_per_event,
                c.max_changes_per_run,
                c.max_change_percent
            ),
            (5, 7000, 100)
        );
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        let cases = [
            ("GUARD_MODE", "fix"),
            ("NOTIFY_TOPIC_ARN", "arn:aws:sqs:us-east-1:123456789012:q"),
            ("NOTIFY_TOPIC_ARN", "my-topic"),
            ("STATUS_TAG_KEY", "aws:thing"),
            ("EXEMPT_TAG_KEY", "imds-guard:status"),
            ("EXEMPT_PRINCIPAL_ARNS", "packer"),
            ("EXEMPT_PRINCIPAL_ARNS", "arn:*"),
            ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/*"),
            (
                "EXEMPT_PRINCIPAL_ARNS",
                "arn:aws:sts::123456789012:assumed-role/Legacy/*",
            ),
            ("EXEMPT_IMAGE_IDS", "ami-xyz"),
            ("MAX_CHANGES_PER_EVENT", "0"),
            ("MAX_CHANGES_PER_EVENT", "many"),
            ("MAX_CHANGES_PER_RUN", "0"),
            ("MAX_CHANGES_PER_RUN", "1000001"),
            ("MAX_CHANGE_PERCENT", "0"),
            ("MAX_CHANGE_PERCENT", "101"),
            ("MAX_CHANGE_PERCENT", "25%"),
            ("EVENTS_GRACE_MINUTES", "4"),
            ("EVENTS_GRACE_MINUTES", "10081"),
            ("MAX_HOP_LIMIT", "0"),
            ("MAX_HOP_LIMIT", "65"),
            ("MAX_HOP_LIMIT", "two"),
            ("RETRY_BUDGET_SECONDS", "0"),
            ("RETRY_BUDGET_SECONDS", "601"),
            ("SWEEP_REGIONS", "us-east-1,Mars"),
            ("SET_ACCOUNT_DEFAULT", "maybe"),
            ("CHECK_METADATA_NO_TOKEN", "on-ish"),
            ("NO_TOKEN_LOOKBACK_HOURS", "0"),
            ("NO_TOKEN_LOOKBACK_HOURS", "2161"),
            (
                "MEMBER_ROLE_NAME",
                "arn:aws:iam::111111111111:role/imds-guard",
            ),
            ("MEMBER_ROLE_NAME", "imds guard"),
            ("MEMBER_ROLE_NAME", "team//imds-guard"),
            ("MEMBER_ROLE_EXTERNAL_ID", "orphan-id"),
            ("ALLOWED_ACCOUNT_IDS", "111111111111,2222"),
            ("SWEEP_ACCOUNTS", "111111111111"),
            ("FAILED_EVENTS_QUEUE_URL", "guard-failed-events"),
            (
                "FAILED_EVENTS_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/guard-failed-events",
            ),
            (
                "FAILED_EVENTS_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/a/b",
            ),
            ("MEMORY_TABLE", "no"),
            ("MEMORY_TABLE", "a table"),
            ("TRIGGERS", "cloudwatch"),
            ("NO_TOKEN_MISSING_AS_ZERO", "perhaps"),
            ("LEGACY_EXEMPT_BEFORE", "last tuesday"),
        ];
        for (var, value) in cases {
            let e = from(&[(var, value)]).expect_err(&format!("{var}={value} should be refused"));
            assert_eq!(e.variable, var);
            assert!(e.to_string().starts_with(&format!("invalid {var}=")), "{e}");
        }
    }

    #[test]
    fn central_mode_settings_are_read_and_checked_together() {
        let cfg = from(&[
            ("MEMBER_ROLE_NAME", "security/imds-guard-member"),
            ("MEMBER_ROLE_EXTERNAL_ID", "o-abc123def4"),
            (
                "ALLOWED_ACCOUNT_IDS",
                "111111111111, 222222222222,111111111111",
            ),
            ("SWEEP_ACCOUNTS", "222222222222"),
        ])
        .unwrap();
        let role = cfg.member_role.as_ref().unwrap();
        assert_eq!(
            role.arn("333333333333", "eu-west-1"),
            "arn:aws:iam::333333333333:role/security/imds-guard-member"
        );
        assert_eq!(
            role.arn("333333333333", "cn-north-1"),
            "arn:aws-cn:iam::333333333333:role/security/imds-guard-member"
        );
        assert_eq!(role.external_id.as_deref(), Some("o-abc123def4"));
        assert_eq!(cfg.allowed_accounts, vec!["111111111111", "222222222222"]);
        assert_eq!(
            cfg.sweep_accounts,
            SweepAccounts::Listed(vec!["222222222222".into()])
        );
        assert_eq!(cfg.refusal(Some("111111111111")), None);
        assert!(
            cfg.refusal(None)
                .is_some_and(|why| why.contains("names no account")),
            "no account, with an allow list: refused, not taken for the own account"
        );
        let single = from(&[]).unwrap();
        assert_eq!(
            single.refusal(None),
            None,
            "one account: the function's own"
        );
        let why = cfg.refusal(Some("999999999999")).unwrap();
        assert!(why.contains("999999999999") && why.contains("ALLOWED_ACCOUNT_IDS"));

        // Without an allow list every account is allowed (the central bus's
        // policy admits the organization only).
        let open = from(&[("MEMBER_ROLE_NAME", "imds-guard-member")]).unwrap();
        assert_eq!(open.refusal(Some("999999999999")), None);
        assert!(
            open.refusal(None).is_some(),
            "central mode: no account, no guess"
        );
        assert_eq!(open.sweep_accounts, SweepAccounts::Own);
        let org = from(&[
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("SWEEP_ACCOUNTS", "organization"),
        ])
        .unwrap();
        assert_eq!(org.sweep_accounts, SweepAccounts::Organization);

        // A sweep list with an account the allow list refuses is a mistake.
        let e = from(&[
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("ALLOWED_ACCOUNT_IDS", "111111111111"),
            ("SWEEP_ACCOUNTS", "111111111111,222222222222"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "SWEEP_ACCOUNTS");
        assert!(e.reason.contains("222222222222"), "{e}");
    }

    #[test]
    fn outputs_are_validated_at_init() {
        // Metrics: on by default, off by choice; a namespace CloudWatch
        // would refuse is refused here.
        let m = from(&[]).unwrap().metrics.unwrap();
        assert_eq!((m.namespace.as_str(), m.per_account), ("ImdsGuard", false));
        assert!(from(&[("METRICS", "false")]).unwrap().metrics.is_none());
        let m = from(&[
            ("METRICS_NAMESPACE", "Security/Imds"),
            ("METRICS_PER_ACCOUNT", "true"),
        ])
        .unwrap()
        .metrics
        .unwrap();
        assert_eq!(
            (m.namespace.as_str(), m.per_account),
            ("Security/Imds", true)
        );
        for bad in ["AWS/EC2", "a:b", "has space"] {
            assert_eq!(
                from(&[("METRICS_NAMESPACE", bad)]).unwrap_err().variable,
                "METRICS_NAMESPACE"
            );
        }
        // A bus by name or by ARN; nothing else.
        assert_eq!(
            from(&[("EVENT_BUS_NAME", "security-news")])
                .unwrap()
                .event_bus
                .as_deref(),
            Some("security-news")
        );
        let arn = "arn:aws:events:eu-west-1:111122223333:event-bus/security-news";
        assert_eq!(
            from(&[("EVENT_BUS_NAME", arn)])
                .unwrap()
                .event_bus
                .as_deref(),
            Some(arn)
        );
        for bad in ["arn:aws:sns:eu-west-1:111122223333:topic", "bus with space"] {
            assert_eq!(
                from(&[("EVENT_BUS_NAME", bad)]).unwrap_err().variable,
                "EVENT_BUS_NAME"
            );
        }
        // A chat card needs a topic to go out on.
        assert_eq!(
            from(&[("CHAT_NOTIFICATIONS", "true")])
                .unwrap_err()
                .variable,
            "CHAT_NOTIFICATIONS"
        );
        assert!(
            from(&[
                ("NOTIFY_TOPIC_ARN", "arn:aws:sns:us-east-1:111122223333:t"),
                ("CHAT_NOTIFICATIONS", "true")
            ])
            .unwrap()
            .chat_notifications
        );
        // Findings need the memory of what was filed.
        let cfg = from(&[("SECURITY_HUB_FINDINGS", "true")]).unwrap();
        assert_eq!(
            cfg.needs_memory().unwrap_err().variable,
            "SECURITY_HUB_FINDINGS"
        );
        let cfg = from(&[
            ("SECURITY_HUB_FINDINGS", "true"),
            ("MEMORY_TABLE", "imds-guard-memory"),
        ])
        .unwrap();
        assert!(cfg.needs_memory().is_ok() && cfg.security_hub_findings);
        assert_eq!(
            from(&[("SECURITY_HUB_FINDINGS", "maybe")])
                .unwrap_err()
                .variable,
            "SECURITY_HUB_FINDINGS"
        );
    }

    #[test]
    fn the_last_mile_is_off_by_default() {
        assert!(!from(&[]).unwrap().lookup_imdsv1_callers);
        assert!(
            from(&[("LOOKUP_IMDSV1_CALLERS", "true")])
                .unwrap()
                .lookup_imdsv1_callers
        );
        assert_eq!(
            from(&[("LOOKUP_IMDSV1_CALLERS", "sometimes")])
                .unwrap_err()
                .variable,
            "LOOKUP_IMDSV1_CALLERS"
        );
    }

    #[test]
    fn a_first_boot_grace_is_bounded_and_needs_its_queue() {
        let url = "https://sqs.us-east-1.amazonaws.com/123456789012/imds-guard-first-boot";
        assert_eq!(from(&[]).unwrap().first_boot_grace, Duration::ZERO);
        let cfg = from(&[
            ("FIRST_BOOT_GRACE_SECONDS", "600"),
            ("FIRST_BOOT_QUEUE_URL", url),
            ("FIRST_BOOT_SENDERS", "AROAGUARDROLE0000001"),
        ])
        .unwrap();
        assert_eq!(cfg.first_boot_grace, Duration::from_secs(600));
        assert_eq!(cfg.first_boot_queue_url.as_deref(), Some(url));
        assert_eq!(cfg.first_boot_senders, ["AROAGUARDROLE0000001"]);
        assert_eq!(cfg.fails_open(), Ok(()));
        for bad in ["3601", "-1", "ten minutes"] {
            assert_eq!(
                from(&[("FIRST_BOOT_GRACE_SECONDS", bad)])
                    .unwrap_err()
                    .variable,
                "FIRST_BOOT_GRACE_SECONDS",
                "{bad}"
            );
        }
        assert!(from(&[("FIRST_BOOT_QUEUE_URL", "not a url")]).is_err());
        assert!(from(&[("FIRST_BOOT_SENDERS", "arn:aws:iam::123456789012:role/x")]).is_err());
        // A grace with nowhere to wait would leave instances to the sweep.
        let e = from(&[("FIRST_BOOT_GRACE_SECONDS", "600")])
            .unwrap()
            .fails_open()
            .unwrap_err();
        assert_eq!(e.variable, "FIRST_BOOT_GRACE_SECONDS");
        assert!(e.reason.contains("FIRST_BOOT_QUEUE_URL"), "{}", e.reason);
    }

    #[test]
    fn the_outputs_senders_are_iam_unique_ids() {
        let cfg = from(&[(
            "OUTPUTS_SENDERS",
            " AROAGUARDROLE0000001 ,AIDAUSER000000000001,",
        )])
        .unwrap();
        assert_eq!(
            cfg.outputs_senders,
            ["AROAGUARDROLE0000001", "AIDAUSER000000000001"]
        );
        assert!(from(&[]).unwrap().outputs_senders.is_empty());
        for bad in [
            "arn:aws:iam::123456789012:role/x",
            "AROA1",
            "aroaguardrole0000001",
        ] {
            assert_eq!(
                from(&[("OUTPUTS_SENDERS", bad)]).unwrap_err().variable,
                "OUTPUTS_SENDERS",
                "{bad}"
            );
        }
        let dlq = "https://sqs.us-east-1.amazonaws.com/123456789012/imds-guard-outputs-dlq";
        let cfg = from(&[("OUTPUTS_DEAD_LETTER_QUEUE_URL", dlq)]).unwrap();
        assert_eq!(cfg.outputs_refused_queue_url.as_deref(), Some(dlq));
        assert!(from(&[("OUTPUTS_DEAD_LETTER_QUEUE_URL", "not a url")]).is_err());
    }

    #[test]
    fn settings_that_would_fail_open_are_refused_naming_the_setting() {
        let principals = ("EXEMPT_PRINCIPAL_ARNS", "arn:aws:iam::*:role/packer-*");
        let sweep = ("SWEEP_SCHEDULE", "rate(1 day)");
        let e = from(&[("TRIGGERS", "state-change"), principals])
            .unwrap()
            .fails_open()
            .unwrap_err();
        assert_eq!(e.variable, "TRIGGERS");
        assert!(e.reason.contains("SWEEP_SCHEDULE"), "{}", e.reason);
        for ok in [
            vec![("TRIGGERS", "state-change"), principals, sweep],
            vec![("TRIGGERS", "both"), principals],
            vec![("TRIGGERS", "state-change")],
        ] {
            assert_eq!(from(&ok).unwrap().fails_open(), Ok(()), "{ok:?}");
        }

        // Units need central mode; there, a scheduled sweep of the
        // organization.
        let central = [
            (
                "MODE_OVERRIDES",
                "ou-ab12-cdefgh34=enforce,111122223333=audit",
            ),
            ("MEMBER_ROLE_NAME", "imds-guard-member"),
            ("MEMBER_ROLE_EXTERNAL_ID", "imds-guard-0123456789"),
        ];
        let e = from(&central).unwrap().fails_open().unwrap_err();
        assert_eq!(e.variable, "MODE_OVERRIDES");
        assert_eq!(e.value, "ou-ab12-cdefgh34");
        let mut swept = central.to_vec();
        swept.push(sweep);
        assert!(
            from(&swept).unwrap().fails_open().is_err(),
            "a sweep of one account"
        );
        swept.push(("SWEEP_ACCOUNTS", "ORGANIZATION"));
        assert_eq!(from(&swept).unwrap().fails_open(), Ok(()));
        // Settings per account need no sweep.
        assert_eq!(
            from(&[("MODE_OVERRIDES", "111122223333=audit")])
                .unwrap()
                .fails_open(),
            Ok(())
        );
        assert!(from(&[("SWEEP_SCHEDULE", "daily")]).is_err());
    }

    #[test]
    fn a_hold_back_ceiling_is_days_from_two_to_a_year() {
        assert_eq!(from(&[]).unwrap().no_token_hold_days, None);
        assert_eq!(
            from(&[("NO_TOKEN_HOLD_DAYS", "14")])
                .unwrap()
                .no_token_hold_days,
            Some(14)
        );
        for bad in ["1", "0", "366", "two weeks"] {
            assert_eq!(
                from(&[("NO_TOKEN_HOLD_DAYS", bad)]).unwrap_err().variable,
                "NO_TOKEN_HOLD_DAYS",
                "{bad}"
            );
        }
    }
}

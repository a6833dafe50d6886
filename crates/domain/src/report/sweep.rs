//! A sweep's report: each account-region's counts, account defaults and
//! readiness, each account's line, the instances refusing IMDSv1 since
//! they were switched, and the summary of them all.

use super::*;

/// One region of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionSweep {
    /// Set when the sweep covers a list of accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    /// The mode this account-region ran in, when modes are set per account
    /// or organizational unit (`MODE_OVERRIDES`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::config::Mode>,
    /// The account's nearest organizational unit, when the sweep read its
    /// units (an organization's sweep, or settings per unit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `server-side filter`, or why the listing was filtered here instead.
    pub listing: String,
    pub pages: u64,
    /// Instances listed (with a server-side filter, only those at `optional`).
    pub examined: u64,
    pub counts: BTreeMap<Outcome, u64>,
    /// Noncompliant instances flagged instead of changed because they
    /// answered IMDSv1 calls in the lookback (`MetadataNoToken`).
    #[serde(skip_serializing_if = "is_zero")]
    pub v1_in_use: u64,
    /// Noncompliant instances whose `MetadataNoToken` data shows no IMDSv1
    /// call in the lookback.
    #[serde(skip_serializing_if = "is_zero")]
    pub v1_unused: u64,
    /// Noncompliant instances with no `MetadataNoToken` data at all (no data
    /// is not zero: held back unless `NO_TOKEN_MISSING_AS_ZERO`).
    #[serde(skip_serializing_if = "is_zero")]
    pub v1_no_data: u64,
    /// Instances the guard switched to `required` that have refused IMDSv1
    /// calls since (`MetadataNoTokenRejected`); listed in the summary's
    /// `refusing_imdsv1`.
    #[serde(skip_serializing_if = "is_zero")]
    pub refusing: u64,
    /// Modify calls EC2 throttled even after the SDK's retries, and that
    /// the sweep slowed down for and retried.
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled: u64,
    /// Launch templates, groups and launch configurations here that would
    /// launch at `optional` (named in the summary's `sources`).
    #[serde(skip_serializing_if = "is_zero")]
    pub sources: u64,
    /// The launch templates, groups or launch configurations here could
    /// not all be read (the reason is among `errors`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sources_unread: bool,
    /// Sources here left at `optional` because an exemption applies
    /// (labels, at most 20): under AWS's enforcement their launches fail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources_exempt: Vec<String>,
    /// Instances the circuit breaker held back this run (each listed,
    /// with the change it would have made).
    #[serde(skip_serializing_if = "is_zero")]
    pub held_by_breaker: u64,
    /// EC2 managed instances left at `optional`: the service that operates
    /// each sets its options (counted among `exempt`, and apart here).
    #[serde(skip_serializing_if = "is_zero")]
    pub managed: u64,
    /// Instances held back because their launcher supports IMDSv2 only
    /// from a version the guard cannot see (`launcher`), until
    /// `MetadataNoToken` shows no IMDSv1 call.
    #[serde(skip_serializing_if = "is_zero")]
    pub version_gated: u64,
    /// Instances launched within `FIRST_BOOT_GRACE_SECONDS` from an AMI
    /// that does not declare `ImdsSupport: v2.0`: not switched yet (each
    /// queued to come back when its grace ends; `first_boot`).
    #[serde(skip_serializing_if = "is_zero")]
    pub first_boot_waiting: u64,
    /// The last mile (`LOOKUP_IMDSV1_CALLERS`): which software used
    /// IMDSv1-delivered credentials on the instances left at `optional`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imdsv1_callers: Option<crate::v1_callers::LastMile>,
    /// Instances this sweep fixed that were launched after the guard began
    /// enforcing here: each an event that never arrived (`watch`).
    #[serde(skip_serializing_if = "is_zero")]
    pub missed_events: u64,
    /// The member role was refused here: no member stack (or one that does
    /// not trust this function).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_member_stack: bool,
    /// Break-glass grants here: each in force, and each that ended since
    /// the last summary (once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub break_glass: Vec<crate::break_glass::GrantView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_defaults: Option<AccountDefaults>,
    /// What was done about the account default.
    pub account_default_action: DefaultsAction,
    pub readiness: Readiness,
    /// Whether IMDSv1 use was measured here, as AWS's own enforcement
    /// needs it: `MetadataNoToken` read, CloudTrail asked about every
    /// instance left at `optional`.
    pub imdsv1_measured: Measured,
    /// What could not be done: the listing stopped or failed, or the
    /// account default could not be set. Each fails the invocation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// What the sweep could not check, by configuration (not a failure).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl RegionSweep {
    pub fn new(region: &str) -> Self {
        RegionSweep {
            account: None,
            region: region.to_string(),
            mode: None,
            unit: None,
            listing: String::new(),
            pages: 0,
            examined: 0,
            counts: BTreeMap::new(),
            v1_in_use: 0,
            v1_unused: 0,
            v1_no_data: 0,
            refusing: 0,
            throttled: 0,
            held_by_breaker: 0,
            managed: 0,
            version_gated: 0,
            first_boot_waiting: 0,
            imdsv1_callers: None,
            missed_events: 0,
            no_member_stack: false,
            break_glass: Vec::new(),
            sources: 0,
            sources_unread: false,
            sources_exempt: Vec::new(),
            account_defaults: None,
            account_default_action: DefaultsAction::None,
            readiness: Readiness::unknown(),
            imdsv1_measured: Measured::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts.get(&outcome).copied().unwrap_or(0)
    }

    /// What the rollout needs of this region (`rollout::step`), with the
    /// sweep's noncompliant `sources` (of every region: this one's are
    /// picked) and the instances it left at `optional`, by source.
    pub fn rollout_facts(&self, sources: &[crate::source::SourceReport]) -> crate::rollout::Facts {
        let here: Vec<&crate::source::SourceReport> = sources
            .iter()
            .filter(|s| {
                s.region.as_deref().is_none_or(|r| r == self.region)
                    && (s.account.is_none() || s.account == self.account)
            })
            .collect();
        let calls = self.imdsv1_callers.as_ref();
        crate::rollout::Facts {
            account: self.account.clone(),
            region: self.region.clone(),
            unit: self.unit.clone(),
            complete: self.errors.is_empty(),
            left_optional: self.count(Outcome::Flagged) + self.count(Outcome::Failed),
            by_source: here
                .iter()
                .filter(|s| s.instances > 0)
                .map(|s| {
                    let owner = s.owner.as_deref().map(|o| format!(", owner {o}"));
                    (
                        format!("{}{}", s.label(), owner.unwrap_or_default()),
                        s.instances,
                    )
                })
                .collect(),
            sources_optional: here
                .iter()
                .filter(|s| s.asks_for_optional())
                .map(|s| s.label())
                .chain(self.sources_exempt.iter().map(|l| format!("{l} (exempt)")))
                .collect(),
            // Set by the sweep, which knows the settings.
            exemptions_configured: Vec::new(),
            sources_read: !self.sources_unread,
            exempt: self.count(Outcome::Exempt).saturating_sub(self.managed),
            managed: self.managed,
            grants: self
                .break_glass
                .iter()
                .filter(|g| g.state == crate::break_glass::State::Active)
                .map(|g| format!("{} until {}", g.target, g.until))
                .collect(),
            v1_in_use: self.v1_in_use,
            v1_credentials: calls
                .map(|m| {
                    m.instances
                        .iter()
                        .filter(|i| !i.seen.callers.is_empty())
                        .map(|i| {
                            let agents: Vec<&str> =
                                i.seen.callers.iter().map(|c| c.agent.as_str()).collect();
                            format!("{}: {}", i.instance_id, agents.join(", "))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            refusing: self.refusing,
            metric_gap: (!self.imdsv1_measured.metadata_no_token).then(|| {
                if self.v1_no_data > 0 {
                    format!(
                        "{} instance(s) at optional have no MetadataNoToken data in the lookback (stopped, or just launched)",
                        self.v1_no_data
                    )
                } else {
                    "MetadataNoToken was not read (CHECK_METADATA_NO_TOKEN is off)".into()
                }
            }),
            credentials_gap: (!self.imdsv1_measured.credentials).then(|| match calls {
                Some(m) if m.not_asked > 0 => format!(
                    "CloudTrail was not asked about {} instance(s) left at optional yet (LOOKUP_IMDSV1_CALLERS' budget a run; the next runs ask them)",
                    m.not_asked
                ),
                Some(_) => "CloudTrail could not be asked about every instance left at optional (see the warnings)".into(),
                None => "CloudTrail was not asked who uses IMDSv1-delivered credentials (LOOKUP_IMDSV1_CALLERS is off)".into(),
            }),
            defaults: self.account_defaults.clone(),
        }
    }
}

/// Whether a region's sweep measured IMDSv1 use (absence of evidence is
/// never proof: what was not measured blocks AWS's own enforcement).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Measured {
    /// `MetadataNoToken` (and `MetadataNoTokenRejected`) were read.
    pub metadata_no_token: bool,
    /// CloudTrail was asked about every instance left at `optional`
    /// (none left counts: no instance can hand out IMDSv1 credentials).
    pub credentials: bool,
}

/// How a sweep reached an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Not yet known (no region of the account recorded).
    #[default]
    Unknown,
    /// The function's own role acted there.
    Own,
    /// Through the member role.
    MemberRole,
    /// Not swept: no region of the account could be (see their errors).
    NotReached,
    /// Not swept: the account is outside `ALLOWED_ACCOUNT_IDS`.
    NotAllowed,
    /// Not swept: its member role was refused (no member stack there, or
    /// one that does not trust this function): its events cannot reach the
    /// guard either.
    NoMemberStack,
}

impl Access {
    pub fn swept(&self) -> bool {
        matches!(self, Access::Own | Access::MemberRole)
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Unknown => Ok(()),
            Access::Own => f.write_str("own account"),
            Access::MemberRole => f.write_str("member role"),
            Access::NotReached => f.write_str("not swept (see its regions' errors)"),
            Access::NotAllowed => f.write_str("not swept: not in ALLOWED_ACCOUNT_IDS"),
            Access::NoMemberStack => f.write_str(
                "not swept: its member role was refused (deploy the member stack there, or check it trusts this function)",
            ),
        }
    }
}

impl Serialize for Access {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One account of a sweep that covers a list of accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountSweep {
    pub account: String,
    /// `own account`, `member role`, or why it was not swept.
    pub access: Access,
    pub counts: BTreeMap<Outcome, u64>,
    pub regions: u64,
    /// Regions of this account that were not swept completely (each named
    /// in `regions` with its errors).
    #[serde(skip_serializing_if = "is_zero")]
    pub regions_incomplete: u64,
}

impl AccountSweep {
    pub fn new(account: &str) -> Self {
        AccountSweep {
            account: account.to_string(),
            access: Access::Unknown,
            counts: BTreeMap::new(),
            regions: 0,
            regions_incomplete: 0,
        }
    }

    /// Adds one region's counts; `own` says the function's own role acted
    /// there, not a member role.
    pub fn add(&mut self, region: &RegionSweep, own: bool) {
        self.regions += 1;
        self.regions_incomplete += u64::from(!region.errors.is_empty());
        for (o, n) in &region.counts {
            *self.counts.entry(*o).or_insert(0) += n;
        }
        let access = if region.no_member_stack {
            Access::NoMemberStack
        } else if region.pages == 0 && !region.errors.is_empty() {
            Access::NotReached
        } else if own {
            Access::Own
        } else {
            Access::MemberRole
        };
        // Any region reached wins over one that was not.
        if !self.access.swept() {
            self.access = access;
        }
    }
}

/// An instance the guard switched to `required` that has refused IMDSv1
/// calls since: a workload enforcing broke, for a person to look at first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Refusing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    pub instance_id: String,
    /// IMDSv1 calls refused since, summed (`MetadataNoTokenRejected`).
    pub refused_calls: f64,
    /// When the guard required tokens, in seconds since the epoch.
    pub remediated_at: u64,
    /// `MetadataNoToken` as the guard last read it before that switch, as
    /// its memory keeps it (the metric reads zero since, by construction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_switch: Option<super::NoToken>,
}

impl Eq for Refusing {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Workloads enforcing broke, first: see `Refusing`. At most
    /// `MAX_REFUSING` are listed; every one is counted in its region.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refusing_imdsv1: Vec<Refusing>,
    pub regions: Vec<RegionSweep>,
    /// One line per account, when the sweep covers a list of accounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountSweep>,
    /// Noncompliant sources (and those that could not be read or fixed),
    /// the ones that launched the most noncompliant instances first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::source::SourceReport>,
    /// Instances with news (changed, flagged, exempt, failed) that the
    /// report's `instances` leaves out to stay bounded; failed ones are
    /// always listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted_instances: u64,
    /// The guard's memory is no longer protected as the stack made it
    /// (its resource policy changed or gone), or could not be checked: the
    /// run fails, naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The way out: where AWS's own enforcement can go on now, and what
    /// blocks it elsewhere (`rollout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_enforcement: Option<crate::rollout::Rollout>,
}

/// Instances listed in `SweepSummary::refusing_imdsv1`, at most.
pub const MAX_REFUSING: usize = 200;

//! The seams between the flows and AWS (the ports): the operations the flows
//! use, in the domain's types, and `Account`, whose credentials act. The SDK
//! adapters implement them for real: `ec2`, `autoscaling`, `sns`, `sqs`,
//! `cloudwatch`, `cloudtrail`, `memory` (DynamoDB), `securityhub`,
//! `eventbridge`, `handoff` (the outputs queue, as Security Hub) and `clients`
//! (`Clients`, which hands them out); this module imports none of them. Tests
//! implement them with mocked SDK clients (request building and error
//! classification) or with an in-memory fake (flow logic).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use crate::event::{Lookup, Observed};
use crate::finding::Finding;
use crate::memory::{Claim, Record};
use crate::notify::Notification;
use crate::policy::{AccountDefaults, Remedy};
use crate::routing::BusEvent;
use crate::source::{Group, LaunchConfiguration, NewVersion, Template, TemplateVersion};

use super::error::AwsError;

/// Whose credentials a client uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// The function's own (its execution role).
    Home,
    /// A member account, through its member role.
    Member(String),
    /// A member account, through its member role in the self-check's own
    /// session (`probe::SESSION_NAME`), so CloudTrail tells its dry runs
    /// from the guard's work (and from a stolen role's).
    Probe(String),
}

impl Account {
    pub fn id<'a>(&'a self, home: Option<&'a str>) -> Option<&'a str> {
        match self {
            Account::Home => home,
            Account::Member(id) | Account::Probe(id) => Some(id),
        }
    }
}

/// One page of a sweep's listing.
#[derive(Debug, Default)]
pub struct Page {
    pub instances: Vec<Observed>,
    pub next_token: Option<String>,
    /// The account that owns the instances (so a sweep from the command
    /// line can name its account without another call).
    pub owner: Option<String>,
}

/// EC2, as the guard uses it in one account and region.
pub trait Ec2Api: Send + Sync {
    /// The instances among `ids` that EC2 shows now (absent: not shown yet,
    /// or no longer).
    fn describe(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Observed>, AwsError>> + Send;
    /// Sets every metadata option the remedy names, explicitly.
    fn modify(
        &self,
        instance_id: &str,
        remedy: &Remedy,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The instances of one launch whose event did not list them: by its
    /// reservation id, else its client token (empty: not shown yet).
    fn describe_launch(
        &self,
        lookup: &Lookup,
    ) -> impl Future<Output = Result<Vec<Observed>, AwsError>> + Send;
    /// Sets one tag on many instances.
    fn tag(
        &self,
        ids: &[String],
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// One page of the instances that can still serve IMDS; with
    /// `only_optional`, EC2 leaves out those already at `required`.
    fn list_page(
        &self,
        only_optional: bool,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page, AwsError>> + Send;
    /// One page of the live instances whose tag `key` is `value`.
    fn list_tagged(
        &self,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page, AwsError>> + Send;
    /// One page of the region's launch templates: those named (by id or
    /// name), or every one when none is named.
    fn launch_templates(
        &self,
        ids: &[String],
        names: &[String],
        token: Option<String>,
    ) -> impl Future<Output = Result<(Vec<Template>, Option<String>), AwsError>> + Send;
    /// Versions of one template (`$Default`, `$Latest`, or numbers).
    fn template_versions(
        &self,
        template_id: &str,
        versions: &[String],
    ) -> impl Future<Output = Result<Vec<TemplateVersion>, AwsError>> + Send;
    /// A new version from `v.from`, with `v.options` as its whole
    /// `MetadataOptions` block (EC2 copies the rest of the source's data);
    /// returns its number.
    fn create_template_version(
        &self,
        v: &NewVersion,
    ) -> impl Future<Output = Result<i64, AwsError>> + Send;
    /// Makes `version` the template's default.
    fn set_default_version(
        &self,
        template_id: &str,
        version: i64,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Each of these AMIs that EC2 shows, and whether its `ImdsSupport` is
    /// `v2.0` (an AMI not shown is absent).
    fn images(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, bool)>, AwsError>> + Send;
    /// The account's IMDS defaults for new launches.
    fn metadata_defaults(&self) -> impl Future<Output = Result<AccountDefaults, AwsError>> + Send;
    /// Sets the account default to `HttpTokens=required`, and nothing else.
    fn require_tokens_by_default(&self) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Sets the account's `HttpTokens` and `HttpTokensEnforced` defaults
    /// (`imds-guard enforce-native`, as a person: the guard's roles are not
    /// allowed to touch `HttpTokensEnforced`).
    fn set_native_defaults(
        &self,
        http_tokens: &str,
        http_tokens_enforced: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Up to `n` running or stopped instances (the self-check picks its
    /// targets among them).
    fn sample(&self, n: i32) -> impl Future<Output = Result<Vec<Observed>, AwsError>> + Send;
    /// Sends one write with `DryRun=true` and says what EC2 answered.
    fn dry_run(
        &self,
        request: &crate::probe::Request,
    ) -> impl Future<Output = crate::probe::Answer> + Send;
}

/// SNS: one message to one topic.
pub trait Publisher: Send + Sync {
    /// Publishes; returns the message id. With `chat`, a body per protocol:
    /// the Chatbot card for `https`, the usual body for every other.
    fn publish(
        &self,
        topic_arn: &str,
        n: &Notification,
        chat: bool,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// Security Hub, in one account and region.
pub trait FindingsApi: Send + Sync {
    /// Imports (creates or updates) at most 100 findings; returns those
    /// Security Hub refused, with why.
    fn import(
        &self,
        findings: &[Finding],
    ) -> impl Future<Output = Result<Vec<(String, String)>, AwsError>> + Send;
    /// Whether it only hands the findings on (to the outputs function,
    /// which files and remembers them) rather than filing them itself.
    fn hands_off(&self) -> bool {
        false
    }
}

/// The EventBridge bus the guard's news is put on.
pub trait EventsApi: Send + Sync {
    /// Puts at most 10 events (256 KB); returns those refused, with why.
    fn put(
        &self,
        events: &[BusEvent],
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
    /// The bus, as the report names it.
    fn bus(&self) -> &str;
}

/// Auto Scaling, as the guard uses it in one account and region.
pub trait AutoScalingApi: Send + Sync {
    /// One page of the region's groups: those named, or every one.
    fn groups(
        &self,
        names: &[String],
        token: Option<String>,
    ) -> impl Future<Output = Result<(Vec<Group>, Option<String>), AwsError>> + Send;
    /// One page of launch configurations: those named, or every one.
    fn launch_configurations(
        &self,
        names: &[String],
        token: Option<String>,
    ) -> impl Future<Output = Result<(Vec<LaunchConfiguration>, Option<String>), AwsError>> + Send;
    /// Sets one tag on a group, not propagated to the instances it launches.
    fn tag_group(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Where a message that could not be published is kept for a person.
pub trait QueueApi: Send + Sync {
    /// Keeps `body`, with a `kind` attribute that tells it from the failed
    /// invocations beside it.
    fn keep(&self, body: &str, kind: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// As `keep`, delivered only `seconds` from now (SQS's `DelaySeconds`,
    /// at most 900): how a first boot is waited for without a running
    /// function (`first_boot`).
    fn delay(
        &self,
        body: &str,
        kind: &str,
        seconds: u64,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// CloudWatch, for `MetadataNoToken` and `MetadataNoTokenRejected`.
pub trait MetricsApi: Send + Sync {
    /// IMDSv1 calls each instance answered in the last `lookback`, summed;
    /// instances with no data points at all are absent (no data is not
    /// zero: a stopped instance reports nothing).
    fn no_token_calls(
        &self,
        ids: &[String],
        lookback: Duration,
    ) -> impl Future<Output = Result<HashMap<String, f64>, AwsError>> + Send;
    /// IMDSv1 calls each instance refused since its time (seconds since the
    /// epoch), within the last `lookback`: what requiring tokens broke.
    /// Instances with none are absent.
    fn rejected_calls(
        &self,
        since: &[(String, u64)],
        lookback: Duration,
    ) -> impl Future<Output = Result<HashMap<String, f64>, AwsError>> + Send;
}

/// CloudTrail's own record of an event (a launch a principal exemption
/// rests on: `confirm`).
pub trait TrailApi: Send + Sync {
    /// The record of event `event_id`, in the account and region this
    /// client calls; `None` when CloudTrail has none (yet).
    fn event(
        &self,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<crate::confirm::TrailRecord>, AwsError>> + Send;
    /// One page (at most 50) of the management events user `name` made
    /// since `start` (seconds since the epoch), in the account and region
    /// this client calls: each record's JSON (`CloudTrailEvent`), and the
    /// token of the next page. For an assumed role, the user name is the
    /// role session name: an instance role's is the instance id.
    fn user_events(
        &self,
        name: &str,
        start: u64,
        next: Option<String>,
    ) -> impl Future<Output = Result<(Vec<String>, Option<String>), AwsError>> + Send;
}

/// The guard's memory (docs/design.md).
pub trait MemoryApi: Send + Sync {
    /// Writes `record` unless a live record with its key was written by
    /// another event.
    fn claim(
        &self,
        record: &Record,
        now: u64,
    ) -> impl Future<Output = Result<Claim, AwsError>> + Send;
    /// Writes every record, replacing any with the same key.
    fn put(&self, records: &[Record]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// One page of those records, after the sort key `after`; and the sort
    /// key to read the next page after, if there is one.
    fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        now: u64,
        after: Option<String>,
    ) -> impl Future<Output = Result<(Vec<Record>, Option<String>), AwsError>> + Send;
    /// The live records of partition `pk` whose sort key starts with `prefix`.
    fn query(
        &self,
        pk: &str,
        prefix: &str,
        now: u64,
    ) -> impl Future<Output = Result<Vec<Record>, AwsError>> + Send;
    /// The table's resource policy (`GetResourcePolicy` on `table_arn`);
    /// `None` when it has none.
    fn policy(
        &self,
        table_arn: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
}

/// Hands out clients by account and region.
pub trait Clients: Send + Sync {
    type Ec2: Ec2Api;
    type Sns: Publisher;
    type Metrics: MetricsApi;
    type Memory: MemoryApi;
    type Queue: QueueApi;
    type AutoScaling: AutoScalingApi;
    type Findings: FindingsApi;
    type Events: EventsApi;
    type Trail: TrailApi;

    fn ec2(&self, account: &Account, region: &str) -> Self::Ec2;
    /// CloudTrail in `account` and `region` (a member's through its role).
    fn trail(&self, account: &Account, region: &str) -> Self::Trail;
    /// Notifications go out from the function's own account.
    fn sns(&self, region: &str) -> Self::Sns;
    fn autoscaling(&self, account: &Account, region: &str) -> Self::AutoScaling;
    fn metrics(&self, account: &Account, region: &str) -> Self::Metrics;
    /// Security Hub in `account` and `region` (a member account's through
    /// its role: findings are filed from the instance's own account).
    /// `None`: this binary does not carry Security Hub's client (the event
    /// function's; its findings are filed by the sweep).
    fn findings(&self, account: &Account, region: &str) -> Option<Self::Findings>;
    /// The bus for the guard's news, when one is configured (`EVENT_BUS_NAME`).
    fn events(&self) -> Option<Self::Events>;
    /// The guard's memory, when one is configured (`MEMORY_TABLE`).
    fn memory(&self) -> Option<Self::Memory>;
    /// The failed-events queue, when one is configured
    /// (`FAILED_EVENTS_QUEUE_URL`).
    fn failed_events_queue(&self) -> Option<Self::Queue>;
    /// The queue to the outputs function, when one is configured
    /// (`OUTPUTS_QUEUE_URL`): how a binary without Security Hub's or
    /// EventBridge's client has its findings filed and events put.
    fn handoff(&self) -> Option<Self::Queue> {
        None
    }
    /// The queue where first boots are waited for, when one is configured
    /// (`FIRST_BOOT_QUEUE_URL`): each waiting instance comes back in a
    /// delayed message (`first_boot`).
    fn first_boot_queue(&self) -> Option<Self::Queue> {
        None
    }
    /// The outputs function's dead-letter queue, when one is configured
    /// (`OUTPUTS_DEAD_LETTER_QUEUE_URL`): where it keeps a message it
    /// refuses, with the reason.
    fn refusals(&self) -> Option<Self::Queue> {
        None
    }
    /// The function's own account, when it must be named (an event that
    /// names none, a sweep of the own account): asked of STS once.
    fn home_account(&self) -> impl Future<Output = Result<String, AwsError>> + Send {
        async {
            Err(AwsError::Api {
                code: "NotConfigured".into(),
                message: "these clients cannot name their account".into(),
            })
        }
    }
    /// The region the clients' own configuration names (the function's):
    /// where a run that names none works.
    fn home_region(&self) -> Option<String> {
        None
    }
    /// Who is calling (the caller's ARN, as STS names it): the command
    /// line's break-glass grants record it.
    fn caller(&self) -> impl Future<Output = Result<String, AwsError>> + Send {
        async {
            Err(AwsError::Api {
                code: "NotConfigured".into(),
                message: "these clients cannot name their caller".into(),
            })
        }
    }
    /// AWS's time, in seconds since the epoch, as the last `caller`
    /// answer's `Date` said: what a grant is stamped with, so a skewed
    /// laptop clock does not decide how long a grant stands. `None` when no
    /// answer carried one.
    fn aws_now(&self) -> Option<u64> {
        None
    }
    /// Requests sent so far (every attempt, retries included), by operation.
    fn calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// As `enter`, in the self-check's own role-session
    /// (`probe::SESSION_NAME`): its dry runs are told apart in CloudTrail.
    fn enter_for_self_check(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> impl Future<Output = Result<Account, AwsError>> + Send {
        self.enter(account, region)
    }
    /// Which credentials act in `account` (`None`: the function's own): in
    /// central mode, a member account's role, assumed (and cached) by the
    /// adapter; otherwise the function's own role acts, whatever the event.
    fn enter(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> impl Future<Output = Result<Account, AwsError>> + Send {
        let _ = (account, region);
        async { Ok(Account::Home) }
    }
    /// The organizational units `account` is in, nearest first, up to the
    /// root (the sweep's: the event path reads what the sweep remembered).
    fn account_units(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send {
        let _ = account;
        async {
            Err(AwsError::Api {
                code: "NotConfigured".into(),
                message: "these clients cannot read the organization's units".into(),
            })
        }
    }
    /// Every active account of the organization.
    fn organization_accounts(&self) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send {
        async {
            Err(AwsError::Api {
                code: "NotConfigured".into(),
                message: "these clients cannot list the organization's accounts".into(),
            })
        }
    }
}

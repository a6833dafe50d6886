//! An in-memory AWS for tests of flow logic: the few operations the event
//! path and the sweep use (describe, modify, tag, list, defaults, publish,
//! the metric), kept in plain maps, with faults scripted per operation. It
//! sits beside the mocked SDK clients (`common`), which test what only the
//! SDK can show (request building, error classification); this fake tests
//! what the flows do with the answers, without HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imds_guard::aws::{
    Account, AutoScalingApi, AwsError, Clients, Ec2Api, EventsApi, FindingsApi, MemoryApi,
    MetricsApi, Page, Publisher, QueueApi,
};
use imds_guard::event::{Lookup, MetadataOptions, Observed};
use imds_guard::finding::Finding;
use imds_guard::memory::{Claim, Record};
use imds_guard::notify::Notification;
use imds_guard::policy::{AccountDefaults, Remedy};
use imds_guard::routing::BusEvent;
use imds_guard::source::{Group, LaunchConfiguration, NewVersion, Template, TemplateVersion};

/// One fake instance: what EC2 would show, and how it misbehaves.
/// Who the fake's caller is (`Clients::caller`).
pub const RESPONDER: &str = "arn:aws:sts::111122223333:assumed-role/Responder/alice";

#[derive(Clone, Debug)]
pub struct FakeInstance {
    pub observed: Observed,
    /// Describes that still answer without it (eventual consistency).
    pub invisible_for: u32,
    /// Modifies still refused with `IncorrectInstanceState` (pending).
    pub pending_for: u32,
    /// Pending until then (paused time): modifies are refused and describes
    /// say `pending` before it, `running` after.
    pub pending_until: Option<tokio::time::Instant>,
    /// The launch it came from.
    pub reservation_id: Option<String>,
    pub client_token: Option<String>,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, FakeInstance>,
    /// `None`: the account-defaults API answers an error.
    defaults: Option<AccountDefaults>,
    published: Vec<Notification>,
    /// Scripted failures: the next calls of an operation fail with these.
    faults: HashMap<&'static str, VecDeque<AwsError>>,
    /// Reads of the memory whose sort-key prefix starts so fail, always.
    unreadable: Vec<(String, AwsError)>,
    no_token: HashMap<String, f64>,
    rejected: HashMap<String, f64>,
    calls: BTreeMap<String, u64>,
    page_size: usize,
    /// Pages by offset into the filtered list, rather than by cursor: what
    /// a token could do if EC2 counted positions.
    offset_pages: bool,
    /// The guard's memory, when the fake has one.
    memory: Option<BTreeMap<(String, String), Record>>,
    required_at: HashMap<String, tokio::time::Instant>,
    /// How long each listed page takes to answer (paused time).
    list_delay: Duration,
    /// The failed-events queue, when the fake has one: what was kept there.
    kept: Option<Vec<String>>,
    /// Launch templates and their versions (the template's tags on it).
    templates: BTreeMap<String, (Template, BTreeMap<i64, TemplateVersion>)>,
    groups: Vec<Group>,
    configurations: Vec<LaunchConfiguration>,
    /// AMIs: whether each has `ImdsSupport` v2.0.
    images: HashMap<String, bool>,
    /// Security Hub, by finding id (`None`: not enabled here).
    findings: Option<BTreeMap<String, Finding>>,
    /// The events put on the bus (`None`: no bus).
    bus: Option<Vec<BusEvent>>,
    /// As the event function: no Security Hub or EventBridge client.
    without_outputs: bool,
    /// Messages sent to the outputs function (`None`: no such queue).
    handed_off: Option<Vec<String>>,
    /// The outputs function's dead-letter queue: what it refused.
    refused: Option<Vec<String>>,
    /// The first-boot queue (`None`: no such queue): each message with its
    /// delay in seconds.
    first_boot: Option<Vec<(String, u64)>>,
    /// AWS's clock, as its answers' `Date` says (`None`: no `Date`).
    aws_clock: Option<u64>,
    /// The memory table's resource policy.
    memory_policy: Option<String>,
    /// CloudTrail's records, by event id.
    trail: HashMap<String, imds_guard::confirm::TrailRecord>,
    /// CloudTrail's records by user name (a role session's: an instance
    /// id), each with its time.
    user_events: HashMap<String, Vec<(u64, String)>>,
    /// Tags the guard wrote on groups.
    group_tags: Vec<(String, String, String)>,
    /// The organization's accounts (`None`: not an organization).
    organization: Option<Vec<String>>,
    /// Each account's organizational units, nearest first.
    units: HashMap<String, Vec<String>>,
    /// Latency, rate limits and transient errors (`org_sim`): none unless set.
    pace: Option<Arc<Pace>>,
    /// This cloud's token buckets, by operation: (tokens, when last filled).
    buckets: HashMap<&'static str, (f64, tokio::time::Instant)>,
}

/// How a simulated AWS answers: each call takes its latency; each
/// operation has a token bucket (capacity, refill per second) per cloud,
/// as EC2 throttles per account and region; some answers are transient
/// errors. Throttled and transient answers are retried the way the SDK's
/// standard retry mode does (3 retries, exponential backoff with jitter)
/// before the guard sees an error.
pub struct Pace {
    pub latency: HashMap<&'static str, Duration>,
    pub default_latency: Duration,
    pub buckets: HashMap<&'static str, (f64, f64)>,
    /// Out of 10,000 calls.
    pub transient_per_10k: u64,
    draws: std::sync::atomic::AtomicU64,
    /// SDK-level retries, throttled answers, transient answers.
    pub retries: std::sync::atomic::AtomicU64,
    pub throttled: std::sync::atomic::AtomicU64,
    pub transient: std::sync::atomic::AtomicU64,
}

impl Pace {
    pub fn new(
        latency: HashMap<&'static str, Duration>,
        default_latency: Duration,
        buckets: HashMap<&'static str, (f64, f64)>,
        transient_per_10k: u64,
    ) -> Self {
        Pace {
            latency,
            default_latency,
            buckets,
            transient_per_10k,
            draws: std::sync::atomic::AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            retries: Default::default(),
            throttled: Default::default(),
            transient: Default::default(),
        }
    }

    /// A deterministic draw in 0..10,000 (a shared xorshift).
    pub fn draw(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let mut x = self.draws.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.draws.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 10_000
    }
}

/// The fake cloud: one account and region's worth of EC2, a topic, a metric.
#[derive(Clone, Default)]
pub struct FakeCloud(Arc<Mutex<State>>);

impl FakeCloud {
    pub fn new() -> Self {
        let cloud = FakeCloud::default();
        cloud.state().page_size = 1000;
        // Wired as the event and sweep functions are in production: no
        // Security Hub or EventBridge client, a queue to the outputs
        // function. A test of what files directly (the command line, the
        // outputs function) says so: `as_event_function(false)`.
        cloud.as_event_function(true);
        cloud
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Adds a running instance with these tokens and hop limit.
    pub fn add(&self, id: &str, tokens: &str, hop: i32) -> &Self {
        self.add_instance(FakeInstance {
            observed: Observed {
                instance_id: id.into(),
                image_id: Some("ami-0c02fb55956c7d316".into()),
                state: Some("running".into()),
                options: MetadataOptions {
                    http_tokens: Some(tokens.into()),
                    http_endpoint: Some("enabled".into()),
                    http_put_response_hop_limit: Some(hop),
                    http_protocol_ipv6: Some("disabled".into()),
                    instance_metadata_tags: Some("disabled".into()),
                },
                tags: Some(vec![]),
                ..Observed::default()
            },
            invisible_for: 0,
            pending_for: 0,
            pending_until: None,
            reservation_id: None,
            client_token: None,
        })
    }

    pub fn add_instance(&self, i: FakeInstance) -> &Self {
        self.state()
            .instances
            .insert(i.observed.instance_id.clone(), i);
        self
    }

    /// EC2 no longer shows it (terminated long enough ago).
    pub fn remove(&self, id: &str) {
        self.state().instances.remove(id);
    }

    pub fn edit(&self, id: &str, f: impl FnOnce(&mut FakeInstance)) {
        f(self.state().instances.get_mut(id).expect("a fake instance"));
    }

    pub fn set_defaults(&self, d: Option<AccountDefaults>) {
        self.state().defaults = d;
    }

    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n;
    }

    pub fn set_no_token(&self, id: &str, calls: f64) {
        self.state().no_token.insert(id.into(), calls);
    }

    pub fn set_rejected(&self, id: &str, calls: f64) {
        self.state().rejected.insert(id.into(), calls);
    }

    /// Each page of a listing takes this long to answer.
    pub fn set_list_delay(&self, d: Duration) {
        self.state().list_delay = d;
    }

    pub fn set_offset_pages(&self) {
        self.state().offset_pages = true;
    }

    /// Gives the fake a memory (an empty table).
    pub fn with_memory(&self) -> &Self {
        self.state().memory = Some(BTreeMap::new());
        self
    }

    /// Adds a launch template whose versions are `versions` (number,
    /// options), default `default`.
    pub fn add_template(
        &self,
        id: &str,
        tags: &[(&str, &str)],
        default: i64,
        versions: &[(i64, Option<MetadataOptions>)],
    ) {
        let latest = versions.iter().map(|(n, _)| *n).max().unwrap_or(1);
        let t = Template {
            id: id.into(),
            name: Some(format!("{id}-name")),
            default_version: default,
            latest_version: latest,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_by: Some("arn:aws:iam::111122223333:role/platform".into()),
            operator: None,
        };
        let vs = versions
            .iter()
            .map(|(n, o)| {
                (
                    *n,
                    TemplateVersion {
                        template_id: id.into(),
                        version: *n,
                        description: None,
                        options: o.clone(),
                        image_id: Some("ami-0c02fb55956c7d316".into()),
                    },
                )
            })
            .collect();
        self.state().templates.insert(id.into(), (t, vs));
    }

    pub fn set_organization(&self, accounts: Vec<String>) {
        self.state().organization = Some(accounts);
    }

    pub fn set_units(&self, account: &str, units: &[&str]) {
        self.state().units.insert(
            account.to_string(),
            units.iter().map(|u| u.to_string()).collect(),
        );
    }

    pub fn add_group(&self, g: Group) {
        self.state().groups.push(g);
    }

    pub fn add_configuration(&self, c: LaunchConfiguration) {
        self.state().configurations.push(c);
    }

    pub fn set_image(&self, id: &str, v2: bool) {
        self.state().images.insert(id.into(), v2);
    }

    /// A template as it is now: itself and its versions.
    pub fn template(&self, id: &str) -> (Template, Vec<TemplateVersion>) {
        let s = self.state();
        let (t, vs) = &s.templates[id];
        (t.clone(), vs.values().cloned().collect())
    }

    /// Tags written on groups: (group, key, value).
    pub fn group_tags(&self) -> Vec<(String, String, String)> {
        self.state().group_tags.clone()
    }

    /// Gives the fake a failed-events queue.
    pub fn with_failed_events_queue(&self) -> &Self {
        self.state().kept = Some(Vec::new());
        self
    }

    /// The messages kept in the failed-events queue.
    pub fn kept(&self) -> Vec<String> {
        self.state().kept.clone().unwrap_or_default()
    }

    /// The live records whose sort key starts with `prefix`, in any partition.
    pub fn records(&self, prefix: &str) -> Vec<Record> {
        self.state()
            .memory
            .iter()
            .flat_map(|m| m.values())
            .filter(|r| r.sk.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn put_record(&self, r: Record) {
        self.state()
            .memory
            .get_or_insert_with(BTreeMap::new)
            .insert((r.pk.clone(), r.sk.clone()), r);
    }

    /// The next `n` calls of `op` fail with `error`.
    pub fn fail(&self, op: &'static str, n: usize, error: AwsError) {
        let mut s = self.state();
        let q = s.faults.entry(op).or_default();
        q.extend(std::iter::repeat_n(error, n));
    }

    /// Every read of the memory's records of one kind (a sort-key prefix
    /// such as `exempt#`) fails with `error`; the other kinds read well.
    pub fn fail_reads_of(&self, prefix: &str, error: AwsError) {
        self.state().unreadable.push((prefix.to_string(), error));
    }

    /// When the instance's tokens became `required` (paused time), if they did.
    pub fn required_at(&self, id: &str) -> Option<tokio::time::Instant> {
        self.state().required_at.get(id).copied()
    }

    pub fn tokens(&self, id: &str) -> String {
        self.state().instances[id]
            .observed
            .options
            .http_tokens
            .clone()
            .unwrap_or_default()
    }

    pub fn hop(&self, id: &str) -> Option<i32> {
        self.state().instances[id]
            .observed
            .options
            .http_put_response_hop_limit
    }

    pub fn tag(&self, id: &str, key: &str) -> Option<String> {
        self.state().instances[id]
            .observed
            .tag(key)
            .map(str::to_string)
    }

    pub fn defaults(&self) -> Option<AccountDefaults> {
        self.state().defaults.clone()
    }

    pub fn published(&self) -> Vec<Notification> {
        self.state().published.clone()
    }

    /// Security Hub is enabled here (findings are kept).
    pub fn with_security_hub(&self) -> &Self {
        self.state().findings = Some(BTreeMap::new());
        self
    }

    /// The findings Security Hub holds, by id.
    pub fn findings(&self) -> BTreeMap<String, Finding> {
        self.state().findings.clone().unwrap_or_default()
    }

    /// A bus for the guard's news.
    pub fn with_bus(&self) -> &Self {
        self.state().bus = Some(Vec::new());
        self
    }

    /// The events put on the bus.
    pub fn routed(&self) -> Vec<BusEvent> {
        self.state().bus.clone().unwrap_or_default()
    }

    /// As the event function (`on`): no Security Hub or EventBridge
    /// client, and a queue to the outputs function; off: as the outputs
    /// function, which has both.
    pub fn as_event_function(&self, on: bool) -> &Self {
        let mut s = self.state();
        s.without_outputs = on;
        s.handed_off.get_or_insert_with(Vec::new);
        drop(s);
        self
    }

    /// No outputs queue either (`OUTPUTS_QUEUE_URL` unset).
    pub fn without_outputs_queue(&self) -> &Self {
        self.state().handed_off = None;
        self
    }

    /// CloudTrail's record of event `event_id` (`LookupEvents` finds it).
    pub fn record_in_trail(
        &self,
        event_id: &str,
        record: imds_guard::confirm::TrailRecord,
    ) -> &Self {
        self.state().trail.insert(event_id.to_string(), record);
        self
    }

    /// The sort keys of the memory's records that start with `prefix`.
    pub fn memory_keys(&self, prefix: &str) -> Vec<String> {
        self.state()
            .memory
            .as_ref()
            .map(|m| {
                m.keys()
                    .filter(|(_, sk)| sk.starts_with(prefix))
                    .map(|(_, sk)| sk.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A record CloudTrail keeps of a call by user `name` at `time`.
    pub fn record_user_event(&self, name: &str, time: u64, record: &str) -> &Self {
        self.state()
            .user_events
            .entry(name.to_string())
            .or_default()
            .push((time, record.to_string()));
        self
    }

    /// The memory table's resource policy, as `GetResourcePolicy` returns it.
    pub fn set_memory_policy(&self, policy: Option<String>) -> &Self {
        self.state().memory_policy = policy;
        self
    }

    /// AWS's answers dated `secs` (the laptop's clock may differ).
    pub fn set_aws_clock(&self, secs: u64) -> &Self {
        self.state().aws_clock = Some(secs);
        self
    }

    /// An outputs dead-letter queue for what the outputs function refuses.
    pub fn with_refusals_queue(&self) -> &Self {
        self.state().refused.get_or_insert_with(Vec::new);
        self
    }

    /// What the outputs function refused and kept, each with its reason.
    pub fn refused(&self) -> Vec<serde_json::Value> {
        self.state()
            .refused
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    /// A first-boot queue, where waiting instances are delayed.
    pub fn with_first_boot_queue(&self) -> &Self {
        self.state().first_boot.get_or_insert_with(Vec::new);
        self
    }

    /// The delayed messages sent to the first-boot queue, each with its
    /// delay, taken off it.
    pub fn take_delayed(&self) -> Vec<(String, u64)> {
        std::mem::take(self.state().first_boot.get_or_insert_with(Vec::new))
    }

    /// The messages sent to the outputs function, taken off its queue.
    pub fn take_handed_off(&self) -> Vec<String> {
        std::mem::take(self.state().handed_off.get_or_insert_with(Vec::new))
    }

    /// Every call so far, by operation.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.state().calls.clone()
    }

    pub fn count(&self, op: &str) -> u64 {
        self.state().calls.get(op).copied().unwrap_or(0)
    }

    /// Gives this cloud a pace (`org_sim`).
    pub fn with_pace(&self, pace: Arc<Pace>) -> &Self {
        self.state().pace = Some(pace);
        self
    }

    /// Takes the call's time, and answers as a rate-limited, sometimes
    /// failing AWS would after the SDK's retries; nothing without a pace.
    async fn pace(&self, op: &'static str) -> Result<(), AwsError> {
        use std::sync::atomic::Ordering;
        let Some(pace) = self.state().pace.clone() else {
            return Ok(());
        };
        let mut backoff = Duration::from_millis(50);
        for attempt in 0..=3 {
            tokio::time::sleep(*pace.latency.get(op).unwrap_or(&pace.default_latency)).await;
            let admitted = match pace.buckets.get(op) {
                None => true,
                Some(&(capacity, refill)) => {
                    let now = tokio::time::Instant::now();
                    let mut s = self.state();
                    let (tokens, at) = s.buckets.entry(op).or_insert((capacity, now));
                    *tokens =
                        (*tokens + now.duration_since(*at).as_secs_f64() * refill).min(capacity);
                    *at = now;
                    if *tokens >= 1.0 {
                        *tokens -= 1.0;
                        true
                    } else {
                        false
                    }
                }
            };
            let fault = if !admitted {
                pace.throttled.fetch_add(1, Ordering::Relaxed);
                Some("RequestLimitExceeded")
            } else if pace.draw() < pace.transient_per_10k {
                pace.transient.fetch_add(1, Ordering::Relaxed);
                Some("InternalError")
            } else {
                None
            };
            let Some(code) = fault else {
                return Ok(());
            };
            if attempt == 3 {
                return Err(api_error(code));
            }
            pace.retries.fetch_add(1, Ordering::Relaxed);
            // Full jitter, as the SDK's standard mode.
            let jitter = pace.draw() as f64 / 10_000.0;
            tokio::time::sleep(backoff.mul_f64(jitter.max(0.1))).await;
            backoff *= 2;
        }
        Ok(())
    }

    /// Counts the call, and answers the scripted fault if one is due.
    fn call(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, State>, AwsError> {
        let mut s = self.state();
        *s.calls.entry(op.to_string()).or_insert(0) += 1;
        match s.faults.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }

    /// A guard on this cloud, with these settings (a later setting of a
    /// name wins), wired as the event and sweep functions are.
    pub fn guard(&self, settings: &[(&str, &str)]) -> imds_guard::guard::Guard<FakeClients> {
        imds_guard::guard::Guard::new(crate::common::config(settings), self.clients())
    }

    /// A guard on this cloud built from named presets and settings, so a
    /// test says at its call what it runs with:
    /// `cloud.test_guard().notifying().remembering().with(&[..]).build()`.
    pub fn test_guard(&self) -> TestGuard<'_> {
        TestGuard {
            cloud: self,
            settings: Vec::new(),
        }
    }

    pub fn clients(&self) -> FakeClients {
        FakeClients(self.clone())
    }
}

/// The settings of a guard on the fake, built up (`FakeCloud::test_guard`);
/// a later setting of a name wins.
pub struct TestGuard<'c> {
    cloud: &'c FakeCloud,
    settings: Vec<(String, String)>,
}

impl TestGuard<'_> {
    fn set(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Tells a topic (`NOTIFY_TOPIC_ARN`, `crate::common::TOPIC`).
    pub fn notifying(self) -> Self {
        self.set("NOTIFY_TOPIC_ARN", crate::common::TOPIC)
    }

    /// Has a memory (`MEMORY_TABLE`).
    pub fn remembering(self) -> Self {
        self.set("MEMORY_TABLE", crate::common::MEMORY_TABLE)
    }

    /// Files findings (`SECURITY_HUB_FINDINGS`).
    pub fn filing(self) -> Self {
        self.set("SECURITY_HUB_FINDINGS", "true")
    }

    /// Fixes what it finds (`GUARD_MODE=enforce`).
    pub fn enforcing(self) -> Self {
        self.set("GUARD_MODE", "enforce")
    }

    /// Any other settings, after the presets.
    pub fn with(mut self, settings: &[(&str, &str)]) -> Self {
        for (name, value) in settings {
            self = self.set(name, value);
        }
        self
    }

    pub fn build(self) -> imds_guard::guard::Guard<FakeClients> {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.cloud.guard(&settings)
    }
}

pub fn api_error(code: &str) -> AwsError {
    AwsError::Api {
        code: code.into(),
        message: format!("fake {code}"),
    }
}

pub struct FakeClients(FakeCloud);

impl Clients for FakeClients {
    type Ec2 = FakeCloud;
    type Sns = FakeCloud;
    type Metrics = FakeCloud;
    type Memory = FakeCloud;
    type Queue = FakeCloud;
    type AutoScaling = FakeCloud;
    type Findings = FakeCloud;
    type Events = FakeCloud;
    type Trail = FakeCloud;

    fn ec2(&self, _account: &Account, _region: &str) -> FakeCloud {
        self.0.clone()
    }
    fn trail(&self, _account: &Account, _region: &str) -> FakeCloud {
        self.0.clone()
    }
    fn findings(&self, _account: &Account, _region: &str) -> Option<FakeCloud> {
        (!self.0.state().without_outputs).then(|| self.0.clone())
    }
    fn events(&self) -> Option<FakeCloud> {
        let s = self.0.state();
        (s.bus.is_some() && !s.without_outputs).then(|| self.0.clone())
    }
    fn handoff(&self) -> Option<FakeCloud> {
        self.0.state().handed_off.is_some().then(|| self.0.clone())
    }
    fn refusals(&self) -> Option<FakeCloud> {
        self.0.state().refused.is_some().then(|| self.0.clone())
    }
    fn first_boot_queue(&self) -> Option<FakeCloud> {
        self.0.state().first_boot.is_some().then(|| self.0.clone())
    }
    fn sns(&self, _region: &str) -> FakeCloud {
        self.0.clone()
    }
    fn autoscaling(&self, _account: &Account, _region: &str) -> FakeCloud {
        self.0.clone()
    }
    fn metrics(&self, _account: &Account, _region: &str) -> FakeCloud {
        self.0.clone()
    }
    fn memory(&self) -> Option<FakeCloud> {
        self.0.state().memory.is_some().then(|| self.0.clone())
    }
    fn failed_events_queue(&self) -> Option<FakeCloud> {
        self.0.state().kept.is_some().then(|| self.0.clone())
    }
    async fn home_account(&self) -> Result<String, AwsError> {
        Ok("111122223333".into())
    }
    async fn caller(&self) -> Result<String, AwsError> {
        Ok(RESPONDER.into())
    }
    fn aws_now(&self) -> Option<u64> {
        self.0.state().aws_clock
    }
    async fn account_units(&self, account: &str) -> Result<Vec<String>, AwsError> {
        let s = self.0.call("ListParents")?;
        s.units
            .get(account)
            .cloned()
            .ok_or_else(|| api_error("ChildNotFoundException"))
    }
    async fn organization_accounts(&self) -> Result<Vec<String>, AwsError> {
        let s = self.0.call("ListAccounts")?;
        s.organization
            .clone()
            .ok_or_else(|| api_error("AWSOrganizationsNotInUseException"))
    }
    fn calls(&self) -> BTreeMap<String, u64> {
        self.0.state().calls.clone()
    }
}

const LIVE: [&str; 4] = ["pending", "running", "stopping", "stopped"];

impl Ec2Api for FakeCloud {
    async fn describe(&self, ids: &[String]) -> Result<Vec<Observed>, AwsError> {
        self.pace("DescribeInstances").await?;
        let mut s = self.call("DescribeInstances")?;
        let mut found = Vec::new();
        for id in ids {
            let Some(i) = s.instances.get_mut(id) else {
                continue;
            };
            if i.invisible_for > 0 {
                i.invisible_for -= 1;
                continue;
            }
            if let Some(t) = i.pending_until {
                let now = tokio::time::Instant::now();
                i.observed.state = Some(if now < t { "pending" } else { "running" }.into());
            }
            found.push(i.observed.clone());
        }
        Ok(found)
    }

    async fn describe_launch(&self, lookup: &Lookup) -> Result<Vec<Observed>, AwsError> {
        self.pace("DescribeInstances").await?;
        let mut s = self.call("DescribeInstances")?;
        let mut found = Vec::new();
        for i in s.instances.values_mut() {
            let same = match (&lookup.reservation_id, &lookup.client_token) {
                (Some(r), _) => i.reservation_id.as_ref() == Some(r),
                (None, Some(t)) => i.client_token.as_ref() == Some(t),
                (None, None) => false,
            };
            if !same {
                continue;
            }
            if i.invisible_for > 0 {
                i.invisible_for -= 1;
                continue;
            }
            found.push(i.observed.clone());
        }
        Ok(found)
    }

    async fn modify(&self, instance_id: &str, remedy: &Remedy) -> Result<(), AwsError> {
        self.pace("ModifyInstanceMetadataOptions").await?;
        let mut s = self.call("ModifyInstanceMetadataOptions")?;
        let Some(i) = s.instances.get_mut(instance_id) else {
            return Err(api_error("InvalidInstanceID.NotFound"));
        };
        if i.pending_for > 0 {
            i.pending_for -= 1;
            return Err(api_error("IncorrectInstanceState"));
        }
        if i.pending_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return Err(api_error("IncorrectInstanceState"));
        }
        let o = &mut i.observed.options;
        if o.http_tokens.as_deref() != Some("required") && remedy.http_tokens == "required" {
            let at = tokio::time::Instant::now();
            s.required_at.entry(instance_id.to_string()).or_insert(at);
            let o = &mut s.instances.get_mut(instance_id).unwrap().observed.options;
            apply(o, remedy);
            return Ok(());
        }
        apply(o, remedy);
        Ok(())
    }

    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        self.pace("CreateTags").await?;
        let mut s = self.call("CreateTags")?;
        for id in ids {
            if let Some((t, _)) = s.templates.get_mut(id) {
                t.tags.retain(|(k, _)| k != key);
                t.tags.push((key.into(), value.into()));
            }
            if let Some(tags) = s
                .instances
                .get_mut(id)
                .and_then(|i| i.observed.tags.as_mut())
            {
                tags.retain(|(k, _)| k != key);
                tags.push((key.into(), value.into()));
            }
        }
        Ok(())
    }

    async fn list_page(
        &self,
        only_optional: bool,
        token: Option<String>,
    ) -> Result<Page, AwsError> {
        let delay = self.state().list_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.pace("DescribeInstances").await?;
        let s = self.call("DescribeInstances")?;
        // Pages as a cursor (the next starts after the last id returned),
        // or by offset into the filtered list. EC2's tokens are opaque.
        let live = |o: &&Observed| {
            o.state.as_deref().is_some_and(|st| LIVE.contains(&st))
                && (!only_optional || o.options.http_tokens.as_deref() == Some("optional"))
        };
        if s.offset_pages {
            let start: usize = token.as_deref().map_or(0, |t| t.parse().unwrap_or(0));
            let matching: Vec<Observed> = s
                .instances
                .values()
                .map(|i| &i.observed)
                .filter(live)
                .cloned()
                .collect();
            let end = (start + s.page_size).min(matching.len());
            return Ok(Page {
                instances: matching.get(start..end).unwrap_or_default().to_vec(),
                next_token: (end < matching.len()).then(|| end.to_string()),
                owner: Some("111122223333".into()),
            });
        }
        let after = token.unwrap_or_default();
        let mut matching = s
            .instances
            .range::<String, _>((
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, i)| &i.observed)
            .filter(live);
        let instances: Vec<Observed> = matching.by_ref().take(s.page_size).cloned().collect();
        let more = matching.next().is_some();
        Ok(Page {
            next_token: more
                .then(|| instances.last().map(|o| o.instance_id.clone()))
                .flatten(),
            instances,
            owner: Some("111122223333".into()),
        })
    }

    async fn list_tagged(
        &self,
        key: &str,
        value: &str,
        _token: Option<String>,
    ) -> Result<Page, AwsError> {
        self.pace("DescribeInstances").await?;
        let s = self.call("DescribeInstances")?;
        Ok(Page {
            instances: s
                .instances
                .values()
                .map(|i| &i.observed)
                .filter(|o| o.tag(key) == Some(value))
                .cloned()
                .collect(),
            next_token: None,
            owner: Some("111122223333".into()),
        })
    }

    async fn launch_templates(
        &self,
        ids: &[String],
        names: &[String],
        _token: Option<String>,
    ) -> Result<(Vec<Template>, Option<String>), AwsError> {
        self.pace("DescribeLaunchTemplates").await?;
        let s = self.call("DescribeLaunchTemplates")?;
        let all = ids.is_empty() && names.is_empty();
        Ok((
            s.templates
                .values()
                .map(|(t, _)| t)
                .filter(|t| {
                    all || ids.contains(&t.id) || t.name.as_ref().is_some_and(|n| names.contains(n))
                })
                .cloned()
                .collect(),
            None,
        ))
    }

    async fn template_versions(
        &self,
        template_id: &str,
        versions: &[String],
    ) -> Result<Vec<TemplateVersion>, AwsError> {
        self.pace("DescribeLaunchTemplateVersions").await?;
        let s = self.call("DescribeLaunchTemplateVersions")?;
        let Some((t, vs)) = s.templates.get(template_id) else {
            return Err(api_error("InvalidLaunchTemplateId.NotFound"));
        };
        let mut wanted: Vec<i64> = versions
            .iter()
            .filter_map(|v| match v.as_str() {
                "$Default" => Some(t.default_version),
                "$Latest" => Some(t.latest_version),
                n => n.parse().ok(),
            })
            .collect();
        wanted.sort();
        wanted.dedup();
        Ok(wanted.iter().filter_map(|n| vs.get(n).cloned()).collect())
    }

    /// As real EC2 does: the source version's data, with the new
    /// `MetadataOptions` block in place of its own.
    async fn create_template_version(&self, v: &NewVersion) -> Result<i64, AwsError> {
        self.pace("CreateLaunchTemplateVersion").await?;
        let mut s = self.call("CreateLaunchTemplateVersion")?;
        let Some((t, vs)) = s.templates.get_mut(&v.template_id) else {
            return Err(api_error("InvalidLaunchTemplateId.NotFound"));
        };
        let Some(from) = vs.get(&v.from).cloned() else {
            return Err(api_error("InvalidLaunchTemplateVersion.NotFound"));
        };
        t.latest_version += 1;
        let n = t.latest_version;
        vs.insert(
            n,
            TemplateVersion {
                version: n,
                description: Some(imds_guard::source::fix_description(v.from)),
                options: Some(v.options.clone()),
                ..from
            },
        );
        Ok(n)
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), AwsError> {
        self.pace("ModifyLaunchTemplate").await?;
        let mut s = self.call("ModifyLaunchTemplate")?;
        let Some((t, _)) = s.templates.get_mut(template_id) else {
            return Err(api_error("InvalidLaunchTemplateId.NotFound"));
        };
        t.default_version = version;
        Ok(())
    }

    async fn images(&self, ids: &[String]) -> Result<Vec<(String, bool)>, AwsError> {
        self.pace("DescribeImages").await?;
        let s = self.call("DescribeImages")?;
        Ok(ids
            .iter()
            .filter_map(|i| Some((i.clone(), *s.images.get(i)?)))
            .collect())
    }

    async fn metadata_defaults(&self) -> Result<AccountDefaults, AwsError> {
        self.pace("GetInstanceMetadataDefaults").await?;
        let s = self.call("GetInstanceMetadataDefaults")?;
        s.defaults.clone().ok_or_else(|| api_error("HTTP500"))
    }

    async fn require_tokens_by_default(&self) -> Result<(), AwsError> {
        self.pace("ModifyInstanceMetadataDefaults").await?;
        let mut s = self.call("ModifyInstanceMetadataDefaults")?;
        s.defaults
            .get_or_insert_with(AccountDefaults::default)
            .http_tokens = Some("required".into());
        Ok(())
    }

    async fn set_native_defaults(
        &self,
        http_tokens: &str,
        http_tokens_enforced: &str,
    ) -> Result<(), AwsError> {
        self.pace("ModifyInstanceMetadataDefaults").await?;
        let mut s = self.call("ModifyInstanceMetadataDefaults")?;
        let d = s.defaults.get_or_insert_with(AccountDefaults::default);
        // EC2 reports a cleared default as absent.
        let keep = |v: &str| (v != "no-preference").then(|| v.to_string());
        d.http_tokens = keep(http_tokens);
        d.http_tokens_enforced = keep(http_tokens_enforced);
        Ok(())
    }

    async fn sample(&self, n: i32) -> Result<Vec<Observed>, AwsError> {
        let s = self.call("DescribeInstances")?;
        Ok(s.instances
            .values()
            .map(|i| i.observed.clone())
            .filter(|o| matches!(o.state.as_deref(), Some("running" | "stopped")))
            .take(usize::try_from(n).unwrap_or(0))
            .collect())
    }

    /// Like the local emulator, the fake ignores DryRun: it answers a
    /// success, which the self-check must take as "probe unsafe".
    async fn dry_run(&self, _: &imds_guard::probe::Request) -> imds_guard::probe::Answer {
        imds_guard::probe::Answer::Applied
    }
}

impl AutoScalingApi for FakeCloud {
    async fn groups(
        &self,
        names: &[String],
        _token: Option<String>,
    ) -> Result<(Vec<Group>, Option<String>), AwsError> {
        self.pace("DescribeAutoScalingGroups").await?;
        let s = self.call("DescribeAutoScalingGroups")?;
        Ok((
            s.groups
                .iter()
                .filter(|g| names.is_empty() || names.contains(&g.name))
                .cloned()
                .collect(),
            None,
        ))
    }

    async fn launch_configurations(
        &self,
        names: &[String],
        _token: Option<String>,
    ) -> Result<(Vec<LaunchConfiguration>, Option<String>), AwsError> {
        self.pace("DescribeLaunchConfigurations").await?;
        let s = self.call("DescribeLaunchConfigurations")?;
        Ok((
            s.configurations
                .iter()
                .filter(|c| names.is_empty() || names.contains(&c.name))
                .cloned()
                .collect(),
            None,
        ))
    }

    async fn tag_group(&self, name: &str, key: &str, value: &str) -> Result<(), AwsError> {
        self.pace("CreateOrUpdateTags").await?;
        let mut s = self.call("CreateOrUpdateTags")?;
        s.group_tags.push((name.into(), key.into(), value.into()));
        Ok(())
    }
}

impl FindingsApi for FakeCloud {
    /// As Security Hub: a finding with a known id is replaced, unless the
    /// update's `UpdatedAt` is not newer than the one held (Security Hub
    /// ignores it); not enabled, `InvalidAccessException`.
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        assert!(
            findings.len() <= 100,
            "BatchImportFindings takes 100 at most"
        );
        self.pace("BatchImportFindings").await?;
        let mut s = self.call("BatchImportFindings")?;
        let Some(held) = s.findings.as_mut() else {
            return Err(api_error("InvalidAccessException"));
        };
        for f in findings {
            if held
                .get(&f.id)
                .is_some_and(|h| h.updated_at >= f.updated_at)
            {
                continue;
            }
            held.insert(f.id.clone(), f.clone());
        }
        Ok(Vec::new())
    }
}

impl EventsApi for FakeCloud {
    async fn put(&self, events: &[BusEvent]) -> Result<Vec<String>, AwsError> {
        assert!(events.len() <= 10, "PutEvents takes 10 at most");
        let mut s = self.call("PutEvents")?;
        s.bus
            .get_or_insert_with(Vec::new)
            .extend(events.iter().cloned());
        Ok(Vec::new())
    }
    fn bus(&self) -> &str {
        "fake-bus"
    }
}

impl Publisher for FakeCloud {
    async fn publish(
        &self,
        _topic_arn: &str,
        n: &Notification,
        _chat: bool,
    ) -> Result<String, AwsError> {
        self.pace("Publish").await?;
        let mut s = self.call("Publish")?;
        s.published.push(n.clone());
        Ok(format!("m-{}", s.published.len()))
    }
}

impl QueueApi for FakeCloud {
    async fn keep(&self, body: &str, kind: &str) -> Result<(), AwsError> {
        self.pace("SendMessage").await?;
        let mut s = self.call("SendMessage")?;
        // The failed-events queue and the outputs queue, told apart by the
        // kind attribute each message carries.
        if kind == imds_guard::handoff::KIND {
            s.handed_off
                .get_or_insert_with(Vec::new)
                .push(body.to_string());
        } else if kind == imds_guard::handoff::REFUSED_KIND {
            s.refused
                .get_or_insert_with(Vec::new)
                .push(body.to_string());
        } else {
            s.kept.get_or_insert_with(Vec::new).push(body.to_string());
        }
        Ok(())
    }

    async fn delay(&self, body: &str, kind: &str, seconds: u64) -> Result<(), AwsError> {
        self.pace("SendMessage").await?;
        let mut s = self.call("SendMessage")?;
        assert_eq!(
            kind,
            imds_guard::first_boot::KIND,
            "only first boots are delayed"
        );
        assert!(seconds <= 900, "SQS delays at most 900 s, not {seconds}");
        s.first_boot
            .get_or_insert_with(Vec::new)
            .push((body.to_string(), seconds));
        Ok(())
    }
}

impl imds_guard::aws::TrailApi for FakeCloud {
    async fn event(
        &self,
        event_id: &str,
    ) -> Result<Option<imds_guard::confirm::TrailRecord>, AwsError> {
        self.pace("LookupEvents").await?;
        let s = self.call("LookupEvents")?;
        Ok(s.trail.get(event_id).cloned())
    }

    /// Pages of 50, as CloudTrail's; the token is the next page's index.
    async fn user_events(
        &self,
        name: &str,
        start: u64,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), AwsError> {
        self.pace("LookupEvents").await?;
        let s = self.call("LookupEvents")?;
        let all: Vec<&(u64, String)> = s
            .user_events
            .get(name)
            .map(|v| v.iter().filter(|(t, _)| *t >= start).collect())
            .unwrap_or_default();
        let page: usize = next.as_deref().map_or(0, |t| t.parse().unwrap());
        let records = all
            .iter()
            .skip(page * 50)
            .take(50)
            .map(|(_, r)| r.clone())
            .collect();
        let more = all.len() > (page + 1) * 50;
        Ok((records, more.then(|| (page + 1).to_string())))
    }
}

impl MemoryApi for FakeCloud {
    async fn policy(&self, _table_arn: &str) -> Result<Option<String>, AwsError> {
        let s = self.call("GetResourcePolicy")?;
        Ok(s.memory_policy.clone())
    }

    /// Pages of two records, to make a reader follow them.
    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        now: u64,
        after: Option<String>,
    ) -> Result<(Vec<Record>, Option<String>), AwsError> {
        self.pace("Query").await?;
        let s = self.call("Query")?;
        if let Some((_, e)) = s.unreadable.iter().find(|(p, _)| prefix.starts_with(p)) {
            return Err(e.clone());
        }
        let page: Vec<Record> = s
            .memory
            .iter()
            .flat_map(|m| m.values())
            .filter(|r| r.pk == pk && r.sk.starts_with(prefix) && r.live(now))
            .filter(|r| after.as_ref().is_none_or(|a| r.sk > *a))
            .take(2)
            .cloned()
            .collect();
        let next = (page.len() == 2).then(|| page[1].sk.clone());
        Ok((page, next))
    }

    async fn claim(&self, r: &Record, now: u64) -> Result<Claim, AwsError> {
        self.pace("PutItem").await?;
        let mut s = self.call("PutItem")?;
        let memory = s.memory.get_or_insert_with(BTreeMap::new);
        let key = (r.pk.clone(), r.sk.clone());
        if let Some(old) = memory.get(&key) {
            if !old.free_for(r.event_id.as_deref(), now) {
                return Ok(Claim::Taken);
            }
        }
        memory.insert(key, r.clone());
        Ok(Claim::Ours)
    }

    async fn put(&self, records: &[Record]) -> Result<(), AwsError> {
        if records.is_empty() {
            return Ok(());
        }
        self.pace("BatchWriteItem").await?;
        let mut s = self.call("BatchWriteItem")?;
        let memory = s.memory.get_or_insert_with(BTreeMap::new);
        for r in records {
            memory.insert((r.pk.clone(), r.sk.clone()), r.clone());
        }
        Ok(())
    }

    async fn query(&self, pk: &str, prefix: &str, now: u64) -> Result<Vec<Record>, AwsError> {
        self.pace("Query").await?;
        let s = self.call("Query")?;
        if let Some((_, e)) = s.unreadable.iter().find(|(p, _)| prefix.starts_with(p)) {
            return Err(e.clone());
        }
        Ok(s.memory
            .iter()
            .flat_map(|m| m.values())
            .filter(|r| r.pk == pk && r.sk.starts_with(prefix) && r.live(now))
            .cloned()
            .collect())
    }
}

impl MetricsApi for FakeCloud {
    async fn no_token_calls(
        &self,
        ids: &[String],
        _lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        self.pace("GetMetricData").await?;
        let s = self.call("GetMetricData")?;
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.clone(), *s.no_token.get(id)?)))
            .collect())
    }

    async fn rejected_calls(
        &self,
        since: &[(String, u64)],
        _lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        self.pace("GetMetricData").await?;
        let s = self.call("GetMetricData")?;
        Ok(since
            .iter()
            .filter_map(|(id, _)| Some((id.clone(), *s.rejected.get(id)?)))
            .collect())
    }
}

/// What EC2 does with a modify: sets what it names and keeps what it omits
/// (the endpoint always, the hop limit unless lowered).
fn apply(o: &mut imds_guard::event::MetadataOptions, remedy: &Remedy) {
    o.http_tokens = Some(remedy.http_tokens.into());
    if let Some(hop) = remedy.http_put_response_hop_limit {
        o.http_put_response_hop_limit = Some(hop);
    }
}

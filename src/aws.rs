//! Every AWS call the function makes, behind small adapters that speak the
//! domain's types. Errors are classified here, once: what to retry, what is
//! a missing permission (named, never retried), what means the instance is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::{ConfigBag, RuntimeComponents};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataProtocolState,
    InstanceMetadataTagsState, Tag,
};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};

use crate::config::MemberRole;
use crate::event::{MetadataOptions, Observed};
pub use crate::member_roles::Account;
use crate::member_roles::{MemberCredentials, MemberRoles};
use crate::notify::Notification;
use crate::policy::{AccountDefaults, Remedy};

/// Instance ids per `DescribeInstances` / `CreateTags` call.
const IDS_PER_CALL: usize = 200;
/// Instances per page when sweeping: `DescribeInstances` allows up to 1,000.
pub const SWEEP_PAGE_SIZE: i32 = 1000;
/// `GetMetricData` takes at most 500 queries per call.
const QUERIES_PER_CALL: usize = 500;
/// The states a sweep looks at: everything that can still serve IMDS.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// The function's role lacks a permission: retrying cannot help.
    #[error("{code}: the function's role is not allowed {permission} ({message})")]
    Unauthorized {
        code: String,
        permission: &'static str,
        message: String,
    },
    /// A service error, after the SDK's own retries.
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// No answer: connection refused or reset, timeout.
    #[error("no answer from {service}: {message}")]
    Transport {
        service: &'static str,
        message: String,
    },
    /// The member role could not be assumed (central mode).
    #[error("could not assume {role_arn}: {cause}{}", .cause.member_hint())]
    MemberRole {
        role_arn: String,
        cause: Box<AwsError>,
    },
}

impl AwsError {
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Unauthorized { code, .. } | AwsError::Api { code, .. } => Some(code),
            AwsError::Transport { .. } => None,
            AwsError::MemberRole { cause, .. } => cause.code(),
        }
    }

    /// This error, as met while assuming `role_arn`.
    pub fn assuming(self, role_arn: &str) -> AwsError {
        AwsError::MemberRole {
            role_arn: role_arn.to_string(),
            cause: Box::new(self),
        }
    }

    /// What a refused AssumeRole most often means, for the reader.
    fn member_hint(&self) -> &'static str {
        if self.is_unauthorized() {
            "; is the member stack deployed in that account, trusting this function's role (and external id)?"
        } else {
            ""
        }
    }

    /// EC2 does not show the instance yet (eventual consistency), or any more.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some("InvalidInstanceID.NotFound")
    }

    /// The instance is not in a state that accepts the change (`pending`).
    pub fn is_incorrect_state(&self) -> bool {
        self.code() == Some("IncorrectInstanceState")
    }

    /// EC2 (or another service) asks us to slow down, after the SDK's retries.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "RequestThrottledException"
                    | "TooManyRequestsException"
            )
        )
    }

    pub fn is_unauthorized(&self) -> bool {
        match self {
            AwsError::Unauthorized { .. } => true,
            AwsError::MemberRole { cause, .. } => cause.is_unauthorized(),
            _ => false,
        }
    }

    pub(crate) fn classify<E>(
        err: SdkError<E, HttpResponse>,
        service: &'static str,
        permission: &'static str,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // A service answer EC2 could not explain (an HTML 500 from a proxy
        // or an emulator) is still an answer: name its status, not the
        // parser's complaint.
        if err.code().is_none() {
            if let SdkError::ServiceError(se) = &err {
                return AwsError::Api {
                    code: format!("HTTP{}", se.raw().status().as_u16()),
                    message: format!("{service} answered with an unreadable error response"),
                };
            }
        }
        // A member role's credentials that could not be had: say so, not
        // "no answer from ec2" (the provider's error is deep in the chain).
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            if let Some(e) = e.downcast_ref::<AwsError>() {
                return e.clone();
            }
            source = e.source();
        }
        let code = err.code().map(str::to_string);
        let message = err
            .message()
            .map(|m| crate::validate::clean(m, 300))
            .unwrap_or_else(|| crate::validate::clean(&DisplayErrorContext(&err).to_string(), 300));
        match code {
            Some(code)
                if code.contains("UnauthorizedOperation")
                    || code == "AccessDenied"
                    || code == "AuthorizationError"
                    || code == "AccessDeniedException" =>
            {
                // The encoded authorization message is long and opaque; keep
                // only its start, the permission is named for the reader.
                AwsError::Unauthorized {
                    code,
                    permission,
                    message: crate::validate::clean(&message, 120),
                }
            }
            Some(code) => AwsError::Api { code, message },
            None => AwsError::Transport { service, message },
        }
    }
}

/// Shared SDK settings: the SDK retries throttling and 5xx with backoff
/// (standard mode), and no call may hang past the function's timeout.
pub fn sdk_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
}

pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

/// A sweep's listing pages: large responses, so longer than `sdk_timeouts`.
pub fn page_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(90))
        .operation_timeout(Duration::from_secs(240))
        .build()
}

/// Loads the SDK configuration once (credentials chain, `AWS_ENDPOINT_URL`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(sdk_retry())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

/// Hands out clients by account and region.
pub trait Clients: Send + Sync {
    fn ec2(&self, account: &Account, region: &str) -> Ec2;
    /// Notifications go out from the function's own account.
    fn sns(&self, region: &str) -> Sns;
    fn metrics(&self, account: &Account, region: &str) -> Metrics;
    /// Requests sent so far (every attempt, retries included), by operation.
    fn calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// Central mode's member roles, when configured.
    fn member_roles(&self) -> Option<&MemberRoles> {
        None
    }
    /// Which credentials act in `account` (`None`: the function's own): in
    /// central mode, a member account's role, assumed here (and cached);
    /// otherwise the function's own role acts, whatever the event.
    fn enter(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> impl std::future::Future<Output = Result<Account, AwsError>> + Send {
        async move {
            match self.member_roles() {
                Some(members) => members.enter(account, region).await,
                None => Ok(Account::Home),
            }
        }
    }
    /// Every active account of the organization.
    fn organization_accounts(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<String>, AwsError>> + Send {
        async {
            Err(AwsError::Api {
                code: "NotConfigured".into(),
                message: "these clients cannot list the organization's accounts".into(),
            })
        }
    }
}

type Key = (Account, String);

/// One client per service, account and region, built on first use and kept
/// for the life of the process (warm invocations reuse connections and
/// credentials).
pub struct RegionalClients {
    base: SdkConfig,
    ec2: Mutex<HashMap<Key, aws_sdk_ec2::Client>>,
    sns: Mutex<HashMap<Key, aws_sdk_sns::Client>>,
    metrics: Mutex<HashMap<Key, aws_sdk_cloudwatch::Client>>,
    counter: CallCounter,
    /// Central mode: the member role, assumed per account and region.
    members: Option<Arc<MemberRoles>>,
}

impl RegionalClients {
    pub fn new(base: SdkConfig) -> Self {
        RegionalClients {
            base,
            ec2: Mutex::new(HashMap::new()),
            sns: Mutex::new(HashMap::new()),
            metrics: Mutex::new(HashMap::new()),
            counter: CallCounter::default(),
            members: None,
        }
    }

    /// Central mode: act in member accounts through `role`.
    pub fn with_member_role(mut self, role: Option<MemberRole>) -> Self {
        self.members = role.map(|role| {
            Arc::new(MemberRoles::new(
                role,
                self.base.clone(),
                self.counter.clone(),
            ))
        });
        self
    }

    /// A client's configuration: the function's own credentials, or the
    /// member role's for a member account (cached by `MemberRoles`, which
    /// renews them, so the SDK's own identity cache is left out).
    fn layer<B>(&self, account: &Account, region: &str, builder: B) -> B
    where
        B: ConfigFor,
    {
        let b = builder
            .region(Region::new(region.to_string()))
            .interceptor(self.counter.clone());
        match (account, &self.members) {
            (Account::Member(id), Some(members)) => b.member(members.provider(id, region)),
            _ => b,
        }
    }
}

/// What `layer` needs of each service's config builder.
trait ConfigFor: Sized {
    fn region(self, region: Region) -> Self;
    fn interceptor(self, counter: CallCounter) -> Self;
    fn member(self, provider: MemberCredentials) -> Self;
}

macro_rules! config_for {
    ($($krate:ident),*) => {$(
        impl ConfigFor for $krate::config::Builder {
            fn region(self, region: Region) -> Self {
                $krate::config::Builder::region(self, region)
            }
            fn interceptor(self, counter: CallCounter) -> Self {
                $krate::config::Builder::interceptor(self, counter)
            }
            fn member(self, provider: MemberCredentials) -> Self {
                self.credentials_provider(provider)
                    .identity_cache($krate::config::IdentityCache::no_cache())
            }
        }
    )*};
}
config_for!(aws_sdk_ec2, aws_sdk_sns, aws_sdk_cloudwatch);

/// Counts the requests each client sends, by operation: the figure behind
/// "AWS calls per instance", measured where the SDK transmits (so retries
/// count), not where our code asks.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "imds-guard call counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map_or("unknown", Metadata::name)
            .to_string();
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_insert(0) += 1;
        Ok(())
    }
}

fn cached<C: Clone>(
    map: &Mutex<HashMap<Key, C>>,
    account: &Account,
    region: &str,
    build: impl FnOnce() -> C,
) -> C {
    // A poisoned lock only means another thread panicked while inserting;
    // the map itself is still a valid cache.
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry((account.clone(), region.to_string()))
        .or_insert_with(build)
        .clone()
}

impl Clients for RegionalClients {
    fn ec2(&self, account: &Account, region: &str) -> Ec2 {
        Ec2(cached(&self.ec2, account, region, || {
            let b = aws_sdk_ec2::config::Builder::from(&self.base);
            aws_sdk_ec2::Client::from_conf(self.layer(account, region, b).build())
        }))
    }

    fn sns(&self, region: &str) -> Sns {
        Sns(cached(&self.sns, &Account::Home, region, || {
            let b = aws_sdk_sns::config::Builder::from(&self.base);
            aws_sdk_sns::Client::from_conf(self.layer(&Account::Home, region, b).build())
        }))
    }

    fn metrics(&self, account: &Account, region: &str) -> Metrics {
        Metrics(cached(&self.metrics, account, region, || {
            let b = aws_sdk_cloudwatch::config::Builder::from(&self.base);
            aws_sdk_cloudwatch::Client::from_conf(self.layer(account, region, b).build())
        }))
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.counter.snapshot()
    }

    fn member_roles(&self) -> Option<&MemberRoles> {
        self.members.as_deref()
    }

    async fn organization_accounts(&self) -> Result<Vec<String>, AwsError> {
        // Organizations answers in one region per partition; us-east-1 for
        // the commercial one (the endpoint resolver knows the others).
        let region = match self.base.region().map(|r| r.as_ref()) {
            Some(r) if r.starts_with("cn-") => "cn-northwest-1",
            Some(r) if r.starts_with("us-gov-") => "us-gov-west-1",
            _ => "us-east-1",
        };
        let conf = aws_sdk_organizations::config::Builder::from(&self.base)
            .region(Region::new(region))
            .interceptor(self.counter.clone())
            .build();
        crate::member_roles::organization_accounts(&aws_sdk_organizations::Client::from_conf(conf))
            .await
    }
}

/// The same clients for every account and region: for tests with mocked
/// clients. With `members`, accounts are entered as in central mode (the
/// clients stay the same).
pub struct FixedClients {
    pub ec2: aws_sdk_ec2::Client,
    pub sns: aws_sdk_sns::Client,
    pub metrics: aws_sdk_cloudwatch::Client,
    pub members: Option<Arc<MemberRoles>>,
}

impl Clients for FixedClients {
    fn ec2(&self, _account: &Account, _region: &str) -> Ec2 {
        Ec2(self.ec2.clone())
    }
    fn sns(&self, _region: &str) -> Sns {
        Sns(self.sns.clone())
    }
    fn metrics(&self, _account: &Account, _region: &str) -> Metrics {
        Metrics(self.metrics.clone())
    }
    fn member_roles(&self) -> Option<&MemberRoles> {
        self.members.as_deref()
    }
}

#[derive(Clone, Debug)]
pub struct Ec2(pub aws_sdk_ec2::Client);

impl Ec2 {
    /// The instances among `ids` that EC2 shows now. Uses an `instance-id`
    /// filter rather than `InstanceIds`, so one id EC2 does not show yet
    /// cannot fail the call for the others: it is simply absent.
    pub async fn describe(&self, ids: &[String]) -> Result<Vec<Observed>, AwsError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .0
                    .describe_instances()
                    .filters(
                        Filter::builder()
                            .name("instance-id")
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
                for r in out.reservations() {
                    found.extend(r.instances().iter().filter_map(observe));
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// Writes every metadata option explicitly (tokens required, endpoint on,
    /// hop limit as decided, the rest as they were).
    pub async fn modify(&self, instance_id: &str, remedy: &Remedy) -> Result<(), AwsError> {
        self.0
            .modify_instance_metadata_options()
            .instance_id(instance_id)
            .http_tokens(HttpTokensState::from(remedy.http_tokens))
            .http_endpoint(InstanceMetadataEndpointState::from(remedy.http_endpoint))
            .http_put_response_hop_limit(remedy.http_put_response_hop_limit)
            .set_http_protocol_ipv6(
                remedy
                    .http_protocol_ipv6
                    .as_deref()
                    .map(InstanceMetadataProtocolState::from),
            )
            .set_instance_metadata_tags(
                remedy
                    .instance_metadata_tags
                    .as_deref()
                    .map(InstanceMetadataTagsState::from),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataOptions"))
    }

    /// One `CreateTags` call for many instances (idempotent: same key, same value).
    pub async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        for chunk in ids.chunks(IDS_PER_CALL) {
            self.0
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .tags(Tag::builder().key(key).value(value).build())
                .send()
                .await
                .map_err(|e| AwsError::classify(e, "ec2", "ec2:CreateTags"))?;
        }
        Ok(())
    }

    /// One page of the instances a sweep looks at (pending, running,
    /// stopping, stopped). With `only_optional`, EC2 itself leaves out
    /// instances already at `HttpTokens=required`; a refusal of that filter
    /// is the caller's cue to list everything and decide here.
    pub async fn list_page(
        &self,
        only_optional: bool,
        token: Option<String>,
    ) -> Result<Page, AwsError> {
        let mut req = self
            .0
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
            .max_results(SWEEP_PAGE_SIZE)
            .set_next_token(token.clone());
        let probe = only_optional && token.is_none();
        if only_optional {
            req = req.filters(
                Filter::builder()
                    .name("metadata-options.http-tokens")
                    .values("optional")
                    .build(),
            );
        }
        // A page of up to 1,000 instances is megabytes of XML: give it time
        // rather than abandon it at the small calls' 10 s and pay for it
        // again. The first filtered page doubles as the probe for the
        // filter, and a refusal should not cost the full retry schedule.
        let retry = if probe {
            sdk_retry().with_max_attempts(2)
        } else {
            sdk_retry()
        };
        let out = req
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(retry)
                    .timeout_config(page_timeouts()),
            )
            .send()
            .await;
        let out = out.map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeInstances"))?;
        let instances = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().filter_map(observe))
            .collect();
        Ok(Page {
            instances,
            next_token: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            owner: out
                .reservations()
                .iter()
                .find_map(|r| r.owner_id())
                .map(str::to_string),
        })
    }

    /// The account's IMDS defaults for new launches in this region.
    pub async fn metadata_defaults(&self) -> Result<AccountDefaults, AwsError> {
        let out = self
            .0
            .get_instance_metadata_defaults()
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:GetInstanceMetadataDefaults"))?;
        let level = out.account_level();
        Ok(AccountDefaults {
            http_tokens: level
                .and_then(|l| l.http_tokens())
                .map(|v| v.as_str().to_string()),
            http_tokens_enforced: level
                .and_then(|l| l.http_tokens_enforced())
                .map(|v| v.as_str().to_string()),
            http_put_response_hop_limit: level.and_then(|l| l.http_put_response_hop_limit()),
            managed_by: level
                .and_then(|l| l.managed_by())
                .map(|v| v.as_str().to_string()),
        })
    }

    /// Sets the account default to `HttpTokens=required` and nothing else:
    /// every other default is left as it is, and `HttpTokensEnforced`, which
    /// refuses launches, is never touched.
    pub async fn require_tokens_by_default(&self) -> Result<(), AwsError> {
        self.0
            .modify_instance_metadata_defaults()
            .http_tokens(aws_sdk_ec2::types::MetadataDefaultHttpTokensState::Required)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::classify(e, "ec2", "ec2:ModifyInstanceMetadataDefaults"))
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

fn observe(i: &aws_sdk_ec2::types::Instance) -> Option<Observed> {
    let id = i.instance_id()?.to_string();
    let mo = i.metadata_options();
    Some(Observed {
        instance_id: id,
        image_id: i.image_id().map(str::to_string),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string()),
        options: MetadataOptions {
            http_tokens: mo
                .and_then(|m| m.http_tokens())
                .map(|v| v.as_str().to_string()),
            http_endpoint: mo
                .and_then(|m| m.http_endpoint())
                .map(|v| v.as_str().to_string()),
            http_put_response_hop_limit: mo.and_then(|m| m.http_put_response_hop_limit()),
            http_protocol_ipv6: mo
                .and_then(|m| m.http_protocol_ipv6())
                .map(|v| v.as_str().to_string()),
            instance_metadata_tags: mo
                .and_then(|m| m.instance_metadata_tags())
                .map(|v| v.as_str().to_string()),
        },
        tags: Some(
            i.tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
        ),
    })
}

/// CloudWatch, for the `MetadataNoToken` metric: IMDSv1 calls an instance
/// still at `optional` answered.
#[derive(Clone, Debug)]
pub struct Metrics(pub aws_sdk_cloudwatch::Client);

impl Metrics {
    /// IMDSv1 calls each instance answered in the last `lookback`, summed.
    /// Instances with no data points are absent (no call, or no metric yet).
    /// Batches 500 queries per `GetMetricData` call.
    pub async fn no_token_calls(
        &self,
        ids: &[String],
        lookback: Duration,
    ) -> Result<HashMap<String, f64>, AwsError> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

        let end = SystemTime::now();
        let start = end.checked_sub(lookback).unwrap_or(SystemTime::UNIX_EPOCH);
        // One data point per instance: the period is the whole lookback,
        // rounded up to the hour (CloudWatch wants multiples of 60 s, and of
        // 3,600 s for data older than 15 days).
        let period =
            i32::try_from(lookback.as_secs().div_ceil(3600).max(1) * 3600).unwrap_or(i32::MAX);
        let mut calls = HashMap::new();
        for chunk in ids.chunks(QUERIES_PER_CALL) {
            let queries: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(n, id)| {
                    MetricDataQuery::builder()
                        .id(format!("q{n}"))
                        .return_data(true)
                        .metric_stat(
                            MetricStat::builder()
                                .metric(
                                    Metric::builder()
                                        .namespace("AWS/EC2")
                                        .metric_name("MetadataNoToken")
                                        .dimensions(
                                            Dimension::builder()
                                                .name("InstanceId")
                                                .value(id)
                                                .build(),
                                        )
                                        .build(),
                                )
                                .period(period)
                                .stat("Sum")
                                .build(),
                        )
                        .build()
                })
                .collect();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .0
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(DateTime::from(start))
                    .end_time(DateTime::from(end))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "monitoring", "cloudwatch:GetMetricData"))?;
                for r in out.metric_data_results() {
                    let Some(n) = r
                        .id()
                        .and_then(|q| q.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let Some(id) = chunk.get(n) else { continue };
                    let sum: f64 = r.values().iter().sum();
                    if !r.values().is_empty() {
                        *calls.entry(id.clone()).or_insert(0.0) += sum;
                    }
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(calls)
    }
}

#[derive(Clone, Debug)]
pub struct Sns(pub aws_sdk_sns::Client);

impl Sns {
    /// Publishes; returns the message id.
    pub async fn publish(&self, topic_arn: &str, n: &Notification) -> Result<String, AwsError> {
        let mut req = self
            .0
            .publish()
            .topic_arn(topic_arn)
            .subject(&n.subject)
            .message(&n.body);
        let outcomes = serde_json::to_string(&n.outcomes).unwrap_or_else(|_| "[]".into());
        let attrs = std::iter::once(("outcome", "String.Array", outcomes))
            .chain(n.attributes.iter().map(|(k, v)| (*k, "String", v.clone())));
        for (name, data_type, value) in attrs {
            let attr = MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .map_err(|e| AwsError::Api {
                    code: "InvalidMessageAttribute".into(),
                    message: e.to_string(),
                })?;
            req = req.message_attributes(name, attr);
        }
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sns", "sns:Publish"))?;
        Ok(out.message_id().unwrap_or("").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::config::Credentials;

    fn offline_base() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                Credentials::new("AKID", "secret", None, None, "test"),
            ))
            .build()
    }

    #[test]
    fn one_client_per_region_built_once_and_in_that_region() {
        let clients = RegionalClients::new(offline_base());
        let west = clients.ec2(&Account::Home, "eu-west-1");
        let again = clients.ec2(&Account::Home, "eu-west-1");
        let east = clients.ec2(&Account::Home, "us-east-2");
        assert_eq!(west.0.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(again.0.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(east.0.config().region().unwrap().as_ref(), "us-east-2");
        assert_eq!(
            clients.ec2.lock().unwrap().len(),
            2,
            "cached, not rebuilt per call"
        );
        assert_eq!(
            clients
                .sns("ap-south-1")
                .0
                .config()
                .region()
                .unwrap()
                .as_ref(),
            "ap-south-1"
        );
    }

    #[test]
    fn unauthorized_is_told_apart_from_other_errors() {
        let e = AwsError::Unauthorized {
            code: "UnauthorizedOperation".into(),
            permission: "ec2:CreateTags",
            message: "no".into(),
        };
        assert!(e.to_string().contains("not allowed ec2:CreateTags"));
        let nf = AwsError::Api {
            code: "InvalidInstanceID.NotFound".into(),
            message: String::new(),
        };
        assert!(nf.is_not_found() && !nf.is_incorrect_state());
        let t = AwsError::Transport {
            service: "ec2",
            message: "connection refused".into(),
        };
        assert_eq!(t.code(), None);
    }
}

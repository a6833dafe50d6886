//! The clients the functions and the command line use for real
//! (`RegionalClients`, the adapter behind the `Clients` port). Those of the
//! function's own account are built once, from the configuration: the memory's
//! DynamoDB, the queues' SQS (failed events, outputs, refusals) and, where the
//! binary carries it, the bus. The rest are one per service, account and
//! region, built on first use and kept (CloudTrail's and Organizations', rarely
//! asked, built per use); a member account's clients act through its role
//! (`roles`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_config::{Region, SdkConfig};

use crate::config::MemberRole;

use super::api::Account;
use super::api::{Clients, EventsApi, FindingsApi};
use super::autoscaling::AutoScaling;
use super::cloudwatch::Metrics;
use super::counter::CallCounter;
use super::ec2::Ec2;
use super::error::AwsError;
use super::eventbridge::Bus;
use super::memory::Memory;
use super::roles::{MemberCredentials, MemberRoles};
use super::securityhub::SecurityHub;
use super::sns::Sns;
use super::sqs::Queue;

type Key = (Account, String);

/// One client per service, account and region, built on first use and kept
/// for the life of the process (warm invocations reuse connections and
/// credentials).
pub struct RegionalClients<O: Outputs = AllOutputs> {
    base: SdkConfig,
    ec2: Mutex<HashMap<Key, aws_sdk_ec2::Client>>,
    sns: Mutex<HashMap<Key, aws_sdk_sns::Client>>,
    metrics: Mutex<HashMap<Key, aws_sdk_cloudwatch::Client>>,
    autoscaling: Mutex<HashMap<Key, aws_sdk_autoscaling::Client>>,
    /// Security Hub and the bus, where the binary carries them.
    outputs: O,
    counter: CallCounter,
    /// Central mode: the member role, assumed per account and region.
    members: Option<Arc<MemberRoles>>,
    /// The guard's memory, in the function's own account and region.
    memory: Option<Memory>,
    /// The failed-events queue, in the function's own account.
    failed_events_queue: Option<Queue>,
    /// The queue to the outputs function, in the function's own account.
    handoff: Option<Queue>,
    /// The outputs function's dead-letter queue, for what it refuses.
    refusals: Option<Queue>,
    /// Where first boots are waited for (`FIRST_BOOT_QUEUE_URL`).
    first_boot: Option<Queue>,
    /// AWS's clock, as STS's last answer dated it.
    server_date: crate::aws::counter::ServerDate,
    /// The function's own account, asked of STS once.
    home: tokio::sync::OnceCell<String>,
}

impl RegionalClients {
    /// Every client, Security Hub's and EventBridge's included (the sweep
    /// function's binary, the command line, the tests).
    pub fn new(base: SdkConfig) -> Self {
        RegionalClients::with_outputs(base)
    }

    /// The clients a configuration asks for: its member role, memory,
    /// failed-events queue and bus.
    pub fn for_config(base: SdkConfig, cfg: &crate::config::Config) -> Self {
        RegionalClients::for_config_with(base, cfg).with_outputs_of(cfg)
    }

    /// The bus for the guard's news (a name, or an ARN whose region it is in).
    pub fn with_bus(mut self, bus: Option<String>) -> Self {
        self.outputs.bus = bus.map(|name| {
            let region = name
                .strip_prefix("arn:")
                .and_then(|rest| rest.split(':').nth(2))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .or_else(|| self.base.region().map(|r| r.to_string()))
                .unwrap_or_else(|| "us-east-1".to_string());
            let b = aws_sdk_eventbridge::config::Builder::from(&self.base);
            Bus {
                client: aws_sdk_eventbridge::Client::from_conf(
                    self.layer(&Account::Home, &region, b).build(),
                ),
                name,
            }
        });
        self
    }
}

impl<O: Outputs> RegionalClients<O> {
    /// The clients, with the output clients `O` carries.
    pub fn with_outputs(base: SdkConfig) -> Self {
        RegionalClients {
            base,
            ec2: Mutex::new(HashMap::new()),
            sns: Mutex::new(HashMap::new()),
            metrics: Mutex::new(HashMap::new()),
            autoscaling: Mutex::new(HashMap::new()),
            outputs: O::default(),
            counter: CallCounter::default(),
            members: None,
            memory: None,
            failed_events_queue: None,
            handoff: None,
            refusals: None,
            first_boot: None,
            server_date: Default::default(),
            home: tokio::sync::OnceCell::new(),
        }
    }

    /// What the configuration asks of the output clients `O` carries.
    pub fn with_outputs_of(self, cfg: &crate::config::Config) -> Self {
        O::configure(self, cfg)
    }

    /// Organizations, in the one region of the partition it answers in
    /// (us-east-1 for the commercial one; the endpoint resolver knows the
    /// others).
    fn organizations(&self) -> aws_sdk_organizations::Client {
        let region = match self.base.region().map(|r| r.as_ref()) {
            Some(r) if r.starts_with("cn-") => "cn-northwest-1",
            Some(r) if r.starts_with("us-gov-") => "us-gov-west-1",
            _ => "us-east-1",
        };
        let conf = aws_sdk_organizations::config::Builder::from(&self.base)
            .region(Region::new(region))
            .interceptor(self.counter.clone())
            .build();
        aws_sdk_organizations::Client::from_conf(conf)
    }

    /// The clients a configuration asks for (its member role, memory and
    /// failed-events queue), with the output clients `O` carries.
    pub fn for_config_with(base: SdkConfig, cfg: &crate::config::Config) -> Self {
        RegionalClients::with_outputs(base)
            .with_member_role(cfg.member_role.clone())
            .with_memory(cfg.memory_table.clone())
            .with_failed_events_queue(cfg.failed_events_queue_url.clone())
            .with_handoff(cfg.outputs_queue_url.clone())
            .with_refusals(cfg.outputs_refused_queue_url.clone())
            .with_first_boot_queue(cfg.first_boot_queue_url.clone())
    }

    /// The guard's memory: `table` in the function's own account and region.
    pub fn with_memory(mut self, table: Option<String>) -> Self {
        self.memory = table.map(|table| {
            let region = self
                .base
                .region()
                .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
            let b = aws_sdk_dynamodb::config::Builder::from(&self.base);
            Memory {
                client: aws_sdk_dynamodb::Client::from_conf(
                    self.layer(&Account::Home, &region, b).build(),
                ),
                table,
            }
        });
        self
    }

    /// The failed-events queue at `url`, in the region its URL names (the
    /// function's own otherwise, as for a local endpoint's URL).
    pub fn with_failed_events_queue(mut self, url: Option<String>) -> Self {
        self.failed_events_queue = url.map(|url| self.queue_at(url));
        self
    }

    /// The queue to the outputs function (`OUTPUTS_QUEUE_URL`).
    pub fn with_handoff(mut self, url: Option<String>) -> Self {
        self.handoff = url.map(|url| self.queue_at(url));
        self
    }

    /// The outputs function's dead-letter queue, for what it refuses.
    pub fn with_refusals(mut self, url: Option<String>) -> Self {
        self.refusals = url.map(|url| self.queue_at(url));
        self
    }

    /// Where first boots are waited for (`FIRST_BOOT_QUEUE_URL`).
    pub fn with_first_boot_queue(mut self, url: Option<String>) -> Self {
        self.first_boot = url.map(|url| self.queue_at(url));
        self
    }

    fn queue_at(&self, url: String) -> Queue {
        let region = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.strip_prefix("sqs."))
            .and_then(|rest| rest.split('.').next())
            .map(str::to_string)
            .or_else(|| self.base.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".to_string());
        let b = aws_sdk_sqs::config::Builder::from(&self.base);
        Queue {
            client: aws_sdk_sqs::Client::from_conf(self.layer(&Account::Home, &region, b).build()),
            url,
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
            (Account::Member(id), Some(members)) => {
                b.member(members.provider(id, region, super::roles::SESSION_NAME))
            }
            (Account::Probe(id), Some(members)) => {
                b.member(members.provider(id, region, crate::probe::SESSION_NAME))
            }
            _ => b,
        }
    }
}

/// Which output clients a binary carries. Only the outputs function's
/// carries Security Hub's and EventBridge's; the event function's and the
/// sweep's (and the command line) leave both SDKs out to stay within their
/// size budgets (docs/design.md): they hand their findings and events to
/// the outputs function through a queue (`Clients::handoff`).
pub trait Outputs: Default + Send + Sync + Sized {
    type Findings: FindingsApi;
    type Events: EventsApi;
    fn findings(
        clients: &RegionalClients<Self>,
        account: &Account,
        region: &str,
    ) -> Option<Self::Findings>;
    fn events(clients: &RegionalClients<Self>) -> Option<Self::Events>;
    /// Sets up what a configuration asks of them.
    fn configure(
        clients: RegionalClients<Self>,
        cfg: &crate::config::Config,
    ) -> RegionalClients<Self>;
}

/// Security Hub (a client per account and region) and the bus.
#[derive(Default)]
pub struct AllOutputs {
    securityhub: Mutex<HashMap<Key, aws_sdk_securityhub::Client>>,
    bus: Option<Bus>,
}

impl Outputs for AllOutputs {
    type Findings = SecurityHub;
    type Events = Bus;
    fn findings(
        clients: &RegionalClients<Self>,
        account: &Account,
        region: &str,
    ) -> Option<SecurityHub> {
        Some(SecurityHub(cached(
            &clients.outputs.securityhub,
            account,
            region,
            || {
                let b = aws_sdk_securityhub::config::Builder::from(&clients.base);
                aws_sdk_securityhub::Client::from_conf(clients.layer(account, region, b).build())
            },
        )))
    }
    fn events(clients: &RegionalClients<Self>) -> Option<Bus> {
        clients.outputs.bus.clone()
    }
    fn configure(
        clients: RegionalClients<Self>,
        cfg: &crate::config::Config,
    ) -> RegionalClients<Self> {
        clients.with_bus(cfg.event_bus.clone())
    }
}

/// Neither: the event function's and the sweep's.
#[derive(Default)]
pub struct NoOutputs;

/// A client that cannot exist: Security Hub and the bus of a binary that
/// hands them off.
pub enum Absent {}

impl FindingsApi for Absent {
    async fn import(
        &self,
        _: &[crate::finding::Finding],
    ) -> Result<Vec<(String, String)>, AwsError> {
        match *self {}
    }
}

impl EventsApi for Absent {
    async fn put(&self, _: &[crate::routing::BusEvent]) -> Result<Vec<String>, AwsError> {
        match *self {}
    }
    fn bus(&self) -> &str {
        match *self {}
    }
}

impl Outputs for NoOutputs {
    type Findings = Absent;
    type Events = Absent;
    fn findings(_: &RegionalClients<Self>, _: &Account, _: &str) -> Option<Absent> {
        None
    }
    fn events(_: &RegionalClients<Self>) -> Option<Absent> {
        None
    }
    fn configure(
        clients: RegionalClients<Self>,
        cfg: &crate::config::Config,
    ) -> RegionalClients<Self> {
        if (cfg.security_hub_findings || cfg.event_bus.is_some()) && cfg.outputs_queue_url.is_none()
        {
            tracing::warn!("SECURITY_HUB_FINDINGS or EVENT_BUS_NAME is set, but OUTPUTS_QUEUE_URL is not: this function carries no client for them and has nowhere to hand them; each report names what was not filed or put (docs/outputs.md)");
        }
        clients
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
config_for!(
    aws_sdk_ec2,
    aws_sdk_autoscaling,
    aws_sdk_sns,
    aws_sdk_cloudwatch,
    aws_sdk_dynamodb,
    aws_sdk_sqs,
    aws_sdk_securityhub,
    aws_sdk_eventbridge,
    aws_sdk_cloudtrail
);

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

impl<O: Outputs> Clients for RegionalClients<O> {
    type Ec2 = Ec2;
    type Sns = Sns;
    type Metrics = Metrics;
    type Memory = Memory;
    type Queue = Queue;
    type AutoScaling = AutoScaling;
    type Findings = O::Findings;
    type Events = O::Events;
    type Trail = super::cloudtrail::Trail;

    fn ec2(&self, account: &Account, region: &str) -> Ec2 {
        Ec2(cached(&self.ec2, account, region, || {
            let b = aws_sdk_ec2::config::Builder::from(&self.base);
            aws_sdk_ec2::Client::from_conf(self.layer(account, region, b).build())
        }))
    }

    fn trail(&self, account: &Account, region: &str) -> super::cloudtrail::Trail {
        // Asked rarely (the exemption check): built per use, not cached.
        let b = aws_sdk_cloudtrail::config::Builder::from(&self.base);
        super::cloudtrail::Trail(aws_sdk_cloudtrail::Client::from_conf(
            self.layer(account, region, b).build(),
        ))
    }

    fn sns(&self, region: &str) -> Sns {
        Sns(cached(&self.sns, &Account::Home, region, || {
            let b = aws_sdk_sns::config::Builder::from(&self.base);
            aws_sdk_sns::Client::from_conf(self.layer(&Account::Home, region, b).build())
        }))
    }

    fn autoscaling(&self, account: &Account, region: &str) -> AutoScaling {
        AutoScaling(cached(&self.autoscaling, account, region, || {
            let b = aws_sdk_autoscaling::config::Builder::from(&self.base);
            aws_sdk_autoscaling::Client::from_conf(self.layer(account, region, b).build())
        }))
    }

    fn metrics(&self, account: &Account, region: &str) -> Metrics {
        Metrics(cached(&self.metrics, account, region, || {
            let b = aws_sdk_cloudwatch::config::Builder::from(&self.base);
            aws_sdk_cloudwatch::Client::from_conf(self.layer(account, region, b).build())
        }))
    }

    fn findings(&self, account: &Account, region: &str) -> Option<O::Findings> {
        O::findings(self, account, region)
    }

    fn events(&self) -> Option<O::Events> {
        O::events(self)
    }

    fn memory(&self) -> Option<Memory> {
        self.memory.clone()
    }

    fn failed_events_queue(&self) -> Option<Queue> {
        self.failed_events_queue.clone()
    }

    fn handoff(&self) -> Option<Queue> {
        self.handoff.clone()
    }

    fn refusals(&self) -> Option<Queue> {
        self.refusals.clone()
    }

    fn first_boot_queue(&self) -> Option<Queue> {
        self.first_boot.clone()
    }

    fn home_region(&self) -> Option<String> {
        self.base.region().map(|r| r.to_string())
    }

    async fn home_account(&self) -> Result<String, AwsError> {
        if let Some(members) = &self.members {
            return members.home_account().await.map(str::to_string);
        }
        self.home
            .get_or_try_init(|| async {
                let conf = aws_sdk_sts::config::Builder::from(&self.base)
                    .interceptor(self.counter.clone())
                    .build();
                let out = aws_sdk_sts::Client::from_conf(conf)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "sts", "sts:GetCallerIdentity"))?;
                out.account()
                    .filter(|a| crate::validate::is_account_id(a))
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::Api {
                        code: "NoAccount".into(),
                        message: "GetCallerIdentity named no account".into(),
                    })
            })
            .await
            .cloned()
    }

    async fn caller(&self) -> Result<String, AwsError> {
        let conf = aws_sdk_sts::config::Builder::from(&self.base)
            .interceptor(self.counter.clone())
            .interceptor(self.server_date.clone())
            .build();
        let out = aws_sdk_sts::Client::from_conf(conf)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sts", "sts:GetCallerIdentity"))?;
        out.arn()
            .filter(|a| a.starts_with("arn:"))
            .map(str::to_string)
            .ok_or_else(|| AwsError::Api {
                code: "NoArn".into(),
                message: "GetCallerIdentity named no ARN".into(),
            })
    }

    fn aws_now(&self) -> Option<u64> {
        self.server_date.seconds()
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.counter.snapshot()
    }

    async fn enter(&self, account: Option<&str>, region: &str) -> Result<Account, AwsError> {
        super::roles::enter_as(
            self.members.as_deref(),
            account,
            region,
            super::roles::SESSION_NAME,
        )
        .await
    }

    async fn enter_for_self_check(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> Result<Account, AwsError> {
        super::roles::enter_as(
            self.members.as_deref(),
            account,
            region,
            crate::probe::SESSION_NAME,
        )
        .await
    }

    async fn organization_accounts(&self) -> Result<Vec<String>, AwsError> {
        super::organizations::organization_accounts(&self.organizations()).await
    }

    async fn account_units(&self, account: &str) -> Result<Vec<String>, AwsError> {
        super::organizations::account_units(&self.organizations(), account).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::BehaviorVersion;
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
}

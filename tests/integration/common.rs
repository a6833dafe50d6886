//! Shared test helpers: fixtures, mocked clients, the emulator's endpoint.

#![allow(dead_code)]

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ec2::config::{Credentials, Region, SharedCredentialsProvider};
use aws_smithy_mocks::{create_mock_http_client, MockResponseInterceptor, Rule, RuleMode};
use std::sync::Arc;

use imds_guard::aws::autoscaling::AutoScaling;
use imds_guard::aws::cloudwatch::Metrics;
use imds_guard::aws::ec2::Ec2;
use imds_guard::aws::eventbridge::Bus;
use imds_guard::aws::memory::Memory;
use imds_guard::aws::securityhub::SecurityHub;
use imds_guard::aws::sns::Sns;
use imds_guard::aws::sqs::Queue;
use imds_guard::aws::{sdk_retry, Account, Clients, MemberRoles};
use imds_guard::config::Config;
use imds_guard::guard::Guard;
use serde_json::Value;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Someone's `ModifyInstanceMetadataOptions` back to `optional` on `id`,
/// as CloudTrail records it (`events/modify-metadata-options-revert.json`).
pub fn revert_event(id: &str) -> Value {
    let mut ev = fixture("modify-metadata-options-revert.json");
    ev["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"]["InstanceId"] =
        id.into();
    ev["detail"]["responseElements"]["ModifyInstanceMetadataOptionsResponse"]["instanceId"] =
        id.into();
    ev
}

/// A launch event from `name` whose instance items carry `ids` (the first
/// item is copied as needed) and, when given, the launch `region`.
pub fn launch_event(name: &str, ids: &[String], region: Option<&str>) -> Value {
    let mut ev = fixture(name);
    let items = ev["detail"]["responseElements"]["instancesSet"]["items"]
        .as_array_mut()
        .expect("fixture has items");
    let template = items[0].clone();
    let mut out = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut item = items.get(n).cloned().unwrap_or_else(|| template.clone());
        item["instanceId"] = Value::String(id.clone());
        out.push(item);
    }
    *items = out;
    if let Some(r) = region {
        ev["region"] = r.into();
        ev["detail"]["awsRegion"] = r.into();
    }
    ev
}

/// The guard's topic in the tests' account.
pub const TOPIC: &str = "arn:aws:sns:us-east-1:111122223333:imds-guard";
/// The guard's memory table.
pub const MEMORY_TABLE: &str = "imds-guard-memory";

/// The sweep's schedule firing in us-east-1 of the fake's account.
pub fn scheduled() -> Value {
    scheduled_in("us-east-1")
}

/// The sweep's schedule firing in `region` of the fake's account.
pub fn scheduled_in(region: &str) -> Value {
    serde_json::json!({
        "version": "0", "id": "e-sweep", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "111122223333",
        "time": "2026-11-29T06:00:00Z", "region": region,
        "resources": [], "detail": {}
    })
}

pub fn config(pairs: &[(&str, &str)]) -> Config {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned()).expect("valid test config")
}

pub fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    let mut i = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for r in rules {
        i = i.with_rule(r);
    }
    i
}

/// A region with no launch template, group or launch configuration: what a
/// mocked EC2 or Auto Scaling client answers when a test's own rules say
/// nothing about sources (they come after the test's, which win).
fn no_sources() -> Vec<Rule> {
    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::operation::describe_launch_configurations::DescribeLaunchConfigurationsOutput;
    use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
    use aws_smithy_mocks::mock;
    vec![
        mock!(aws_sdk_ec2::Client::describe_launch_templates)
            .then_output(|| DescribeLaunchTemplatesOutput::builder().build()),
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
            .then_output(|| DescribeAutoScalingGroupsOutput::builder().build()),
        mock!(aws_sdk_autoscaling::Client::describe_launch_configurations)
            .then_output(|| DescribeLaunchConfigurationsOutput::builder().build()),
    ]
}

fn with_no_sources(rules: &[&Rule]) -> MockResponseInterceptor {
    let fallback = no_sources();
    let mut all: Vec<&Rule> = rules.to_vec();
    all.extend(fallback.iter());
    interceptor(&all)
}

/// What every mocked client shares: a region, test credentials, no network,
/// and the product's own retry settings, so SDK-level retries are what ship.
pub fn mock_base() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        )))
        .http_client(create_mock_http_client())
        .retry_config(sdk_retry())
        .build()
}

/// An EC2 client answered by `rules`, with one more interceptor (to see
/// the requests as sent).
pub fn ec2_seen_by(
    rules: &[&Rule],
    extra: impl aws_sdk_ec2::config::Intercept + 'static,
) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(&mock_base())
        .interceptor(with_no_sources(rules))
        .interceptor(extra);
    aws_sdk_ec2::Client::from_conf(conf.build())
}

/// An EC2 client answered by `rules` (first matching rule wins).
pub fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(&mock_base()).interceptor(with_no_sources(rules));
    aws_sdk_ec2::Client::from_conf(conf.build())
}

/// A CloudWatch client answered by `rules`.
pub fn metrics(rules: &[&Rule]) -> aws_sdk_cloudwatch::Client {
    let conf =
        aws_sdk_cloudwatch::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    aws_sdk_cloudwatch::Client::from_conf(conf.build())
}

/// An Auto Scaling client answered by `rules` (no groups otherwise).
pub fn autoscaling(rules: &[&Rule]) -> aws_sdk_autoscaling::Client {
    let conf = aws_sdk_autoscaling::config::Builder::from(&mock_base())
        .interceptor(with_no_sources(rules));
    aws_sdk_autoscaling::Client::from_conf(conf.build())
}

/// A Security Hub client answered by `rules`.
pub fn securityhub(rules: &[&Rule]) -> aws_sdk_securityhub::Client {
    let conf =
        aws_sdk_securityhub::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    aws_sdk_securityhub::Client::from_conf(conf.build())
}

/// The bus for the guard's news, on an EventBridge client answered by `rules`.
pub fn bus(rules: &[&Rule]) -> Bus {
    let conf =
        aws_sdk_eventbridge::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    Bus {
        client: aws_sdk_eventbridge::Client::from_conf(conf.build()),
        name: "security-events".into(),
    }
}

/// An SNS client answered by `rules`.
pub fn sns(rules: &[&Rule]) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    aws_sdk_sns::Client::from_conf(conf.build())
}

/// An STS client answered by `rules`.
pub fn sts(rules: &[&Rule]) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    aws_sdk_sts::Client::from_conf(conf.build())
}

/// The same mocked clients for every account and region. With `members`,
/// accounts are entered as in central mode (the clients stay the same).
/// Test-only: the release binary has no such client set.
pub struct FixedClients {
    pub ec2: aws_sdk_ec2::Client,
    pub sns: aws_sdk_sns::Client,
    pub metrics: aws_sdk_cloudwatch::Client,
    pub members: Option<Arc<MemberRoles>>,
    /// The guard's memory, on a mocked DynamoDB client.
    pub memory: Option<Memory>,
    /// The failed-events queue, on a mocked SQS client.
    pub failed_events_queue: Option<Queue>,
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// Security Hub, on a mocked client.
    pub findings: aws_sdk_securityhub::Client,
    /// The bus for the guard's news, on a mocked EventBridge client.
    pub events: Option<Bus>,
}

impl Clients for FixedClients {
    type Ec2 = Ec2;
    type Sns = Sns;
    type Metrics = Metrics;
    type Memory = Memory;
    type Queue = Queue;
    type AutoScaling = AutoScaling;
    type Findings = SecurityHub;
    type Events = Bus;
    type Trail = imds_guard::aws::cloudtrail::Trail;

    fn ec2(&self, _account: &Account, _region: &str) -> Ec2 {
        Ec2(self.ec2.clone())
    }
    fn trail(&self, _account: &Account, _region: &str) -> Self::Trail {
        panic!("these clients have no CloudTrail: the exemption check runs on the fake")
    }
    fn findings(&self, _account: &Account, _region: &str) -> Option<SecurityHub> {
        Some(SecurityHub(self.findings.clone()))
    }
    fn events(&self) -> Option<Bus> {
        self.events.clone()
    }
    fn sns(&self, _region: &str) -> Sns {
        Sns(self.sns.clone())
    }
    fn autoscaling(&self, _account: &Account, _region: &str) -> AutoScaling {
        AutoScaling(self.autoscaling.clone())
    }
    fn metrics(&self, _account: &Account, _region: &str) -> Metrics {
        Metrics(self.metrics.clone())
    }
    fn memory(&self) -> Option<Memory> {
        self.memory.clone()
    }
    fn failed_events_queue(&self) -> Option<Queue> {
        self.failed_events_queue.clone()
    }
    async fn enter(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> Result<Account, imds_guard::aws::AwsError> {
        imds_guard::aws::enter_as(self.members.as_deref(), account, region, "imds-guard").await
    }
    async fn enter_for_self_check(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> Result<Account, imds_guard::aws::AwsError> {
        imds_guard::aws::enter_as(
            self.members.as_deref(),
            account,
            region,
            imds_guard::probe::SESSION_NAME,
        )
        .await
    }
    async fn home_account(&self) -> Result<String, imds_guard::aws::AwsError> {
        Ok("111122223333".into())
    }
}

/// An SQS client answered by `rules`, as the failed-events queue.
pub fn failed_events_queue(rules: &[&Rule]) -> Queue {
    let conf = aws_sdk_sqs::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    Queue {
        client: aws_sdk_sqs::Client::from_conf(conf.build()),
        url: "https://sqs.us-east-1.amazonaws.com/111122223333/imds-guard-failed-events".into(),
    }
}

/// A DynamoDB client answered by `rules`, as the guard's memory.
pub fn memory(rules: &[&Rule]) -> Memory {
    let conf =
        aws_sdk_dynamodb::config::Builder::from(&mock_base()).interceptor(interceptor(rules));
    Memory {
        client: aws_sdk_dynamodb::Client::from_conf(conf.build()),
        table: "imds-guard-memory".into(),
    }
}

pub fn guard(cfg: Config, ec2_rules: &[&Rule], sns_rules: &[&Rule]) -> Guard<FixedClients> {
    Guard::new(
        cfg,
        FixedClients {
            ec2: ec2(ec2_rules),
            sns: sns(sns_rules),
            metrics: metrics(&[]),
            members: None,
            memory: None,
            failed_events_queue: None,
            autoscaling: autoscaling(&[]),
            findings: securityhub(&[]),
            events: None,
        },
    )
}

/// As `guard`, with the guard's memory on a mocked DynamoDB client.
pub fn guard_with_memory(
    cfg: Config,
    ec2_rules: &[&Rule],
    sns_rules: &[&Rule],
    memory_rules: &[&Rule],
) -> Guard<FixedClients> {
    Guard::new(
        cfg,
        FixedClients {
            ec2: ec2(ec2_rules),
            sns: sns(sns_rules),
            metrics: metrics(&[]),
            members: None,
            memory: Some(memory(memory_rules)),
            failed_events_queue: None,
            autoscaling: autoscaling(&[]),
            findings: securityhub(&[]),
            events: None,
        },
    )
}

/// Whether `url` names this machine (`127.0.0.0/8`, `localhost`, `[::1]`).
pub fn is_loopback(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host.strip_prefix("127.").is_some_and(|r| {
            r.split('.').count() == 3 && r.split('.').all(|o| o.parse::<u8>().is_ok())
        })
}

/// The SDK configuration of a test that sends AWS calls: the emulator's,
/// and nothing else. It refuses to run (naming why) unless the endpoint
/// every client will use is on loopback, and no service has an endpoint
/// of its own elsewhere: run without the emulator, such a test stops here
/// instead of reaching AWS with whatever credentials the machine has.
pub async fn emulator_sdk() -> SdkConfig {
    let sdk = imds_guard::aws::load_sdk_config().await;
    let endpoint = sdk.endpoint_url().unwrap_or("");
    assert!(
        is_loopback(endpoint),
        "this test sends AWS calls and runs only against the local emulator: \
         AWS_ENDPOINT_URL is {endpoint:?}, not on loopback (run it with `make test`)"
    );
    for (k, v) in std::env::vars() {
        assert!(
            !k.starts_with("AWS_ENDPOINT_URL_") || is_loopback(&v),
            "{k}={v} would send that service's calls off this machine"
        );
    }
    sdk
}

/// A queue in the emulator, in us-east-1 (where the tests' buses and
/// topics are): a client for it, its URL and its ARN.
pub async fn emulator_queue(name: &str) -> (aws_sdk_sqs::Client, String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let base = emulator_sdk().await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&base)
            .region(aws_config::Region::new("us-east-1"))
            .build(),
    );
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    (sqs, url, arn)
}

/// The emulator's endpoint, set by `tools/with-moto.sh` (which `make test` uses).
pub fn moto_endpoint() -> String {
    let endpoint = std::env::var("MOTO_ENDPOINT").expect(
        "MOTO_ENDPOINT is not set: run the emulator tests with `make test` \
         (or tools/with-moto.sh cargo test)",
    );
    assert!(
        is_loopback(&endpoint),
        "MOTO_ENDPOINT {endpoint} is not on loopback"
    );
    endpoint
}

#[test]
fn only_this_machine_is_loopback() {
    for yes in [
        "http://127.0.0.1:5000",
        "http://localhost:1/x",
        "http://[::1]:80",
        "https://127.1.2.3",
    ] {
        assert!(is_loopback(yes), "{yes}");
    }
    for no in [
        "",
        "https://ec2.us-east-1.amazonaws.com",
        "http://127.0.0.1.evil.example:80",
        "http://10.0.0.1:5000",
        "127.0.0.1:5000",
        "http://localhost.example",
        "http://[::2]:80",
    ] {
        assert!(!is_loopback(no), "{no}");
    }
}

/// The body of every request sent, as the SDK serialized it (an
/// interceptor sees it as it would leave).
#[derive(Clone, Debug, Default)]
pub struct Sent(Arc<std::sync::Mutex<Vec<String>>>);

impl Sent {
    pub fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl aws_sdk_ec2::config::Intercept for Sent {
    fn name(&self) -> &'static str {
        "requests as sent"
    }
    fn read_before_transmit(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let body = ctx.request().body().bytes().unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
        Ok(())
    }
}

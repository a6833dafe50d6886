//! `imds-guard doctor`, carried out with the person's own read-only
//! credentials (`doctor --print-policy` prints exactly what it needs): the
//! stack read from CloudFormation (parameters, outputs, resources); the
//! self-check's results read from the guard's memory; the trails, the
//! rules' counts, the queues, the topic's subscriptions, Security Hub and
//! the memory table's resource policy read from AWS. What each fact means
//! is the domain's (`doctor`); this module only reads.
//!
//! Every call is a read. Work per region runs a few at a time, and the whole
//! is bounded by a timeout: what it did not reach is said.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use futures_util::stream::{self, StreamExt};

use crate::aws::{AwsError, CallCounter};
use crate::doctor::{self, FieldSelector, Row, RuleActivity, Section, Selectors, Trail};
use crate::probe::{self, Status};
use crate::validate::{is_account_id, is_region, partition};

/// What to look at.
#[derive(Clone, Debug)]
pub struct Scope {
    pub stack: String,
    /// Regions (empty: the stack's SweepRegions, else the stack's region).
    pub regions: Vec<String>,
    /// Accounts whose self-check results to show (empty: the stack's own,
    /// and in central mode those SweepAccounts lists).
    pub accounts: Vec<String>,
    /// Every active account of the organization.
    pub organization: bool,
    /// How many days of the rules' counts.
    pub days: u64,
    pub timeout: Duration,
    /// The endpoint is not AWS's (AWS_ENDPOINT_URL): said, so nothing reads
    /// as AWS's judgement.
    pub endpoint: Option<String>,
    /// `--prevention`: dry-run launches as the person, in each region.
    pub prevention: Option<LaunchProbe>,
}

/// The stack, as CloudFormation describes it.
#[derive(Clone, Debug, Default)]
struct Stack {
    account: String,
    region: String,
    status: String,
    parameters: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    /// (logical id, type, physical id).
    resources: Vec<(String, String, String)>,
}

impl Stack {
    fn physical(&self, logical: &str) -> Option<&str> {
        self.resources
            .iter()
            .find(|(l, ..)| l == logical)
            .map(|(.., p)| p.as_str())
    }
}

/// Builds clients from the person's configuration, each counted (what
/// `--print-policy` must allow: a test compares the two) and seen by any
/// extra interceptor (the tests' mocks).
pub struct Doctor {
    base: SdkConfig,
    calls: CallCounter,
    extra: Vec<SharedInterceptor>,
}

macro_rules! client {
    ($self:ident, $krate:ident, $region:expr) => {{
        let mut b = $krate::config::Builder::from(&$self.base)
            .region(Region::new($region.to_string()))
            .interceptor($self.calls.clone());
        for i in &$self.extra {
            b = b.interceptor(i.clone());
        }
        $krate::Client::from_conf(b.build())
    }};
}

// After the macro, which it uses.
mod launch;
pub use launch::LaunchProbe;

fn err(e: AwsError) -> String {
    e.to_string()
}

impl Doctor {
    pub fn new(base: SdkConfig) -> Self {
        Doctor {
            base,
            calls: CallCounter::default(),
            extra: Vec::new(),
        }
    }

    /// Every client also goes through `i` (tests: mocked answers).
    pub fn with_interceptor(mut self, i: impl Intercept + 'static) -> Self {
        self.extra.push(SharedInterceptor::new(i));
        self
    }

    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }

    fn home_region(&self) -> String {
        self.base
            .region()
            .map_or_else(|| "us-east-1".into(), |r| r.to_string())
    }

    /// Every check; the rows, and whether the command could not run at all.
    pub async fn run(&self, scope: &Scope) -> (Vec<Row>, bool) {
        let mut rows = Vec::new();
        if let Some(e) = &scope.endpoint {
            rows.push(Row::new(
                Section::Setup,
                Status::Warn,
                "AWS is the endpoint",
                e,
                "AWS_ENDPOINT_URL points elsewhere: nothing below is AWS's judgement (a local \
                 emulator evaluates no IAM and applies dry runs)"
                    .into(),
            ));
        }
        let stack = match self.stack(&scope.stack).await {
            Ok(s) => s,
            Err(e) => {
                rows.push(
                    Row::new(
                        Section::Setup,
                        Status::Fail,
                        "the stack can be read",
                        &scope.stack,
                        format!("it could not be described: {e}"),
                    )
                    .fix("pass --stack with the name you deployed (sam deploy's stack_name), with credentials and the region (AWS_REGION) it is in"),
                );
                return (rows, true);
            }
        };
        let settled = matches!(stack.status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE");
        rows.push(Row::new(
            Section::Setup,
            if settled { Status::Pass } else { Status::Warn },
            "the stack is deployed",
            &format!("{} {} {}", scope.stack, stack.account, stack.region),
            stack.status.clone(),
        ));
        let work = self.checks(scope, &stack);
        match tokio::time::timeout(scope.timeout, work).await {
            Ok(found) => rows.extend(found),
            Err(_) => rows.push(Row::new(
                Section::Setup,
                Status::Warn,
                "every check finished in time",
                &scope.stack,
                format!(
                    "not every check answered within {} s: run again with --timeout, or fewer --region/--account",
                    scope.timeout.as_secs()
                ),
            )),
        }
        (rows, false)
    }

    async fn checks(&self, scope: &Scope, stack: &Stack) -> Vec<Row> {
        let mut rows = Vec::new();
        let param = |k: &str| stack.parameters.get(k).map(String::as_str).unwrap_or("");
        let regions: Vec<String> = if !scope.regions.is_empty() {
            scope.regions.clone()
        } else {
            let listed: Vec<String> = param("SweepRegions")
                .split(',')
                .map(str::trim)
                .filter(|r| is_region(r))
                .map(str::to_string)
                .collect();
            if listed.is_empty() {
                vec![stack.region.clone()]
            } else {
                listed
            }
        };
        let table = stack
            .outputs
            .get("MemoryTableName")
            .cloned()
            .unwrap_or_else(|| format!("{}-memory", scope.stack));
        let table_arn = format!(
            "arn:{}:dynamodb:{}:{}:table/{table}",
            partition(&stack.region),
            stack.region,
            stack.account
        );
        let ddb = client!(self, aws_sdk_dynamodb, stack.region);
        let policy = ddb
            .get_resource_policy()
            .resource_arn(&table_arn)
            .send()
            .await;
        let policy = match policy {
            Ok(p) => Ok(p.policy().map(str::to_string)),
            Err(e) => {
                let e = AwsError::classify(e, "dynamodb", "dynamodb:GetResourcePolicy");
                if e.code() == Some("PolicyNotFoundException") {
                    Ok(None)
                } else {
                    Err(err(e))
                }
            }
        };
        rows.push(doctor::table_policy_row(
            &table,
            policy
                .as_ref()
                .map(|p| p.as_deref())
                .map_err(String::as_str),
        ));

        // The self-check's results, per account-region.
        let accounts = match self.accounts(scope, stack).await {
            Ok(a) => a,
            Err(e) => {
                rows.push(Row::new(
                    Section::Setup,
                    Status::Warn,
                    "the accounts can be listed",
                    &scope.stack,
                    format!("the organization's accounts could not be listed ({e}): only the stack's own is shown"),
                ));
                vec![stack.account.clone()]
            }
        };
        if accounts.iter().any(|a| *a != stack.account) {
            rows.push(Row::new(
                Section::Setup,
                Status::Warn,
                "member accounts",
                &format!("{} account(s)", accounts.len() - 1),
                "their self-check results are shown (the guard's own dry runs, in its memory); \
                 their trails, rules and queues are not looked at from here (run doctor against \
                 each member's own view)"
                    .into(),
            ));
        }
        let now = crate::clock::now_secs();
        let pairs: Vec<(String, String)> = accounts
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        let memory = crate::aws::memory::Memory {
            client: ddb.clone(),
            table: table.clone(),
        };
        let memory = &memory;
        let found: Vec<Vec<Row>> = stream::iter(pairs)
            .map(|(account, region)| async move {
                use crate::aws::MemoryApi;
                let place = format!("{account} {region}");
                let pk = crate::memory::partition(&account, &region);
                match memory
                    .query(&pk, crate::memory::Kind::SelfCheck.prefix(), now)
                    .await
                {
                    Ok(records) => {
                        let check = records
                            .iter()
                            .filter_map(probe::from_record)
                            .max_by_key(|c| c.at);
                        doctor::self_check_rows(&place, check.as_ref(), now)
                    }
                    Err(e) => vec![Row::new(
                        Section::Permissions,
                        Status::Warn,
                        "self-check",
                        &place,
                        format!("unknown: the guard's memory could not be read ({e})"),
                    )],
                }
            })
            .buffered(8)
            .collect()
            .await;
        rows.extend(found.into_iter().flatten());

        // Events and outputs in the stack's own account.
        let per_region: Vec<Vec<Row>> = stream::iter(regions.clone())
            .map(|region| async move {
                let place = format!("{} {region}", stack.account);
                let mut rows = vec![self.trails(&place, &region).await];
                if param("SecurityHubFindings") == "true" {
                    rows.push(self.hub(&place, &region).await);
                }
                rows
            })
            .buffered(8)
            .collect()
            .await;
        rows.extend(per_region.into_iter().flatten());
        if let Some(probe) = &scope.prevention {
            let found: Vec<Row> = stream::iter(regions.clone())
                .map(|region| async move {
                    let place = format!("{} {region}", stack.account);
                    self.prevention(&place, &region, probe).await
                })
                .buffered(8)
                .collect()
                .await;
            rows.extend(found);
        }
        rows.extend(self.rules(stack, scope.days).await);
        rows.extend(self.queues(stack).await);
        if let Some(topic) = stack.outputs.get("TopicArn") {
            rows.push(self.subscriptions(topic).await);
        }
        rows
    }

    async fn stack(&self, name: &str) -> Result<Stack, String> {
        let cfn = client!(self, aws_sdk_cloudformation, self.home_region());
        let out = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| {
                err(AwsError::classify(
                    e,
                    "cloudformation",
                    "cloudformation:DescribeStacks",
                ))
            })?;
        let s = out
            .stacks()
            .first()
            .ok_or_else(|| format!("no stack named {name}"))?;
        let id = s.stack_id().unwrap_or_default();
        let arn: Vec<&str> = id.split(':').collect();
        let mut stack = Stack {
            account: arn
                .get(4)
                .copied()
                .filter(|a| is_account_id(a))
                .unwrap_or_default()
                .into(),
            region: arn.get(3).copied().unwrap_or_default().into(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            ..Stack::default()
        };
        for p in s.parameters() {
            if let (Some(k), Some(v)) = (p.parameter_key(), p.parameter_value()) {
                stack.parameters.insert(k.into(), v.into());
            }
        }
        for o in s.outputs() {
            if let (Some(k), Some(v)) = (o.output_key(), o.output_value()) {
                stack.outputs.insert(k.into(), v.into());
            }
        }
        let mut token = None;
        loop {
            let page = cfn
                .list_stack_resources()
                .stack_name(name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    err(AwsError::classify(
                        e,
                        "cloudformation",
                        "cloudformation:ListStackResources",
                    ))
                })?;
            for r in page.stack_resource_summaries() {
                stack.resources.push((
                    r.logical_resource_id().unwrap_or_default().into(),
                    r.resource_type().unwrap_or_default().into(),
                    r.physical_resource_id().unwrap_or_default().into(),
                ));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(stack)
    }

    /// The accounts whose self-check results to show.
    async fn accounts(&self, scope: &Scope, stack: &Stack) -> Result<Vec<String>, String> {
        let mut out = vec![stack.account.clone()];
        let listed: Vec<String> = if scope.organization {
            let org = client!(self, aws_sdk_organizations, "us-east-1");
            crate::aws::organizations::organization_accounts(&org)
                .await
                .map_err(err)?
        } else if !scope.accounts.is_empty() {
            scope.accounts.clone()
        } else {
            stack
                .parameters
                .get("SweepAccounts")
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|a| is_account_id(a))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        for a in listed {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Whether a trail logs this region's EC2 write management events.
    async fn trails(&self, place: &str, region: &str) -> Row {
        let ct = client!(self, aws_sdk_cloudtrail, region);
        let listed = ct
            .describe_trails()
            .include_shadow_trails(true)
            .send()
            .await
            .map_err(|e| {
                err(AwsError::classify(
                    e,
                    "cloudtrail",
                    "cloudtrail:DescribeTrails",
                ))
            });
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return doctor::trail_row(place, region, Err(&e)),
        };
        let mut trails = Vec::new();
        for t in listed.trail_list() {
            let arn = t.trail_arn().or(t.name()).unwrap_or_default().to_string();
            let logging = ct
                .get_trail_status()
                .name(&arn)
                .send()
                .await
                .ok()
                .and_then(|s| s.is_logging());
            let selectors = match ct.get_event_selectors().trail_name(&arn).send().await {
                Ok(s) if !s.advanced_event_selectors().is_empty() => Selectors::Advanced(
                    s.advanced_event_selectors()
                        .iter()
                        .map(|a| {
                            a.field_selectors()
                                .iter()
                                .map(|f| FieldSelector {
                                    field: f.field().to_string(),
                                    equals: f.equals().to_vec(),
                                    not_equals: f.not_equals().to_vec(),
                                    starts_with: f.starts_with().to_vec(),
                                    not_starts_with: f.not_starts_with().to_vec(),
                                })
                                .collect()
                        })
                        .collect(),
                ),
                Ok(s) => Selectors::Basic(
                    s.event_selectors()
                        .iter()
                        .map(|e| {
                            (
                                e.include_management_events().unwrap_or(true),
                                e.read_write_type()
                                    .map_or("All", |r| r.as_str())
                                    .to_string(),
                            )
                        })
                        .collect(),
                ),
                Err(e) => Selectors::Unknown(err(AwsError::classify(
                    e,
                    "cloudtrail",
                    "cloudtrail:GetEventSelectors",
                ))),
            };
            trails.push(Trail {
                name: t.name().unwrap_or(&arn).to_string(),
                home_region: t.home_region().unwrap_or_default().to_string(),
                multi_region: t.is_multi_region_trail().unwrap_or(false),
                organization: t.is_organization_trail().unwrap_or(false),
                logging,
                selectors,
            });
        }
        doctor::trail_row(place, region, Ok(&trails))
    }

    async fn hub(&self, place: &str, region: &str) -> Row {
        let sh = client!(self, aws_sdk_securityhub, region);
        let enabled = match sh.describe_hub().send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::classify(e, "securityhub", "securityhub:DescribeHub");
                if e.code() == Some("InvalidAccessException") {
                    Ok(false)
                } else {
                    Err(err(e))
                }
            }
        };
        doctor::hub_row(place, enabled.as_ref().copied().map_err(String::as_str))
    }

    /// The stack's event rules' counts (CloudWatch `AWS/Events`), in one call.
    async fn rules(&self, stack: &Stack, days: u64) -> Vec<Row> {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        const METRICS: [&str; 4] = [
            "MatchedEvents",
            "Invocations",
            "FailedInvocations",
            "InvocationsFailedToBeSentToDlq",
        ];
        let rules: Vec<(String, Option<String>)> = stack
            .resources
            .iter()
            // The rules on EC2's events (launches, changes, sources); the
            // schedules and the deploy rule are not evidence of events.
            .filter(|(l, t, _)| {
                t == "AWS::Events::Rule"
                    && ["LaunchRule", "StateChangeRule", "SourceRule"]
                        .iter()
                        .any(|k| l.ends_with(k))
            })
            .map(|(.., physical)| match physical.split_once('|') {
                Some((bus, rule)) => (rule.to_string(), Some(bus.to_string())),
                None => (physical.clone(), None),
            })
            .collect();
        if rules.is_empty() {
            return Vec::new();
        }
        let place = format!("{} {}", stack.account, stack.region);
        let queries: Vec<MetricDataQuery> = rules
            .iter()
            .enumerate()
            .flat_map(|(i, (rule, bus))| {
                METRICS.iter().enumerate().map(move |(j, m)| {
                    let mut dims = vec![Dimension::builder().name("RuleName").value(rule).build()];
                    if let Some(b) = bus {
                        dims.push(Dimension::builder().name("EventBusName").value(b).build());
                    }
                    MetricDataQuery::builder()
                        .id(format!("m{i}x{j}"))
                        .metric_stat(
                            MetricStat::builder()
                                .metric(
                                    Metric::builder()
                                        .namespace("AWS/Events")
                                        .metric_name(*m)
                                        .set_dimensions(Some(dims))
                                        .build(),
                                )
                                .period(i32::try_from(days * 86_400).unwrap_or(604_800))
                                .stat("Sum")
                                .build(),
                        )
                        .build()
                })
            })
            .collect();
        let now = std::time::SystemTime::now();
        let cw = client!(self, aws_sdk_cloudwatch, stack.region);
        let got = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(
                now - Duration::from_secs(days * 86_400),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(now))
            .send()
            .await;
        let results = match got {
            Ok(out) => out.metric_data_results().to_vec(),
            Err(e) => {
                return vec![Row::new(
                    Section::Events,
                    Status::Warn,
                    "the rules deliver what they match",
                    &place,
                    format!(
                        "unknown: their counts could not be read ({})",
                        AwsError::classify(e, "cloudwatch", "cloudwatch:GetMetricData")
                    ),
                )]
            }
        };
        let sum = |i: usize, j: usize| {
            results
                .iter()
                .find(|r| r.id() == Some(format!("m{i}x{j}").as_str()))
                .filter(|r| !r.values().is_empty())
                .map(|r| r.values().iter().sum::<f64>())
        };
        rules
            .iter()
            .enumerate()
            .map(|(i, (rule, _))| {
                doctor::rule_row(
                    &place,
                    &RuleActivity {
                        rule: rule.clone(),
                        matched: sum(i, 0),
                        invoked: sum(i, 1),
                        failed: sum(i, 2),
                        dead_letter_failed: sum(i, 3),
                    },
                    days,
                )
            })
            .collect()
    }

    async fn queues(&self, stack: &Stack) -> Vec<Row> {
        let sqs = client!(self, aws_sdk_sqs, stack.region);
        let mut rows = Vec::new();
        for (logical, section, what, fix) in [
            (
                "UndeliveredEventsQueue",
                Section::Events,
                "the undelivered-events queue",
                "events EventBridge could not deliver to the guard: read them (aws sqs receive-message --queue-url <url>), then run a sweep to cover what they named",
            ),
            (
                "FailedEventsQueue",
                Section::Events,
                "the failed-events queue",
                "events the guard failed on, and messages SNS refused: read them (aws sqs receive-message --queue-url <url>) and the function's log",
            ),
            (
                "OutputsDeadLetterQueue",
                Section::Outputs,
                "the outputs dead-letter queue",
                "findings and events the outputs function could not file or put: read them and its log",
            ),
        ] {
            let Some(url) = stack.physical(logical) else {
                continue;
            };
            let n = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .map_err(|e| err(AwsError::classify(e, "sqs", "sqs:GetQueueAttributes")))
                .map(|o| {
                    o.attributes()
                        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                });
            rows.push(doctor::queue_row(
                section,
                what,
                url,
                n.as_ref().copied().map_err(String::as_str),
                fix,
            ));
        }
        rows
    }

    async fn subscriptions(&self, topic: &str) -> Row {
        let region = crate::validate::sns_topic_region(topic).unwrap_or("us-east-1");
        let sns = client!(self, aws_sdk_sns, region);
        let mut confirmed = 0;
        let mut pending = 0;
        let mut token = None;
        loop {
            let page = sns
                .list_subscriptions_by_topic()
                .topic_arn(topic)
                .set_next_token(token.take())
                .send()
                .await;
            match page {
                Ok(p) => {
                    for s in p.subscriptions() {
                        match s.subscription_arn() {
                            Some("PendingConfirmation") => pending += 1,
                            Some(a) if a.starts_with("arn:") => confirmed += 1,
                            _ => {}
                        }
                    }
                    match p.next_token() {
                        Some(t) if !t.is_empty() => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                Err(e) => {
                    let e = err(AwsError::classify(e, "sns", "sns:ListSubscriptionsByTopic"));
                    return doctor::subscription_row(topic, Err(&e));
                }
            }
        }
        doctor::subscription_row(topic, Ok((confirmed, pending)))
    }
}

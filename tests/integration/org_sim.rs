//! The organization sweep at scale (`make bench-org`, not part of
//! `make test`): 100, 1,000 and 17,000 account-regions fanned out, on
//! simulated AWS with paused time, so the figures are simulated seconds.
//!
//! What is real: the fan-out's three steps (plan, shard, summarize) exactly
//! as the function runs them, the sweep inside each shard (its listing,
//! decisions, remedies, tags, sources, memory), and the state machine's
//! numbers read from template.yaml (the map's concurrency from the plan,
//! the shard's retry: interval, attempts, backoff; its catch).
//!
//! What is simulated, and with which assumptions:
//! - AWS answers with latency: 50 ms a describe page, 100 ms a modify,
//!   30 ms anything else, 30 ms an STS AssumeRole, 10 ms the memory;
//! - EC2 throttles per account and region with token buckets: describes
//!   100 tokens refilled at 20/s (EC2's published default for
//!   non-mutating actions), modifies and tags 50 at 5/s (an assumption for
//!   mutating actions); STS AssumeRole for the central account 600 at
//!   600/s (an assumption); throttled and transient answers are retried as
//!   the SDK's standard mode does (3 retries, exponential backoff, jitter);
//! - 2% of AWS answers are transient errors (`InternalError`);
//! - the engine: 50 ms to start each child execution and invoke the
//!   function, 0.5% of invocations fail as `Lambda.ServiceException` (the
//!   definition's retry covers them); no limit but the map's concurrency;
//! - each account-region holds 20 instances, 6 of them at `optional`.
//!
//! The single-invocation sweep's ceiling is simulated the same way: one
//! function, 900 s, `SWEEP_CONCURRENCY` account-regions at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use imds_guard::aws::{Account, AwsError, Clients};
use imds_guard::fanout::{FanOutStep, Plan};
use imds_guard::org_sweep::FanOut;
use serde_json::Value;
use tokio::time::Instant;

use crate::common::config;
use crate::fake::{api_error, FakeCloud, Pace};

const REGIONS: [&str; 17] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "sa-east-1",
];

/// An organization of simulated account-regions, built as a shard reaches
/// them and dropped when it is done (memory stays bounded at scale).
struct SimClients {
    pace: Arc<Pace>,
    clouds: Mutex<HashMap<(String, String), FakeCloud>>,
    /// The central account's memory and topic.
    central: FakeCloud,
    organization: Vec<String>,
    /// STS in the central account: (tokens, last fill), shared by shards.
    sts: Mutex<(f64, Instant)>,
    /// Calls of clouds already dropped, by operation.
    done_calls: Mutex<BTreeMap<String, u64>>,
    assumed: std::sync::atomic::AtomicU64,
}

const STS_CAPACITY: f64 = 600.0;
const STS_REFILL: f64 = 600.0;

impl SimClients {
    fn new(accounts: usize, pace: Arc<Pace>) -> Self {
        let central = FakeCloud::new();
        central.with_memory();
        SimClients {
            pace,
            clouds: Mutex::new(HashMap::new()),
            central,
            organization: (0..accounts)
                .map(|n| format!("{:012}", 200_000_000_000u64 + n as u64))
                .collect(),
            sts: Mutex::new((STS_CAPACITY, Instant::now())),
            done_calls: Mutex::new(BTreeMap::new()),
            assumed: Default::default(),
        }
    }

    fn cloud(&self, account: &Account, region: &str) -> FakeCloud {
        let id = match account {
            Account::Member(id) | Account::Probe(id) => id.clone(),
            Account::Home => "home".into(),
        };
        self.clouds
            .lock()
            .unwrap()
            .entry((id, region.to_string()))
            .or_insert_with(|| {
                let c = FakeCloud::new();
                c.with_pace(self.pace.clone());
                for n in 0..20 {
                    let tokens = if n < 6 { "optional" } else { "required" };
                    c.add(&format!("i-{n:017x}"), tokens, 2);
                }
                c.set_defaults(Some(imds_guard::policy::AccountDefaults {
                    http_tokens: Some("required".into()),
                    ..Default::default()
                }));
                c
            })
            .clone()
    }

    /// A shard is done: its clouds go, their calls are kept.
    fn drop_account(&self, account: &str) {
        let mut clouds = self.clouds.lock().unwrap();
        let keys: Vec<_> = clouds
            .keys()
            .filter(|(a, _)| a == account)
            .cloned()
            .collect();
        let mut done = self.done_calls.lock().unwrap();
        for k in keys {
            if let Some(c) = clouds.remove(&k) {
                for (op, n) in c.calls() {
                    *done.entry(op).or_default() += n;
                }
            }
        }
    }

    fn all_calls(&self) -> BTreeMap<String, u64> {
        let mut all = self.done_calls.lock().unwrap().clone();
        for c in self.clouds.lock().unwrap().values() {
            for (op, n) in c.calls() {
                *all.entry(op).or_default() += n;
            }
        }
        for (op, n) in self.central.calls() {
            *all.entry(op).or_default() += n;
        }
        all.insert("AssumeRole".into(), self.assumed.load(Ordering::Relaxed));
        all
    }
}

impl Clients for SimClients {
    type Ec2 = FakeCloud;
    type Sns = FakeCloud;
    type Metrics = FakeCloud;
    type Memory = FakeCloud;
    type Queue = FakeCloud;
    type AutoScaling = FakeCloud;
    type Findings = FakeCloud;
    type Events = FakeCloud;
    type Trail = FakeCloud;

    fn ec2(&self, account: &Account, region: &str) -> FakeCloud {
        self.cloud(account, region)
    }
    fn trail(&self, account: &Account, region: &str) -> FakeCloud {
        self.cloud(account, region)
    }
    fn findings(&self, account: &Account, region: &str) -> Option<FakeCloud> {
        Some(self.cloud(account, region))
    }
    fn events(&self) -> Option<FakeCloud> {
        None
    }
    fn sns(&self, _region: &str) -> FakeCloud {
        self.central.clone()
    }
    fn autoscaling(&self, account: &Account, region: &str) -> FakeCloud {
        self.cloud(account, region)
    }
    fn metrics(&self, account: &Account, region: &str) -> FakeCloud {
        self.cloud(account, region)
    }
    fn memory(&self) -> Option<FakeCloud> {
        Some(self.central.clone())
    }
    fn failed_events_queue(&self) -> Option<FakeCloud> {
        None
    }
    fn calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    async fn home_account(&self) -> Result<String, AwsError> {
        Ok("111122223333".into())
    }
    async fn organization_accounts(&self) -> Result<Vec<String>, AwsError> {
        Ok(self.organization.clone())
    }
    /// STS, in the central account: latency, its rate, the SDK's retries.
    async fn enter(&self, account: Option<&str>, _region: &str) -> Result<Account, AwsError> {
        let Some(id) = account else {
            return Ok(Account::Home);
        };
        let mut backoff = Duration::from_millis(50);
        for attempt in 0..=3 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.assumed.fetch_add(1, Ordering::Relaxed);
            let admitted = {
                let mut b = self.sts.lock().unwrap();
                let now = Instant::now();
                b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * STS_REFILL).min(STS_CAPACITY);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    true
                } else {
                    false
                }
            };
            if admitted {
                return Ok(Account::Member(id.to_string()));
            }
            self.pace.throttled.fetch_add(1, Ordering::Relaxed);
            if attempt == 3 {
                return Err(api_error("Throttling"));
            }
            self.pace.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        unreachable!()
    }
}

fn pace() -> Arc<Pace> {
    let ms = Duration::from_millis;
    Arc::new(Pace::new(
        HashMap::from([
            ("DescribeInstances", ms(50)),
            ("ModifyInstanceMetadataOptions", ms(100)),
            ("Query", ms(10)),
            ("PutItem", ms(10)),
            ("BatchWriteItem", ms(10)),
        ]),
        ms(30),
        HashMap::from([
            ("DescribeInstances", (100.0, 20.0)),
            ("DescribeLaunchTemplates", (100.0, 20.0)),
            ("GetInstanceMetadataDefaults", (100.0, 20.0)),
            ("ModifyInstanceMetadataOptions", (50.0, 5.0)),
            ("CreateTags", (50.0, 5.0)),
        ]),
        200,
    ))
}

/// The shard's retry, as the definition writes it.
struct Retry {
    interval: f64,
    attempts: u32,
    backoff: f64,
}

fn shard_retry() -> Retry {
    let d = crate::fanout_flow::definition();
    let r = &crate::fanout_flow::state(&d, &["Shards", "Shard"])["Retry"][0];
    Retry {
        interval: r["IntervalSeconds"].as_f64().unwrap(),
        attempts: r["MaxAttempts"].as_u64().unwrap() as u32,
        backoff: r["BackoffRate"].as_f64().unwrap(),
    }
}

struct Run {
    account_regions: usize,
    accounts: usize,
    concurrency: u32,
    wall: Duration,
    swept: u64,
    failed: u64,
    not_reached: u64,
    calls: u64,
    sdk_retries: u64,
    engine_retries: u64,
    invocations: u64,
    /// States entered (Standard workflows bill these): the parent's four,
    /// and in each child its task, its retries, and its catch.
    transitions: u64,
    /// Mean simulated seconds a shard invocation ran.
    shard_seconds: f64,
    summary_bytes: usize,
}

async fn fan_out(accounts: usize, regions: &[&str]) -> Run {
    let pace = pace();
    let sim = SimClients::new(accounts, pace.clone());
    let cfg = config(&[
        (
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:imds-guard",
        ),
        ("MEMBER_ROLE_NAME", "imds-guard-member"),
        ("SWEEP_ACCOUNTS", "ORGANIZATION"),
        ("SWEEP_REGIONS", &regions.join(",")),
        ("MEMORY_TABLE", "imds-guard-memory"),
        ("FANOUT_THRESHOLD", "1"),
    ]);
    let steps = FanOut::new(&cfg, &sim);
    let retry = shard_retry();
    let started = Instant::now();
    let invocations = std::sync::atomic::AtomicU64::new(0);
    let engine_retries = std::sync::atomic::AtomicU64::new(0);
    let caught = std::sync::atomic::AtomicU64::new(0);
    let shard_ms = std::sync::atomic::AtomicU64::new(0);
    let invoke = |step: FanOutStep| {
        let (steps, invocations, pace) = (&steps, &invocations, &pace);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            invocations.fetch_add(1, Ordering::Relaxed);
            // Lambda's own transient failures, before the function runs.
            if pace.draw() < 50 {
                return Err("Lambda.ServiceException".to_string());
            }
            let deadline = Instant::now() + Duration::from_secs(900);
            Box::pin(steps.step(step, Some(deadline)))
                .await
                .map_err(|e| format!("ImdsGuard.Incomplete: {e}"))
        }
    };

    let plan: Plan = serde_json::from_value(
        invoke(FanOutStep::Plan {
            run: "sim".into(),
            input: Value::Null,
        })
        .await
        .expect("the plan"),
    )
    .unwrap();
    assert!(!plan.single);
    stream::iter(plan.accounts.clone())
        .map(|account| {
            let (invoke, retry, sim, engine_retries, caught, shard_ms) =
                (&invoke, &retry, &sim, &engine_retries, &caught, &shard_ms);
            async move {
                let mut wait = retry.interval;
                let mut last = String::new();
                for attempt in 0..=retry.attempts {
                    let began = Instant::now();
                    let answer = invoke(FanOutStep::Shard {
                        run: "sim".into(),
                        account: account.clone(),
                    })
                    .await;
                    shard_ms.fetch_add(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                    match answer {
                        Ok(_) => {
                            sim.drop_account(&account);
                            return;
                        }
                        Err(e) => last = e,
                    }
                    if attempt < retry.attempts {
                        engine_retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                        wait *= retry.backoff;
                    }
                }
                // The catch: the shard's error, recorded.
                caught.fetch_add(1, Ordering::Relaxed);
                let error = serde_json::json!({"Error": "States.TaskFailed", "Cause": last});
                let _ = invoke(FanOutStep::ShardFailed {
                    run: "sim".into(),
                    account: account.clone(),
                    error,
                })
                .await;
                sim.drop_account(&account);
            }
        })
        .buffer_unordered(plan.concurrency as usize)
        .collect::<Vec<()>>()
        .await;
    let summary = invoke(FanOutStep::Summarize {
        run: "sim".into(),
        plan: plan.clone(),
    })
    .await;
    let wall = started.elapsed();
    let published = sim.central.published();
    assert_eq!(published.len(), 1, "one summary ({summary:?})");
    let body: Value = serde_json::from_str(&published[0].body).unwrap();
    let n = |k: &str| body[k].as_u64().unwrap();
    let shard_invocations = plan.accounts.len() as u64 + engine_retries.load(Ordering::Relaxed);
    assert_eq!(
        n("swept") + n("failed") + n("not_reached"),
        plan.accounts.len() as u64,
        "no shard lost"
    );
    Run {
        account_regions: plan.account_regions(),
        accounts: plan.accounts.len(),
        concurrency: plan.concurrency,
        wall,
        swept: n("swept"),
        failed: n("failed"),
        not_reached: n("not_reached"),
        calls: sim.all_calls().values().sum(),
        sdk_retries: pace.retries.load(Ordering::Relaxed),
        engine_retries: engine_retries.load(Ordering::Relaxed),
        invocations: invocations.load(Ordering::Relaxed),
        transitions: 4 + shard_invocations + caught.load(Ordering::Relaxed),
        shard_seconds: shard_ms.load(Ordering::Relaxed) as f64 / 1000.0 / shard_invocations as f64,
        summary_bytes: published[0].body.len(),
    }
}

/// One invocation, 900 s, as today's single sweep: how many account-regions
/// it reaches before it stops to report.
async fn single_ceiling(accounts: usize, regions: &[&str]) -> (usize, u64) {
    let sim = SimClients::new(accounts, pace());
    let cfg = config(&[
        ("MEMBER_ROLE_NAME", "imds-guard-member"),
        ("SWEEP_ACCOUNTS", "ORGANIZATION"),
        ("SWEEP_REGIONS", &regions.join(",")),
        ("MEMORY_TABLE", "imds-guard-memory"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(900);
    let (report, _) = imds_guard::sweep::Sweep::new(&cfg, &sim)
        .collect(
            Default::default(),
            &imds_guard::config::SweepScope::configured(&cfg, None),
            Some(deadline),
            &|_| {},
        )
        .await;
    let regions_done = report
        .sweep
        .as_ref()
        .unwrap()
        .regions
        .iter()
        .filter(|r| r.errors.is_empty())
        .count();
    (accounts * regions.len(), regions_done as u64)
}

#[tokio::test(start_paused = true)]
#[ignore = "a simulation: run with `make bench-org`"]
async fn an_organization_of_17000_account_regions_is_swept_to_the_end() {
    let real = std::time::Instant::now();
    println!("| account-regions | accounts × regions | concurrency | simulated wall | swept / failed / not reached | invocations | state transitions | mean shard | AWS calls | SDK retries | engine retries | summary bytes |");
    println!("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (accounts, regions) in [
        (25, &REGIONS[..4]),
        (250, &REGIONS[..4]),
        (1000, &REGIONS[..]),
    ] {
        let r = fan_out(accounts, regions).await;
        println!(
            "| {} | {} × {} | {} | {:.0} s | {} / {} / {} | {} | {} | {:.1} s | {} | {} | {} | {} |",
            r.account_regions,
            r.accounts,
            regions.len(),
            r.concurrency,
            r.wall.as_secs_f64(),
            r.swept,
            r.failed,
            r.not_reached,
            r.invocations,
            r.transitions,
            r.shard_seconds,
            r.calls,
            r.sdk_retries,
            r.engine_retries,
            r.summary_bytes
        );
        assert_eq!(r.swept + r.failed + r.not_reached, r.accounts as u64);
        assert_eq!(r.not_reached, 0, "the run reaches every shard");
        assert!(r.summary_bytes <= imds_guard::notify::MAX_BODY);
    }
    let (planned, reached) = single_ceiling(1000, &REGIONS[..]).await;
    println!();
    println!("| single invocation (900 s) | planned | swept to the end before its deadline |");
    println!("|---|---:|---:|");
    println!("| today's sweep | {planned} | {reached} |");
    println!();
    println!(
        "(simulated seconds; {:.1} s of this machine's time)",
        real.elapsed().as_secs_f64()
    );
}

/// A single-invocation sweep of several accounts gives each account its own
/// `MAX_CHANGES_PER_RUN`, as each fan-out shard has: one member's fleet
/// cannot spend the budget of the others.
#[tokio::test(start_paused = true)]
async fn each_account_of_one_sweep_has_its_own_change_budget() {
    let sim = SimClients::new(3, pace());
    let cfg = config(&[
        ("MEMBER_ROLE_NAME", "imds-guard-member"),
        ("SWEEP_ACCOUNTS", "ORGANIZATION"),
        ("SWEEP_REGIONS", "us-east-1"),
        ("MEMORY_TABLE", "imds-guard-memory"),
        ("GUARD_MODE", "enforce"),
        ("MAX_CHANGES_PER_RUN", "4"),
        ("MAX_CHANGE_PERCENT", "100"),
    ]);
    let (report, _) = imds_guard::sweep::Sweep::new(&cfg, &sim)
        .collect(
            Default::default(),
            &imds_guard::config::SweepScope::configured(&cfg, None),
            None,
            &|_| {},
        )
        .await;
    let regions = &report.sweep.as_ref().unwrap().regions;
    assert_eq!(regions.len(), 3);
    for r in regions {
        // Six noncompliant in each: four changed, two held, in every one.
        assert_eq!(
            r.count(imds_guard::report::Outcome::Remediated),
            4,
            "{:?}: {:?}",
            r.account,
            r.counts
        );
    }
}

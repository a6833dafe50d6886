//! CloudWatch metrics in the Embedded Metric Format: log lines that
//! CloudWatch Logs turns into metrics, with no `PutMetricData` call and no
//! latency. A handful of documents per invocation, built from the report:
//!
//! - an event's decisions: `Decisions` by `Mode` and `Outcome`;
//! - a sweep's account-regions: `IMDSv1Left`, `HeldBack`, `Exempt`,
//!   `RemediatedBySweep`, `NoncompliantSources` and `Ready` (1 or 0) by
//!   `Region`, and by `Account` and `Region` when `METRICS_PER_ACCOUNT` is on.
//!
//! Each distinct dimension set is a billed custom metric, so dimensions stay
//! few by default (docs/outputs.md counts them). The format is small enough
//! that a crate would add more than it saves: its rules are tested here.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::Config;
pub use crate::config::{MetricsConfig, DEFAULT_NAMESPACE};
use crate::policy::ReadinessVerdict;
use crate::report::{Outcome, Report};

/// Every metric the function emits, and the dimension sets it is emitted
/// with (`Account` only with `per_account`).
pub const EVENT_METRICS: &[&str] = &["Decisions"];
/// Without dimensions, from every sweep: what its alarm watches.
pub const MISSED_EVENTS: &str = "MissedEvents";
/// Without dimensions, from every self-check run (`probe::metrics`):
/// account-regions where a probe failed or was unsafe; its alarm watches it.
pub const SELF_CHECK_FAILURES: &str = "SelfCheckFailures";
pub const SWEEP_METRICS: &[&str] = &[
    "IMDSv1Left",
    "HeldBack",
    "Exempt",
    "RemediatedBySweep",
    "NoncompliantSources",
    "Ready",
    "IMDSv1CredentialUsers",
];

/// The EMF documents for a report, one JSON object per line (`now_ms`:
/// milliseconds since the epoch). Nothing when metrics are off.
pub fn documents(cfg: &Config, report: &Report, now_ms: u64) -> Vec<String> {
    let Some(m) = &cfg.metrics else {
        return Vec::new();
    };
    let mut docs = Vec::new();
    // An event's decisions, by outcome (a sweep's are its region figures).
    // One launch is counted once: not while another event decides it (a
    // `pending` try awaiting `running`, a launcher not known yet, a first
    // boot waited for), nor when another event already told of it.
    if report.sweep.is_none() {
        let mut by_outcome: BTreeMap<Outcome, u64> = BTreeMap::new();
        let counted = |r: &&crate::report::InstanceReport| {
            !r.action.idle.awaits_another_event()
                && !matches!(
                    r.action.idle,
                    crate::report::Idle::AlreadyTold | crate::report::Idle::FirstBoot { .. }
                )
        };
        for r in report.instances.iter().filter(counted) {
            *by_outcome.entry(r.outcome).or_default() += 1;
        }
        for (outcome, n) in by_outcome {
            docs.push(document(
                m,
                now_ms,
                &[
                    ("Mode", report.mode.as_str()),
                    ("Outcome", outcome.as_str()),
                ],
                &[],
                &[("Decisions", n as f64, "Count")],
            ));
        }
    }
    if let Some(sweep) = &report.sweep {
        // Per region, summed over the accounts swept (one datapoint per
        // region and sweep: read with Sum, or Minimum for `Ready`); with
        // `per_account`, one per account-region in both dimension sets
        // (Sum over the [Region] set gives the same totals, as it does for
        // the fan-out's shards, each of which writes its own account's).
        // A region not swept to the end in some account writes nothing: a
        // partial count would read as progress.
        let mut by_region: BTreeMap<&str, (Figures, bool)> = BTreeMap::new();
        for s in &sweep.regions {
            let entry = by_region
                .entry(s.region.as_str())
                .or_insert((Figures::ready(), true));
            if !s.errors.is_empty() {
                entry.1 = false;
                continue;
            }
            let f = Figures::of(s);
            if m.per_account {
                if let Some(a) = &s.account {
                    docs.push(document(
                        m,
                        now_ms,
                        &[("Region", s.region.as_str())],
                        &[("Account", a.as_str())],
                        &f.values(),
                    ));
                    continue;
                }
            }
            entry.0.add(&f);
        }
        for (region, (f, complete)) in by_region {
            if complete && f.any {
                docs.push(document(m, now_ms, &[("Region", region)], &[], &f.values()));
            }
        }
        // Events that never arrived, over every account-region swept (a
        // region not swept to the end still counts what it fixed): one
        // metric, no dimension, which the stack's alarm watches.
        let missed: u64 = sweep.regions.iter().map(|r| r.missed_events).sum();
        docs.push(document(
            m,
            now_ms,
            &[],
            &[],
            &[(MISSED_EVENTS, missed as f64, "Count")],
        ));
    }
    docs
}

/// What a sweep found in a region (one account's, or summed).
#[derive(Clone, Copy)]
struct Figures {
    left: u64,
    held: u64,
    exempt: u64,
    remediated: u64,
    sources: u64,
    ready: bool,
    /// Instances where software used IMDSv1-delivered credentials
    /// (CloudTrail); `None` where CloudTrail was not asked: not measured is
    /// not zero.
    credential_users: Option<u64>,
    /// Holds at least one account-region's figures.
    any: bool,
}

impl Figures {
    fn ready() -> Self {
        Figures {
            left: 0,
            held: 0,
            exempt: 0,
            remediated: 0,
            sources: 0,
            ready: true,
            credential_users: None,
            any: false,
        }
    }

    fn of(s: &crate::report::RegionSweep) -> Self {
        Figures {
            left: s.count(Outcome::Flagged) + s.count(Outcome::Failed),
            held: s.v1_in_use,
            exempt: s.count(Outcome::Exempt),
            remediated: s.count(Outcome::Remediated),
            sources: s.sources,
            ready: matches!(
                s.readiness.verdict,
                ReadinessVerdict::Ready | ReadinessVerdict::AlreadyEnforced
            ),
            credential_users: s.imdsv1_callers.as_ref().filter(|m| m.asked > 0).map(|m| {
                m.instances
                    .iter()
                    .filter(|i| !i.seen.callers.is_empty())
                    .count() as u64
            }),
            any: true,
        }
    }

    fn add(&mut self, o: &Figures) {
        self.left += o.left;
        self.held += o.held;
        self.exempt += o.exempt;
        self.remediated += o.remediated;
        self.sources += o.sources;
        self.ready &= o.ready;
        if let Some(n) = o.credential_users {
            *self.credential_users.get_or_insert(0) += n;
        }
        self.any = true;
    }

    fn values(&self) -> Vec<(&'static str, f64, &'static str)> {
        let mut v = vec![
            ("IMDSv1Left", self.left as f64, "Count"),
            ("HeldBack", self.held as f64, "Count"),
            ("Exempt", self.exempt as f64, "Count"),
            ("RemediatedBySweep", self.remediated as f64, "Count"),
            ("NoncompliantSources", self.sources as f64, "Count"),
            ("Ready", if self.ready { 1.0 } else { 0.0 }, "None"),
        ];
        if let Some(n) = self.credential_users {
            v.push(("IMDSv1CredentialUsers", n as f64, "Count"));
        }
        v
    }
}

/// One EMF document: `dims` always, and a second dimension set with
/// `extra` added when there is one (both sets read the same values).
pub(crate) fn document(
    m: &MetricsConfig,
    now_ms: u64,
    dims: &[(&str, &str)],
    extra: &[(&str, &str)],
    values: &[(&str, f64, &str)],
) -> String {
    let mut root = Map::new();
    let mut sets = vec![Value::from(
        dims.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    )];
    if !extra.is_empty() {
        sets.push(Value::from(
            extra
                .iter()
                .chain(dims.iter())
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
        ));
    }
    for (k, v) in dims.iter().chain(extra.iter()) {
        root.insert((*k).into(), Value::from(*v));
    }
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    for (name, v, _) in values {
        root.insert((*name).into(), json!(v));
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": m.namespace,
                "Dimensions": sets,
                "Metrics": metrics,
            }]
        }),
    );
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::policy::Readiness;
    use crate::report::{Idle, InstanceReport, RegionSweep, Status, SweepSummary};

    /// The regional documents of a sweep, after checking its one
    /// dimensionless `MissedEvents` document (last) says `missed`.
    fn regional(mut docs: Vec<String>, missed: u64) -> Vec<String> {
        let last = check_emf(&docs.pop().expect("a MissedEvents document"));
        assert_eq!(last[MISSED_EVENTS], missed as f64);
        assert_eq!(
            last["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]]),
            "no dimension: one alarm watches it"
        );
        docs
    }

    #[test]
    fn missed_events_are_summed_over_every_region_even_one_not_swept_to_the_end() {
        let mut report = sweep_report();
        let regions = &mut report.sweep.as_mut().unwrap().regions;
        regions[0].missed_events = 2;
        regions[2].missed_events = 1;
        let docs = regional(documents(&cfg(false), &report, 1_795_000_000_000), 3);
        assert_eq!(docs.len(), 2);
    }

    fn cfg(per_account: bool) -> Config {
        Config {
            metrics: Some(MetricsConfig {
                namespace: "ImdsGuard".into(),
                per_account,
            }),
            ..Config::default()
        }
    }

    /// The specification's rules, checked on every document: one JSON
    /// object; `_aws.Timestamp` in milliseconds; at most 100 metric
    /// definitions, at most 30 dimensions a set; every dimension a string
    /// and every metric a number, at the root.
    fn check_emf(doc: &str) -> Value {
        assert!(!doc.contains('\n'), "one line");
        let v: Value = serde_json::from_str(doc).unwrap();
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].as_u64().unwrap() > 1_000_000_000_000);
        for d in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert!(!d["Namespace"].as_str().unwrap().is_empty());
            let metrics = d["Metrics"].as_array().unwrap();
            assert!((1..=100).contains(&metrics.len()));
            for set in d["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30);
                for k in set {
                    let value = v[k.as_str().unwrap()].as_str().expect("dimension at root");
                    assert!(!value.is_empty() && value.len() <= 1024);
                }
            }
            for m in metrics {
                let name = m["Name"].as_str().unwrap();
                assert!(v[name].is_number(), "{name} has no value at the root");
                let unit = m["Unit"].as_str().unwrap();
                assert!(["Count", "None"].contains(&unit));
            }
        }
        v
    }

    #[test]
    fn an_events_decisions_are_counted_by_mode_and_outcome() {
        let mut report = Report::handled(Status::Handled, Mode::Enforce, Default::default());
        report.instances = vec![
            InstanceReport::new("i-00000000000000001", Outcome::Remediated, Idle::None),
            InstanceReport::new("i-00000000000000002", Outcome::Remediated, Idle::None),
            InstanceReport::new("i-00000000000000003", Outcome::Exempt, Idle::Exempt),
            // Counted by the event that decides or told of them.
            InstanceReport::new(
                "i-00000000000000004",
                Outcome::Flagged,
                Idle::AwaitingRunning,
            ),
            InstanceReport::new(
                "i-00000000000000005",
                Outcome::Flagged,
                Idle::AwaitingLauncher,
            ),
            InstanceReport::new("i-00000000000000006", Outcome::Flagged, Idle::AlreadyTold),
        ];
        let docs = documents(&cfg(false), &report, 1_795_000_000_000);
        assert_eq!(docs.len(), 2, "{docs:?}");
        let v: Vec<Value> = docs.iter().map(|d| check_emf(d)).collect();
        assert_eq!(v[0]["Outcome"], "remediated");
        assert_eq!(v[0]["Mode"], "enforce");
        assert_eq!(v[0]["Decisions"], 2.0);
        assert_eq!(v[1]["Outcome"], "exempt");
        assert_eq!(v[1]["Decisions"], 1.0);
        assert_eq!(
            v[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Mode", "Outcome"]])
        );
        // Metrics off: nothing.
        let off = Config {
            metrics: None,
            ..Config::default()
        };
        assert!(documents(&off, &report, 1).is_empty());
        // No instance decided: nothing either.
        report.instances.clear();
        assert!(documents(&cfg(false), &report, 1).is_empty());
    }

    fn sweep_report() -> Report {
        let mut a = RegionSweep::new("eu-west-1");
        a.account = Some("111122223333".into());
        a.counts.insert(Outcome::Flagged, 3);
        a.counts.insert(Outcome::Failed, 1);
        a.counts.insert(Outcome::Remediated, 5);
        a.counts.insert(Outcome::Exempt, 2);
        a.v1_in_use = 3;
        a.sources = 1;
        a.imdsv1_callers = Some(crate::v1_callers::LastMile {
            asked: 2,
            instances: vec![crate::v1_callers::InstanceCallers {
                instance_id: "i-0aaaaaaaaaaaaaaa1".into(),
                asked_at: 1_795_000_000,
                seen: crate::v1_callers::attribute(
                    "i-0aaaaaaaaaaaaaaa1",
                    &[crate::v1_callers::Call {
                        instance: "i-0aaaaaaaaaaaaaaa1".into(),
                        role: "app".into(),
                        v1: true,
                        agent: "aws-cli/1.16.102".into(),
                        source: "10.0.0.12".into(),
                        example: "s3:ListBuckets".into(),
                        time: 1_795_000_000,
                    }],
                    crate::v1_callers::Place {
                        private: &["10.0.0.12".to_string()],
                        ..Default::default()
                    },
                    Default::default(),
                ),
            }],
            ..Default::default()
        });
        a.readiness = Readiness {
            verdict: ReadinessVerdict::NotReady,
            reasons: vec![],
        };
        let mut b = RegionSweep::new("us-east-1");
        b.account = Some("111122223333".into());
        b.readiness = Readiness {
            verdict: ReadinessVerdict::Ready,
            reasons: vec![],
        };
        let mut unfinished = RegionSweep::new("ap-south-1");
        unfinished.errors.push("not swept: AccessDenied".into());
        let mut report = Report::handled(Status::Handled, Mode::Notify, Default::default());
        report.sweep = Some(SweepSummary {
            regions: vec![a, b, unfinished],
            ..SweepSummary::default()
        });
        report
    }

    #[test]
    fn a_sweep_reports_what_is_left_per_region_and_nothing_for_a_region_not_swept() {
        let docs = regional(
            documents(&cfg(false), &sweep_report(), 1_795_000_000_000),
            0,
        );
        assert_eq!(docs.len(), 2, "the unfinished region says nothing");
        let a = check_emf(&docs[0]);
        assert_eq!(a["Region"], "eu-west-1");
        assert_eq!(a["IMDSv1Left"], 4.0);
        assert_eq!(a["HeldBack"], 3.0);
        assert_eq!(a["Exempt"], 2.0);
        assert_eq!(a["RemediatedBySweep"], 5.0);
        assert_eq!(a["NoncompliantSources"], 1.0);
        assert_eq!(a["Ready"], 0.0);
        assert!(
            a.get("Account").is_none(),
            "no account dimension by default"
        );
        assert_eq!(
            a["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Region"]])
        );
        assert_eq!(a["IMDSv1CredentialUsers"], 1.0);
        let b = check_emf(&docs[1]);
        assert_eq!(b["Ready"], 1.0);
        assert_eq!(b["IMDSv1Left"], 0.0);
        assert!(
            b.get("IMDSv1CredentialUsers").is_none(),
            "CloudTrail not asked there: not measured, not zero"
        );
        let names: Vec<&str> = a["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, SWEEP_METRICS);
    }

    #[test]
    fn per_account_dimensions_are_opt_in_and_keep_the_region_set() {
        let docs = regional(documents(&cfg(true), &sweep_report(), 1_795_000_000_000), 0);
        let a = check_emf(&docs[0]);
        assert_eq!(a["Account"], "111122223333");
        assert_eq!(
            a["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Region"], ["Account", "Region"]])
        );
    }

    #[test]
    fn a_region_is_summed_over_its_accounts_and_silent_if_one_was_not_swept() {
        let region = |account: &str, name: &str, flagged: u64, ready: bool| {
            let mut r = RegionSweep::new(name);
            r.account = Some(account.into());
            r.counts.insert(Outcome::Flagged, flagged);
            r.readiness = Readiness {
                verdict: if ready {
                    ReadinessVerdict::Ready
                } else {
                    ReadinessVerdict::NotReady
                },
                reasons: vec![],
            };
            r
        };
        let mut broken = region("333333333333", "us-east-1", 9, false);
        broken.errors.push("not swept: AccessDenied".into());
        let mut report = Report::handled(Status::Handled, Mode::Notify, Default::default());
        report.sweep = Some(SweepSummary {
            regions: vec![
                region("111111111111", "eu-west-1", 3, true),
                region("222222222222", "eu-west-1", 4, false),
                region("111111111111", "us-east-1", 1, true),
                broken,
            ],
            ..SweepSummary::default()
        });
        let docs = regional(documents(&cfg(false), &report, 1_795_000_000_000), 0);
        assert_eq!(docs.len(), 1, "us-east-1 was not swept in every account");
        let v = check_emf(&docs[0]);
        assert_eq!(v["Region"], "eu-west-1");
        assert_eq!(v["IMDSv1Left"], 7.0);
        assert_eq!(v["Ready"], 0.0, "ready only if every account is");
        // Per account: each account-region, in both sets.
        let docs = regional(documents(&cfg(true), &report, 1_795_000_000_000), 0);
        assert_eq!(docs.len(), 3);
    }
}

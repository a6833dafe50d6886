//! The domain modules of imds-guard, compiled on their own: what an event
//! means, the policy, the report and the notification. They hold no AWS
//! types, which is what lets them be fuzzed and benchmarked without the SDK.
#![allow(dead_code)]

#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/event.rs"]
pub mod event;
#[path = "../../src/glob.rs"]
pub mod glob;
#[path = "../../src/notify.rs"]
pub mod notify;
#[path = "../../src/policy.rs"]
pub mod policy;
#[path = "../../src/report.rs"]
pub mod report;

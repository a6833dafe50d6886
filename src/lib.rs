//! imds-guard: a Lambda guardrail that keeps EC2 instances on IMDSv2.
//!
//! The domain (`event`, `config`, `policy`, `report`, `notify`) is the
//! `imds-guard-domain` crate, plain Rust with no AWS types, re-exported here;
//! `aws` holds every AWS call; `guard` runs one event through
//! event → decision → actions → report; `cli` and `main` are the two doors.

pub use imds_guard_domain::{config, event, glob, notify, plan, policy, report, validate};

pub mod aws;
pub mod cli;
pub mod guard;
pub mod sweep;

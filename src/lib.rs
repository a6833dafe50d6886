//! imds-guard: a Lambda guardrail that keeps EC2 instances on IMDSv2.
//!
//! The domain (`event`, `policy`, `report`, `notify`) is plain Rust with no
//! AWS types; `aws` and `member_roles` hold every AWS call; `guard` runs one event through
//! event → decision → actions → report; `cli` and `main` are the two doors.

pub mod aws;
pub mod cli;
pub mod config;
pub mod event;
pub mod glob;
pub mod guard;
pub mod member_roles;
pub mod notify;
pub mod policy;
pub mod report;
pub mod sweep;

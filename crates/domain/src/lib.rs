//! The domain of imds-guard, in plain Rust: what an event means (`event`),
//! the one typed configuration (`config`), the policy (`policy`), what
//! happened (`report`) and what a person is told (`notify`). No AWS SDK type
//! appears here, and this crate does not depend on one: the compiler keeps
//! the policy free of I/O.

pub mod break_glass;
pub mod breaker;
pub mod cap;
pub mod config;
pub mod confirm;
pub mod delivery;
pub mod doctor;
pub mod event;
pub mod fanout;
pub mod finding;
pub mod first_boot;
pub mod glob;
pub mod handoff;
pub mod launch_template;
pub mod launcher;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod native;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod prevention;
pub mod probe;
pub mod release;
pub mod report;
pub mod rollout;
pub mod routing;
pub mod source;
pub mod time;
pub mod v1_callers;
pub mod validate;
pub mod watch;

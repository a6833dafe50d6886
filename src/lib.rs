//! imds-guard: a Lambda guardrail that keeps EC2 instances on IMDSv2.
//!
//! The domain (what an event means, the policy, the plan, the report, what a
//! person is told) is the `imds-guard-domain` crate, plain Rust with no AWS
//! types, re-exported here. `aws` holds every AWS call behind small traits.
//! `guard` reads a payload and hands it to its flow: `event_path` (event →
//! decision → actions → report), `sources` (launch templates and groups),
//! `sweep`, `org_sweep` (the fan-out's steps), `self_check`,
//! `exemption_check`, `outputs_function` (the outputs function's batches),
//! `first_boot_function` (the first-boot function's delayed decisions).
//! The flows act through `remedies` and tell through `outbox`; `lambda` (the
//! three function binaries, `src/bin`) and `cli` (the command line,
//! `src/main.rs`) are the two doors. ARCHITECTURE.md draws the layers.

pub use imds_guard_domain::{
    break_glass, breaker, cap, config, confirm, delivery, doctor, event, fanout, finding,
    first_boot, glob, handoff, launch_template, launcher, memory, message, metrics, native, notify,
    plan, policy, prevention, probe, release, report, rollout, routing, source, time, v1_callers,
    validate, watch,
};

pub mod account_region;
pub mod aws;
pub mod break_glass_flow;
pub mod cli;
pub mod clock;
pub mod doctor_flow;
pub mod error;
pub mod event_path;
pub mod exemption_check;
pub mod findings;
pub mod first_boot_flow;
pub mod first_boot_function;
pub mod guard;
pub mod lambda;
pub mod migrate;
pub mod modes;
pub mod native_flow;
pub mod org_sweep;
pub mod outbox;
pub mod outputs_function;
pub mod pipeline;
pub mod remedies;
pub mod self_check;
pub mod sources;
pub mod sweep;
pub mod telemetry;

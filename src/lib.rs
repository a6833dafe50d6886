//! imds-guard: a Lambda guardrail that keeps EC2 instances on IMDSv2.
//!
//! The domain (`event`, `config`, `policy`, `report`, `notify`) is the
//! `imds-guard-domain` crate, plain Rust with no AWS types, re-exported here;
//! `aws` holds every AWS call behind small traits; `guard` reads a payload
//! and hands it to its flow, `event_path` (event → decision → actions →
//! report), `sources` (launch templates and groups) or `sweep`; they act
//! through `act` and `sources`, and report through `outputs`; `cli` and `main` are the two doors.

pub use imds_guard_domain::{
    break_glass, breaker, cap, config, confirm, doctor, event, fanout, finding, glob, handoff,
    memory, metrics, notify, plan, policy, probe, report, routing, source, validate, watch,
};

pub mod act;
pub mod aws;
pub mod break_glass_flow;
pub mod cli;
pub mod doctor_flow;
pub mod event_path;
pub mod exemption_check;
pub mod findings;
pub mod guard;
pub mod handoff_flow;
pub mod lambda;
pub mod migrate;
pub mod modes;
pub mod org_sweep;
pub mod outputs;
pub mod self_check;
pub mod sources;
pub mod sweep;

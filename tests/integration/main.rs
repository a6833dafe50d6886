//! Integration tests, in one binary so the AWS SDK is linked once.
//! - `faults`: the guard against mocked EC2/SNS (aws-smithy-mocks) for real
//!   AWS behaviour the emulator lacks: eventual consistency, pending
//!   instances, throttling, missing permissions, partial failure.
//! - `emulator`: end to end against moto's server (started by `make test`).
//! - `sweep_emulator`, `sweep_faults`: the fleet sweep against the emulator,
//!   and against mocks for what the emulator lacks.
//! - `org_emulator`: central mode, one function for several accounts (the
//!   emulator models accounts), and a refused assume role (mocked).
//! - `rules_emulator`: the templates' event patterns on the emulator's
//!   EventBridge engine: the guard's own changes never reach it.
//! - `fake`, `flows`: an in-memory AWS (describe, modify, tag, list,
//!   defaults, publish, the metric) and the flow logic tested on it, with
//!   time paused.
//! - `outputs_emulator`: the same outputs end to end on the emulator
//!   (findings read back, a rule on a custom bus, SNS per protocol).
//! - `outputs_flow`: Security Hub findings, the bus and the cost of a
//!   compliant launch with every output on, on the fake.
//! - `operations`: the controls of a bad day on the fake: break-glass
//!   grants and the circuit breaker; `operations_emulator`, the same on the
//!   emulator through the command line.
//! - `cli`: the binary's `check` command.
//! - `launcher_shapes`: instances and templates as services and tools make
//!   them (events/shapes/launchers.json, with provenance), fixed as each needs.
//! - `real_records`: real CloudTrail and EventBridge records other projects
//!   captured (events/real/), through the parser, the event path and
//!   `imds-guard check`.
//! - `doctor`: `imds-guard doctor` on mocked AWS, each check's answers, and
//!   its read-only policy kept in step with the calls it makes.
//! - `smoke_script`: tools/smoke-aws.sh with stub `aws` and `sam`: its plan
//!   makes no call, its refusals refuse, Ctrl-C deletes what it began.
//! - `self_check`: the self-check's dry-run probes on mocked EC2, every
//!   answer AWS can give (the emulator applies dry runs, so it cannot).
//! - `iam`: an IAM policy evaluator (IAM's documented semantics, tested on
//!   AWS's examples) and the templates' policies resolved as CloudFormation
//!   would; `iam_conditions` evaluates both roles on the requests the guard
//!   really sends; `reference_keys` checks every condition key against the
//!   Service Authorization Reference's data (pinned).
//! - `load`, `function_bench`, `trigger_sim`, `org_sim`: benchmarks and
//!   simulations, ignored by `make test` (`make load`, `make bench`,
//!   `make bench-org`).

mod claims_race;
mod cli;
mod common;
mod corpus;
mod doctor;
mod emulator;
mod exemption_check;
mod fake;
mod fanout_flow;
mod fanout_runtime;
mod faults;
mod first_boot;
mod flows;
mod function_bench;
mod golden;
mod golden_emulator;
mod iam;
mod iam_conditions;
mod last_mile;
mod launcher_shapes;
mod load;
mod memory_sim;
mod native;
mod netfaults;
mod operations;
mod operations_emulator;
mod org_emulator;
mod org_sim;
mod outputs_emulator;
mod outputs_flow;
mod prevention;
mod properties;
mod real_records;
mod reference_keys;
mod refusals;
mod resource_policies;
mod rules_emulator;
mod runtime;
mod self_check;
mod smoke_script;
mod source_faults;
mod stack_rules;
mod sweep_emulator;
mod sweep_faults;
mod template;
mod trigger_sim;

//! Integration tests, in one binary so the AWS SDK is linked once.
//! - `faults`: the guard against mocked EC2/SNS (aws-smithy-mocks) for real
//!   AWS behaviour the emulator lacks: eventual consistency, pending
//!   instances, throttling, missing permissions, partial failure.
//! - `emulator`: end to end against moto's server (started by `make test`).
//! - `cli`: the binary's `check` command.

mod cli;
mod common;
mod corpus;
mod emulator;
mod faults;
mod load;
mod netfaults;
mod properties;
mod runtime;
mod template;

//! The outputs function: the findings and events the event function and the
//! sweep functions' binary (a sweep, a fan-out shard or summary, a source
//! event) hand off through its queue, filed in Security Hub and put on the bus.
//! Its bootstrap carries those two clients (and the memory's and STS's,
//! to remember findings and enter member accounts), and no EC2 or sweep
//! code (docs/design.md).

use std::process::ExitCode;

#[cfg(panic = "abort")]
compile_error!(
    "imds-guard-outputs must be built with panic = \"unwind\" (see [profile.release] in Cargo.toml)"
);

fn main() -> ExitCode {
    imds_guard::lambda::run::<imds_guard::lambda::OutputsFunction>()
}

//! The sweep functions' binary: the scheduled sweep, source events, the
//! organization fan-out's steps, the self-check and the exemption check, when
//! the Lambda runtime starts it (SweepFunction, SourceFunction, FanOutFunction,
//! SelfCheckFunction, ExemptionCheckFunction). The command line is
//! `imds-guard` (src/main.rs), a binary of its own, so this bootstrap carries
//! none of its clients or crates (docs/design.md).

use std::process::ExitCode;

#[cfg(panic = "abort")]
compile_error!(
    "imds-guard-sweep must be built with panic = \"unwind\" (see [profile.release] in Cargo.toml)"
);

fn main() -> ExitCode {
    imds_guard::lambda::run::<imds_guard::lambda::SweepFunction>()
}

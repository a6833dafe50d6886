//! The event function: CloudTrail and EC2 events through the event path, and
//! nothing else. Its bootstrap reaches no sweep code, so it carries neither
//! the sweep's clients nor the command line (docs/design.md).

use std::process::ExitCode;

#[cfg(panic = "abort")]
compile_error!(
    "imds-guard-event must be built with panic = \"unwind\" (see [profile.release] in Cargo.toml)"
);

fn main() -> ExitCode {
    imds_guard::lambda::run::<imds_guard::lambda::EventFunction>()
}

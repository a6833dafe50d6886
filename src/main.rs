//! The sweep function and the command line, one binary: the Lambda function
//! (every event, the scheduled sweep included) when the runtime starts it,
//! the command line when a person does. The event function is
//! `src/bin/event.rs`.

use std::process::ExitCode;

// lambda_runtime reports a panic in the handler as that invocation's error
// (so the event is retried) only when panics unwind; with "abort" the process
// dies mid-invocation. Refuse to build a bootstrap that would.
#[cfg(panic = "abort")]
compile_error!(
    "imds-guard must be built with panic = \"unwind\" (see [profile.release] in Cargo.toml)"
);

fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        imds_guard::lambda::run::<imds_guard::lambda::All>()
    } else {
        imds_guard::cli::run(std::env::args().skip(1).collect())
    }
}

//! One binary, two doors: the Lambda function when the runtime starts it,
//! the command line when a person does.

use std::process::ExitCode;

use imds_guard::aws::{load_sdk_config, RegionalClients};
use imds_guard::config::Config;
use imds_guard::guard::{Guard, GuardError};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

// lambda_runtime reports a panic in the handler as that invocation's error
// (so the event is retried) only when panics unwind; with "abort" the process
// dies mid-invocation. Refuse to build a bootstrap that would.
#[cfg(panic = "abort")]
compile_error!(
    "imds-guard must be built with panic = \"unwind\" (see [profile.release] in Cargo.toml)"
);

fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        function()
    } else {
        imds_guard::cli::run(std::env::args().skip(1).collect())
    }
}

fn function() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    // Read and check the configuration once; a bad value fails init, naming
    // the variable, before any event is taken.
    let cfg = match Config::from_env() {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(variable = e.variable, "{e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread: a 128 MB function has a fraction of a vCPU, and the work
    // is waiting on EC2, not computing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Credentials and endpoints are resolved once; clients per region
        // are built on first use and reused across invocations.
        let clients =
            RegionalClients::new(load_sdk_config().await).with_member_role(cfg.member_role.clone());
        let guard = Guard::new(cfg, clients);
        let guard = &guard;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            // A sweep stops in time to report before the function's timeout.
            let deadline =
                remaining(event.context.deadline).map(|left| tokio::time::Instant::now() + left);
            guard
                .handle_until(&event.payload, deadline)
                .await
                .map_err(diagnostic)
        }))
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("runtime stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The invocation's error as Lambda records it: a type a person (or a
/// metric filter) can match, and the message naming what was not handled.
fn diagnostic(e: GuardError) -> Diagnostic {
    let error_type = match e {
        GuardError::Malformed(_) => "ImdsGuard.MalformedEvent",
        GuardError::Unhandled { .. } => "ImdsGuard.Unhandled",
    };
    Diagnostic {
        error_type: error_type.into(),
        error_message: e.to_string(),
    }
}

/// Time left until the invocation's deadline (milliseconds since the epoch).
fn remaining(deadline_ms: u64) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    std::time::Duration::from_millis(deadline_ms).checked_sub(now)
}

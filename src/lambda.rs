//! The function's edge: what each of the three function binaries does when the
//! Lambda runtime starts it. Tracing set up, the configuration read and checked
//! once; at init the SDK configuration loaded and the own-account clients built
//! (the memory's DynamoDB, the queues' SQS, and the outputs binary's bus), the
//! rest per account and region on first use, and kept; then the runtime loop
//! hands each event to the guard. A failure becomes a `Diagnostic` whose type a
//! person or a metric filter can match.
//!
//! Three function binaries are built from this crate (docs/design.md; the
//! command line, `imds-guard`, is a fourth): the event
//! function's (`imds-guard-event`) reaches only the event path, so its
//! bootstrap carries no sweep client; the sweep functions' (`imds-guard-sweep`)
//! reach the rest; neither carries Security Hub's or EventBridge's client
//! (each bootstrap's size budget), and both hand their findings and events
//! to the outputs function (`imds-guard-outputs`), which carries those two
//! and little else.

use std::future::Future;
use std::process::ExitCode;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::clients::{AllOutputs, NoOutputs, Outputs};
use crate::aws::{load_sdk_config, RegionalClients};
use crate::config::Config;
use crate::guard::{Guard, GuardError};

/// Which events a function takes. A type, not a value: each binary's loop is
/// compiled for its own, so the event function's never reaches the sweep.
pub trait Function {
    /// The output clients the binary carries (Security Hub, EventBridge).
    type Outputs: Outputs;
    fn handle<'a>(
        guard: &'a Guard<RegionalClients<Self::Outputs>>,
        payload: &'a Value,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Value, GuardError>> + 'a;
}

/// CloudTrail and EC2 events only; a scheduled event is ignored, with the
/// reason (the sweep function takes it).
pub struct EventFunction;

impl Function for EventFunction {
    /// None: the event function's bootstrap stays within its 8 MB budget;
    /// it hands findings and events to the outputs function.
    type Outputs = NoOutputs;
    async fn handle(
        guard: &Guard<RegionalClients<NoOutputs>>,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        let report = guard.handle_event(payload, deadline).await?;
        Ok(serde_json::to_value(report).unwrap_or(Value::Null))
    }
}

/// Everything else: the scheduled sweep, source events, and the fan-out's
/// steps.
pub struct SweepFunction;

impl Function for SweepFunction {
    /// None: the outputs function files and puts them.
    type Outputs = NoOutputs;
    fn handle<'a>(
        guard: &'a Guard<RegionalClients<NoOutputs>>,
        payload: &'a Value,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Value, GuardError>> + 'a {
        guard.handle_payload(payload, deadline)
    }
}

/// The outputs function: batches of handed-off findings and events.
pub struct OutputsFunction;

impl Function for OutputsFunction {
    type Outputs = AllOutputs;
    async fn handle(
        guard: &Guard<RegionalClients<AllOutputs>>,
        payload: &Value,
        _deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        guard.handle_handoffs(payload).await
    }
}

/// The function's logs, as `lambda_runtime`'s default subscriber writes
/// them (no target, no time: CloudWatch stamps each line; JSON when Lambda's
/// log format is JSON), at the level Lambda's advanced logging controls set
/// (`AWS_LAMBDA_LOG_LEVEL`), else `RUST_LOG`'s, else INFO. A level, not
/// `EnvFilter` directives: its regex engine would not fit the event
/// bootstrap's 8 MB.
fn logs() {
    use tracing_subscriber::filter::LevelFilter;
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_max_level(level);
    if json {
        fmt.json().init()
    } else {
        fmt.init()
    }
}

/// Runs the Lambda runtime loop until the runtime stops.
pub fn run<F: Function>() -> ExitCode {
    logs();
    // The first line says which guard this is (docs/releasing.md).
    tracing::info!(
        version = crate::release::VERSION,
        commit = crate::release::COMMIT,
        "imds-guard {} starting",
        crate::release::LINE
    );
    // Read and check the configuration once; a bad value fails init, naming
    // the variable, before any event is taken.
    let cfg = match Config::from_env().and_then(|cfg| {
        cfg.needs_memory()?;
        cfg.fails_open()?;
        Ok(cfg)
    }) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(variable = e.variable, "{e}");
            report_init_error("ImdsGuard.Config", &e.to_string());
            return ExitCode::FAILURE;
        }
    };
    for notice in cfg.notices() {
        tracing::warn!("{notice}");
    }
    // One thread: a 128 MB function has a fraction of a vCPU, and the work
    // is waiting on AWS, not computing.
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
        // Credentials and endpoints are resolved once; clients per account
        // and region are built on first use and reused across invocations.
        let clients = RegionalClients::<F::Outputs>::for_config_with(load_sdk_config().await, &cfg)
            .with_outputs_of(&cfg);
        let guard = Guard::new(cfg, clients);
        let guard = &guard;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            // A sweep stops in time to report before the function's timeout.
            let deadline = remaining(event.context.deadline).map(|left| Instant::now() + left);
            // Boxed: the guard's future is deep, and the runtime's future
            // that holds it would otherwise exceed the compiler's layout
            // depth limit (one allocation per event).
            Box::pin(F::handle(guard, &event.payload, deadline))
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
pub fn diagnostic(e: GuardError) -> Diagnostic {
    let error_type = match e {
        GuardError::Malformed(_) => "ImdsGuard.MalformedEvent",
        GuardError::Unhandled { .. } => "ImdsGuard.Unhandled",
        GuardError::Incomplete { .. } => "ImdsGuard.Incomplete",
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

/// Tells the Lambda Runtime API why init failed, so the invocation's error
/// (and the console) names the variable, not only "Runtime.ExitError". Best
/// effort: the log line above says it too. A plain HTTP/1.1 request to the
/// runtime's own endpoint (`AWS_LAMBDA_RUNTIME_API`, on the sandbox's
/// loopback); lambda_runtime has no call for it.
fn report_init_error(kind: &str, message: &str) {
    use std::io::{Read, Write};
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": kind, "errorMessage": message}).to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: {kind}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = std::net::TcpStream::connect(&api).and_then(|mut c| {
        c.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        c.write_all(request.as_bytes())?;
        // The runtime answers 202; read it so the request is not cut off.
        let mut answer = [0u8; 256];
        let _ = c.read(&mut answer)?;
        Ok(())
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "the init error could not be reported to the Runtime API");
    }
}

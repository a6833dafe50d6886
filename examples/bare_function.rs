//! A bare Rust Lambda function: the runtime loop, an echo handler, nothing
//! else, built with imds-guard's release profile and started the same way
//! (one-thread runtime, logs as `lambda::logs` sets them up: plain text,
//! INFO). `make bench` measures its
//! init beside imds-guard's, so "close to a bare Rust function" is a figure
//! from this machine rather than from someone else's.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(lambda_runtime::run(service_fn(
            |event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) },
        )))
}

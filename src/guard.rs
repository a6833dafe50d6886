//! The guard: one Lambda payload, read once and handed to the flow it belongs
//! to: `event_path` (CloudTrail calls and EC2's state changes), `sources`
//! (launch template and Auto Scaling group calls), `sweep` (the schedule),
//! `org_sweep` (a fan-out step), `self_check`, `exemption_check`, and
//! `outputs_function` (a batch of the outputs queue). An event's or a sweep's
//! report counts the AWS calls it cost.

use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info};

use crate::aws::Clients;
use crate::config::{Config, SweepScope};
pub use crate::error::GuardError;
use crate::event::{self, EventContext, GuardEvent};
use crate::event_path::EventPath;
use crate::report::Report;
use crate::sweep::{Progress, Sweep};
use crate::telemetry::{calls_since, emit_metrics};

/// Reads a payload; an EC2 call event that cannot be read is an error, kept.
fn parse(payload: &Value) -> Result<GuardEvent, GuardError> {
    Ok(event::parse(payload).inspect_err(|e| error!(error = %e, "malformed event"))?)
}

pub struct Guard<C> {
    cfg: Config,
    clients: C,
}

impl<C: Clients> Guard<C> {
    pub fn new(cfg: Config, clients: C) -> Self {
        Guard { cfg, clients }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Handles one Lambda payload.
    pub async fn handle(&self, payload: &Value) -> Result<Report, GuardError> {
        self.handle_until(payload, None).await
    }

    /// Handles one Lambda payload; a sweep stops taking new pages in time to
    /// report before `deadline` (the function's timeout).
    pub async fn handle_until(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        self.counting_calls(self.dispatch(payload, deadline)).await
    }

    /// Handles one Lambda payload of the sweep function's binary: a
    /// self-check (`imds_guard_self_check`), answered with its result; a
    /// fan-out step (a payload with `imds_guard_step`), answered with what
    /// the state machine reads next; anything else as `handle_until`, its
    /// report as the answer.
    pub async fn handle_payload(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, GuardError> {
        if crate::exemption_check::is_request(payload) {
            return Box::pin(
                crate::exemption_check::ExemptionCheck::new(&self.cfg, &self.clients).run(),
            )
            .await;
        }
        if crate::self_check::is_request(payload) {
            return Box::pin(
                crate::self_check::SelfCheck::new(&self.cfg, &self.clients).run(payload, deadline),
            )
            .await;
        }
        if crate::first_boot_function::is_batch(&self.cfg, payload) {
            return Ok(crate::first_boot_function::receive(
                &self.cfg,
                &self.clients,
                payload,
                deadline,
            )
            .await);
        }
        if payload.get(crate::fanout::STEP_KEY).is_some() {
            let step: crate::fanout::FanOutStep =
                serde_json::from_value(payload.clone()).map_err(|e| GuardError::Incomplete {
                    summary: format!("an unreadable fan-out step: {e}"),
                })?;
            return Box::pin(
                crate::org_sweep::FanOut::new(&self.cfg, &self.clients).step(step, deadline),
            )
            .await;
        }
        let report = self.handle_until(payload, deadline).await?;
        Ok(serde_json::to_value(report).unwrap_or(Value::Null))
    }

    /// Handles one Lambda payload of the outputs function: a batch of
    /// handed-off findings and events from its queue, answered with the
    /// messages not done (`batchItemFailures`). Anything else is refused,
    /// kept by the runtime's retries and named.
    pub async fn handle_handoffs(&self, payload: &Value) -> Result<Value, GuardError> {
        if !crate::outputs_function::is_batch(payload) {
            return Err(GuardError::Incomplete {
                summary: "the outputs function takes only batches of its queue's messages".into(),
            });
        }
        Ok(crate::outputs_function::receive(&self.cfg, &self.clients, payload).await)
    }

    /// Handles one Lambda payload of the event function: everything but the
    /// scheduled sweep, which is the sweep function's (and is ignored here,
    /// with the reason, rather than run in the events' reserved capacity).
    pub async fn handle_event(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        // The event path keeps to its retry budget, well inside the
        // function's timeout; only a sweep needs the deadline.
        let _ = deadline;
        self.counting_calls(self.dispatch_events(payload)).await
    }

    /// Sweeps what `scope` covers (the CLI's door to the same sweep the
    /// schedule runs), counting the calls it sent.
    pub async fn sweep(
        &self,
        ctx: EventContext,
        scope: &SweepScope,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<Report, GuardError> {
        self.counting_calls(
            Sweep::new(&self.cfg, &self.clients).run(ctx, scope, deadline, progress),
        )
        .await
    }

    /// As `sweep`, handing every instance decided to `every` as well.
    pub async fn sweep_every(
        &self,
        ctx: EventContext,
        scope: &SweepScope,
        progress: &(dyn Fn(Progress<'_>) + Sync),
        every: &(dyn Fn(&crate::report::InstanceReport) + Sync),
    ) -> Result<Report, GuardError> {
        self.counting_calls(
            Sweep::new(&self.cfg, &self.clients)
                .with_every(every)
                .run(ctx, scope, None, progress),
        )
        .await
    }

    /// Runs `work` and records in its report the AWS requests it sent. The
    /// counter is the process's: Lambda hands a process one event at a time,
    /// and the CLI runs one sweep, so the difference is this work's calls.
    async fn counting_calls(
        &self,
        work: impl std::future::Future<Output = Result<Report, GuardError>>,
    ) -> Result<Report, GuardError> {
        let before = self.clients.calls();
        // Boxed: the sweep's future is deep, and the runtime's future that
        // holds it would otherwise exceed the compiler's layout depth limit.
        let mut result = Box::pin(work).await;
        let report = match &mut result {
            Ok(report) => report,
            Err(GuardError::Unhandled { report, .. }) => report,
            Err(GuardError::Malformed(_) | GuardError::Incomplete { .. }) => return result,
        };
        report.aws_calls = calls_since(&before, self.clients.calls());
        emit_metrics(&self.cfg, report);
        result
    }

    async fn dispatch(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        match parse(payload)? {
            GuardEvent::Sweep { ctx } => {
                let scope = SweepScope::configured(&self.cfg, Some(&ctx.region));
                Sweep::new(&self.cfg, &self.clients)
                    .run(ctx, &scope, deadline, &|_| {})
                    .await
            }
            GuardEvent::SourceChanged { ctx, change } => {
                crate::sources::Sources::new(&self.cfg, &self.clients)
                    .changed(ctx, change)
                    .await
            }
            other => self.event(other).await,
        }
    }

    async fn dispatch_events(&self, payload: &Value) -> Result<Report, GuardError> {
        self.event(parse(payload)?).await
    }

    /// Everything but a sweep, which this path ignores with the reason.
    async fn event(&self, parsed: GuardEvent) -> Result<Report, GuardError> {
        let events = EventPath::new(&self.cfg, &self.clients);
        match parsed {
            GuardEvent::Sweep { .. } => {
                let reason = "a scheduled event: the sweep function sweeps, not the event function"
                    .to_string();
                info!(%reason, "event ignored");
                Ok(Report::ignored(self.cfg.mode, reason))
            }
            GuardEvent::DefaultsChanged { ctx, change } => {
                events.defaults_changed(ctx, change).await
            }
            GuardEvent::SourceChanged { ctx, .. } => {
                let reason = format!(
                    "{}: a launch template or Auto Scaling group event; the sources function decides it, not the event function",
                    ctx.event_name
                );
                info!(%reason, "event ignored");
                Ok(Report::ignored(self.cfg.mode, reason))
            }
            GuardEvent::Unlisted { ctx, lookup } => events.unlisted(ctx, lookup).await,
            GuardEvent::Ignored { reason } => {
                info!(%reason, "event ignored");
                Ok(Report::ignored(self.cfg.mode, reason))
            }
            GuardEvent::FailedCall { ctx, error_code } => {
                info!(
                    event_name = %ctx.event_name,
                    event_id = ctx.event_id.as_deref().unwrap_or(""),
                    %error_code,
                    "the API call failed; nothing was launched or changed"
                );
                Ok(Report::failed_call(self.cfg.mode, ctx, &error_code))
            }
            GuardEvent::Instances {
                ctx,
                trigger,
                instances,
                unreadable,
            } => events.instances(ctx, trigger, instances, unreadable).await,
        }
    }
}

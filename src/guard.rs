//! The guard: one Lambda payload, read once and handed to the flow it
//! belongs to (`event_path` for CloudTrail calls, `sweep` for the schedule),
//! with the AWS calls it cost counted into its report.

use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info};

use crate::aws::Clients;
use crate::config::Config;
use crate::event::{self, EventContext, GuardEvent};
use crate::event_path::EventPath;
use crate::outputs::calls_since;
pub use crate::outputs::GuardError;
use crate::report::Report;
use crate::sweep::{Progress, Sweep};

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

    /// Sweeps `regions` (the CLI's door to the same sweep the schedule runs),
    /// counting the calls it sent.
    pub async fn sweep(
        &self,
        ctx: EventContext,
        regions: Vec<String>,
        deadline: Option<Instant>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<Report, GuardError> {
        self.counting_calls(
            Sweep::new(&self.cfg, &self.clients).run(ctx, regions, deadline, progress),
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
            Err(GuardError::Malformed(_)) => return result,
        };
        report.aws_calls = calls_since(&before, self.clients.calls());
        result
    }

    async fn dispatch(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> Result<Report, GuardError> {
        let parsed =
            event::parse(payload).inspect_err(|e| error!(error = %e, "malformed event"))?;
        let events = EventPath::new(&self.cfg, &self.clients);
        match parsed {
            GuardEvent::Sweep { ctx } => {
                let regions = if self.cfg.sweep_regions.is_empty() {
                    vec![ctx.region.clone()]
                } else {
                    self.cfg.sweep_regions.clone()
                };
                Sweep::new(&self.cfg, &self.clients)
                    .run(ctx, regions, deadline, &|_| {})
                    .await
            }
            GuardEvent::DefaultsChanged { ctx, change } => {
                events.defaults_changed(ctx, change).await
            }
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

//! `imds-guard enforce-native`, carried out: a person switches AWS's own
//! enforcement on in one account-region (the account default to
//! `required`, `HttpTokensEnforced` to `enabled`), or undoes it. Readiness is
//! re-checked live with an audit sweep of that account-region (nothing
//! written to instances); the prior values are recorded in the guard's
//! memory before anything changes, and what was done is published. What
//! may be done is the domain's (`native::decide`).

use crate::aws::{Account, Clients, Ec2Api, MemoryApi};
use crate::clock::now_secs;
use crate::config::{Config, Mode, SweepAccounts, SweepScope};
use crate::event::{self, EventContext};
use crate::message::{subject, Notification};
use crate::native::{self, Ask, Decision, Values};
use crate::rollout::Step;

/// What a run came to.
#[derive(Debug)]
pub struct Done {
    pub decision: Decision,
    /// The latest recorded switch here (what an undo restores).
    pub recorded: Option<native::Recorded>,
    /// The step the audit sweep computed (not for an undo).
    pub step: Option<Step>,
    /// Whether the change was made (`--apply`).
    pub applied: bool,
    /// `sent <message id>`, `no topic configured`, or why it was not sent.
    pub notification: Option<String>,
}

/// Runs `ask` in the account the clients' credentials act in, which must
/// be `ask.account`: the guard's roles never run this.
pub async fn enforce<C: Clients>(
    cfg: &Config,
    clients: &C,
    ask: &Ask,
    apply: bool,
) -> Result<Done, String> {
    let home = clients
        .home_account()
        .await
        .map_err(|e| format!("the account your credentials act in could not be named: {e}"))?;
    if home != ask.account {
        return Err(format!(
            "your credentials act in account {home}, not {}: run with credentials of {} (AWS_PROFILE may name a role there you may assume)",
            ask.account, ask.account
        ));
    }
    let memory = match (&cfg.memory_table, clients.memory()) {
        (Some(_), Some(m)) => m,
        _ => return Err("the prior values are recorded in the guard's memory, for --undo: set MEMORY_TABLE to the stack's table (output MemoryTableName)".into()),
    };
    let ec2 = clients.ec2(&Account::Home, &ask.region);
    let live = ec2
        .metadata_defaults()
        .await
        .map_err(|e| format!("the account defaults could not be read: {e}"))?;
    let partition = native::partition(&ask.account, &ask.region);
    let records = memory
        .query(&partition, crate::memory::Kind::Native.prefix(), now_secs())
        .await
        .map_err(|e| {
            format!("the recorded prior values could not be read from the guard's memory: {e}")
        })?;
    // Only an undo needs the record; a switch on shows it when it reads.
    let recorded = match native::recorded(&records) {
        Ok(r) => r,
        Err(why) if ask.undo => return Err(why),
        Err(_) => None,
    };
    let step = if ask.undo || !live.settable() {
        None
    } else {
        Some(recheck(cfg, clients, ask).await?)
    };
    let decision = native::decide(
        ask,
        &live,
        step.as_ref(),
        recorded.as_ref().map(|r| &r.values),
    );
    // Refused, nothing to change, or only said (no --apply): done.
    let (Decision::Change { from, to, forced }, true) = (&decision, apply) else {
        return Ok(Done {
            decision,
            recorded,
            step,
            applied: false,
            notification: None,
        });
    };
    let by = clients
        .caller()
        .await
        .map_err(|e| format!("who is changing the defaults could not be named: {e}"))?;
    // Recorded first: a change whose prior values are lost cannot be undone.
    // An undo leaves the record, so a second undo finds nothing to change.
    if !ask.undo {
        memory
            .put(&[native::record(&ask.account, &ask.region, from, &by, now_secs())])
            .await
            .map_err(|e| format!("the prior values ({from}) could not be recorded in the guard's memory, so nothing was changed: {e}"))?;
    }
    let changed = ec2
        .set_native_defaults(&to.http_tokens, &to.http_tokens_enforced)
        .await;
    let notification = tell(
        cfg,
        clients,
        ask,
        from,
        to,
        forced.as_deref(),
        &by,
        changed.as_ref().err(),
    )
    .await;
    changed.map_err(|e| {
        format!(
            "EC2 refused the change ({e}); nothing changed (the prior values stay recorded), and the message says so: {notification}"
        )
    })?;
    Ok(Done {
        decision,
        recorded,
        step,
        applied: true,
        notification: Some(notification),
    })
}

/// An audit sweep of the one account-region, as the scheduled sweep would
/// judge it (nothing written to instances, no message): its rollout step.
async fn recheck<C: Clients>(cfg: &Config, clients: &C, ask: &Ask) -> Result<Step, String> {
    let mut audit = cfg.clone();
    audit.mode = Mode::Audit;
    audit.security_hub_findings = false;
    audit.event_bus = None;
    audit.metrics = None;
    let scope = SweepScope {
        regions: vec![ask.region.clone()],
        ..SweepScope::configured(&audit, Some(&ask.region)).in_accounts(SweepAccounts::Own)
    };
    let ctx = EventContext {
        event_name: event::SWEEP.into(),
        region: ask.region.clone(),
        ..EventContext::default()
    };
    let (report, _) = crate::sweep::Sweep::new(&audit, clients)
        .collect(ctx, &scope, None, &|_| {})
        .await;
    report
        .sweep
        .and_then(|s| s.native_enforcement)
        .and_then(|r| {
            r.account_regions
                .into_iter()
                .find(|s| s.region == ask.region)
        })
        .ok_or_else(|| {
            format!(
                "the audit sweep of {} could not judge it: {}",
                ask.region,
                report.unreadable.join("; ")
            )
        })
}

/// Publishes what was done (or tried), from the command line: a message
/// SNS refuses is reported to the person, not kept.
#[allow(clippy::too_many_arguments)]
async fn tell<C: Clients>(
    cfg: &Config,
    clients: &C,
    ask: &Ask,
    from: &Values,
    to: &Values,
    forced: Option<&str>,
    by: &str,
    refused: Option<&crate::aws::AwsError>,
) -> String {
    let what = if ask.undo {
        "AWS's enforcement undone"
    } else {
        "AWS's enforcement switched on"
    };
    let outcome = match refused {
        None => "changed".to_string(),
        Some(e) => format!("refused by EC2 ({e}): nothing changed"),
    };
    let body = serde_json::json!({
        "summary": format!("{what} in {}/{} by {by}: {from} -> {to} ({outcome})", ask.account, ask.region),
        "source": "imds-guard",
        "release": crate::release::Release::THIS,
        "command": "enforce-native",
        "account": ask.account,
        "region": ask.region,
        "by": by,
        "before": {"http_tokens": from.http_tokens, "http_tokens_enforced": from.http_tokens_enforced},
        "after": {"http_tokens": to.http_tokens, "http_tokens_enforced": to.http_tokens_enforced},
        "applied": refused.is_none(),
        "forced": forced,
        "undo": format!("imds-guard enforce-native --account {} --region {} --undo --apply", ask.account, ask.region),
    });
    let n = Notification {
        subject: subject(&format!(
            "imds-guard: {what} in {}/{}{}",
            ask.account,
            ask.region,
            if forced.is_some() { " (forced)" } else { "" }
        )),
        body: serde_json::to_string_pretty(&body).unwrap_or_default(),
        outcomes: vec!["native-enforcement".into()],
        attributes: vec![("event_name".into(), "EnforceNative".into())],
    };
    crate::outbox::Outbox::new(cfg, clients)
        .send(&n, false, crate::outbox::Keep::CommandLine)
        .await
        .to_string()
}

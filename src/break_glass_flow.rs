//! Break-glass grants, carried out: a person's grant or revocation written
//! to the guard's memory in the account-region it is for, and told through
//! the guard's topic; the grants of an account-region listed. What a grant
//! is, and what it covers, is the domain's (`break_glass`); the event path
//! and the sweep honour the grants they read.

use crate::aws::{Clients, MemoryApi};
use crate::break_glass::{self, Act, Grant};
use crate::config::Config;
use crate::memory::{self, Kind};

/// What a grant or revocation came to.
#[derive(Debug)]
pub struct Done {
    pub grant: Grant,
    pub account: String,
    /// `sent <message id>`, `no topic configured`, or why it was not sent.
    pub notification: String,
}

/// Which account a command is for: the one named (central mode, whose
/// memory keeps every member's grants), else the caller's own.
async fn account_of<C: Clients>(clients: &C, account: Option<&str>) -> Result<String, String> {
    match account {
        Some(a) => Ok(a.to_string()),
        None => clients
            .home_account()
            .await
            .map_err(|e| format!("the account could not be named: {e}")),
    }
}

fn memory_of<C: Clients>(cfg: &Config, clients: &C) -> Result<C::Memory, String> {
    if cfg.memory_table.is_none() {
        return Err("break-glass grants live in the guard's memory: set MEMORY_TABLE to the stack's table (output MemoryTableName)".into());
    }
    clients
        .memory()
        .ok_or_else(|| "the guard's memory is not configured".to_string())
}

/// Writes a new grant for `target`, lasting `lasting` seconds, then tells
/// of it. The grant stands once written: a message that could not be sent
/// is said, not retried (every sweep's summary lists the grants in force).
/// It is stamped with AWS's time (the `Date` of STS's answer naming the
/// caller); `now`, this machine's clock, only when that answer carried none.
#[allow(clippy::too_many_arguments)]
pub async fn grant<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: Option<&str>,
    region: &str,
    target: &str,
    lasting: u64,
    reason: &str,
    now: u64,
) -> Result<Done, String> {
    let memory = memory_of(cfg, clients)?;
    let by = clients
        .caller()
        .await
        .map_err(|e| format!("who is granting could not be named: {e}"))?;
    let now = clients.aws_now().unwrap_or(now);
    let g = Grant::new(target, now.saturating_add(lasting), reason, &by, now)?;
    let account = account_of(clients, account).await?;
    let partition = break_glass::partition_of(&memory::partition(&account, region));
    memory
        .put(&[g.record(&partition)])
        .await
        .map_err(|e| format!("the grant could not be written to the guard's memory: {e}"))?;
    let notification = tell(cfg, clients, Act::Granted, &g, &account, region).await;
    Ok(Done {
        grant: g,
        account,
        notification,
    })
}

/// Ends the grant for `target` now, then tells of it.
pub async fn revoke<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: Option<&str>,
    region: &str,
    target: &str,
    now: u64,
) -> Result<Done, String> {
    let memory = memory_of(cfg, clients)?;
    let account = account_of(clients, account).await?;
    let partition = break_glass::partition_of(&memory::partition(&account, region));
    let current = memory
        .query(
            &partition,
            &format!("{}{target}", Kind::BreakGlass.prefix()),
            now,
        )
        .await
        .map_err(|e| format!("the grants could not be read from the guard's memory: {e}"))?;
    let g = break_glass::grants(&current)
        .into_iter()
        .find(|g| g.target == target && g.state(now) == break_glass::State::Active)
        .ok_or_else(|| {
            format!("no break-glass grant is in force for {target} in {account}/{region}")
        })?;
    let by = clients
        .caller()
        .await
        .map_err(|e| format!("who is revoking could not be named: {e}"))?;
    let mut ended = g.revoke(now);
    // Who ended it is what the message says; the record keeps both.
    let mut record = ended.record(&partition);
    record.data.insert("revoked_by".into(), by.clone());
    memory
        .put(&[record])
        .await
        .map_err(|e| format!("the revocation could not be written to the guard's memory: {e}"))?;
    ended.by = by;
    let notification = tell(cfg, clients, Act::Revoked, &ended, &account, region).await;
    Ok(Done {
        grant: ended,
        account,
        notification,
    })
}

/// The grants of one account-region (in force, ended or revoked, until
/// their records lapse two weeks after their end).
pub async fn list<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: Option<&str>,
    region: &str,
    now: u64,
) -> Result<(String, Vec<Grant>), String> {
    let memory = memory_of(cfg, clients)?;
    let account = account_of(clients, account).await?;
    let records = memory
        .query(
            &break_glass::partition_of(&memory::partition(&account, region)),
            Kind::BreakGlass.prefix(),
            now,
        )
        .await
        .map_err(|e| format!("the grants could not be read from the guard's memory: {e}"))?;
    Ok((account, break_glass::grants(&records)))
}

/// Tells of a grant or its end; from the command line, so a message SNS
/// refuses is reported to the operator, not kept.
async fn tell<C: Clients>(
    cfg: &Config,
    clients: &C,
    act: Act,
    g: &Grant,
    account: &str,
    region: &str,
) -> String {
    let n = break_glass::notification(act, g, account, region);
    crate::outbox::Outbox::new(cfg, clients)
        .send(&n, false, crate::outbox::Keep::CommandLine)
        .await
        .to_string()
}

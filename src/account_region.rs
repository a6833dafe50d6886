//! One account-region, resolved once by one door (`AccountRegion::enter`):
//! whether the guard may act there at all, the identity it acts as, the
//! account (named), the configuration it runs under (the mode and source
//! fixing set for it or its unit), its memory partition, its EC2 client,
//! and a view of its memory. A flow asks the value; it never works any of
//! these out again.
//!
//! What "once" means: the account's name, its partition, its configuration
//! and the grants are each read at most once per value, and only when a
//! flow first needs them (a compliant launch still costs no call). The
//! credentials are not frozen: a member role's session is the SDK's to
//! renew. The staleness this allows: a value lives for one event, or one
//! region of one sweep; a grant revoked while a 15-minute fan-out shard
//! sweeps is honoured until that region is done, and seen by the next run.

use futures_util::stream::{self, StreamExt};
use tokio::sync::OnceCell;
use tracing::warn;

use crate::aws::{Account, AwsError, Clients, MemoryApi};
use crate::config::Config;
use crate::event::EventContext;
use crate::memory::{self, Claim, Kind, Record};
use crate::report::{Named, NotEntered, Report};

/// Conditional claims sent side by side, at most: each is one `PutItem`
/// with a condition (`BatchWriteItem` takes none, and a transaction fails
/// whole), so a launch of many instances waits for a few round trips, not
/// one per instance, well inside DynamoDB's per-partition write rate.
pub const MAX_CLAIM_CONCURRENCY: usize = 10;

/// Why the door stayed shut.
#[derive(Debug)]
pub enum Closed {
    /// Not an account this function may act in (`ALLOWED_ACCOUNT_IDS`):
    /// nothing is looked at or written there.
    Refused(String),
    /// Its credentials could not be had (a member stack missing, STS
    /// throttled): not one instance there can be looked at.
    Unreachable(AwsError),
}

/// One account-region the guard has entered.
pub struct AccountRegion<'a, C: Clients> {
    cfg: &'a Config,
    clients: &'a C,
    /// The account the event or the sweep named, if it named one.
    asked: Option<String>,
    pub region: String,
    /// Whose credentials act here.
    pub who: Account,
    /// Built when a flow first asks (`ec2()`): the outputs function enters
    /// too and never asks, so its bootstrap links no EC2 client.
    ec2: std::sync::OnceLock<C::Ec2>,
    account: OnceCell<Result<String, String>>,
    own: OnceCell<Config>,
    grants: OnceCell<Result<Vec<Record>, String>>,
}

impl<'a, C: Clients> AccountRegion<'a, C> {
    /// The door's first check, for a step that names an account before it
    /// knows a region (a fan-out shard): why the account may not be
    /// entered, if it may not.
    pub fn refuses(cfg: &Config, account: Option<&str>) -> Option<String> {
        cfg.refusal(account)
    }

    /// The door: refuses an account outside `ALLOWED_ACCOUNT_IDS` before
    /// any call, then takes the credentials that act there (the member
    /// role, in central mode).
    pub async fn enter(
        cfg: &'a Config,
        clients: &'a C,
        account: Option<&str>,
        region: &str,
    ) -> Result<Self, Closed> {
        if let Some(why) = Self::refuses(cfg, account) {
            return Err(Closed::Refused(why));
        }
        let who = clients
            .enter(account, region)
            .await
            .map_err(Closed::Unreachable)?;
        Ok(AccountRegion {
            cfg,
            clients,
            asked: account.map(str::to_string),
            region: region.to_string(),
            who,
            ec2: std::sync::OnceLock::new(),
            account: OnceCell::new(),
            own: OnceCell::new(),
            grants: OnceCell::new(),
        })
    }

    /// The door for one event: enters its account-region, or gives the
    /// report of an event that could not (refused, or unreachable), naming
    /// what the event was about. Each flow tells that report as it tells
    /// any other.
    pub async fn enter_for(
        cfg: &'a Config,
        clients: &'a C,
        ctx: &EventContext,
        named: Named<'_>,
    ) -> Result<Self, Report> {
        let why = match Self::enter(cfg, clients, ctx.account.as_deref(), &ctx.region).await {
            Ok(here) => return Ok(here),
            Err(Closed::Refused(why)) => {
                warn!(
                    account = ctx.account.as_deref().unwrap_or(""), region = %ctx.region,
                    event_name = %ctx.event_name, event_id = ctx.event_id.as_deref().unwrap_or(""),
                    "event refused: {why}"
                );
                NotEntered::Refused(why)
            }
            Err(Closed::Unreachable(e)) => NotEntered::Unreachable(e.to_string()),
        };
        Err(Report::not_entered(cfg.mode, ctx.clone(), named, why))
    }

    /// The EC2 client that acts here.
    pub fn ec2(&self) -> &C::Ec2 {
        self.ec2
            .get_or_init(|| self.clients.ec2(&self.who, &self.region))
    }

    /// The account, named: the one asked for or entered, else the
    /// function's own (STS, once a process).
    pub async fn account(&self) -> Result<&str, &str> {
        let named = self
            .account
            .get_or_init(|| async {
                match self.who.id(self.asked.as_deref()) {
                    Some(id) => Ok(id.to_string()),
                    None => self.clients.home_account().await.map_err(|e| e.to_string()),
                }
            })
            .await;
        named.as_deref().map_err(String::as_str)
    }

    /// The memory partition here; `None` without a memory, or when the
    /// account cannot be named (the memory is then not used, and said so).
    pub async fn partition(&self) -> Option<String> {
        self.clients.memory()?;
        match self.account().await {
            Ok(id) => Some(memory::partition(id, &self.region)),
            Err(e) => {
                warn!(error = %e, "the function's own account could not be named; the memory is not used here");
                None
            }
        }
    }

    /// The configuration this account runs under, resolved (its own
    /// per-account settings cleared): the deployment's, or, with settings
    /// per account or unit, the mode set for it or its unit (one read of
    /// the units the sweep remembered).
    pub async fn config(&self) -> &Config {
        if !self.cfg.has_overrides() {
            return self.cfg;
        }
        self.own
            .get_or_init(|| {
                crate::modes::for_event(self.cfg, self.clients, self.who.id(self.asked.as_deref()))
            })
            .await
    }

    /// The break-glass grants here, read once (the grants' own partition).
    pub async fn grants(&self, partition: &str, now: u64) -> Result<&[Record], &str> {
        let read = self
            .grants
            .get_or_init(|| async {
                let Some(memory) = self.clients.memory() else {
                    return Ok(Vec::new());
                };
                memory
                    .query(
                        &crate::break_glass::partition_of(partition),
                        Kind::BreakGlass.prefix(),
                        now,
                    )
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        read.as_deref().map_err(String::as_str)
    }
}

/// Claims each record (a conditional put that only the first writer
/// wins), a few side by side; the answers in the records' order.
pub async fn claim_each<M: MemoryApi>(
    memory: &M,
    records: &[Record],
    now: u64,
) -> Vec<Result<Claim, AwsError>> {
    stream::iter(records)
        .map(|r| memory.claim(r, now))
        .buffered(MAX_CLAIM_CONCURRENCY)
        .collect()
        .await
}

/// Reads each instance's record of `kind` (one query per instance: its
/// sort key is exact), a few side by side; the answers in `ids`' order.
pub async fn read_each<M: MemoryApi>(
    memory: &M,
    partition: &str,
    kind: Kind,
    ids: &[String],
    now: u64,
) -> Vec<Result<Option<Record>, AwsError>> {
    stream::iter(ids)
        .map(|id| async move {
            let prefix = format!("{}{id}", kind.prefix());
            let records = memory.query(partition, &prefix, now).await?;
            Ok(records.into_iter().find(|r| r.id() == id))
        })
        .buffered(MAX_CLAIM_CONCURRENCY)
        .collect()
        .await
}

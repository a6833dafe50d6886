//! The one-step migration of legacy exemption records: versions before the
//! guard's memory recorded a principal exemption on the instance itself
//! (`<STATUS_TAG_KEY>=exempt`), which anyone who may tag could write too.
//! `imds-guard migrate-exemptions` copies each such record of an instance
//! launched before `LEGACY_EXEMPT_BEFORE` (the upgrade) into the memory, where
//! only the guard writes; the ones on instances launched after are left out
//! and named. Then `LEGACY_EXEMPT_BEFORE` can be unset.

use serde::Serialize;

use crate::aws::{AwsError, Clients, Ec2Api, MemoryApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::memory::{self, Record};
use crate::policy::EXEMPT_STATUS;

/// One account-region's migration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Migrated {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    /// Legacy records copied into the memory.
    pub recorded: Vec<String>,
    /// Legacy records on instances launched after the cutoff (or at an
    /// unknown time): not trusted, not copied.
    pub refused: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a migration cannot start, or `None`.
pub fn cannot_start(cfg: &Config) -> Option<&'static str> {
    if cfg.memory_table.is_none() {
        Some("MEMORY_TABLE is not set: the records go into the guard's memory (the stack's MemoryTableName output)")
    } else if cfg.legacy_exempt_before.is_none() {
        Some("LEGACY_EXEMPT_BEFORE is not set: only records on instances launched before it (the upgrade) are trusted")
    } else {
        None
    }
}

/// Copies one account-region's legacy records (`account`: `None` for the
/// caller's own).
pub async fn region<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: Option<&str>,
    region: &str,
) -> Migrated {
    let mut out = Migrated {
        account: account.map(str::to_string),
        region: region.to_string(),
        ..Migrated::default()
    };
    if let Err(e) = copy(cfg, clients, account, &mut out).await {
        out.error = Some(e.to_string());
    }
    out
}

async fn copy<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: Option<&str>,
    out: &mut Migrated,
) -> Result<(), AwsError> {
    let before = cfg.legacy_exempt_before.unwrap_or(0);
    let Some(memory) = clients.memory() else {
        return Ok(());
    };
    let who = clients.enter(account, &out.region).await?;
    let ec2 = clients.ec2(&who, &out.region);
    let now = now_secs();
    let mut token = None;
    loop {
        let page = ec2
            .list_tagged(&cfg.status_tag_key, EXEMPT_STATUS, token)
            .await?;
        let owner = match account.map(str::to_string).or(page.owner.clone()) {
            Some(a) => a,
            None => clients.home_account().await?,
        };
        let partition = memory::partition(&owner, &out.region);
        let mut records = Vec::new();
        for o in &page.instances {
            if o.launch_time.is_some_and(|t| t < before) {
                records.push(Record::exempt(
                    &partition,
                    &o.instance_id,
                    &format!("{}={EXEMPT_STATUS}{}", cfg.status_tag_key, memory::MIGRATED),
                    None,
                    now,
                ));
                out.recorded.push(o.instance_id.clone());
            } else {
                out.refused.push(o.instance_id.clone());
            }
        }
        memory.put(&records).await?;
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}

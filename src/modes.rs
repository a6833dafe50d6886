//! How each account runs when the mode or source fixing is set per account
//! or per organizational unit (`Config::for_account`, the decision). The
//! sweep learns an account's units from the organization and remembers
//! them; the event and source paths read what it remembered, so the event
//! function carries no Organizations client and a compliant launch still
//! costs no call.

use tracing::warn;

use crate::aws::{Clients, MemoryApi};
use crate::clock::now_secs;
use crate::config::Config;
use crate::memory::{Kind, Record, ORG_PARTITION};

/// The configuration `account` runs under, its units read from the
/// organization (the sweep's) and remembered for the event path. When they
/// cannot be read, the mildest any unit could give it, and why. Also its
/// nearest unit, for the rollout's roll-up, when they were read (`learn`:
/// an organization's sweep reads them even with nothing set per unit).
pub async fn from_organization<C: Clients>(
    cfg: &Config,
    clients: &C,
    account: &str,
    learn: bool,
) -> (Config, Option<String>, Option<String>) {
    if !cfg.has_ou_overrides() && !learn {
        return (cfg.for_account(account, Some(&[])), None, None);
    }
    match clients.account_units(account).await {
        Ok(units) => {
            if let Some(memory) = clients.memory() {
                if let Err(e) = memory
                    .put(&[Record::units(account, &units, now_secs())])
                    .await
                {
                    warn!(%account, error = %e, "the account's units could not be remembered; its events run in the mildest mode until they are");
                }
            }
            let nearest = units.first().cloned();
            (cfg.for_account(account, Some(&units)), None, nearest)
        }
        // Read only for the rollout's roll-up: the mode does not hang on it.
        Err(e) if !cfg.has_ou_overrides() => (
            cfg.for_account(account, Some(&[])),
            Some(format!(
                "its organizational units could not be read ({e}): the rollout lists it under its account"
            )),
            None,
        ),
        Err(e) => (
            cfg.for_account(account, None),
            Some(format!(
                "its organizational units could not be read ({e}): run in the mildest mode any unit is set to"
            )),
            None,
        ),
    }
}

/// The configuration an event in `account` runs under, resolved and ready
/// to decide with (its own settings cleared): the account the event names,
/// else the function's own; one that cannot be named runs in the mildest
/// mode any unit or account is set to.
pub async fn for_event<C: Clients>(cfg: &Config, clients: &C, account: Option<&str>) -> Config {
    let id = match account {
        Some(a) => Some(a.to_string()),
        None => clients.home_account().await.ok(),
    };
    let mut own = match id {
        Some(id) => from_memory(cfg, clients, &id).await,
        None => cfg.for_unnamed_account(),
    };
    own.overrides.clear();
    own
}

/// The configuration `account` runs under, its units as the sweep
/// remembered them (one read, only with settings per unit); not known yet
/// (a new account), the mildest any unit could give it.
pub async fn from_memory<C: Clients>(cfg: &Config, clients: &C, account: &str) -> Config {
    if !cfg.has_ou_overrides() {
        return cfg.for_account(account, Some(&[]));
    }
    let units = match clients.memory() {
        None => None,
        Some(memory) => match memory
            .query(
                ORG_PARTITION,
                &format!("{}{account}", Kind::Units.prefix()),
                now_secs(),
            )
            .await
        {
            Ok(records) => records
                .iter()
                .find(|r| r.id() == account)
                .and_then(Record::units_of),
            Err(e) => {
                warn!(%account, error = %e, "the account's units could not be read; it runs in the mildest mode any unit is set to");
                None
            }
        },
    };
    cfg.for_account(account, units.as_deref())
}

//! The outputs queue as an adapter: findings and events a binary without
//! Security Hub's or EventBridge's client hands to the outputs function,
//! which files and puts them (`outputs_function`). `Queued` is Security Hub
//! as such a binary sees it; `Filer` picks it or the real client.

use super::api::{Account, Clients, FindingsApi, QueueApi};
use super::error::AwsError;
use crate::finding::Finding;
use crate::handoff::{Handoff, KIND};

/// Sends `h` as messages to the outputs function's queue.
pub async fn hand_off(queue: &impl QueueApi, h: &Handoff) -> Result<(), AwsError> {
    for m in h.messages() {
        queue.keep(&m, KIND).await?;
    }
    Ok(())
}

/// Findings handed to the outputs function instead of filed: Security Hub
/// as a binary without its client sees it. The outputs function files them
/// and remembers what Security Hub took (so the sender does not).
pub struct Queued<K>(pub K);

impl<K: QueueApi> FindingsApi for Queued<K> {
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        // A call's findings are of one account and region (the callers file
        // per account-region), which each finding names.
        let Some(first) = findings.first() else {
            return Ok(Vec::new());
        };
        // Each crosses as what it was made from, which the outputs
        // function rebuilds (a finding built otherwise has no place here).
        let filings = findings
            .iter()
            .map(|f| f.filing.0.clone())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AwsError::Api {
                code: "NotHandedOff".into(),
                message: "a finding not built by the guard's own constructors cannot be handed off"
                    .into(),
            })?;
        let h = Handoff {
            filings,
            ..Handoff::new(&first.aws_account_id, &first.region)
        };
        hand_off(&self.0, &h).await?;
        Ok(Vec::new())
    }
    fn hands_off(&self) -> bool {
        true
    }
}

/// Where findings go: Security Hub itself, or the outputs queue.
pub enum Filer<F, K> {
    Direct(F),
    Queued(Queued<K>),
}

impl<F: FindingsApi, K: QueueApi> FindingsApi for Filer<F, K> {
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        match self {
            Filer::Direct(api) => api.import(findings).await,
            Filer::Queued(q) => q.import(findings).await,
        }
    }
    fn hands_off(&self) -> bool {
        matches!(self, Filer::Queued(_))
    }
}

/// How this binary files findings in `account` and `region`: with its own
/// Security Hub client, or through the outputs queue; `None` with neither.
pub fn filer<C: Clients>(
    clients: &C,
    account: &Account,
    region: &str,
) -> Option<Filer<C::Findings, C::Queue>> {
    match clients.findings(account, region) {
        Some(api) => Some(Filer::Direct(api)),
        None => clients.handoff().map(|q| Filer::Queued(Queued(q))),
    }
}

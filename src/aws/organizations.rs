//! Organizations through the SDK: the accounts a sweep of the whole
//! organization covers.

use super::error::AwsError;

/// Every active account of the organization (`organizations:ListAccounts`:
/// the management account, or a delegated administrator, may call it).
pub async fn organization_accounts(
    client: &aws_sdk_organizations::Client,
) -> Result<Vec<String>, AwsError> {
    let mut accounts = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_accounts()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "organizations", "organizations:ListAccounts"))?;
        for a in out.accounts() {
            // `State` replaced `Status` (retired 2026-09-09); read either.
            use aws_sdk_organizations::types::{AccountState, AccountStatus};
            let active = match (a.state(), a.status()) {
                (Some(state), _) => *state == AccountState::Active,
                (None, Some(status)) => *status == AccountStatus::Active,
                (None, None) => true,
            };
            if let Some(id) = a
                .id()
                .filter(|id| active && crate::validate::is_account_id(id))
            {
                accounts.push(id.to_string());
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    accounts.sort();
    accounts.dedup();
    Ok(accounts)
}

/// The organizational units `account` is in, nearest first, up to the
/// root (`organizations:ListParents`, one call a level: an account has one
/// parent). At most 10 levels: the organization's own limit is five.
pub async fn account_units(
    client: &aws_sdk_organizations::Client,
    account: &str,
) -> Result<Vec<String>, AwsError> {
    let mut units = Vec::new();
    let mut child = account.to_string();
    for _ in 0..10 {
        let out = client
            .list_parents()
            .child_id(&child)
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "organizations", "organizations:ListParents"))?;
        let Some(parent) = out.parents().first() else {
            break;
        };
        let (Some(id), Some(kind)) = (parent.id(), parent.r#type()) else {
            break;
        };
        units.push(id.to_string());
        if *kind == aws_sdk_organizations::types::ParentType::Root {
            break;
        }
        child = id.to_string();
    }
    Ok(units)
}

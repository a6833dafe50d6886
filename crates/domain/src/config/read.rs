//! Reading the configuration: each variable parsed, checked and named in
//! any error, once, at init (`Config::from_env`); the settings that must
//! agree are checked together at the end.

use super::*;

impl Config {
    /// Reads the process environment. Call once, at init.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`. An empty value counts as unset,
    /// because CloudFormation passes optional parameters as empty strings.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let err = |variable: &'static str, value: &str, reason: &str| ConfigError {
            variable,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        // A `true` or `false` setting, named in its error.
        let flag_of = |name: &'static str| -> Result<Option<bool>, ConfigError> {
            get(name)
                .map(|v| flag(&v).ok_or_else(|| err(name, &v, "expected true or false")))
                .transpose()
        };
        let mut cfg = Config::default();

        if let Some(v) = get("GUARD_MODE") {
            cfg.mode = Mode::parse(&v)
                .ok_or_else(|| err("GUARD_MODE", &v, "expected enforce, notify or audit"))?;
        }
        if let Some(v) = get("NOTIFY_TOPIC_ARN") {
            let v = v.trim().to_string();
            if sns_topic_region(&v).is_none() {
                return Err(err(
                    "NOTIFY_TOPIC_ARN",
                    &v,
                    "expected an SNS topic ARN, arn:<partition>:sns:<region>:<account>:<name>",
                ));
            }
            cfg.topic_arn = Some(v);
        }
        if let Some(v) = get("STATUS_TAG_KEY") {
            cfg.status_tag_key = valid_tag_key(&v).map_err(|r| err("STATUS_TAG_KEY", &v, r))?;
        }
        if let Some(v) = get("EXEMPT_TAG_KEY") {
            let key = valid_tag_key(&v).map_err(|r| err("EXEMPT_TAG_KEY", &v, r))?;
            if key == cfg.status_tag_key {
                return Err(err(
                    "EXEMPT_TAG_KEY",
                    &v,
                    "must differ from STATUS_TAG_KEY, or the function could exempt what it tags",
                ));
            }
            cfg.exemptions.tag_key = Some(key);
        }
        if let Some(v) = get("EXEMPT_PRINCIPAL_ARNS") {
            for item in list(&v) {
                let glob =
                    Glob::parse(item).map_err(|why| err("EXEMPT_PRINCIPAL_ARNS", &v, &why))?;
                cfg.exemptions.principals.push(glob);
            }
        }
        if let Some(v) = get("EXEMPT_IMAGE_IDS") {
            for item in list(&v) {
                if !is_image_id(item) {
                    return Err(err(
                        "EXEMPT_IMAGE_IDS",
                        &v,
                        &format!("{item:?} is not an AMI id (ami- and 8 or 17 hex digits)"),
                    ));
                }
                cfg.exemptions.image_ids.push(item.to_string());
            }
        }
        if let Some(n) = whole(
            &get,
            "MAX_HOP_LIMIT",
            1..=64,
            "expected a whole number from 1 to 64",
        )? {
            cfg.max_hop_limit = Some(n);
        }
        if let Some(n) = whole(
            &get,
            "CONTAINER_HOP_LIMIT",
            1..=2,
            "expected 1 or 2 (2 lets a container host's pods and tasks reach IMDS; 1 blocks them)",
        )? {
            cfg.container_hop_limit = n;
        }
        if let Some(v) = get("CONTAINER_HOST_TAG") {
            let key = valid_tag_key(&v).map_err(|r| err("CONTAINER_HOST_TAG", &v, r))?;
            if key == cfg.status_tag_key || cfg.exemptions.tag_key.as_deref() == Some(&key) {
                return Err(err(
                    "CONTAINER_HOST_TAG",
                    &v,
                    "must differ from STATUS_TAG_KEY and EXEMPT_TAG_KEY, or the guard's own tags would make container hosts",
                ));
            }
            cfg.container_host_tag = Some(key);
        }
        if let Some(n) = whole(
            &get,
            "RETRY_BUDGET_SECONDS",
            1..=600,
            "expected a whole number of seconds from 1 to 600",
        )? {
            cfg.retry_budget = Duration::from_secs(n);
        }
        if let Some(v) = get("SWEEP_REGIONS") {
            for item in list(&v) {
                if !is_region(item) {
                    return Err(err(
                        "SWEEP_REGIONS",
                        &v,
                        &format!(
                            "{item:?} is not a region (comma-separated, e.g. us-east-1,eu-west-1)"
                        ),
                    ));
                }
                if !cfg.sweep_regions.iter().any(|r| r == item) {
                    cfg.sweep_regions.push(item.to_string());
                }
            }
        }
        if let Some(on) = flag_of("SET_ACCOUNT_DEFAULT")? {
            cfg.set_account_default = on;
        }
        if let Some(on) = flag_of("CHECK_METADATA_NO_TOKEN")? {
            cfg.check_metadata_no_token = on;
        }
        if let Some(on) = flag_of("LOOKUP_IMDSV1_CALLERS")? {
            cfg.lookup_imdsv1_callers = on;
        }
        if let Some(v) = get("NO_TOKEN_HOLD_DAYS") {
            let days: u64 = v
                .trim()
                .parse()
                .ok()
                .filter(|d| (2..=365).contains(d))
                .ok_or_else(|| {
                    err(
                        "NO_TOKEN_HOLD_DAYS",
                        &v,
                        "expected a number of days from 2 to 365 (the switch is told a day before)",
                    )
                })?;
            cfg.no_token_hold_days = Some(days);
        }
        if let Some(v) = get("NO_TOKEN_LOOKBACK_HOURS") {
            let why = "expected a whole number of hours from 1 to 2160 (90 days)";
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| err("NO_TOKEN_LOOKBACK_HOURS", &v, why))?;
            if !(1..=2160).contains(&n) {
                return Err(err("NO_TOKEN_LOOKBACK_HOURS", &v, why));
            }
            cfg.no_token_lookback = Duration::from_secs(n * 3600);
        }
        if let Some(v) = get("MEMBER_ROLE_NAME") {
            let name = valid_role_name(&v).map_err(|r| err("MEMBER_ROLE_NAME", &v, r))?;
            cfg.member_role = Some(MemberRole {
                name,
                external_id: None,
            });
        }
        if let Some(v) = get("MEMBER_ROLE_EXTERNAL_ID") {
            let id = valid_external_id(&v).map_err(|r| err("MEMBER_ROLE_EXTERNAL_ID", &v, r))?;
            let Some(role) = cfg.member_role.as_mut() else {
                return Err(err(
                    "MEMBER_ROLE_EXTERNAL_ID",
                    &v,
                    "is only used with MEMBER_ROLE_NAME, which is not set",
                ));
            };
            role.external_id = Some(id);
        }
        if let Some(v) = get("ALLOWED_ACCOUNT_IDS") {
            cfg.allowed_accounts =
                account_list(&v).map_err(|r| err("ALLOWED_ACCOUNT_IDS", &v, &r))?;
        }
        if let Some(v) = get("SWEEP_ACCOUNTS") {
            cfg.sweep_accounts = if v.trim().eq_ignore_ascii_case("ORGANIZATION") {
                SweepAccounts::Organization
            } else {
                let accounts = account_list(&v).map_err(|r| {
                    err(
                        "SWEEP_ACCOUNTS",
                        &v,
                        &format!("{r}, or ORGANIZATION for every account of the organization"),
                    )
                })?;
                if let Some(out) = accounts
                    .iter()
                    .find(|a| !cfg.allowed_accounts.is_empty() && !cfg.allowed_accounts.contains(a))
                {
                    return Err(err(
                        "SWEEP_ACCOUNTS",
                        &v,
                        &format!("{out} is not in ALLOWED_ACCOUNT_IDS, so it would be refused"),
                    ));
                }
                SweepAccounts::Listed(accounts)
            };
            if cfg.member_role.is_none() {
                return Err(err(
                    "SWEEP_ACCOUNTS",
                    &v,
                    "sweeping other accounts needs MEMBER_ROLE_NAME, the role to assume in them",
                ));
            }
        }
        if let Some(v) = get("MEMORY_TABLE") {
            cfg.memory_table = Some(valid_table_name(&v).map_err(|r| err("MEMORY_TABLE", &v, r))?);
        }
        if let Some(v) = get("SWEEP_CONCURRENCY") {
            cfg.sweep_concurrency = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=32).contains(n))
                .ok_or_else(|| {
                    err(
                        "SWEEP_CONCURRENCY",
                        &v,
                        "expected a whole number from 1 to 32",
                    )
                })?;
        }
        for (name, slot, max) in [
            (
                "MAX_CHANGES_PER_EVENT",
                &mut cfg.max_changes_per_event,
                100_000,
            ),
            (
                "MAX_CHANGES_PER_RUN",
                &mut cfg.max_changes_per_run,
                1_000_000,
            ),
        ] {
            if let Some(v) = get(name) {
                *slot = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        err(
                            name,
                            &v,
                            &format!("expected a whole number from 1 to {max}"),
                        )
                    })?;
            }
        }
        if let Some(v) = get("EVENTS_GRACE_MINUTES") {
            let minutes = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (5..=10_080).contains(n))
                .ok_or_else(|| {
                    err(
                        "EVENTS_GRACE_MINUTES",
                        &v,
                        "expected a whole number of minutes from 5 to 10080 (a week)",
                    )
                })?;
            cfg.events_grace = Duration::from_secs(minutes * 60);
        }
        if let Some(v) = get("MAX_CHANGE_PERCENT") {
            cfg.max_change_percent = v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    err(
                        "MAX_CHANGE_PERCENT",
                        &v,
                        "expected a whole number from 1 to 100 (100: no share limit)",
                    )
                })?;
        }
        if let Some(v) = get("FANOUT_THRESHOLD") {
            cfg.fanout_threshold = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    err(
                        "FANOUT_THRESHOLD",
                        &v,
                        "expected a whole number of account-regions, at least 1",
                    )
                })?;
        }
        if let Some(v) = get("FANOUT_CONCURRENCY") {
            cfg.fanout_concurrency = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    err(
                        "FANOUT_CONCURRENCY",
                        &v,
                        "expected a whole number from 1 to 1000",
                    )
                })?;
        }
        if let Some(on) = flag_of("FIX_SOURCES")? {
            cfg.fix_sources = on;
        }
        for (name, is_mode) in [("MODE_OVERRIDES", true), ("FIX_SOURCES_OVERRIDES", false)] {
            let Some(v) = get(name) else { continue };
            for item in list(&v) {
                let Some((target, value)) = item.split_once('=') else {
                    return Err(err(
                        name,
                        &v,
                        "expected target=value pairs, comma-separated (111122223333=enforce,ou-ab12-cdefgh34=audit)",
                    ));
                };
                let (target, value) = (target.trim(), value.trim());
                if !is_account_id(target) && !is_ou_id(target) {
                    return Err(err(
                        name,
                        &v,
                        &format!("{target:?} is neither an account id (12 digits) nor an organizational unit id (ou-... or r-...)"),
                    ));
                }
                let slot = match cfg.overrides.iter().position(|o| o.target == target) {
                    Some(i) => i,
                    None => {
                        cfg.overrides.push(Override {
                            target: target.to_string(),
                            mode: None,
                            fix_sources: None,
                        });
                        cfg.overrides.len() - 1
                    }
                };
                let o = &mut cfg.overrides[slot];
                let twice = || err(name, &v, &format!("{target} is named twice"));
                if is_mode {
                    if o.mode.is_some() {
                        return Err(twice());
                    }
                    o.mode = Some(Mode::parse(value).ok_or_else(|| {
                        err(
                            name,
                            &v,
                            &format!("{value:?}: expected enforce, notify or audit"),
                        )
                    })?);
                } else {
                    if o.fix_sources.is_some() {
                        return Err(twice());
                    }
                    o.fix_sources = Some(flag(value).ok_or_else(|| {
                        err(name, &v, &format!("{value:?}: expected true or false"))
                    })?);
                }
            }
        }
        if let Some(v) = get("FIX_SOURCE_TAG_KEY") {
            cfg.fix_source_tag_key =
                valid_tag_key(&v).map_err(|r| err("FIX_SOURCE_TAG_KEY", &v, r))?;
        }
        if let Some(v) = get("FAILED_EVENTS_QUEUE_URL") {
            cfg.failed_events_queue_url =
                Some(valid_queue_url(&v).map_err(|r| err("FAILED_EVENTS_QUEUE_URL", &v, r))?);
        }
        if let Some(v) = get("TRIGGERS") {
            cfg.triggers = match v.trim().to_ascii_lowercase().as_str() {
                "cloudtrail" => Triggers::Cloudtrail,
                "state-change" => Triggers::StateChange,
                "both" => Triggers::Both,
                _ => {
                    return Err(err(
                        "TRIGGERS",
                        &v,
                        "expected cloudtrail, state-change or both",
                    ))
                }
            };
        }
        if let Some(v) = get("LEGACY_EXEMPT_BEFORE") {
            cfg.legacy_exempt_before = Some(crate::validate::utc_seconds(&v).ok_or_else(|| {
                err(
                    "LEGACY_EXEMPT_BEFORE",
                    &v,
                    "expected a UTC time such as 2026-11-29T06:00:00Z: the upgrade's, before which legacy exempt records count",
                )
            })?);
        }
        if let Some(on) = flag_of("NO_TOKEN_MISSING_AS_ZERO")? {
            cfg.no_token_missing_as_zero = on;
        }
        if let Some(on) = flag_of("SECURITY_HUB_FINDINGS")? {
            cfg.security_hub_findings = on;
        }
        if let Some(v) = get("METRICS") {
            if !flag(&v).ok_or_else(|| err("METRICS", &v, "expected true or false"))? {
                cfg.metrics = None;
            }
        }
        if let Some(v) = get("METRICS_NAMESPACE") {
            let ns = v.trim();
            // CloudWatch: 1 to 255 characters, none of them a colon, and
            // not AWS's own `AWS/` prefix.
            if ns.is_empty()
                || ns.len() > 255
                || ns.contains(':')
                || ns.starts_with("AWS/")
                || !ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c))
            {
                return Err(err(
                    "METRICS_NAMESPACE",
                    &v,
                    "expected 1 to 255 of A-Z a-z 0-9 . _ - / #, not starting with AWS/",
                ));
            }
            if let Some(m) = cfg.metrics.as_mut() {
                m.namespace = ns.to_string();
            }
        }
        if let Some(v) = get("METRICS_PER_ACCOUNT") {
            let on =
                flag(&v).ok_or_else(|| err("METRICS_PER_ACCOUNT", &v, "expected true or false"))?;
            if let Some(m) = cfg.metrics.as_mut() {
                m.per_account = on;
            }
        }
        if let Some(v) = get("EVENT_BUS_NAME") {
            let bus = v.trim();
            // A bus name (1 to 256 of [/.-_A-Za-z0-9]) or its ARN.
            let name = bus.rsplit(":event-bus/").next().unwrap_or(bus);
            let arn_ok = !bus.starts_with("arn:")
                || (bus.contains(":events:") && bus.contains(":event-bus/"));
            if name.is_empty()
                || name.len() > 256
                || !arn_ok
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
            {
                return Err(err(
                    "EVENT_BUS_NAME",
                    &v,
                    "expected an EventBridge bus name or ARN (arn:<partition>:events:<region>:<account>:event-bus/<name>)",
                ));
            }
            cfg.event_bus = Some(bus.to_string());
        }
        if let Some(v) = get("OUTPUTS_QUEUE_URL") {
            cfg.outputs_queue_url =
                Some(valid_queue_url(&v).map_err(|r| err("OUTPUTS_QUEUE_URL", &v, r))?);
        }
        if let Some(v) = get("SWEEP_SCHEDULE") {
            if !(v.starts_with("rate(") || v.starts_with("cron(")) || !v.ends_with(')') {
                return Err(err(
                    "SWEEP_SCHEDULE",
                    &v,
                    "expected an EventBridge schedule expression such as rate(1 day)",
                ));
            }
            cfg.sweep_schedule = Some(v.clone());
        }
        if let Some(v) = get("MEMORY_TABLE_ARN") {
            let ok = v.starts_with("arn:")
                && v.split(':').nth(2) == Some("dynamodb")
                && v.split(':').nth(5).is_some_and(|r| r.starts_with("table/"));
            if !ok {
                return Err(err(
                    "MEMORY_TABLE_ARN",
                    &v,
                    "expected a DynamoDB table ARN (arn:<partition>:dynamodb:<region>:<account>:table/<name>)",
                ));
            }
            cfg.memory_table_arn = Some(v.clone());
        }
        cfg.memory_writers = arns(
            &get,
            "MEMORY_WRITERS",
            "expected IAM role ARNs, comma-separated",
        )?;
        cfg.memory_operators = arns(
            &get,
            "MEMORY_OPERATORS",
            "expected IAM role ARN patterns, comma-separated",
        )?;
        cfg.outputs_senders = senders(&get, "OUTPUTS_SENDERS")?;
        cfg.first_boot_senders = senders(&get, "FIRST_BOOT_SENDERS")?;
        if let Some(n) = whole(
            &get,
            "FIRST_BOOT_GRACE_SECONDS",
            0..=super::MAX_FIRST_BOOT_GRACE_SECS,
            "expected a whole number of seconds from 0 (switch at once) to 3600",
        )? {
            cfg.first_boot_grace = Duration::from_secs(n);
        }
        if let Some(v) = get("FIRST_BOOT_QUEUE_URL") {
            cfg.first_boot_queue_url =
                Some(valid_queue_url(&v).map_err(|r| err("FIRST_BOOT_QUEUE_URL", &v, r))?);
        }
        if let Some(v) = get("OUTPUTS_DEAD_LETTER_QUEUE_URL") {
            cfg.outputs_refused_queue_url =
                Some(valid_queue_url(&v).map_err(|r| err("OUTPUTS_DEAD_LETTER_QUEUE_URL", &v, r))?);
        }
        if let Some(v) = get("CHAT_NOTIFICATIONS") {
            cfg.chat_notifications =
                flag(&v).ok_or_else(|| err("CHAT_NOTIFICATIONS", &v, "expected true or false"))?;
            if cfg.chat_notifications && cfg.topic_arn.is_none() {
                return Err(err(
                    "CHAT_NOTIFICATIONS",
                    &v,
                    "formats the SNS message for chat, but NOTIFY_TOPIC_ARN is not set",
                ));
            }
        }
        // An organizational unit's accounts are known only to the
        // organization's management (or delegated administrator) account:
        // central mode, where the sweep lists them.
        if let Some(ou) = cfg.overrides.iter().find(|o| o.is_ou()) {
            if cfg.member_role.is_none() {
                let name = if ou.mode.is_some() {
                    "MODE_OVERRIDES"
                } else {
                    "FIX_SOURCES_OVERRIDES"
                };
                return Err(err(
                    name,
                    &ou.target,
                    "an organizational unit needs central mode (MEMBER_ROLE_NAME): the guard learns an account's units from the organization",
                ));
            }
        }
        Ok(cfg)
    }
}

/// Account ids, comma-separated, twelve digits each; duplicates dropped.
pub(super) fn account_list(value: &str) -> Result<Vec<String>, String> {
    let mut accounts: Vec<String> = Vec::new();
    for item in list(value) {
        if !is_account_id(item) {
            return Err(format!(
                "{item:?} is not an account id (twelve digits, comma-separated)"
            ));
        }
        if !accounts.iter().any(|a| a == item) {
            accounts.push(item.to_string());
        }
    }
    if accounts.is_empty() {
        return Err("no account id given".into());
    }
    Ok(accounts)
}

/// IAM role names: 1 to 64 of `A-Za-z0-9+=,.@_-`, optionally after a path
/// (`team/name`), as IAM itself allows.
pub(super) fn valid_role_name(value: &str) -> Result<String, &'static str> {
    let v = value.trim().trim_start_matches('/');
    if v.starts_with("arn:") {
        return Err("expected the role's name (the same in every member account), not an ARN");
    }
    let name = v.rsplit('/').next().unwrap_or("");
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err("a role name has 1 to 64 letters, digits or +=,.@_-");
    }
    if v.len() > 512
        || v.split('/')
            .any(|seg| seg.is_empty() || !seg.chars().all(ok))
    {
        return Err("a role path is segments of letters, digits or +=,.@_- separated by /");
    }
    Ok(v.to_string())
}

/// DynamoDB table names: 3 to 255 of `A-Za-z0-9_.-`.
pub(super) fn valid_table_name(value: &str) -> Result<String, &'static str> {
    let v = value.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if !(3..=255).contains(&v.len()) || !v.chars().all(ok) {
        return Err("a DynamoDB table name has 3 to 255 letters, digits or _.-");
    }
    Ok(v.to_string())
}

/// An SQS queue URL: `https://sqs.<region>.amazonaws.com/<account>/<name>`
/// (or an endpoint's own host, as a local emulator answers with).
pub(super) fn valid_queue_url(value: &str) -> Result<String, &'static str> {
    const WHAT: &str =
        "expected an SQS queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>";
    let v = value.trim();
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or(WHAT)?;
    let mut parts = rest.split('/');
    let (host, account, name) = (parts.next(), parts.next(), parts.next());
    let name_ok = |n: &str| {
        (1..=80).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    match (host, account, name, parts.next()) {
        (Some(h), Some(a), Some(n), None)
            if !h.is_empty() && crate::validate::is_account_id(a) && name_ok(n) =>
        {
            Ok(v.to_string())
        }
        _ => Err(WHAT),
    }
}

/// STS external ids: 2 to 1,224 of `A-Za-z0-9+=,.@:/_-`.
pub(super) fn valid_external_id(value: &str) -> Result<String, &'static str> {
    let v = value.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
    if !(2..=1224).contains(&v.len()) || !v.chars().all(ok) {
        return Err("an external id has 2 to 1,224 letters, digits or +=,.@:/_-");
    }
    Ok(v.to_string())
}

pub(super) fn flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

pub(super) fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// EC2 tag keys: 1 to 128 characters, and the `aws:` prefix is AWS's own.
pub(super) fn valid_tag_key(value: &str) -> Result<String, &'static str> {
    let key = value.trim();
    if key.is_empty() || key.chars().count() > 128 {
        return Err("a tag key has 1 to 128 characters");
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err("tag keys starting with aws: are reserved by AWS");
    }
    if key.chars().any(char::is_control) {
        return Err("a tag key cannot hold control characters");
    }
    Ok(key.to_string())
}

/// A comma-separated list of ARNs (or ARN patterns); unset, none.
fn arns(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    reason: &str,
) -> Result<Vec<String>, ConfigError> {
    let Some(v) = get(name) else {
        return Ok(Vec::new());
    };
    list(&v)
        .map(|arn| {
            arn.starts_with("arn:")
                .then(|| arn.to_string())
                .ok_or_else(|| ConfigError {
                    variable: name,
                    value: v.clone(),
                    reason: reason.into(),
                })
        })
        .collect()
}

/// IAM unique ids (a role's `AROA...`), comma-separated: whom a queue's
/// messages are taken from, as SQS's `SenderId` names them.
fn senders(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Vec<String>, ConfigError> {
    let Some(v) = get(name) else {
        return Ok(Vec::new());
    };
    list(&v)
        .map(|id| {
            let ok = (16..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            ok.then(|| id.to_string()).ok_or_else(|| ConfigError {
                variable: name,
                value: v.clone(),
                reason: "expected IAM unique ids (a role's AROA..., as CloudFormation's RoleId gives), comma-separated".into(),
            })
        })
        .collect()
}

/// A whole number in `range`, read from `name` (unset: `None`); anything
/// else is an error naming the variable and what was `expected`.
fn whole<T: std::str::FromStr + PartialOrd>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    let Some(v) = get(name) else {
        return Ok(None);
    };
    match v.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError {
            variable: name,
            value: v,
            reason: expected.to_string(),
        }),
    }
}

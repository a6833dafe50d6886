//! The last mile: which software still uses IMDSv1, read from CloudTrail
//! without touching a host. Every AWS API call made with an instance
//! role's credentials carries `userIdentity.sessionContext.ec2RoleDelivery`:
//! `1.0` when IMDSv1 delivered those credentials, `2.0` when IMDSv2 did
//! (CloudTrail's userIdentity reference), with the instance's id as the
//! role session name (the ARN's last part) and the caller's `userAgent`.
//! `LookupEvents` by user name (the session name) finds an instance's
//! management events, read and write, for 90 days, with no trail needed
//! (AWS CLI's own `lookup-events` example shows an assumed role's session
//! name as `Username`).
//!
//! What it cannot see: data events (S3 objects, DynamoDB items), metadata
//! reads that fetch no credentials (instance id, region, user data: never
//! an AWS call), calls older than 90 days, and calls made in regions not
//! asked (a call lands in the region of the endpoint called; global
//! services' in us-east-1). An SDK that fell back to IMDSv1 shows `1.0`
//! too: a `1.0` names software that got its credentials over IMDSv1, not
//! why.
//!
//! Pure: the sweep asks CloudTrail; this reads the records, keeps only
//! what is safe to keep (product and version tokens of the user agent;
//! never OS, kernel, per-call fields or addresses of the instance), tells a
//! call from outside the instance apart (possible credential theft, never a
//! reason to keep IMDSv1) and explains what it saw (`hypothesis`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::parse_iso8601;
use crate::validate::is_instance_id;

mod catalogue;

/// How many `LookupEvents` pages (50 events each) one instance may cost a
/// run: a busy instance's events beyond them are not read this run, and the
/// report says so.
pub const PAGES_PER_INSTANCE: u32 = 10;

/// One call made with an instance role's credentials, as CloudTrail
/// recorded it: only what the guard keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub instance: String,
    /// The role whose credentials made it.
    pub role: String,
    /// `ec2RoleDelivery` was `1.0`.
    pub v1: bool,
    /// Product and version tokens only (`normalise_agent`).
    pub agent: String,
    /// `sourceIPAddress`, as CloudTrail recorded it: an address, or a
    /// service's name (`AWS Internal`, `ec2.amazonaws.com`).
    pub source: String,
    /// `s3.amazonaws.com` → `s3`, and the API: `s3:ListBuckets`.
    pub example: String,
    pub time: u64,
}

/// Reads one record (`CloudTrailEvent`'s JSON). `Ok(None)`: a record of no
/// instance role's call, or one without `ec2RoleDelivery` (an older record,
/// or a call not made with delivered credentials): nothing to attribute.
pub fn read(record: &str) -> Result<Option<Call>, String> {
    let v: Value =
        serde_json::from_str(record).map_err(|e| format!("not a CloudTrail record: {e}"))?;
    let who = &v["userIdentity"];
    let Some(delivery) = who["sessionContext"]["ec2RoleDelivery"].as_str() else {
        return Ok(None);
    };
    let v1 = match delivery {
        "1.0" => true,
        "2.0" => false,
        other => {
            return Err(format!(
                "ec2RoleDelivery {:?} is neither 1.0 nor 2.0",
                crate::validate::clean(other, 16)
            ))
        }
    };
    // The session name is the instance id: the ARN's last part, or the
    // principal id's after the colon.
    let arn = who["arn"].as_str().unwrap_or("");
    let principal = who["principalId"].as_str().unwrap_or("");
    let instance = [arn.rsplit('/').next(), principal.rsplit(':').next()]
        .into_iter()
        .flatten()
        .find(|s| is_instance_id(s));
    let Some(instance) = instance else {
        return Ok(None);
    };
    let role = who["sessionContext"]["sessionIssuer"]["userName"]
        .as_str()
        .or_else(|| arn.split('/').nth(1))
        .unwrap_or("")
        .to_string();
    let service = v["eventSource"].as_str().unwrap_or("");
    let service = service.strip_suffix(".amazonaws.com").unwrap_or(service);
    let example = format!(
        "{}:{}",
        clean_token(service),
        clean_token(v["eventName"].as_str().unwrap_or(""))
    );
    let time = v["eventTime"]
        .as_str()
        .and_then(parse_iso8601)
        .ok_or("its eventTime is not a time")?;
    Ok(Some(Call {
        instance: instance.to_string(),
        role: clean_token(&role),
        v1,
        agent: normalise_agent(v["userAgent"].as_str().unwrap_or("")),
        source: v["sourceIPAddress"].as_str().unwrap_or("").to_string(),
        example,
        time,
    }))
}

fn clean_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-:@".contains(*c))
        .take(64)
        .collect()
}

/// Token names that describe the machine or the call, not the software:
/// never kept (an OS and kernel, a language runtime's build, per-call
/// metadata, the retry mode, an address).
const NOT_SOFTWARE: &[&str] = &[
    "os",
    "md",
    "lang",
    "cfg",
    "ua",
    "api",
    "m",
    "ft",
    "exec-env",
    "exec_env",
    "linux",
    "darwin",
    "windows",
    "windows_nt",
    "vendor",
    "io",
    "http",
    "python",
    "java",
    "openjdk_64-bit_server_vm",
    "openjdk_64-",
    "ruby",
    "php",
    "go",
    "node",
    "nodejs",
    "rust",
    "command",
    "prompt",
    "installer",
    "distrib",
    "arch",
    "pyimpl",
    "sdk-metrics",
    "aws-internal",
];

/// Parts of a token's name that say it is a runtime or the machine (a JVM,
/// an OS), whatever else the name says: never kept, unless the name is an
/// AWS SDK's or tool's own (`aws-sdk-nodejs`).
const RUNTIME: &[&str] = &[
    "vm", "jdk", "jre", "java", "linux", "windows", "darwin", "macos", "kernel", "python", "ruby",
    "node", "amzn", "x86", "arm64", "aarch64",
];

/// A user agent reduced to its product and version tokens, at most three:
/// `aws-cli/1.16.102 Python/2.7.16 Linux/4.14.133-113.112.amzn2.x86_64
/// botocore/1.12.92` → `aws-cli/1.16.102 botocore/1.12.92`. An
/// application id an SDK was given (`app/<id>`) is kept: it names the
/// workload, as its owner chose. Anything else (an OS, a kernel, per-call
/// metadata, a hostname) is dropped, so no instance detail is kept.
pub fn normalise_agent(ua: &str) -> String {
    // The ECS container agent names itself in words:
    // `Amazon ECS Agent - v1.12.2 (ecda8a6) (+http://aws.amazon.com/ecs/)`.
    if let Some(rest) = ua.trim_start().strip_prefix("Amazon ECS Agent - v") {
        let v = rest.split_whitespace().next().unwrap_or("");
        if !v.is_empty()
            && v.len() <= 32
            && v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return format!("amazon-ecs-agent/{v}");
        }
    }
    let kept: Vec<(bool, String)> = ua
        .split_whitespace()
        .filter_map(|token| {
            let (name, version) = token.split_once('/')?;
            let lower = name.to_ascii_lowercase();
            let aws = ["aws-", "amazon-", "boto", "app"]
                .iter()
                .any(|p| lower.starts_with(p))
                || CATALOGUE.iter().any(|k| k.product == lower);
            if NOT_SOFTWARE.contains(&lower.as_str())
                || lower.starts_with("md")
                || (!aws && RUNTIME.iter().any(|r| lower.contains(r)))
            {
                return None;
            }
            let ok_name = !name.is_empty()
                && name.len() <= 48
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            let ok_version = !version.is_empty()
                && version.len() <= 32
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                && (lower == "app"
                    || version
                        .trim_start_matches('v')
                        .starts_with(|c: char| c.is_ascii_digit()));
            (ok_name && ok_version).then(|| (aws, format!("{name}/{version}")))
        })
        .collect();
    // The AWS SDKs' and tools' tokens first (what the catalogue reads),
    // then the others, at most three in all, in their order.
    let kept: Vec<String> = kept
        .iter()
        .filter(|(aws, _)| *aws)
        .chain(kept.iter().filter(|(aws, _)| !*aws))
        .map(|(_, t)| t.clone())
        .take(3)
        .collect();
    if kept.is_empty() {
        // `AWS Internal`, a service's own name (`elasticfilesystem`), or
        // nothing at all: said as such, never kept verbatim.
        match ua.trim() {
            "" => "(no user agent)".into(),
            "AWS Internal" => "AWS Internal".into(),
            // Fluent Bit's C client: `aws-fluent-bit-plugin`, `-ecs`,
            // `-k8s`, `-windows-k8s` (a digit in its suffix), no version.
            other
                if other.starts_with("aws-fluent-bit-plugin")
                    && other.len() <= 48
                    && other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                other.into()
            }
            // A service's bare name (`elasticfilesystem`): no digits, no
            // dots, so never a host name or an address.
            other
                if other.len() <= 32
                    && other.chars().all(|c| c.is_ascii_alphabetic() || c == '-') =>
            {
                other.into()
            }
            _ => "(unrecognised user agent)".into(),
        }
    } else {
        kept.join(" ")
    }
}

/// Where a v1-delivered call came from, against the instance's own
/// addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Origin {
    /// One of the instance's addresses: software on it.
    Instance,
    /// An AWS service on its behalf (`AWS Internal`, a service's name).
    Service,
    /// An address not the instance's, when it has a public address of its
    /// own: its credentials were used elsewhere (possible theft).
    Outside { address: String },
    /// An address not the instance's, when it has no public address: it
    /// may reach AWS through a NAT gateway or proxy the guard does not see,
    /// so this cannot tell software from theft.
    Unresolved { address: String },
}

/// What a call's source is judged against: the instance's addresses
/// (private, public, and its delegated prefixes as CIDRs) and when it was
/// launched (its current addresses say nothing of calls before).
#[derive(Clone, Copy, Debug, Default)]
pub struct Place<'p> {
    pub private: &'p [String],
    pub public: &'p [String],
    pub prefixes: &'p [String],
    pub launched: Option<u64>,
}

/// Where a call made at `time` from `source` came from.
pub fn origin(source: &str, time: u64, at: Place<'_>) -> Origin {
    let Ok(ip) = source.parse::<std::net::IpAddr>() else {
        return Origin::Service;
    };
    let same = |a: &String| a.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip);
    if at.private.iter().chain(at.public).any(same) || at.prefixes.iter().any(|p| within(ip, p)) {
        return Origin::Instance;
    }
    let address = ip.to_string();
    // No public address of its own (a NAT gateway or proxy speaks for it),
    // a private source (inside the network: a VPC endpoint, another
    // interface), or a call from before its launch (a stopped and started
    // instance gets a new public address): not proof of use elsewhere.
    let private_source = match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_loopback(),
    };
    let before_launch = at.launched.is_some_and(|l| time < l);
    if at.public.is_empty() || private_source || before_launch {
        Origin::Unresolved { address }
    } else {
        Origin::Outside { address }
    }
}

/// Whether `ip` is within CIDR `prefix` (`10.0.1.16/28`, `2600:1f14::/80`).
fn within(ip: std::net::IpAddr, prefix: &str) -> bool {
    let Some((net, len)) = prefix.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<std::net::IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Software seen using IMDSv1-delivered credentials on one instance: one
/// role and one normalised user agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub role: String,
    pub agent: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub calls: u64,
    /// One call it made: `service:Api`.
    pub example: String,
    /// From a NAT or proxy address (`Origin::Unresolved`): counted as
    /// software, with the caveat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// Why it may use IMDSv1, and where that is said.
    pub hypothesis: Hypothesis,
}

/// A v1-delivered call from outside the instance: possible credential
/// theft, never software to keep IMDSv1 for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    pub role: String,
    pub address: String,
    pub agent: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub calls: u64,
    pub example: String,
}

/// What one instance's lookup found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seen {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<Caller>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<Suspect>,
    /// Calls made with IMDSv2-delivered credentials (ignored, counted).
    pub v2_calls: u64,
    /// Events read.
    pub events: u64,
    /// Records that could not be read (left out, counted).
    #[serde(skip_serializing_if = "is_zero")]
    pub unread: u64,
    /// More events than one run reads for an instance: the rest were not
    /// looked at this run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an instance is like, for the hypothesis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host {
    pub hop_limit: Option<i32>,
    pub container_host: bool,
}

/// Attributes `calls` (this instance's, any order) to software and
/// suspects.
pub fn attribute(instance: &str, calls: &[Call], at: Place<'_>, host: Host) -> Seen {
    let mut seen = Seen::default();
    let mut callers: BTreeMap<(String, String), Caller> = BTreeMap::new();
    let mut suspects: BTreeMap<(String, String), Suspect> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.instance == instance) {
        seen.events += 1;
        if !c.v1 {
            seen.v2_calls += 1;
            continue;
        }
        let through = match origin(&c.source, c.time, at) {
            Origin::Outside { address } => {
                let s = suspects
                    .entry((c.role.clone(), address.clone()))
                    .or_insert_with(|| Suspect {
                        role: c.role.clone(),
                        address,
                        agent: c.agent.clone(),
                        first_seen: c.time,
                        last_seen: c.time,
                        calls: 0,
                        example: c.example.clone(),
                    });
                s.calls += 1;
                s.first_seen = s.first_seen.min(c.time);
                s.last_seen = s.last_seen.max(c.time);
                continue;
            }
            Origin::Unresolved { address } => Some(address),
            Origin::Instance | Origin::Service => None,
        };
        let e = callers
            .entry((c.role.clone(), c.agent.clone()))
            .or_insert_with(|| Caller {
                role: c.role.clone(),
                agent: c.agent.clone(),
                first_seen: c.time,
                last_seen: c.time,
                calls: 0,
                example: c.example.clone(),
                through: None,
                hypothesis: hypothesis(&c.agent, host),
            });
        e.calls += 1;
        e.first_seen = e.first_seen.min(c.time);
        e.last_seen = e.last_seen.max(c.time);
        if e.through.is_none() {
            e.through = through;
        }
    }
    seen.callers = callers.into_values().collect();
    seen.suspects = suspects.into_values().collect();
    seen
}

pub use catalogue::{hypothesis, older, Hypothesis, Known, CATALOGUE};

/// A sweep's last mile in one account-region (`LOOKUP_IMDSV1_CALLERS`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LastMile {
    /// Instances left at `optional` whose calls CloudTrail was asked for
    /// this run.
    pub asked: u64,
    /// Those not asked this run (the budget ran out, or CloudTrail
    /// refused): asked first next run.
    pub not_asked: u64,
    /// `LookupEvents` calls made.
    pub lookups: u64,
    /// Each instance where software used IMDSv1-delivered credentials, or
    /// whose credentials were used from elsewhere (this run's, or an
    /// earlier run's reading of one not asked again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceCallers>,
    /// Why some could not be asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What CloudTrail showed of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceCallers {
    pub instance_id: String,
    /// When it was asked (an earlier run's, when not asked this run).
    pub asked_at: u64,
    #[serde(flatten)]
    pub seen: Seen,
}

/// How many `LookupEvents` calls one account-region's sweep may make a run
/// (CloudTrail takes two a second per account and region: half a minute).
pub const CALLS_PER_REGION: u32 = 60;

/// What stands in the way of `HttpTokensEnforced` by what CloudTrail
/// showed, and, where it showed nothing, what was not looked at: absence of
/// evidence is never proof.
pub fn readiness_notes(m: &LastMile) -> Vec<String> {
    let mut notes = Vec::new();
    let software: Vec<String> = m
        .instances
        .iter()
        .flat_map(|i| {
            i.seen
                .callers
                .iter()
                .map(move |c| format!("{} ({}, role {})", i.instance_id, c.agent, c.role))
        })
        .collect();
    if !software.is_empty() {
        let shown: Vec<&String> = software.iter().take(5).collect();
        notes.push(format!(
            "software still uses IMDSv1-delivered credentials (CloudTrail ec2RoleDelivery 1.0): {}{}",
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if software.len() > shown.len() { ", ..." } else { "" }
        ));
    }
    let suspects = m
        .instances
        .iter()
        .filter(|i| !i.seen.suspects.is_empty())
        .count();
    if suspects > 0 {
        notes.push(format!(
            "{suspects} instance(s)' IMDSv1-delivered credentials were used from elsewhere (possible theft): see the warnings"
        ));
    }
    let partial: Vec<&str> = m
        .instances
        .iter()
        .filter(|i| i.seen.partial || i.seen.unread > 0)
        .map(|i| i.instance_id.as_str())
        .collect();
    if software.is_empty() && suspects == 0 && m.asked > 0 {
        notes.push(format!(
            "no IMDSv1-delivered credentials seen in the management events of the {} instance(s) asked over the lookback (NO_TOKEN_LOOKBACK_HOURS, at most 90 days); not looked at: data events, metadata reads that fetch no credentials, calls in other regions, {} instance(s) not asked yet{}",
            m.asked,
            m.not_asked,
            if partial.is_empty() {
                String::new()
            } else {
                format!(", the events of {} not all read", partial.join(", "))
            }
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS Marketplace Metering's CloudTrail example (its seller guide:
    /// "MeterUsage" logged with IMDSv1-delivered credentials).
    const METERING: &str = r#"{"eventVersion":"1.05","userIdentity":{"type":"AssumedRole","principalId":"EX_PRINCIPAL_ID:i-exampled859aa775c","arn":"arn:aws:sts::123456789012:assumed-role/Alice/i-exampled859aa775c","accountId":"123456789012","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::123456789012:role/Alice","userName":"Alice"},"ec2RoleDelivery":"1.0"}},"eventTime":"2020-07-10T23:06:42Z","eventSource":"metering-marketplace.amazonaws.com","eventName":"MeterUsage","sourceIPAddress":"1.2.3.4","userAgent":"aws-cli/1.16.102 Python/2.7.16 Linux/4.14.133-113.112.amzn2.x86_64 botocore/1.12.92"}"#;

    fn call(instance: &str, v1: bool, agent: &str, source: &str, time: u64) -> Call {
        Call {
            instance: instance.into(),
            role: "app".into(),
            v1,
            agent: agent.into(),
            source: source.into(),
            example: "s3:ListBuckets".into(),
            time,
        }
    }

    #[test]
    fn a_record_names_its_instance_role_agent_and_call_and_nothing_else() {
        // The example's instance id is not a real one's shape: not taken.
        assert_eq!(read(METERING).unwrap(), None);
        let real = METERING.replace("i-exampled859aa775c", "i-0a1b2c3d4e5f60718");
        let c = read(&real).unwrap().unwrap();
        assert_eq!(c.instance, "i-0a1b2c3d4e5f60718");
        assert_eq!(c.role, "Alice");
        assert!(c.v1);
        assert_eq!(c.agent, "aws-cli/1.16.102 botocore/1.12.92");
        assert_eq!(c.example, "metering-marketplace:MeterUsage");
        assert!(c.time > 1_594_000_000);
        let v2 = real.replace("\"1.0\"", "\"2.0\"");
        assert!(!read(&v2).unwrap().unwrap().v1);
        // No ec2RoleDelivery: not a delivered credential's call.
        let none = real.replace(",\"ec2RoleDelivery\":\"1.0\"", "");
        assert_eq!(read(&none).unwrap(), None);
        assert!(read("not json").is_err());
        assert!(read(&real.replace("\"1.0\"", "\"9\"")).is_err());
    }

    #[test]
    fn only_product_and_version_tokens_are_kept() {
        for (ua, kept) in [
            ("aws-cli/1.29.54 md/Botocore#1.31.54 md/awscrt#1.0.0.dev0 ua/2.0 os/linux#6.3.0-kali1-cloud-amd64 md/arch#x86_64 lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy botocore/1.31.54", "aws-cli/1.29.54 botocore/1.31.54"),
            ("aws-sdk-java/2.9.17 Linux/4.14.154-128.181.amzn2.x86_64 OpenJDK_64- Bit_Server_VM/25.252-b09 Java/1.8.0_252 vendor/Amazon.com_Inc. io/sync http/Apache", "aws-sdk-java/2.9.17"),
            ("aws-sdk-rust/1.3.8 os/linux lang/rust/1.88.0", "aws-sdk-rust/1.3.8"),
            ("amazon-ssm-agent/2.3.1319.0", "amazon-ssm-agent/2.3.1319.0"),
            ("Boto3/1.9.86 Python/3.7.2 Linux/4.14 Botocore/1.12.86 app/billing-exporter", "Boto3/1.9.86 Botocore/1.12.86 app/billing-exporter"),
            ("AWS Internal", "AWS Internal"),
            ("elasticfilesystem", "elasticfilesystem"),
            ("", "(no user agent)"),
            ("curl/7.79.1 (x86_64-pc-linux-gnu) host-10-0-0-12.internal", "curl/7.79.1"),
            ("Mozilla/5.0 (X11; Linux x86_64) ip-10-1-2-3 weird stuff here and more", "Mozilla/5.0"),
        ] {
            assert_eq!(normalise_agent(ua), kept, "{ua}");
        }
    }

    #[test]
    fn a_call_from_elsewhere_is_a_suspect_not_software() {
        let private = vec!["10.0.0.12".to_string()];
        let public = vec!["54.1.2.3".to_string()];
        let id = "i-0a1b2c3d4e5f60718";
        let calls = [
            call(id, true, "aws-cli/1.16.102", "54.1.2.3", 100),
            call(id, true, "aws-cli/1.16.102", "10.0.0.12", 300),
            call(id, true, "aws-cli/1.16.102", "AWS Internal", 200),
            call(id, false, "aws-cli/2.17.23", "54.1.2.3", 400),
            call(id, true, "aws-cli/2.17.23", "45.142.212.18", 500),
            call("i-0ffffffffffffffff", true, "x/1", "10.9.9.9", 1),
        ];
        let at = |public| Place {
            private: &private,
            public,
            prefixes: &[],
            launched: Some(50),
        };
        let seen = attribute(id, &calls, at(&public), Host::default());
        assert_eq!(seen.events, 5);
        assert_eq!(seen.v2_calls, 1);
        assert_eq!(seen.callers.len(), 1);
        let c = &seen.callers[0];
        assert_eq!((c.calls, c.first_seen, c.last_seen), (3, 100, 300));
        assert!(
            c.hypothesis.text.contains("before 1.16.289"),
            "{}",
            c.hypothesis.text
        );
        assert_eq!(seen.suspects.len(), 1);
        assert_eq!(seen.suspects[0].address, "45.142.212.18");

        // No public address: another address may be its NAT gateway's.
        let seen = attribute(id, &calls, at(&[]), Host::default());
        assert!(seen.suspects.is_empty());
        assert!(seen.callers.iter().any(|c| c.through.is_some()));
    }

    #[test]
    fn addresses_are_compared_as_addresses_and_doubt_is_not_theft() {
        let private = vec!["10.0.0.12".to_string(), "2600:1f14:abc:1::5".to_string()];
        let public = vec!["54.1.2.3".to_string()];
        let prefixes = vec![
            "10.0.1.16/28".to_string(),
            "2600:1f14:abc:2::/80".to_string(),
        ];
        let at = Place {
            private: &private,
            public: &public,
            prefixes: &prefixes,
            launched: Some(1_000),
        };
        assert_eq!(
            origin("2600:1f14:0abc:0001:0000:0000:0000:0005", 2_000, at),
            Origin::Instance
        );
        assert_eq!(
            origin("10.0.1.20", 2_000, at),
            Origin::Instance,
            "a pod's, from its prefix"
        );
        assert_eq!(origin("2600:1f14:abc:2::99", 2_000, at), Origin::Instance);
        assert_eq!(origin("ec2.amazonaws.com", 2_000, at), Origin::Service);
        assert!(
            matches!(origin("10.9.9.9", 2_000, at), Origin::Unresolved { .. }),
            "a private source"
        );
        assert!(
            matches!(origin("45.142.212.18", 500, at), Origin::Unresolved { .. }),
            "before its launch"
        );
        assert!(matches!(
            origin("45.142.212.18", 2_000, at),
            Origin::Outside { .. }
        ));
        let no_public = Place { public: &[], ..at };
        assert!(matches!(
            origin("45.142.212.18", 2_000, no_public),
            Origin::Unresolved { .. }
        ));
    }

    #[test]
    fn an_sdk_behind_other_tokens_is_still_kept() {
        let terraform = "APN/1.0 HashiCorp/1.0 Terraform/1.5.7 (+https://www.terraform.io) terraform-provider-aws/5.31.0 aws-sdk-go/1.44.0 (go1.21; linux; amd64)";
        let kept = normalise_agent(terraform);
        assert!(kept.starts_with("aws-sdk-go/1.44.0"), "{kept}");
        assert_eq!(kept.split(' ').count(), 3);
        assert_eq!(
            normalise_agent("aws-load-balancer-controller/v2.7.1"),
            "aws-load-balancer-controller/v2.7.1"
        );
        assert_eq!(
            normalise_agent("ip-10-0-0-12.ec2.internal"),
            "(unrecognised user agent)"
        );
        assert_eq!(normalise_agent("10.0.0.12"), "(unrecognised user agent)");
    }

    #[test]
    fn readiness_says_what_it_saw_and_what_it_did_not_look_at() {
        let id = "i-0a1b2c3d4e5f60718";
        let public = vec!["54.1.2.3".to_string()];
        let at = Place {
            public: &public,
            ..Place::default()
        };
        let theft = attribute(
            id,
            &[call(id, true, "aws-cli/2.17.23", "45.142.212.18", 5)],
            at,
            Host::default(),
        );
        let m = LastMile {
            asked: 1,
            instances: vec![InstanceCallers {
                instance_id: id.into(),
                asked_at: 1,
                seen: theft,
            }],
            ..LastMile::default()
        };
        let notes = readiness_notes(&m);
        assert!(
            notes.iter().any(|n| n.contains("used from elsewhere")),
            "{notes:?}"
        );
        assert!(
            !notes
                .iter()
                .any(|n| n.contains("no IMDSv1-delivered credentials seen")),
            "{notes:?}"
        );
        let none = LastMile {
            asked: 3,
            not_asked: 2,
            ..LastMile::default()
        };
        let notes = readiness_notes(&none);
        assert!(
            notes[0].contains("not looked at") && notes[0].contains("2 instance(s) not asked yet"),
            "{notes:?}"
        );
        assert!(
            readiness_notes(&LastMile::default()).is_empty(),
            "nothing asked: nothing said"
        );
    }

    #[test]
    fn the_hypothesis_names_its_source() {
        let old = hypothesis("amazon-ssm-agent/2.3.1319.0", Host::default());
        assert!(old.text.contains("IMDSv1 first"), "{}", old.text);
        assert!(old.source.contains("amazon-ssm-agent/issues/319"));
        let container = Host {
            hop_limit: Some(1),
            container_host: true,
        };
        let fallback = hypothesis("Boto3/1.26.0 Botocore/1.29.0", container);
        assert!(fallback.text.contains("hop limit 1"), "{}", fallback.text);
        assert!(fallback.source.contains("imds-considerations"));
        let unknown = hypothesis("curl/7.79.1", Host::default());
        assert!(unknown.text.starts_with("unknown"));
        assert!(
            older("1.16.102", "1.16.289")
                && !older("1.16.289", "1.16.289")
                && !older("2.0", "1.16.289")
        );
        assert!(older("2.3.1319.0", "3.0.431.0"));
        for k in CATALOGUE {
            assert!(k.source.starts_with("https://"), "{}", k.label);
        }
    }

    /// Agents whose user agent is their own: as their source sets it (the
    /// ECS agent's as a real record has it, `events/real/lookup-events/`).
    #[test]
    fn agents_that_name_themselves_are_named_and_explained() {
        let ecs =
            normalise_agent("Amazon ECS Agent - v1.12.2 (ecda8a6) (+http://aws.amazon.com/ecs/)");
        assert_eq!(ecs, "amazon-ecs-agent/1.12.2");
        let h = hypothesis(&ecs, Host::default());
        assert!(h.text.contains("not verified"), "{}", h.text);
        assert!(h.source.contains("containers-roadmap"));
        assert_eq!(
            normalise_agent("Amazon ECS Agent - v$(id) x"),
            "(unrecognised user agent)"
        );

        let cw = normalise_agent(
            "CWAgent/1.247347.3 (go1.15.6; linux; amd64) No Build Date inputs:(cpu disk mem)",
        );
        assert_eq!(cw, "CWAgent/1.247347.3");
        let h = hypothesis(&cw, Host::default());
        assert!(
            h.text.contains("before 1.300028.0: upgrade it"),
            "{}",
            h.text
        );
        let h = hypothesis("CWAgent/1.300050.0", Host::default());
        assert!(h.text.starts_with("SDK fallback"), "{}", h.text);

        for fluent in [
            "aws-fluent-bit-plugin",
            "aws-fluent-bit-plugin-ecs",
            "aws-fluent-bit-plugin-k8s",
            "aws-fluent-bit-plugin-windows-k8s",
        ] {
            assert_eq!(normalise_agent(fluent), fluent);
            let h = hypothesis(fluent, Host::default());
            assert!(
                h.text.contains("no version") && h.text.contains("1.8.9"),
                "{}",
                h.text
            );
            assert!(h.source.contains("fluent-bit/issues/4388"));
        }
        // A name that only begins like a catalogued one is not it, and
        // only a versionless entry is matched by a bare name.
        assert!(hypothesis("aws-clix/1.0", Host::default())
            .text
            .starts_with("unknown"));
        assert!(hypothesis("aws-cli-foo", Host::default())
            .text
            .starts_with("unknown"));
        assert!(hypothesis("aws-fluent-bit-plugin/1.9.0", Host::default())
            .text
            .starts_with("unknown"));
    }
}

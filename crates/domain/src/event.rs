//! What an incoming event means, in plain Rust.
//!
//! Real CloudTrail events are looser than any typed struct expects (empty
//! `sessionIssuer`, absent fields, services instead of users), so only the
//! EventBridge envelope is parsed with `aws_lambda_events`; the CloudTrail
//! `detail` is read field by field, and a field we do not need can never make
//! an event fail. What comes from the event is untrusted text: it is cleaned
//! of control characters and capped before it goes anywhere.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{clean, is_account_id, is_image_id, is_instance_id, is_region};

pub const RUN_INSTANCES: &str = "RunInstances";
pub const MODIFY_METADATA_OPTIONS: &str = "ModifyInstanceMetadataOptions";
pub const MODIFY_METADATA_DEFAULTS: &str = "ModifyInstanceMetadataDefaults";
/// The event name a sweep's report and notification carry.
pub const SWEEP: &str = "Sweep";
const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";

/// Longest piece of event text we keep (user agents can be kilobytes).
pub const MAX_TEXT: usize = 256;

/// Who made the call, as CloudTrail reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Principal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// For assumed roles, the role's own ARN (`sessionContext.sessionIssuer.arn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// A service acting for the account, e.g. `autoscaling.amazonaws.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
}

impl Principal {
    /// The name a person should read: the ARN, else the invoking service.
    pub fn display(&self) -> String {
        self.arn
            .clone()
            .or_else(|| self.invoked_by.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// The ARNs an exemption glob is matched against.
    pub fn arns(&self) -> impl Iterator<Item = &str> {
        self.arn
            .iter()
            .chain(self.role_arn.iter())
            .map(String::as_str)
    }
}

/// Where and by whom the call was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventContext {
    pub event_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub region: String,
    pub principal: Principal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// An instance's metadata options as reported by EC2 (any field may be
/// missing from an event; `DescribeInstances` fills them in).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetadataOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_protocol_ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_metadata_tags: Option<String>,
}

impl MetadataOptions {
    /// Enough to decide and, if need be, to write every field back explicitly.
    pub fn is_complete(&self) -> bool {
        self.http_tokens.is_some()
            && self.http_endpoint.is_some()
            && self.http_put_response_hop_limit.is_some()
    }
}

/// One instance as seen in an event or by `DescribeInstances`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub instance_id: String,
    pub image_id: Option<String>,
    /// `pending`, `running`, `stopped`, `shutting-down`, `terminated`, ...
    pub state: Option<String>,
    pub options: MetadataOptions,
    /// `None` when the source did not say (an event item without `tagSet`).
    pub tags: Option<Vec<(String, String)>>,
}

impl Observed {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a `ModifyInstanceMetadataDefaults` call asked for (only the fields
/// it named).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DefaultsChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tokens_enforced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Trigger {
    Launch,
    MetadataChange,
    /// Found by a sweep, not named by an event.
    Sweep,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardEvent {
    /// Instances to evaluate. `unreadable` lists items of the event that
    /// could not be read; they fail the invocation after the rest is done.
    Instances {
        ctx: EventContext,
        trigger: Trigger,
        instances: Vec<Observed>,
        unreadable: Vec<String>,
    },
    /// The API call itself failed: nothing was launched or changed.
    FailedCall {
        ctx: EventContext,
        error_code: String,
    },
    /// A scheduled event: sweep the fleet. `ctx.region` is the rule's region.
    Sweep { ctx: EventContext },
    /// Someone changed the account's IMDS defaults in `ctx.region`.
    DefaultsChanged {
        ctx: EventContext,
        change: DefaultsChange,
    },
    /// Not ours to act on.
    Ignored { reason: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("malformed {event_name} event {event_id}: {reason}")]
    Malformed {
        event_name: String,
        event_id: String,
        reason: String,
    },
}

/// The envelope's `detail`, checked present but not copied: deserializing
/// `EventBridgeEvent<Value>` from a `&Value` would clone the whole event, the
/// largest single cost of parsing one. The detail is read in place instead.
#[derive(Debug)]
struct Unread;

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Unread)
    }
}

impl Serialize for Unread {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

/// Reads an incoming Lambda payload. `Ignored` for what is not ours, an
/// error for an EC2 call event we cannot read (it may hide an instance).
pub fn parse(payload: &Value) -> Result<GuardEvent, EventError> {
    let envelope = match EventBridgeEvent::<Unread>::deserialize(payload) {
        Ok(e) => e,
        // Something claiming to be an EC2 event that we cannot read could
        // hide a launch: keep it (an error), do not drop it (an ignore).
        Err(e) if payload.get("source").and_then(Value::as_str) == Some("aws.ec2") => {
            return Err(EventError::Malformed {
                event_name: "aws.ec2".into(),
                event_id: text(payload, &["id"]).unwrap_or_else(|| "without id".into()),
                reason: format!(
                    "unreadable EventBridge envelope ({})",
                    clean(&e.to_string(), 120)
                ),
            })
        }
        Err(e) => {
            return Ok(ignored(format!(
                "not an EventBridge event ({})",
                clean(&e.to_string(), 120)
            )))
        }
    };
    if envelope.source == "aws.events" && envelope.detail_type == "Scheduled Event" {
        let region = envelope.region.clone().filter(|r| is_region(r));
        return Ok(GuardEvent::Sweep {
            ctx: EventContext {
                event_name: SWEEP.to_string(),
                event_id: envelope.id.as_deref().map(|s| clean(s, 64)),
                event_time: envelope.time.map(|t| t.to_rfc3339()),
                account: envelope.account.clone().filter(|a| is_account_id(a)),
                // Empty when the event names no region: the sweep then needs
                // SWEEP_REGIONS, and says so.
                region: region.unwrap_or_default(),
                ..EventContext::default()
            },
        });
    }
    if envelope.source != "aws.ec2" {
        return Ok(ignored(format!(
            "source {:?} is not aws.ec2",
            clean(&envelope.source, 64)
        )));
    }
    if envelope.detail_type != CLOUDTRAIL_DETAIL_TYPE {
        return Ok(ignored(format!(
            "detail-type {:?} is not {CLOUDTRAIL_DETAIL_TYPE:?}",
            clean(&envelope.detail_type, 64)
        )));
    }
    let detail = payload.get("detail").unwrap_or(&Value::Null);
    let envelope_id = envelope.id.as_deref().map(|s| clean(s, 64));
    let Some(detail_obj) = detail.as_object() else {
        return Err(EventError::Malformed {
            event_name: "CloudTrail".into(),
            event_id: envelope_id.unwrap_or_else(|| "without id".into()),
            reason: format!("detail is {}, not an object", kind(detail)),
        });
    };
    let Some(event_name) = detail_obj.get("eventName").and_then(Value::as_str) else {
        return Ok(ignored("CloudTrail event without eventName".into()));
    };
    if event_name != RUN_INSTANCES
        && event_name != MODIFY_METADATA_OPTIONS
        && event_name != MODIFY_METADATA_DEFAULTS
    {
        return Ok(ignored(format!(
            "event {:?} is not one imds-guard acts on",
            clean(event_name, 64)
        )));
    }
    let event_id = text(detail, &["eventID"]).or(envelope_id);
    let malformed = |reason: String| EventError::Malformed {
        event_name: event_name.to_string(),
        event_id: event_id.clone().unwrap_or_else(|| "without id".into()),
        reason,
    };

    let region = text(detail, &["awsRegion"])
        .or_else(|| envelope.region.clone())
        .ok_or_else(|| malformed("no awsRegion".into()))?;
    if !is_region(&region) {
        return Err(malformed(format!(
            "awsRegion {:?} is not a region",
            clean(&region, 64)
        )));
    }
    let account = text(detail, &["recipientAccountId"])
        .or_else(|| envelope.account.clone())
        .filter(|a| is_account_id(a));
    let ctx = EventContext {
        event_name: event_name.to_string(),
        event_id: event_id.clone(),
        event_time: text(detail, &["eventTime"]).or_else(|| envelope.time.map(|t| t.to_rfc3339())),
        account,
        region,
        principal: Principal {
            arn: text(detail, &["userIdentity", "arn"]),
            role_arn: text(
                detail,
                &["userIdentity", "sessionContext", "sessionIssuer", "arn"],
            ),
            invoked_by: text(detail, &["userIdentity", "invokedBy"]),
            identity_type: text(detail, &["userIdentity", "type"]),
        },
        source_ip: text(detail, &["sourceIPAddress"]),
        user_agent: text(detail, &["userAgent"]),
    };

    if let Some(code) = detail.get("errorCode").filter(|v| !v.is_null()) {
        let error_code = code
            .as_str()
            .map(|s| clean(s, 128))
            .unwrap_or_else(|| clean(&code.to_string(), 128));
        return Ok(GuardEvent::FailedCall { ctx, error_code });
    }

    if event_name == MODIFY_METADATA_DEFAULTS {
        return Ok(GuardEvent::DefaultsChanged {
            change: defaults_change(detail),
            ctx,
        });
    }

    if event_name == RUN_INSTANCES {
        let items = detail
            .get("responseElements")
            .and_then(|r| r.get("instancesSet"))
            .and_then(|s| s.get("items"));
        let Some(items) = items.and_then(Value::as_array) else {
            return Err(malformed(format!(
                "responseElements.instancesSet.items is {}, not a list",
                items.map(kind).unwrap_or("missing")
            )));
        };
        let mut instances = Vec::with_capacity(items.len());
        let mut unreadable = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match launched_instance(item) {
                Ok(obs) => instances.push(obs),
                Err(reason) => unreadable.push(format!("instancesSet.items[{i}]: {reason}")),
            }
        }
        dedup_by_id(&mut instances);
        if instances.is_empty() && unreadable.is_empty() {
            return Err(malformed(
                "responseElements.instancesSet.items is empty".into(),
            ));
        }
        return Ok(GuardEvent::Instances {
            ctx,
            trigger: Trigger::Launch,
            instances,
            unreadable,
        });
    }

    // ModifyInstanceMetadataOptions: CloudTrail writes the request in
    // PascalCase inside `ModifyInstanceMetadataOptionsRequest`.
    let candidates = [
        &[
            "requestParameters",
            "ModifyInstanceMetadataOptionsRequest",
            "InstanceId",
        ][..],
        &[
            "requestParameters",
            "ModifyInstanceMetadataOptionsRequest",
            "instanceId",
        ][..],
        &["requestParameters", "instanceId"][..],
        &[
            "responseElements",
            "ModifyInstanceMetadataOptionsResponse",
            "instanceId",
        ][..],
    ];
    let raw = candidates.iter().find_map(|path| at(detail, path));
    let instance_id = match raw {
        Some(Value::String(s)) if is_instance_id(s) => s.clone(),
        Some(v) => {
            return Err(malformed(format!(
                "InstanceId {} is not an instance id",
                clean(&v.to_string(), 64)
            )))
        }
        None => return Err(malformed("requestParameters names no InstanceId".into())),
    };
    Ok(GuardEvent::Instances {
        ctx,
        trigger: Trigger::MetadataChange,
        instances: vec![Observed {
            instance_id,
            ..Observed::default()
        }],
        unreadable: Vec::new(),
    })
}

/// What a `ModifyInstanceMetadataDefaults` call asked for. CloudTrail
/// writes EC2's newer requests in PascalCase inside a `...Request` object
/// (as for `ModifyInstanceMetadataOptions`); the flat camelCase form is read
/// too. Fields it does not name stay `None`: the handler reads the current
/// defaults from EC2 either way.
fn defaults_change(detail: &Value) -> DefaultsChange {
    let params = detail.get("requestParameters");
    let inner = params.and_then(|p| p.get("ModifyInstanceMetadataDefaultsRequest"));
    let field = |pascal: &str, camel: &str| {
        [inner, params]
            .into_iter()
            .flatten()
            .find_map(|obj| obj.get(pascal).or_else(|| obj.get(camel)))
    };
    let word_at = |pascal: &str, camel: &str| {
        field(pascal, camel)
            .and_then(Value::as_str)
            .map(|s| clean(s, 32).to_ascii_lowercase())
    };
    DefaultsChange {
        http_tokens: word_at("HttpTokens", "httpTokens"),
        http_tokens_enforced: word_at("HttpTokensEnforced", "httpTokensEnforced"),
        http_endpoint: word_at("HttpEndpoint", "httpEndpoint"),
        http_put_response_hop_limit: field("HttpPutResponseHopLimit", "httpPutResponseHopLimit")
            .and_then(hop_limit),
    }
}

fn ignored(reason: String) -> GuardEvent {
    GuardEvent::Ignored { reason }
}

/// One `instancesSet.items[]` entry. Its `metadataOptions` and `tagSet` are
/// the effective values at launch (unlike `requestParameters`).
fn launched_instance(item: &Value) -> Result<Observed, String> {
    if !item.is_object() {
        return Err(format!("item is {}, not an object", kind(item)));
    }
    let id = match item.get("instanceId") {
        Some(Value::String(s)) if is_instance_id(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(format!(
                "instanceId {:?} is not an instance id",
                clean(s, 64)
            ))
        }
        Some(v) => return Err(format!("instanceId is {}, not a string", kind(v))),
        None => return Err("no instanceId".into()),
    };
    let mo = item.get("metadataOptions");
    let options = MetadataOptions {
        http_tokens: mo.and_then(|m| word(m, "httpTokens")),
        http_endpoint: mo.and_then(|m| word(m, "httpEndpoint")),
        http_put_response_hop_limit: mo
            .and_then(|m| m.get("httpPutResponseHopLimit"))
            .and_then(hop_limit),
        http_protocol_ipv6: mo.and_then(|m| word(m, "httpProtocolIpv6")),
        instance_metadata_tags: mo.and_then(|m| word(m, "instanceMetadataTags")),
    };
    let tags = item.get("tagSet").map(|ts| {
        ts.get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|t| {
                        Some((
                            clean(t.get("key")?.as_str()?, 128),
                            clean(t.get("value")?.as_str().unwrap_or(""), MAX_TEXT),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    Ok(Observed {
        instance_id: id,
        image_id: text(item, &["imageId"]).filter(|s| is_image_id(s)),
        state: text(item, &["instanceState", "name"]),
        options,
        tags,
    })
}

fn dedup_by_id(instances: &mut Vec<Observed>) {
    let mut seen = std::collections::HashSet::new();
    instances.retain(|o| seen.insert(o.instance_id.clone()));
}

/// Hop limits arrive as numbers, or as strings from some serializers.
fn hop_limit(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=64).contains(n))
}

fn word(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| clean(s, 32).to_ascii_lowercase())
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

/// A non-empty string at `path`, cleaned and capped.
fn text(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path)
        .and_then(Value::as_str)
        .map(|s| clean(s, MAX_TEXT))
        .filter(|s| !s.is_empty())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn console_launch_reads_effective_options_and_principal() {
        let GuardEvent::Instances {
            ctx,
            trigger,
            instances,
            unreadable,
        } = parse(&fixture("run-instances-console.json")).unwrap()
        else {
            panic!("expected instances")
        };
        assert_eq!(trigger, Trigger::Launch);
        assert!(unreadable.is_empty());
        assert_eq!(ctx.region, "us-east-1");
        assert_eq!(ctx.account.as_deref(), Some("111122223333"));
        assert_eq!(
            ctx.principal.arn.as_deref(),
            Some("arn:aws:iam::111122223333:user/alice")
        );
        assert_eq!(instances.len(), 1);
        let i = &instances[0];
        assert_eq!(i.instance_id, "i-0a1b2c3d4e5f60718");
        assert_eq!(i.options.http_tokens.as_deref(), Some("optional"));
        assert_eq!(i.options.http_put_response_hop_limit, Some(1));
        assert!(i.options.is_complete());
        assert_eq!(i.tag("Name"), Some("web-1"));
    }

    #[test]
    fn every_instance_of_a_multi_instance_launch_is_read() {
        let GuardEvent::Instances { instances, .. } =
            parse(&fixture("run-instances-cli-multi.json")).unwrap()
        else {
            panic!("expected instances")
        };
        let ids: Vec<_> = instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "i-0aaaaaaaaaaaaaaa1",
                "i-0aaaaaaaaaaaaaaa2",
                "i-0aaaaaaaaaaaaaaa3"
            ]
        );
    }

    #[test]
    fn auto_scaling_launch_names_the_service() {
        let GuardEvent::Instances { ctx, .. } =
            parse(&fixture("run-instances-autoscaling.json")).unwrap()
        else {
            panic!("expected instances")
        };
        assert_eq!(
            ctx.principal.invoked_by.as_deref(),
            Some("autoscaling.amazonaws.com")
        );
        assert!(ctx.principal.role_arn.as_deref().unwrap().ends_with(
            "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
        ));
    }

    #[test]
    fn failed_launch_is_a_failed_call() {
        let GuardEvent::FailedCall { error_code, .. } =
            parse(&fixture("run-instances-failed.json")).unwrap()
        else {
            panic!("expected failed call")
        };
        assert_eq!(error_code, "Client.UnauthorizedOperation");
    }

    #[test]
    fn metadata_revert_names_its_instance() {
        let GuardEvent::Instances {
            trigger,
            instances,
            ctx,
            ..
        } = parse(&fixture("modify-metadata-options-revert.json")).unwrap()
        else {
            panic!("expected instances")
        };
        assert_eq!(trigger, Trigger::MetadataChange);
        assert_eq!(ctx.region, "eu-west-1");
        assert_eq!(instances[0].instance_id, "i-0fedcba9876543210");
        assert!(!instances[0].options.is_complete());
    }

    #[test]
    fn unrelated_events_are_ignored_with_a_reason() {
        for f in ["unrelated-create-tags.json"] {
            match parse(&fixture(f)).unwrap() {
                GuardEvent::Ignored { reason } => assert!(!reason.is_empty()),
                other => panic!("{f}: expected ignore, got {other:?}"),
            }
        }
        assert!(matches!(
            parse(&json!({})).unwrap(),
            GuardEvent::Ignored { .. }
        ));
        assert!(matches!(
            parse(&json!("x")).unwrap(),
            GuardEvent::Ignored { .. }
        ));
    }

    #[test]
    fn a_scheduled_event_asks_for_a_sweep_of_its_region_and_account() {
        let GuardEvent::Sweep { ctx } = parse(&fixture("scheduled-event.json")).unwrap() else {
            panic!("expected a sweep")
        };
        assert_eq!(ctx.event_name, SWEEP);
        assert_eq!(ctx.region, "us-east-1");
        assert_eq!(ctx.account.as_deref(), Some("111122223333"));
        assert_eq!(
            ctx.event_id.as_deref(),
            Some("89d1a02d-5ec7-412e-82f5-13505f849b41")
        );
        // A region that is not one is dropped, not trusted.
        let mut ev = fixture("scheduled-event.json");
        ev["region"] = json!("../etc");
        let GuardEvent::Sweep { ctx } = parse(&ev).unwrap() else {
            panic!("expected a sweep")
        };
        assert_eq!(ctx.region, "");
    }

    #[test]
    fn a_defaults_change_reads_what_was_asked_in_either_shape() {
        let GuardEvent::DefaultsChanged { ctx, change } =
            parse(&fixture("modify-metadata-defaults-weaken.json")).unwrap()
        else {
            panic!("expected a defaults change")
        };
        assert_eq!(ctx.region, "us-east-1");
        assert_eq!(change.http_tokens.as_deref(), Some("optional"));
        assert_eq!(change.http_tokens_enforced.as_deref(), Some("disabled"));
        assert_eq!(change.weakenings().len(), 2);

        let mut flat = fixture("modify-metadata-defaults-weaken.json");
        flat["detail"]["requestParameters"] =
            json!({"httpTokens": "No-Preference", "httpPutResponseHopLimit": "2"});
        let GuardEvent::DefaultsChanged { change, .. } = parse(&flat).unwrap() else {
            panic!("expected a defaults change")
        };
        assert_eq!(change.http_tokens.as_deref(), Some("no-preference"));
        assert_eq!(change.http_put_response_hop_limit, Some(2));
        assert!(change.weakens_tokens());

        let mut strengthen = fixture("modify-metadata-defaults-weaken.json");
        strengthen["detail"]["requestParameters"] =
            json!({"ModifyInstanceMetadataDefaultsRequest": {"HttpTokens": "required"}});
        let GuardEvent::DefaultsChanged { change, .. } = parse(&strengthen).unwrap() else {
            panic!("expected a defaults change")
        };
        assert!(change.weakenings().is_empty() && !change.weakens_tokens());
    }

    #[test]
    fn loose_but_real_identity_shapes_are_accepted() {
        let mut ev = fixture("run-instances-console.json");
        ev["detail"]["userIdentity"] = json!({
            "type": "AssumedRole",
            "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {"attributes": {}}}
        });
        ev["detail"].as_object_mut().unwrap().remove("userAgent");
        let GuardEvent::Instances { ctx, .. } = parse(&ev).unwrap() else {
            panic!()
        };
        assert_eq!(ctx.principal.display(), "unknown");
        assert!(ctx.user_agent.is_none());
    }

    #[test]
    fn bad_items_are_named_and_good_ones_kept() {
        let mut ev = fixture("run-instances-cli-multi.json");
        let items = ev["detail"]["responseElements"]["instancesSet"]["items"]
            .as_array_mut()
            .unwrap();
        items[1]["instanceId"] = json!(42);
        items.push(json!("not an object"));
        let GuardEvent::Instances {
            instances,
            unreadable,
            ..
        } = parse(&ev).unwrap()
        else {
            panic!()
        };
        assert_eq!(instances.len(), 2);
        assert_eq!(unreadable.len(), 2);
        assert!(
            unreadable[0].starts_with("instancesSet.items[1]"),
            "{unreadable:?}"
        );
        assert!(
            unreadable[1].starts_with("instancesSet.items[3]"),
            "{unreadable:?}"
        );
    }

    #[test]
    fn unreadable_ec2_call_events_are_errors_not_ignores() {
        let mut ev = fixture("run-instances-console.json");
        ev["detail"]["responseElements"] = Value::Null;
        assert!(parse(&ev).is_err());
        let mut ev = fixture("run-instances-console.json");
        ev["detail"] = json!("a string");
        assert!(parse(&ev).is_err());
        let mut ev = fixture("run-instances-console.json");
        ev["detail"]["awsRegion"] = json!("../../evil");
        assert!(parse(&ev).is_err());
    }

    #[test]
    fn event_text_is_cleaned_and_capped() {
        let mut ev = fixture("run-instances-console.json");
        ev["detail"]["userAgent"] = json!(format!("evil\r\nSubject: x{}", "A".repeat(100_000)));
        let GuardEvent::Instances { ctx, .. } = parse(&ev).unwrap() else {
            panic!()
        };
        let ua = ctx.user_agent.unwrap();
        assert!(!ua.chars().any(char::is_control));
        assert!(ua.chars().count() <= MAX_TEXT + 1);
    }
}

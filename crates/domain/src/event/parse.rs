//! The CloudTrail and EventBridge reader: the envelope checked, the call
//! handed to its own parser (`launch`, `state_change`, `defaults`,
//! `source_change`), and the field readers they share.

use super::*;

/// The envelope's `detail`, checked present but not copied: deserializing
/// `EventBridgeEvent<Value>` from a `&Value` would clone the whole event, the
/// largest single cost of parsing one. The detail is read in place instead.
#[derive(Debug)]
pub(super) struct Unread;

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
    let autoscaling = envelope.source == "aws.autoscaling";
    if envelope.source != "aws.ec2" && !autoscaling {
        return Ok(ignored(format!(
            "source {:?} is not aws.ec2 or aws.autoscaling",
            clean(&envelope.source, 64)
        )));
    }
    let detail = payload.get("detail").unwrap_or(&Value::Null);
    let envelope_id = envelope.id.as_deref().map(|s| clean(s, 64));
    if envelope.detail_type == STATE_CHANGE_DETAIL_TYPE && !autoscaling {
        return state_change(&envelope, detail, envelope_id);
    }
    if envelope.detail_type != CLOUDTRAIL_DETAIL_TYPE {
        return Ok(ignored(format!(
            "detail-type {:?} is not {CLOUDTRAIL_DETAIL_TYPE:?} or {STATE_CHANGE_DETAIL_TYPE:?}",
            clean(&envelope.detail_type, 64)
        )));
    }
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
    let ours: &[&str] = if autoscaling {
        &GROUP_EVENTS
    } else {
        &[
            RUN_INSTANCES,
            CREATE_FLEET,
            MODIFY_METADATA_OPTIONS,
            MODIFY_METADATA_DEFAULTS,
            CREATE_LAUNCH_TEMPLATE,
            CREATE_LAUNCH_TEMPLATE_VERSION,
            MODIFY_LAUNCH_TEMPLATE,
        ]
    };
    if !ours.contains(&event_name) {
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
        state: None,
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

    if TEMPLATE_EVENTS.contains(&event_name) {
        return template_change(detail, ctx, &malformed);
    }
    if GROUP_EVENTS.contains(&event_name) {
        return group_change(detail, ctx, &malformed);
    }
    if event_name == RUN_INSTANCES {
        return run_instances(detail, ctx, &malformed);
    }
    if event_name == CREATE_FLEET {
        return create_fleet(detail, ctx, &malformed);
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
    // The response carries the options the change left (`state: pending`
    // while they are applied): when they are complete, the change is
    // decided on them, with no call, as a launch is.
    let response = at(
        detail,
        &[
            "responseElements",
            "ModifyInstanceMetadataOptionsResponse",
            "instanceMetadataOptions",
        ],
    );
    Ok(GuardEvent::Instances {
        ctx,
        trigger: Trigger::MetadataChange,
        instances: vec![Observed {
            instance_id,
            options: response.map(metadata_options).unwrap_or_default(),
            ..Observed::default()
        }],
        unreadable: Vec::new(),
    })
}

/// A CloudTrail `items` list. Real records sometimes hold a single item as
/// the object itself rather than a one-element list: both are read.
pub(super) fn items_of(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(_) => Some(vec![v]),
        _ => None,
    }
}

pub(super) fn ignored(reason: String) -> GuardEvent {
    GuardEvent::Ignored { reason }
}

/// One `instancesSet.items[]` entry. Its `metadataOptions` and `tagSet` are
/// the effective values at launch (unlike `requestParameters`).
pub(super) fn launched_instance(item: &Value) -> Result<Observed, String> {
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
    let options = item
        .get("metadataOptions")
        .map(metadata_options)
        .unwrap_or_default();
    let tags = item.get("tagSet").map(|ts| {
        ts.get("items")
            .and_then(items_of)
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
        launch_time: item.get("launchTime").and_then(epoch_secs),
        instance_profile: text(item, &["iamInstanceProfile", "arn"])
            .filter(|a| a.starts_with("arn:") && a.contains(":instance-profile/")),
        // As EC2 writes an instance's `operator`; the instance is looked at
        // again before anything is written, and EC2's answer decides.
        operator: item.get("operator").map(|o| crate::launcher::Operator {
            managed: o.get("managed").and_then(Value::as_bool).unwrap_or(false),
            principal: text(o, &["principal"]).map(|p| clean(&p, 128)),
        }),
        addresses: Default::default(),
        standing: Standing::default(),
    })
}

/// Metadata options as a request writes them: PascalCase (EC2's
/// `*Request` blocks), or camelCase.
pub(super) fn pascal_or_camel_options(m: &Value) -> MetadataOptions {
    let pick = |pascal: &str, camel: &str| word(m, pascal).or_else(|| word(m, camel));
    MetadataOptions {
        http_tokens: pick("HttpTokens", "httpTokens"),
        http_endpoint: pick("HttpEndpoint", "httpEndpoint"),
        http_put_response_hop_limit: m
            .get("HttpPutResponseHopLimit")
            .or_else(|| m.get("httpPutResponseHopLimit"))
            .and_then(hop_limit),
        http_protocol_ipv6: pick("HttpProtocolIpv6", "httpProtocolIpv6"),
        instance_metadata_tags: pick("InstanceMetadataTags", "instanceMetadataTags"),
    }
}

/// An instance's options as CloudTrail writes them (camelCase).
pub(super) fn metadata_options(m: &Value) -> MetadataOptions {
    MetadataOptions {
        http_tokens: word(m, "httpTokens"),
        http_endpoint: word(m, "httpEndpoint"),
        http_put_response_hop_limit: m.get("httpPutResponseHopLimit").and_then(hop_limit),
        http_protocol_ipv6: word(m, "httpProtocolIpv6"),
        instance_metadata_tags: word(m, "instanceMetadataTags"),
    }
}

pub(super) fn dedup_by_id(instances: &mut Vec<Observed>) {
    let mut seen = std::collections::HashSet::new();
    instances.retain(|o| seen.insert(o.instance_id.clone()));
}

/// CloudTrail writes `launchTime` as epoch milliseconds.
pub(super) fn epoch_secs(v: &Value) -> Option<u64> {
    let ms = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(ms / 1000)
}

/// Hop limits arrive as numbers, or as strings from some serializers.
pub(super) fn hop_limit(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=64).contains(n))
}

pub(super) fn word(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| clean(s, 32).to_ascii_lowercase())
}

pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

/// A non-empty string at `path`, cleaned and capped.
pub(super) fn text(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path)
        .and_then(Value::as_str)
        .map(|s| clean(s, MAX_TEXT))
        .filter(|s| !s.is_empty())
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

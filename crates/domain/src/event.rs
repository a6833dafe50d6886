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

pub use crate::validate::is_launch_template_id;
use crate::validate::{clean, is_account_id, is_image_id, is_instance_id, is_region};

pub const RUN_INSTANCES: &str = "RunInstances";
pub const MODIFY_METADATA_OPTIONS: &str = "ModifyInstanceMetadataOptions";
pub const MODIFY_METADATA_DEFAULTS: &str = "ModifyInstanceMetadataDefaults";
pub const CREATE_FLEET: &str = "CreateFleet";
/// Sources: launch templates and Auto Scaling groups.
pub const CREATE_LAUNCH_TEMPLATE: &str = "CreateLaunchTemplate";
pub const CREATE_LAUNCH_TEMPLATE_VERSION: &str = "CreateLaunchTemplateVersion";
pub const MODIFY_LAUNCH_TEMPLATE: &str = "ModifyLaunchTemplate";
pub const CREATE_AUTO_SCALING_GROUP: &str = "CreateAutoScalingGroup";
pub const UPDATE_AUTO_SCALING_GROUP: &str = "UpdateAutoScalingGroup";
/// The events about sources, by the source that sends them.
pub const TEMPLATE_EVENTS: [&str; 3] = [
    CREATE_LAUNCH_TEMPLATE,
    CREATE_LAUNCH_TEMPLATE_VERSION,
    MODIFY_LAUNCH_TEMPLATE,
];
pub const GROUP_EVENTS: [&str; 2] = [CREATE_AUTO_SCALING_GROUP, UPDATE_AUTO_SCALING_GROUP];
/// The event name an EC2 state-change notification's report carries.
pub const STATE_CHANGE: &str = "InstanceStateChange";
const STATE_CHANGE_DETAIL_TYPE: &str = "EC2 Instance State-change Notification";
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// When it was launched, in seconds since the epoch, when known.
    pub launch_time: Option<u64>,
    /// Its instance profile's ARN, when it has one and the source said.
    pub instance_profile: Option<String>,
    /// The principal exemption the guard recorded when it was launched (the
    /// glob that matched), read from the guard's memory: only the guard can
    /// write one, unlike a tag.
    pub recorded_exemption: Option<String>,
    /// That record is a launch event's claim CloudTrail has not confirmed
    /// yet (`confirm`): honoured for the window, and said so.
    pub recorded_unconfirmed: bool,
    /// A person's break-glass grant in force for it (its own, or its launch
    /// template's), read from the guard's memory.
    pub break_glass: Option<crate::break_glass::Grant>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Trigger {
    /// A CloudTrail launch (`RunInstances`, `CreateFleet`), which names who
    /// launched.
    Launch,
    MetadataChange,
    /// EC2's `pending` state-change notification: seconds after a launch,
    /// with no trail needed, but naming no principal.
    StateChange,
    /// Found by a sweep, not named by an event.
    Sweep,
}

/// How to find the instances of a launch whose event does not list them
/// (CloudTrail cut `responseElements` as too large): by its reservation,
/// else by the client token the SDKs and the CLI send with every launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// How many instances the launch asked for at least
    /// (`requestParameters.instancesSet.items[].minCount`, summed): a
    /// successful launch started at least these, so a lookup that finds
    /// fewer has not seen them all yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// Why the event did not list them.
    pub why: String,
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
    /// A launch whose event does not list its instances: they are looked
    /// up (`lookup`) and then handled like any launch's.
    Unlisted { ctx: EventContext, lookup: Lookup },
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
    /// A launch template or an Auto Scaling group was created or changed:
    /// the source is decided, and acted on as the mode says.
    SourceChanged {
        ctx: EventContext,
        change: SourceChange,
    },
    /// Not ours to act on.
    Ignored { reason: String },
}

/// What a source event names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceChange {
    /// A launch template created, given a version, or a new default.
    Template {
        id: Option<String>,
        name: Option<String>,
        /// The metadata options the request set, when it set data at all
        /// (`Some(None)`: data without options). What EC2 stores is read
        /// before acting; this serves the offline check.
        requested: Option<Option<MetadataOptions>>,
    },
    /// An Auto Scaling group created or updated.
    Group {
        name: String,
        /// The templates the request named (offline check only).
        templates: Vec<crate::launch_template::TemplateRef>,
        launch_configuration: Option<String>,
    },
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

/// `RunInstances`: every instance of `responseElements.instancesSet.items`,
/// or, when CloudTrail cut the response (`omitted`, or no `instancesSet`),
/// the way to find them.
fn run_instances(
    detail: &Value,
    ctx: EventContext,
    malformed: &dyn Fn(String) -> EventError,
) -> Result<GuardEvent, EventError> {
    let response = detail.get("responseElements").filter(|r| !r.is_null());
    let items = response
        .and_then(|r| r.get("instancesSet"))
        .and_then(|s| s.get("items"));
    let Some(items) = items else {
        // Not listed: CloudTrail cuts a response over its size limit (a
        // launch of a few dozen instances) and marks it `omitted`.
        let omitted = response
            .and_then(|r| r.get("omitted"))
            .is_some_and(|o| o == &Value::Bool(true));
        let why = if omitted {
            "CloudTrail omitted responseElements (over its size limit)".to_string()
        } else if response.is_none() {
            "the event has no responseElements".to_string()
        } else {
            "responseElements has no instancesSet".to_string()
        };
        let lookup = Lookup {
            reservation_id: response
                .and_then(|r| r.get("reservationId"))
                .and_then(Value::as_str)
                .filter(|r| is_reservation_id(r))
                .map(str::to_string),
            client_token: text(detail, &["requestParameters", "clientToken"])
                .filter(|t| is_client_token(t)),
            min_count: min_count(detail),
            why,
        };
        if lookup.reservation_id.is_none() && lookup.client_token.is_none() {
            return Err(malformed(format!(
                "{}, and it names neither a reservation id nor a client token to find the instances by",
                lookup.why
            )));
        }
        return Ok(GuardEvent::Unlisted { ctx, lookup });
    };
    let Some(items) = items_of(items) else {
        return Err(malformed(format!(
            "responseElements.instancesSet.items is {}, not a list",
            kind(items)
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
    Ok(GuardEvent::Instances {
        ctx,
        trigger: Trigger::Launch,
        instances,
        unreadable,
    })
}

/// `CreateFleet`: an `instant` fleet (Karpenter's kind) launches at once
/// and lists its instances in `fleetInstanceSet` (each set's `instanceIds`,
/// a single one sometimes as an object rather than a list: every instance id
/// under the set is read). Other fleets (`maintain`, the API's default when
/// the request names no `Type`, and `request`) launch later, and no event
/// lists those instances here: ignored with the reason. Whatever the type,
/// instances the response does list are decided.
fn create_fleet(
    detail: &Value,
    ctx: EventContext,
    malformed: &dyn Fn(String) -> EventError,
) -> Result<GuardEvent, EventError> {
    let request = detail
        .get("requestParameters")
        .and_then(|p| p.get("CreateFleetRequest").or(Some(p)));
    let fleet_type = request
        .and_then(|r| r.get("Type").or_else(|| r.get("type")))
        .and_then(Value::as_str)
        .map(|t| clean(t, 16).to_ascii_lowercase());
    let response = detail
        .get("responseElements")
        .filter(|r| !r.is_null())
        .map(|r| r.get("CreateFleetResponse").unwrap_or(r));
    let sets = response.and_then(|r| r.get("fleetInstanceSet"));
    let mut ids = Vec::new();
    if let Some(sets) = sets {
        collect_instance_ids(sets, &mut ids);
    }
    if ids.is_empty() && fleet_type.as_deref() != Some("instant") {
        return Ok(ignored(match fleet_type {
            Some(t) => format!(
                "a CreateFleet of type {t:?} launches its instances later, with no list in this event: the state-change trigger and the sweep cover them"
            ),
            None => "a CreateFleet that names no Type is a maintain fleet (the API's default): it launches its instances later, with no list in this event; the state-change trigger and the sweep cover them".into(),
        }));
    }
    if sets.is_none() {
        if response.and_then(|r| r.get("errorSet")).is_some() {
            return Ok(ignored(
                "the instant fleet launched no instance (only errors)".into(),
            ));
        }
        return Err(malformed(
            "the instant fleet's response lists no fleetInstanceSet (cut by CloudTrail?): the state-change trigger and the sweep cover its instances".into(),
        ));
    }
    let mut instances: Vec<Observed> = ids
        .into_iter()
        .map(|instance_id| Observed {
            instance_id,
            ..Observed::default()
        })
        .collect();
    dedup_by_id(&mut instances);
    if instances.is_empty() {
        return Ok(ignored("the instant fleet launched no instance".into()));
    }
    Ok(GuardEvent::Instances {
        ctx,
        trigger: Trigger::Launch,
        instances,
        unreadable: Vec::new(),
    })
}

/// Every instance id in `v`, at any depth (bounded, as hostile input can
/// nest deeply).
fn collect_instance_ids(v: &Value, out: &mut Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>, depth: usize) {
        if depth > 8 || out.len() >= 10_000 {
            return;
        }
        match v {
            Value::String(s) if is_instance_id(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out, depth + 1)),
            Value::Object(m) => m.values().for_each(|i| walk(i, out, depth + 1)),
            _ => {}
        }
    }
    walk(v, out, 0);
}

/// EC2's `pending` notification: an instance is starting (a launch, or a
/// stopped instance started again). It names no principal.
fn state_change(
    envelope: &EventBridgeEvent<Unread>,
    detail: &Value,
    event_id: Option<String>,
) -> Result<GuardEvent, EventError> {
    let malformed = |reason: String| EventError::Malformed {
        event_name: STATE_CHANGE.into(),
        event_id: event_id.clone().unwrap_or_else(|| "without id".into()),
        reason,
    };
    let state = text(detail, &["state"]).unwrap_or_default();
    if state != "pending" {
        return Ok(ignored(format!(
            "an instance entering state {:?}: only pending starts one",
            clean(&state, 32)
        )));
    }
    let instance_id = match detail.get("instance-id") {
        Some(Value::String(s)) if is_instance_id(s) => s.clone(),
        Some(v) => {
            return Err(malformed(format!(
                "instance-id {} is not an instance id",
                clean(&v.to_string(), 64)
            )))
        }
        None => return Err(malformed("no instance-id".into())),
    };
    let region = envelope
        .region
        .clone()
        .filter(|r| is_region(r))
        .ok_or_else(|| malformed("the notification names no region".into()))?;
    Ok(GuardEvent::Instances {
        ctx: EventContext {
            event_name: STATE_CHANGE.into(),
            event_id,
            event_time: envelope.time.map(|t| t.to_rfc3339()),
            account: envelope.account.clone().filter(|a| is_account_id(a)),
            region,
            ..EventContext::default()
        },
        trigger: Trigger::StateChange,
        instances: vec![Observed {
            instance_id,
            state: Some(state),
            ..Observed::default()
        }],
        unreadable: Vec::new(),
    })
}

/// The instances a launch asked for at least, when its request says.
fn min_count(detail: &Value) -> Option<u32> {
    let items = items_of(at(detail, &["requestParameters", "instancesSet", "items"])?)?;
    let counts: Vec<u32> = items
        .iter()
        .filter_map(|i| {
            let n = i.get("minCount")?;
            n.as_u64()
                .or_else(|| n.as_str()?.trim().parse().ok())
                .and_then(|n| u32::try_from(n).ok())
        })
        .collect();
    (!counts.is_empty()).then(|| counts.iter().fold(0u32, |a, n| a.saturating_add(*n)))
}

/// `r-` and 8 or 17 lowercase hex digits.
fn is_reservation_id(s: &str) -> bool {
    s.strip_prefix("r-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A client token as EC2 takes it: up to 64 ASCII characters.
fn is_client_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
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

/// A CloudTrail `items` list. Real records sometimes hold a single item as
/// the object itself rather than a one-element list: both are read.
fn items_of(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(_) => Some(vec![v]),
        _ => None,
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
        recorded_exemption: None,
        recorded_unconfirmed: false,
        break_glass: None,
    })
}

/// A launch template event: the template it names, and what the request
/// asked for. EC2 writes the request in PascalCase inside
/// `<Action>Request`, and the response in camelCase inside
/// `<Action>Response`; either may name the template.
fn template_change(
    detail: &Value,
    ctx: EventContext,
    malformed: &dyn Fn(String) -> EventError,
) -> Result<GuardEvent, EventError> {
    let name = ctx.event_name.as_str();
    let request = at(detail, &["requestParameters", &format!("{name}Request")])
        .or_else(|| at(detail, &["requestParameters"]))
        .unwrap_or(&Value::Null);
    let response =
        at(detail, &["responseElements", &format!("{name}Response")]).unwrap_or(&Value::Null);
    let answered = response
        .get("launchTemplate")
        .or_else(|| response.get("launchTemplateVersion"))
        .unwrap_or(&Value::Null);
    let id = text(answered, &["launchTemplateId"])
        .or_else(|| text(request, &["LaunchTemplateId"]))
        .or_else(|| text(request, &["launchTemplateId"]));
    let template_name = text(answered, &["launchTemplateName"])
        .or_else(|| text(request, &["LaunchTemplateName"]))
        .or_else(|| text(request, &["launchTemplateName"]));
    if let Some(bad) = id.as_deref().filter(|i| !is_launch_template_id(i)) {
        return Err(malformed(format!(
            "launch template id {:?} is not one",
            clean(bad, 64)
        )));
    }
    if id.is_none() && template_name.is_none() {
        return Err(malformed("names no launch template".into()));
    }
    let data = request
        .get("LaunchTemplateData")
        .or_else(|| request.get("launchTemplateData"));
    let requested = data.map(|d| {
        d.get("MetadataOptions")
            .or_else(|| d.get("metadataOptions"))
            .map(pascal_or_camel_options)
    });
    Ok(GuardEvent::SourceChanged {
        ctx,
        change: SourceChange::Template {
            id,
            name: template_name,
            requested,
        },
    })
}

/// An Auto Scaling group event: the group, and what the request named
/// (camelCase: Auto Scaling's CloudTrail records are).
fn group_change(
    detail: &Value,
    ctx: EventContext,
    malformed: &dyn Fn(String) -> EventError,
) -> Result<GuardEvent, EventError> {
    let request = at(detail, &["requestParameters"]).unwrap_or(&Value::Null);
    let Some(name) = text(request, &["autoScalingGroupName"]) else {
        return Err(malformed("names no autoScalingGroupName".into()));
    };
    let spec = |v: &Value| crate::launch_template::TemplateRef {
        id: text(v, &["launchTemplateId"]),
        name: text(v, &["launchTemplateName"]),
        version: crate::launch_template::VersionRef::parse(
            at(v, &["version"]).and_then(Value::as_str),
        ),
    };
    let mut templates = Vec::new();
    if let Some(lt) = request.get("launchTemplate") {
        templates.push(spec(lt));
    }
    if let Some(mixed) = at(request, &["mixedInstancesPolicy", "launchTemplate"]) {
        if let Some(lt) = mixed.get("launchTemplateSpecification") {
            templates.push(spec(lt));
        }
        for o in mixed
            .get("overrides")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(lt) = o.get("launchTemplateSpecification") {
                templates.push(spec(lt));
            }
        }
    }
    Ok(GuardEvent::SourceChanged {
        ctx,
        change: SourceChange::Group {
            name,
            templates,
            launch_configuration: text(request, &["launchConfigurationName"]),
        },
    })
}

/// Metadata options as a request writes them: PascalCase (EC2's
/// `*Request` blocks), or camelCase.
fn pascal_or_camel_options(m: &Value) -> MetadataOptions {
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
fn metadata_options(m: &Value) -> MetadataOptions {
    MetadataOptions {
        http_tokens: word(m, "httpTokens"),
        http_endpoint: word(m, "httpEndpoint"),
        http_put_response_hop_limit: m.get("httpPutResponseHopLimit").and_then(hop_limit),
        http_protocol_ipv6: word(m, "httpProtocolIpv6"),
        instance_metadata_tags: word(m, "instanceMetadataTags"),
    }
}

fn dedup_by_id(instances: &mut Vec<Observed>) {
    let mut seen = std::collections::HashSet::new();
    instances.retain(|o| seen.insert(o.instance_id.clone()));
}

/// CloudTrail writes `launchTime` as epoch milliseconds.
fn epoch_secs(v: &Value) -> Option<u64> {
    let ms = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(ms / 1000)
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
        // The response carries the options the change left.
        assert!(instances[0].options.is_complete());
        assert_eq!(
            instances[0].options.http_tokens.as_deref(),
            Some("optional")
        );
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

        // Clearing the enforcement switch switches it off.
        let mut cleared = fixture("modify-metadata-defaults-weaken.json");
        cleared["detail"]["requestParameters"] = json!({
            "ModifyInstanceMetadataDefaultsRequest": {"HttpTokensEnforced": "no-preference"}
        });
        let GuardEvent::DefaultsChanged { change, .. } = parse(&cleared).unwrap() else {
            panic!("expected a defaults change")
        };
        let w = change.weakenings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("HttpTokensEnforced cleared"), "{w:?}");
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
    fn a_launch_whose_response_was_cut_is_looked_up_not_dropped() {
        let GuardEvent::Unlisted { ctx, lookup } =
            parse(&fixture("run-instances-truncated.json")).unwrap()
        else {
            panic!("expected a lookup")
        };
        assert_eq!(
            ctx.event_id.as_deref(),
            Some("a1b2c3d4-0000-4000-8000-000000000010")
        );
        assert_eq!(lookup.reservation_id, None);
        assert_eq!(
            lookup.client_token.as_deref(),
            Some("c0ffee00-1234-4abc-9def-0123456789ab")
        );
        assert_eq!(lookup.min_count, Some(40));
        assert!(lookup.why.contains("omitted"), "{}", lookup.why);

        // A response with its reservation id but no list: found by it.
        let mut ev = fixture("run-instances-truncated.json");
        ev["detail"]["responseElements"] = json!({"reservationId": "r-0123456789abcdef0"});
        let GuardEvent::Unlisted { lookup, .. } = parse(&ev).unwrap() else {
            panic!("expected a lookup")
        };
        assert_eq!(
            lookup.reservation_id.as_deref(),
            Some("r-0123456789abcdef0")
        );
        assert!(lookup.why.contains("no instancesSet"));

        // Neither: an error naming the event, kept for a person.
        let mut ev = fixture("run-instances-truncated.json");
        ev["detail"]["requestParameters"]
            .as_object_mut()
            .unwrap()
            .remove("clientToken");
        let Err(EventError::Malformed {
            event_id, reason, ..
        }) = parse(&ev)
        else {
            panic!("expected an error")
        };
        assert_eq!(event_id, "a1b2c3d4-0000-4000-8000-000000000010");
        assert!(
            reason.contains("neither a reservation id nor a client token"),
            "{reason}"
        );
    }

    #[test]
    fn an_instant_fleet_names_its_instances_in_either_shape() {
        let GuardEvent::Instances {
            ctx,
            trigger,
            instances,
            ..
        } = parse(&fixture("create-fleet.json")).unwrap()
        else {
            panic!("expected instances")
        };
        assert_eq!(
            (ctx.event_name.as_str(), trigger),
            (CREATE_FLEET, Trigger::Launch)
        );
        assert_eq!(
            ctx.principal.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/KarpenterControllerRole-prod")
        );
        let ids: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(ids, ["i-0c1d2e3f4a5b6c7d8"], "a set of one, as an object");

        let mut ev = fixture("create-fleet.json");
        ev["detail"]["responseElements"]["CreateFleetResponse"]["fleetInstanceSet"] = json!({
            "item": [
                {"instanceIds": {"item": ["i-0000000000000000a", "i-0000000000000000b"]}},
                {"instanceIds": {"item": "i-0000000000000000c"}},
                {"instanceIds": {"item": "i-0000000000000000a"}}
            ]
        });
        let GuardEvent::Instances { instances, .. } = parse(&ev).unwrap() else {
            panic!("expected instances")
        };
        let ids: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "i-0000000000000000a",
                "i-0000000000000000b",
                "i-0000000000000000c"
            ]
        );

        // A maintain fleet, named or by the API's default, lists nothing:
        // ignored with the reason, never failed as malformed.
        for ty in [Some("maintain"), None] {
            let mut ev = fixture("create-fleet.json");
            let req = &mut ev["detail"]["requestParameters"]["CreateFleetRequest"];
            match ty {
                Some(t) => req["Type"] = json!(t),
                None => {
                    req.as_object_mut().unwrap().remove("Type");
                }
            }
            ev["detail"]["responseElements"] =
                json!({"CreateFleetResponse": {"fleetId": "fleet-0123456789abcdef0"}});
            assert!(
                matches!(parse(&ev).unwrap(), GuardEvent::Ignored { reason } if reason.contains("maintain")),
                "{ty:?}"
            );
        }
        // Instances a response does list are decided, whatever the type.
        let mut ev = fixture("create-fleet.json");
        ev["detail"]["requestParameters"]["CreateFleetRequest"]
            .as_object_mut()
            .unwrap()
            .remove("Type");
        assert!(matches!(parse(&ev).unwrap(), GuardEvent::Instances { .. }));
    }

    #[test]
    fn an_items_list_of_one_may_be_the_object_itself() {
        let mut ev = fixture("run-instances-console.json");
        let set = &mut ev["detail"]["responseElements"]["instancesSet"];
        let first = set["items"][0].clone();
        set["items"] = first.clone();
        ev["detail"]["responseElements"]["instancesSet"]["items"]["tagSet"] =
            json!({"items": {"key": "team", "value": "web"}});
        ev["detail"]["requestParameters"]["instancesSet"] =
            json!({"items": {"imageId": "ami-0123456789abcdef0", "minCount": 1, "maxCount": 1}});
        let GuardEvent::Instances {
            instances,
            unreadable,
            ..
        } = parse(&ev).unwrap()
        else {
            panic!("expected instances")
        };
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(instances.len(), 1);
        assert_eq!(
            instances[0].instance_id,
            first["instanceId"].as_str().unwrap()
        );
        assert_eq!(instances[0].tag("team"), Some("web"));
        // And the truncated form reads its request's one item too.
        let mut ev = fixture("run-instances-truncated.json");
        ev["detail"]["requestParameters"]["instancesSet"] =
            json!({"items": {"imageId": "ami-0123456789abcdef0", "minCount": 3, "maxCount": 3}});
        let GuardEvent::Unlisted { lookup, .. } = parse(&ev).unwrap() else {
            panic!("expected a lookup")
        };
        assert_eq!(lookup.min_count, Some(3));
    }

    #[test]
    fn a_pending_state_change_names_its_instance_and_no_principal() {
        let GuardEvent::Instances {
            ctx,
            trigger,
            instances,
            ..
        } = parse(&fixture("state-change-pending.json")).unwrap()
        else {
            panic!("expected instances")
        };
        assert_eq!(trigger, Trigger::StateChange);
        assert_eq!(ctx.event_name, STATE_CHANGE);
        assert_eq!(
            (ctx.account.as_deref(), ctx.region.as_str()),
            (Some("111122223333"), "us-east-1")
        );
        assert_eq!(ctx.principal, Principal::default());
        assert_eq!(instances[0].instance_id, "i-0a1b2c3d4e5f60718");
        let mut ev = fixture("state-change-pending.json");
        ev["detail"]["state"] = json!("running");
        assert!(matches!(parse(&ev).unwrap(), GuardEvent::Ignored { .. }));
    }

    #[test]
    fn a_change_carries_the_options_it_left() {
        let GuardEvent::Instances { instances, .. } =
            parse(&fixture("modify-metadata-options-by-guard.json")).unwrap()
        else {
            panic!("expected instances")
        };
        let o = &instances[0].options;
        assert!(o.is_complete());
        assert_eq!(o.http_tokens.as_deref(), Some("required"));
        assert_eq!(o.http_put_response_hop_limit, Some(2));
    }

    #[test]
    fn unreadable_ec2_call_events_are_errors_not_ignores() {
        let mut ev = fixture("run-instances-console.json");
        ev["detail"]["responseElements"] = Value::Null;
        ev["detail"]["requestParameters"]
            .as_object_mut()
            .map(|p| p.remove("clientToken"));
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

#[cfg(test)]
mod source_event_tests {
    use super::*;
    use crate::source::{TemplateRef, VersionRef};

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn change(name: &str) -> (EventContext, SourceChange) {
        match parse(&fixture(name)).unwrap() {
            GuardEvent::SourceChanged { ctx, change } => (ctx, change),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn template_events_name_the_template_and_what_the_request_asked() {
        let (ctx, c) = change("create-launch-template.json");
        assert_eq!(ctx.event_name, "CreateLaunchTemplate");
        assert_eq!(ctx.account.as_deref(), Some("111122223333"));
        let SourceChange::Template {
            id,
            name,
            requested,
        } = c
        else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("lt-0a1b2c3d4e5f60718"));
        assert_eq!(name.as_deref(), Some("web"));
        let o = requested.unwrap().unwrap();
        assert_eq!(o.http_tokens.as_deref(), Some("optional"));
        assert_eq!(o.http_put_response_hop_limit, Some(2));

        // A new version from a source version: data without options.
        let (_, c) = change("create-launch-template-version.json");
        let SourceChange::Template { id, requested, .. } = c else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("lt-0a1b2c3d4e5f60718"));
        assert_eq!(requested, Some(None));

        let (_, c) = change("modify-launch-template.json");
        let SourceChange::Template { id, requested, .. } = c else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("lt-0a1b2c3d4e5f60718"));
        assert_eq!(requested, None);
    }

    #[test]
    fn group_events_name_every_template_a_group_may_launch_from() {
        let (ctx, c) = change("create-auto-scaling-group.json");
        assert_eq!(ctx.event_name, "CreateAutoScalingGroup");
        assert_eq!(
            c,
            SourceChange::Group {
                name: "web-asg".into(),
                templates: vec![TemplateRef {
                    id: Some("lt-0a1b2c3d4e5f60718".into()),
                    name: None,
                    version: VersionRef::Default,
                }],
                launch_configuration: None,
            }
        );
        let (_, c) = change("update-auto-scaling-group.json");
        let SourceChange::Group {
            name, templates, ..
        } = c
        else {
            panic!()
        };
        assert_eq!(name, "batch-asg");
        assert_eq!(
            templates,
            vec![
                TemplateRef {
                    id: None,
                    name: Some("web".into()),
                    version: VersionRef::Latest
                },
                TemplateRef {
                    id: Some("lt-0f0e0d0c0b0a09080".into()),
                    name: None,
                    version: VersionRef::Number(4),
                },
            ]
        );
    }

    #[test]
    fn a_source_event_that_names_nothing_is_an_error_and_others_are_ignored() {
        let mut e = fixture("create-launch-template-version.json");
        e["detail"]["requestParameters"] = serde_json::json!({});
        e["detail"]["responseElements"] = Value::Null;
        assert!(parse(&e).is_err());
        let mut e = fixture("create-launch-template.json");
        e["detail"]["responseElements"]["CreateLaunchTemplateResponse"]["launchTemplate"]
            ["launchTemplateId"] = "lt-nope".into();
        assert!(parse(&e).is_err());
        let mut e = fixture("create-auto-scaling-group.json");
        e["detail"]["requestParameters"] = serde_json::json!({});
        assert!(parse(&e).is_err());
        // Another Auto Scaling call is not ours.
        let mut e = fixture("create-auto-scaling-group.json");
        e["detail"]["eventName"] = "SetDesiredCapacity".into();
        assert!(matches!(parse(&e).unwrap(), GuardEvent::Ignored { .. }));
        // A template event from aws.autoscaling is not one.
        let mut e = fixture("create-launch-template.json");
        e["source"] = "aws.autoscaling".into();
        assert!(matches!(parse(&e).unwrap(), GuardEvent::Ignored { .. }));
    }
}

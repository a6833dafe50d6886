//! What an incoming event means, in plain Rust.
//!
//! Real CloudTrail events are looser than any typed struct expects (empty
//! `sessionIssuer`, absent fields, services instead of users), so only the
//! EventBridge envelope is parsed with `aws_lambda_events`; the CloudTrail
//! `detail` is read field by field, and a field we do not need can never make
//! an event fail. What comes from the event is untrusted text: it is cleaned
//! of control characters and capped before it goes anywhere.

mod defaults;
mod launch;
mod parse;
mod source_change;
mod state_change;

use defaults::*;
use launch::*;
pub use parse::parse;
use parse::*;
use source_change::*;
use state_change::*;

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
    /// The state a state-change notification names (`pending`, `running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// How long a running instance's notification retries a change EC2 does
/// not take yet, within the invocation: it is running, so a refusal is
/// brief (eventual consistency), and no function waits through `pending`.
pub const RUNNING_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an event's instances may be looked at and changed again while
/// EC2 does not show or take them (`budget`: `RETRY_BUDGET_SECONDS`). A
/// `pending` notification tries once, without waiting: if EC2 takes the
/// change, the instance never runs with IMDSv1; if not, its `running`
/// notification decides. A `running` one, and a delayed first-boot
/// decision, retry briefly. Any other event
/// (a CloudTrail launch, minutes late, may still find an instance pending)
/// has the whole budget.
pub fn act_within(
    trigger: Trigger,
    state: Option<&str>,
    budget: std::time::Duration,
) -> std::time::Duration {
    match (trigger, state) {
        (Trigger::StateChange, Some("pending")) => std::time::Duration::ZERO,
        (Trigger::StateChange, _) => budget.min(RUNNING_RETRY),
        // Launched a grace ago: EC2 shows it and takes the change at once,
        // and a batch of these shares one function's timeout.
        (Trigger::FirstBoot, _) => budget.min(RUNNING_RETRY),
        _ => budget,
    }
}

/// Whether what EC2 could not show or take yet waits for the instance's
/// `running` notification rather than failing the invocation.
pub fn awaits_running(trigger: Trigger, state: Option<&str>) -> bool {
    trigger == Trigger::StateChange && state == Some("pending")
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
    /// EC2's `Operator`: set on a managed instance, whose options the
    /// service that operates it sets (`None` when the source did not say).
    pub operator: Option<crate::launcher::Operator>,
    /// Its addresses, as `DescribeInstances` shows them (none from an
    /// event): where a call made with its credentials may come from.
    pub addresses: Addresses,
    /// What the guard's own memory says of it: not a fact EC2 or an event
    /// shows, so kept apart from them.
    pub standing: Standing,
}

/// An instance's IP addresses: private (every interface's, IPv6 too) and
/// public (the interfaces' public IPv4 addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub private: Vec<String>,
    pub public: Vec<String>,
    /// Prefixes delegated to its interfaces (CIDRs: pods' addresses on a
    /// container host).
    pub prefixes: Vec<String>,
}

/// What the guard's memory says of an instance, read by a flow before the
/// policy decides (an event and EC2 never carry it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The principal exemption the guard recorded when it was launched (the
    /// glob that matched): only the guard can write one, unlike a tag.
    pub exemption: Option<String>,
    /// That record is a launch event's claim CloudTrail has not confirmed
    /// yet (`confirm`): honoured for the window, and said so.
    pub unconfirmed: bool,
    /// A person's break-glass grant in force for it (its own, or its launch
    /// template's).
    pub grant: Option<crate::break_glass::Grant>,
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
    /// EC2's `pending` or `running` state-change notification: seconds
    /// after a launch (or a start), with no trail needed, but naming no
    /// principal.
    StateChange,
    /// Found by a sweep, not named by an event.
    Sweep,
    /// A launch's instance whose first boot was waited for
    /// (`first_boot`): decided afresh once the grace has passed. It names
    /// no principal: the exemption its launch left in the guard's memory
    /// counts.
    FirstBoot,
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
        assert_eq!(ctx.state.as_deref(), Some("pending"));
        // Running starts one too, and says so; stopping and the rest do not.
        let mut ev = fixture("state-change-pending.json");
        ev["detail"]["state"] = json!("running");
        let GuardEvent::Instances { ctx, .. } = parse(&ev).unwrap() else {
            panic!("running is decided")
        };
        assert_eq!(ctx.state.as_deref(), Some("running"));
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            ev["detail"]["state"] = json!(state);
            assert!(
                matches!(parse(&ev).unwrap(), GuardEvent::Ignored { .. }),
                "{state}"
            );
        }
    }

    #[test]
    fn pending_tries_once_running_retries_briefly_and_the_rest_have_the_budget() {
        use std::time::Duration;
        let budget = Duration::from_secs(30);
        let sc = Trigger::StateChange;
        assert_eq!(act_within(sc, Some("pending"), budget), Duration::ZERO);
        assert_eq!(act_within(sc, Some("running"), budget), RUNNING_RETRY);
        assert_eq!(
            act_within(sc, Some("running"), Duration::from_secs(4)),
            Duration::from_secs(4),
            "never more than the budget"
        );
        assert_eq!(act_within(Trigger::Launch, None, budget), budget);
        assert!(awaits_running(sc, Some("pending")));
        assert!(!awaits_running(sc, Some("running")));
        assert!(!awaits_running(Trigger::Launch, Some("pending")));
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

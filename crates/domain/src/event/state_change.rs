//! EC2's instance state-change notification (no trail needed).

use super::*;

/// EC2's `pending` or `running` notification: an instance is starting (a
/// launch, or a stopped instance started again) or has started. It names
/// no principal.
pub(super) fn state_change(
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
    if !matches!(state.as_str(), "pending" | "running") {
        return Ok(ignored(format!(
            "an instance entering state {:?}: only pending and running start one",
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
            state: Some(state.clone()),
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

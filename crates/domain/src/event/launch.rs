//! `RunInstances` and `CreateFleet`: the instances a launch names, or how
//! to find them when CloudTrail cut the list.

use super::*;

/// `RunInstances`: every instance of `responseElements.instancesSet.items`,
/// or, when CloudTrail cut the response (`omitted`, or no `instancesSet`),
/// the way to find them.
pub(super) fn run_instances(
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
pub(super) fn create_fleet(
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
pub(super) fn collect_instance_ids(v: &Value, out: &mut Vec<String>) {
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

/// The instances a launch asked for at least, when its request says.
pub(super) fn min_count(detail: &Value) -> Option<u32> {
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
pub(super) fn is_reservation_id(s: &str) -> bool {
    s.strip_prefix("r-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A client token as EC2 takes it: up to 64 ASCII characters.
pub(super) fn is_client_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
}

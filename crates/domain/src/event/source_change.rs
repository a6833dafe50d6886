//! Launch template and Auto Scaling group calls: which source changed.

use super::*;

/// A launch template event: the template it names, and what the request
/// asked for. EC2 writes the request in PascalCase inside
/// `<Action>Request`, and the response in camelCase inside
/// `<Action>Response`; either may name the template.
pub(super) fn template_change(
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
pub(super) fn group_change(
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

//! Instances and launch templates as AWS services and tools make them
//! (events/shapes/launchers.json, each shape with its provenance): the launcher
//! named, and what enforce does to each, on the event path and on the
//! templates' plan. A container host at hop 1 is switched with hop 2 in the
//! same call; a plain one keeps its hop; a version-gated launcher shown by
//! an `aws:` tag is held for the sweep's metric; a managed instance is never
//! written; a service's own template is never edited.

use std::collections::BTreeMap;

use imds_guard::event::MetadataOptions;
use imds_guard::launcher::Operator;
use imds_guard::report::{Idle, Outcome};
use imds_guard::source::{
    plan_template, Inherited, SourceAction, Template, TemplateFacts, TemplateVersion,
};
use serde_json::Value;

use crate::common::{config, fixture, launch_event};
use crate::fake::FakeCloud;

fn tags(v: &Value) -> Vec<(String, String)> {
    v["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn operator(v: &Value) -> Option<Operator> {
    let o = v.get("operator")?;
    Some(Operator {
        managed: o["managed"].as_bool().unwrap_or(false),
        principal: o["principal"].as_str().map(str::to_string),
    })
}

fn cited(v: &Value) -> &str {
    let p = &v["provenance"];
    assert!(
        matches!(p["kind"].as_str(), Some("real" | "doc" | "fixture")),
        "{}: provenance kind",
        v["name"]
    );
    let source = p["source"].as_str().unwrap_or_default();
    assert!(
        source.len() > 20,
        "{}: a source a person can follow",
        v["name"]
    );
    v["name"].as_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_launchers_instance_is_fixed_as_its_launcher_needs() {
    let shapes = fixture("shapes/launchers.json");
    let shapes = shapes["instances"].as_array().unwrap();
    let cloud = FakeCloud::new();
    cloud.set_defaults(Some(Default::default()));
    let mut ids = Vec::new();
    let mut expected = BTreeMap::new();
    for (n, shape) in shapes.iter().enumerate() {
        let name = cited(shape);
        let id = format!("i-0{:016x}", 0xa000 + n);
        cloud.add(&id, "optional", 1);
        let (t, op) = (tags(shape), operator(shape));
        cloud.edit(&id, |i| {
            i.observed.tags = Some(t);
            i.observed.operator = op;
        });
        expected.insert(id.clone(), (name, &shape["expect"]));
        ids.push(id);
    }
    let g = cloud.test_guard().notifying().enforcing().build();
    let report = g
        .handle(&launch_event("run-instances-console.json", &ids, None))
        .await
        .unwrap();
    assert_eq!(report.instances.len(), ids.len());
    let mut writes = 0;
    for r in &report.instances {
        let (name, expect) = expected[&r.instance_id];
        let launcher = expect["launcher"].as_str().unwrap();
        assert_eq!(r.launcher.as_deref(), Some(launcher), "{name}: {r:?}");
        let id = &r.instance_id;
        let now = (cloud.tokens(id), cloud.hop(id));
        match expect["enforce"].as_str().unwrap() {
            "switch" => {
                assert_eq!(r.outcome, Outcome::Remediated, "{name}: {r:?}");
                assert_eq!(now, ("required".into(), Some(1)), "{name}");
                writes += 1;
            }
            "switch_hop2" => {
                assert_eq!(r.outcome, Outcome::Remediated, "{name}: {r:?}");
                assert_eq!(now, ("required".into(), Some(2)), "{name}");
                writes += 1;
            }
            "hold" => {
                assert_eq!(r.outcome, Outcome::Flagged, "{name}: {r:?}");
                assert_eq!(r.action.idle, Idle::Unproven, "{name}");
                assert!(r.needs_version.is_some(), "{name}");
                assert_eq!(now, ("optional".into(), Some(1)), "{name}");
            }
            "none" => {
                assert_eq!(r.outcome, Outcome::Exempt, "{name}: {r:?}");
                assert!(
                    r.exemption.as_ref().is_some_and(|e| e.is_managed()),
                    "{name}"
                );
                assert_eq!(now, ("optional".into(), Some(1)), "{name}");
                assert_eq!(
                    cloud.tag(id, "imds-guard:status"),
                    None,
                    "{name}: not tagged"
                );
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
    // One call per instance switched, the second hop in the same call.
    assert_eq!(cloud.count("ModifyInstanceMetadataOptions"), writes);
}

#[test]
fn each_services_own_template_is_reported_never_edited() {
    let shapes = fixture("shapes/launchers.json");
    let cfg = config(&[("GUARD_MODE", "enforce"), ("FIX_SOURCES", "true")]);
    let inherited = Inherited::default();
    for shape in shapes["templates"].as_array().unwrap() {
        let name = cited(shape);
        let mut t_tags = tags(shape);
        // Opted in: a service copies the user's tags onto its copy.
        t_tags.push(("imds-guard:fix-source".into(), "true".into()));
        let t = Template {
            id: "lt-0a1b2c3d4e5f60718".into(),
            name: shape["template_name"].as_str().map(str::to_string),
            default_version: 1,
            latest_version: 1,
            tags: t_tags,
            created_by: shape["created_by"].as_str().map(str::to_string),
            operator: operator(shape),
        };
        let versions = [TemplateVersion {
            template_id: t.id.clone(),
            version: 1,
            options: Some(MetadataOptions {
                http_tokens: Some("optional".into()),
                http_endpoint: Some("enabled".into()),
                http_put_response_hop_limit: Some(1),
                ..MetadataOptions::default()
            }),
            ..TemplateVersion::default()
        }];
        let (r, action) = plan_template(
            &cfg,
            &TemplateFacts {
                template: &t,
                versions: &versions,
                groups: &[],
                inherited: &inherited,
            },
        );
        let expect = &shape["expect"];
        let launcher = expect["launcher"].as_str().unwrap();
        assert!(
            r.launcher
                .as_deref()
                .unwrap_or_default()
                .starts_with(launcher),
            "{name}: {r:?}"
        );
        if expect["owned"].as_bool().unwrap() {
            assert_eq!(action, SourceAction::None, "{name}: never edited");
            assert!(r.owner.is_some(), "{name}: {r:?}");
            let setting = r.setting.as_deref().expect("the lasting fix is named");
            // A managed instance's template names its operator; any other
            // service's, where its lasting fix is made.
            let said = match shape["operator"]["principal"].as_str() {
                Some(principal) => principal,
                None => setting,
            };
            assert!(r.action.contains(said), "{name}: {}", r.action);
        } else {
            assert!(matches!(action, SourceAction::Fix(_)), "{name}: {action:?}");
        }
    }
}

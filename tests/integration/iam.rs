//! An IAM policy evaluator for the tests, implementing IAM's documented
//! semantics (IAM User Guide: "Policy evaluation logic", "IAM JSON policy
//! elements: Condition operators", "Single-valued vs. multivalued context
//! keys"), and a reader of the templates' policies as CloudFormation would
//! resolve them under given parameters.
//!
//! What it implements, each tested below on AWS's documented examples:
//! - an explicit `Deny` overrides any `Allow`; nothing allowed is an
//!   implicit deny;
//! - `Action`/`NotAction` and `Resource`/`NotResource` with `*` and `?`;
//! - the condition block: operators ANDed, keys ANDed, a key's values ORed;
//! - a key absent from the request context: a positive operator is false, a
//!   negated one (`StringNotEquals`, `NumericNotEquals`, `ArnNotLike`, ...)
//!   is true, `...IfExists` is true, `Null` tests presence;
//! - multivalued keys with `ForAllValues:` (true when the key is absent or
//!   empty) and `ForAnyValue:` (false when absent);
//! - the String, Numeric, Bool, Arn and Null families. Date, IP and Binary
//!   operators, and a multivalued key without a set qualifier, fail the test
//!   that meets them rather than evaluate wrongly.
//!
//! It does not know the type AWS gives a key (a numeric operator on a key
//! AWS types String): `reference_keys` checks that against AWS's data.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};
use serde_norway::Value;

/// What a request brings to IAM: its action, the resource, and the context
/// keys (several values for a multivalued key such as `aws:TagKeys`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Self {
        Request {
            action: action.into(),
            resource: resource.into(),
            keys: BTreeMap::new(),
        }
    }

    pub fn key(mut self, key: &str, value: &str) -> Self {
        self.keys.insert(key.into(), vec![value.into()]);
        self
    }

    pub fn multi(mut self, key: &str, values: &[&str]) -> Self {
        self.keys
            .insert(key.into(), values.iter().map(|v| v.to_string()).collect());
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.keys.remove(key);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// IAM's decision on `r` for one principal's policies (their statements,
/// flattened). Identity policies only: no permissions boundary, SCP or
/// session policy (each of those could only deny more).
pub fn evaluate(statements: &[Json], r: &Request) -> Decision {
    let applies = |st: &Json| {
        matches_element(st, "Action", "NotAction", &r.action, true)
            && matches_element(st, "Resource", "NotResource", &r.resource, false)
            && conditions_hold(st.get("Condition"), r)
    };
    fn effect(st: &Json) -> &str {
        st["Effect"].as_str().unwrap_or_else(|| panic!("{st}"))
    }
    if statements
        .iter()
        .any(|st| effect(st) == "Deny" && applies(st))
    {
        return Decision::ExplicitDeny;
    }
    if statements
        .iter()
        .any(|st| effect(st) == "Allow" && applies(st))
    {
        return Decision::Allow;
    }
    Decision::ImplicitDeny
}

/// IAM's decision on a same-account request by `principal` (a role's ARN,
/// or a service principal such as `events.amazonaws.com`) whose identity
/// policies are `identity`, on a resource whose policy is `resource`
/// ("Policy evaluation logic", same account): an explicit deny in either
/// wins; otherwise an allow in either allows. A resource policy's statement
/// applies to the principals its `Principal` names: `*`, an ARN, the
/// account (`arn:...:root` or its id), or a service.
pub fn evaluate_for(
    identity: &[Json],
    resource: &[Json],
    principal: &str,
    r: &Request,
) -> Decision {
    let mut named: Vec<Json> = resource
        .iter()
        .filter(|st| names(&st["Principal"], principal))
        .cloned()
        .collect();
    named.extend_from_slice(identity);
    evaluate(&named, r)
}

fn names(p: &Json, principal: &str) -> bool {
    let account = principal.split(':').nth(4).unwrap_or("");
    match p {
        Json::String(s) => s == "*",
        Json::Object(m) => m.iter().any(|(kind, v)| {
            strings(v).iter().any(|v| match kind.as_str() {
                "AWS" => {
                    v == "*"
                        || v == principal
                        || (!account.is_empty()
                            && (v == account || *v == format!("arn:aws:iam::{account}:root")))
                }
                "Service" => v == principal,
                _ => false,
            })
        }),
        Json::Null => panic!("a resource policy's statement names no Principal"),
        other => panic!("not a Principal: {other}"),
    }
}

fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Number(n) => vec![n.to_string()],
        Json::Bool(b) => vec![b.to_string()],
        Json::Array(a) => a.iter().flat_map(strings).collect(),
        other => panic!("not a policy value: {other}"),
    }
}

/// `Action` (or `NotAction`) and `Resource` (or `NotResource`); actions are
/// case-insensitive, resources are not. A statement with neither matches
/// nothing.
fn matches_element(st: &Json, yes: &str, no: &str, value: &str, ci: bool) -> bool {
    let m = |pattern: &str| {
        if ci {
            glob(&pattern.to_ascii_lowercase(), &value.to_ascii_lowercase())
        } else {
            glob(pattern, value)
        }
    };
    if let Some(v) = st.get(yes) {
        strings(v).iter().any(|p| m(p))
    } else if let Some(v) = st.get(no) {
        !strings(v).iter().any(|p| m(p))
    } else {
        false
    }
}

/// `*` any run of characters, `?` one character (IAM's wildcards).
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn conditions_hold(block: Option<&Json>, r: &Request) -> bool {
    let Some(block) = block else {
        return true;
    };
    let ops = block
        .as_object()
        .unwrap_or_else(|| panic!("a Condition is an object: {block}"));
    ops.iter().all(|(op, keys)| {
        let keys = keys
            .as_object()
            .unwrap_or_else(|| panic!("{op} takes an object: {keys}"));
        keys.iter()
            .all(|(key, want)| operator(op, &strings(want), r.keys.get(key).map(Vec::as_slice)))
    })
}

/// One operator on one key: `want` the policy's values, `got` the request's
/// (`None`: absent).
fn operator(op: &str, want: &[String], got: Option<&[String]>) -> bool {
    let got = got.filter(|g| !g.is_empty());
    if op == "Null" {
        let absent = got.is_none();
        return want
            .iter()
            .any(|w| w.eq_ignore_ascii_case(&absent.to_string()));
    }
    let (set, base) = match op.split_once(':') {
        Some((q @ ("ForAllValues" | "ForAnyValue"), rest)) => (Some(q), rest),
        Some((q, _)) => panic!("unknown set qualifier {q}"),
        None => (None, op),
    };
    let (base, if_exists) = match base.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (base, false),
    };
    let (matcher, negated) = family(base);
    let Some(got) = got else {
        return match set {
            Some("ForAllValues") => true,
            Some(_) => false,
            None => if_exists || negated,
        };
    };
    // One request value against the policy's: a positive operator holds
    // if any policy value matches, a negated one if none does.
    let one = |g: &String| {
        let any = want.iter().any(|w| matcher(w, g));
        any != negated
    };
    match set {
        Some("ForAllValues") => got.iter().all(one),
        Some(_) => got.iter().any(one),
        None => {
            assert!(
                got.len() == 1,
                "{op} on a multivalued key needs ForAllValues or ForAnyValue"
            );
            one(&got[0])
        }
    }
}

type Matcher = fn(&str, &str) -> bool;

/// An operator's match (policy value, request value) and whether it is
/// negated.
fn family(base: &str) -> (Matcher, bool) {
    fn num(w: &str, g: &str, f: fn(f64, f64) -> bool) -> bool {
        match (w.parse::<f64>(), g.parse::<f64>()) {
            (Ok(w), Ok(g)) => f(g, w),
            _ => false,
        }
    }
    match base {
        "StringEquals" => (|w, g| w == g, false),
        "StringNotEquals" => (|w, g| w == g, true),
        "StringEqualsIgnoreCase" => (|w, g| w.eq_ignore_ascii_case(g), false),
        "StringNotEqualsIgnoreCase" => (|w, g| w.eq_ignore_ascii_case(g), true),
        "StringLike" => (glob, false),
        "StringNotLike" => (glob, true),
        "NumericEquals" => (|w, g| num(w, g, |g, w| g == w), false),
        "NumericNotEquals" => (|w, g| num(w, g, |g, w| g == w), true),
        "NumericLessThan" => (|w, g| num(w, g, |g, w| g < w), false),
        "NumericLessThanEquals" => (|w, g| num(w, g, |g, w| g <= w), false),
        "NumericGreaterThan" => (|w, g| num(w, g, |g, w| g > w), false),
        "NumericGreaterThanEquals" => (|w, g| num(w, g, |g, w| g >= w), false),
        "Bool" => (|w, g| w.eq_ignore_ascii_case(g), false),
        "ArnEquals" | "ArnLike" => (arn_like, false),
        "ArnNotEquals" | "ArnNotLike" => (arn_like, true),
        other => panic!("operator {other} is not implemented by this evaluator"),
    }
}

/// `ArnLike`: each of the ARN's six colon-separated parts matched on its
/// own (the last part keeps its colons).
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

// ----------------------------------------------------------- the templates

/// The deployment a template is resolved for.
pub struct Deployment<'a> {
    pub params: BTreeMap<&'a str, &'a str>,
    pub account: &'a str,
    pub region: &'a str,
}

impl<'a> Deployment<'a> {
    pub fn with(params: &[(&'a str, &'a str)]) -> Self {
        Deployment {
            params: params.iter().copied().collect(),
            account: "123456789012",
            region: "us-east-1",
        }
    }

    fn param(&self, t: &Value, name: &str) -> Option<String> {
        match name {
            "AWS::AccountId" => Some(self.account.into()),
            "AWS::Region" => Some(self.region.into()),
            "AWS::Partition" => Some("aws".into()),
            "AWS::StackName" => Some("imds-guard".into()),
            "AWS::URLSuffix" => Some("amazonaws.com".into()),
            _ => self.params.get(name).map(|v| v.to_string()).or_else(|| {
                let p = t["Parameters"].get(name)?;
                Some(match p.get("Default")? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("default of {name}: {other:?}"),
                })
            }),
        }
    }

    /// Whether the template's condition `name` holds.
    pub fn holds(&self, t: &Value, name: &str) -> bool {
        let c = t["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"));
        self.condition(t, c)
    }

    fn condition(&self, t: &Value, c: &Value) -> bool {
        let Value::Tagged(tag) = c else {
            panic!("not a condition: {c:?}")
        };
        let args = || tag.value.as_sequence().unwrap();
        match tag.tag.to_string().as_str() {
            "!Not" => !self.condition(t, &args()[0]),
            "!And" => args().iter().all(|a| self.condition(t, a)),
            "!Or" => args().iter().any(|a| self.condition(t, a)),
            "!Equals" => self.resolve(t, &args()[0]) == self.resolve(t, &args()[1]),
            "!Condition" => self.holds(t, tag.value.as_str().unwrap()),
            other => panic!("condition function {other}"),
        }
    }

    /// A template value as CloudFormation would resolve it (`None`:
    /// `AWS::NoValue`). An attribute of a resource (`!GetAtt`, `${X.Arn}`)
    /// becomes a placeholder naming it.
    pub fn resolve(&self, t: &Value, v: &Value) -> Option<Json> {
        Some(match v {
            Value::Null => Json::Null,
            Value::Bool(b) => json!(b.to_string()),
            Value::Number(n) => json!(n.to_string()),
            Value::String(s) => json!(s),
            Value::Sequence(items) => {
                // AWS::NoValue in a list drops the item.
                Json::Array(items.iter().filter_map(|i| self.resolve(t, i)).collect())
            }
            Value::Mapping(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_else(|| panic!("{k:?}")).to_string();
                    if let Some(v) = self.resolve(t, v) {
                        out.insert(k, v);
                    }
                }
                Json::Object(out)
            }
            Value::Tagged(tag) => {
                let name = tag.tag.to_string();
                match name.as_str() {
                    "!Ref" => {
                        let r = tag.value.as_str().unwrap();
                        if r == "AWS::NoValue" {
                            return None;
                        }
                        match self.param(t, r) {
                            Some(p) => json!(p),
                            None => json!(format!("<{r}>")),
                        }
                    }
                    "!If" => {
                        let parts = tag.value.as_sequence().unwrap();
                        let which = if self.holds(t, parts[0].as_str().unwrap()) {
                            1
                        } else {
                            2
                        };
                        return self.resolve(t, &parts[which]);
                    }
                    "!Sub" => json!(self.sub(t, tag.value.as_str().expect("!Sub of a string"))),
                    "!GetAtt" => {
                        let what = match &tag.value {
                            Value::String(s) => s.clone(),
                            Value::Sequence(s) => s
                                .iter()
                                .filter_map(|p| p.as_str())
                                .collect::<Vec<_>>()
                                .join("."),
                            other => panic!("{other:?}"),
                        };
                        json!(format!("<{what}>"))
                    }
                    "!Split" => {
                        let parts = tag.value.as_sequence().unwrap();
                        let sep = parts[0].as_str().unwrap();
                        let s = self.resolve(t, &parts[1]).unwrap();
                        json!(s.as_str().unwrap().split(sep).collect::<Vec<_>>())
                    }
                    "!Join" => {
                        let parts = tag.value.as_sequence().unwrap();
                        let sep = parts[0].as_str().unwrap();
                        let items = self.resolve(t, &parts[1]).unwrap();
                        json!(strings(&items).join(sep))
                    }
                    "!Select" => {
                        let parts = tag.value.as_sequence().unwrap();
                        let i: usize = self
                            .resolve(t, &parts[0])
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        self.resolve(t, &parts[1]).unwrap()[i].clone()
                    }
                    other => panic!("{other} is not resolved here"),
                }
            }
        })
    }

    fn sub(&self, t: &Value, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            out.push_str(&self.param(t, name).unwrap_or_else(|| format!("<{name}>")));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The stack's `Rules` that refuse this deployment, by name: a rule
    /// whose `RuleCondition` holds (or that has none) and one of whose
    /// assertions does not.
    pub fn refused_by(&self, t: &Value) -> Vec<String> {
        let Some(rules) = t.get("Rules").and_then(Value::as_mapping) else {
            return Vec::new();
        };
        rules
            .iter()
            .filter(|(_, rule)| {
                rule.get("RuleCondition")
                    .is_none_or(|c| self.condition(t, c))
                    && rule["Assertions"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|a| !self.condition(t, &a["Assert"]))
            })
            .map(|(name, _)| name.as_str().unwrap().to_string())
            .collect()
    }

    /// The statements of a resource policy (`AWS::SQS::QueuePolicy`,
    /// `AWS::SNS::TopicPolicy`, ...), resolved; empty when its condition
    /// does not hold here.
    pub fn policy_statements(&self, t: &Value, policy: &str) -> Vec<Json> {
        let r = &t["Resources"][policy];
        assert!(!r.is_null(), "no resource {policy}");
        if let Some(c) = r.get("Condition").and_then(Value::as_str) {
            if !self.holds(t, c) {
                return Vec::new();
            }
        }
        // A queue's or topic's policy resource, or a table's own.
        let doc = match r["Properties"].get("ResourcePolicy") {
            Some(p) => &p["PolicyDocument"],
            None => &r["Properties"]["PolicyDocument"],
        };
        let doc = self.resolve(t, doc).unwrap();
        doc["Statement"].as_array().cloned().unwrap_or_default()
    }

    /// Every statement of a role's policies, resolved.
    pub fn role_statements(&self, t: &Value, role: &str) -> Vec<Json> {
        let policies = t["Resources"][role]["Properties"]["Policies"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{role} has no Policies"));
        policies
            .iter()
            .flat_map(|p| {
                let doc = self.resolve(t, &p["PolicyDocument"]).unwrap();
                doc["Statement"].as_array().cloned().unwrap_or_default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: Json) -> Vec<Json> {
        vec![v]
    }

    const RI: &str = "ec2:RunInstances";
    const INSTANCE: &str = "arn:aws:ec2:us-east-1:123456789012:instance/*";

    /// The seed's statement, as the EC2 User Guide documents it ("Require
    /// the use of IMDSv2"): deny launching an instance whose options do not
    /// require tokens.
    fn require_imdsv2_at_launch() -> Json {
        json!({
            "Sid": "RequireImdsV2",
            "Effect": "Deny",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"StringNotEquals": {"ec2:MetadataHttpTokens": "required"}}
        })
    }

    #[test]
    fn the_user_guides_launch_deny_binds_the_instance_resource_only() {
        let allow_all = json!({"Effect": "Allow", "Action": "ec2:*", "Resource": "*"});
        let p = vec![allow_all, require_imdsv2_at_launch()];
        let launch = |tokens: Option<&str>, resource: &str| {
            let r = Request::new(RI, resource);
            evaluate(
                &p,
                &match tokens {
                    Some(t) => r.key("ec2:MetadataHttpTokens", t),
                    None => r,
                },
            )
        };
        assert_eq!(launch(Some("required"), INSTANCE), Decision::Allow);
        assert_eq!(launch(Some("optional"), INSTANCE), Decision::ExplicitDeny);
        // StringNotEquals on an absent key is true: a launch that sets no
        // options is denied too (aws-facts: "also denies launches that set
        // no options at all").
        assert_eq!(launch(None, INSTANCE), Decision::ExplicitDeny);
        // The image, subnet, ... resources of the same call carry no such
        // key, and the deny names only the instance resource.
        assert_eq!(
            launch(None, "arn:aws:ec2:us-east-1::image/ami-1"),
            Decision::Allow
        );
    }

    #[test]
    fn explicit_deny_overrides_and_nothing_allowed_is_an_implicit_deny() {
        let allow = json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"});
        let deny = json!({"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::secret/*"});
        let p = vec![allow, deny];
        let get = |res| evaluate(&p, &Request::new("s3:GetObject", res));
        assert_eq!(get("arn:aws:s3:::public/a"), Decision::Allow);
        assert_eq!(get("arn:aws:s3:::secret/a"), Decision::ExplicitDeny);
        assert_eq!(
            evaluate(&p, &Request::new("s3:PutObject", "arn:aws:s3:::public/a")),
            Decision::ImplicitDeny
        );
        // Actions are case-insensitive (IAM: "Action ... is not case sensitive").
        assert_eq!(
            evaluate(&p, &Request::new("S3:getobject", "arn:aws:s3:::public/a")),
            Decision::Allow
        );
        let not_action = json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"});
        assert!(evaluate(
            &st(not_action.clone()),
            &Request::new("ec2:RunInstances", "*")
        )
        .allowed());
        assert!(!evaluate(&st(not_action), &Request::new("iam:CreateUser", "*")).allowed());
    }

    /// IAM User Guide, "Creating a condition with multiple keys or values":
    /// keys ANDed, a key's values ORed.
    #[test]
    fn keys_are_anded_and_values_ored() {
        let p = st(json!({
            "Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"StringEquals": {
                "aws:PrincipalTag/department": ["finance", "hr", "legal"],
                "aws:PrincipalTag/role": ["audit", "security"]
            }}
        }));
        let r = |d: &str, role: &str| {
            Request::new("x:Y", "*")
                .key("aws:PrincipalTag/department", d)
                .key("aws:PrincipalTag/role", role)
        };
        assert!(evaluate(&p, &r("hr", "audit")).allowed());
        assert!(!evaluate(&p, &r("hr", "developer")).allowed());
        assert!(!evaluate(&p, &r("sales", "audit")).allowed());
        assert!(!evaluate(
            &p,
            &Request::new("x:Y", "*").key("aws:PrincipalTag/department", "hr")
        )
        .allowed());
    }

    /// IAM User Guide, condition operators: a missing key makes a positive
    /// operator false and a negated one true; `...IfExists` is true when
    /// the key is absent; `Null` tests presence.
    #[test]
    fn a_missing_key_and_the_operators_that_see_it() {
        let absent = None;
        let one = ["x".to_string()];
        for (op, when_absent) in [
            ("StringEquals", false),
            ("StringLike", false),
            ("NumericLessThanEquals", false),
            ("ArnLike", false),
            ("Bool", false),
            ("StringNotEquals", true),
            ("StringNotLike", true),
            ("NumericNotEquals", true),
            ("ArnNotLike", true),
            ("ArnNotEquals", true),
            ("StringEqualsIfExists", true),
            ("NumericLessThanIfExists", true),
            ("ForAllValues:StringEquals", true),
            ("ForAnyValue:StringEquals", false),
            ("ForAnyValue:StringNotLike", false),
        ] {
            assert_eq!(operator(op, &one, absent), when_absent, "{op}");
        }
        assert!(operator("Null", &["true".into()], absent));
        assert!(!operator("Null", &["false".into()], absent));
        assert!(operator("Null", &["false".into()], Some(&one)));
        // An empty multivalued key counts as absent.
        assert!(operator("Null", &["true".into()], Some(&[])));
        // IfExists on a present key: the operator as usual.
        assert!(!operator("StringEqualsIfExists", &["y".into()], Some(&one)));
    }

    /// IAM User Guide, "Set operators for multivalued context keys": with
    /// `aws:TagKeys`, ForAllValues holds when every request value is among
    /// the policy's (and when there is none), ForAnyValue when at least one is.
    #[test]
    fn set_operators_on_a_multivalued_key() {
        let allowed = ["environment".to_string(), "cost-center".to_string()];
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = |got: &[&str]| operator("ForAllValues:StringEquals", &allowed, Some(&keys(got)));
        let any = |got: &[&str]| operator("ForAnyValue:StringEquals", &allowed, Some(&keys(got)));
        assert!(all(&["environment"]));
        assert!(all(&["environment", "cost-center"]));
        assert!(!all(&["environment", "owner"]));
        assert!(any(&["environment", "owner"]));
        assert!(!any(&["owner"]));
        // Negated inside a set operator: each value must match none.
        assert!(operator(
            "ForAnyValue:StringNotLike",
            &["breakglass#*".into()],
            Some(&keys(&["org", "breakglass#1"]))
        ));
        assert!(!operator(
            "ForAnyValue:StringNotLike",
            &["breakglass#*".into()],
            Some(&keys(&["breakglass#1"]))
        ));
    }

    #[test]
    #[should_panic(expected = "multivalued key needs ForAllValues or ForAnyValue")]
    fn a_multivalued_key_without_a_set_qualifier_is_refused() {
        operator(
            "StringEquals",
            &["a".into()],
            Some(&["a".into(), "b".into()]),
        );
    }

    #[test]
    #[should_panic(expected = "is not implemented by this evaluator")]
    fn an_operator_not_implemented_fails_rather_than_guesses() {
        operator(
            "IpAddress",
            &["203.0.113.0/24".into()],
            Some(&["203.0.113.5".into()]),
        );
    }

    /// The EC2 User Guide's example for ModifyInstanceMetadataOptions
    /// ("Work with instance metadata"): allow only a change that requires
    /// tokens, with the Null guard so a request that leaves HttpTokens out
    /// is not allowed.
    #[test]
    fn the_user_guides_modify_example_needs_its_null_guard() {
        let allow = |null: bool| {
            let mut c = json!({"StringEquals": {"ec2:Attribute/HttpTokens": "required"}});
            if null {
                c["Null"] = json!({"ec2:Attribute/HttpTokens": "false"});
            }
            st(
                json!({"Effect": "Allow", "Action": "ec2:ModifyInstanceMetadataOptions",
                      "Resource": INSTANCE, "Condition": c}),
            )
        };
        let m = |tokens: Option<&str>| {
            let r = Request::new(
                "ec2:ModifyInstanceMetadataOptions",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
            );
            match tokens {
                Some(t) => r.key("ec2:Attribute/HttpTokens", t),
                None => r.key("ec2:Attribute/HttpPutResponseHopLimit", "1"),
            }
        };
        assert!(evaluate(&allow(true), &m(Some("required"))).allowed());
        assert!(!evaluate(&allow(true), &m(Some("optional"))).allowed());
        assert!(!evaluate(&allow(true), &m(None)).allowed());
        // A Deny written with a negated operator: without the Null guard it
        // denies a request that leaves the key out too.
        let deny = |null: bool| {
            let mut c = json!({"StringNotEquals": {"ec2:Attribute/HttpTokens": "required"}});
            if null {
                c["Null"] = json!({"ec2:Attribute/HttpTokens": "false"});
            }
            vec![
                json!({"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}),
                json!({"Effect": "Deny", "Action": "ec2:ModifyInstanceMetadataOptions", "Resource": "*", "Condition": c}),
            ]
        };
        assert_eq!(evaluate(&deny(false), &m(None)), Decision::ExplicitDeny);
        assert_eq!(evaluate(&deny(true), &m(None)), Decision::Allow);
        assert_eq!(
            evaluate(&deny(true), &m(Some("optional"))),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn wildcards_and_arns() {
        assert!(glob(
            "arn:aws:ec2:*:123456789012:instance/*",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-1"
        ));
        assert!(!glob(
            "arn:aws:ec2:*:123456789012:instance/*",
            "arn:aws:ec2:us-east-1:999999999999:instance/i-1"
        ));
        assert!(glob("i-?", "i-1") && !glob("i-?", "i-12"));
        assert!(glob("*", ""));
        // ArnLike matches part by part: a * in the region does not reach
        // into the account.
        assert!(arn_like(
            "arn:aws:iam::*:role/a",
            "arn:aws:iam::123456789012:role/a"
        ));
        assert!(!arn_like(
            "arn:aws:iam::*",
            "arn:aws:iam::123456789012:role/a"
        ));
        assert!(arn_like(
            "arn:aws:iam::*:*",
            "arn:aws:iam::123456789012:role/a/b"
        ));
    }

    #[test]
    fn numeric_and_bool() {
        assert!(operator(
            "NumericLessThanEquals",
            &["2".into()],
            Some(&["2".into()])
        ));
        assert!(!operator(
            "NumericLessThanEquals",
            &["2".into()],
            Some(&["3".into()])
        ));
        assert!(operator(
            "NumericLessThan",
            &["2.0".into()],
            Some(&["1.0".into()])
        ));
        // A value that is not a number matches no numeric operator.
        assert!(!operator(
            "NumericLessThanEquals",
            &["2".into()],
            Some(&["two".into()])
        ));
        assert!(operator("Bool", &["true".into()], Some(&["True".into()])));
    }
}

//! The roles' conditions, against the requests the guard really sends.
//!
//! The emulator does not evaluate IAM, and a condition that never matches
//! would deny every fix on real AWS. So these tests capture each
//! `ModifyInstanceMetadataOptions` and `ModifyInstanceMetadataDefaults` the
//! guard sends (serialized by the SDK, seen by an interceptor as they would
//! leave), turn each into its IAM request context (`ec2:Attribute/<Name>`
//! for every parameter it sets, as the Service Authorization Reference keys
//! them) and evaluate both templates' statements on them. A loosening
//! request, sent the same way, must be denied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::operation::get_instance_metadata_defaults::GetInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_defaults::ModifyInstanceMetadataDefaultsOutput;
use aws_sdk_ec2::types::{
    HttpTokensEnforcedState, HttpTokensState, InstanceMetadataDefaultsResponse,
    InstanceMetadataEndpointState, MetadataDefaultHttpTokensState,
};
use aws_sdk_ec2::Client as Ec2Client;
use aws_smithy_mocks::{mock, Rule};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use imds_guard::guard::Guard;
use serde_norway::Value;

use crate::common::{self, config, fixture, FixedClients};
use crate::faults::{described, modify_ok, running, tag_ok};
use crate::template::load;

/// The body of every request sent, as the SDK serialized it.
#[derive(Clone, Debug, Default)]
struct Sent(Arc<Mutex<Vec<String>>>);

impl Intercept for Sent {
    fn name(&self) -> &'static str {
        "requests as sent"
    }
    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = ctx.request().body().bytes().unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
        Ok(())
    }
}

/// A request's IAM context: its action, and `ec2:Attribute/<Name>` for each
/// parameter it sets (EC2's query protocol: `Name=value&...`).
#[derive(Debug)]
struct Request {
    action: String,
    keys: BTreeMap<String, String>,
}

impl Sent {
    fn writes(&self) -> Vec<Request> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| {
                let pairs: BTreeMap<&str, &str> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                let action = pairs.get("Action")?.to_string();
                if !action.starts_with("ModifyInstanceMetadata") {
                    return None;
                }
                let keys = pairs
                    .iter()
                    .filter(|(k, _)| !["Action", "Version", "InstanceId", "DryRun"].contains(k))
                    .map(|(k, v)| (format!("ec2:Attribute/{k}"), v.to_string()))
                    .collect();
                Some(Request { action, keys })
            })
            .collect()
    }
}

/// A template's statement by Sid, inside an `!If` too.
fn statement<'a>(t: &'a Value, role: &str, sid: &str) -> &'a Value {
    fn find<'a>(v: &'a Value, sid: &str) -> Option<&'a Value> {
        match v {
            Value::Sequence(items) => items.iter().find_map(|i| find(i, sid)),
            Value::Tagged(t) if t.tag == "!If" => t
                .value
                .as_sequence()?
                .iter()
                .skip(1)
                .find_map(|b| find(b, sid)),
            Value::Mapping(_) if v.get("Sid").and_then(Value::as_str) == Some(sid) => Some(v),
            _ => None,
        }
    }
    find(
        &t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"],
        sid,
    )
    .unwrap_or_else(|| panic!("{role}/{sid}"))
}

/// A template's value under its parameters: literals, `!Ref`, and `!If` on
/// the template's conditions (`!Not`, `!Equals`, `!And`, `!Condition`).
fn resolve(t: &Value, v: &Value, params: &BTreeMap<&str, &str>) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Tagged(tag) if tag.tag == "!Ref" => {
            let name = tag.value.as_str().unwrap();
            params
                .get(name)
                .unwrap_or_else(|| panic!("no value for parameter {name}"))
                .to_string()
        }
        Value::Tagged(tag) if tag.tag == "!If" => {
            let parts = tag.value.as_sequence().unwrap();
            let holds = holds(t, &t["Conditions"][parts[0].as_str().unwrap()], params);
            resolve(t, &parts[if holds { 1 } else { 2 }], params)
        }
        other => panic!("cannot resolve {other:?}"),
    }
}

fn holds(t: &Value, c: &Value, params: &BTreeMap<&str, &str>) -> bool {
    let Value::Tagged(tag) = c else {
        panic!("not a condition: {c:?}")
    };
    let args = || tag.value.as_sequence().unwrap();
    match tag.tag.to_string().as_str() {
        "!Not" => !holds(t, &args()[0], params),
        "!And" => args().iter().all(|a| holds(t, a, params)),
        "!Equals" => resolve(t, &args()[0], params) == resolve(t, &args()[1], params),
        "!Condition" => holds(t, &t["Conditions"][tag.value.as_str().unwrap()], params),
        other => panic!("condition function {other} not evaluated here"),
    }
}

/// Whether an Allow statement's condition holds for the request, as IAM
/// evaluates the operators these templates use; any other operator fails
/// the test rather than pass unseen.
fn allows(t: &Value, st: &Value, r: &Request, params: &BTreeMap<&str, &str>) -> bool {
    let actions = match &st["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Sequence(s) => s
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
        other => panic!("{other:?}"),
    };
    if !actions.contains(&format!("ec2:{}", r.action)) {
        return false;
    }
    let Some(Value::Mapping(ops)) = st.get("Condition") else {
        return true;
    };
    ops.iter().all(|(op, keys)| {
        let op = op.as_str().unwrap();
        keys.as_mapping().unwrap().iter().all(|(key, want)| {
            let key = key.as_str().unwrap();
            let want = resolve(t, want, params);
            let got = r.keys.get(key);
            match op {
                "StringEquals" => got == Some(&want),
                "NumericLessThanEquals" => {
                    got.is_some_and(|g| g.parse::<f64>().unwrap() <= want.parse::<f64>().unwrap())
                }
                "Null" => (got.is_none()).to_string() == want,
                other => panic!("operator {other} not evaluated here"),
            }
        })
    })
}

const TEMPLATES: [(&str, &str); 2] = [
    ("template.yaml", "GuardRole"),
    ("member/template.yaml", "MemberRole"),
];

/// Evaluates `requests` against both templates' statement `sid`.
fn decide(requests: &[Request], sid: &str, params: &BTreeMap<&str, &str>) -> Vec<bool> {
    TEMPLATES
        .iter()
        .flat_map(|(path, role)| {
            let t = load(path);
            let st = statement(&t, role, sid).clone();
            requests
                .iter()
                .map(|r| allows(&t, &st, r, params))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn guard(pairs: &[(&str, &str)], rules: &[&Rule], sent: &Sent) -> Guard<FixedClients> {
    Guard::new(
        config(pairs),
        FixedClients {
            ec2: common::ec2_seen_by(rules, sent.clone()),
            sns: common::sns(&[]),
            metrics: common::metrics(&[]),
            members: None,
            memory: None,
            keeper: None,
            autoscaling: crate::common::autoscaling(&[]),
            findings: crate::common::securityhub(&[]),
            events: None,
        },
    )
}

#[tokio::test]
async fn every_fix_the_guard_sends_is_allowed_by_both_roles() {
    // Hop limits kept as they are (no ceiling), and lowered to a ceiling.
    for (ceiling, hop, sent_hop) in [("", 3, "3"), ("", 64, "64"), ("2", 8, "2"), ("2", 1, "1")] {
        let sent = Sent::default();
        let describe = mock!(Ec2Client::describe_instances)
            .then_output(move || described(vec![running("i-0aaaaaaaaaaaaaaa1", "optional", hop)]));
        let (modify, tag) = (modify_ok(), tag_ok());
        let g = guard(
            &[("MAX_HOP_LIMIT", ceiling)],
            &[&describe, &modify, &tag],
            &sent,
        );
        let mut event = fixture("run-instances-console.json");
        event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] =
            "i-0aaaaaaaaaaaaaaa1".into();
        g.handle(&event).await.unwrap();

        let writes = sent.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].keys["ec2:Attribute/HttpTokens"], "required");
        assert_eq!(
            writes[0].keys["ec2:Attribute/HttpPutResponseHopLimit"],
            sent_hop
        );
        let params = BTreeMap::from([("MaxHopLimit", ceiling)]);
        assert_eq!(
            decide(&writes, "RequireImdsV2", &params),
            [true, true],
            "ceiling {ceiling:?}: {writes:?}"
        );
    }
}

#[tokio::test]
async fn the_account_default_the_guard_sets_is_allowed_by_both_roles() {
    let sent = Sent::default();
    let empty = mock!(Ec2Client::describe_instances).then_output(|| described(vec![]));
    let get = mock!(Ec2Client::get_instance_metadata_defaults).then_output(|| {
        GetInstanceMetadataDefaultsOutput::builder()
            .account_level(
                InstanceMetadataDefaultsResponse::builder()
                    .http_tokens(HttpTokensState::Optional)
                    .http_tokens_enforced(HttpTokensEnforcedState::Disabled)
                    .build(),
            )
            .build()
    });
    let set = mock!(Ec2Client::modify_instance_metadata_defaults).then_output(|| {
        ModifyInstanceMetadataDefaultsOutput::builder()
            .r#return(true)
            .build()
    });
    let g = guard(
        &[("SET_ACCOUNT_DEFAULT", "true")],
        &[&empty, &get, &set],
        &sent,
    );
    g.handle(&fixture("scheduled-event.json")).await.unwrap();
    let writes = sent.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].action, "ModifyInstanceMetadataDefaults");
    assert_eq!(
        decide(&writes, "SetAccountDefault", &BTreeMap::new()),
        [true, true]
    );
}

/// What someone holding the roles' credentials might try, sent through the
/// same SDK and read the same way: each is denied by both templates.
#[tokio::test]
async fn a_request_that_would_loosen_imds_is_denied_by_both_roles() {
    let sent = Sent::default();
    let (modify, set) = (
        modify_ok(),
        mock!(Ec2Client::modify_instance_metadata_defaults)
            .then_output(|| ModifyInstanceMetadataDefaultsOutput::builder().build()),
    );
    let ec2 = common::ec2_seen_by(&[&modify, &set], sent.clone());
    let id = "i-0aaaaaaaaaaaaaaa1";
    let m = || ec2.modify_instance_metadata_options().instance_id(id);
    m().http_tokens(HttpTokensState::Optional)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(1)
        .send()
        .await
        .unwrap();
    m().http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Disabled)
        .http_put_response_hop_limit(1)
        .send()
        .await
        .unwrap();
    m().http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(3)
        .send()
        .await
        .unwrap();
    // Leaving a value out: EC2 keeps (or defaults) it, which IAM cannot see.
    m().http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(1)
        .send()
        .await
        .unwrap();
    m().http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .send()
        .await
        .unwrap();
    m().http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .send()
        .await
        .unwrap();
    let loosen = sent.writes();
    assert_eq!(loosen.len(), 6);
    let ceiling = BTreeMap::from([("MaxHopLimit", "2")]);
    assert_eq!(
        decide(&loosen, "RequireImdsV2", &ceiling),
        [false; 12],
        "{loosen:?}"
    );
    // Without a ceiling, 64 is the most; a tightening request passes.
    let no_ceiling = BTreeMap::from([("MaxHopLimit", "")]);
    assert_eq!(
        decide(&loosen[2..3], "RequireImdsV2", &no_ceiling),
        [true, true],
        "hop 3 is fine without a ceiling"
    );

    let sent = Sent::default();
    let ec2 = common::ec2_seen_by(&[&modify, &set], sent.clone());
    let d = || ec2.modify_instance_metadata_defaults();
    d().http_tokens(MetadataDefaultHttpTokensState::NoPreference)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_tokens_enforced(aws_sdk_ec2::types::DefaultHttpTokensEnforcedState::Disabled)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_tokens_enforced(aws_sdk_ec2::types::DefaultHttpTokensEnforcedState::Enabled)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_put_response_hop_limit(64)
        .send()
        .await
        .unwrap();
    d().http_tokens(MetadataDefaultHttpTokensState::Required)
        .http_endpoint(aws_sdk_ec2::types::DefaultInstanceMetadataEndpointState::Disabled)
        .send()
        .await
        .unwrap();
    d().http_put_response_hop_limit(1).send().await.unwrap();
    let defaults = sent.writes();
    assert_eq!(defaults.len(), 6);
    assert_eq!(
        decide(&defaults, "SetAccountDefault", &BTreeMap::new()),
        [false; 12],
        "{defaults:?}"
    );
}

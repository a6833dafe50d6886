//! `ModifyInstanceMetadataDefaults`: what a change of the account's
//! defaults asked for.

use super::*;

/// What a `ModifyInstanceMetadataDefaults` call asked for. CloudTrail
/// writes EC2's newer requests in PascalCase inside a `...Request` object
/// (as for `ModifyInstanceMetadataOptions`); the flat camelCase form is read
/// too. Fields it does not name stay `None`: the handler reads the current
/// defaults from EC2 either way.
pub(super) fn defaults_change(detail: &Value) -> DefaultsChange {
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

//! The catalogue of software whose IMDS behaviour is documented: user-agent
//! products, the versions that fixed their IMDSv1 use, and a source for
//! each; and the hypothesis a caller gets from it.

use serde::{Deserialize, Serialize};

use super::Host;

/// Why a caller may still use IMDSv1, with its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub text: String,
    pub source: String,
}

/// A product whose IMDS behaviour is documented: from which version it
/// supports IMDSv2 (or stops calling IMDSv1 first), and where that is said.
pub struct Known {
    /// The user agent's product token, lower case.
    pub product: &'static str,
    /// Within the product, a version prefix the entry covers (`2.` for the
    /// Java SDK 2.x), or "" for every version.
    pub line: &'static str,
    pub label: &'static str,
    /// The first version that is fine.
    pub fixed: &'static str,
    /// What an older one does.
    pub before: &'static str,
    /// Its user agent carries no version (`aws-fluent-bit-plugin-k8s`):
    /// matched by name, and by the name with a suffix.
    pub versionless: bool,
    pub source: &'static str,
}

const SDK_MINIMUMS: &str =
    "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/use-a-supported-sdk-version-for-imdsv2.html";

/// The catalogue: user-agent products and the versions that fixed their
/// IMDS use, each with its source.
pub const CATALOGUE: &[Known] = &[
    Known {
        product: "aws-cli",
        line: "1.",
        label: "AWS CLI v1",
        fixed: "1.16.289",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "boto3",
        line: "",
        label: "Boto3",
        fixed: "1.12.6",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "botocore",
        line: "",
        label: "botocore",
        fixed: "1.13.25",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-java",
        line: "1.",
        label: "AWS SDK for Java 1.x",
        fixed: "1.11.678",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-java",
        line: "2.",
        label: "AWS SDK for Java 2.x",
        fixed: "2.10.21",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-go",
        line: "1.",
        label: "AWS SDK for Go v1",
        fixed: "1.25.38",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-go-v2",
        line: "",
        label: "AWS SDK for Go v2",
        fixed: "0.19.0",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-nodejs",
        line: "2.",
        label: "AWS SDK for JavaScript v2",
        fixed: "2.722.0",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-php",
        line: "3.",
        label: "AWS SDK for PHP",
        fixed: "3.147.7",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-ruby3",
        line: "",
        label: "AWS SDK for Ruby v3",
        fixed: "3.79.0",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-dotnet-coreclr",
        line: "3.",
        label: "AWS SDK for .NET",
        fixed: "3.3.634.1",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-dotnet-45",
        line: "3.",
        label: "AWS SDK for .NET",
        fixed: "3.3.634.1",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "aws-sdk-cpp",
        line: "",
        label: "AWS SDK for C++",
        fixed: "1.7.229",
        before: "supports only IMDSv1",
        versionless: false,
        source: SDK_MINIMUMS,
    },
    Known {
        product: "amazon-ssm-agent",
        line: "",
        label: "SSM Agent",
        fixed: "3.0.431.0",
        before: "calls IMDSv1 first by design (IMDSv2 from 2.3.814.0)",
        versionless: false,
        source: "https://github.com/aws/amazon-ssm-agent/issues/319",
    },
    // Its user agent is its own (`CWAgent/<version> (go…)`, set in
    // `handlers/agentinfo`), replacing the SDK's.
    Known {
        product: "cwagent",
        line: "",
        label: "CloudWatch agent",
        fixed: "1.300028.0",
        before: "falls back to IMDSv1 (it tries IMDSv2 alone first from 1.300028.0; 1.247348 failed under HttpTokens=required, issue #253)",
        versionless: false,
        source: "https://github.com/aws/amazon-cloudwatch-agent/releases/tag/v1.300028.0",
    },
    // `Amazon ECS Agent - v<version> (<hash>)`, read by `normalise_agent`.
    // Which release first fetched its credentials with IMDSv2 is not
    // verified: `fixed` is empty, and the hypothesis says so.
    Known {
        product: "amazon-ecs-agent",
        line: "",
        label: "Amazon ECS container agent",
        fixed: "",
        before: "failed to start under HttpTokens=required in early releases (containers-roadmap #670); the first release that fetches its credentials with IMDSv2 is not verified here: upgrade it, then read MetadataNoToken",
        versionless: false,
        source: "https://github.com/aws/containers-roadmap/issues/670",
    },
    // Fluent Bit's C AWS client sends `aws-fluent-bit-plugin` (with `-ecs`,
    // `-k8s` or `-windows`), never a version.
    Known {
        product: "aws-fluent-bit-plugin",
        line: "",
        label: "Fluent Bit's AWS outputs",
        fixed: "1.8.9",
        before: "use IMDSv1 only (1.8.8 added IMDSv2, with a broken fallback)",
        versionless: true,
        source: "https://github.com/fluent/fluent-bit/issues/4388",
    },
];

/// The SDKs' documented fallback (every current AWS SDK tries IMDSv2, then
/// IMDSv1 when the token request gets no answer).
const FALLBACK: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html#imds-considerations";

/// Why software with user agent `agent` may use IMDSv1 on this host: a
/// catalogued product older than its fix; an SDK fallback (a container
/// host whose hop limit is 1 is the usual cause); or unknown.
pub fn hypothesis(agent: &str, host: Host) -> Hypothesis {
    for token in agent.split_whitespace() {
        let (name, version) = token.split_once('/').unwrap_or((token, ""));
        let name = name.to_ascii_lowercase();
        let known = CATALOGUE.iter().find(|k| {
            if version.is_empty() {
                k.versionless && (k.product == name || name.starts_with(&format!("{}-", k.product)))
            } else {
                !k.versionless && k.product == name && version.starts_with(k.line)
            }
        });
        let Some(k) = known else { continue };
        if version.is_empty() {
            return Hypothesis {
                text: format!(
                    "{}: its user agent carries no version; releases before {} {}: check the version installed",
                    k.label, k.fixed, k.before
                ),
                source: k.source.into(),
            };
        }
        if k.fixed.is_empty() {
            return Hypothesis {
                text: format!("{} {version} {}", k.label, k.before),
                source: k.source.into(),
            };
        }
        if older(version, k.fixed) {
            return Hypothesis {
                text: format!(
                    "{} {version} {} before {}: upgrade it",
                    k.label, k.before, k.fixed
                ),
                source: k.source.into(),
            };
        }
        let text = match (host.container_host, host.hop_limit) {
            (true, Some(1)) => format!(
                "SDK fallback: {} {version} supports IMDSv2, but on a container host with hop limit 1 its token request from a container gets no answer, so it falls back to IMDSv1 (raise the hop limit to 2)",
                k.label
            ),
            _ => format!(
                "SDK fallback: {} {version} supports IMDSv2 and falls back to IMDSv1 when its token request gets no answer (a hop limit of 1 seen from a container, a proxy such as kube2iam refusing the PUT)",
                k.label
            ),
        };
        return Hypothesis {
            text,
            source: FALLBACK.into(),
        };
    }
    Hypothesis {
        text: "unknown: no catalogued product in its user agent".into(),
        source: "the guard's catalogue (v1_callers::CATALOGUE)".into(),
    }
}

/// Whether dotted version `v` is older than `fixed` (numeric parts
/// compared in order; a part that is not a number ends the comparison).
pub fn older(v: &str, fixed: &str) -> bool {
    let parts = |s: &str| -> Vec<u64> {
        s.split(['.', '-'])
            .map_while(|p| p.parse::<u64>().ok())
            .collect()
    };
    parts(v) < parts(fixed)
}

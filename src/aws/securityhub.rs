//! Security Hub through the SDK: the guard's findings, imported from the
//! instance's own account (the default product ARN takes findings only from
//! the account its `AwsAccountId` names). Nothing is read back: what the
//! guard filed is in its memory.

use aws_sdk_securityhub::types::{
    AwsEc2InstanceDetails, AwsEc2InstanceMetadataOptions, AwsSecurityFinding, Compliance,
    ComplianceStatus as SdkStatus, FindingProviderFields, FindingProviderSeverity, Partition,
    Recommendation, RecordState as SdkRecord, Remediation, Resource, ResourceDetails, Severity,
    SeverityLabel,
};

use crate::finding::{self, Finding, RecordState};

use super::api::FindingsApi;
use super::error::AwsError;

#[derive(Clone, Debug)]
pub struct SecurityHub(pub aws_sdk_securityhub::Client);

impl FindingsApi for SecurityHub {
    async fn import(&self, findings: &[Finding]) -> Result<Vec<(String, String)>, AwsError> {
        let out = self
            .0
            .batch_import_findings()
            .set_findings(Some(findings.iter().map(to_sdk).collect()))
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "securityhub", "securityhub:BatchImportFindings"))?;
        let mut refused: Vec<(String, String)> = out
            .failed_findings()
            .iter()
            .map(|f| {
                (
                    f.id().unwrap_or("?").to_string(),
                    format!(
                        "{}: {}",
                        f.error_code().unwrap_or("?"),
                        f.error_message().unwrap_or("")
                    ),
                )
            })
            .collect();
        // A count without the list still says some were refused.
        let failed = usize::try_from(out.failed_count().unwrap_or(0)).unwrap_or(0);
        if failed > refused.len() {
            refused.push((
                "?".into(),
                format!("FailedCount {failed} but {} named", refused.len()),
            ));
        }
        Ok(refused)
    }
}

/// The domain's finding as the SDK sends it.
fn to_sdk(f: &Finding) -> AwsSecurityFinding {
    let label = |s: finding::Severity| SeverityLabel::from(s.as_str());
    let details = |d: &finding::InstanceDetails| {
        let mut details = AwsEc2InstanceDetails::builder()
            .set_image_id(d.image_id.clone())
            .set_iam_instance_profile_arn(d.iam_instance_profile_arn.clone())
            .set_launched_at(d.launched_at.clone());
        if let Some(o) = &d.metadata_options {
            details = details.metadata_options(
                AwsEc2InstanceMetadataOptions::builder()
                    .set_http_endpoint(o.http_endpoint.clone())
                    .set_http_protocol_ipv6(o.http_protocol_ipv6.clone())
                    .set_http_put_response_hop_limit(o.http_put_response_hop_limit)
                    .set_http_tokens(o.http_tokens.clone())
                    .set_instance_metadata_tags(o.instance_metadata_tags.clone())
                    .build(),
            );
        }
        details.build()
    };
    let resources = f
        .resources
        .iter()
        .map(|r| {
            Resource::builder()
                .r#type(&r.kind)
                .id(&r.id)
                .partition(Partition::from(r.partition.as_str()))
                .region(&r.region)
                .details(
                    ResourceDetails::builder()
                        .aws_ec2_instance(details(&r.details.instance))
                        .build(),
                )
                .build()
        })
        .collect();
    AwsSecurityFinding::builder()
        .schema_version(&f.schema_version)
        .id(&f.id)
        .product_arn(&f.product_arn)
        .product_name(&f.product_name)
        .company_name(&f.company_name)
        .generator_id(&f.generator_id)
        .aws_account_id(&f.aws_account_id)
        .region(&f.region)
        .set_types(Some(f.types.clone()))
        .set_first_observed_at(f.first_observed_at.clone())
        .set_last_observed_at(f.last_observed_at.clone())
        .created_at(&f.created_at)
        .updated_at(&f.updated_at)
        .severity(Severity::builder().label(label(f.severity.label)).build())
        .finding_provider_fields(
            FindingProviderFields::builder()
                .severity(
                    FindingProviderSeverity::builder()
                        .label(label(f.finding_provider_fields.severity.label))
                        .set_original(f.finding_provider_fields.severity.original.clone())
                        .build(),
                )
                .set_types(Some(f.finding_provider_fields.types.clone()))
                .build(),
        )
        .title(&f.title)
        .description(&f.description)
        .remediation(
            Remediation::builder()
                .recommendation(
                    Recommendation::builder()
                        .text(&f.remediation.recommendation.text)
                        .url(&f.remediation.recommendation.url)
                        .build(),
                )
                .build(),
        )
        .set_product_fields(Some(
            f.product_fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
        .set_resources(Some(resources))
        .set_compliance(f.status().map(|s| {
            Compliance::builder()
                .status(SdkStatus::from(s.as_str()))
                .build()
        }))
        .record_state(match f.record_state {
            RecordState::Active => SdkRecord::Active,
            RecordState::Archived => SdkRecord::Archived,
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the SDK sends is what the domain's ASFF says, field by field
    /// that the guard sets (the domain's JSON is checked against ASFF's
    /// rules in `finding`'s tests).
    #[test]
    fn the_sdk_finding_carries_every_field_of_the_domains() {
        let mut r = crate::report::InstanceReport::new(
            "i-0123456789abcdef0",
            crate::report::Outcome::Flagged,
            crate::report::Idle::None,
        );
        r.before = Some(crate::event::MetadataOptions {
            http_tokens: Some("optional".into()),
            http_endpoint: Some("enabled".into()),
            http_put_response_hop_limit: Some(2),
            ..Default::default()
        });
        r.instance_profile = Some("arn:aws:iam::111122223333:instance-profile/web".into());
        let place = finding::Place {
            account: "111122223333",
            region: "eu-west-1",
            now: 1_795_000_000,
            stamp_ms: 0,
        };
        let f = finding::for_report(
            &place,
            crate::config::Mode::Notify,
            &r,
            crate::event::Trigger::Launch,
        )
        .unwrap();
        let s = to_sdk(&f);
        assert_eq!(s.id(), Some(f.id.as_str()));
        assert_eq!(s.product_arn(), Some(f.product_arn.as_str()));
        assert_eq!(s.aws_account_id(), Some("111122223333"));
        assert_eq!(s.generator_id(), Some(finding::GENERATOR_ID));
        assert_eq!(s.schema_version(), Some("2018-10-08"));
        assert_eq!(s.types(), [finding::FINDING_TYPE]);
        assert_eq!(s.created_at(), Some(f.created_at.as_str()));
        assert_eq!(s.updated_at(), Some(f.updated_at.as_str()));
        assert_eq!(s.title(), Some(finding::TITLE));
        assert_eq!(s.description(), Some(f.description.as_str()));
        assert_eq!(
            s.severity().and_then(|v| v.label()),
            Some(&SeverityLabel::High)
        );
        assert_eq!(
            s.finding_provider_fields()
                .and_then(|p| p.severity())
                .and_then(|v| v.label()),
            Some(&SeverityLabel::High)
        );
        assert_eq!(
            s.compliance().and_then(|c| c.status()),
            Some(&SdkStatus::Failed)
        );
        assert_eq!(s.record_state(), Some(&SdkRecord::Active));
        let res = &s.resources()[0];
        assert_eq!(res.r#type(), Some("AwsEc2Instance"));
        assert_eq!(
            res.id(),
            Some("arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0")
        );
        assert_eq!(res.partition(), Some(&Partition::Aws));
        let d = res.details().and_then(|d| d.aws_ec2_instance()).unwrap();
        assert_eq!(
            d.iam_instance_profile_arn(),
            Some("arn:aws:iam::111122223333:instance-profile/web")
        );
        assert_eq!(
            d.metadata_options().and_then(|m| m.http_tokens()),
            Some("optional")
        );
        assert_eq!(
            s.product_fields()
                .unwrap()
                .get("imds-guard/Outcome")
                .map(String::as_str),
            Some("flagged")
        );
        assert!(s.workflow().is_none() && s.note().is_none());
    }
}

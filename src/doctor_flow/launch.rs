//! `doctor --prevention`: AWS's own prevention as it binds the person
//! running `doctor`, from two dry-run launches in each region. What the
//! answers mean is the domain's (`prevention::dry_run_row`).

use aws_config::Region;

use super::Doctor;
use crate::aws::AwsError;
use crate::doctor::{Row, Section};
use crate::probe::Status;

/// What `doctor --prevention` launches, with `DryRun=true` only: an image
/// and subnet it is given, else Amazon's newest Amazon Linux 2023 image and
/// a default subnet it finds.
#[derive(Clone, Debug, Default)]
pub struct LaunchProbe {
    pub image: Option<String>,
    pub subnet: Option<String>,
    pub instance_type: String,
}

impl Doctor {
    /// Three launches as the person, each with `DryRun=true` (never
    /// without): asking for `HttpTokens=optional`, for `required`, and
    /// without metadata options; what AWS answered each is the row
    /// (`prevention::dry_run_row`).
    pub(super) async fn prevention(&self, place: &str, region: &str, probe: &LaunchProbe) -> Row {
        use crate::prevention::{dry_run_row, Launch};
        use aws_sdk_ec2::types::{
            Filter, HttpTokensState, InstanceMetadataOptionsRequest, InstanceType,
        };
        let ec2 = client!(self, aws_sdk_ec2, region);
        let not_checked = |why: String| {
            Row::new(
                Section::Prevention,
                Status::Warn,
                "a launch that does not require IMDSv2 is refused to you",
                place,
                format!("not checked: {why}"),
            )
            .fix("pass --image-id and --subnet-id that exist in this region")
        };
        let image = match &probe.image {
            Some(i) => i.clone(),
            None => {
                let found = ec2
                    .describe_images()
                    .owners("amazon")
                    .filters(
                        Filter::builder()
                            .name("name")
                            .values("al2023-ami-2023.*-x86_64")
                            .build(),
                    )
                    .filters(Filter::builder().name("state").values("available").build())
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeImages"));
                match found {
                    Ok(out) => match out
                        .images()
                        .iter()
                        .filter(|i| i.image_id().is_some())
                        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
                        .and_then(|i| i.image_id())
                    {
                        Some(id) => id.to_string(),
                        None => {
                            return not_checked("no Amazon Linux 2023 image was found here".into())
                        }
                    },
                    Err(e) => return not_checked(format!("no image to launch ({e})")),
                }
            }
        };
        let subnet = match &probe.subnet {
            Some(s) => s.clone(),
            None => {
                let found = ec2
                    .describe_subnets()
                    .filters(
                        Filter::builder()
                            .name("default-for-az")
                            .values("true")
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "ec2", "ec2:DescribeSubnets"));
                match found {
                    Ok(out) => match out.subnets().iter().find_map(|s| s.subnet_id()) {
                        Some(id) => id.to_string(),
                        None => return not_checked("this region has no default subnet".into()),
                    },
                    Err(e) => return not_checked(format!("no subnet to launch in ({e})")),
                }
            }
        };
        let launch = |tokens: Option<HttpTokensState>| {
            let req = ec2
                .run_instances()
                .image_id(&image)
                .subnet_id(&subnet)
                .instance_type(InstanceType::from(probe.instance_type.as_str()))
                .min_count(1)
                .max_count(1)
                .dry_run(true);
            let req = match tokens {
                Some(t) => req.metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(t)
                        .build(),
                ),
                None => req,
            };
            async move {
                match req.send().await {
                    // DryRun=true never launches: an answer without an
                    // error is not EC2's, and is said as such.
                    Ok(_) => {
                        Launch::Other("no DryRunOperation error (a dry run must answer one)".into())
                    }
                    Err(e) => {
                        let e = AwsError::classify(e, "ec2", "ec2:RunInstances");
                        match e.code() {
                            Some("DryRunOperation") => Launch::Would,
                            // A policy's refusal, or AWS's own enforcement's
                            // (HttpTokensEnforced answers UnsupportedOperation).
                            Some("UnauthorizedOperation" | "UnsupportedOperation") => {
                                Launch::Refused
                            }
                            _ => Launch::Other(e.to_string()),
                        }
                    }
                }
            }
        };
        let optional = launch(Some(HttpTokensState::Optional)).await;
        let required = launch(Some(HttpTokensState::Required)).await;
        let without = launch(None).await;
        let mut row = dry_run_row(place, &optional, &required, &without);
        row.detail = format!(
            "{} ({image}, {}, {subnet})",
            row.detail, probe.instance_type
        );
        row
    }
}

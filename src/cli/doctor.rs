//! `imds-guard doctor`: whether the guard will work in this account, check
//! by check, with AWS as the judge where it can be (the self-check's dry
//! runs) and the person's own read permissions for the rest. Needs no write
//! permission and no right to invoke the guard (`--print-policy` prints the
//! read-only policy it needs).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::emit;
use crate::aws::load_sdk_config;
use crate::doctor::{exit_code, operator_policy, render};
use crate::doctor_flow::{Doctor, Scope};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The stack's name (sam deploy's stack_name). Default: IMDS_GUARD_STACK,
    /// else imds-guard.
    #[arg(long, value_name = "NAME")]
    stack: Option<String>,
    #[command(flatten)]
    targets: super::Targets,
    /// Days of the rules' counts to read (1-90).
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=90))]
    days: u64,
    /// Stop waiting after this many seconds and say what was not reached.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(5..=3600))]
    timeout: u64,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = DoctorOutput::Table)]
    output: DoctorOutput,
    /// Print the read-only IAM policy doctor needs, and nothing else (with
    /// --prevention, also what its dry-run launches need).
    #[arg(long)]
    print_policy: bool,
    /// Also check AWS's own prevention as it binds you: in each region, two
    /// launches with DryRun=true (never without), one without metadata
    /// options and one with HttpTokens=required; what AWS answered each.
    #[arg(long)]
    prevention: bool,
    /// The image the dry-run launches name (default: Amazon's newest Amazon
    /// Linux 2023, x86_64).
    #[arg(long, value_name = "AMI", requires = "prevention")]
    image_id: Option<String>,
    /// The subnet they name (default: the region's first default subnet).
    #[arg(long, value_name = "SUBNET", requires = "prevention")]
    subnet_id: Option<String>,
    /// The instance type they name.
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "t3.micro",
        requires = "prevention"
    )]
    instance_type: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DoctorOutput {
    /// By section, worst first, with the fix for each ✗.
    Table,
    /// Every row, as JSON.
    Json,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode, String> {
    let stack = args
        .stack
        .clone()
        .or_else(|| {
            std::env::var("IMDS_GUARD_STACK")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "imds-guard".into());
    if args.print_policy {
        let p = if args.prevention {
            crate::doctor::prevention_policy(&stack, "aws")
        } else {
            operator_policy(&stack, "aws")
        };
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&p).unwrap_or_default()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| !e.trim().is_empty());
    if args.prevention && endpoint.is_some() {
        // An emulator may not honour DryRun: it would launch.
        return Err("--prevention sends RunInstances with DryRun=true, which an emulator may ignore and launch: refused while AWS_ENDPOINT_URL is set".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (rows, could_not_run) = runtime.block_on(async {
        let sdk = load_sdk_config().await;
        super::credentials(&sdk).await?;
        let scope = Scope {
            stack,
            regions: args.targets.regions.clone(),
            accounts: args.targets.accounts.clone(),
            organization: args.targets.organization,
            days: args.days,
            timeout: Duration::from_secs(args.timeout),
            endpoint,
            prevention: args.prevention.then(|| crate::doctor_flow::LaunchProbe {
                image: args.image_id.clone(),
                subnet: args.subnet_id.clone(),
                instance_type: args.instance_type.clone(),
            }),
        };
        Ok::<_, String>(Doctor::new(sdk).run(&scope).await)
    })?;
    match args.output {
        DoctorOutput::Table => emit(&render(&rows)),
        DoctorOutput::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        )),
    }
    Ok(ExitCode::from(exit_code(&rows, could_not_run)))
}

//! `imds-guard policy`: the preventive policy the guard's settings imply
//! (`prevention`), on stdout alone, so it can be piped to
//! `aws organizations create-policy --content file://...`; what it cannot
//! bind, and with `--explain` what each statement does, on stderr. No AWS
//! call: the settings are the environment's, as the function reads them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::config::Config;
use crate::prevention::{self, Inputs, Kind};

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The policy's type.
    #[arg(long, value_enum)]
    kind: KindArg,
    /// The administrator role the way back stays open to: it alone may turn
    /// IMDSv1 back on or weaken the account default (repeatable; required
    /// for scp and iam).
    #[arg(long = "admin-role", value_name = "ARN")]
    admin_roles: Vec<String>,
    /// The guard's roles (its stack's GuardRole, the member roles): they
    /// alone, with the platform's and the administrator's, may write the
    /// guard's tags (repeatable). Without one, the tags are not protected.
    #[arg(long = "guard-role", value_name = "ARN")]
    guard_roles: Vec<String>,
    /// A platform role that may set the exempt tag (repeatable).
    #[arg(long = "platform-role", value_name = "ARN")]
    platform_roles: Vec<String>,
    /// Add AWS's statement refusing calls made with credentials IMDSv1
    /// delivered (ec2:RoleDelivery below 2.0). Needs --evidence.
    #[arg(long, requires = "evidence")]
    with_role_delivery: bool,
    /// A sweep's JSON report made with LOOKUP_IMDSV1_CALLERS=true: refused
    /// where software was seen using IMDSv1-delivered credentials.
    #[arg(long, value_name = "SWEEP.json")]
    evidence: Option<PathBuf>,
    /// Also say on stderr what each statement does.
    #[arg(long)]
    explain: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    /// A service control policy (AWS Organizations).
    Scp,
    /// An identity policy, for an account outside an organization.
    Iam,
    /// An EC2 declarative policy: the instance metadata defaults.
    Declarative,
}

pub fn run(args: PolicyArgs) -> Result<ExitCode, String> {
    let cfg = Config::from_env().map_err(|e| e.to_string())?;
    let kind = match args.kind {
        KindArg::Scp => Kind::Scp,
        KindArg::Iam => Kind::Iam,
        KindArg::Declarative => Kind::Declarative,
    };
    let mut notes = Vec::new();
    if let Some(path) = &args.evidence {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--evidence {}: {e}", path.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("--evidence {}: not JSON: {e}", path.display()))?;
        if args.with_role_delivery {
            notes.extend(prevention::role_delivery_evidence(&report)?);
        }
    }
    let inputs = Inputs {
        exempt_principals: cfg.exemptions.principals.clone(),
        exempt_images: cfg.exemptions.image_ids.clone(),
        exempt_tag_key: cfg.exemptions.tag_key.clone(),
        status_tag_key: cfg.status_tag_key.clone(),
        max_hop_limit: cfg.max_hop_limit,
        admin_roles: args.admin_roles,
        guard_roles: args.guard_roles,
        platform_roles: args.platform_roles,
        role_delivery: args.with_role_delivery,
    };
    let printed = prevention::policy(kind, &inputs)?;
    super::emit(&format!("{}\n", printed.policy));
    for n in notes.iter().chain(&printed.notes) {
        eprintln!("note: {n}");
    }
    if args.explain {
        for e in &printed.explained {
            eprintln!("explain: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

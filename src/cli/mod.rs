//! The command line: `imds-guard check EVENT.json` evaluates an event file
//! offline, with no AWS call, and prints what the function would do;
//! `imds-guard sweep` sweeps regions exactly as the scheduled function does;
//! `imds-guard doctor` says whether the guard will work in this account;
//! `imds-guard break-glass` grants, revokes and lists time-boxed exemptions;
//! `imds-guard migrate-exemptions` copies legacy exemption tags into the
//! guard's memory; `imds-guard policy` prints the preventive policy the
//! settings imply; `imds-guard plan` says where AWS's own enforcement can go
//! on, and `imds-guard enforce-native` switches it on in one account-region;
//! `imds-guard completions SHELL` prints shell completions.
//! Arguments are parsed by clap (each subcommand has its own `--help`); the
//! commands that need a configuration read the same environment variables as
//! the function, and flags override them.

mod break_glass;
mod check;
mod doctor;
mod enforce_native;
pub mod export;
mod migrate;
mod policy;
mod sweep;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

pub use check::evaluate;
pub use sweep::render_sweep;

use crate::config::Mode;

#[derive(Debug, Parser)]
#[command(
    name = "imds-guard",
    version = crate::release::LINE,
    about = "Keeps EC2 instances on IMDSv2 (HttpTokens=required)",
    long_about = "Keeps EC2 instances on IMDSv2 (HttpTokens=required).\n\n\
        The command line (the stack's functions run their own binaries). \
        Configuration comes from the same environment variables as the \
        function (GUARD_MODE, EXEMPT_*, SWEEP_REGIONS, ...); flags override them.",
    after_help = "Exit status: 0 nothing to fix, 1 something noncompliant, 2 error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate an EventBridge/CloudTrail event file offline (no AWS call)
    /// and print what the function would do.
    #[command(
        after_help = "Exit status: 0 nothing to fix, 1 something noncompliant (or undecidable \
        offline), 2 error."
    )]
    Check(check::CheckArgs),
    /// Sweep the instances of each region (pending, running, stopping,
    /// stopped) as the scheduled function does: same decision, exemptions,
    /// actions and notification.
    #[command(
        long_about = "Sweep the instances of each region (pending, running, stopping, stopped) \
        as the scheduled function does: same decision, exemptions, actions and notification.\n\n\
        Writes only when asked: without --mode (or GUARD_MODE) it audits. Regions: --region, \
        else SWEEP_REGIONS, else the SDK's region (AWS_REGION or the profile). Accounts \
        (central mode, MEMBER_ROLE_NAME set): --account, or --organization for every active \
        account of the organization, else SWEEP_ACCOUNTS, else the caller's own. Credentials \
        and endpoints come from the SDK's usual chain.",
        after_help = "Exit status: 0 nothing noncompliant left (exempt instances aside), 1 some \
        left, 2 error (the sweep could not start, or a region could not be swept to the end)."
    )]
    Sweep(sweep::SweepArgs),
    /// Copy legacy exemption records (a status tag `exempt` on instances
    /// launched before LEGACY_EXEMPT_BEFORE) into the guard's memory.
    #[command(
        long_about = "Copy legacy exemption records into the guard's memory, in one step.\n\n\
        Versions before the guard's memory recorded a principal exemption as the status tag \
        (STATUS_TAG_KEY=exempt), which anyone who may tag could write. Set LEGACY_EXEMPT_BEFORE \
        to the time of the upgrade and MEMORY_TABLE to the stack's table: each such record on an \
        instance launched before that time is copied into the memory, where only the guard \
        writes; those on instances launched after are named and left out. Then unset \
        LEGACY_EXEMPT_BEFORE.",
        after_help = "Exit status: 0 done, 2 error."
    )]
    MigrateExemptions(migrate::MigrateArgs),
    /// Whether the guard will work here: AWS's answers to its roles' dry
    /// runs (the self-check), a trail, the rules' counts, the queues, the
    /// topic, Security Hub and the memory's protection, with the fix for
    /// each failure.
    #[command(
        long_about = "Whether the guard will work in this account, check by check.\n\n\
        What AWS allows the guard's roles is judged by AWS itself: the stack's self-check sends \
        each writing role's writes with DryRun=true (on deploy and weekly) and records what AWS \
        answered in the guard's memory, which doctor reads. The rest is read with your own \
        credentials, read-only (--print-policy prints the policy): a CloudTrail trail logging \
        write management events in each region, the rules' matched and invoked counts, the \
        undelivered-events and failed-events queues, a confirmed subscription on the topic, \
        Security Hub where findings are on, and the memory table's resource policy.",
        after_help = "Exit status: 0 nothing to fix (warnings aside), 1 something to fix, 2 could not run."
    )]
    Doctor(doctor::DoctorArgs),
    /// Break-glass: exempt one instance (or a launch template's instances)
    /// for a while, with a reason, during an incident.
    #[command(
        long_about = "Break-glass: a time-boxed, audited exemption during an incident.\n\n\
        `grant` writes a grant to the guard's memory (MEMORY_TABLE: the stack's table, which only \
        the guard's role and the stack's BreakGlassRoleArn may write) for one instance (i-...) or every \
        instance launched from one launch template (lt-...), with a reason and an end (at most 7 \
        days), and tells the guard's topic (NOTIFY_TOPIC_ARN). Until it ends, the event function \
        and the sweep leave it as it is and report, rather than undo, a change back to \
        HttpTokens=optional; after, they handle it as usual, and the next sweep's summary says it \
        ended. `revoke` ends one now; `list` shows an account-region's grants.",
        after_help = "Exit status: 0 done, 2 error."
    )]
    BreakGlass(break_glass::BreakGlassArgs),
    /// Print the preventive policy the guard's settings imply: an SCP, an
    /// identity policy or an EC2 declarative policy (no AWS call).
    #[command(
        long_about = "Print the preventive policy the guard's settings imply, on stdout alone \
        (minified JSON, deterministic), from the same environment variables as the function \
        (EXEMPT_PRINCIPAL_ARNS, EXEMPT_TAG_KEY, STATUS_TAG_KEY, MAX_HOP_LIMIT, ...). What the \
        policy cannot bind, and with --explain what each statement does, go to stderr.\n\n\
        --kind scp: deny launches that do not require IMDSv2, changes that turn IMDSv1 back on, \
        weakening the account default, and writing the guard's tags, except the administrator \
        role you name (and the exempt principals where IAM means the same thing). --kind iam: \
        the same as an identity policy. --kind declarative: the EC2 instance metadata defaults.",
        after_help = "Exit status: 0 printed, 2 refused (the reason on stderr)."
    )]
    Policy(policy::PolicyArgs),
    /// Where AWS's own enforcement (HttpTokensEnforced) can go on now, per
    /// account-region and unit, whole units that are ready first.
    #[command(
        long_about = "Where AWS's own enforcement (HttpTokensEnforced) can go on now, per \
        account-region and organizational unit: ready (with the command that switches it on), \
        enforced, or blocked with each blocker named (instances still at optional by source, \
        exemptions, break-glass grants, workloads still using IMDSv1, IMDSv1 use not measured, \
        the account default).\n\n\
        Reads a sweep's JSON report (--from), or sweeps now in audit mode (nothing written) \
        with the same settings and targets as `imds-guard sweep`. Measuring IMDSv1 use needs \
        CHECK_METADATA_NO_TOKEN and LOOKUP_IMDSV1_CALLERS: without them nothing is ready.",
        after_help = "Exit status: 0 nothing blocked, 1 something blocked, 2 error."
    )]
    Plan(sweep::PlanArgs),
    /// Switch AWS's own enforcement on in one account-region, as a person:
    /// the account default to required and HttpTokensEnforced to enabled.
    #[command(
        long_about = "Switch AWS's own enforcement on in one account-region, with your own \
        credentials (AWS_PROFILE may name a role there to assume): re-checks readiness with an audit \
        sweep first; without --apply prints exactly what it would change; with --apply records \
        the prior values (in the guard's memory, MEMORY_TABLE, and the message) and sets the \
        account default HttpTokens=required and HttpTokensEnforced=enabled, then publishes what \
        it did (NOTIFY_TOPIC_ARN). Refuses when not ready, unless --force with --reason and \
        --confirm-account repeating the account id; refuses where a declarative policy manages \
        the defaults. --undo restores exactly the recorded prior values (never with --force).",
        after_help = "Exit status: 0 done (or, without --apply, would be done), 1 refused, 2 error."
    )]
    EnforceNative(enforce_native::EnforceArgs),
    /// Print shell completions (e.g. `imds-guard completions bash >
    /// /etc/bash_completion.d/imds-guard`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What the guard does with a noncompliant instance.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// Set HttpTokens=required, tag, notify.
    Enforce,
    /// Tag and notify; change nothing else.
    Notify,
    /// Write nothing; report what enforce would do.
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Notify => Mode::Notify,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

/// Runs the command line; `args` excludes the program name.
pub fn run(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once("imds-guard".to_string()).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to
            // stderr with status 2, as clap prints them.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let (name, result) = match cli.command {
        Command::Check(args) => ("check", check::run(args)),
        Command::Sweep(args) => ("sweep", sweep::run(args)),
        Command::MigrateExemptions(args) => ("migrate-exemptions", migrate::run(args)),
        Command::Doctor(args) => ("doctor", doctor::run(args)),
        Command::BreakGlass(args) => ("break-glass", break_glass::run(args)),
        Command::Policy(args) => ("policy", policy::run(args)),
        Command::Plan(args) => ("plan", sweep::plan(args)),
        Command::EnforceNative(args) => ("enforce-native", enforce_native::run(args)),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "imds-guard", &mut out);
            emit(&String::from_utf8_lossy(&out));
            return ExitCode::SUCCESS;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imds-guard {name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where a command looks, as `sweep` takes it: regions, and in central
/// mode accounts (through their member role) or the whole organization.
#[derive(Debug, clap::Args)]
pub struct Targets {
    /// A region (repeatable). Default: SWEEP_REGIONS (doctor: the stack's
    /// SweepRegions), else the SDK's region.
    #[arg(long = "region", value_name = "REGION", value_parser = region)]
    pub regions: Vec<String>,
    /// An account (repeatable; central mode, through its member role).
    #[arg(long = "account", value_name = "ID", value_parser = account, conflicts_with = "organization")]
    pub accounts: Vec<String>,
    /// Every active account of the organization (central mode).
    #[arg(long)]
    pub organization: bool,
}

/// A `--region` value: a region as AWS writes it.
fn region(v: &str) -> Result<String, String> {
    crate::validate::is_region(v)
        .then(|| v.to_string())
        .ok_or_else(|| format!("{v:?} is not a region (e.g. us-east-1)"))
}

/// An `--account` value: twelve digits.
fn account(v: &str) -> Result<String, String> {
    crate::validate::is_account_id(v)
        .then(|| v.to_string())
        .ok_or_else(|| format!("{v:?} is not an account id (twelve digits)"))
}

/// Says in one line, with the fix, that there are no credentials, rather
/// than a table of errors.
async fn credentials(sdk: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials;
    let no = |why: &str| {
        format!(
            "no AWS credentials ({}); set AWS_PROFILE (or run `aws sso login`), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role provides them",
            crate::validate::clean(why, 200)
        )
    };
    let Some(provider) = sdk.credentials_provider() else {
        return Err(no("no credentials provider is configured"));
    };
    provider
        .provide_credentials()
        .await
        .map(|_| ())
        .map_err(|e| no(&e.to_string()))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

//! The command line: `imds-guard check | sweep | doctor | break-glass |
//! migrate-exemptions | completions` (src/cli). A binary of its own, never
//! deployed: the functions run `imds-guard-event`, `imds-guard-sweep` and
//! `imds-guard-outputs` (src/bin), whose bootstraps stay within their size
//! budgets, while this one may carry every client a person's checks need.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        eprintln!(
            "imds-guard is the command line; the stack's functions run imds-guard-event, \
             imds-guard-sweep and imds-guard-outputs (sam build from template.yaml)"
        );
        return ExitCode::FAILURE;
    }
    imds_guard::cli::run(std::env::args().skip(1).collect())
}

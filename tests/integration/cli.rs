//! The binary as a person runs it: `imds-guard check EVENT.json`, offline.

use std::process::{Command, Output};

fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imds-guard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .args(args);
    // Offline means offline: no endpoint, no credentials, nothing to reach.
    for var in [
        "AWS_ENDPOINT_URL",
        "MOTO_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_LAMBDA_RUNTIME_API",
        "GUARD_MODE",
        "NOTIFY_TOPIC_ARN",
        "EXEMPT_TAG_KEY",
        "EXEMPT_PRINCIPAL_ARNS",
        "EXEMPT_IMAGE_IDS",
        "MAX_HOP_LIMIT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn noncompliant_launch_prints_the_plan_and_exits_1() {
    let o = check(&["events/run-instances-cli-multi.json"], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("by         arn:aws:sts::111122223333:assumed-role/DevOps/bob"),
        "{out}"
    );
    assert!(
        out.contains("i-0aaaaaaaaaaaaaaa1  noncompliant → would remediate"),
        "{out}"
    );
    assert!(
        out.contains("would    set HttpTokens=required; tag imds-guard:status=remediated"),
        "{out}"
    );
    assert!(out.contains("i-0aaaaaaaaaaaaaaa3  compliant"), "{out}");
    assert!(
        out.contains("would, but NOTIFY_TOPIC_ARN is not set"),
        "{out}"
    );
}

#[test]
fn compliant_and_failed_launches_exit_0() {
    for f in [
        "events/run-instances-compliant.json",
        "events/run-instances-failed.json",
        "events/unrelated-create-tags.json",
    ] {
        let o = check(&[f], &[]);
        assert_eq!(o.status.code(), Some(0), "{f}: {}", stdout(&o));
    }
    let o = check(&["events/run-instances-failed.json"], &[]);
    assert!(stdout(&o).contains("RunInstances failed with Client.UnauthorizedOperation"));
}

#[test]
fn mode_flag_and_environment_shape_the_plan() {
    let o = check(
        &["events/run-instances-console.json", "--mode", "audit"],
        &[],
    );
    assert!(
        stdout(&o).contains("noncompliant → would report (audit)"),
        "{}",
        stdout(&o)
    );
    let o = check(
        &["events/run-instances-console.json"],
        &[("GUARD_MODE", "notify")],
    );
    assert!(
        stdout(&o).contains("would    tag imds-guard:status=noncompliant"),
        "{}",
        stdout(&o)
    );
    let role = "arn:aws:iam::*:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";
    let o = check(
        &["events/run-instances-autoscaling.json"],
        &[("EXEMPT_PRINCIPAL_ARNS", role)],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains(&format!("exempt   principal matches {role}")),
        "{}",
        stdout(&o)
    );
    // A glob that would exempt every role on the path is refused, saying
    // how to write it.
    let o = check(
        &["events/run-instances-autoscaling.json"],
        &[(
            "EXEMPT_PRINCIPAL_ARNS",
            "arn:aws:iam::*:role/aws-service-role/autoscaling.amazonaws.com/*",
        )],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("would exempt every role on that path"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn json_output_is_the_report() {
    let o = check(
        &["events/run-instances-console.json", "--output", "json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["instances"][0]["instance_id"], "i-0a1b2c3d4e5f60718");
    assert_eq!(v["instances"][0]["outcome"], "remediated");
    assert_eq!(v["mode"], "enforce");
}

#[test]
fn a_revert_is_decided_on_the_options_its_response_carries_else_needs_a_lookup() {
    // The response of ModifyInstanceMetadataOptions carries the options the
    // change left: decided offline, as the function does, with no call.
    let o = check(&["events/modify-metadata-options-revert.json"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("i-0fedcba9876543210  noncompliant → would remediate"),
        "{}",
        stdout(&o)
    );
    // Without the response, the function would have to look.
    let mut ev: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/events/modify-metadata-options-revert.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    ev["detail"]
        .as_object_mut()
        .unwrap()
        .remove("responseElements");
    let path = std::env::temp_dir().join("imds-guard-revert-without-response.json");
    std::fs::write(&path, serde_json::to_vec(&ev).unwrap()).unwrap();
    let o = check(&[path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("the function would describe it first"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn errors_exit_2_with_a_clear_message() {
    let o = check(&["events/does-not-exist.json"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist.json"));
    let o = check(
        &["events/run-instances-console.json"],
        &[("GUARD_MODE", "fix-it")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid GUARD_MODE=\"fix-it\""));
    let o = check(&["Cargo.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not JSON"));
}

/// The binary with no AWS anything: no credentials, no profile, no
/// instance role, and an endpoint on loopback that answers nothing.
fn bare(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("imds-guard-cli-no-home");
    let _ = std::fs::create_dir_all(&home);
    Command::new(env!("CARGO_BIN_EXE_imds-guard"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .expect("binary runs")
}

#[test]
fn every_command_has_its_help_and_completions_are_printed() {
    for cmd in ["check", "sweep", "completions"] {
        let o = bare(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stdout(&o));
        assert!(
            stdout(&o).contains("Usage: imds-guard"),
            "{cmd}: {}",
            stdout(&o)
        );
    }
    assert!(stdout(&bare(&["sweep", "--help"])).contains("--region <REGION>"));
    let o = bare(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("complete -F _imds__guard"),
        "{}",
        stdout(&o)
    );
    let o = bare(&["sweep", "--region", "Mars"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a region"));
}

#[test]
fn a_sweep_that_cannot_start_says_why_in_one_line_and_exits_2() {
    let o = bare(&["sweep"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("which region?"), "{err}");
    assert!(stdout(&o).is_empty());

    let o = bare(&["sweep", "--region", "us-east-1"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("imds-guard sweep: no AWS credentials") && err.contains("AWS_PROFILE"),
        "{err}"
    );
    assert!(
        stdout(&o).is_empty(),
        "no table of unknowns: {}",
        stdout(&o)
    );
}

#[test]
fn the_sweeps_concurrency_is_a_flag_within_its_range() {
    let o = bare(&["sweep", "--concurrency", "0"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0 is not in 1..=32"), "{err}");
    // In range, it is taken; the sweep then stops at what it lacks (a region).
    let o = bare(&["sweep", "--concurrency", "8"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("which region?"), "{err}");
    assert!(stdout(&bare(&["sweep", "--help"])).contains("--concurrency <N>"));
}

#[test]
fn doctor_prints_its_read_only_policy_and_says_in_one_line_when_it_cannot_run() {
    let o = bare(&["doctor", "--stack", "guard-prod", "--print-policy"]);
    assert_eq!(o.status.code(), Some(0));
    let policy: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = policy.to_string();
    assert!(
        text.contains("stack/guard-prod/*") && text.contains("table/guard-prod-memory"),
        "{text}"
    );
    for verb in ["Put", "Modify", "Delete", "Create", "Invoke"] {
        assert!(!text.contains(verb), "{verb} in {text}");
    }
    // No credentials: one line with the fix, exit 2, before any call.
    let o = bare(&["doctor"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("imds-guard doctor: no AWS credentials"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

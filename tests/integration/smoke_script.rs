//! tools/smoke-aws.sh, the real-AWS smoke test, without AWS: its plan mode
//! makes no call at all, its refusals refuse before anything is made, and
//! Ctrl-C during the deploy deletes what it began. `aws`, `sam` and the
//! command line are stubs on the PATH that log every call and answer what
//! each case needs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AWS_STUB: &str = r#"#!/usr/bin/env bash
echo "aws $*" >> "$STUB_LOG"
case "$*" in
  *"sts get-caller-identity"*) echo 111122223333 ;;
  *"ec2 describe-instances --filters"*) echo "${STUB_INSTANCES:-}" ;;
  *"cloudformation describe-stacks --query"*) echo "${STUB_STACKS:-}" ;;
  *"cloudtrail describe-trails"*) echo "arn:aws:cloudtrail:eu-west-1:111122223333:trail/org" ;;
  *"cloudtrail get-trail-status"*) echo True ;;
  *"describe-stack-resource"*) echo "0b1c2d3e-0000-4000-8000-00000000000a" ;;
esac
exit 0
"#;

const SAM_STUB: &str = r#"#!/usr/bin/env bash
echo "sam $*" >> "$STUB_LOG"
if [ "$1" = deploy ] && [ -n "${STUB_SAM_SLEEP:-}" ]; then
  sleep "$STUB_SAM_SLEEP"
fi
exit 0
"#;

/// A directory of stubs, and the log they write.
struct Stubs {
    dir: PathBuf,
}

impl Stubs {
    fn new(name: &str) -> Stubs {
        let dir =
            std::env::temp_dir().join(format!("imds-guard-smoke-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for (f, body) in [
            ("aws", AWS_STUB),
            ("sam", SAM_STUB),
            ("imds-guard", SAM_STUB),
            ("curl", SAM_STUB),
        ] {
            let p = dir.join("bin").join(f);
            std::fs::write(&p, body).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .unwrap();
        }
        std::fs::write(dir.join("log"), "").unwrap();
        Stubs { dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap()
    }

    /// The script, with nothing of this machine's environment but a PATH
    /// whose stubs come first, and `env`.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("bash");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/smoke-aws.sh"))
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.join("bin").display()),
            )
            .env("STUB_LOG", self.dir.join("log"))
            .env("SMOKE_REPORT", self.dir.join("report.txt"))
            .env("IMDS_GUARD_BIN", self.dir.join("bin/imds-guard"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        self.command(env).output().unwrap()
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GO: [(&str, &str); 3] = [
    ("IMDS_GUARD_SMOKE", "yes"),
    ("AWS_PROFILE", "sandbox"),
    ("AWS_REGION", "eu-west-1"),
];

#[test]
fn the_plan_makes_no_call_without_credentials_and_with_a_closed_endpoint() {
    let s = Stubs::new("plan");
    let out = s.run(&[
        ("SMOKE_PLAN", "1"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan = String::from_utf8_lossy(&out.stdout);
    for step in ["sam deploy", "running to", "delete", "cost"] {
        assert!(plan.contains(step), "{step}: {plan}");
    }
    assert_eq!(s.log(), "", "plan mode called something");
}

#[test]
fn it_refuses_without_consent_a_profile_or_a_region_and_with_an_endpoint() {
    let s = Stubs::new("consent");
    for (env, why) in [
        (
            &[("AWS_PROFILE", "sandbox"), ("AWS_REGION", "eu-west-1")][..],
            "IMDS_GUARD_SMOKE=yes",
        ),
        (
            &[("IMDS_GUARD_SMOKE", "yes"), ("AWS_REGION", "eu-west-1")][..],
            "AWS_PROFILE",
        ),
        (
            &[("IMDS_GUARD_SMOKE", "yes"), ("AWS_PROFILE", "sandbox")][..],
            "AWS_REGION",
        ),
    ] {
        let out = s.run(env);
        assert_eq!(out.status.code(), Some(3), "{why}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{why}: {out:?}"
        );
    }
    let mut env = GO.to_vec();
    env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"));
    assert_eq!(s.run(&env).status.code(), Some(3));
    assert_eq!(s.log(), "", "a refusal called something");
}

#[test]
fn it_refuses_a_region_with_an_instance_of_someone_elses_or_a_previous_smoke_stack() {
    for (var, value, why) in [
        (
            "STUB_INSTANCES",
            "i-0123456789abcdef0",
            "instances this test did not create",
        ),
        (
            "STUB_STACKS",
            "imds-guard-smoke-20261130-1",
            "a previous smoke stack",
        ),
    ] {
        let s = Stubs::new(var);
        let mut env = GO.to_vec();
        env.push((var, value));
        let out = s.run(&env);
        assert_eq!(out.status.code(), Some(3), "{why}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{why}");
        let log = s.log();
        // Only reads happened: nothing was made, so nothing to delete.
        for line in log.lines() {
            assert!(
                line.contains(" describe-") || line.contains("get-caller-identity"),
                "{why}: a refusal must only read: {line}"
            );
        }
        assert!(!log.contains("sam"), "{log}");
    }
}

#[test]
fn ctrl_c_during_the_deploy_deletes_what_it_began() {
    let s = Stubs::new("interrupt");
    let mut env = GO.to_vec();
    env.push(("STUB_SAM_SLEEP", "60"));
    // Its own process group, so the signal reaches the script and the stub
    // it waits on, as a terminal's Ctrl-C does.
    //
    // A shell that starts a command in the background without job control
    // (a CI runner's `cmd &`, make's own jobs) starts it with SIGINT
    // ignored, and bash cannot trap a signal ignored on entry: the script
    // would run on as if no one had pressed Ctrl-C. A terminal's Ctrl-C
    // reaches a foreground command whose SIGINT is not ignored, so the
    // script starts that way here, however the tests were launched.
    let mut command = s.command(&env);
    command.process_group(0);
    // SAFETY: between fork and exec, only sigaction(2) through signal(3),
    // which is async-signal-safe; no allocation, no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::signal(libc::SIGINT, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    // The child leads its own group (process_group(0)): its pid is the
    // group's id. Never 0 or 1, which would reach far more than the script.
    let group = i32::try_from(child.id()).unwrap();
    assert!(group > 1);
    // Stops the whole group. Only ever called while the child is not yet
    // reaped, so the group id is still this test's and cannot be reused.
    // SAFETY: kill(2) with a group id this test created; no memory involved.
    let stop = || unsafe { libc::kill(-group, libc::SIGKILL) };
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    while !s.log().contains("sam deploy") {
        if start.elapsed() > Duration::from_secs(30) {
            stop();
            panic!("never reached the deploy: {}", s.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    // A script that ignored the interrupt would run its whole course (a
    // quarter of an hour of waiting on stubs): stopped after two minutes,
    // and the assertion below says so.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            stop();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let log = s.log();
    let after = &log[log.find("sam deploy").unwrap()..];
    for call in [
        "cloudformation delete-stack --stack-name imds-guard-smoke-",
        "dynamodb delete-table --table-name imds-guard-smoke-",
        "logs delete-log-group --log-group-name /aws/lambda/imds-guard-smoke-",
        "kms schedule-key-deletion --key-id 0b1c2d3e-0000-4000-8000-00000000000a --pending-window-in-days 7",
    ] {
        assert!(after.contains(call), "{call} missing after the interrupt:\n{log}");
    }
    assert!(
        !after.contains("run-instances"),
        "nothing more was started:\n{log}"
    );
    let report = std::fs::read_to_string(s.dir.join("report.txt")).unwrap();
    assert!(
        report.contains("everything this run made was deleted"),
        "{report}"
    );
    assert!(report.contains("cost estimate"), "{report}");
}

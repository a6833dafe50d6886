//! The real binary under the real Lambda runtime loop, fed by a small
//! Runtime API on loopback: hostile input gets an error or an ignore, never
//! a crash, and the process goes on to serve the next event.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    pub kind: &'static str, // "response" or "error"
    pub body: String,
    /// From handing the event out to receiving this answer (the benchmark's
    /// event latency, as the Runtime API sees it).
    pub took: Duration,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Vec<u8>)>,
    answers: Vec<Answer>,
    init_errors: Vec<String>,
    /// When the function first asked for an event: the end of its init.
    first_poll: Option<Instant>,
    handed: Vec<(String, Instant)>,
}

/// A minimal Lambda Runtime API: hands out queued events on
/// `/invocation/next` and records what the function answers.
pub struct RuntimeApi {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl RuntimeApi {
    pub fn start(events: Vec<Vec<u8>>) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            queue: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (format!("req-{i}"), e))
                .collect(),
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(conn, st));
            }
        });
        RuntimeApi { addr, state }
    }

    /// Waits for the function's first `/invocation/next` (or `limit`).
    pub fn first_poll(&self, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        loop {
            if let Some(at) = self.state.lock().unwrap().first_poll {
                return Some(at);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until `n` invocations have been answered (or `limit` passes).
    /// What the function reported as its init error (`/init/error`).
    pub fn init_errors(&self) -> Vec<String> {
        self.state.lock().unwrap().init_errors.clone()
    }

    pub fn answers(&self, n: usize, limit: Duration) -> Vec<Answer> {
        let start = Instant::now();
        loop {
            let got = self.state.lock().unwrap().answers.clone();
            if got.len() >= n || start.elapsed() > limit {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>) {
    // Each answer goes out in one write with Nagle off: a head and a body in
    // two writes would wait on the client's delayed ACK (about 40 ms on
    // Linux) and the benchmark would time this harness, not the function.
    conn.set_nodelay(true).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)
        } else {
            let mut b = vec![0; length];
            reader.read_exact(&mut b).unwrap();
            b
        };
        let body = String::from_utf8_lossy(&body).into_owned();

        if method == "GET" && path.ends_with("/runtime/invocation/next") {
            state
                .lock()
                .unwrap()
                .first_poll
                .get_or_insert_with(Instant::now);
            // Hand out the next event; with none left, hold the call open
            // as Lambda does between invocations.
            let next = loop {
                let mut s = state.lock().unwrap();
                if let Some(e) = s.queue.pop_front() {
                    s.handed.push((e.0.clone(), Instant::now()));
                    break e;
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(20));
            };
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:111122223333:function:imds-guard\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n",
                next.0,
                next.1.len()
            );
            let mut answer = head.into_bytes();
            answer.extend_from_slice(&next.1);
            out.write_all(&answer).unwrap();
        } else {
            let mut s = state.lock().unwrap();
            let segs: Vec<&str> = path.split('/').collect();
            if path.ends_with("/init/error") {
                s.init_errors.push(body);
            } else if path.ends_with("/response") || path.ends_with("/error") {
                let kind = if path.ends_with("/response") {
                    "response"
                } else {
                    "error"
                };
                let id = segs[segs.len() - 2].to_string();
                let handed = s.handed.iter().find(|(h, _)| *h == id).map(|(_, at)| *at);
                s.answers.push(Answer {
                    took: handed.map_or(Duration::ZERO, |at| at.elapsed()),
                    request_id: id,
                    kind,
                    body,
                });
            }
            out.write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n",
            )
            .unwrap();
        }
        out.flush().unwrap();
    }
}

fn read_chunked(r: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).unwrap();
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// The function as a child process, its output drained as it comes (a
/// full pipe would block the function's logging and stall it).
pub struct Function {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Function {
    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stops the function (if still running) and returns its output.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.child.kill().ok();
        self.finish()
    }

    /// Waits for the function to exit by itself and returns its output.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        // Give the drain threads a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// Starts this build's binary as the function, against `api`, with `env` on
/// top of a safe base: dummy credentials and an endpoint on loopback where
/// nothing listens.
pub fn start_function(api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
    start_binary(env!("CARGO_BIN_EXE_imds-guard-event"), api, env)
}

/// As `start_function`, for the sweep function (`imds-guard`, which also
/// takes every event).
pub fn start_sweep_function(api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
    start_binary(env!("CARGO_BIN_EXE_imds-guard-sweep"), api, env)
}

/// As `start_function`, for a given build of the binary (the load benchmark
/// runs the release build).
/// The outputs function (`imds-guard-outputs`) under the same harness.
pub fn start_outputs_function(api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
    start_binary(env!("CARGO_BIN_EXE_imds-guard-outputs"), api, env)
}

pub fn start_binary(bin: &str, api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "imds-guard")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("function starts");
    let log = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    Function { child, log }
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn hostile_input_never_stops_the_function() {
    let mut malformed_ec2 = crate::common::fixture("run-instances-console.json");
    malformed_ec2["detail"]["responseElements"]["instancesSet"] =
        serde_json::json!({"items": "not a list"});
    let events: Vec<Vec<u8>> = vec![
        b"{}".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{\"source\": \"aws.ec2\", \"detail-type\": \"AWS API Call via CloudTrail\", \"detail\": nul".to_vec(),
        serde_json::to_vec(&malformed_ec2).unwrap(),
        fixture_bytes("run-instances-failed.json"),
        fixture_bytes("unrelated-create-tags.json"),
        fixture_bytes("run-instances-compliant.json"),
    ];
    let n = events.len();
    let api = RuntimeApi::start(events);
    let mut function = start_function(&api, &[]);
    let answers = api.answers(n, Duration::from_secs(30));
    let alive = function.alive();
    let (_, log) = function.stop();
    assert!(alive, "the function must still be serving; log:\n{log}");
    assert_eq!(answers.len(), n, "every event answered; log:\n{log}");
    let kinds: Vec<&str> = answers.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        ["response", "response", "error", "error", "response", "response", "response"]
    );
    assert!(
        answers[0].body.contains("\"status\":\"ignored\""),
        "{}",
        answers[0].body
    );
    assert!(
        answers[3].body.contains("ImdsGuard.MalformedEvent"),
        "{}",
        answers[3].body
    );
    assert!(
        answers[3]
            .body
            .contains("instancesSet.items is a string, not a list"),
        "{}",
        answers[3].body
    );
    assert!(
        answers[6].body.contains("\"outcome\":\"compliant\""),
        "{}",
        answers[6].body
    );
    let ids: Vec<&str> = answers.iter().map(|a| a.request_id.as_str()).collect();
    assert_eq!(
        ids,
        (0..n).map(|i| format!("req-{i}")).collect::<Vec<_>>(),
        "answered in order, each once"
    );
    assert!(!log.contains("panicked"), "{log}");
    // No full event body in the logs.
    assert!(
        !log.contains("tlsDetails") && !log.contains("ASIAEXAMPLEKEY"),
        "{log}"
    );
}

#[test]
fn each_function_takes_its_own_events() {
    // The event function leaves the schedule to the sweep function, with
    // no AWS call; the sweep function sweeps (EC2 is unreachable here, so
    // the sweep fails naming the region it could not list).
    let scheduled = || vec![fixture_bytes("scheduled-event.json")];
    let api = RuntimeApi::start(scheduled());
    let function = start_function(&api, &[]);
    let answers = api.answers(1, Duration::from_secs(30));
    function.stop();
    assert_eq!(answers[0].kind, "response", "{}", answers[0].body);
    assert!(
        answers[0].body.contains("\"status\":\"ignored\"")
            && answers[0].body.contains("the sweep function sweeps"),
        "{}",
        answers[0].body
    );
    assert!(
        !answers[0].body.contains("aws_calls"),
        "{}",
        answers[0].body
    );
    // The report says which guard wrote it.
    let report: serde_json::Value = serde_json::from_str(&answers[0].body).unwrap();
    assert_eq!(
        report["release"],
        serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "commit": imds_guard::release::COMMIT})
    );

    let api = RuntimeApi::start(scheduled());
    let function = start_sweep_function(&api, &[("RETRY_BUDGET_SECONDS", "1")]);
    let answers = api.answers(1, Duration::from_secs(120));
    function.stop();
    assert_eq!(answers[0].kind, "error", "{}", answers[0].body);
    assert!(
        answers[0]
            .body
            .contains("region us-east-1 (listing stopped"),
        "{}",
        answers[0].body
    );

    // The outputs function takes only its queue's batches: a schedule is
    // refused, naming why; a message it cannot read is named for SQS to
    // deliver again (and keep, at last), with no AWS call.
    let batch = serde_json::json!({"Records": [{
        "messageId": "m-unreadable", "eventSource": "aws:sqs", "body": "{\"account\": \"x\"}"
    }]});
    let api = RuntimeApi::start(vec![
        fixture_bytes("scheduled-event.json"),
        serde_json::to_vec(&batch).unwrap(),
    ]);
    let function = start_outputs_function(&api, &[]);
    let answers = api.answers(2, Duration::from_secs(30));
    function.stop();
    assert_eq!(answers[0].kind, "error", "{}", answers[0].body);
    assert!(
        answers[0].body.contains("only batches"),
        "{}",
        answers[0].body
    );
    assert_eq!(answers[1].kind, "response", "{}", answers[1].body);
    let answer: serde_json::Value = serde_json::from_str(&answers[1].body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-unreadable"}]})
    );
}

#[test]
fn each_function_first_logs_its_version_and_commit() {
    // Before the configuration is read: even a function that cannot start
    // says which build it is.
    for start in [start_function, start_sweep_function, start_outputs_function] {
        let api = RuntimeApi::start(vec![]);
        let (status, log) = start(&api, &[("MAX_HOP_LIMIT", "99")]).finish();
        assert!(!status.success());
        let first: serde_json::Value =
            serde_json::from_str(log.lines().next().unwrap_or("")).expect("a JSON log line");
        assert_eq!(first["level"], "INFO", "{log}");
        assert_eq!(
            first["fields"]["version"],
            env!("CARGO_PKG_VERSION"),
            "{log}"
        );
        assert_eq!(
            first["fields"]["commit"],
            imds_guard::release::COMMIT,
            "{log}"
        );
        assert_eq!(
            first["fields"]["message"],
            format!("imds-guard {} starting", imds_guard::release::LINE),
            "{log}"
        );
    }
}

#[test]
fn bad_configuration_fails_init_naming_the_variable() {
    let api = RuntimeApi::start(vec![]);
    let (status, log) = start_function(&api, &[("MAX_HOP_LIMIT", "99")]).finish();
    assert!(!status.success());
    // The Runtime API hears why, as Lambda would show it, before any event.
    let reported = api.init_errors();
    assert_eq!(reported.len(), 1, "{reported:?}");
    let e: serde_json::Value = serde_json::from_str(&reported[0]).unwrap();
    assert_eq!(e["errorType"], "ImdsGuard.Config");
    assert!(
        e["errorMessage"]
            .as_str()
            .unwrap()
            .contains("MAX_HOP_LIMIT"),
        "{e}"
    );
    assert!(api.answers(0, Duration::from_secs(1)).is_empty());
    assert!(
        log.contains("invalid MAX_HOP_LIMIT=\\\"99\\\"")
            || log.contains("invalid MAX_HOP_LIMIT=\"99\""),
        "{log}"
    );
}

#[test]
fn an_unhandled_instance_is_reported_as_a_named_error() {
    // EC2 is unreachable here (port 9 on loopback): the noncompliant launch
    // cannot be looked up, and the invocation fails naming the instance.
    let api = RuntimeApi::start(vec![fixture_bytes("run-instances-console.json")]);
    let function = start_function(&api, &[("RETRY_BUDGET_SECONDS", "1")]);
    let answers = api.answers(1, Duration::from_secs(60));
    function.stop();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].kind, "error");
    assert!(
        answers[0].body.contains("ImdsGuard.Unhandled"),
        "{}",
        answers[0].body
    );
    assert!(
        answers[0].body.contains("i-0a1b2c3d4e5f60718"),
        "{}",
        answers[0].body
    );
}

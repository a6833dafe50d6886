//! Faults at the connection level: a small fault-injecting TCP proxy on
//! loopback in front of the emulator resets or stalls connections, and the
//! guard, through the real SDK and adapters, still ends every instance in an
//! outcome, or fails and names it.

use std::collections::VecDeque;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use imds_guard::aws::{sdk_retry, RegionalClients};
use imds_guard::guard::Guard;
use imds_guard::report::Outcome;

use crate::common::{config, launch_event, moto_endpoint};
use crate::emulator::{ec2, launch, seen, Launch};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Accept, then close at once: the client sees the connection reset.
    Reset,
    /// Accept and say nothing for this long: the client times out.
    Stall(Duration),
}

/// Applies the planned faults to the first connections, in order; every
/// later connection is passed through to `upstream`.
struct Proxy {
    url: String,
    plan: Arc<Mutex<VecDeque<Fault>>>,
}

impl Proxy {
    fn start(upstream: String, plan: Vec<Fault>, reset_everything: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan = Arc::new(Mutex::new(plan.into_iter().collect::<VecDeque<_>>()));
        let p = plan.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let fault = if reset_everything {
                    Some(Fault::Reset)
                } else {
                    p.lock().unwrap().pop_front()
                };
                let upstream = upstream.clone();
                std::thread::spawn(move || match fault {
                    Some(Fault::Reset) => {
                        let _ = conn.reset_on_close();
                        drop(conn);
                    }
                    Some(Fault::Stall(d)) => {
                        std::thread::sleep(d);
                        drop(conn);
                    }
                    None => pipe(conn, &upstream),
                });
            }
        });
        Proxy { url, plan }
    }

    fn faults_left(&self) -> usize {
        self.plan.lock().unwrap().len()
    }
}

trait ResetOnClose {
    fn reset_on_close(&self) -> std::io::Result<()>;
}

impl ResetOnClose for TcpStream {
    /// SO_LINGER 0 makes close() send RST rather than FIN: a real reset.
    fn reset_on_close(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct LingerOpt {
            l_onoff: i32,
            l_linger: i32,
        }
        let opt = LingerOpt {
            l_onoff: 1,
            l_linger: 0,
        };
        extern "C" {
            fn setsockopt(fd: i32, level: i32, name: i32, value: *const LingerOpt, len: u32)
                -> i32;
        }
        const SOL_SOCKET: i32 = 1;
        const SO_LINGER: i32 = 13;
        // SAFETY: a valid socket descriptor and a correctly sized option.
        let rc = unsafe {
            setsockopt(
                self.as_raw_fd(),
                SOL_SOCKET,
                SO_LINGER,
                &opt,
                std::mem::size_of::<LingerOpt>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn pipe(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream.trim_start_matches("http://")) else {
        return;
    };
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut s1, mut c1) = (server, client);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s1.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if std::io::Write::write_all(&mut c1, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c1.shutdown(Shutdown::Write);
    let _ = up.join();
}

async fn guard_via(proxy: &Proxy, pairs: &[(&str, &str)]) -> Guard<RegionalClients> {
    let base = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&proxy.url)
        .region(Region::new("us-east-1"))
        .retry_config(sdk_retry())
        // Shorter than the product's attempt timeout so a stall costs the test seconds, not minutes.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .build(),
        )
        .load()
        .await;
    Guard::new(config(pairs), RegionalClients::new(base))
}

/// An instance in the emulator with IMDSv1 open, and a client to look at it.
async fn optional_instance() -> (aws_sdk_ec2::Client, String) {
    let ec2 = ec2("us-east-1").await;
    let id = launch(&ec2, Launch::default()).await.remove(0);
    (ec2, id)
}

async fn tokens(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    seen(ec2, id).await.tokens
}

#[tokio::test]
async fn connection_resets_are_retried_through() {
    let (ec2, id) = optional_instance().await;
    let proxy = Proxy::start(moto_endpoint(), vec![Fault::Reset, Fault::Reset], false);
    let g = guard_via(&proxy, &[]).await;
    let report = g
        .handle(&launch_event(
            "run-instances-console.json",
            std::slice::from_ref(&id),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(proxy.faults_left(), 0, "both resets were met");
    assert_eq!(tokens(&ec2, &id).await, "required");
}

#[tokio::test]
async fn a_stalled_connection_times_out_and_is_retried() {
    let (ec2, id) = optional_instance().await;
    let proxy = Proxy::start(
        moto_endpoint(),
        vec![Fault::Stall(Duration::from_secs(4))],
        false,
    );
    let g = guard_via(&proxy, &[]).await;
    let report = g
        .handle(&launch_event(
            "run-instances-console.json",
            std::slice::from_ref(&id),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(report.instances[0].outcome, Outcome::Remediated);
    assert_eq!(proxy.faults_left(), 0);
    assert_eq!(tokens(&ec2, &id).await, "required");
}

#[tokio::test]
async fn an_unreachable_ec2_fails_the_invocation_naming_the_instance() {
    let (ec2, id) = optional_instance().await;
    let proxy = Proxy::start(moto_endpoint(), vec![], true);
    let g = guard_via(&proxy, &[("RETRY_BUDGET_SECONDS", "1")]).await;
    let err = g
        .handle(&launch_event(
            "run-instances-console.json",
            std::slice::from_ref(&id),
            None,
        ))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&id) && msg.contains("no answer from ec2"),
        "{msg}"
    );
    assert_eq!(
        tokens(&ec2, &id).await,
        "optional",
        "nothing changed, and the failure says so"
    );
}

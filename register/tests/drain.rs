//! `mixmode-register --drain-while-needed` as a user runs it, against a real etcd and fake
//! Envoys: small HTTP servers answering `GET <path>?demand` the way the filter does
//! (docs/design.md#draining-by-demand). The waits are bounded and generous; what is asserted
//! is order (still registered while needed, gone only after the need stopped), not speed.
#![cfg(test)] // helpers included: see clippy.toml

#[path = "../../tests/src/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd::Etcd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_mixmode-register");
const TOKEN: &str = "drain-test-token";
const PATH: &str = "/.well-known/mixmode/heartbeat";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[derive(Default)]
struct Demand {
    /// While set, every listing says version "1" was needed at the moment it answers.
    needed: bool,
    /// The last need's stamp once `needed` was cleared.
    last_needed_ms: u64,
    needs: u64,
    /// Listings answered (with the right token).
    served: u64,
    /// Requests refused for a missing or wrong token.
    refused: u64,
}

/// A fake Envoy's demand listing for app "checkout", pool "default".
struct FakeEnvoy {
    addr: SocketAddr,
    state: Arc<Mutex<Demand>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEnvoy {
    async fn start() -> FakeEnvoy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Demand::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_lowercase();
                    let authorized = head.contains(&format!("authorization: bearer {TOKEN}\r\n"));
                    let wanted = head.starts_with(&format!("get {PATH}?demand "));
                    let (status, body) = {
                        let mut d = st.lock().unwrap();
                        if !authorized {
                            d.refused += 1;
                            ("401 Unauthorized", String::new())
                        } else if !wanted {
                            ("404 Not Found", String::new())
                        } else {
                            d.served += 1;
                            if d.needed {
                                d.last_needed_ms = unix_ms();
                                d.needs += 1;
                            }
                            let entries = if d.last_needed_ms == 0 {
                                String::new()
                            } else {
                                format!(
                                    r#"{{"pool":"default","app":"checkout","version":"1","last_needed_ms":{},"needed_60s":{}}},
                                       {{"pool":"default","app":"checkout","version":"2","last_needed_ms":{},"needed_60s":5}}"#,
                                    d.last_needed_ms,
                                    d.needs,
                                    unix_ms()
                                )
                            };
                            ("200 OK", format!(r#"{{"demand":[{entries}]}}"#))
                        }
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        FakeEnvoy { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    fn set_needed(&self, needed: bool) {
        self.state.lock().unwrap().needed = needed;
    }

    fn served(&self) -> u64 {
        self.state.lock().unwrap().served
    }
}

impl Drop for FakeEnvoy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keys(etcd: &Etcd) -> Vec<String> {
    let kvs = etcd.range_prefix("/mixmode/").await.unwrap();
    kvs.into_iter().map(|kv| kv.key).collect()
}

/// Polls `cond` every 50 ms for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn registered(etcd: &Etcd) {
    eventually(Duration::from_secs(10), "registered", || async move {
        keys(etcd).await.len() == 1
    })
    .await;
}

fn kill(child: &Child, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts the helper for version 1 at `address`, draining by `urls`.
fn helper(etcd: &Etcd, address: &str, urls: &[String], extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--etcd", &etcd.url(), "--ttl", "2"])
        .args(["--app", "checkout", "--version", "1", "--address", address])
        .arg("--drain-while-needed")
        .args(urls)
        .args(["--token", TOKEN])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn stays_registered_while_needed_and_leaves_within_quiet_ms_after_the_last_need() {
    let etcd = Etcd::start().await.unwrap();
    let envoy = FakeEnvoy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let child = helper(
        &etcd,
        "127.0.0.1:18080",
        &[envoy.url()],
        &[
            "--quiet-ms",
            "300",
            "--max-wait-s",
            "120",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    );
    registered(&etcd).await;
    let r = &ready;
    eventually(
        Duration::from_secs(5),
        "ready file created",
        || async move { r.exists() },
    )
    .await;

    envoy.set_needed(true);
    kill(&child, "-TERM");
    eventually(
        Duration::from_secs(10),
        "ready file removed",
        || async move { !r.exists() },
    )
    .await;
    // Needed: it stays registered, polling, well past quiet-ms and the lease's 2 s TTL (so its
    // keep-alive runs on while it drains).
    let polls = envoy.served();
    let mut child = child;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(child.try_wait().unwrap().is_none(), "left while needed");
        assert_eq!(keys(&etcd).await.len(), 1, "deregistered while needed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        envoy.served() > polls,
        "the helper does not poll the demand"
    );

    envoy.set_needed(false);
    let last_need = Instant::now();
    let out = output(child).await;
    let waited = last_need.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(keys(&etcd).await.is_empty(), "still registered after exit");
    // Quiet is counted from the last need the Envoy saw; generous upper bound for a busy machine.
    assert!(waited < Duration::from_secs(20), "took {waited:?}");
    let log = stderr(&out);
    eprintln!("{log}");
    assert!(log.contains("draining:"), "{log}");
    assert!(log.contains("drained: version 1 not needed for"), "{log}");
    assert!(log.contains("deregistered"), "{log}");
    assert_eq!(envoy.state.lock().unwrap().refused, 0, "token not sent");
}

#[tokio::test]
async fn max_wait_bounds_the_drain_and_exits_3_saying_so() {
    let etcd = Etcd::start().await.unwrap();
    let envoy = FakeEnvoy::start().await;
    envoy.set_needed(true);
    let child = helper(
        &etcd,
        "127.0.0.1:18081",
        &[envoy.url()],
        &["--quiet-ms", "300", "--max-wait-s", "2"],
    );
    registered(&etcd).await;
    let asked = Instant::now();
    kill(&child, "-TERM");
    let out = output(child).await;
    let took = asked.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(took >= Duration::from_secs(2), "gave up early: {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "max wait not enforced: {took:?}"
    );
    let log = stderr(&out);
    assert!(log.contains("gave up draining"), "{log}");
    assert!(log.contains("max wait"), "{log}");
    // Deregistered anyway.
    assert!(keys(&etcd).await.is_empty());
}

#[tokio::test]
async fn an_envoy_that_cannot_be_read_counts_as_needing_the_version() {
    let etcd = Etcd::start().await.unwrap();
    let quiet = FakeEnvoy::start().await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{closed}{PATH}");
    let child = helper(
        &etcd,
        "127.0.0.1:18082",
        &[quiet.url(), dead.clone()],
        &["--quiet-ms", "300", "--max-wait-s", "2"],
    );
    registered(&etcd).await;
    kill(&child, "-TERM");
    let out = output(child).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!("cannot read demand from {dead}?demand"))
            && log.contains("counting it as still needed"),
        "{log}"
    );
    assert!(keys(&etcd).await.is_empty());
}

#[tokio::test]
async fn a_wrapped_server_keeps_running_through_the_drain_and_stops_after() {
    let etcd = Etcd::start().await.unwrap();
    let envoy = FakeEnvoy::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 120", pidfile.display());
    let child = helper(
        &etcd,
        &address,
        &[envoy.url()],
        &["--quiet-ms", "300", "--", "sh", "-c", &script],
    );
    registered(&etcd).await;
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid])
            .status()
            .unwrap()
            .success()
    };

    envoy.set_needed(true);
    // SIGUSR1: the server asking to be drained and stopped.
    kill(&child, "-USR1");
    let mut child = child;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(child.try_wait().unwrap().is_none(), "left while needed");
        assert!(
            alive(&pid),
            "the server was stopped while its version was needed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    envoy.set_needed(false);
    let out = output(child).await;
    // The server got SIGTERM after the drain: sleep killed by signal 15.
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(!alive(&pid));
    assert!(keys(&etcd).await.is_empty());
    assert!(
        stderr(&out).contains("drained: version 1"),
        "{}",
        stderr(&out)
    );
    drop(listener);
}

//! A real etcd for tests and the demo: one member on free loopback ports with a temporary data
//! directory, stoppable and restartable on the same ports and data (so leases and keys survive,
//! as in production), killed by PID on drop. It is read and written through
//! `mixmode_register::Gateway`, the etcd client servers register with.
//!
//! Uses only tokio, tempfile, serde_json and mixmode-register (register/tests include this file).

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use mixmode_register::Kv;
use mixmode_register::{Endpoint, Gateway, GatewayError};
use serde_json::{json, Value};

/// How long a start may take: a fresh member elects itself in about a second; on a busy
/// 2-core machine a restart replaying its WAL has been seen to take a few.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct EtcdError(pub String);

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EtcdError {}

fn err(msg: impl Into<String>) -> EtcdError {
    EtcdError(msg.into())
}

impl From<GatewayError> for EtcdError {
    fn from(e: GatewayError) -> Self {
        EtcdError(e.to_string())
    }
}

pub struct Etcd {
    binary: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl Etcd {
    /// Finds etcd: `$MIXMODE_ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `PATH`.
    pub fn find_binary() -> Result<PathBuf, EtcdError> {
        if let Some(p) = std::env::var_os("MIXMODE_ETCD_BIN") {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(err(format!(
                    "MIXMODE_ETCD_BIN={} is not a file",
                    p.display()
                )))
            };
        }
        let debian = Path::new("/usr/bin/etcd");
        if debian.is_file() {
            return Ok(debian.to_path_buf());
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(
                    "etcd not found (looked at $MIXMODE_ETCD_BIN, /usr/bin/etcd and PATH); \
                     install it with `apt-get install etcd-server` (etcd 3.4)",
                )
            })
    }

    /// Starts a fresh single-member cluster and waits until `/health` says true.
    pub async fn start() -> Result<Etcd, EtcdError> {
        let binary = Etcd::find_binary()?;
        let mut last = err("no attempt");
        // The ports are free when probed but may be taken before etcd binds them: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("mixmode-etcd-")
                .tempdir()
                .map_err(|e| err(format!("temp dir: {e}")))?;
            let unique = dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (client_port, peer_port) = free_ports()?;
            let mut etcd = Etcd {
                binary: binary.clone(),
                name: format!("mixmode-{}-{unique}", std::process::id()),
                client_port,
                peer_port,
                dir,
                child: None,
                starts: 0,
            };
            match etcd.launch().await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The client URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops etcd with SIGTERM (SIGKILL after 5 s). Keys, leases and ports are kept for
    /// [`Etcd::restart`].
    pub async fn stop(&mut self) -> Result<(), EtcdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        // std only sends SIGKILL; a clean stop needs SIGTERM, hence kill(1).
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
            }
        }
    }

    /// Kills etcd with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory and waits for `/health`.
    pub async fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop().await?;
        self.launch().await
    }

    /// etcd's log (stdout and stderr of every start), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `grpc_server_started_total{grpc_method="<method>"}` of the KV/Lease/… service from
    /// `/metrics`: gateway calls are counted there as their gRPC method. Counters restart at
    /// 0 when etcd restarts.
    pub async fn started_total(&self, method: &str) -> Result<u64, EtcdError> {
        let (status, body) = self.gateway().get("/metrics").await?;
        if status != 200 {
            return Err(err(format!("/metrics answered {status}")));
        }
        let text = String::from_utf8_lossy(&body);
        let want = format!("grpc_method=\"{method}\"");
        text.lines()
            .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains(&want))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|v| v as u64)
                    .ok_or_else(|| err(format!("unparsable metrics line {l:?}")))
            })
            .sum()
    }

    /// Range calls served so far: one per mirror poll (and one per [`Etcd::range_prefix`]).
    pub async fn range_count(&self) -> Result<u64, EtcdError> {
        self.started_total("Range").await
    }

    /// All keys under `prefix`, sorted. This is itself a Range call: it adds 1 to
    /// [`Etcd::range_count`].
    pub async fn range_prefix(&self, prefix: &str) -> Result<Vec<Kv>, EtcdError> {
        Ok(self.gateway().range_prefix(prefix).await?)
    }

    /// Puts a key without a lease (e.g. a record of another pool, or garbage).
    pub async fn put(&self, key: &str, value: &str) -> Result<(), EtcdError> {
        Ok(self.gateway().put(key, value, 0).await?)
    }

    /// Deletes one key; returns how many were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<u64, EtcdError> {
        Ok(self.gateway().delete(key).await?)
    }

    /// Remaining seconds of a lease; `None` once etcd no longer knows it.
    pub async fn lease_ttl(&self, lease: i64) -> Result<Option<i64>, EtcdError> {
        Ok(self.gateway().lease_ttl(lease).await?)
    }

    /// The client this etcd is read and written with.
    pub fn gateway(&self) -> Gateway {
        let endpoint = Endpoint {
            host: "127.0.0.1".to_string(),
            port: self.client_port,
        };
        Gateway::new(endpoint, CALL_TIMEOUT)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn launch(&mut self) -> Result<(), EtcdError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| err(format!("etcd log file: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("etcd log file: {e}")))?;
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .args(["--initial-cluster-token", &self.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(err(format!(
                    "etcd exited ({status}) during start {}:\n{}",
                    self.starts,
                    tail(&self.log(), 20)
                )));
            }
            if let Ok((200, body)) = self.gateway().get("/health").await {
                let health: Option<Value> = serde_json::from_slice(&body).ok();
                if health.as_ref().and_then(|h| h.get("health")) == Some(&json!("true")) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(err(format!(
                    "etcd not healthy within {START_TIMEOUT:?}:\n{}",
                    tail(&self.log(), 20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two distinct free ports (both listeners are held until both are known).
fn free_ports() -> Result<(u16, u16), EtcdError> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")));
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| err(format!("no free port: {e}")))
    };
    Ok((port(&a)?, port(&b)?))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

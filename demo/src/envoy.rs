//! Runs Envoy on a configuration the demo rendered itself (the tests crate's launcher only takes
//! the example's patch points). The child stays ours and is killed by PID on drop, which is also
//! what happens on Ctrl-C: the run future is dropped with everything it owns.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use mixmode_tests::client::Req;
use tempfile::TempDir;

pub struct Envoy {
    child: Child,
    // Holds the rendered config and the log; removed with the handle.
    _dir: TempDir,
    admin: SocketAddr,
    pub public: SocketAddr,
    pub heartbeat: SocketAddr,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("envoy"))
}

impl Envoy {
    pub async fn start(yaml: &str, concurrency: usize) -> Result<Envoy> {
        let dir = tempfile::Builder::new()
            .prefix("mixmode-demo-envoy-")
            .tempdir()?;
        let config = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config, yaml)?;
        let log = File::create(&log_path)?;
        let log2 = log.try_clone()?;
        let base_id =
            (std::process::id() % 100_000) * 1000 + INSTANCE.fetch_add(1, Ordering::Relaxed) % 1000;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .arg("--disable-hot-restart")
            // A file-based EDS subscription needs a node identity.
            .args(["--service-node", "mixmode-demo", "--service-cluster", "mixmode-demo"])
            .args(["-l", "warning"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| {
                format!(
                    "spawn {} (is Envoy 1.40 on the PATH? `just setup` installs it; or set ENVOY_BIN)",
                    envoy_bin().display()
                )
            })?;
        let mut envoy = Envoy {
            child,
            _dir: dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            public: SocketAddr::from(([127, 0, 0, 1], 0)),
            heartbeat: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        if let Err(e) = envoy.wait_ready(&admin_path).await {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            // Envoy quotes the whole configuration in some errors: keep lines short.
            let tail: Vec<String> = tail
                .into_iter()
                .rev()
                .map(|l| l.chars().take(400).collect())
                .collect();
            bail!("{e:#}\nEnvoy log:\n{}", tail.join("\n"));
        }
        Ok(envoy)
    }

    async fn wait_ready(&mut self, admin_path: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Envoy exited during start-up with {status}");
            }
            if Instant::now() > deadline {
                bail!("Envoy not ready after 60 s");
            }
            if self.admin.port() == 0 {
                if let Some(addr) = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    self.admin = addr;
                }
            }
            if self.admin.port() != 0 && self.probe().await.unwrap_or(false) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&mut self) -> Result<bool> {
        if self.admin_get("/ready").await?.trim() != "LIVE" {
            return Ok(false);
        }
        let listeners: serde_json::Value =
            serde_json::from_str(&self.admin_get("/listeners?format=json").await?)?;
        for l in listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let sa = &l["local_address"]["socket_address"];
            let (Some(ip), Some(port)) = (sa["address"].as_str(), sa["port_value"].as_u64()) else {
                continue;
            };
            let addr = SocketAddr::new(ip.parse()?, u16::try_from(port)?);
            match l["name"].as_str() {
                Some("public") => self.public = addr,
                Some("heartbeat") => self.heartbeat = addr,
                _ => {}
            }
        }
        Ok(self.public.port() != 0 && self.heartbeat.port() != 0)
    }

    pub async fn admin_get(&self, path: &str) -> Result<String> {
        let r = Req::get(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        if r.status != 200 {
            return Err(anyhow!("admin {path}: {}", r.status));
        }
        Ok(r.text())
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    pub fn heartbeat_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.heartbeat)
    }

    /// Everything Envoy logged so far (level warning and above).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Counters whose names start with `prefix` (no regex: the prefix is matched here).
    pub async fn counters(&self, prefix: &str) -> Result<BTreeMap<String, u64>> {
        let text = self.admin_get("/stats?usedonly").await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                if !name.starts_with(prefix) {
                    return None;
                }
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// Stops Envoy by PID: SIGTERM (it flushes its logs and exits), SIGKILL after 2 s.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

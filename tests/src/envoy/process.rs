//! Starts a real Envoy on the patched example configuration and owns its process: the child
//! stays ours (an Envoy whose parent shell exits gets SIGTERM, docs/envoy-facts.md#operations) and is killed by PID
//! when the handle drops.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tempfile::TempDir;

use super::config::{
    lds_with_plugin_config, render, to_file_lds, with_clusters, with_http1_trailers,
    with_public_buffer_limit, with_public_copy, Patch, ENVOY_YAML, HEARTBEAT_LISTENER,
    PUBLIC_LISTENER,
};
use crate::client::Req;
pub use crate::host::StartError;

/// How to start Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub wasm: PathBuf,
    /// The plugin configuration JSON text (need not be valid: tests check refusals).
    pub plugin_config: String,
    /// The pool behind the public listener (cluster `app`).
    pub upstreams: Vec<SocketAddr>,
    pub concurrency: usize,
    /// 0 = a free port.
    pub public_port: u16,
    pub heartbeat_port: u16,
    pub admin_port: u16,
    pub log_level: String,
    /// How long to wait for Envoy to be ready.
    pub ready_timeout: Duration,
    /// Extra clusters by name, one endpoint each (e.g. `etcd` for `registry.etcd`).
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// The public listener's `per_connection_buffer_limit_bytes` (Envoy's default: 1 MiB).
    pub public_buffer_limit: Option<u32>,
    /// Let HTTP/1 request trailers through the public listener (Envoy drops them by default).
    pub http1_trailers: bool,
    /// Serve the listeners from a watched LDS file instead of `static_resources`, so that
    /// [`Envoy::push_plugin_config`] can change the plugin configuration without a restart.
    pub file_lds: bool,
    /// Envoy's `--drain-time-s` (how long old listeners serve their connections after an
    /// update); Envoy's default when `None`.
    pub drain_time_s: Option<u32>,
    /// More public listeners, copies of the first one with their own name and plugin
    /// configuration (same `vm_id`): e.g. a second pool (`Envoy::listener_url`).
    pub extra_public: Vec<(String, String)>,
}

impl EnvoyOptions {
    pub fn new(
        wasm: PathBuf,
        plugin_config: &serde_json::Value,
        upstreams: Vec<SocketAddr>,
    ) -> Self {
        EnvoyOptions {
            wasm,
            plugin_config: plugin_config.to_string(),
            upstreams,
            concurrency: 1,
            public_port: 0,
            heartbeat_port: 0,
            admin_port: 0,
            log_level: "info".to_string(),
            ready_timeout: Duration::from_secs(60),
            extra_clusters: Vec::new(),
            public_buffer_limit: None,
            http1_trailers: false,
            file_lds: false,
            drain_time_s: None,
            extra_public: Vec::new(),
        }
    }
}

/// How to run Envoy on a configuration text that is already complete: what
/// [`Envoy::start`] uses after rendering the example, and what the demo uses for the
/// configurations it renders itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub concurrency: usize,
    pub log_level: String,
    pub ready_timeout: Duration,
    /// Envoy's `--drain-time-s`; Envoy's default when `None`.
    pub drain_time_s: Option<u32>,
    /// How many listeners besides `public` and `heartbeat` to wait for.
    pub extra_listeners: usize,
}

impl RunOptions {
    pub fn new(concurrency: usize) -> Self {
        RunOptions {
            concurrency,
            log_level: "info".to_string(),
            ready_timeout: Duration::from_secs(60),
            drain_time_s: None,
            extra_listeners: 0,
        }
    }
}

/// The mixmode .wasm the tests load: `$MIXMODE_WASM`, else the workspace's release build.
pub fn wasm_path() -> Result<PathBuf> {
    let path = match std::env::var_os("MIXMODE_WASM") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip1/release/mixmode.wasm"),
    };
    if !path.is_file() {
        return Err(anyhow!(
            "mixmode.wasm not found at {}: build it with `cargo build -p mixmode --release --target wasm32-wasip1` \
             (from the workspace root) or set MIXMODE_WASM to its path",
            path.display()
        ));
    }
    Ok(path.canonicalize().unwrap_or(path))
}

/// The `envoy` binary: `$ENVOY_BIN` (e.g. one of the versions `scripts/envoy-versions.sh`
/// installs), else `envoy` on the PATH.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("envoy"))
}

/// The version of the Envoy the tests start (`envoy --version` of [`envoy_bin`]), e.g.
/// `(1, 36, 4)`; `None` when it cannot be read. Tests use it only where a version is known to
/// behave differently (docs/envoy-versions.md).
pub fn envoy_version() -> Option<(u32, u32, u32)> {
    static VERSION: std::sync::OnceLock<Option<(u32, u32, u32)>> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(envoy_bin()).arg("--version").output().ok()?;
        parse_version(&String::from_utf8_lossy(&out.stdout))
    })
}

/// "envoy  version: <sha>/1.36.4/Clean/RELEASE/BoringSSL" -> (1, 36, 4).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let after = text.split("version:").nth(1)?;
    let mut parts = after.trim().split('/').nth(1)?.split('.');
    let mut next = || parts.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// A running Envoy. Dropping it kills the process.
pub struct Envoy {
    child: Child,
    dir: TempDir,
    log_path: PathBuf,
    admin: SocketAddr,
    public: SocketAddr,
    heartbeat: SocketAddr,
    /// With `file_lds`: the watched LDS file and the text last written to it.
    lds: Option<(PathBuf, String)>,
    /// Other listeners by name (`EnvoyOptions::extra_public`), and how many to wait for.
    others: std::collections::BTreeMap<String, SocketAddr>,
    expect_others: usize,
}

/// What Envoy did with an LDS update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdsOutcome {
    /// Accepted (`listener_manager.lds.update_success` rose) and no listener is still warming.
    Applied,
    /// Refused (`listener_manager.lds.update_rejected` rose): the previous listeners serve on.
    Rejected,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    pub async fn start(opts: &EnvoyOptions) -> Result<Envoy, StartError> {
        let fail = |message: String| StartError {
            exit_code: None,
            message,
            logs: String::new(),
        };
        let dir = tempfile::Builder::new()
            .prefix("mixmode-envoy-")
            .tempdir()
            .map_err(|e| fail(format!("temp dir: {e}")))?;
        let yaml = render(
            ENVOY_YAML,
            &Patch {
                wasm: &opts.wasm,
                plugin_config: &opts.plugin_config,
                upstreams: &opts.upstreams,
                public_port: opts.public_port,
                heartbeat_port: opts.heartbeat_port,
                admin_port: opts.admin_port,
                listen_address: "127.0.0.1",
            },
        )
        .and_then(|y| with_clusters(&y, &opts.extra_clusters))
        .and_then(|y| match opts.public_buffer_limit {
            Some(bytes) => with_public_buffer_limit(&y, bytes),
            None => Ok(y),
        })
        .and_then(|y| {
            if opts.http1_trailers {
                with_http1_trailers(&y)
            } else {
                Ok(y)
            }
        })
        .and_then(|y| {
            opts.extra_public
                .iter()
                .try_fold(y, |y, (name, cfg)| with_public_copy(&y, name, cfg))
        })
        .map_err(|e| fail(format!("{e:#}")))?;
        let (yaml, lds) = if opts.file_lds {
            let lds_path = dir.path().join("lds.yaml");
            let (bootstrap, lds) =
                to_file_lds(&yaml, &lds_path).map_err(|e| fail(format!("{e:#}")))?;
            std::fs::write(&lds_path, &lds).map_err(|e| fail(format!("write LDS: {e}")))?;
            (bootstrap, Some((lds_path, lds)))
        } else {
            (yaml, None)
        };
        let run = RunOptions {
            concurrency: opts.concurrency,
            log_level: opts.log_level.clone(),
            ready_timeout: opts.ready_timeout,
            drain_time_s: opts.drain_time_s,
            extra_listeners: opts.extra_public.len(),
        };
        Self::spawn(dir, &yaml, lds, &run).await
    }

    /// Runs Envoy on `yaml` as it is (listeners named `public` and `heartbeat`, an admin
    /// listener), e.g. a configuration the demo rendered; the temporary directory holding it and
    /// the log is removed with the handle.
    pub async fn run_yaml(yaml: &str, run: &RunOptions) -> Result<Envoy, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("mixmode-envoy-")
            .tempdir()
            .map_err(|e| StartError {
                exit_code: None,
                message: format!("temp dir: {e}"),
                logs: String::new(),
            })?;
        Self::spawn(dir, yaml, None, run).await
    }

    async fn spawn(
        dir: TempDir,
        yaml: &str,
        lds: Option<(PathBuf, String)>,
        run: &RunOptions,
    ) -> Result<Envoy, StartError> {
        let fail = |message: String| StartError {
            exit_code: None,
            message,
            logs: String::new(),
        };
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, yaml).map_err(|e| fail(format!("write config: {e}")))?;
        let log = File::create(&log_path).map_err(|e| fail(format!("log file: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| fail(format!("log file: {e}")))?;
        // Unique per process and instance, so parallel Envoys never share hot-restart state.
        let base_id =
            (std::process::id() % 100_000) * 1000 + INSTANCE.fetch_add(1, Ordering::Relaxed) % 1000;
        let mut cmd = Command::new(envoy_bin());
        if let Some(secs) = run.drain_time_s {
            cmd.args(["--drain-time-s", &secs.to_string()]);
        }
        let child = cmd
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &run.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .arg("--disable-hot-restart")
            // A file-based subscription (EDS, LDS) needs a node identity.
            .args(["--service-node", "mixmode", "--service-cluster", "mixmode"])
            .args(["-l", &run.log_level])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| {
                fail(format!(
                    "spawn {}: {e} (is Envoy on the PATH? `./dev setup` installs it; or set ENVOY_BIN)",
                    envoy_bin().display()
                ))
            })?;
        let mut envoy = Envoy {
            child,
            dir,
            log_path,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            public: SocketAddr::from(([127, 0, 0, 1], 0)),
            heartbeat: SocketAddr::from(([127, 0, 0, 1], 0)),
            lds,
            others: Default::default(),
            expect_others: run.extra_listeners,
        };
        match envoy.wait_ready(&admin_path, run.ready_timeout).await {
            Ok(()) => Ok(envoy),
            Err(e) => {
                let exit_code = envoy.child.try_wait().ok().flatten().and_then(|s| s.code());
                Err(StartError {
                    exit_code,
                    message: format!("{e:#}"),
                    logs: envoy.logs(),
                })
            }
        }
    }

    /// Waits for the admin address, `/ready` = LIVE, and both listeners bound.
    async fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(anyhow!("Envoy exited during start-up with {status}"));
            }
            if Instant::now() > deadline {
                return Err(anyhow!("Envoy not ready after {timeout:?}"));
            }
            if self.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(admin_path) {
                    if let Ok(addr) = text.trim().parse() {
                        self.admin = addr;
                    }
                }
            }
            if self.admin.port() != 0 && self.probe().await.unwrap_or(false) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&mut self) -> Result<bool> {
        let ready = self.admin_get("/ready").await?;
        if ready.trim() != "LIVE" {
            return Ok(false);
        }
        let listeners: serde_json::Value =
            serde_json::from_str(&self.admin_get("/listeners?format=json").await?)?;
        let mut found = 0;
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
            if addr.port() == 0 {
                continue;
            }
            match l["name"].as_str() {
                Some(PUBLIC_LISTENER) => {
                    self.public = addr;
                    found += 1;
                }
                Some(HEARTBEAT_LISTENER) => {
                    self.heartbeat = addr;
                    found += 1;
                }
                Some(other) => {
                    self.others.insert(other.to_string(), addr);
                }
                None => {}
            }
        }
        Ok(found == 2 && self.others.len() >= self.expect_others)
    }

    /// GET on the admin interface; the body as text.
    pub async fn admin_get(&self, path_and_query: &str) -> Result<String> {
        let r = Req::get(format!("http://{}{}", self.admin, path_and_query))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok(r.text())
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// Base URL of an extra public listener (`EnvoyOptions::extra_public`).
    pub fn listener_url(&self, name: &str) -> Option<String> {
        self.others.get(name).map(|a| format!("http://{a}"))
    }

    /// Base URL of the heartbeat listener (no path).
    pub fn heartbeat_base_url(&self) -> String {
        format!("http://{}", self.heartbeat)
    }

    /// URL of `path` on the heartbeat listener.
    pub fn heartbeat_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.heartbeat)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding the rendered config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Counters and gauges whose name matches the regex `filter`, from `/stats`.
    pub async fn stats(&self, filter: &str) -> Result<BTreeMap<String, u64>> {
        let text = self
            .admin_get(&format!("/stats?filter={}", url_escape(filter)))
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// Counters and gauges Envoy has used whose names start with `prefix` (no regex).
    pub async fn counters(&self, prefix: &str) -> Result<BTreeMap<String, u64>> {
        let text = self
            .admin_get(&format!(
                "/stats?usedonly&filter={}",
                url_escape(&format!("^{}", regex_escape(prefix)))
            ))
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// The filter's metrics, named as docs/design.md#metrics names them (`mixmode.redispatch_ok`, ...).
    pub async fn mixmode_metrics(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .stats("^wasmcustom\\.mixmode\\.")
            .await?
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("wasmcustom.")?.to_string(), v)))
            .collect())
    }

    /// Pushes a new plugin configuration (JSON text, valid or not) to every mixmode filter
    /// through the watched LDS file (written aside, then renamed over it: Envoy reacts to the
    /// move), and waits until Envoy has applied or refused it. Needs `file_lds`.
    pub async fn push_plugin_config(&mut self, plugin_config: &str) -> Result<LdsOutcome> {
        let Some((path, text)) = &self.lds else {
            return Err(anyhow!("Envoy was started without file_lds"));
        };
        let path = path.clone();
        let new_text = lds_with_plugin_config(text, plugin_config)?;
        let counters =
            "^listener_manager\\.(lds\\.update_(success|rejected)|total_listeners_warming)$";
        let before = self.stats(counters).await?;
        let tmp = path.with_extension("yaml.new");
        std::fs::write(&tmp, &new_text)?;
        std::fs::rename(&tmp, &path)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let rose = |now: &BTreeMap<String, u64>, name: &str| {
            let key = format!("listener_manager.lds.{name}");
            now.get(&key).copied().unwrap_or(0) > before.get(&key).copied().unwrap_or(0)
        };
        loop {
            let now = self.stats(counters).await?;
            if rose(&now, "update_rejected") {
                return Ok(LdsOutcome::Rejected);
            }
            if rose(&now, "update_success")
                && now.get("listener_manager.total_listeners_warming") == Some(&0)
            {
                self.lds = Some((path, new_text));
                return Ok(LdsOutcome::Applied);
            }
            if Instant::now() > deadline {
                return Err(anyhow!("LDS update neither applied nor rejected: {now:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills Envoy now and returns its exit status.
    pub fn kill(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Waits up to `timeout` for Envoy to exit on its own.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(None)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.kill();
        if std::env::var_os("MIXMODE_KEEP_ENVOY_DIR").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                match TempDir::new() {
                    Ok(d) => d,
                    Err(_) => return,
                },
            );
            let _ = dir.keep();
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::parse_version;

    #[test]
    fn reads_the_version_after_the_path() {
        let text = "\n/root/.cache/mixmode/envoy/1.36.4/bin/envoy  version: \
                    bad8280de85c25b147a90c1d9b8a8c67a13e7134/1.36.4/Clean/RELEASE/BoringSSL\n";
        assert_eq!(parse_version(text), Some((1, 36, 4)));
        assert_eq!(parse_version("no version here"), None);
    }
}

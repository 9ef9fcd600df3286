//! The library API: build a harness, start it, talk to its listeners, read its metrics and
//! logs, shut it down.

use crate::abi;
use crate::admin;
use crate::error::Error;
use crate::frontend::{self, FilterSlot, FrontOptions, ListenerCtx};
use crate::histogram::Histogram;
use crate::host::{Cluster, HostState, PluginEnv};
use crate::plugin::{Plugin, WasmSource};
use crate::pool::UpstreamPool;
use crate::shared::{lock, LogLine, SharedData};
use crate::startup::{self, HostWide, Settings};
use crate::types::LogLevel;
use crate::worker::WorkerMsg;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime::Linker;

/// One listening socket of the front end.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Address to bind; port 0 picks a free one (read it back with `listener_addrs`).
    pub bind: SocketAddr,
    /// The pool requests the filter lets through go to, round robin (an empty pool answers
    /// Envoy's 503 "no healthy upstream"); `None` answers Envoy's "no route" 404.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The `cluster_name` property of its streams.
    pub cluster_name: String,
    /// Envoy's header-based stateful session on this listener's route: a request whose
    /// header holds base64("ip:port") of a member goes to that member; any other gets round
    /// robin and the response carries the header naming the host chosen.
    pub stateful_session_header: Option<String>,
    /// Response headers removed between the wasm filters and the upstream, as an
    /// `envoy.filters.http.header_mutation` placed after the wasm filters does (encoders run
    /// in reverse, so the filter never sees them): e.g. the stateful session's header, which
    /// names an internal host.
    pub response_headers_removed: Vec<String>,
    /// The route's `retry_on: connect-failure` with `num_retries` this many, to another host
    /// (the `previous_hosts` predicate, `host_selection_retry_max_attempts: 3`). 0: no
    /// retry (Envoy's default route): the client gets the 503.
    pub connect_failure_retries: u32,
}

impl ListenerSpec {
    /// A listener in front of `upstreams` (cluster name "upstream").
    pub fn pool(bind: SocketAddr, upstreams: Vec<SocketAddr>) -> Self {
        ListenerSpec {
            bind,
            upstreams: Some(upstreams),
            cluster_name: "upstream".into(),
            stateful_session_header: None,
            response_headers_removed: Vec::new(),
            connect_failure_retries: 0,
        }
    }

    /// A listener with no route.
    pub fn without_upstream(bind: SocketAddr) -> Self {
        ListenerSpec {
            bind,
            upstreams: None,
            cluster_name: String::new(),
            stateful_session_header: None,
            response_headers_removed: Vec::new(),
            connect_failure_retries: 0,
        }
    }

    /// Turns on the header-based stateful session with this header.
    pub fn stateful_session(mut self, header: impl Into<String>) -> Self {
        self.stateful_session_header = Some(header.into());
        self
    }

    /// Removes this header from every response the route gives (a header_mutation after the
    /// wasm filters).
    pub fn remove_response_header(mut self, header: impl Into<String>) -> Self {
        self.response_headers_removed.push(header.into());
        self
    }

    /// Retries a connect failure this many times on another host of the pool.
    pub fn connect_failure_retries(mut self, n: u32) -> Self {
        self.connect_failure_retries = n;
        self
    }
}

fn bind_addr(bind: &str) -> SocketAddr {
    bind.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Builds a [`RunningHarness`]. Every option has Envoy's default.
///
/// The `plugin_*`, `name`, `root_id`, `vm_id` and `allow_on_headers_stop_iteration` methods
/// describe the first filter of the chain; [`Self::filter`] adds more after it and
/// [`Self::service`] adds singleton services.
pub struct HarnessBuilder {
    first: Plugin,
    filters: Vec<Plugin>,
    services: Vec<Plugin>,
    workers: usize,
    main_thread_vm: bool,
    listeners: Vec<ListenerSpec>,
    clusters: HashMap<String, Cluster>,
    log_level: LogLevel,
    echo_logs: bool,
    route_timeout: Duration,
    stream_idle_timeout: Duration,
    admin: Option<SocketAddr>,
    compile_cache: bool,
}

/// Entry point: `Harness::builder()`.
pub struct Harness;

impl Harness {
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            first: Plugin::default(),
            filters: Vec::new(),
            services: Vec::new(),
            workers: 1,
            main_thread_vm: true,
            listeners: Vec::new(),
            clusters: HashMap::new(),
            log_level: LogLevel::Info,
            echo_logs: false,
            route_timeout: Duration::from_secs(15),
            stream_idle_timeout: Duration::from_secs(300),
            admin: None,
            compile_cache: true,
        }
    }
}

impl HarnessBuilder {
    /// One more filter at the end of the chain (after the one the `plugin_*` methods describe,
    /// if any): requests go through the filters in the order they were added, responses in
    /// the reverse order, as Envoy runs `http_filters`.
    pub fn filter(mut self, plugin: Plugin) -> Self {
        self.filters.push(plugin);
        self
    }

    /// A singleton service (Envoy's `bootstrap_extensions` wasm service with
    /// `singleton: true`): one VM on the main thread, no HTTP streams; it gets
    /// `proxy_on_vm_start`, `proxy_on_configure`, ticks, queue and call callbacks, and shares
    /// the shared-data store of its `vm_id` with the filters of that `vm_id`.
    pub fn service(mut self, plugin: Plugin) -> Self {
        self.services.push(plugin);
        self
    }

    /// The filter module, from a file.
    pub fn plugin_wasm(mut self, path: impl Into<PathBuf>) -> Self {
        self.first.wasm = Some(WasmSource::Path(path.into()));
        self
    }

    /// The filter module (binary or WAT text).
    pub fn plugin_wasm_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.first.wasm = Some(WasmSource::Bytes(bytes.into()));
        self
    }

    /// Envoy's `configuration` of the plugin (read by `proxy_on_configure`).
    pub fn plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.first.config = bytes.into();
        self
    }

    /// Envoy's `vm_config.configuration` (read by `proxy_on_vm_start`).
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.first.vm_config = bytes.into();
        self
    }

    /// The plugin's `name` (property `plugin_name`, log prefix). Default "plugin".
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.first.name = name.into();
        self
    }

    /// The plugin's `root_id` (property `plugin_root_id`). Default "".
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.first.root_id = root_id.into();
        self
    }

    /// The `vm_id` (property `plugin_vm_id`; names the shared-data/queue namespace).
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.first.vm_id = vm_id.into();
        self
    }

    /// Envoy's `allow_on_headers_stop_iteration`: when true, a Pause from request headers
    /// still lets body callbacks arrive. Default false, like Envoy.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.first.allow_on_headers_stop_iteration = allow;
        self
    }

    /// Worker VM instances serving requests (Envoy's `--concurrency`). Default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Whether to run, as Envoy does, one more VM instance for the main thread: it serves no
    /// request but has its own root context and ticks. Default true.
    pub fn main_thread_vm(mut self, on: bool) -> Self {
        self.main_thread_vm = on;
        self
    }

    /// A listener forwarding to `upstream` (cluster name "upstream").
    pub fn listener(mut self, bind: &str, upstream: SocketAddr) -> Self {
        self.listeners
            .push(ListenerSpec::pool(bind_addr(bind), vec![upstream]));
        self
    }

    /// A listener in front of a pool, balanced round robin; members can be taken out and put
    /// back at run time through [`RunningHarness::pool`].
    pub fn listener_pool(mut self, bind: &str, upstreams: Vec<SocketAddr>) -> Self {
        self.listeners
            .push(ListenerSpec::pool(bind_addr(bind), upstreams));
        self
    }

    /// A listener with no upstream (e.g. one only the filter answers, like a heartbeat path).
    pub fn listener_without_upstream(mut self, bind: &str) -> Self {
        self.listeners
            .push(ListenerSpec::without_upstream(bind_addr(bind)));
        self
    }

    /// A listener given in full.
    pub fn listener_spec(mut self, spec: ListenerSpec) -> Self {
        self.listeners.push(spec);
        self
    }

    /// A cluster `dispatch_http_call` can name, at a fixed address.
    pub fn cluster(mut self, name: impl Into<String>, addr: SocketAddr) -> Self {
        self.clusters.insert(name.into(), Cluster::Static(addr));
        self
    }

    /// An ORIGINAL_DST cluster (`use_http_header: true`): the call's first
    /// `x-envoy-original-dst-host` names the target.
    pub fn original_dst_cluster(mut self, name: impl Into<String>) -> Self {
        self.clusters.insert(name.into(), Cluster::OriginalDst);
        self
    }

    /// The lowest level kept (and returned by `proxy_get_log_level`). Default info, Envoy's.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Also print log lines to stderr as they come, in Envoy's format.
    pub fn echo_logs(mut self, on: bool) -> Self {
        self.echo_logs = on;
        self
    }

    /// The route timeout (until upstream response headers). Default 15 s, Envoy's.
    pub fn route_timeout(mut self, t: Duration) -> Self {
        self.route_timeout = t;
        self
    }

    /// How long a stream may wait (e.g. paused) with nothing happening. Default 300 s.
    pub fn stream_idle_timeout(mut self, t: Duration) -> Self {
        self.stream_idle_timeout = t;
        self
    }

    /// Serve `/stats` and `/logs` on this address.
    pub fn admin(mut self, bind: SocketAddr) -> Self {
        self.admin = Some(bind);
        self
    }

    /// Keep compiled modules in wasmtime's on-disk cache (faster repeated starts). Default on.
    pub fn compile_cache(mut self, on: bool) -> Self {
        self.compile_cache = on;
        self
    }

    /// Compiles the modules, runs each plugin's canary VM, starts the VM instances and the
    /// listeners. Must be called inside a multi-threaded tokio runtime.
    pub async fn start(self) -> Result<RunningHarness, Error> {
        let mut chain = Vec::new();
        if self.first.wasm.is_some() {
            chain.push(self.first);
        }
        chain.extend(self.filters);
        if chain.is_empty() && self.services.is_empty() {
            return Err(Error::Io("no plugin module given".into()));
        }
        let engine = startup::engine(self.compile_cache)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        abi::link_all(&mut linker).map_err(|e| Error::Compile(format!("{e:#}")))?;
        let linker = Arc::new(linker);
        let settings = Settings {
            log_level: self.log_level,
            echo_logs: self.echo_logs,
            clusters: self.clusters,
        };
        let mut wide = HostWide::default();
        // Services first, as Envoy creates bootstrap extensions before the listeners' filters.
        let plugins = self
            .services
            .into_iter()
            .map(|p| (p, true))
            .chain(chain.into_iter().map(|p| (p, false)));
        let mut loaded = Vec::new();
        for (plugin, service) in plugins {
            loaded.push(
                startup::load_plugin(plugin, service, &engine, &linker, &mut wide, &settings)
                    .await?,
            );
        }
        let started = startup::spawn_instances(
            &loaded,
            self.main_thread_vm,
            self.workers,
            &engine,
            &linker,
            &wide,
        )
        .await?;
        // The first filter's store answers `shared_data`; with no filter, the first service's.
        let primary = loaded
            .iter()
            .find(|l| !l.service)
            .or(loaded.first())
            .map(|l| l.env.clone())
            .ok_or(Error::Io("no plugin module given".into()))?;
        let filters: Vec<usize> = (0..loaded.len()).filter(|i| !loaded[*i].service).collect();
        // request_workers[w][f]: filter f's VM on worker w and its slot there.
        let request_workers: Vec<Vec<FilterSlot>> = (0..self.workers)
            .map(|w| {
                filters
                    .iter()
                    .filter_map(|f| started.instances.iter().find_map(|i| i.serves(*f, w)))
                    .collect()
            })
            .collect();
        let allow: Vec<bool> = filters
            .iter()
            .map(|f| loaded[*f].allow_on_headers_stop_iteration)
            .collect();
        let senders: Vec<Sender<WorkerMsg>> =
            started.instances.iter().map(|i| i.sender.clone()).collect();
        let threads = started.threads;
        let failure = started.failure;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut running = RunningHarness {
            env: primary.clone(),
            stores: wide.stores.clone(),
            listener_addrs: Vec::new(),
            pools: Vec::new(),
            admin_addr: None,
            shutdown_tx,
            tasks: Vec::new(),
            threads,
            senders: senders.clone(),
        };
        if let Some(e) = failure {
            running.stop();
            return Err(e);
        }

        let request_workers = Arc::new(request_workers);
        let opts = Arc::new(FrontOptions {
            allow_on_headers_stop_iteration: allow,
            route_timeout: self.route_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
        });
        let conn_ids = Arc::new(AtomicU64::new(0));
        for spec in self.listeners {
            let listener = match TcpListener::bind(spec.bind).await {
                Ok(l) => l,
                Err(e) => {
                    running.stop();
                    return Err(Error::Io(format!("cannot bind {}: {e}", spec.bind)));
                }
            };
            let addr = listener.local_addr().unwrap_or(spec.bind);
            running.listener_addrs.push(addr);
            let pool = spec
                .upstreams
                .map(|u| Arc::new(UpstreamPool::new(&u, spec.stateful_session_header)));
            running.pools.push(pool.clone());
            let ctx = Arc::new(ListenerCtx {
                workers: request_workers.clone(),
                next_worker: AtomicUsize::new(0),
                upstream: pool,
                cluster_name: spec.cluster_name,
                response_headers_removed: spec.response_headers_removed,
                connect_failure_retries: spec.connect_failure_retries,
                opts: opts.clone(),
                conn_ids: conn_ids.clone(),
            });
            running.tasks.push(tokio::spawn(frontend::serve(
                listener,
                ctx,
                shutdown_rx.clone(),
            )));
        }
        if let Some(bind) = self.admin {
            let listener = match TcpListener::bind(bind).await {
                Ok(l) => l,
                Err(e) => {
                    running.stop();
                    return Err(Error::Io(format!("cannot bind admin {bind}: {e}")));
                }
            };
            running.admin_addr = listener.local_addr().ok();
            let pools = Arc::new(running.pools.clone());
            running.tasks.push(tokio::spawn(admin::serve(
                listener,
                primary,
                pools,
                shutdown_rx.clone(),
            )));
        }
        Ok(running)
    }
}

/// A started harness. Dropping it stops it too; `shutdown` also waits for the VM threads.
pub struct RunningHarness {
    /// The first filter's (else the first service's); its metrics and logs are everyone's.
    env: Arc<PluginEnv>,
    /// One shared-data store per `vm_id`.
    stores: HashMap<String, Arc<Mutex<SharedData>>>,
    listener_addrs: Vec<SocketAddr>,
    pools: Vec<Option<Arc<UpstreamPool>>>,
    admin_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    senders: Vec<Sender<WorkerMsg>>,
}

impl RunningHarness {
    /// The bound address of each listener, in the order they were added.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listener_addrs.clone()
    }

    /// The pool behind listener `index` (in the order listeners were added), to take members
    /// out and put them back while traffic flows; `None` for a listener without upstream.
    pub fn pool(&self, index: usize) -> Option<Arc<UpstreamPool>> {
        self.pools.get(index).cloned().flatten()
    }

    /// The admin endpoint's address, when one was asked for.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Counters and gauges by the name the plugin defined (Envoy's `/stats` shows them with a
    /// `wasmcustom.` prefix).
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        lock(&self.env.metrics).snapshot()
    }

    /// Histograms by the name the plugin defined, with their samples binned as Envoy bins
    /// them ([`Histogram::quantile`], [`Histogram::count`]). Not in [`Self::metrics`].
    pub fn histograms(&self) -> BTreeMap<String, Histogram> {
        lock(&self.env.metrics).histograms()
    }

    /// What the admin endpoint's `/stats` shows, in Envoy's text format.
    pub fn stats_text(&self) -> String {
        admin::stats_text(&self.env)
    }

    /// One metric's value; `None` if the plugin never defined it.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.metrics().get(name).copied()
    }

    /// Every log line so far as (level, message).
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        lock(&self.env.logs)
            .iter()
            .map(|l| (l.level, l.message.clone()))
            .collect()
    }

    /// Every log line so far, with the VM instance that wrote it.
    pub fn log_lines(&self) -> Vec<LogLine> {
        lock(&self.env.logs).clone()
    }

    /// A shared-data entry as the first filter sees it (the store of its `vm_id`):
    /// (value, cas).
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.env.shared_data).get(key.as_bytes())
    }

    /// Writes a shared-data entry of the first filter's store unconditionally (CAS 0), as
    /// another VM with the same `vm_id` could.
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        lock(&self.env.shared_data).set(key.as_bytes(), value, 0);
    }

    /// Every shared-data key of the first filter's store.
    pub fn shared_data_keys(&self) -> Vec<String> {
        keys(&self.env.shared_data)
    }

    /// A shared-data entry in the store of `vm_id`: (value, cas). `None` also when no plugin
    /// has that `vm_id`.
    pub fn shared_data_in(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.stores
            .get(vm_id)
            .and_then(|s| lock(s).get(key.as_bytes()))
    }

    /// Every shared-data key in the store of `vm_id`.
    pub fn shared_data_keys_in(&self, vm_id: &str) -> Vec<String> {
        self.stores.get(vm_id).map(|s| keys(s)).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for s in &self.senders {
            let _ = s.send(WorkerMsg::Shutdown);
        }
    }

    /// Stops the listeners and the VM instances and waits for the VM threads to end.
    pub async fn shutdown(mut self) {
        self.stop();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn keys(store: &Mutex<SharedData>) -> Vec<String> {
    lock(store)
        .keys()
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

impl Drop for RunningHarness {
    fn drop(&mut self) {
        self.stop();
    }
}

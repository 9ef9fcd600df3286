//! Starting the plugins of a harness: compile each module, run its canary VM, then one VM
//! thread per instance (the main thread's and the workers' for filters, the main thread's
//! alone for singleton services), all reachable from one table for queue notifications.
//! Plugins of one `vm_id`, code and VM configuration share their VMs (one root context each),
//! as Envoy shares a VM between plugins of one vm key.

use crate::error::Error;
use crate::host::{Cluster, HostState, PluginEnv};
use crate::load::{self, AbiVersion, VmStartError};
use crate::plugin::Plugin;
use crate::shared::{lock, LogLine, Metrics, Queues, SharedData};
use crate::types::LogLevel;
use crate::worker::{self, Vm, WorkerMsg};
use std::collections::HashMap;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use wasmtime::{Config, Engine, Linker, Module};

/// What every plugin of one harness shares; `stores` has one shared-data store per `vm_id`.
#[derive(Default)]
pub(crate) struct HostWide {
    pub stores: HashMap<String, Arc<Mutex<SharedData>>>,
    pub queues: Arc<Mutex<Queues>>,
    pub metrics: Arc<Mutex<Metrics>>,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    pub workers: Arc<Mutex<Vec<Sender<WorkerMsg>>>>,
}

/// Harness-wide settings every plugin's environment copies.
pub(crate) struct Settings {
    pub log_level: LogLevel,
    pub echo_logs: bool,
    pub clusters: HashMap<String, Cluster>,
}

/// A compiled plugin whose canary VM accepted its configuration.
pub(crate) struct Loaded {
    pub env: Arc<PluginEnv>,
    /// The module's bytes: with the `vm_id` and VM configuration, what decides whether two
    /// plugins share a VM.
    pub wasm: Vec<u8>,
    pub module: Module,
    pub abi: AbiVersion,
    pub service: bool,
    pub allow_on_headers_stop_iteration: bool,
}

pub(crate) fn engine(cache: bool) -> Result<Engine, Error> {
    let mut config = Config::new();
    if cache {
        // A cache that cannot be opened only costs compile time.
        if let Ok(c) = wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
            config.cache(Some(c));
        }
    }
    Engine::new(&config).map_err(|e| Error::Compile(format!("{e:#}")))
}

/// Compiles the plugin's module, checks it as cpp-host does, and runs Envoy's throw-away
/// canary VM (`proxy_on_vm_start`/`proxy_on_configure`); a refusal stops everything there.
pub(crate) async fn load_plugin(
    plugin: Plugin,
    service: bool,
    engine: &Engine,
    linker: &Arc<Linker<HostState>>,
    wide: &mut HostWide,
    settings: &Settings,
) -> Result<Loaded, Error> {
    let source = plugin.wasm.as_ref().ok_or(Error::Io(format!(
        "plugin {} has no module (Plugin::wasm or Plugin::wasm_bytes)",
        plugin.name
    )))?;
    let wasm = source.read().map_err(Error::Io)?;
    let module = {
        let engine = engine.clone();
        let wasm = wasm.clone();
        tokio::task::spawn_blocking(move || Module::new(&engine, &wasm))
            .await
            .map_err(|e| Error::Compile(e.to_string()))?
            .map_err(|e| Error::Compile(format!("{e:#}")))?
    };
    let abi = load::check(&module).map_err(Error::Load)?;
    let env = Arc::new(PluginEnv {
        name: plugin.name,
        root_id: plugin.root_id,
        shared_data: wide.stores.entry(plugin.vm_id.clone()).or_default().clone(),
        vm_id: plugin.vm_id,
        plugin_config: plugin.config,
        vm_config: plugin.vm_config,
        log_level: settings.log_level,
        echo_logs: settings.echo_logs,
        clusters: settings.clusters.clone(),
        queues: wide.queues.clone(),
        metrics: wide.metrics.clone(),
        logs: wide.logs.clone(),
        workers: wide.workers.clone(),
        rt: tokio::runtime::Handle::current(),
    });
    {
        let (engine, module, linker, env) =
            (engine.clone(), module.clone(), linker.clone(), env.clone());
        tokio::task::spawn_blocking(move || {
            Vm::start(
                &engine,
                &module,
                abi,
                &linker,
                vec![env.clone()],
                "canary".into(),
                usize::MAX,
                None,
            )
            .map(drop)
            .map_err(|e| start_error(e, "canary", &env))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
    }
    Ok(Loaded {
        env,
        wasm,
        module,
        abi,
        service,
        allow_on_headers_stop_iteration: plugin.allow_on_headers_stop_iteration,
    })
}

/// Which thread of Envoy's an instance stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Main,
    Worker(usize),
}

/// One VM instance to start: the plugins it runs (indexes into the loaded list, in the order
/// their root contexts are created) and which thread.
pub(crate) struct Instance {
    pub plugins: Vec<usize>,
    pub role: Role,
    pub sender: Sender<WorkerMsg>,
}

impl Instance {
    /// Where filter `plugin` runs on worker `w`: this instance's sender and the plugin's slot.
    pub fn serves(&self, plugin: usize, w: usize) -> Option<(Sender<WorkerMsg>, usize)> {
        if self.role != Role::Worker(w) {
            return None;
        }
        let slot = self.plugins.iter().position(|p| *p == plugin)?;
        Some((self.sender.clone(), slot))
    }
}

/// The started threads and every instance's sender, in `instances` order.
pub(crate) struct Started {
    pub instances: Vec<Instance>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// The first instance that failed to start, if any (the others are running: stop them).
    pub failure: Option<Error>,
}

/// The loaded plugins grouped by Envoy's vm key (`vm_id`, VM configuration, code), each group
/// in load order.
fn vm_groups(loaded: &[Loaded]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let same = |g: &&mut Vec<usize>| {
            let first = &loaded[g[0]];
            first.env.vm_id == l.env.vm_id
                && first.env.vm_config == l.env.vm_config
                && first.wasm == l.wasm
        };
        match groups.iter_mut().find(same) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// Starts one thread per VM instance: for each group of plugins sharing a VM, the main
/// thread's (its services, and its filters when `main_thread_vm`) and one per worker (its
/// filters).
pub(crate) async fn spawn_instances(
    loaded: &[Loaded],
    main_thread_vm: bool,
    workers: usize,
    engine: &Engine,
    linker: &Arc<Linker<HostState>>,
    wide: &HostWide,
) -> Result<Started, Error> {
    let mut plan = Vec::new();
    for group in vm_groups(loaded) {
        let main: Vec<usize> = group
            .iter()
            .copied()
            .filter(|p| loaded[*p].service || main_thread_vm)
            .collect();
        let filters: Vec<usize> = group
            .iter()
            .copied()
            .filter(|p| !loaded[*p].service)
            .collect();
        if !main.is_empty() {
            plan.push((main, Role::Main));
        }
        if !filters.is_empty() {
            plan.extend((0..workers).map(|w| (filters.clone(), Role::Worker(w))));
        }
    }
    let mut instances = Vec::new();
    let mut receivers = Vec::new();
    for (plugins, role) in plan {
        let (sender, rx) = channel::<WorkerMsg>();
        instances.push(Instance {
            plugins,
            role,
            sender,
        });
        receivers.push(rx);
    }
    *lock(&wide.workers) = instances.iter().map(|i| i.sender.clone()).collect();
    let mut threads = Vec::new();
    let mut ready = Vec::new();
    for (index, (inst, rx)) in instances.iter().zip(receivers).enumerate() {
        let first = &loaded[inst.plugins[0]];
        let envs: Vec<Arc<PluginEnv>> = inst
            .plugins
            .iter()
            .map(|p| loaded[*p].env.clone())
            .collect();
        let (engine, module, linker, env, abi) = (
            engine.clone(),
            first.module.clone(),
            linker.clone(),
            first.env.clone(),
            first.abi,
        );
        let self_tx = inst.sender.clone();
        let name = match inst.role {
            Role::Main => "main".to_string(),
            Role::Worker(w) => format!("worker {w}"),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-wasm {} {name}", env.name))
            .spawn(move || {
                match Vm::start(
                    &engine,
                    &module,
                    abi,
                    &linker,
                    envs,
                    name.clone(),
                    index,
                    Some(self_tx),
                ) {
                    Ok(vm) => {
                        let _ = ready_tx.send(Ok(()));
                        worker::run(vm, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(start_error(e, &name, &env)));
                    }
                }
            })
            .map_err(|e| Error::Io(format!("cannot start a VM thread: {e}")))?;
        threads.push(thread);
        ready.push(ready_rx);
    }
    let mut failure = None;
    for r in ready {
        match r.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(Error::Io("a VM thread died".into()))),
        }
    }
    Ok(Started {
        instances,
        threads,
        failure,
    })
}

pub(crate) fn start_error(e: VmStartError, instance: &str, env: &PluginEnv) -> Error {
    let logs = lock(&env.logs).clone();
    match e {
        VmStartError::Load(e) => Error::Load(e),
        VmStartError::Instantiate(message) | VmStartError::Crashed(message) => Error::Instantiate {
            plugin: env.name.clone(),
            instance: instance.to_string(),
            message,
        },
        VmStartError::VmStartRefused => Error::Refused {
            callback: "proxy_on_vm_start",
            plugin: env.name.clone(),
            instance: instance.to_string(),
            logs,
        },
        VmStartError::ConfigureRefused => Error::Refused {
            callback: "proxy_on_configure",
            plugin: env.name.clone(),
            instance: instance.to_string(),
            logs,
        },
    }
}

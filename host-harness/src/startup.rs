//! Starting the plugins of a harness: compile each module, run its canary VM, then one VM
//! thread per instance (the main thread's and the workers' for a filter, the main thread's
//! alone for a singleton service), all reachable from one table for queue notifications.

use crate::harness::Error;
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
                env.clone(),
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

/// One VM instance to start: which plugin (index into the loaded list) and which thread.
pub(crate) struct Instance {
    pub plugin: usize,
    pub role: Role,
    pub sender: Sender<WorkerMsg>,
}

/// The started threads and every instance's sender, in `instances` order.
pub(crate) struct Started {
    pub instances: Vec<Instance>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// The first instance that failed to start, if any (the others are running: stop them).
    pub failure: Option<Error>,
}

/// Starts one thread per VM instance: each filter gets the main thread's (when asked) and
/// one per worker; each service the main thread's alone.
pub(crate) async fn spawn_instances(
    loaded: &[Loaded],
    main_thread_vm: bool,
    workers: usize,
    engine: &Engine,
    linker: &Arc<Linker<HostState>>,
    wide: &HostWide,
) -> Result<Started, Error> {
    let mut plan = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        if l.service || main_thread_vm {
            plan.push((i, Role::Main));
        }
        if !l.service {
            plan.extend((0..workers).map(|w| (i, Role::Worker(w))));
        }
    }
    let mut instances = Vec::new();
    let mut receivers = Vec::new();
    for (plugin, role) in plan {
        let (sender, rx) = channel::<WorkerMsg>();
        instances.push(Instance {
            plugin,
            role,
            sender,
        });
        receivers.push(rx);
    }
    *lock(&wide.workers) = instances.iter().map(|i| i.sender.clone()).collect();
    let mut threads = Vec::new();
    let mut ready = Vec::new();
    for (index, (inst, rx)) in instances.iter().zip(receivers).enumerate() {
        let l = &loaded[inst.plugin];
        let (engine, module, linker, env, abi) = (
            engine.clone(),
            l.module.clone(),
            linker.clone(),
            l.env.clone(),
            l.abi,
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
                    env.clone(),
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
            instance: instance.to_string(),
            message,
        },
        VmStartError::VmStartRefused => Error::Refused {
            callback: "proxy_on_vm_start",
            instance: instance.to_string(),
            logs,
        },
        VmStartError::ConfigureRefused => Error::Refused {
            callback: "proxy_on_configure",
            instance: instance.to_string(),
            logs,
        },
    }
}

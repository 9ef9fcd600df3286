//! The host type behind the ABI: per-VM state (`HostState`), the plugin-wide environment
//! (`PluginEnv`) and the guest-memory helpers every ABI section uses.

pub(crate) use crate::messages::StreamProps;
use crate::messages::{StreamEvent, WorkerMsg};
use crate::shared::{lock, LogLine, Metrics, Queues, SharedData};
use crate::types::{Headers, LogLevel, Status};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::{Caller, Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

/// Where a cluster name sends `dispatch_http_call`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// A fixed address.
    Static(SocketAddr),
    /// Envoy's ORIGINAL_DST with `use_http_header: true`: the first `x-envoy-original-dst-host`
    /// header of the call names the target.
    OriginalDst,
}

/// What every VM instance of one plugin shares. The stores behind `Arc`s are shared further:
/// `shared_data` with every plugin of the same `vm_id`, the rest with every plugin of the
/// harness (Envoy's queues are keyed by `vm_id` inside one registry, its stats and log are
/// the server's).
pub(crate) struct PluginEnv {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub log_level: LogLevel,
    pub echo_logs: bool,
    pub clusters: HashMap<String, Cluster>,
    pub shared_data: Arc<Mutex<SharedData>>,
    pub queues: Arc<Mutex<Queues>>,
    pub metrics: Arc<Mutex<Metrics>>,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    /// Senders to every VM instance's thread of every plugin, by instance index (for queue
    /// notifications: a queue's owner may be another plugin of the same `vm_id`).
    pub workers: Arc<Mutex<Vec<Sender<WorkerMsg>>>>,
    pub rt: tokio::runtime::Handle,
}

impl PluginEnv {
    pub fn log(&self, level: LogLevel, instance: &str, message: String) {
        if level < self.log_level {
            return;
        }
        if self.echo_logs {
            eprintln!(
                "[{}][wasm] wasm log {} {}: {}",
                level.name(),
                self.name,
                self.root_id,
                message
            );
        }
        lock(&self.logs).push(LogLine {
            level,
            message,
            plugin: self.name.clone(),
            instance: instance.to_string(),
        });
    }
}

/// One HTTP stream's data as the filter sees it.
pub(crate) struct Stream {
    /// `None` once the request phase is over: Envoy's filter cannot read request headers in
    /// the response phase (§3a).
    pub request_headers: Option<Headers>,
    /// Kept for `on_log`, where Envoy gives the request back.
    pub saved_request_headers: Headers,
    pub request_body: Vec<u8>,
    pub request_trailers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub response_body: Vec<u8>,
    pub response_trailers: Option<Headers>,
    pub props: StreamProps,
    /// The root context (the plugin) this stream belongs to.
    pub root: u32,
    pub in_log: bool,
    pub events: UnboundedSender<StreamEvent>,
    pub local_reply_sent: bool,
    /// Set when `proxy_on_done` answered false: the host waits for `proxy_done`.
    pub awaiting_done: bool,
    pub properties: HashMap<String, Vec<u8>>,
}

/// A `dispatch_http_call` accepted during a callback, started once the callback returns.
pub(crate) struct PendingCall {
    pub token: u32,
    pub target: SocketAddr,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// The answer being delivered through `proxy_on_http_call_response`.
pub(crate) struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// The data of one VM instance's wasmtime `Store`.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    /// The plugin of the root context in effect (see `enter`).
    pub(crate) env: Arc<PluginEnv>,
    /// Every root context of this VM and its plugin: plugins of one `vm_id`, code and VM
    /// configuration share a VM, each with its own root context, as in Envoy.
    pub(crate) roots: HashMap<u32, Arc<PluginEnv>>,
    pub(crate) instance_name: String,
    pub(crate) instance_index: usize,
    pub(crate) self_tx: Option<Sender<WorkerMsg>>,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    /// Set while `_initialize`/`main`/`_start` run: host calls outside cpp-host's allow-list
    /// trap (`load::instantiate`).
    pub(crate) starting: bool,
    /// The root context of the effective context.
    pub(crate) root_context: u32,
    pub(crate) effective_context: u32,
    /// Each root context's tick period (cpp-host keeps one per root context).
    pub(crate) tick_periods: HashMap<u32, u32>,
    /// The root context that dispatched each pending call: its answer goes there.
    pub(crate) call_roots: HashMap<u32, u32>,
    pub(crate) streams: HashMap<u32, Stream>,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) next_call_token: u32,
    pub(crate) pending_calls: Vec<PendingCall>,
    /// Contexts whose `proxy_done` arrived during a callback: finalized after it returns.
    pub(crate) done_contexts: Vec<u32>,
    pub(crate) root_properties: HashMap<String, Vec<u8>>,
}

impl HostState {
    pub(crate) fn new(
        wasi: WasiP1Ctx,
        env: Arc<PluginEnv>,
        instance_name: String,
        instance_index: usize,
        self_tx: Option<Sender<WorkerMsg>>,
    ) -> Self {
        HostState {
            wasi,
            env,
            roots: HashMap::new(),
            instance_name,
            instance_index,
            self_tx,
            memory: None,
            alloc: None,
            starting: false,
            root_context: 0,
            effective_context: 0,
            tick_periods: HashMap::new(),
            call_roots: HashMap::new(),
            streams: HashMap::new(),
            call_response: None,
            next_call_token: 0,
            pending_calls: Vec::new(),
            done_contexts: Vec::new(),
            root_properties: HashMap::new(),
        }
    }

    /// Makes `ctx` (a stream or a root context) the effective context, and its plugin the one
    /// host calls answer for (configuration, `plugin_name`, `plugin_root_id`, log prefix).
    /// False for an unknown context.
    pub(crate) fn enter(&mut self, ctx: u32) -> bool {
        let root = match self.streams.get(&ctx) {
            Some(s) => s.root,
            None if self.roots.contains_key(&ctx) => ctx,
            None => return false,
        };
        self.effective_context = ctx;
        if root != self.root_context {
            if let Some(env) = self.roots.get(&root) {
                self.env = env.clone();
            }
            self.root_context = root;
        }
        true
    }

    /// The stream the effective context names, if it is a stream.
    pub(crate) fn stream(&self) -> Option<&Stream> {
        self.streams.get(&self.effective_context)
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective_context)
    }

    pub(crate) fn log(&self, level: LogLevel, message: String) {
        self.env.log(level, &self.instance_name, message);
    }
}

/// Guest memory access for host functions. Bad pointers become `InvalidMemoryAccess`, never a
/// trap.
pub(crate) struct Mem;

impl Mem {
    fn memory(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
        if let Some(m) = caller.data().memory {
            return Some(m);
        }
        caller.get_export("memory").and_then(|e| e.into_memory())
    }

    pub fn read(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mem = Self::memory(caller).ok_or(Status::InvalidMemoryAccess)?;
        let start = ptr as usize;
        let end = start
            .checked_add(len as usize)
            .ok_or(Status::InvalidMemoryAccess)?;
        mem.data(&*caller)
            .get(start..end)
            .map(|s| s.to_vec())
            .ok_or(Status::InvalidMemoryAccess)
    }

    pub fn write(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> Result<(), Status> {
        let mem = Self::memory(caller).ok_or(Status::InvalidMemoryAccess)?;
        let start = ptr as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(Status::InvalidMemoryAccess)?;
        let dst = mem
            .data_mut(&mut *caller)
            .get_mut(start..end)
            .ok_or(Status::InvalidMemoryAccess)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: u32, v: u32) -> Result<(), Status> {
        Self::write(caller, ptr, &v.to_le_bytes())
    }

    pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: u32, v: u64) -> Result<(), Status> {
        Self::write(caller, ptr, &v.to_le_bytes())
    }

    /// Copies `bytes` into memory the guest allocates (`proxy_on_memory_allocate`, else
    /// `malloc`) and writes its address and size to the two return pointers. Like
    /// proxy-wasm-cpp-host, an empty value is returned as (0, 0) without allocating: the Rust
    /// SDK then sees `None`.
    pub fn return_bytes(
        caller: &mut Caller<'_, HostState>,
        bytes: &[u8],
        ptr_ptr: u32,
        size_ptr: u32,
    ) -> wasmtime::Result<Status> {
        let mut addr = 0u32;
        if !bytes.is_empty() {
            let alloc = match caller.data().alloc.clone() {
                Some(f) => f,
                None => return Ok(Status::InvalidMemoryAccess),
            };
            // A trap inside the guest allocator is the guest's failure: let it propagate.
            addr = alloc.call(&mut *caller, bytes.len() as u32)?;
            if addr == 0 {
                return Ok(Status::InvalidMemoryAccess);
            }
            if let Err(s) = Self::write(caller, addr, bytes) {
                return Ok(s);
            }
        }
        if let Err(s) = Self::write_u32(caller, ptr_ptr, addr) {
            return Ok(s);
        }
        if let Err(s) = Self::write_u32(caller, size_ptr, bytes.len() as u32) {
            return Ok(s);
        }
        Ok(Status::Ok)
    }
}

/// Turns a `Result<Status, Status>`-shaped body into the i32 the ABI returns.
pub(crate) fn code(r: Result<Status, Status>) -> u32 {
    match r {
        Ok(s) | Err(s) => s.code(),
    }
}

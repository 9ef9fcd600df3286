//! One VM instance on its own thread, like an Envoy worker (or the main thread): it owns the
//! wasmtime `Store`, runs every callback, drives `proxy_on_tick`, and starts the HTTP calls
//! its filter dispatched.

use crate::calls::{self, CallOutcome};
use crate::host::{CallResponse, HostState, PluginEnv, Stream, StreamProps};
use crate::load::{self, AbiVersion, RestrictedCallback, VmStartError};
pub(crate) use crate::messages::{LocalReply, OpReply, StreamEvent, StreamOp, WorkerMsg};
use crate::types::{Action, LogLevel};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::{Engine, Instance, Linker, Module, Store, TypedFunc, WasmParams, WasmResults};

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

struct Callbacks {
    on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    on_request_headers: Option<HeadersFn>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_response_headers: Option<HeadersFn>,
    on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_http_call_response: Option<CallResponseFn>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_delete: Option<TypedFunc<u32, ()>>,
}

/// `proxy_on_request_headers`/`proxy_on_response_headers`: ABI 0.1.0 has no end-of-stream
/// argument.
#[derive(Clone)]
enum HeadersFn {
    V01(TypedFunc<(u32, u32), u32>),
    V02(TypedFunc<(u32, u32, u32), u32>),
}

impl Callbacks {
    /// Signatures were checked at load (`load::check`), so a lookup fails only for an absent
    /// export.
    fn find(instance: &Instance, store: &mut Store<HostState>, abi: AbiVersion) -> Self {
        macro_rules! f {
            ($name:expr) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        let mut headers = |name: &str| match abi {
            AbiVersion::V0_1_0 => instance
                .get_typed_func(&mut *store, name)
                .ok()
                .map(HeadersFn::V01),
            AbiVersion::V0_2_0 | AbiVersion::V0_2_1 => instance
                .get_typed_func(&mut *store, name)
                .ok()
                .map(HeadersFn::V02),
        };
        let on_request_headers = headers("proxy_on_request_headers");
        let on_response_headers = headers("proxy_on_response_headers");
        Callbacks {
            on_request_headers,
            on_response_headers,
            on_context_create: f!("proxy_on_context_create"),
            on_vm_start: f!("proxy_on_vm_start"),
            on_configure: f!("proxy_on_configure"),
            on_tick: f!("proxy_on_tick"),
            on_queue_ready: f!("proxy_on_queue_ready"),
            on_request_body: f!("proxy_on_request_body"),
            on_request_trailers: f!("proxy_on_request_trailers"),
            on_response_body: f!("proxy_on_response_body"),
            on_response_trailers: f!("proxy_on_response_trailers"),
            on_http_call_response: f!("proxy_on_http_call_response"),
            on_done: f!("proxy_on_done"),
            on_log: f!("proxy_on_log"),
            on_delete: f!("proxy_on_delete"),
        }
    }
}

/// A trap in a start function, worded as Envoy logs it.
fn start_failure(function: &str, e: wasmtime::Error) -> VmStartError {
    let message = match e.downcast_ref::<RestrictedCallback>() {
        Some(r) => format!("Function: {function} failed: Uncaught Error: {r}"),
        None => match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => format!("Function: {function} failed: Uncaught RuntimeError: {trap}"),
            None => format!("Function: {function} failed: {e:#}"),
        },
    };
    VmStartError::Crashed(message)
}

/// One instantiated module: a wasmtime store with a root context per plugin it runs.
pub(crate) struct Vm {
    store: Store<HostState>,
    cb: Callbacks,
    failed: bool,
    next_context: u32,
    /// The root context of each plugin, in the order they were started.
    slots: Vec<u32>,
}

impl Vm {
    /// Instantiates the module, runs its start function, then for each plugin in `envs`
    /// creates its root context and runs `proxy_on_vm_start` and `proxy_on_configure`, as
    /// cpp-host does for each plugin of a VM (`WasmBase::start`, then `configure`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        engine: &Engine,
        module: &Module,
        abi: AbiVersion,
        linker: &Linker<HostState>,
        envs: Vec<Arc<PluginEnv>>,
        instance_name: String,
        instance_index: usize,
        self_tx: Option<Sender<WorkerMsg>>,
    ) -> Result<Vm, VmStartError> {
        let wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
        let first = envs
            .first()
            .cloned()
            .ok_or(VmStartError::Instantiate("a VM without a plugin".into()))?;
        let state = HostState::new(wasi, first, instance_name, instance_index, self_tx);
        let mut store = Store::new(engine, state);
        let instance = load::instantiate(linker, &mut store, module)?;
        let memory = instance.get_memory(&mut store, "memory");
        // cpp-host's order: `malloc` first.
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            })
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        // Reactor modules export `_initialize` (then maybe `main` or `__main_void`); command
        // modules `_start`; a module with only a start section was initialized by
        // instantiation. Host calls here are restricted as in cpp-host's `startVm`.
        store.data_mut().starting = true;
        let started = if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize")
        {
            init.call(&mut store, ())
                .map_err(|e| start_failure("_initialize", e))
                .and_then(|()| {
                    if let Ok(main) = instance.get_typed_func::<(u32, u32), u32>(&mut store, "main")
                    {
                        main.call(&mut store, (0, 0))
                            .map(drop)
                            .map_err(|e| start_failure("main", e))
                    } else if let Ok(main) =
                        instance.get_typed_func::<(), u32>(&mut store, "__main_void")
                    {
                        main.call(&mut store, ())
                            .map(drop)
                            .map_err(|e| start_failure("__main_void", e))
                    } else {
                        Ok(())
                    }
                })
        } else if let Ok(start) = instance.get_typed_func::<(), ()>(&mut store, "_start") {
            start
                .call(&mut store, ())
                .map_err(|e| start_failure("_start", e))
        } else {
            Ok(())
        };
        store.data_mut().starting = false;
        started?;
        let cb = Callbacks::find(&instance, &mut store, abi);
        let mut vm = Vm {
            store,
            cb,
            failed: false,
            next_context: 1,
            slots: Vec::new(),
        };
        for env in envs {
            vm.add_root(env)?;
        }
        Ok(vm)
    }

    /// One more plugin in this VM: its root context, `proxy_on_vm_start`, `proxy_on_configure`.
    fn add_root(&mut self, env: Arc<PluginEnv>) -> Result<(), VmStartError> {
        let root = self.new_context_id();
        let (vm_config_len, config_len) =
            (env.vm_config.len() as u32, env.plugin_config.len() as u32);
        self.store.data_mut().roots.insert(root, env);
        self.slots.push(root);
        self.call(root, self.cb.on_context_create.clone(), (root, 0));
        let started = self.call(root, self.cb.on_vm_start.clone(), (root, vm_config_len));
        if self.failed {
            return Err(VmStartError::Crashed("proxy_on_vm_start".into()));
        }
        if started == Some(0) {
            return Err(VmStartError::VmStartRefused);
        }
        let configured = self.call(root, self.cb.on_configure.clone(), (root, config_len));
        if self.failed {
            return Err(VmStartError::Crashed("proxy_on_configure".into()));
        }
        if configured == Some(0) {
            return Err(VmStartError::ConfigureRefused);
        }
        Ok(())
    }

    fn new_context_id(&mut self) -> u32 {
        let id = self.next_context;
        self.next_context += 1;
        id
    }

    /// Runs one callback with `ctx` in effect. A trap kills this VM instance for good, as in
    /// Envoy with the default FAIL_CLOSED policy; it is logged like Envoy logs it.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        ctx: u32,
        f: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Option<R> {
        if self.failed {
            return None;
        }
        let f = f?;
        if !self.store.data_mut().enter(ctx) {
            return None;
        }
        let r = f.call(&mut self.store, params);
        match r {
            Ok(v) => {
                self.after_callback();
                Some(v)
            }
            Err(e) => {
                self.failed = true;
                let msg = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("Uncaught RuntimeError: {trap}"),
                    None => format!("{e:#}"),
                };
                self.store
                    .data()
                    .log(LogLevel::Critical, format!("wasm VM failed: {msg}"));
                None
            }
        }
    }

    fn call_headers(
        &mut self,
        ctx: u32,
        f: Option<HeadersFn>,
        n: u32,
        end_of_stream: bool,
    ) -> Option<u32> {
        match f? {
            HeadersFn::V01(f) => self.call(ctx, Some(f), (ctx, n)),
            HeadersFn::V02(f) => self.call(ctx, Some(f), (ctx, n, end_of_stream as u32)),
        }
    }

    /// Starts the calls the callback dispatched and finishes contexts it released.
    fn after_callback(&mut self) {
        let calls = std::mem::take(&mut self.store.data_mut().pending_calls);
        if !calls.is_empty() {
            let state = self.store.data();
            let rt = state.env.rt.clone();
            for call in calls {
                let tx = state.self_tx.clone();
                rt.spawn(async move {
                    let outcome =
                        calls::dispatch(call.target, call.headers, call.body, call.timeout).await;
                    if let Some(tx) = tx {
                        let _ = tx.send(WorkerMsg::CallDone {
                            token: call.token,
                            outcome,
                        });
                    }
                });
            }
        }
        let done = std::mem::take(&mut self.store.data_mut().done_contexts);
        for ctx in done {
            self.finalize(ctx);
        }
    }

    fn open(
        &mut self,
        slot: usize,
        props: StreamProps,
        events: UnboundedSender<StreamEvent>,
    ) -> Option<u32> {
        if self.failed {
            return None;
        }
        let root = *self.slots.get(slot)?;
        let ctx = self.new_context_id();
        self.store.data_mut().streams.insert(
            ctx,
            Stream {
                request_headers: None,
                saved_request_headers: Vec::new(),
                request_body: Vec::new(),
                request_trailers: None,
                response_headers: None,
                response_body: Vec::new(),
                response_trailers: None,
                props,
                root,
                in_log: false,
                events,
                local_reply_sent: false,
                awaiting_done: false,
                properties: Default::default(),
            },
        );
        self.call(ctx, self.cb.on_context_create.clone(), (ctx, root));
        if self.failed {
            return None;
        }
        Some(ctx)
    }

    fn stream(&mut self, ctx: u32) -> Option<&mut Stream> {
        self.store.data_mut().streams.get_mut(&ctx)
    }

    fn op(&mut self, ctx: u32, op: StreamOp) -> OpReply {
        let mut reply = OpReply::default();
        if self.failed || !self.store.data().streams.contains_key(&ctx) {
            reply.failed = self.failed;
            return reply;
        }
        let action = |raw: Option<u32>| raw.map(Action::from_raw).unwrap_or(Action::Continue);
        match op {
            StreamOp::RequestHeaders {
                headers,
                end_of_stream,
            } => {
                let n = headers.len() as u32;
                if let Some(s) = self.stream(ctx) {
                    s.request_headers = Some(headers);
                    s.request_trailers = Some(Vec::new());
                }
                let f = self.cb.on_request_headers.clone();
                let a = action(self.call_headers(ctx, f, n, end_of_stream));
                reply.action = Some(a);
                if a == Action::Continue {
                    reply.headers = self.stream(ctx).and_then(|s| s.request_headers.clone());
                }
            }
            StreamOp::RequestBody {
                chunk,
                end_of_stream,
            } => {
                let size = match self.stream(ctx) {
                    Some(s) => {
                        s.request_body.extend_from_slice(&chunk);
                        s.request_body.len() as u32
                    }
                    None => 0,
                };
                let a = action(self.call(
                    ctx,
                    self.cb.on_request_body.clone(),
                    (ctx, size, end_of_stream as u32),
                ));
                reply.action = Some(a);
                if a == Action::Continue {
                    if let Some(s) = self.stream(ctx) {
                        reply.body = std::mem::take(&mut s.request_body);
                    }
                }
            }
            StreamOp::RequestTrailers { trailers } => {
                let n = trailers.len() as u32;
                if let Some(s) = self.stream(ctx) {
                    s.request_trailers = Some(trailers);
                }
                let a = action(self.call(ctx, self.cb.on_request_trailers.clone(), (ctx, n)));
                reply.action = Some(a);
                if a == Action::Continue {
                    if let Some(s) = self.stream(ctx) {
                        reply.body = std::mem::take(&mut s.request_body);
                        reply.trailers = s.request_trailers.clone();
                    }
                }
            }
            StreamOp::TakeRequest => {
                if let Some(s) = self.stream(ctx) {
                    reply.headers = s.request_headers.clone();
                    reply.body = std::mem::take(&mut s.request_body);
                    reply.trailers = s.request_trailers.clone();
                }
            }
            StreamOp::ResponseHeaders {
                headers,
                end_of_stream,
                upstream,
            } => {
                let n = headers.len() as u32;
                if let Some(s) = self.stream(ctx) {
                    // The request is gone for the filter from here on (§3a).
                    s.saved_request_headers = s.request_headers.take().unwrap_or_default();
                    s.request_body.clear();
                    s.request_trailers = None;
                    s.props.upstream_address = upstream;
                    s.props.response_code = crate::maps::get_value(&headers, b":status")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok());
                    s.response_headers = Some(headers);
                    s.response_trailers = Some(Vec::new());
                }
                let f = self.cb.on_response_headers.clone();
                let a = action(self.call_headers(ctx, f, n, end_of_stream));
                reply.action = Some(a);
                if a == Action::Continue {
                    reply.headers = self.stream(ctx).and_then(|s| s.response_headers.clone());
                }
            }
            StreamOp::ResponseBody {
                chunk,
                end_of_stream,
            } => {
                let size = match self.stream(ctx) {
                    Some(s) => {
                        s.response_body.extend_from_slice(&chunk);
                        s.response_body.len() as u32
                    }
                    None => 0,
                };
                let a = action(self.call(
                    ctx,
                    self.cb.on_response_body.clone(),
                    (ctx, size, end_of_stream as u32),
                ));
                reply.action = Some(a);
                if a == Action::Continue {
                    if let Some(s) = self.stream(ctx) {
                        reply.body = std::mem::take(&mut s.response_body);
                    }
                }
            }
            StreamOp::ResponseTrailers { trailers } => {
                let n = trailers.len() as u32;
                if let Some(s) = self.stream(ctx) {
                    s.response_trailers = Some(trailers);
                }
                let a = action(self.call(ctx, self.cb.on_response_trailers.clone(), (ctx, n)));
                reply.action = Some(a);
                if a == Action::Continue {
                    if let Some(s) = self.stream(ctx) {
                        reply.body = std::mem::take(&mut s.response_body);
                        reply.trailers = s.response_trailers.clone();
                    }
                }
            }
            StreamOp::TakeResponse => {
                if let Some(s) = self.stream(ctx) {
                    reply.headers = s.response_headers.clone();
                    reply.body = std::mem::take(&mut s.response_body);
                    reply.trailers = s.response_trailers.clone();
                }
            }
        }
        reply.failed = self.failed;
        reply
    }

    /// The stream ended: `proxy_on_done`, then (unless the filter defers with `false` and a
    /// later `proxy_done`) `proxy_on_log` and `proxy_on_delete`.
    fn close(&mut self, ctx: u32) {
        if !self.store.data().streams.contains_key(&ctx) {
            return;
        }
        let done = self.call(ctx, self.cb.on_done.clone(), ctx);
        if done == Some(0) {
            if let Some(s) = self.stream(ctx) {
                s.awaiting_done = true;
            }
            return;
        }
        self.finalize(ctx);
    }

    fn finalize(&mut self, ctx: u32) {
        if let Some(s) = self.stream(ctx) {
            // Envoy gives the request back for access logging.
            if s.request_headers.is_none() {
                s.request_headers = Some(std::mem::take(&mut s.saved_request_headers));
            }
            s.in_log = true;
        }
        self.call(ctx, self.cb.on_log.clone(), ctx);
        self.call(ctx, self.cb.on_delete.clone(), ctx);
        self.store.data_mut().streams.remove(&ctx);
    }

    fn call_done(&mut self, token: u32, outcome: CallOutcome) {
        let (nh, nb, nt) = match &outcome {
            CallOutcome::Response {
                headers,
                body,
                trailers,
            } => (headers.len(), body.len(), trailers.len()),
            CallOutcome::Reset => (0, 0, 0),
        };
        if let CallOutcome::Response {
            headers,
            body,
            trailers,
        } = outcome
        {
            self.store.data_mut().call_response = Some(CallResponse {
                headers,
                body,
                trailers,
            });
        }
        let Some(root) = self.store.data_mut().call_roots.remove(&token) else {
            return;
        };
        self.call(
            root,
            self.cb.on_http_call_response.clone(),
            (root, token, nh as u32, nb as u32, nt as u32),
        );
        self.store.data_mut().call_response = None;
    }

    fn tick(&mut self, root: u32) {
        self.call(root, self.cb.on_tick.clone(), root);
    }

    fn queue_ready(&mut self, queue_id: u32, root: u32) {
        self.call(root, self.cb.on_queue_ready.clone(), (root, queue_id));
    }

    /// Each root context's tick period, as the plugins last set them.
    fn tick_periods(&self) -> Vec<(u32, u32)> {
        self.store
            .data()
            .tick_periods
            .iter()
            .map(|(r, p)| (*r, *p))
            .collect()
    }
}

/// When each root context ticks next: a period and an instant per root context that asked.
#[derive(Default)]
struct Ticks {
    by_root: std::collections::BTreeMap<u32, (u32, Instant)>,
}

impl Ticks {
    /// Follows the periods the plugins set: a new or changed period starts counting now, 0
    /// stops the ticks.
    fn follow(&mut self, periods: Vec<(u32, u32)>) {
        for (root, period) in periods {
            match (period, self.by_root.get(&root)) {
                (0, _) => {
                    self.by_root.remove(&root);
                }
                (p, Some((old, _))) if *old == p => {}
                (p, _) => {
                    let at = Instant::now() + Duration::from_millis(p as u64);
                    self.by_root.insert(root, (p, at));
                }
            }
        }
    }

    fn next(&self) -> Option<Instant> {
        self.by_root.values().map(|(_, at)| *at).min()
    }

    /// The root contexts due now; each is rescheduled one period later.
    fn due(&mut self) -> Vec<u32> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (root, (period, at)) in self.by_root.iter_mut() {
            if *at <= now {
                due.push(*root);
                *at = now + Duration::from_millis((*period).max(1) as u64);
            }
        }
        due
    }
}

/// The worker thread's loop: messages in arrival order, ticks in between.
pub(crate) fn run(mut vm: Vm, rx: Receiver<WorkerMsg>) {
    let mut ticks = Ticks::default();
    ticks.follow(vm.tick_periods());
    loop {
        let msg = match ticks.next() {
            Some(at) => {
                let now = Instant::now();
                if at <= now {
                    for root in ticks.due() {
                        vm.tick(root);
                    }
                    None
                } else {
                    match rx.recv_timeout(at - now) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        if let Some(msg) = msg {
            match msg {
                WorkerMsg::Open {
                    slot,
                    props,
                    events,
                    reply,
                } => {
                    let _ = reply.send(vm.open(slot, props, events));
                }
                WorkerMsg::Op { ctx, op, reply } => {
                    let _ = reply.send(vm.op(ctx, op));
                }
                WorkerMsg::Close { ctx } => vm.close(ctx),
                WorkerMsg::CallDone { token, outcome } => vm.call_done(token, outcome),
                WorkerMsg::QueueReady {
                    queue_id,
                    root_context,
                } => vm.queue_ready(queue_id, root_context),
                WorkerMsg::Shutdown => return,
            }
        }
        ticks.follow(vm.tick_periods());
    }
}

//! What proxy-wasm-cpp-host (the host Envoy embeds) checks before a module runs, so that a
//! module the harness accepts is one Envoy accepts: the ABI marker export, every import being
//! one the host provides with the host's type, an allocator, and the signature of every
//! callback export it looks up. Each refusal's text is the line Envoy 1.40 logs.
//!
//! Sources (cpp-host `src/`): `bytecode_util.cc` (`getAbiVersion`), `v8/v8.cc` (`link`,
//! `getModuleFunctionImpl`), `wasm.cc` (`registerCallbacks`, `getFunctions`, `startVm`),
//! `include/proxy-wasm/exports.h` (`FOR_ALL_HOST_FUNCTIONS`, `FOR_ALL_WASI_FUNCTIONS`).

use crate::host::HostState;
use wasmtime::{
    Extern, ExternType, Func, FuncType, Instance, Linker, Memory, Module, Ref, Store, Table,
    ValType,
};

/// Why a VM instance could not be brought up.
#[derive(Debug)]
pub(crate) enum VmStartError {
    Load(LoadError),
    Instantiate(String),
    VmStartRefused,
    ConfigureRefused,
    Crashed(String),
}

/// The ABI a module declares with its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

/// Why a module is refused at load, as Envoy refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// No function export named `proxy_abi_version_0_1_0`, `_0_2_0` or `_0_2_1`.
    MissingAbiVersion,
    /// A function (or global) import the host does not provide for this ABI version.
    MissingImport { module: String, name: String },
    /// A provided import whose type the module declares differently.
    ImportTypeMismatch {
        module: String,
        name: String,
        want: String,
        host: String,
    },
    /// Neither `malloc` nor `proxy_on_memory_allocate` is exported.
    MissingMalloc,
    /// An export the host calls has another signature than the ABI's.
    BadSignature {
        function: String,
        want: String,
        exports: String,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::MissingAbiVersion => write!(f, "Missing or unknown Proxy-Wasm ABI version"),
            LoadError::MissingImport { module, name } => write!(
                f,
                "Failed to load Wasm module due to a missing import: {module}.{name}"
            ),
            LoadError::ImportTypeMismatch {
                module,
                name,
                want,
                host,
            } => write!(
                f,
                "Failed to load Wasm module due to an import type mismatch: {module}.{name}, \
                 want: {want}, but host exports: {host}"
            ),
            LoadError::MissingMalloc => write!(f, "Wasm module is missing malloc function."),
            LoadError::BadSignature {
                function,
                want,
                exports,
            } => write!(
                f,
                "Bad function signature for: {function}, want: {want}, but the module exports: \
                 {exports}"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The ABI marker, as cpp-host finds it: the first function export with one of the names.
pub fn abi_version(module: &Module) -> Option<AbiVersion> {
    module.exports().find_map(|e| {
        if !matches!(e.ty(), ExternType::Func(_)) {
            return None;
        }
        match e.name() {
            "proxy_abi_version_0_1_0" => Some(AbiVersion::V0_1_0),
            "proxy_abi_version_0_2_0" => Some(AbiVersion::V0_2_0),
            "proxy_abi_version_0_2_1" => Some(AbiVersion::V0_2_1),
            _ => None,
        }
    })
}

/// `env.proxy_*` host functions registered for every ABI version (`FOR_ALL_HOST_FUNCTIONS`).
const HOST_FUNCTIONS: &[&str] = &[
    "log",
    "get_status",
    "set_property",
    "get_property",
    "send_local_response",
    "get_shared_data",
    "set_shared_data",
    "register_shared_queue",
    "resolve_shared_queue",
    "dequeue_shared_queue",
    "enqueue_shared_queue",
    "get_header_map_value",
    "add_header_map_value",
    "replace_header_map_value",
    "remove_header_map_value",
    "get_header_map_pairs",
    "set_header_map_pairs",
    "get_header_map_size",
    "get_buffer_status",
    "get_buffer_bytes",
    "set_buffer_bytes",
    "http_call",
    "grpc_call",
    "grpc_stream",
    "grpc_close",
    "grpc_cancel",
    "grpc_send",
    "set_tick_period_milliseconds",
    "get_current_time_nanoseconds",
    "define_metric",
    "increment_metric",
    "record_metric",
    "get_metric",
    "set_effective_context",
    "done",
    "call_foreign_function",
];

/// The ABI-specific ones (`registerCallbacks`).
fn abi_host_functions(abi: AbiVersion) -> &'static [&'static str] {
    match abi {
        AbiVersion::V0_1_0 => &[
            "get_configuration",
            "continue_request",
            "continue_response",
            "clear_route_cache",
        ],
        AbiVersion::V0_2_0 => &["continue_stream", "close_stream"],
        AbiVersion::V0_2_1 => &["continue_stream", "close_stream", "get_log_level"],
    }
}

/// WASI preview 1 functions cpp-host registers under both module names
/// (`FOR_ALL_WASI_FUNCTIONS`); e.g. `proc_raise` and `sock_open` are not among them.
const WASI_FUNCTIONS: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "path_filestat_get",
    "fd_filestat_get",
];

fn is_wasi_module(module: &str) -> bool {
    module == "wasi_snapshot_preview1" || module == "wasi_unstable"
}

/// Whether cpp-host registers `module.name` for a module of this ABI version.
pub fn host_provides(abi: AbiVersion, module: &str, name: &str) -> bool {
    if is_wasi_module(module) {
        return WASI_FUNCTIONS.contains(&name);
    }
    if module != "env" {
        return false;
    }
    if name == "pthread_equal" || name == "emscripten_notify_memory_growth" {
        return true;
    }
    match name.strip_prefix("proxy_") {
        Some(rest) => HOST_FUNCTIONS.contains(&rest) || abi_host_functions(abi).contains(&rest),
        None => false,
    }
}

/// Host calls cpp-host allows while `_initialize`, `main`/`__main_void` or `_start` run
/// (`startVm`); any other traps with `restricted_callback`.
pub fn allowed_during_start(module: &str, name: &str) -> bool {
    if module == "env" {
        return name == "proxy_log" || name == "emscripten_notify_memory_growth";
    }
    if !is_wasi_module(module) {
        return false;
    }
    const ALLOWED: &[&str] = &[
        "fd_write",
        "args_sizes_get",
        "args_get",
        "environ_sizes_get",
        "environ_get",
        "clock_time_get",
        "clock_res_get",
        "random_get",
        "poll_oneoff",
        "fd_fdstat_get",
        "fd_fdstat_set_flags",
        "fd_advise",
        "fd_allocate",
        "fd_datasync",
        "fd_fdstat_set_rights",
        "fd_filestat_get",
        "fd_filestat_set_size",
        "fd_filestat_set_times",
        "fd_pread",
        "fd_prestat_dir_name",
        "fd_prestat_get",
        "fd_pwrite",
        "fd_readdir",
        "fd_renumber",
        "fd_sync",
        "fd_tell",
        "path_create_directory",
        "path_filestat_get",
        "path_filestat_set_times",
        "path_link",
        "path_readlink",
        "path_remove_directory",
        "path_rename",
        "path_symlink",
        "path_unlink_file",
        "sock_accept",
        "sock_recv",
        "sock_send",
        "sock_shutdown",
    ];
    ALLOWED.contains(&name)
}

/// Word-typed signature: `n` i32 parameters, an i32 result or none.
#[derive(Clone, Copy)]
struct Sig {
    params: usize,
    result: bool,
}

const fn w(params: usize) -> Sig {
    Sig {
        params,
        result: true,
    }
}

const fn v(params: usize) -> Sig {
    Sig {
        params,
        result: false,
    }
}

/// The callbacks `getFunctions` looks up for every ABI version, with their types.
const MODULE_FUNCTIONS: &[(&str, Sig)] = &[
    ("proxy_validate_configuration", w(2)),
    ("proxy_on_vm_start", w(2)),
    ("proxy_on_configure", w(2)),
    ("proxy_on_tick", v(1)),
    ("proxy_on_context_create", v(2)),
    ("proxy_on_new_connection", w(1)),
    ("proxy_on_downstream_data", w(3)),
    ("proxy_on_upstream_data", w(3)),
    ("proxy_on_downstream_connection_close", v(2)),
    ("proxy_on_upstream_connection_close", v(2)),
    ("proxy_on_request_body", w(3)),
    ("proxy_on_request_trailers", w(2)),
    ("proxy_on_request_metadata", w(2)),
    ("proxy_on_response_body", w(3)),
    ("proxy_on_response_trailers", w(2)),
    ("proxy_on_response_metadata", w(2)),
    ("proxy_on_http_call_response", v(5)),
    ("proxy_on_grpc_receive", v(3)),
    ("proxy_on_grpc_close", v(3)),
    ("proxy_on_grpc_receive_initial_metadata", v(3)),
    ("proxy_on_grpc_receive_trailing_metadata", v(3)),
    ("proxy_on_queue_ready", v(2)),
    ("proxy_on_done", w(1)),
    ("proxy_on_log", v(1)),
    ("proxy_on_delete", v(1)),
];

/// V8's `printValTypes`: kinds separated by spaces, "void" for none.
pub(crate) fn print_types(types: impl Iterator<Item = ValType>) -> String {
    let names: Vec<&str> = types
        .map(|t| match t {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
            ValType::Ref(r) if r.heap_type().is_extern() => "externref",
            ValType::Ref(_) => "funcref",
            ValType::V128 => "unknown",
        })
        .collect();
    if names.is_empty() {
        "void".to_string()
    } else {
        names.join(" ")
    }
}

fn print_sig(sig: Sig) -> String {
    let params = std::iter::repeat_n(ValType::I32, sig.params);
    let results = std::iter::repeat_n(ValType::I32, usize::from(sig.result));
    format!("{} -> {}", print_types(params), print_types(results))
}

fn matches(ty: &FuncType, sig: Sig) -> bool {
    ty.params().len() == sig.params
        && ty.params().all(|p| matches!(p, ValType::I32))
        && ty.results().len() == usize::from(sig.result)
        && ty.results().all(|r| matches!(r, ValType::I32))
}

/// `params -> results` in V8's wording.
pub(crate) fn describe(ty: &FuncType) -> String {
    format!(
        "{} -> {}",
        print_types(ty.params()),
        print_types(ty.results())
    )
}

fn check_export(module: &Module, name: &str, sig: Sig) -> Result<bool, LoadError> {
    let Some(ExternType::Func(ty)) = module.get_export(name) else {
        return Ok(false);
    };
    if matches(&ty, sig) {
        return Ok(true);
    }
    Err(LoadError::BadSignature {
        function: name.to_string(),
        want: print_sig(sig),
        exports: describe(&ty),
    })
}

/// Checks what cpp-host checks before instantiating, in its order: the ABI marker, then each
/// import, then (`getFunctions`) the start functions, the allocator and every callback.
/// Import types are compared when the module is linked (`instantiate` in `worker.rs`).
pub fn check(module: &Module) -> Result<AbiVersion, LoadError> {
    let abi = abi_version(module).ok_or(LoadError::MissingAbiVersion)?;
    for import in module.imports() {
        let refused = match import.ty() {
            ExternType::Func(_) => !host_provides(abi, import.module(), import.name()),
            // V8 creates imported memories and tables; globals it cannot supply.
            ExternType::Global(_) => true,
            _ => false,
        };
        if refused {
            return Err(LoadError::MissingImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    if check_export(module, "_initialize", v(0))? {
        if !check_export(module, "main", w(2))? {
            check_export(module, "__main_void", w(0))?;
        }
    } else {
        check_export(module, "_start", v(0))?;
    }
    let malloc = check_export(module, "malloc", w(1))?;
    if !malloc && !check_export(module, "proxy_on_memory_allocate", w(1))? {
        return Err(LoadError::MissingMalloc);
    }
    for (name, sig) in MODULE_FUNCTIONS {
        check_export(module, name, *sig)?;
    }
    let headers = match abi {
        AbiVersion::V0_1_0 => w(2),
        AbiVersion::V0_2_0 | AbiVersion::V0_2_1 => w(3),
    };
    check_export(module, "proxy_on_request_headers", headers)?;
    check_export(module, "proxy_on_response_headers", headers)?;
    if abi != AbiVersion::V0_1_0 {
        check_export(module, "proxy_on_foreign_function", v(3))?;
    }
    Ok(abi)
}

/// The trap of a host call made during start-up outside the allow-list.
#[derive(Debug)]
pub struct RestrictedCallback {
    /// `module.name` of the host function called.
    pub function: String,
}

impl std::fmt::Display for RestrictedCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Envoy's trap message is the bare word; the function is named for the author.
        write!(f, "restricted_callback ({} during start-up)", self.function)
    }
}

impl std::error::Error for RestrictedCallback {}

/// Instantiates `module` the way V8 links it in cpp-host: each import resolved by name with
/// its type compared, imported memories and tables created, and every host function outside
/// the start-up allow-list wrapped so that it traps while `HostState::starting` is set.
pub(crate) fn instantiate(
    linker: &Linker<HostState>,
    store: &mut Store<HostState>,
    module: &Module,
) -> Result<Instance, VmStartError> {
    let mut imports: Vec<Extern> = Vec::new();
    for import in module.imports() {
        let missing = || {
            VmStartError::Load(LoadError::MissingImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            })
        };
        let ext = match import.ty() {
            ExternType::Func(want) => {
                let Some(Extern::Func(f)) = linker.get_by_import(&mut *store, &import) else {
                    return Err(missing());
                };
                let host = f.ty(&*store);
                if !FuncType::eq(&want, &host) {
                    return Err(VmStartError::Load(LoadError::ImportTypeMismatch {
                        module: import.module().to_string(),
                        name: import.name().to_string(),
                        want: describe(&want),
                        host: describe(&host),
                    }));
                }
                if allowed_during_start(import.module(), import.name()) {
                    Extern::Func(f)
                } else {
                    let function = format!("{}.{}", import.module(), import.name());
                    Extern::Func(Func::new(
                        &mut *store,
                        host,
                        move |mut caller, params, results| {
                            if caller.data().starting {
                                return Err(wasmtime::Error::new(RestrictedCallback {
                                    function: function.clone(),
                                }));
                            }
                            f.call(&mut caller, params, results)
                        },
                    ))
                }
            }
            ExternType::Memory(ty) => Extern::Memory(
                Memory::new(&mut *store, ty)
                    .map_err(|e| VmStartError::Instantiate(format!("imported memory: {e:#}")))?,
            ),
            ExternType::Table(ty) => {
                let init = Ref::null(ty.element().heap_type());
                Extern::Table(
                    Table::new(&mut *store, ty, init)
                        .map_err(|e| VmStartError::Instantiate(format!("imported table: {e:#}")))?,
                )
            }
            _ => return Err(missing()),
        };
        imports.push(ext);
    }
    Instance::new(&mut *store, module, &imports)
        .map_err(|e| VmStartError::Instantiate(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Engine;

    fn module(body: &str) -> Module {
        Module::new(&Engine::default(), format!("(module {body})")).unwrap()
    }

    const MARKER: &str = r#"(func (export "proxy_abi_version_0_2_1"))"#;
    const MALLOC: &str = r#"(func (export "malloc") (param i32) (result i32) i32.const 0)"#;

    #[test]
    fn a_minimal_module_passes() {
        assert_eq!(
            check(&module(&format!("{MARKER} {MALLOC}"))),
            Ok(AbiVersion::V0_2_1)
        );
    }

    #[test]
    fn the_abi_marker_must_be_a_function() {
        let m = module(&format!(
            r#"(global (export "proxy_abi_version_0_2_1") i32 (i32.const 0)) {MALLOC}"#
        ));
        assert_eq!(check(&m), Err(LoadError::MissingAbiVersion));
    }

    #[test]
    fn abi_specific_imports_follow_the_marker() {
        let m = module(&format!(
            r#"(import "env" "proxy_get_log_level" (func (param i32) (result i32)))
               (func (export "proxy_abi_version_0_2_0")) {MALLOC}"#
        ));
        assert_eq!(
            check(&m).unwrap_err().to_string(),
            "Failed to load Wasm module due to a missing import: env.proxy_get_log_level"
        );
        let m = module(&format!(
            r#"(import "env" "proxy_continue_request" (func (result i32)))
               (func (export "proxy_abi_version_0_1_0")) {MALLOC}"#
        ));
        assert_eq!(check(&m), Ok(AbiVersion::V0_1_0));
    }

    #[test]
    fn wasi_outside_cpp_hosts_list_and_globals_are_missing_imports() {
        for import in [
            r#"(import "wasi_snapshot_preview1" "proc_raise" (func (param i32) (result i32)))"#,
            r#"(import "env" "__stack_pointer" (global i32))"#,
            r#"(import "other" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        ] {
            let m = module(&format!("{import} {MARKER} {MALLOC}"));
            assert!(
                matches!(check(&m), Err(LoadError::MissingImport { .. })),
                "{import}"
            );
        }
    }

    #[test]
    fn proxy_on_memory_allocate_is_an_allocator_and_a_bad_malloc_is_named() {
        let m = module(&format!(
            r#"{MARKER} (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0)"#
        ));
        assert_eq!(check(&m), Ok(AbiVersion::V0_2_1));
        let m = module(&format!(
            r#"{MARKER} (func (export "malloc") (param i64) (result i32) i32.const 0)"#
        ));
        assert_eq!(
            check(&m).unwrap_err().to_string(),
            "Bad function signature for: malloc, want: i32 -> i32, but the module exports: i64 -> i32"
        );
    }

    #[test]
    fn callback_signatures_depend_on_the_abi() {
        let two = r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32) i32.const 0)"#;
        let m = module(&format!("{MARKER} {MALLOC} {two}"));
        assert_eq!(
            check(&m).unwrap_err().to_string(),
            "Bad function signature for: proxy_on_request_headers, want: i32 i32 i32 -> i32, \
             but the module exports: i32 i32 -> i32"
        );
        let m = module(&format!(
            r#"(func (export "proxy_abi_version_0_1_0")) {MALLOC} {two}"#
        ));
        assert_eq!(check(&m), Ok(AbiVersion::V0_1_0));
        let tick = r#"(func (export "proxy_on_tick") (param i32) (result i32) i32.const 0)"#;
        let m = module(&format!("{MARKER} {MALLOC} {tick}"));
        assert!(matches!(check(&m), Err(LoadError::BadSignature { .. })));
    }

    #[test]
    fn main_is_checked_only_beside_initialize() {
        let main = r#"(func (export "main") (result i32) i32.const 0)"#;
        let m = module(&format!("{MARKER} {MALLOC} {main}"));
        assert!(check(&m).is_ok());
        let m = module(&format!(
            r#"{MARKER} {MALLOC} {main} (func (export "_initialize"))"#
        ));
        // Beside `_initialize` a `main` of another type is refused, as cpp-host refuses it.
        assert!(matches!(check(&m), Err(LoadError::BadSignature { .. })));
    }
}

//! One wasm plugin as Envoy configures it: a filter of the HTTP chain
//! (`envoy.filters.http.wasm` in `http_filters`) or a singleton service
//! (`envoy.bootstrap.wasm` in `bootstrap_extensions`, `singleton: true`).

use std::path::PathBuf;

#[derive(Clone)]
pub(crate) enum WasmSource {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl WasmSource {
    pub(crate) fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            WasmSource::Bytes(b) => Ok(b.clone()),
            WasmSource::Path(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
        }
    }
}

/// A plugin: its module and Envoy's `PluginConfig` fields. Give it to
/// [`crate::HarnessBuilder::filter`] (one more filter at the end of the chain) or
/// [`crate::HarnessBuilder::service`] (a singleton service on the main thread).
///
/// ```
/// use host_harness::Plugin;
/// let auth = Plugin::wasm("auth.wasm")
///     .config(br#"{"realm":"a"}"#.to_vec())
///     .root_id("auth")
///     .vm_id("shared");
/// ```
#[derive(Clone)]
pub struct Plugin {
    pub(crate) wasm: Option<WasmSource>,
    pub(crate) config: Vec<u8>,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) allow_on_headers_stop_iteration: bool,
}

impl Default for Plugin {
    fn default() -> Self {
        Plugin {
            wasm: None,
            config: Vec::new(),
            vm_config: Vec::new(),
            name: "plugin".into(),
            root_id: String::new(),
            vm_id: String::new(),
            allow_on_headers_stop_iteration: false,
        }
    }
}

impl Plugin {
    /// A plugin whose module is this file.
    pub fn wasm(path: impl Into<PathBuf>) -> Self {
        Plugin {
            wasm: Some(WasmSource::Path(path.into())),
            ..Plugin::default()
        }
    }

    /// A plugin whose module is these bytes (binary or WAT text).
    pub fn wasm_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Plugin {
            wasm: Some(WasmSource::Bytes(bytes.into())),
            ..Plugin::default()
        }
    }

    /// Envoy's `configuration` of the plugin (read by `proxy_on_configure`).
    pub fn config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config = bytes.into();
        self
    }

    /// Envoy's `vm_config.configuration` (read by `proxy_on_vm_start`). Plugins with the same
    /// `vm_id`, module and VM configuration run in one VM per thread (each its own root
    /// context), as in Envoy: their guest globals are common.
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_config = bytes.into();
        self
    }

    /// The plugin's `name` (property `plugin_name`, log prefix, [`crate::LogLine::plugin`]).
    /// Default "plugin".
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The plugin's `root_id` (property `plugin_root_id`). Default "".
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.root_id = root_id.into();
        self
    }

    /// The `vm_id` (property `plugin_vm_id`): plugins with the same `vm_id` share one
    /// shared-data store and their queues; plugins with different ones do not. Default "".
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    /// Envoy's `allow_on_headers_stop_iteration` for this filter (no effect on a service).
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.allow_on_headers_stop_iteration = allow;
        self
    }
}

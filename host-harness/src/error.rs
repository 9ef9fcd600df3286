//! Why a harness did not start: its own leaf module, so the start-up code and the library API
//! both use it without importing each other.

use crate::load::LoadError;
use crate::shared::LogLine;

/// Why a harness did not start.
#[derive(Debug)]
pub enum Error {
    /// Reading the module or binding a listener failed.
    Io(String),
    /// The bytes are not a module wasmtime accepts.
    Compile(String),
    /// A module Envoy refuses at load (proxy-wasm-cpp-host's checks); the text is Envoy's
    /// log line.
    Load(LoadError),
    /// An import could not be satisfied, or the start function trapped.
    Instantiate {
        /// The plugin's name (its `name` option).
        plugin: String,
        instance: String,
        message: String,
    },
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false: with a static configuration
    /// Envoy exits; the plugin's own log lines say why.
    Refused {
        callback: &'static str,
        /// The plugin's name (its `name` option): which filter or service of a chain refused.
        plugin: String,
        instance: String,
        logs: Vec<LogLine>,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(m) => write!(f, "{m}"),
            Error::Compile(m) => write!(f, "cannot compile the plugin: {m}"),
            Error::Load(e) => write!(f, "the plugin is refused at load: {e}"),
            Error::Instantiate {
                plugin,
                instance,
                message,
            } => {
                write!(
                    f,
                    "cannot start the plugin \"{plugin}\" ({instance} VM): {message}"
                )
            }
            Error::Refused {
                callback,
                plugin,
                instance,
                logs,
            } => {
                write!(
                    f,
                    "the plugin \"{plugin}\" refused to start: {callback} returned false in \
                     the {instance} VM"
                )?;
                for l in logs {
                    write!(f, "\n[{}] {}", l.level, l.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The plugin's log lines up to the refusal (empty for other errors).
    pub fn logs(&self) -> &[LogLine] {
        match self {
            Error::Refused { logs, .. } => logs,
            _ => &[],
        }
    }
}

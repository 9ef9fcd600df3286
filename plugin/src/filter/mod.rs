//! The proxy-wasm glue: translates host callbacks into `core` events and `core` actions into
//! host calls. Compiled for wasm32 only.

mod abi;
mod http;
mod metric_names;
mod metrics;
mod needs;
mod poller;
mod root;
mod shared;
mod store;

use proxy_wasm::traits::RootContext;

proxy_wasm::main! {{
    // The SDK's `set_log_level` installs a hook that unwraps the log call; ours cannot fail.
    std::panic::set_hook(Box::new(|info| {
        abi::log(abi::level::CRITICAL, &format!("mixmode: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::default()) });
}}

//! Like the SDK's http_config example: the plugin configuration becomes a response header.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { header: String::new() })
    });
}}

struct Root {
    header: String,
}
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        if let Some(bytes) = self.get_plugin_configuration() {
            self.header = String::from_utf8_lossy(&bytes).into_owned();
        }
        true
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Config {
            header: self.header.clone(),
        }))
    }
}

struct Config {
    header: String,
}
impl Context for Config {}
impl HttpContext for Config {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_response_header("custom-header", &self.header);
        Action::Continue
    }
}

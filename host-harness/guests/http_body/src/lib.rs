//! Like the SDK's http_body example: buffers the whole response body, then replaces it.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Body))
    }
}

struct Body;
impl Context for Body {}
impl HttpContext for Body {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        // The body's length changes: the old content-length must go.
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            if let Ok(text) = std::str::from_utf8(&body) {
                let redacted = text.replace("secret", "******");
                self.set_http_response_body(0, body_size, redacted.as_bytes());
            }
        }
        Action::Continue
    }
}

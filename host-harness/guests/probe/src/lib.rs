//! A test filter for host-harness: what it does is chosen per request by `x-probe`, and it
//! reports what it saw in response headers, bodies and log lines.
use log::{error, info};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use std::time::Duration;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

/// Raw single-header read: (status, value).
fn raw_header(map: u32, key: &str) -> (u32, Vec<u8>) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let s =
        unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut data, &mut size) };
    let v = if s == 0 && !data.is_null() {
        unsafe { Vec::from_raw_parts(data, size, size) }
    } else {
        Vec::new()
    };
    (s, v)
}

/// Raw read of all pairs: (status, number of pairs).
fn raw_pairs(map: u32) -> (u32, u32) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let s = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if s != 0 || data.is_null() || size < 4 {
        return (s, 0);
    }
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    (
        s,
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    )
}

/// Raw property read: (status, value).
fn raw_property(path: &[&str]) -> (u32, Vec<u8>) {
    let joined = path.join("\0");
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let s = unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) };
    let v = if s == 0 && !data.is_null() {
        unsafe { Vec::from_raw_parts(data, size, size) }
    } else {
        Vec::new()
    };
    (s, v)
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    requests: u32,
    ticks: u32,
    queue_items: u32,
    gauge: u32,
    queue: u32,
    /// `max_ticks=N`: this instance stops ticking after N ticks, so a test can compare counters
    /// that no longer move.
    max_ticks: Option<u64>,
    ticked: u64,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        match self.get_vm_configuration() {
            Some(c) if c == b"refuse" => {
                error!("vm configuration refused on purpose");
                false
            }
            _ => true,
        }
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        if config.contains("refuse") {
            error!("bad configuration: {config}");
            return false;
        }
        for part in config.split(';') {
            if let Some(ms) = part.strip_prefix("tick_ms=") {
                if let Ok(ms) = ms.parse::<u64>() {
                    self.set_tick_period(Duration::from_millis(ms));
                }
            }
            if let Some(n) = part.strip_prefix("max_ticks=") {
                self.max_ticks = n.parse::<u64>().ok();
            }
        }
        let define = |t, n: &str| hostcalls::define_metric(t, n).unwrap_or(0);
        self.requests = define(MetricType::Counter, "probe.requests");
        self.ticks = define(MetricType::Counter, "probe.ticks");
        self.queue_items = define(MetricType::Counter, "probe.queue_items");
        self.gauge = define(MetricType::Gauge, "probe.gauge");
        self.queue = hostcalls::register_shared_queue("probe_q").unwrap_or(0);
        info!("configured: {config}");
        true
    }

    fn on_tick(&mut self) {
        self.ticked += 1;
        if self.max_ticks.is_some_and(|max| self.ticked >= max) {
            self.set_tick_period(Duration::ZERO);
        }
        info!("tick");
        let _ = hostcalls::increment_metric(self.ticks, 1);
        // A CAS-protected counter every VM instance bumps.
        loop {
            let (value, cas) = hostcalls::get_shared_data("ticks").unwrap_or((None, None));
            // An absent key has no CAS, and CAS 0 writes unconditionally (Envoy's rule), so two
            // first ticks would both write 1. A non-zero CAS creates an absent key and fails on
            // a key another instance created meanwhile (its CAS is a small counter, never MAX).
            let cas = cas.or(Some(u32::MAX));
            let n = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            match hostcalls::set_shared_data("ticks", Some((n + 1).to_string().as_bytes()), cas) {
                Err(Status::CasMismatch) => continue,
                _ => break,
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {
            let _ = hostcalls::increment_metric(self.queue_items, 1);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let _ = hostcalls::increment_metric(self.requests, 1);
        Some(Box::new(Probe {
            id: context_id,
            mode: String::new(),
            sizes: Vec::new(),
            gauge: self.gauge,
        }))
    }
}

struct Probe {
    id: u32,
    mode: String,
    sizes: Vec<usize>,
    gauge: u32,
}

impl Probe {
    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header(name)
    }

    fn side_call(&self) -> Result<u32, Status> {
        self.dispatch_http_call(
            "side",
            vec![
                (":method", "GET"),
                (":path", "/side"),
                (":authority", "side"),
            ],
            None,
            vec![],
            Duration::from_secs(5),
        )
    }

    fn reply(&self, status: u32, headers: Vec<(&str, &str)>, body: &str) -> Action {
        self.send_http_response(status, headers, Some(body.as_bytes()));
        Action::Pause
    }

    fn dispatch(&mut self) -> Action {
        let cluster = self.header("x-probe-cluster").unwrap_or_default();
        let authority = self
            .header("x-probe-authority")
            .unwrap_or_else(|| "peer".into());
        let target = self.header("x-probe-target");
        let timeout = self
            .header("x-probe-timeout-ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(5000u64);
        let mut headers = vec![(":method", "GET"), (":path", "/call")];
        if authority != "none" {
            headers.push((":authority", authority.as_str()));
        }
        if let Some(t) = target.as_deref() {
            headers.push(("x-envoy-original-dst-host", t));
        }
        match self.dispatch_http_call(
            &cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(timeout),
        ) {
            Ok(_) => Action::Pause,
            Err(status) => {
                let s = format!("{status:?}");
                self.reply(200, vec![("x-dispatch-error", &s)], "")
            }
        }
    }

    /// Appends this filter's root id to the `x-seen` trailer (0: request, 1: response), so a
    /// chain shows the order the trailers went through its filters.
    fn mark_trailer(&self, which: u8) {
        let (_, root) = raw_property(&["plugin_root_id"]);
        let root = String::from_utf8_lossy(&root).into_owned();
        let seen = if which == 0 {
            self.get_http_request_trailer("x-seen")
        } else {
            self.get_http_response_trailer("x-seen")
        };
        let value = match seen {
            Some(v) => format!("{v},{root}"),
            None => root,
        };
        if which == 0 {
            self.set_http_request_trailer("x-seen", Some(&value));
        } else {
            self.set_http_response_trailer("x-seen", Some(&value));
        }
    }

    fn props(&mut self) -> Action {
        let mut out = String::new();
        for path in [
            "plugin_name",
            "plugin_root_id",
            "plugin_vm_id",
            "request.path",
            "request.method",
            "request.host",
            "request.protocol",
            "cluster_name",
            "source.address",
            "upstream.address",
        ] {
            let parts: Vec<&str> = path.split('.').collect();
            let (s, v) = raw_property(&parts);
            out.push_str(&format!("{path}={s}:{}\n", String::from_utf8_lossy(&v)));
        }
        self.reply(200, vec![], &out)
    }

    fn shared(&mut self) -> Action {
        let key = self.header("x-probe-key").unwrap_or_else(|| "k".into());
        let value = self.header("x-probe-value").unwrap_or_default();
        let (old, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
        let stale = cas.map(|c| c.wrapping_add(1000));
        let set = hostcalls::set_shared_data(&key, Some(value.as_bytes()), cas);
        let stale_set = match stale {
            Some(_) => hostcalls::set_shared_data(&key, Some(b"stale"), stale),
            None => Ok(()),
        };
        let body = format!(
            "old={} cas={} set={:?} stale={:?}",
            old.map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_else(|| "-".into()),
            cas.unwrap_or(0),
            set,
            stale_set
        );
        self.reply(200, vec![], &body)
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        info!(
            "#{} call response headers={num_headers} body={body_size}",
            self.id
        );
        match self.mode.as_str() {
            "pause-headers" | "pause-headers-buffer" => self.resume_http_request(),
            "local-response" => {
                self.send_http_response(299, vec![("x-from", "call")], Some(b"replaced"));
            }
            "pause-response" => {
                info!("#{} resuming response", self.id);
                self.set_http_response_header("x-probe", Some("resumed"));
                self.resume_http_response();
            }
            "dispatch" => {
                let (s, status) = raw_header(6, ":status");
                let status = if s == 0 {
                    String::from_utf8_lossy(&status).into_owned()
                } else {
                    format!("none({s})")
                };
                let service_time = if raw_header(6, "x-envoy-upstream-service-time").0 == 0 {
                    "present"
                } else {
                    "absent"
                };
                let names: Vec<String> = self
                    .get_http_call_response_headers_bytes()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                let body = self
                    .get_http_call_response_body(0, body_size)
                    .unwrap_or_default();
                let count = num_headers.to_string();
                let names = names.join(",");
                self.send_http_response(
                    200,
                    vec![
                        ("x-call-status", &status),
                        ("x-call-headers", &count),
                        ("x-call-header-names", &names),
                        ("x-call-service-time", service_time),
                    ],
                    Some(&body),
                );
            }
            _ => {}
        }
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.mode = self.header("x-probe").unwrap_or_default();
        match self.mode.as_str() {
            "pause-headers" => match self.side_call() {
                Ok(_) => Action::Pause,
                Err(_) => self.reply(500, vec![], "side call refused"),
            },
            "pause-headers-buffer" => Action::Pause,
            "local-request" => self.reply(
                418,
                vec![
                    ("set-cookie", "a=1"),
                    ("set-cookie", "b=2"),
                    ("content-length", "999"),
                ],
                "teapot",
            ),
            "dispatch" => self.dispatch(),
            "props" => self.props(),
            "shared" => self.shared(),
            "gauge" => {
                let v = self
                    .header("x-probe-value")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = hostcalls::record_metric(self.gauge, v);
                Action::Continue
            }
            "enqueue" => {
                if let Ok(Some(q)) = hostcalls::resolve_shared_queue("", "probe_q") {
                    let _ = hostcalls::enqueue_shared_queue(q, Some(b"item"));
                }
                Action::Continue
            }
            "panic" => panic!("probe asked to panic"),
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!(
            "#{} request body size={body_size} eos={end_of_stream}",
            self.id
        );
        match self.mode.as_str() {
            "buffer-body" => {
                self.sizes.push(body_size);
                if !end_of_stream {
                    return Action::Pause;
                }
                if let Some(body) = self.get_http_request_body(0, body_size) {
                    let upper = body.to_ascii_uppercase();
                    self.set_http_request_body(0, body_size, &upper);
                }
                Action::Continue
            }
            "pause-headers-buffer" => {
                if end_of_stream && self.side_call().is_err() {
                    return self.reply(500, vec![], "side call refused");
                }
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        match self.mode.as_str() {
            "late-read" => {
                let (single, _) = raw_header(0, ":path");
                let (pairs_status, pairs) = raw_pairs(0);
                let (prop, _) = raw_property(&["request", "path"]);
                let (up_status, up) = raw_property(&["upstream", "address"]);
                let upstream = format!("{up_status}:{}", String::from_utf8_lossy(&up));
                self.add_http_response_header("x-probe-single", &single.to_string());
                self.add_http_response_header("x-probe-pairs", &format!("{pairs_status}:{pairs}"));
                self.add_http_response_header("x-probe-prop", &prop.to_string());
                self.add_http_response_header("x-probe-upstream", &upstream);
                Action::Continue
            }
            "buffer-body" => {
                let sizes: Vec<String> = self.sizes.iter().map(|s| s.to_string()).collect();
                self.add_http_response_header("x-probe-sizes", &sizes.join(","));
                Action::Continue
            }
            "local-request" => {
                let status = self.get_http_response_header(":status").unwrap_or_default();
                self.add_http_response_header("x-probe-saw-response", &status);
                Action::Continue
            }
            "local-response" | "pause-response" => match self.side_call() {
                Ok(_) => Action::Pause,
                Err(_) => Action::Continue,
            },
            _ => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!(
            "#{} response body size={body_size} eos={end_of_stream}",
            self.id
        );
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.mode == "trailers" {
            self.mark_trailer(0);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        if self.mode == "trailers" {
            self.mark_trailer(1);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let (s, path) = raw_header(0, ":path");
        info!(
            "#{} on_log path={s}:{}",
            self.id,
            String::from_utf8_lossy(&path)
        );
    }
}

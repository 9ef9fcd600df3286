//! `host-harness run …`: put a proxy-wasm filter in front of a service without Envoy.

use host_harness::{Harness, ListenerSpec, LogLevel};
use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: host-harness run --plugin FILTER.wasm [--config CONFIG.json]
    --listen ADDR [--upstream ADDR] [--listen ADDR [--upstream ADDR]]...
    [--cluster NAME=ADDR]... [--original-dst-cluster NAME]... [--workers N]
    [--admin ADDR] [--name NAME] [--root-id ID] [--vm-id ID] [--vm-config FILE]
    [--allow-on-headers-stop-iteration] [--log-level trace|debug|info|warn|error]

Each --upstream belongs to the --listen before it; a listener without one answers 404 to
what the filter lets through. Logs go to stderr; metrics are printed on Ctrl-C and served
at ADMIN/stats.";

struct Args {
    plugin: String,
    config: Option<String>,
    vm_config: Option<String>,
    listeners: Vec<ListenerSpec>,
    clusters: Vec<(String, SocketAddr)>,
    original_dst: Vec<String>,
    workers: usize,
    admin: Option<SocketAddr>,
    name: Option<String>,
    root_id: Option<String>,
    vm_id: Option<String>,
    allow_stop: bool,
    log_level: LogLevel,
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("not an address (ip:port): {s}"))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    match it.next().as_deref() {
        Some("run") => {}
        _ => return Err(USAGE.into()),
    }
    let mut a = Args {
        plugin: String::new(),
        config: None,
        vm_config: None,
        listeners: Vec::new(),
        clusters: Vec::new(),
        original_dst: Vec::new(),
        workers: 1,
        admin: None,
        name: None,
        root_id: None,
        vm_id: None,
        allow_stop: false,
        log_level: LogLevel::Info,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--plugin" => a.plugin = value()?,
            "--config" => a.config = Some(value()?),
            "--vm-config" => a.vm_config = Some(value()?),
            "--listen" => a.listeners.push(ListenerSpec {
                bind: addr(&value()?)?,
                upstream: None,
                cluster_name: "upstream".into(),
            }),
            "--upstream" => {
                let up = addr(&value()?)?;
                let l = a
                    .listeners
                    .last_mut()
                    .ok_or("--upstream must follow a --listen")?;
                l.upstream = Some(up);
            }
            "--cluster" => {
                let v = value()?;
                let (name, at) = v.split_once('=').ok_or("--cluster takes NAME=ADDR")?;
                a.clusters.push((name.to_string(), addr(at)?));
            }
            "--original-dst-cluster" => a.original_dst.push(value()?),
            "--workers" => {
                a.workers = value()?
                    .parse()
                    .map_err(|_| "--workers takes a number".to_string())?
            }
            "--admin" => a.admin = Some(addr(&value()?)?),
            "--name" => a.name = Some(value()?),
            "--root-id" => a.root_id = Some(value()?),
            "--vm-id" => a.vm_id = Some(value()?),
            "--allow-on-headers-stop-iteration" => a.allow_stop = true,
            "--log-level" => {
                let v = value()?;
                a.log_level = LogLevel::parse(&v).ok_or(format!("unknown log level {v}"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    if a.plugin.is_empty() || a.listeners.is_empty() {
        return Err(USAGE.into());
    }
    Ok(a)
}

async fn run(a: Args) -> Result<(), String> {
    let mut b = Harness::builder()
        .plugin_wasm(&a.plugin)
        .workers(a.workers)
        .allow_on_headers_stop_iteration(a.allow_stop)
        .log_level(a.log_level)
        .echo_logs(true);
    if let Some(c) = &a.config {
        b = b.plugin_config(std::fs::read(c).map_err(|e| format!("cannot read {c}: {e}"))?);
    }
    if let Some(c) = &a.vm_config {
        b = b.vm_config(std::fs::read(c).map_err(|e| format!("cannot read {c}: {e}"))?);
    }
    for l in a.listeners {
        b = b.listener_spec(l);
    }
    for (name, at) in a.clusters {
        b = b.cluster(name, at);
    }
    for name in a.original_dst {
        b = b.original_dst_cluster(name);
    }
    if let Some(admin) = a.admin {
        b = b.admin(admin);
    }
    if let Some(n) = a.name {
        b = b.name(n);
    }
    if let Some(r) = a.root_id {
        b = b.root_id(r);
    }
    if let Some(v) = a.vm_id {
        b = b.vm_id(v);
    }
    let h = b.start().await.map_err(|e| e.to_string())?;
    for l in h.listener_addrs() {
        eprintln!("host-harness: listening on {l}");
    }
    if let Some(admin) = h.admin_addr() {
        eprintln!("host-harness: admin on http://{admin}/stats");
    }
    let _ = tokio::signal::ctrl_c().await;
    println!("# metrics");
    for (name, value) in h.metrics() {
        println!("wasmcustom.{name}: {value}");
    }
    h.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host-harness: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("host-harness: {msg}");
            ExitCode::FAILURE
        }
    }
}

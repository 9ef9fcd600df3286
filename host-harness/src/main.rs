//! `host-harness run …`: put a proxy-wasm filter in front of a service without Envoy;
//! `host-harness pool …`: take a running harness's pool members out and put them back.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use host_harness::{Harness, ListenerSpec, LogLevel, Plugin};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "host-harness",
    version,
    about = "A proxy-wasm host on wasmtime: run a filter in front of a service without Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a filter and serve listeners until Ctrl-C.
    #[command(after_help = "\
Each --upstream and --stateful-session-header belongs to the --listen before it; several
--upstream make a pool balanced round robin. A listener without one answers 404 to what the
filter lets through. Logs go to stderr in Envoy's format; metrics are printed on Ctrl-C and
served at ADMIN/stats; ADMIN/pools lists the pools (see `host-harness pool`).

--plugin and each --filter are the filter chain, in that order: requests go through them in
order, responses in reverse, as through Envoy's http_filters. --config, --vm-config, --name,
--root-id, --vm-id and --allow-on-headers-stop-iteration describe --plugin; a --filter or a
--service carries its own:
  FILE.wasm[,config=FILE][,vm_config=FILE][,name=N][,root_id=ID][,vm_id=ID]
           [,allow_on_headers_stop_iteration]
Plugins with the same vm_id share one shared-data store. A --service is a singleton
(bootstrap_extensions): one VM on the main thread, ticks, no HTTP.

Example:
  host-harness run --plugin filter.wasm --config cfg.json \\
      --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --upstream 127.0.0.1:9001 \\
      --listen 127.0.0.1:8081 --cluster registry=127.0.0.1:2379 --admin 127.0.0.1:9901
  host-harness run --filter auth.wasm,config=auth.json,vm_id=shared \\
      --filter log.wasm,root_id=log --service poller.wasm,config=poll.json,vm_id=shared \\
      --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000")]
    Run(Box<Run>),
    /// Change the pool behind a listener of a running harness (through its admin endpoint).
    Pool {
        /// The running harness's --admin address.
        #[arg(long, value_name = "ADDR")]
        admin: SocketAddr,
        #[command(subcommand)]
        action: PoolAction,
    },
}

#[derive(Subcommand)]
enum PoolAction {
    /// Print each listener's pool members.
    List,
    /// Take a member out: new requests no longer go to it.
    Remove {
        /// Listener index, in --listen order from 0.
        #[arg(long, default_value_t = 0)]
        listener: usize,
        address: SocketAddr,
    },
    /// Put a member (back) in.
    Add {
        /// Listener index, in --listen order from 0.
        #[arg(long, default_value_t = 0)]
        listener: usize,
        address: SocketAddr,
    },
}

#[derive(Parser)]
struct Run {
    /// The (first) filter module (.wasm, or WAT text).
    #[arg(long, value_name = "FILTER.wasm", required_unless_present_any = ["filter", "service"])]
    plugin: Option<String>,
    /// One more filter after --plugin and the --filter before it (repeatable).
    #[arg(long, value_name = "FILE.wasm[,KEY=VALUE…]", value_parser = plugin_arg)]
    filter: Vec<PluginArg>,
    /// A singleton service: one VM on the main thread, no HTTP (repeatable).
    #[arg(long, value_name = "FILE.wasm[,KEY=VALUE…]", value_parser = plugin_arg)]
    service: Vec<PluginArg>,
    /// The plugin configuration, read by proxy_on_configure.
    #[arg(long, value_name = "CONFIG.json")]
    config: Option<String>,
    /// The VM configuration, read by proxy_on_vm_start.
    #[arg(long, value_name = "FILE")]
    vm_config: Option<String>,
    /// A listener to bind (repeatable; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Vec<SocketAddr>,
    /// An upstream of the --listen before it (repeat for a round-robin pool).
    #[arg(long, value_name = "ADDR")]
    upstream: Vec<SocketAddr>,
    /// Envoy's header-based stateful session on the --listen before it, with this header.
    #[arg(long, value_name = "HEADER")]
    stateful_session_header: Vec<String>,
    /// A cluster dispatch_http_call can name (repeatable).
    #[arg(long, value_name = "NAME=ADDR", value_parser = cluster)]
    cluster: Vec<(String, SocketAddr)>,
    /// An ORIGINAL_DST cluster following x-envoy-original-dst-host (repeatable).
    #[arg(long, value_name = "NAME")]
    original_dst_cluster: Vec<String>,
    /// Worker VM instances serving requests (Envoy's --concurrency).
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Serve /stats, /logs and /pools here.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The plugin's name.
    #[arg(long)]
    name: Option<String>,
    /// The plugin's root_id.
    #[arg(long, value_name = "ID")]
    root_id: Option<String>,
    /// The vm_id.
    #[arg(long, value_name = "ID")]
    vm_id: Option<String>,
    /// Envoy's allow_on_headers_stop_iteration.
    #[arg(long)]
    allow_on_headers_stop_iteration: bool,
    /// trace, debug, info, warn, error or critical.
    #[arg(long, default_value = "info", value_parser = log_level)]
    log_level: LogLevel,
}

fn cluster(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, at) = s.split_once('=').ok_or("takes NAME=ADDR")?;
    let addr = at
        .parse()
        .map_err(|_| format!("not an address (ip:port): {at}"))?;
    Ok((name.to_string(), addr))
}

/// A `--filter`/`--service` value: the module and its plugin options.
#[derive(Clone, Debug, Default, PartialEq)]
struct PluginArg {
    wasm: String,
    config: Option<String>,
    vm_config: Option<String>,
    name: Option<String>,
    root_id: Option<String>,
    vm_id: Option<String>,
    allow_on_headers_stop_iteration: bool,
}

fn plugin_arg(s: &str) -> Result<PluginArg, String> {
    let mut parts = s.split(',');
    let wasm = parts.next().unwrap_or_default();
    if wasm.is_empty() {
        return Err("takes FILE.wasm[,KEY=VALUE…]".into());
    }
    let mut p = PluginArg {
        wasm: wasm.to_string(),
        ..PluginArg::default()
    };
    for part in parts {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let slot = match key {
            "config" => &mut p.config,
            "vm_config" => &mut p.vm_config,
            "name" => &mut p.name,
            "root_id" => &mut p.root_id,
            "vm_id" => &mut p.vm_id,
            "allow_on_headers_stop_iteration" => {
                p.allow_on_headers_stop_iteration = match value {
                    "" | "true" => true,
                    "false" => false,
                    _ => return Err(format!("{key} takes true or false, not {value}")),
                };
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown key {key:?}: config, vm_config, name, root_id, vm_id or \
                     allow_on_headers_stop_iteration"
                ))
            }
        };
        *slot = Some(value.to_string());
    }
    Ok(p)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

impl PluginArg {
    fn plugin(&self) -> Result<Plugin, String> {
        let mut p = Plugin::wasm(&self.wasm)
            .allow_on_headers_stop_iteration(self.allow_on_headers_stop_iteration);
        if let Some(c) = &self.config {
            p = p.config(read(c)?);
        }
        if let Some(c) = &self.vm_config {
            p = p.vm_config(read(c)?);
        }
        if let Some(n) = &self.name {
            p = p.name(n);
        }
        if let Some(r) = &self.root_id {
            p = p.root_id(r);
        }
        if let Some(v) = &self.vm_id {
            p = p.vm_id(v);
        }
        Ok(p)
    }
}

fn log_level(s: &str) -> Result<LogLevel, String> {
    LogLevel::parse(s).ok_or(format!("unknown log level {s}"))
}

/// Gives each --upstream and --stateful-session-header to the --listen before it, by position
/// on the command line.
fn listeners(run: &Run, m: &clap::ArgMatches) -> Result<Vec<ListenerSpec>, String> {
    let at = |id: &str| -> Vec<usize> { m.indices_of(id).map(|i| i.collect()).unwrap_or_default() };
    let listen_at = at("listen");
    let owner = |index: usize, flag: &str| -> Result<usize, String> {
        listen_at
            .iter()
            .rposition(|l| *l < index)
            .ok_or(format!("--{flag} must follow a --listen"))
    };
    let mut specs: Vec<ListenerSpec> = run
        .listen
        .iter()
        .map(|b| ListenerSpec::without_upstream(*b))
        .collect();
    for (up, index) in run.upstream.iter().zip(at("upstream")) {
        let spec = specs
            .get_mut(owner(index, "upstream")?)
            .ok_or("--upstream without listener")?;
        spec.cluster_name = "upstream".into();
        spec.upstreams.get_or_insert_with(Vec::new).push(*up);
    }
    for (header, index) in run
        .stateful_session_header
        .iter()
        .zip(at("stateful_session_header"))
    {
        let spec = specs
            .get_mut(owner(index, "stateful-session-header")?)
            .ok_or("--stateful-session-header without listener")?;
        spec.stateful_session_header = Some(header.clone());
    }
    Ok(specs)
}

async fn run(a: Run, specs: Vec<ListenerSpec>) -> Result<(), String> {
    let mut b = Harness::builder()
        .workers(a.workers)
        .allow_on_headers_stop_iteration(a.allow_on_headers_stop_iteration)
        .log_level(a.log_level)
        .echo_logs(true);
    match &a.plugin {
        Some(p) => b = b.plugin_wasm(p),
        None => {
            let given = [
                ("config", a.config.is_some()),
                ("vm-config", a.vm_config.is_some()),
                ("name", a.name.is_some()),
                ("root-id", a.root_id.is_some()),
                ("vm-id", a.vm_id.is_some()),
                (
                    "allow-on-headers-stop-iteration",
                    a.allow_on_headers_stop_iteration,
                ),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "--{flag} describes --plugin, which is not given; a --filter or \
                     --service takes its own (e.g. --filter f.wasm,config=FILE)"
                ));
            }
        }
    }
    if let Some(c) = &a.config {
        b = b.plugin_config(read(c)?);
    }
    if let Some(c) = &a.vm_config {
        b = b.vm_config(read(c)?);
    }
    for f in &a.filter {
        b = b.filter(f.plugin()?);
    }
    for s in &a.service {
        b = b.service(s.plugin()?);
    }
    for l in specs {
        b = b.listener_spec(l);
    }
    for (name, at) in a.cluster {
        b = b.cluster(name, at);
    }
    for name in a.original_dst_cluster {
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
    print!("{}", h.stats_text());
    h.shutdown().await;
    Ok(())
}

/// One request to the admin endpoint; the body, or the reason it failed.
async fn admin_request(admin: SocketAddr, method: &str, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("cannot reach the admin endpoint {admin}: {e}"))?;
    let req = format!("{method} {path} HTTP/1.1\r\nhost: {admin}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let ok = head
        .split(' ')
        .nth(1)
        .is_some_and(|status| status.starts_with('2'));
    if ok {
        Ok(body.to_string())
    } else {
        Err(body.trim().to_string())
    }
}

async fn pool(admin: SocketAddr, action: PoolAction) -> Result<(), String> {
    let body = match action {
        PoolAction::List => admin_request(admin, "GET", "/pools").await?,
        PoolAction::Remove { listener, address } => {
            let path = format!("/pools/remove?listener={listener}&address={address}");
            admin_request(admin, "POST", &path).await?
        }
        PoolAction::Add { listener, address } => {
            let path = format!("/pools/add?listener={listener}&address={address}");
            admin_request(admin, "POST", &path).await?
        }
    };
    print!("{body}");
    Ok(())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
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
    let result = match cli.command {
        Command::Run(r) => {
            let sub = matches.subcommand_matches("run");
            match sub.map(|m| listeners(&r, m)) {
                Some(Ok(specs)) => rt.block_on(run(*r, specs)),
                Some(Err(msg)) => {
                    eprintln!("host-harness: {msg}");
                    return ExitCode::from(2);
                }
                None => Err("no run arguments".to_string()),
            }
        }
        Command::Pool { admin, action } => rt.block_on(pool(admin, action)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("host-harness: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_args_carry_their_options() {
        assert_eq!(
            plugin_arg("a.wasm,config=c.json,vm_id=shared,root_id=r,name=n").unwrap(),
            PluginArg {
                wasm: "a.wasm".into(),
                config: Some("c.json".into()),
                name: Some("n".into()),
                root_id: Some("r".into()),
                vm_id: Some("shared".into()),
                ..PluginArg::default()
            }
        );
        assert!(
            plugin_arg("a.wasm,allow_on_headers_stop_iteration")
                .unwrap()
                .allow_on_headers_stop_iteration
        );
        assert!(plugin_arg("a.wasm,colour=red")
            .unwrap_err()
            .contains("unknown key \"colour\""));
        assert!(plugin_arg(",config=x").is_err());
    }
}

//! The command-line program: serves a filter in front of an upstream, shows metrics at the
//! admin endpoint and refuses a configuration the plugin refuses.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn free_addr() -> std::net::SocketAddr {
    dead_addr().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_forwards_and_serves_stats() {
    let up = upstream(|_| Reply::ok("through the cli")).await;
    let (listen, admin) = (free_addr().await, free_addr().await);
    let dir = std::env::temp_dir().join(format!("hh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.txt");
    std::fs::write(&config, "tick_ms=1000").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--plugin"])
        .arg(guest("probe"))
        .arg("--config")
        .arg(&config)
        .args([
            "--listen",
            &listen.to_string(),
            "--upstream",
            &up.addr.to_string(),
        ])
        .args(["--admin", &admin.to_string(), "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = None;
    for _ in 0..200 {
        if let Ok(g) = send(listen, "GET", "/", &[], b"").await {
            got = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = got.expect("the cli listens");
    assert_eq!(got.text(), "through the cli");
    let stats = get(admin, "/stats", &[]).await.text();
    assert!(
        stats.lines().any(|l| l == "wasmcustom.probe.requests: 1"),
        "{stats}"
    );
    // Ctrl-C: metrics on stdout, exit 0.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wasmcustom.probe.requests: 1"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wasm log plugin : configured: tick_ms=1000"),
        "{stderr}"
    );
}

#[test]
fn a_refused_configuration_fails_with_the_plugin_log() {
    let dir = std::env::temp_dir().join(format!("hh-cli-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.txt");
    std::fs::write(&config, "refuse").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--plugin"])
        .arg(guest("probe"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("proxy_on_configure returned false"),
        "{stderr}"
    );
    assert!(stderr.contains("bad configuration: refuse"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_a_filter_chain_and_a_service() {
    let up = upstream(|_| Reply::ok("through the chain")).await;
    let listen = free_addr().await;
    let dir = std::env::temp_dir().join(format!("hh-cli-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [("one", "one"), ("two", "two"), ("svc", "from the service")] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let guests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/chain");
    // Each its own VM configuration, so each its own VM (the tag guest keeps its tag in a
    // global).
    let plugin = |wat: &str, config: &str| {
        let file = dir.join(config).display().to_string();
        format!(
            "{},config={file},vm_config={file},vm_id=shared",
            guests.join(wat).display(),
        )
    };
    let child = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--filter", &plugin("tag.wat", "one")])
        .args(["--filter", &plugin("tag.wat", "two")])
        .args(["--service", &plugin("ticker.wat", "svc")])
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &up.addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the harness listens and the service has ticked once (then the entry stays: the
    // request after that one sees it in both filters).
    let mut ticked = false;
    for _ in 0..800 {
        if let Ok(g) = send(listen, "GET", "/", &[], b"").await {
            if g.header("x-tick").is_some() {
                ticked = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = send(listen, "GET", "/", &[], b"").await;
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(ticked, "the cli listens and its service ticks");
    let got = got.unwrap();
    assert_eq!(got.text(), "through the chain");
    assert_eq!(got.all("x-order"), ["two", "one"]);
    assert_eq!(got.all("x-tick"), ["from the service"; 2]);
    let seen = up.requests().pop().unwrap();
    let order: Vec<_> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-order")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(order, ["one", "two"]);
    assert!(out.status.success());
}

#[test]
fn options_of_the_plugin_need_the_plugin() {
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--filter", "f.wasm", "--config", "c.json"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config describes --plugin, which is not given"),
        "{stderr}"
    );
}

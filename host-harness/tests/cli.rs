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

//! A listener in front of a pool: round robin, members taken out and put back while traffic
//! flows (from the library and from `host-harness pool`), and Envoy's header-based stateful
//! session (observed on Envoy 1.40, docs/design.md#version-affinity: a hint naming a member goes there and gets
//! no response header; anything else is round robin and the response names the host chosen;
//! the request header reaches the upstream untouched), with envoy.yaml's connect-failure retry
//! and the header_mutation that hides the session header.
#![cfg(test)]

mod common;
use common::*;
use host_harness::{encode_host, Harness, ListenerSpec};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn servers(n: usize) -> Vec<Upstream> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(upstream(move |_| Reply::ok(&format!("server {i}"))).await);
    }
    out
}

async fn answers(listener: SocketAddr, n: usize, headers: &[(&str, &str)]) -> Vec<Got> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(listener, "/", headers).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_is_balanced_round_robin_and_members_come_and_go() {
    let ups = servers(3).await;
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let h = Harness::builder()
        .plugin_wasm(guest("noop"))
        .workers(2)
        .listener_pool("127.0.0.1:0", addrs.clone())
        .start()
        .await
        .unwrap();
    let l = h.listener_addrs()[0];
    let texts: Vec<String> = answers(l, 6, &[]).await.iter().map(Got::text).collect();
    assert_eq!(
        texts,
        ["server 0", "server 1", "server 2", "server 0", "server 1", "server 2"]
    );

    let pool = h.pool(0).unwrap();
    assert!(pool.remove(addrs[1]));
    assert_eq!(pool.members(), vec![addrs[0], addrs[2]]);
    let texts: Vec<String> = answers(l, 4, &[]).await.iter().map(Got::text).collect();
    assert!(!texts.iter().any(|t| t == "server 1"), "{texts:?}");
    assert_eq!(ups[1].requests().len(), 2);

    assert!(pool.add(addrs[1]));
    let texts: Vec<String> = answers(l, 3, &[]).await.iter().map(Got::text).collect();
    assert!(texts.iter().any(|t| t == "server 1"), "{texts:?}");

    // Nobody left: Envoy's 503 for a cluster without a healthy host.
    for a in &addrs {
        pool.remove(*a);
    }
    let got = get(l, "/", &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "no healthy upstream");
    assert!(got.header("x-envoy-upstream-service-time").is_none());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_based_stateful_session_follows_envoy() {
    let ups = servers(3).await;
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let h = Harness::builder()
        .plugin_wasm(guest("noop"))
        .listener_spec(
            ListenerSpec::pool("127.0.0.1:0".parse().unwrap(), addrs.clone())
                .stateful_session("x-host"),
        )
        .start()
        .await
        .unwrap();
    let l = h.listener_addrs()[0];

    // A hint naming a member: that member every time, no response header.
    let hint = encode_host(addrs[2]);
    for got in answers(l, 4, &[("x-host", &hint)]).await {
        assert_eq!(got.text(), "server 2");
        assert!(got.header("x-host").is_none());
    }
    // The upstream sees the request header as the client sent it.
    assert!(ups[2]
        .requests()
        .iter()
        .all(|r| r.header("x-host") == Some(hint.as_str())));

    // No hint: round robin, and the response names the member chosen.
    for got in answers(l, 3, &[]).await {
        let named = got.header("x-host").expect("the chosen host is written");
        let i = addrs.iter().position(|a| encode_host(*a) == named).unwrap();
        assert_eq!(got.text(), format!("server {i}"));
    }

    // A hint outside the pool or for a member taken out: round robin, header written.
    let outside = encode_host("127.0.0.1:9".parse().unwrap());
    let got = get(l, "/", &[("x-host", &outside)]).await;
    assert_eq!(got.status, 200);
    assert!(got.header("x-host").is_some_and(|v| v != outside));
    h.pool(0).unwrap().remove(addrs[2]);
    for got in answers(l, 4, &[("x-host", &hint)]).await {
        assert_ne!(got.text(), "server 2");
        assert!(got.header("x-host").is_some());
    }
    h.shutdown().await;
}

/// envoy.yaml's public route as the harness lays it out: a hinted member that stopped is tried,
/// then the route's one connect-failure retry goes to another member (`previous_hosts`, the
/// hint no longer counts) and the response header names the host that answered; with a
/// header_mutation after the wasm filter the client never sees that header. Without the retry
/// the client gets Envoy's 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hinted_member_is_retried_elsewhere_as_the_route_says() {
    let ups = servers(2).await;
    let dead = dead_addr().await;
    let members = vec![dead, ups[0].addr, ups[1].addr];
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let session = || ListenerSpec::pool(bind, members.clone()).stateful_session("x-host");
    let h = Harness::builder()
        .plugin_wasm(guest("noop"))
        .listener_spec(
            session()
                .connect_failure_retries(1)
                .remove_response_header("x-host"),
        )
        .listener_spec(session().connect_failure_retries(1))
        .listener_spec(session())
        .start()
        .await
        .unwrap();
    let [removed, retried, plain] = h.listener_addrs()[..] else {
        panic!("three listeners: {:?}", h.listener_addrs());
    };
    let to_dead = encode_host(dead);

    for got in answers(retried, 4, &[("x-host", &to_dead)]).await {
        assert_eq!(got.status, 200, "{}", got.text());
        let named = got
            .header("x-host")
            .expect("the host that answered is written");
        let i = ups
            .iter()
            .position(|u| encode_host(u.addr) == named)
            .unwrap();
        assert_eq!(got.text(), format!("server {i}"));
    }
    // Round robin meets the stopped member every third request; the retry moves on.
    for got in answers(retried, 6, &[]).await {
        assert_eq!(got.status, 200, "{}", got.text());
    }
    // With the header_mutation: the same answers, without the header.
    for hint in [to_dead.as_str(), "", &encode_host(ups[1].addr)] {
        for got in answers(removed, 3, &[("x-host", hint)]).await {
            assert_eq!(got.status, 200, "{}", got.text());
            assert!(got.header("x-host").is_none(), "{hint}");
            if !hint.is_empty() && hint != to_dead {
                assert_eq!(got.text(), "server 1", "a live hinted member still wins");
            }
        }
    }
    // No retry: Envoy's 503 for the stopped member.
    let got = get(plain, "/", &[("x-host", &to_dead)]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), host_harness::CONNECT_FAILURE_BODY);
    h.shutdown().await;
}

async fn cli(args: &[String]) -> (bool, String, String) {
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_host-harness"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_members_out_and_puts_them_back() {
    let ups = servers(2).await;
    let (listen, admin) = (dead_addr().await, dead_addr().await);
    let mut child = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--plugin"])
        .arg(guest("noop"))
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &ups[0].addr.to_string()])
        .args(["--upstream", &ups[1].addr.to_string()])
        .args(["--admin", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..400 {
        if send(listen, "GET", "/", &[], b"").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the cli listens");
    let admin_s = admin.to_string();
    let (ok, listed, _) = cli(&[
        "pool".into(),
        "--admin".into(),
        admin_s.clone(),
        "list".into(),
    ])
    .await;
    assert!(ok);
    assert_eq!(
        listed.trim(),
        format!("listener 0: {} {}", ups[0].addr, ups[1].addr)
    );
    let change = |verb: &str, addr: SocketAddr| {
        vec![
            "pool".to_string(),
            "--admin".into(),
            admin_s.clone(),
            verb.into(),
            "--listener".into(),
            "0".into(),
            addr.to_string(),
        ]
    };
    let (ok, out, _) = cli(&change("remove", ups[0].addr)).await;
    assert!(ok, "{out}");
    let before = ups[0].requests().len();
    for got in answers(listen, 4, &[]).await {
        assert_eq!(got.text(), "server 1");
    }
    assert_eq!(ups[0].requests().len(), before);
    // Removing it twice is an error that says why.
    let (ok, _, err) = cli(&change("remove", ups[0].addr)).await;
    assert!(!ok);
    assert!(err.contains("is not a member"), "{err}");
    let (ok, _, _) = cli(&change("add", ups[0].addr)).await;
    assert!(ok);
    let texts: Vec<String> = answers(listen, 2, &[])
        .await
        .iter()
        .map(Got::text)
        .collect();
    assert!(texts.iter().any(|t| t == "server 0"), "{texts:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `--help` documents every option of `run`.
#[test]
fn run_help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--plugin",
        "--config",
        "--listen",
        "--upstream",
        "--stateful-session-header",
        "--cluster",
        "--original-dst-cluster",
        "--workers",
        "--admin",
        "--allow-on-headers-stop-iteration",
        "--log-level",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

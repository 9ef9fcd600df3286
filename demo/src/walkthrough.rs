//! One rescue, step by step, before the numbers: a version-2 session sent to a version-1 server.
//! Envoy's pool holds only the v1 server; the v2 server is known to mixmode through its
//! heartbeat, so the only way the request can succeed is a re-dispatch.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mixmode_tests::app::{AppConfig, AppServer, HeartbeatClient, Registration, SessionStore};
use mixmode_tests::client::{Req, Resp};
use serde_json::{json, Value};

use crate::envoy;
use crate::run::RunOptions;
use crate::setup::{plugin_config, render_yaml, write_eds, Render, Setup, HEARTBEAT_PATH, TOKEN};

fn show_headers(r: &Resp, names: &[&str]) {
    for n in names {
        if let Some(v) = r.header(n) {
            println!("      {n}: {v}");
        }
    }
}

fn step(url: &str, cookie: &str, body: &Value) -> Req {
    Req::post(url.to_string(), body.to_string().into_bytes())
        .header("content-type", "application/json")
        .header("cookie", format!("session={cookie}"))
        .timeout(Duration::from_secs(10))
}

pub async fn walkthrough(o: &RunOptions) -> Result<()> {
    let store = SessionStore::new();
    let a = AppServer::start(AppConfig::new("server-A", "1", &store)).await?;
    let b = AppServer::start(AppConfig::new("server-B", "2", &store)).await?;
    let cfg = plugin_config(TOKEN, Setup::Mixmode)?;
    let dir = tempfile::Builder::new().prefix("mixmode-demo-").tempdir()?;
    let eds = dir.path().join("pool.json");
    write_eds(&eds, 1, &[a.addr()])?;
    let yaml = render_yaml(&Render {
        setup: Setup::Mixmode,
        wasm: &o.wasm,
        plugin_config: &cfg,
        upstreams: &[a.addr()],
        eds_path: &eds,
    })?;
    let envoy = envoy::start(&yaml, 1)
        .await
        .context("start Envoy for the walkthrough")?;
    let hb = HeartbeatClient::new(envoy.heartbeat_url(HEARTBEAT_PATH), TOKEN);
    hb.register(&Registration::of(&a)).await?;
    hb.register(&Registration::of(&b)).await?;

    println!("== One rescued request ==");
    println!(
        "  Envoy {} (pid {}) + mixmode; its pool: server-A {} (v1) only.",
        envoy.public_url(),
        envoy.pid(),
        a.addr()
    );
    println!(
        "  Registered with mixmode by heartbeat: server-A (v1), server-B {} (v2).",
        b.addr()
    );

    let r = Req::post(
        format!("{}/transfer/recipient", b.url()),
        json!({"recipient": "alice"}).to_string().into_bytes(),
    )
    .header("content-type", "application/json")
    .send()
    .await?;
    let session = r.json()?["session"]
        .as_str()
        .map(str::to_string)
        .context("no session")?;
    println!(
        "  1. A user starts a transfer on server-B (v2, four steps): session {session}, next step `date`."
    );

    let date = json!({"date": "2026-12-01"});
    let t = Instant::now();
    let direct = step(&format!("{}/transfer/date", a.url()), &session, &date)
        .send()
        .await?;
    let direct_us = t.elapsed().as_micros();
    println!(
        "  2. Sent straight to server-A (v1), step `date` fails as the patent describes ({direct_us} µs):"
    );
    println!("      HTTP {}", direct.status);
    show_headers(
        &direct,
        &[
            "x-session-version",
            "x-app-version",
            "x-session-class",
            "x-session-size",
            "x-served-by",
        ],
    );
    println!("      body: {}", direct.text().trim());

    let t = Instant::now();
    let rescued = step(
        &format!("{}/transfer/date", envoy.public_url()),
        &session,
        &date,
    )
    .send()
    .await?;
    let rescued_us = t.elapsed().as_micros();
    println!(
        "  3. The same request through Envoy + mixmode: Envoy routes it to server-A, gets the 409,\n     re-dispatches it to server-B, and the client gets ({rescued_us} µs):"
    );
    println!("      HTTP {}", rescued.status);
    show_headers(&rescued, &["x-mixmode", "x-served-by", "x-app-version"]);
    println!("      body: {}", rescued.text().trim());
    let m = envoy
        .counters("wasmcustom.mixmode.")
        .await
        .unwrap_or_default();
    let get = |k: &str| {
        m.get(&format!("wasmcustom.mixmode.{k}"))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  Envoy's counters: mixmode.mismatch_detected {}, mixmode.redispatch_ok {}; server-A saw {} app request(s), server-B {}.",
        get("mismatch_detected"),
        get("redispatch_ok"),
        a.requests().iter().filter(|r| r.path.starts_with("/transfer/")).count(),
        b.requests().iter().filter(|r| r.path.starts_with("/transfer/")).count(),
    );
    println!();
    if direct.status != 409
        || rescued.status != 200
        || rescued.header("x-mixmode").as_deref() != Some("redispatched")
        || rescued.header("x-served-by").as_deref() != Some("server-B")
    {
        bail!("the walkthrough's rescue did not happen as expected (see above)");
    }
    Ok(())
}

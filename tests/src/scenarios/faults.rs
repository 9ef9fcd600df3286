//! Faults and hostile input, each checked by what the user or the operator sees. The
//! single faults (one dead, slow, garbage or truncating peer; the deadline; a mismatch whose body
//! still streams; most bad heartbeats) have their own scenarios in `failures`, `signal`, `bodies`
//! and `registry`; these are the combinations and what those leave out.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use super::{server, show, Fixture, TOKEN};
use crate::app::{Mode, Registration, SessionStore};
use crate::client::{Req, Resp};
use crate::host::Host;

/// What a filter that crashed leaves in the host's log (docs/envoy-facts.md#sdk-and-failure).
pub fn assert_no_crash(logs: &str) {
    for needle in ["panicked", "RuntimeError", "Uncaught"] {
        let hit: Vec<&str> = logs.lines().filter(|l| l.contains(needle)).collect();
        assert!(hit.is_empty(), "the filter crashed ({needle}): {hit:?}");
    }
}

/// A 200 whose body is the whole JSON answer of `server`, with `x-mixmode: redispatched`.
fn assert_rescued_by(r: &Resp, server: &str) {
    assert_eq!(r.status, 200, "{}", show(r));
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("redispatched"),
        "{}",
        show(r)
    );
    let body = r
        .json()
        .unwrap_or_else(|e| panic!("not a whole answer ({e}): {}", show(r)));
    assert_eq!(body["server"], server, "{}", show(r));
}

/// Every way a peer can fail in one chain, freshest first: registered then gone before the
/// dispatch, bytes that are not HTTP, headers then a close mid-body, a server of the wrong
/// version. With nothing else registered the client gets the original 409 and its body
/// (`exhausted`), for a GET and a POST alike (none of them timed out); once a good peer is
/// registered (the oldest, tried last) both are rescued by it and never see a partial answer.
pub async fn chain_of_failing_peers<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let good = server(&store, "good", "2").await;
    let mut gone = server(&store, "gone", "2").await;
    let garbage = server(&store, "garbage", "2").await;
    garbage.set_mode(Mode::Garbage);
    let truncating = server(&store, "truncating", "2").await;
    truncating.set_mode(Mode::CloseMidBody);
    let wrong = server(&store, "wrong", "1").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    let cookie = f.session("2");
    for s in [&wrong, &truncating, &garbage, &gone] {
        f.register_as(s.addr(), "2").await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    gone.stop().await;

    for method in [Method::GET, Method::POST] {
        let direct = Req::new(method.clone(), format!("{}/echo", v1.url()))
            .body("pay=7")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let r = Req::new(method.clone(), f.url("/echo"))
            .body("pay=7")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 409, "{method}: {}", show(&r));
        assert_eq!(
            r.header("x-mixmode").as_deref(),
            Some("exhausted"),
            "{method}: {}",
            show(&r)
        );
        assert_eq!(r.body, direct.body, "{method}: the original error's body");
    }

    f.register(&good).await;
    // The good peer is the freshest now; make it the stalest so the whole chain runs first.
    for s in [&wrong, &truncating, &garbage] {
        tokio::time::sleep(Duration::from_millis(15)).await;
        f.register_as(s.addr(), "2").await;
    }
    for method in [Method::GET, Method::POST] {
        let r = Req::new(method.clone(), f.url("/echo"))
            .body("pay=7")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_rescued_by(&r, "good");
    }
    assert_eq!(good.request_count(), 2);
    for req in good.requests() {
        assert_eq!(req.body.as_ref(), b"pay=7");
    }
    // Four failing peers for each exhausted request; three before the good one after (the
    // gone one is now older than it).
    f.expect_counters(&[
        ("mismatch_detected", 4),
        ("attempt_failed", 14),
        ("exhausted", 2),
        ("redispatch_ok", 2),
        ("heartbeat_accepted", 8),
    ])
    .await;
    assert_no_crash(&f.host.logs());
}

/// Heartbeats stop while rescues run (4 clients back to back): the record goes stale and
/// clients get the original 409 with `x-mixmode: no-peer` — never anything else, never a
/// crash; when heartbeats resume, rescues resume.
pub async fn heartbeats_stop_during_load<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"registry": {"stale_after_ms": 1000}}),
    )
    .await;
    let cookie = f.session("2");
    let beat =
        f.hb.spawn_periodic(Registration::of(&v2), Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = f.url("/echo");
    let start = Instant::now();
    // Phases: heartbeats until 1.5 s, none until 4 s, heartbeats again until 5.5 s.
    let stop_at = Duration::from_millis(1500);
    let resume_at = Duration::from_millis(4000);
    let end_at = Duration::from_millis(5500);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, cookie) = (url.clone(), cookie.clone());
        clients.spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < end_at {
                let at = start.elapsed();
                let r = Req::get(&url).header("cookie", &cookie).send().await;
                seen.push((at, r));
            }
            seen
        });
    }
    tokio::time::sleep(stop_at.saturating_sub(start.elapsed())).await;
    beat.abort();
    tokio::time::sleep(resume_at.saturating_sub(start.elapsed())).await;
    let beat =
        f.hb.spawn_periodic(Registration::of(&v2), Duration::from_millis(200));
    let mut all = Vec::new();
    while let Some(c) = clients.join_next().await {
        all.extend(c.unwrap());
    }
    beat.abort();

    let (mut rescued, mut no_peer) = ([0; 3], [0; 3]);
    for (at, r) in &all {
        let r = r.as_ref().unwrap_or_else(|e| panic!("at {at:?}: {e:#}"));
        let phase = if *at < stop_at {
            0
        } else if *at < resume_at {
            1
        } else {
            2
        };
        match (r.status, r.header("x-mixmode").as_deref()) {
            (200, Some("redispatched")) => {
                assert_eq!(r.json().unwrap()["server"], "v2");
                rescued[phase] += 1;
            }
            (409, Some("no-peer")) => {
                assert!(r.text().contains("written by version 2"), "{}", show(r));
                no_peer[phase] += 1;
            }
            _ => panic!("at {at:?}: {}", show(r)),
        }
    }
    assert!(
        rescued[0] > 0 && no_peer[0] == 0,
        "with heartbeats: {rescued:?} rescued, {no_peer:?} no-peer"
    );
    // Stale 1 s after the last heartbeat (≤ 1.5 s): the last 1.3 s of the pause are no-peer.
    assert!(
        no_peer[1] > 0,
        "heartbeats stopped: {rescued:?} rescued, {no_peer:?} no-peer"
    );
    assert!(
        rescued[2] > 0,
        "heartbeats resumed: {rescued:?} rescued, {no_peer:?} no-peer"
    );
    let last = all
        .iter()
        .filter(|(at, _)| *at > end_at - Duration::from_millis(800));
    for (at, r) in last {
        let r = r.as_ref().unwrap();
        assert_eq!(r.status, 200, "at {at:?}, heartbeats resumed: {}", show(r));
    }
    assert_no_crash(&f.host.logs());
}

/// Control characters (CR, LF, tab, NUL, DEL, ESC) in each field of a heartbeat, IPv4-mapped
/// and unbracketed IPv6 addresses, ports out of range: each refused, nothing stored.
pub async fn hostile_heartbeat_fields_refused<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    let before = f.hb.list().await.unwrap();
    let good = json!({"app": "checkout", "version": "2", "address": "127.0.0.1:9",
                      "pool": "default"});
    let mut rejected = 0u64;
    for field in ["app", "version", "address", "pool"] {
        for bad in ["\r\n", "\n", "\t", "\u{0}", "\u{7f}", "\u{1b}[31m"] {
            let mut body = good.clone();
            let value = format!("{}{bad}x", good[field].as_str().unwrap());
            body[field] = json!(value);
            let r =
                f.hb.send_raw(Method::POST, body.to_string(), Some(TOKEN))
                    .await
                    .unwrap();
            assert_eq!(r.status, 400, "{field} = {value:?}: {}", show(&r));
            assert!(r.json().unwrap()["error"].as_str().is_some());
            rejected += 1;
        }
    }
    for (address, statuses) in [
        ("[::ffff:8.8.8.8]:80", &[400u16, 403][..]),
        ("::1:80", &[400]),
        ("127.0.0.1:65536", &[400]),
        ("127.0.0.1:-1", &[400]),
        ("127.0.0.1:80 ", &[400]),
        (" 127.0.0.1:80", &[400]),
        ("127.0.0.1:80/x", &[400]),
        ("0x7f.0.0.1:80", &[400]),
        ("127.1:80", &[400]),
    ] {
        let mut body = good.clone();
        body["address"] = json!(address);
        let r =
            f.hb.send_raw(Method::POST, body.to_string(), Some(TOKEN))
                .await
                .unwrap();
        assert!(statuses.contains(&r.status), "{address:?}: {}", show(&r));
        rejected += 1;
    }
    assert_eq!(f.hb.list().await.unwrap(), before, "something was stored");
    assert_eq!(v1.request_count(), 0, "a heartbeat reached an upstream");
    f.expect_counters(&[("heartbeat_rejected", rejected), ("heartbeat_accepted", 0)])
        .await;
    assert_no_crash(&f.host.logs());
}

/// A flood of distinct addresses, 8 at a time over two workers, past `max_records`: the cap
/// holds (at most `max_records` listed), the rest get 429 with a JSON reason, and a server
/// registered before the flood is still rescued from.
pub async fn heartbeat_flood_past_the_cap<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f =
        Fixture::<H>::start_with(&store, &[&v1], json!({"registry": {"max_records": 40}}), 2).await;
    f.register(&v2).await;
    let mut sent = tokio::task::JoinSet::new();
    for lane in 0..8u16 {
        let hb = f.hb.clone();
        sent.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..25u16 {
                let reg = Registration {
                    app: "checkout".into(),
                    version: "3".into(),
                    address: format!("10.1.{lane}.{i}:80"),
                    pool: None,
                };
                let r = hb.post(&reg).await.unwrap();
                if r.status == 429 {
                    assert!(r.json().is_ok(), "429 without a JSON reason: {}", show(&r));
                }
                statuses.push(r.status);
            }
            statuses
        });
    }
    let (mut accepted, mut full) = (0, 0);
    while let Some(s) = sent.join_next().await {
        for status in s.unwrap() {
            match status {
                204 => accepted += 1,
                429 => full += 1,
                other => panic!("flood heartbeat answered {other}"),
            }
        }
    }
    let listed = f.hb.list().await.unwrap();
    assert!(
        listed.len() <= 40,
        "{} records listed past a cap of 40 ({accepted} accepted, {full} refused)",
        listed.len()
    );
    assert_eq!(
        accepted + 1,
        listed.len(),
        "accepted ones are the listed ones"
    );
    assert_eq!(accepted + full, 200);
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_rescued_by(&r, "v2");
    assert_no_crash(&f.host.logs());
}

/// A client on the public listener sending the headers only mixmode may send: an ordinary
/// request with `x-envoy-original-dst-host` naming another server and `x-mixmode-attempt` goes
/// to the pool as any request would (the target gets nothing); a version error carrying both
/// is neither steered nor re-dispatched.
pub async fn client_sent_internal_headers_steer_nothing<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let target = server(&store, "target", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let evil = target.addr().to_string();

    for headers in [
        vec![("x-envoy-original-dst-host", evil.as_str())],
        vec![("x-mixmode-attempt", "1")],
        vec![
            ("x-mixmode-attempt", "1"),
            ("x-envoy-original-dst-host", evil.as_str()),
        ],
    ] {
        let mut own = Req::get(f.url("/echo")).header("cookie", f.session("1"));
        let mut mismatch = Req::get(f.url("/echo")).header("cookie", f.session("2"));
        for (n, v) in &headers {
            own = own.header(n, v);
            mismatch = mismatch.header(n, v);
        }
        let r = own.send().await.unwrap();
        assert_eq!(r.status, 200, "{headers:?}: {}", show(&r));
        assert_eq!(r.json().unwrap()["server"], "v1", "{headers:?}");
        assert_eq!(r.header("x-mixmode"), None);
        let r = mismatch.send().await.unwrap();
        if headers.iter().any(|(n, _)| *n == "x-mixmode-attempt") {
            assert_eq!(r.status, 409, "{headers:?}: {}", show(&r));
        } else {
            assert_rescued_by(&r, "v2");
        }
    }
    assert_eq!(target.request_count(), 0, "a client steered a request");
    f.expect_counters(&[("redispatch_ok", 1)]).await;
    assert_no_crash(&f.host.logs());
}

/// A peer registered with an address that accepts connections and then never answers (a hung
/// process) while the deadline is short: attempts stop at the deadline, the client gets the
/// original error, and the next request (another peer registered meanwhile) is rescued: the
/// hung peer holds nothing up.
pub async fn hung_peer_then_recovery<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    // Accepts, never reads, never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"attempt_timeout_ms": 400, "deadline_ms": 600,
                              "selection": "freshest"}}),
    )
    .await;
    f.register_as(hung.local_addr().unwrap(), "2").await;
    let t = Instant::now();
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("exhausted"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    f.register_as(hung.local_addr().unwrap(), "2").await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_rescued_by(&r, "v2");
    drop(hung);
    assert_no_crash(&f.host.logs());
}

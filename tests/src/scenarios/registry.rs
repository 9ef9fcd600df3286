//! The registry: heartbeats, staleness, deregistration, refusals, concurrency.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Method;
use serde_json::json;

use super::{server, show, Fixture, TOKEN};
use crate::app::{Registration, SessionStore};
use crate::client::Req;
use crate::host::Host;

/// A record not refreshed for `stale_after_ms` is neither listed nor chosen.
pub async fn stale_record_not_chosen<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let old = server(&store, "old", "2").await;
    let fresh = server(&store, "fresh", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"registry": {"stale_after_ms": 1000}}),
    )
    .await;
    f.register(&old).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // "fresh" heartbeats as a live server does, so it stays fresh however long the checks
    // below take on a loaded machine (a single heartbeat went stale mid-check there).
    f.register(&fresh).await;
    let beating =
        f.hb.spawn_periodic(Registration::of(&fresh), Duration::from_millis(100));

    let listed: Vec<String> =
        f.hb.list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.address)
            .collect();
    assert_eq!(listed, vec![fresh.addr().to_string()]);
    for _ in 0..4 {
        let r = Req::get(f.url("/echo"))
            .header("cookie", f.session("2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(r.json().unwrap()["server"], "fresh");
    }
    assert_eq!(old.request_count(), 0, "a stale record was chosen");

    beating.abort();
    let _ = beating.await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );
    assert!(f.hb.list().await.unwrap().is_empty());
    f.expect_counters(&[
        ("redispatch_ok", 4),
        ("no_peer", 1),
        ("mismatch_detected", 5),
    ])
    .await;
}

/// DELETE removes the record: no longer listed, no longer chosen.
pub async fn delete_removes_record<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    let reg = Registration::of(&v2);
    f.hb.register(&reg).await.unwrap();
    let listed = f.hb.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].app.as_str(),
            listed[0].version.as_str(),
            listed[0].pool.as_str()
        ),
        ("checkout", "2", "default")
    );
    assert_eq!(listed[0].address, v2.addr().to_string());
    assert!(listed[0].first_seen_ms <= listed[0].last_seen_ms);

    f.hb.deregister(&reg).await.unwrap();
    assert!(f.hb.list().await.unwrap().is_empty());
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );
    assert_eq!(v2.request_count(), 0);
    f.expect_counters(&[("no_peer", 1)]).await;
}

/// Refused heartbeats (401 without or with a wrong token or with the token in the wrong
/// place, 403 outside the allow-list, 400 for malformed, incomplete, oversized or bad values)
/// each leave the registry as it was, and never reach an upstream.
pub async fn bad_heartbeats_change_nothing<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let before = f.hb.list().await.unwrap();
    assert_eq!(before.len(), 1);

    let with = |address: &str| {
        json!({"app": "checkout", "version": "3", "address": address})
            .to_string()
            .into_bytes()
    };
    let field = |name: &str, value: &str| {
        let mut v = json!({"app": "checkout", "version": "3", "address": "127.0.0.1:9"});
        v[name] = json!(value);
        v.to_string().into_bytes()
    };
    // Valid JSON padded with spaces to one byte over the 4 KiB limit.
    let mut over = with("127.0.0.1:9");
    over.resize(4097, b' ');
    let mut not_utf8 = with("127.0.0.1:9");
    not_utf8.splice(9..9, [0xff, 0xfe]);
    let post = Method::POST;
    let suffixed = format!("{TOKEN}x");
    // (what, method, body, token, expected status)
    type Case<'a> = (&'a str, Method, Vec<u8>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("no token", post.clone(), with("127.0.0.1:9"), None, 401),
        (
            "wrong token",
            post.clone(),
            with("127.0.0.1:9"),
            Some("wrong-token"),
            401,
        ),
        (
            "token with a suffix",
            post.clone(),
            with("127.0.0.1:9"),
            Some(suffixed.as_str()),
            401,
        ),
        (
            "wrong token on DELETE",
            Method::DELETE,
            Registration::of(&v2).to_json().into_bytes(),
            Some("x"),
            401,
        ),
        (
            "outside allow-list",
            post.clone(),
            with("8.8.8.8:80"),
            Some(TOKEN),
            403,
        ),
        (
            "IPv6 outside allow-list",
            post.clone(),
            with("[2001:db8::1]:80"),
            Some(TOKEN),
            403,
        ),
        (
            "malformed JSON",
            post.clone(),
            b"{\"app\": \"checkout\", ".to_vec(),
            Some(TOKEN),
            400,
        ),
        (
            "missing version",
            post.clone(),
            json!({"app": "checkout", "address": "127.0.0.1:9"})
                .to_string()
                .into_bytes(),
            Some(TOKEN),
            400,
        ),
        ("4 KiB + 1 body", post.clone(), over, Some(TOKEN), 400),
        ("invalid UTF-8", post.clone(), not_utf8, Some(TOKEN), 400),
        (
            "host name",
            post.clone(),
            with("localhost:80"),
            Some(TOKEN),
            400,
        ),
        ("no port", post.clone(), with("127.0.0.1"), Some(TOKEN), 400),
        (
            "port out of range",
            post.clone(),
            with("127.0.0.1:70000"),
            Some(TOKEN),
            400,
        ),
        (
            "control character",
            post.clone(),
            field("app", "check\nout"),
            Some(TOKEN),
            400,
        ),
        (
            "CR/LF in version",
            post.clone(),
            field("version", "2\r\nx-evil: 1"),
            Some(TOKEN),
            400,
        ),
        (
            "empty version",
            post.clone(),
            field("version", ""),
            Some(TOKEN),
            400,
        ),
    ];
    let mut rejected = 0;
    for (what, method, body, token, status) in cases {
        let r = f.hb.send_raw(method, body, token).await.unwrap();
        assert_eq!(r.status, status, "{what}: {}", show(&r));
        rejected += 1;
        if status == 400 {
            let err = r.json().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                err["error"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: {}",
                show(&r)
            );
        }
        assert_eq!(
            f.hb.list().await.unwrap(),
            before,
            "{what} changed the registry"
        );
    }
    // The token in the wrong place: another header, or another scheme.
    for (what, name, value) in [
        ("x-token header", "x-token", TOKEN.to_string()),
        ("Basic scheme", "authorization", format!("Basic {TOKEN}")),
        ("bare token", "authorization", TOKEN.to_string()),
    ] {
        let r = Req::post(&f.hb.url, with("127.0.0.1:9"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{what}: {}", show(&r));
        rejected += 1;
        assert_eq!(
            f.hb.list().await.unwrap(),
            before,
            "{what} changed the registry"
        );
    }
    // The listing needs the token too.
    let r = f.hb.send_raw(Method::GET, "", None).await.unwrap();
    assert_eq!(r.status, 401, "{}", show(&r));
    assert_eq!(v1.request_count(), 0, "a heartbeat reached an upstream");
    f.expect_counters(&[
        ("heartbeat_rejected", rejected + 1),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

/// Inputs at the edge of valid are accepted: a body of exactly 4 KiB, an IPv6 address inside
/// the allow-list, names of the maximum length.
pub async fn edge_heartbeats_accepted<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    let mut exact = json!({"app": "checkout", "version": "3", "address": "127.0.0.1:9"})
        .to_string()
        .into_bytes();
    exact.resize(4096, b' ');
    let r =
        f.hb.send_raw(Method::POST, exact, Some(TOKEN))
            .await
            .unwrap();
    assert_eq!(r.status, 204, "4096-byte body: {}", show(&r));
    let ipv6 = Registration {
        app: "checkout".into(),
        version: "3".into(),
        address: "[::1]:9000".into(),
        pool: None,
    };
    f.hb.register(&ipv6).await.unwrap();
    let long = Registration {
        app: "checkout".into(),
        version: "v".repeat(128),
        address: "10.1.2.3:8080".into(),
        pool: Some("p".repeat(128)),
    };
    f.hb.register(&long).await.unwrap();
    let mut listed: Vec<String> =
        f.hb.list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.address)
            .collect();
    listed.sort();
    assert_eq!(listed, vec!["10.1.2.3:8080", "127.0.0.1:9", "[::1]:9000"]);
    f.expect_counters(&[("heartbeat_accepted", 3), ("registry_records", 3)])
        .await;
}

/// With two workers, many concurrent heartbeats (one connection each, so both workers get
/// some) are all kept: no lost CAS update. Then concurrent rescues on both workers all find the
/// peer registered through one of them.
pub async fn concurrent_heartbeats_on_two_workers_all_kept<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start_with(&store, &[&v1], json!({}), 2).await;
    const N: u16 = 120;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let hb = f.hb.clone();
            tokio::spawn(async move {
                let reg = Registration {
                    app: "checkout".into(),
                    version: format!("{}", 7 + i % 3),
                    address: SocketAddr::from(([127, 0, 1, (i % 250) as u8 + 1], 10_000 + i))
                        .to_string(),
                    pool: None,
                };
                hb.register(&reg).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let listed = f.hb.list().await.unwrap();
    assert_eq!(listed.len(), N as usize, "lost heartbeats");
    if let Some(per_worker) = f.host.heartbeat_connections_per_worker().await.unwrap() {
        assert_eq!(per_worker.len(), 2, "{per_worker:?}");
        assert!(
            per_worker.iter().all(|n| *n > 0),
            "one worker got no heartbeat: {per_worker:?}"
        );
    }
    // What one worker wrote, the other reads: rescues over many connections all find the peer.
    let v2 = server(&store, "v2", "2").await;
    f.register(&v2).await;
    let rescues: Vec<_> = (0..20)
        .map(|_| {
            let req = Req::get(f.url("/echo")).header("cookie", f.session("2"));
            tokio::spawn(req.send())
        })
        .collect();
    for t in rescues {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    }
    f.expect_counters(&[
        ("heartbeat_accepted", N as u64 + 1),
        ("registry_records", N as u64 + 1),
        ("redispatch_ok", 20),
    ])
    .await;
}

/// The registry gauge follows registrations and deregistrations; heartbeat counters match.
pub async fn registry_gauge_and_counters_match<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let a = server(&store, "a", "2").await;
    let b = server(&store, "b", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&a).await;
    f.register(&b).await;
    f.register(&a).await; // a refresh, not a new record
    f.expect_counters(&[("heartbeat_accepted", 3), ("registry_records", 2)])
        .await;
    f.hb.deregister(&Registration::of(&b)).await.unwrap();
    let r =
        f.hb.send_raw(Method::POST, "{}", Some(TOKEN))
            .await
            .unwrap();
    assert_eq!(r.status, 400);
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    f.expect_counters(&[
        ("heartbeat_accepted", 4),
        ("heartbeat_rejected", 1),
        ("registry_records", 1),
        ("redispatch_ok", 1),
        ("mismatch_detected", 1),
    ])
    .await;
}

/// Past `max_records`, a heartbeat for a new address gets 429 and changes nothing; known
/// addresses still refresh.
pub async fn max_records_cap_answers_429<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({"registry": {"max_records": 3}})).await;
    let reg = |port: u16| Registration {
        app: "checkout".into(),
        version: "2".into(),
        address: format!("127.0.0.1:{port}"),
        pool: None,
    };
    for port in 1..=3 {
        f.hb.register(&reg(port)).await.unwrap();
    }
    let before = f.hb.list().await.unwrap();
    let r = f.hb.post(&reg(4)).await.unwrap();
    assert_eq!(r.status, 429, "{}", show(&r));
    assert!(r.json().is_ok(), "429 without a JSON reason: {}", show(&r));
    assert_eq!(f.hb.list().await.unwrap(), before);
    f.hb.register(&reg(2)).await.unwrap();
    assert_eq!(f.hb.list().await.unwrap().len(), 3);
    f.expect_counters(&[
        ("heartbeat_accepted", 4),
        ("heartbeat_rejected", 1),
        ("registry_records", 3),
    ])
    .await;
}

/// A server restarted with a new version moves to that version at its first heartbeat (one
/// record per address), and then rescues sessions of its new version.
pub async fn restarted_server_moves_to_new_version<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let mut upgraded = server(&store, "upgraded", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&upgraded).await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );

    let addr = upgraded.addr();
    upgraded.restart("2").await.unwrap();
    assert_eq!(upgraded.addr(), addr);
    f.register(&upgraded).await;
    let listed = f.hb.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].version, "2");
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "upgraded");
    assert_eq!(r.json().unwrap()["version"], "2");
    f.expect_counters(&[
        ("no_peer", 1),
        ("redispatch_ok", 1),
        ("registry_records", 1),
    ])
    .await;
}

/// Pull (docs/design.md#pull-polls): with `registry.poll`, the proxy asks each target for its version: a
/// server is registered without sending heartbeats, follows its version across a restart,
/// and goes stale once it stops answering. One poller per proxy, not one per worker.
pub async fn pull_poll_registers_and_follows_versions<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let mut polled = server(&store, "polled", "2").await;
    let dead = super::dead_address();
    let f = Fixture::<H>::start_with(
        &store,
        &[&v1],
        json!({"registry": {"stale_after_ms": 1000,
                            "poll": {"targets": [polled.addr().to_string(), dead.to_string()],
                                     "interval_ms": 200, "timeout_ms": 150}}}),
        2,
    )
    .await;
    let polled_addr = polled.addr().to_string();
    let listed_version = || async {
        f.hb.list()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.address == polled_addr)
            .map(|r| r.version)
    };
    wait_for(
        || async { listed_version().await.as_deref() == Some("2") },
        "first poll",
    )
    .await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "polled");
    assert!(f
        .hb
        .list()
        .await
        .unwrap()
        .iter()
        .all(|r| r.address != dead.to_string()));

    // Polls over one second: at 200 ms, about five, whatever the number of workers.
    let version_polls = || {
        polled
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/.well-known/mixmode/version"))
            .count()
    };
    let before = version_polls();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let polls = version_polls() - before;
    assert!(
        (2..=8).contains(&polls),
        "{polls} polls in 1 s at a 200 ms interval (one poller per worker?)"
    );

    let addr = polled.addr();
    polled.restart("3").await.unwrap();
    assert_eq!(polled.addr(), addr);
    wait_for(
        || async { listed_version().await.as_deref() == Some("3") },
        "the new version",
    )
    .await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["version"], "3", "{}", show(&r));

    polled.stop().await;
    wait_for(
        || async { listed_version().await.is_none() },
        "the stopped server going stale",
    )
    .await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("3"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );
}

/// Polls `cond` every 50 ms for up to 5 s.
async fn wait_for<F, Fut>(cond: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// With `registry.cross_pool`, a server of another pool is a candidate (the own pool's are
/// preferred); without it, it is not (see `no_peer_of_that_version`).
pub async fn cross_pool_peers_when_enabled<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let other = server(&store, "other-pool", "2").await;
    let own = server(&store, "own-pool", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"pool": "pool-a", "registry": {"cross_pool": true}}),
    )
    .await;
    let mut reg = Registration::of(&other);
    reg.pool = Some("pool-b".into());
    f.hb.register(&reg).await.unwrap();
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "other-pool");

    // Once the own pool has a peer, it is the one chosen.
    f.hb.register(&Registration::of(&own)).await.unwrap();
    for _ in 0..5 {
        let r = Req::get(f.url("/echo"))
            .header("cookie", f.session("2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.json().unwrap()["server"], "own-pool", "{}", show(&r));
    }
    f.expect_counters(&[("redispatch_ok", 6)]).await;
}

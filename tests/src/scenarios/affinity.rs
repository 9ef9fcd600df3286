//! Version affinity (docs/design.md#version-affinity): after a rescue the client holds a cookie naming its session's
//! version, and its next requests reach a server of that version directly, through Envoy's own
//! stateful session filter.
//!
//! Both hosts lay out envoy.yaml's public listener: the header-based stateful session (the hint
//! chooses the pool member), the header_mutation that hides its response header, and the
//! route's connect-failure retry (tests/src/harness_host.rs reads them from the file).

use std::collections::BTreeSet;

use serde_json::json;

use super::{dead_address, server, show, Fixture};
use crate::app::SessionStore;
use crate::client::{Req, Resp};
use crate::host::Host;

pub const COOKIE: &str = "mixmode-version";
pub const HOST_HEADER: &str = "x-mixmode-host";

fn on() -> serde_json::Value {
    json!({"affinity": {"cookie": COOKIE, "max_age_s": 600, "host_header": HOST_HEADER}})
}

/// `base64("ip:port")`, the stateful session's encoding of a host.
pub fn hint(addr: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in addr.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The affinity cookie among a reply's `set-cookie`s.
fn affinity_cookie(r: &Resp) -> Option<String> {
    r.header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{COOKIE}=")))
}

/// Sends the session's request until one is rescued (round robin brings it to a v1 server
/// within the pool's size), and returns that reply.
async fn first_rescue<H: Host>(f: &Fixture<H>, session: &str, pool_size: usize) -> Resp {
    for _ in 0..pool_size {
        let r = Req::get(f.url("/echo"))
            .header("cookie", session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        if r.header("x-mixmode").as_deref() == Some("redispatched") {
            return r;
        }
        assert_eq!(affinity_cookie(&r), None, "a direct answer sets no cookie");
    }
    panic!("{}: no request of {pool_size} met a v1 server", H::NAME);
}

fn served_by(r: &Resp) -> String {
    r.header("x-served-by").unwrap_or_default()
}

/// After one rescue the client holds `mixmode-version=2`; its next requests go to the v2
/// servers directly (both of them: the rescue's random rule), no v1 server sees any of them,
/// nothing is re-dispatched, and no reply names an internal host.
pub async fn affinity_cookie_routes_the_session_to_its_version<H: Host>() {
    let store = SessionStore::new();
    let v1a = server(&store, "v1a", "1").await;
    let v1b = server(&store, "v1b", "1").await;
    let v2a = server(&store, "v2a", "2").await;
    let v2b = server(&store, "v2b", "2").await;
    let pool = [&v1a, &v2a, &v1b, &v2b];
    let f = Fixture::<H>::start(&store, &pool, on()).await;
    for s in pool {
        f.register(s).await;
    }
    let session = f.session("2");

    let rescued = first_rescue(&f, &session, pool.len()).await;
    assert_eq!(
        affinity_cookie(&rescued).as_deref(),
        Some("mixmode-version=2; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"),
        "{}",
        show(&rescued)
    );
    // The peer's own cookies are still there.
    assert_eq!(
        rescued.header_all("set-cookie").len(),
        3,
        "{}",
        show(&rescued)
    );
    for s in pool {
        s.clear_requests();
    }
    let before = f.host.metrics().await.unwrap();

    let with_cookie = format!("{session}; {COOKIE}=2");
    let mut servers = BTreeSet::new();
    for i in 0..30 {
        let r = Req::post(f.url("/echo"), format!("step={i}"))
            .header("cookie", &with_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(
            r.header("x-mixmode"),
            None,
            "not re-dispatched: {}",
            show(&r)
        );
        assert_eq!(
            r.header(HOST_HEADER),
            None,
            "internal host leaked: {}",
            show(&r)
        );
        servers.insert(served_by(&r));
    }
    assert_eq!(
        v1a.request_count() + v1b.request_count(),
        0,
        "a v1 server saw the session"
    );
    assert_eq!(
        servers,
        BTreeSet::from(["v2a".to_string(), "v2b".to_string()])
    );
    // The hint reached the v2 server as Envoy forwards it; the client never sent one.
    let at_v2: Vec<_> = v2a.requests().into_iter().chain(v2b.requests()).collect();
    assert_eq!(at_v2.len(), 30);

    // A request without the cookie is load-balanced as ever, and the stateful session's
    // response header (the host round robin chose) never reaches the client.
    for _ in 0..4 {
        let r = Req::get(f.url("/echo")).send().await.unwrap();
        assert_eq!(
            r.header(HOST_HEADER),
            None,
            "internal host leaked: {}",
            show(&r)
        );
        assert_eq!(affinity_cookie(&r), None);
    }
    assert!(v1a.request_count() + v1b.request_count() > 0);

    let after = f.host.metrics().await.unwrap();
    let delta = |n: &str| {
        let k = format!("mixmode.{n}");
        after.get(&k).copied().unwrap_or(0) - before.get(&k).copied().unwrap_or(0)
    };
    assert_eq!(delta("affinity_routed"), 30, "{after:?}");
    assert_eq!(delta("affinity_miss"), 0);
    assert_eq!(
        delta("mismatch_detected"),
        0,
        "no version error after the cookie"
    );
}

/// The hinted server stops (without deregistering: a crash). The session's next request is
/// load-balanced instead, meets the v1 server, is rescued by the other v2 server, and the
/// reply renews the cookie. Nothing is lost.
pub async fn affinity_stopped_hinted_server_falls_back_then_rescued<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let mut v2a = server(&store, "v2a", "2").await;
    // A rescue target outside the public pool.
    let v2b = server(&store, "v2b", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1, &v2a],
        json!({"affinity": {"cookie": COOKIE, "host_header": HOST_HEADER},
               "redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v1).await;
    f.register(&v2b).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // The freshest v2 record: every hint names it.
    f.register(&v2a).await;
    let with_cookie = format!("{}; {COOKIE}=2", f.session("2"));

    for _ in 0..3 {
        let r = Req::get(f.url("/echo"))
            .header("cookie", &with_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(served_by(&r), "v2a", "{}", show(&r));
        assert_eq!(r.header("x-mixmode"), None);
    }
    assert_eq!(v1.request_count(), 0);
    v2a.stop().await;
    // The crash also closes the proxy's kept-alive connection to v2a. A request Envoy writes on
    // that connection before its worker has read the close gets "connection termination" (a
    // reset after the request left, which no retry policy may safely repeat for a POST); a
    // real crash is rarely that close to the next request. Give the close time to be read.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let r = Req::post(f.url("/echo"), "after the crash")
        .header("cookie", &with_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(served_by(&r), "v2b", "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert!(
        affinity_cookie(&r).is_some_and(|c| c.starts_with("mixmode-version=2;")),
        "cookie renewed: {}",
        show(&r)
    );
    assert_eq!(v1.request_count(), 1, "load-balanced to the v1 server once");
    assert_eq!(v2b.requests()[0].body.as_ref(), b"after the crash");
}

/// What a client sends cannot steer a request outside the pool: a forged `x-mixmode-host`
/// (to a registered server outside the pool, to an address that never registered, to a pool
/// member of the wrong version) is removed or replaced, and a forged cookie only names a
/// version, whose hint Envoy honours only for a member of the pool.
pub async fn affinity_forged_hint_or_cookie_reaches_no_outside_host<H: Host>() {
    let store = SessionStore::new();
    let v1a = server(&store, "v1a", "1").await;
    let v1b = server(&store, "v1b", "1").await;
    let v2 = server(&store, "v2", "2").await;
    // Registered as v2 but not in the pool.
    let outside = server(&store, "outside", "2").await;
    // Neither registered nor in the pool.
    let stranger = server(&store, "stranger", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1a, &v1b, &v2], on()).await;
    for s in [&v1a, &v1b, &v2, &outside] {
        f.register(s).await;
    }
    let session = f.session("1");
    let pool_names = ["v1a", "v1b", "v2"];

    let mut forged = vec![
        hint(&outside.addr().to_string()),
        hint(&stranger.addr().to_string()),
        hint(&dead_address().to_string()),
        "not base64 at all".to_string(),
    ];
    forged.push(hint(&v2.addr().to_string()));
    for h in &forged {
        let r = Req::get(f.url("/echo"))
            .header("cookie", &session)
            .header(HOST_HEADER, h)
            .header(HOST_HEADER, hint(&outside.addr().to_string()))
            .send()
            .await
            .unwrap();
        assert!(
            pool_names.contains(&served_by(&r).as_str()),
            "{h}: {}",
            show(&r)
        );
    }
    // Removed, not only ignored: no pool server received a client's hint.
    for s in [&v1a, &v1b, &v2] {
        for rq in s.requests() {
            assert_eq!(
                rq.header(HOST_HEADER),
                None,
                "{} got a client's hint",
                s.name()
            );
        }
    }
    // The pool is round robin again: every member was reached, v2 included (a v1 session
    // there is a version error, rescued by a v1 server: not the forged target).
    assert!(v2.request_count() > 0);

    // Forged cookies: a version nobody registered, an address, a base64 hint.
    for cookie in [
        format!("{COOKIE}=9"),
        format!("{COOKIE}={}", outside.addr()),
        format!("{COOKIE}={}", hint(&outside.addr().to_string())),
    ] {
        let r = Req::get(f.url("/echo"))
            .header("cookie", format!("{session}; {cookie}"))
            .send()
            .await
            .unwrap();
        assert!(pool_names.contains(&served_by(&r).as_str()), "{}", show(&r));
    }
    assert_eq!(
        outside.request_count(),
        0,
        "a host outside the pool was reached"
    );
    assert_eq!(
        stranger.request_count(),
        0,
        "an unregistered host was reached"
    );
    let m = f.host.metrics().await.unwrap();
    assert_eq!(m.get("mixmode.affinity_miss").copied(), Some(3), "{m:?}");

    // The filter's own hint to a registered v2 server outside the pool is not honoured
    // either: Envoy load-balances over the pool.
    outside.clear_requests();
    let v2_cookie = format!("{}; {COOKIE}=2", f.session("2"));
    for _ in 0..6 {
        let r = Req::get(f.url("/echo/direct"))
            .header("cookie", &v2_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
    }
    for rq in outside.requests() {
        assert!(
            rq.header("x-mixmode-attempt").is_some(),
            "reached outside the pool other than by a rescue: {}",
            rq.path
        );
    }
}

/// A session version that a cookie cannot carry (`;` would split it into attributes) is
/// rescued as ever, and no cookie is set.
pub async fn affinity_version_a_cookie_cannot_carry<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let odd = server(&store, "odd", "2;beta").await;
    let f = Fixture::<H>::start(&store, &[&v1], on()).await;
    f.register(&odd).await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2;beta"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(served_by(&r), "odd");
    assert_eq!(affinity_cookie(&r), None, "{}", show(&r));
    for c in r.header_all("set-cookie") {
        assert!(!c.contains("beta"), "{c}");
    }
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("redispatch_ok", 1),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

/// Without `affinity` a rescue sets no cookie, and a request with the cookie is not hinted.
pub async fn affinity_off_sets_no_cookie<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let session = f.session("2");
    for cookie in [session.clone(), format!("{session}; {COOKIE}=2")] {
        let r = Req::get(f.url("/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
        assert_eq!(affinity_cookie(&r), None, "{}", show(&r));
        assert_eq!(
            r.header_all("set-cookie").len(),
            2,
            "the peer's own cookies only"
        );
    }
    assert_eq!(v1.request_count(), 2, "no hint: the pool's server saw both");
    for rq in v1.requests() {
        assert_eq!(rq.header(HOST_HEADER), None);
    }
    f.expect_counters(&[
        ("mismatch_detected", 2),
        ("redispatch_ok", 2),
        ("heartbeat_accepted", 1),
        ("affinity_routed", 0),
        ("affinity_miss", 0),
    ])
    .await;
}

//! A version mismatch rescued by a peer, and what must not be touched.

use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::{assert_untouched, binary_body, server, show, Fixture};
use crate::app::{sha256_hex, transfer};
use crate::client::Req;
use crate::host::Host;

/// A v2 session sent to a v1 server: the client gets the v2 peer's 200 and body, the v1 server
/// saw the request once, and the peer received the POST body byte for byte.
pub async fn rescue_post_body_byte_for_byte<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v1).await;
    f.register(&v2).await;
    let cookie = f.session("2");
    let body = binary_body(64 * 1024);

    let r = Req::post(f.url("/echo/pay?step=3"), body.clone())
        .header("cookie", &cookie)
        .header("content-type", "application/octet-stream")
        .header("x-custom", "kept")
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();

    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("redispatched"),
        "{}",
        show(&r)
    );
    assert_eq!(r.header("x-served-by").as_deref(), Some("v2"));
    let echo = r.json().unwrap();
    assert_eq!(echo["server"], "v2");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/pay?step=3");
    assert_eq!(echo["body_sha256"], sha256_hex(&body));
    // The peer's duplicate headers reach the client.
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; Path=/"]
    );

    assert_eq!(v1.request_count(), 1, "the v1 server sees the request once");
    let seen = v2.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref(),
        body.as_slice(),
        "body at the peer differs"
    );
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/echo/pay?step=3");
    assert_eq!(seen[0].header("cookie").as_deref(), Some(cookie.as_str()));
    assert_eq!(seen[0].header("x-custom").as_deref(), Some("kept"));
    assert_eq!(
        seen[0].header("host").as_deref(),
        Some("shop.example.com"),
        "authority replayed"
    );
    assert_eq!(
        v1.requests()[0].header("host").as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(
        seen[0].header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(seen[0].header("x-mixmode-attempt").as_deref(), Some("1"));

    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("redispatch_ok", 1),
        ("heartbeat_accepted", 2),
    ])
    .await;
}

/// A session of the server's own version goes straight through: same answer as the server
/// gives directly, no `x-mixmode`, the peer never contacted.
pub async fn own_version_passes_untouched<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let cookie = f.session("1");
    let body = binary_body(10_000);

    let r = Req::post(f.url("/echo/own"), body.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let direct = Req::post(format!("{}/echo/own", v1.url()), body.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();

    assert_eq!(r.status, 200, "{}", show(&r));
    assert_untouched(&r, &direct);
    assert_eq!(r.header_all("set-cookie").len(), 2);
    assert_eq!(r.header("x-app-version").as_deref(), Some("1"));
    // Through the proxy, then directly.
    assert_eq!(v1.request_count(), 2);
    assert_eq!(v1.requests()[0].body.as_ref(), body.as_slice());
    assert_eq!(v1.requests()[0].header("x-mixmode-attempt"), None);
    assert_eq!(v2.request_count(), 0, "nothing dispatched");
    f.expect_counters(&[
        ("mismatch_detected", 0),
        ("not_version_error", 0),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

/// The patent's money transfer through a pool of a v1 and a v2 server (round robin): each
/// transfer's steps alternate between versions, and every transfer completes.
pub async fn transfers_complete_across_a_mixed_pool<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1, &v2], json!({})).await;
    f.register(&v1).await;
    f.register(&v2).await;

    let mut rescued = 0;
    for i in 0..6 {
        let run = transfer::run_transfer(&f.host.public_url(), &format!("user{i}"))
            .await
            .unwrap();
        assert!(run.completed, "transfer {i} failed: {:?}", run.steps);
        for s in &run.steps {
            match s.mixmode.as_deref() {
                None => {}
                Some("redispatched") => rescued += 1,
                Some(other) => panic!("step {s:?} got x-mixmode: {other}"),
            }
        }
        // A started transfer is continued only by servers of its first step's version.
        let first = run.steps[0].served_by.clone().unwrap();
        assert!(
            run.steps
                .iter()
                .all(|s| s.served_by.as_deref() == Some(first.as_str())),
            "{:?}",
            run.steps
        );
    }
    assert!(
        rescued >= 6,
        "round robin over two versions must cause mismatches; rescued {rescued}"
    );
    f.expect_counters(&[("redispatch_ok", rescued), ("mismatch_detected", rescued)])
        .await;
}

/// The client's own `x-envoy-original-dst-host` never chooses the peer.
pub async fn client_cannot_choose_the_peer<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let registered = server(&store, "registered", "2").await;
    let target = server(&store, "target", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&registered).await;

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .header("x-envoy-original-dst-host", target.addr().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "registered");
    assert_eq!(target.request_count(), 0, "the client chose the peer");
    let seen = registered.requests();
    assert_eq!(seen.len(), 1);
    for (n, v) in &seen[0].headers {
        if n == "x-envoy-original-dst-host" {
            assert_eq!(String::from_utf8_lossy(v), registered.addr().to_string());
        }
    }
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}

/// Method, path and query, and the absence of a body survive the replay, for every method.
pub async fn methods_and_query_replayed<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let cookie = f.session("2");
    let cases = [
        (Method::GET, "/echo/a?x=1&y=%20z", ""),
        (Method::PUT, "/echo/b", "{\"amount\": 5}"),
        (Method::PATCH, "/echo/c?v=2", "p"),
        (Method::DELETE, "/echo/d", ""),
        (Method::OPTIONS, "/echo/e", ""),
    ];
    for (method, path, body) in &cases {
        let r = Req::new(method.clone(), f.url(path))
            .body(body.as_bytes().to_vec())
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{method} {path}: {}", show(&r));
        assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
        let echo = r.json().unwrap();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["path"], *path);
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(body.as_bytes()),
            "{method} {path}"
        );
    }
    assert_eq!(v2.request_count(), cases.len());
    f.expect_counters(&[("redispatch_ok", cases.len() as u64)])
        .await;
}

/// A chunked request body (no content-length, 300 kB in 7 kB pieces) is replayed byte for byte.
/// The same request ending with trailers is not replayed at all: a replay cannot carry them
/// (byte for byte or not at all), so its mismatch reaches the client untouched, counted
/// `replay_unsupported`. (Envoy drops HTTP/1 request trailers in its codec unless the listener
/// sets `enable_trailers`, as this host does; envoy.rs shows the default.)
pub async fn chunked_body_replayed_but_not_with_trailers<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start_tuned(&store, &[&v1], json!({}), |spec| {
        spec.http1_trailers = true;
    })
    .await;
    f.register(&v2).await;
    let body = binary_body(300_000);
    let chunks: Vec<Bytes> = body.chunks(7_001).map(Bytes::copy_from_slice).collect();
    let cookie = f.session("2");

    let r = Req::post(f.url("/echo/chunked-in"), Bytes::new())
        .chunked(chunks.clone(), &[])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["body_sha256"], sha256_hex(&body));
    assert_eq!(v1.requests()[0].body.len(), body.len());
    assert_eq!(v2.requests()[0].body.as_ref(), body.as_slice());

    let r = Req::post(f.url("/echo/chunked-in"), Bytes::new())
        .chunked(chunks, &[("x-checksum", "abc")])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode"), None, "{}", show(&r));
    assert_eq!(v1.requests()[1].body.len(), body.len());
    assert_eq!(
        v2.request_count(),
        1,
        "a request with trailers was replayed"
    );
    f.expect_counters(&[
        ("mismatch_detected", 2),
        ("redispatch_ok", 1),
        ("replay_unsupported", 1),
    ])
    .await;
}

/// At the default `max_replay_body_bytes` (1 MiB), a body of exactly 1 MiB is replayed.
pub async fn one_mib_body_replayed_by_default<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let body = binary_body(1 << 20);
    let r = Req::post(f.url("/echo"), body.clone())
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(v2.requests()[0].body.as_ref(), body.as_slice());
    f.expect_counters(&[("redispatch_ok", 1), ("replay_too_large", 0)])
        .await;
}

/// Hop-by-hop headers go neither to the peer nor back: a client's `proxy-authorization` is not
/// replayed, and the peer's chunked answer reaches the client as one valid message.
pub async fn hop_by_hop_headers_dropped<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;

    let r = Req::get(f.url("/echo/chunked-out"))
        .header("cookie", f.session("2"))
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2", "{}", show(&r));
    assert!(r.header_all("transfer-encoding").len() <= 1, "{}", show(&r));
    assert_eq!(r.header("connection"), None, "{}", show(&r));
    let seen = &v2.requests()[0];
    for h in ["proxy-authorization", "keep-alive", "te", "upgrade"] {
        assert_eq!(seen.header(h), None, "{h} reached the peer");
    }
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}

/// RFC 9110 §7.6.1: the headers a peer names in its own `Connection` header are hop-by-hop
/// too; they do not reach the client with the peer's answer (the others do).
pub async fn headers_named_in_connection_dropped<H: Host>() {
    use crate::app::{Canned, Mode};
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    v2.set_mode(Mode::Respond(Canned::new(
        200,
        &[
            ("connection", "x-peer-hop, X-Other-Hop"),
            ("x-peer-hop", "internal"),
            ("x-other-hop", "internal"),
            ("x-kept", "1"),
        ],
        "peer answer",
    )));
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "peer answer"),
        "{}",
        show(&r)
    );
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(r.header("x-kept").as_deref(), Some("1"), "{}", show(&r));
    for h in ["x-peer-hop", "x-other-hop", "connection"] {
        assert_eq!(r.header(h), None, "{h} reached the client: {}", show(&r));
    }
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}

/// With the default `random` selection, rescues spread over every peer of the version.
pub async fn random_selection_uses_every_peer<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let a = server(&store, "a", "2").await;
    let b = server(&store, "b", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&a).await;
    f.register(&b).await;
    let cookie = f.session("2");
    for _ in 0..24 {
        let r = Req::get(f.url("/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
    }
    // 2^-23 chance of a false failure.
    assert!(
        a.request_count() > 0 && b.request_count() > 0,
        "a {} b {}",
        a.request_count(),
        b.request_count()
    );
    assert_eq!(a.request_count() + b.request_count(), 24);
    f.expect_counters(&[("redispatch_ok", 24)]).await;
}

/// On one kept-alive client connection (a browser's), a rescue, a pass-through, an exhausted
/// mismatch with its held body, and another rescue follow each other: the connection stays
/// usable after every kind of answer the filter produces.
pub async fn keep_alive_connection_survives_every_outcome<H: Host>() {
    let store = crate::app::SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    let mut conn = crate::client::Conn::open_url(&f.host.public_url())
        .await
        .unwrap();
    let v2_session = f.session("2");
    let v1_session = f.session("1");

    let r = conn
        .send(Req::post(f.url("/echo"), "one").header("cookie", &v2_session))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-mixmode").as_deref()),
        (200, Some("redispatched")),
        "{}",
        show(&r)
    );
    let r = conn
        .send(Req::get(f.url("/echo")).header("cookie", &v1_session))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-mixmode")),
        (200, None),
        "{}",
        show(&r)
    );

    // Only a dead peer now (freshest first, v2 deregistered): exhausted.
    f.hb.deregister(&crate::app::Registration::of(&v2))
        .await
        .unwrap();
    f.register_as(super::dead_address(), "2").await;
    let r = conn
        .send(Req::get(f.url("/echo")).header("cookie", &v2_session))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-mixmode").as_deref()),
        (409, Some("exhausted")),
        "{}",
        show(&r)
    );

    f.register(&v2).await;
    let r = conn
        .send(Req::post(f.url("/echo"), "two").header("cookie", &v2_session))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["body_sha256"], sha256_hex(b"two"));
    assert!(!conn.is_closed());
    f.expect_counters(&[
        ("redispatch_ok", 2),
        ("exhausted", 1),
        ("attempt_failed", 1),
    ])
    .await;
}

//! The scenario suite again on the real Envoy, with HTTP/2 clients (h2c prior knowledge on the
//! public listener; the example envoy.yaml unchanged), plus what only HTTP/2 has: many
//! concurrent streams on one connection. Envoy only for now: the harness's HTTP/2 front end
//! does not exist yet (then `all_scenarios!` runs on it too).
#![cfg(test)]

use mixmode_tests::app::{sha256_hex, SessionStore};
use mixmode_tests::client::{Conn, Proto, Req};
use mixmode_tests::envoy::EnvoyH2Host;
use mixmode_tests::host::Host;
use mixmode_tests::scenarios::{binary_body, server, show, Fixture};
use serde_json::json;

mixmode_tests::all_scenarios!(EnvoyH2Host);

/// Envoy's own counters of the public listener's HTTP/2 traffic (`http.public.*`).
async fn h2_counters(f: &Fixture<EnvoyH2Host>) -> (u64, u64) {
    let s = f
        .host
        .envoy
        .stats("^http\\.public\\.downstream_(cx|rq)_http2_total$")
        .await
        .unwrap();
    (
        s["http.public.downstream_cx_http2_total"],
        s["http.public.downstream_rq_http2_total"],
    )
}

/// A 150 kB binary POST over HTTP/2 (several DATA frames, flow-controlled) is replayed to the
/// peer byte for byte, and both of the peer's `set-cookie` headers reach the HTTP/2 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_post_150kb_replayed_byte_for_byte() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<EnvoyH2Host>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let body = binary_body(150_000);
    let mut conn = Conn::open_url(&f.host.public_url()).await.unwrap();
    assert_eq!(conn.proto(), Proto::H2c);

    let r = conn
        .send(
            Req::post(f.url("/echo/pay?step=3"), body.clone())
                .header("cookie", f.session("2"))
                .header("content-type", "application/octet-stream"),
        )
        .await
        .unwrap();

    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; Path=/"]
    );
    assert_eq!(r.json().unwrap()["body_sha256"], sha256_hex(&body));
    let seen = v2.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].body.as_ref() == body.as_slice(),
        "the peer got {} bytes",
        seen[0].body.len()
    );
    assert_eq!(seen[0].path, "/echo/pay?step=3");
    assert_eq!(v1.request_count(), 1);
    assert_eq!(h2_counters(&f).await, (1, 1), "not one HTTP/2 request");
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("redispatch_ok", 1),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

/// 200 requests in 50 concurrent streams on ONE HTTP/2 connection, a v2 session each, sent to
/// a v1 pool: every one is rescued by the v2 peer with its own body, and Envoy saw exactly
/// one downstream connection. Mixed in: 50 requests of the pool's own version, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_concurrent_streams_on_one_connection_all_rescued() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<EnvoyH2Host>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let conn = Conn::open_url(&f.host.public_url()).await.unwrap();
    let v2_session = f.session("2");
    let v1_session = f.session("1");

    let mut rescued = 0;
    let mut untouched = 0;
    for batch in 0..5 {
        // 50 streams at once: 40 of the v2 session (rescued), 10 of v1's (passed through).
        let reqs: Vec<Req> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                let cookie = if i % 5 == 4 { &v1_session } else { &v2_session };
                Req::post(f.url(&format!("/echo/{n}")), format!("body of request {n}"))
                    .header("cookie", cookie)
            })
            .collect();
        let answers = conn.send_concurrent(reqs).await.unwrap();
        for (i, r) in answers.into_iter().enumerate() {
            let n = batch * 50 + i;
            let r = r.unwrap_or_else(|e| panic!("request {n}: {e:#}"));
            assert_eq!(r.status, 200, "request {n}: {}", show(&r));
            let echo = r.json().unwrap();
            assert_eq!(
                echo["path"],
                format!("/echo/{n}"),
                "answers crossed streams"
            );
            assert_eq!(
                echo["body_sha256"],
                sha256_hex(format!("body of request {n}").as_bytes())
            );
            if i % 5 == 4 {
                assert_eq!(r.header("x-mixmode"), None, "{}", show(&r));
                assert_eq!(echo["server"], "v1");
                untouched += 1;
            } else {
                assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
                assert_eq!(echo["server"], "v2");
                rescued += 1;
            }
        }
    }
    assert_eq!((rescued, untouched), (200, 50));
    assert!(!conn.is_closed());
    assert_eq!(
        h2_counters(&f).await,
        (1, 250),
        "one connection, 250 streams"
    );
    assert_eq!(v2.request_count(), 200);
    f.expect_counters(&[
        ("mismatch_detected", 200),
        ("redispatch_ok", 200),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

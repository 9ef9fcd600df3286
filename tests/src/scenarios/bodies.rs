//! Large and unusual bodies on every leg: the client's, the original error's, the peer's.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{binary_body, dead_address, server, show, Fixture};
use crate::app::{sha256_hex, Canned, Mode, Registration, SessionStore};
use crate::client::Req;
use crate::host::Host;

/// A client that sends `Expect: 100-continue` (curl does for bodies over 1 KiB) is rescued
/// with its body intact.
pub async fn expect_100_continue_post_rescued<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let body = binary_body(20_000);
    let r = Req::post(f.url("/echo"), body.clone())
        .header("cookie", f.session("2"))
        .header("expect", "100-continue")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(r.json().unwrap()["body_sha256"], sha256_hex(&body));
    assert_eq!(v2.requests()[0].body.as_ref(), body.as_slice());
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}

/// A peer's large answer (3 MiB) reaches the client whole.
pub async fn large_peer_answer_arrives_whole<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let n = 3 << 20;
    let r = Req::get(f.url(&format!("/download/{n}")))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(r.body.len(), n);
    assert!(
        r.body.as_ref() == binary_body(n).as_slice(),
        "the peer's body changed"
    );
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}

/// The original error's body (768 KiB, held while peers are tried) reaches the client whole
/// when every peer fails, and is dropped when a peer answers. (Envoy holds it within the
/// listener's buffer limit, 1 MiB by default; see envoy.yaml.)
pub async fn large_original_error_body<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let big = "e".repeat(768 << 10);
    v1.set_mode(Mode::Respond(Canned::new(
        409,
        &[("x-session-version", "2"), ("x-app-version", "1")],
        &big,
    )));
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    let dead = dead_address();
    f.register_as(dead, "2").await;

    let r = Req::get(f.url("/echo")).send().await.unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("exhausted"));
    assert_eq!(r.body.len(), big.len());
    assert!(r.body.as_ref() == big.as_bytes());

    // Now a live peer only: the held body is dropped, the peer's answer goes out.
    let mut gone = Registration::of(&v2);
    gone.address = dead.to_string();
    f.hb.deregister(&gone).await.unwrap();
    f.register(&v2).await;
    for _ in 0..3 {
        let r = Req::get(f.url("/echo")).send().await.unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(r.json().unwrap()["server"], "v2");
    }
    f.expect_counters(&[
        ("attempt_failed", 1),
        ("exhausted", 1),
        ("redispatch_ok", 3),
    ])
    .await;
}

/// The filter decides on the mismatch's headers alone: while the original error's body is
/// still streaming (4 s), the peer's answer is already on its way to the client. When every
/// peer fails, the client gets that streaming body whole.
pub async fn mismatch_body_still_streaming<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let signal = [("x-session-version", "2"), ("x-app-version", "1")];
    let body = "s".repeat(64 << 10);
    v1.set_mode(Mode::Respond(
        Canned::new(409, &signal, &body).trickled(Duration::from_secs(4)),
    ));
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;

    let started = Instant::now();
    let r = Req::get(f.url("/echo")).send().await.unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for the original body: {:?}",
        started.elapsed()
    );

    f.hb.deregister(&Registration::of(&v2)).await.unwrap();
    f.register_as(dead_address(), "2").await;
    v1.set_mode(Mode::Respond(
        Canned::new(409, &signal, &body).trickled(Duration::from_millis(800)),
    ));
    let r = Req::get(f.url("/echo")).send().await.unwrap();
    assert_eq!(
        (r.status, r.header("x-mixmode").as_deref()),
        (409, Some("exhausted")),
        "{}",
        show(&r)
    );
    assert!(
        r.body.as_ref() == body.as_bytes(),
        "the streamed body arrived changed ({} bytes)",
        r.body.len()
    );
    f.expect_counters(&[
        ("redispatch_ok", 1),
        ("attempt_failed", 1),
        ("exhausted", 1),
    ])
    .await;
}

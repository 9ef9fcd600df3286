//! What is not rescued, and how failed attempts move on to the next peer.

use std::time::Duration;

use hyper::Method;
use serde_json::json;

use super::{assert_untouched, dead_address, server, show, Fixture};
use crate::app::{Mode, Registration, SessionStore};
use crate::client::Req;
use crate::host::Host;

/// A 500, a 409 without `x-session-version` and a 409 with equal versions reach the client
/// unchanged; nothing is dispatched although a peer of another version is registered.
pub async fn non_version_errors_pass_unchanged<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let cookie = f.session("2");

    for (mode, status) in [
        (Mode::Fail500, 500),
        (Mode::Conflict409NoVersion, 409),
        (Mode::Conflict409SameVersion, 409),
    ] {
        v1.set_mode(mode.clone());
        let r = Req::post(f.url("/echo"), "form=1")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let direct = Req::post(format!("{}/echo", v1.url()), "form=1")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, status, "{mode:?}: {}", show(&r));
        assert_untouched(&r, &direct);
    }
    assert_eq!(v1.request_count(), 6);
    assert_eq!(v2.request_count(), 0, "nothing may be dispatched");
    // The two 409s carry the detect status without being version errors; the 500 is unrelated.
    f.expect_counters(&[
        ("mismatch_detected", 0),
        ("not_version_error", 2),
        ("heartbeat_accepted", 1),
    ])
    .await;
}

/// The first peer chosen (the freshest) is down: the next one answers.
pub async fn first_peer_down_next_answers<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register_as(dead_address(), "2").await;

    let r = Req::post(f.url("/echo"), "amount=5")
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(v1.request_count(), 1);
    assert_eq!(v2.request_count(), 1);
    assert_eq!(v2.requests()[0].body.as_ref(), b"amount=5");
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("attempt_failed", 1),
        ("redispatch_ok", 1),
    ])
    .await;
}

/// Every peer is down: the client gets the original 409 with `x-mixmode: exhausted`.
pub async fn all_peers_down_exhausted<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register_as(dead_address(), "2").await;
    f.register_as(dead_address(), "2").await;
    let cookie = f.session("2");

    let r = Req::get(f.url("/echo"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let direct = Req::get(format!("{}/echo", v1.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("exhausted"),
        "{}",
        show(&r)
    );
    assert_eq!(r.header("x-session-version").as_deref(), Some("2"));
    assert_eq!(r.header("x-app-version").as_deref(), Some("1"));
    assert_eq!(r.body, direct.body, "the original error's body");
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("attempt_failed", 2),
        ("exhausted", 1),
    ])
    .await;
}

/// No server of the session's version in this app and pool: `x-mixmode: no-peer`. Servers of
/// that version in another app or another pool are not candidates.
pub async fn no_peer_of_that_version<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let other_app = server(&store, "other-app", "2").await;
    let other_pool = server(&store, "other-pool", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v1).await;
    let mut reg = Registration::of(&other_app);
    reg.app = "donate".into();
    f.hb.register(&reg).await.unwrap();
    let mut reg = Registration::of(&other_pool);
    reg.pool = Some("pool-b".into());
    f.hb.register(&reg).await.unwrap();

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );
    assert_eq!(r.header("x-session-version").as_deref(), Some("2"));
    assert!(r.text().contains("written by version 2"), "{}", show(&r));
    assert_eq!(other_app.request_count() + other_pool.request_count(), 0);
    assert_eq!(
        v1.request_count(),
        1,
        "the failing server is never a candidate"
    );
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("no_peer", 1),
        ("heartbeat_accepted", 3),
    ])
    .await;
}

/// A peer registered as v2 that answers with a mismatch itself (it runs v1) counts as a failed
/// attempt; the next peer answers.
pub async fn peer_reporting_a_mismatch_is_skipped<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let liar = server(&store, "liar", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register_as(liar.addr(), "2").await;

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(liar.request_count(), 1);
    assert_eq!(
        liar.requests()[0].header("x-mixmode-attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        v2.requests()[0].header("x-mixmode-attempt").as_deref(),
        Some("2")
    );
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("attempt_failed", 1),
        ("redispatch_ok", 1),
    ])
    .await;
}

/// A peer that times out: a GET goes on to the next peer; a POST does not (the slow peer may
/// have acted on it) and the client gets the original error with `x-mixmode: exhausted`.
pub async fn slow_peer_get_retried_post_not<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let slow = server(&store, "slow", "2").await;
    slow.set_mode(Mode::Slow(Duration::from_millis(3000)));
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest", "attempt_timeout_ms": 300}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&slow).await;
    let cookie = f.session("2");

    let r = Req::get(f.url("/echo"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");

    let r = Req::post(f.url("/echo"), "pay=1")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("exhausted"),
        "{}",
        show(&r)
    );
    assert_eq!(
        v2.request_count(),
        1,
        "the POST must not reach a second peer"
    );
    assert_eq!(slow.request_count(), 2);
    f.expect_counters(&[
        ("mismatch_detected", 2),
        ("attempt_failed", 2),
        ("redispatch_ok", 1),
        ("exhausted", 1),
    ])
    .await;
}

/// A peer that sends headers and then closes mid-body is a failed attempt: the client never
/// sees a truncated answer; the next peer answers.
pub async fn peer_closing_mid_body_is_skipped<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let broken = server(&store, "broken", "2").await;
    broken.set_mode(Mode::CloseMidBody);
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&broken).await;

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(broken.request_count(), 1);
    f.expect_counters(&[("attempt_failed", 1), ("redispatch_ok", 1)])
        .await;
}

/// A POST whose peer broke off its answer (headers sent, then the connection closed) is not
/// sent to another peer: that peer's app ran and may have acted, as after a timeout (docs/design.md#re-dispatch).
/// Envoy reports such a call without headers. A peer that fails *before* answering is
/// unreachable and a POST moves on (`peer_answering_garbage_is_skipped`); a GET always moves on
/// (`peer_closing_mid_body_is_skipped`).
pub async fn post_not_resent_after_a_peer_broke_off_its_answer<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let broken = server(&store, "broken", "2").await;
    broken.set_mode(Mode::BreakOffAnswer);
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    // Registered later: the freshest, tried first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&broken).await;

    let r = Req::post(f.url("/echo"), "amount=100")
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status,
        409,
        "{}; broken peer saw {} requests; {:?}",
        show(&r),
        broken.request_count(),
        f.host.metrics().await.unwrap()
    );
    assert_eq!(r.header("x-mixmode").as_deref(), Some("exhausted"));
    let seen = broken.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref(),
        b"amount=100",
        "the broken peer's app ran"
    );
    assert_eq!(v2.request_count(), 0, "the POST was sent a second time");
    f.expect_counters(&[
        ("mismatch_detected", 1),
        ("attempt_failed", 1),
        ("exhausted", 1),
    ])
    .await;
}

/// A peer that answers bytes that are not HTTP is a failed attempt; the next peer answers.
pub async fn peer_answering_garbage_is_skipped<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let garbage = server(&store, "garbage", "2").await;
    garbage.set_mode(Mode::Garbage);
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&garbage).await;

    let r = Req::post(f.url("/echo"), "x=1")
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(garbage.request_count(), 1);
    f.expect_counters(&[("attempt_failed", 1), ("redispatch_ok", 1)])
        .await;
}

/// A peer that was registered and died before the dispatch: the next peer answers.
pub async fn peer_dying_after_its_heartbeat_is_skipped<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let mut dying = server(&store, "dying", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&dying).await;
    // Used once, so Envoy holds a kept-alive connection to it when it dies.
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["server"], "dying", "{}", show(&r));
    dying.stop().await;

    let r = Req::post(f.url("/echo"), "after")
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(v2.requests()[0].body.as_ref(), b"after");
    f.expect_counters(&[("attempt_failed", 1), ("redispatch_ok", 2)])
        .await;
}

/// A request that already carries `x-mixmode-attempt` is never re-dispatched (loop guard).
pub async fn attempt_header_is_never_redispatched<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;

    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .header("x-mixmode-attempt", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-session-version").as_deref(), Some("2"));
    assert_ne!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(v1.request_count(), 1);
    assert_eq!(
        v2.request_count(),
        0,
        "a replayed request was replayed again"
    );
    f.expect_counters(&[]).await;
}

/// A body over `max_replay_body_bytes` is not kept: its mismatch passes through, counted; the
/// upstream still gets the whole body. A body at the limit is rescued.
pub async fn body_over_replay_limit_passes_through<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"max_replay_body_bytes": 1024}}),
    )
    .await;
    f.register(&v2).await;
    let cookie = f.session("2");

    let big = super::binary_body(4096);
    let r = Req::post(f.url("/echo"), big.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-session-version").as_deref(), Some("2"));
    assert_ne!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_eq!(
        v1.requests()[0].body.as_ref(),
        big.as_slice(),
        "the upstream got the whole body"
    );
    assert_eq!(v2.request_count(), 0);

    let at_limit = super::binary_body(1024);
    let r = Req::post(f.url("/echo"), at_limit.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(v2.requests()[0].body.as_ref(), at_limit.as_slice());
    f.expect_counters(&[
        ("replay_too_large", 1),
        ("redispatch_ok", 1),
        ("mismatch_detected", 2),
    ])
    .await;
}

/// A header value the host cannot replay unchanged (not UTF-8) makes the request not
/// replayable: its mismatch passes through and is counted.
pub async fn non_utf8_header_value_passes_through<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;

    let r = Req::new(Method::GET, f.url("/echo"))
        .header("cookie", f.session("2"))
        .header("x-latin1-name", [b'J', 0xf6, b'r', b'g'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_ne!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    let at_v1 = v1.requests()[0]
        .headers
        .iter()
        .find(|(n, _)| n == "x-latin1-name")
        .cloned();
    assert_eq!(
        at_v1.map(|(_, v)| v),
        Some(vec![b'J', 0xf6, b'r', b'g']),
        "the upstream got the bytes"
    );
    assert_eq!(v2.request_count(), 0);
    f.expect_counters(&[("replay_unsupported", 1), ("mismatch_detected", 1)])
        .await;
}

/// With `retry_timeouts_for_all_methods`, a POST whose peer timed out moves on to the next.
pub async fn retry_timeouts_for_all_methods_moves_post_on<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let slow = server(&store, "slow", "2").await;
    slow.set_mode(Mode::Slow(Duration::from_millis(3000)));
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"redispatch": {"selection": "freshest", "attempt_timeout_ms": 300,
                              "retry_timeouts_for_all_methods": true}}),
    )
    .await;
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register(&slow).await;

    let r = Req::post(f.url("/echo"), "pay=1")
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(v2.requests()[0].body.as_ref(), b"pay=1");
    assert_eq!(slow.request_count(), 1);
    f.expect_counters(&[("attempt_failed", 1), ("redispatch_ok", 1)])
        .await;
}

/// The server that just failed is never a candidate, even when registered with the session's
/// version (here a v1 server wrongly registered as v2).
pub async fn failing_server_is_never_a_candidate<H: Host>() {
    let store = SessionStore::new();
    let liar = server(&store, "liar", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(
        &store,
        &[&liar],
        json!({"redispatch": {"selection": "freshest"}}),
    )
    .await;
    f.register_as(liar.addr(), "2").await;
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
    assert_eq!(liar.request_count(), 1);

    // With a real v2 registered before the liar (the liar is the freshest): v2 answers at once.
    f.register(&v2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.register_as(liar.addr(), "2").await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["server"], "v2");
    assert_eq!(
        liar.request_count(),
        2,
        "the failing server was tried as a peer"
    );
    f.expect_counters(&[("no_peer", 1), ("redispatch_ok", 1), ("attempt_failed", 0)])
        .await;
}

//! Demand (docs/design.md#draining-by-demand): the filter lists, on `GET <heartbeat.path>?demand`,
//! the versions requests needed lately (a rescue toward one, a `no-peer` for one, a request
//! routed by the affinity cookie) with when and how often, and counts `needed.<version>`.
//! The 60-s count's decay is checked in the core with a moved clock (plugin/src/core/demand);
//! here, what a host shows within seconds: times, counts, the window, the token.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::json;

use super::{server, show, Fixture, TOKEN};
use crate::app::heartbeat::Demand;
use crate::app::SessionStore;
use crate::client::{Req, Resp};
use crate::host::Host;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A request of a session written by `version`.
async fn request<H: Host>(f: &Fixture<H>, version: &str) -> Resp {
    Req::get(f.url("/echo"))
        .header("cookie", f.session(version))
        .send()
        .await
        .unwrap()
}

/// The listing's line of `version`.
fn line<'a>(d: &'a [Demand], version: &str) -> &'a Demand {
    d.iter()
        .find(|l| l.version == version)
        .unwrap_or_else(|| panic!("version {version} not in the demand listing {d:?}"))
}

/// The host's clock and the test's are the same machine's; a second of slack covers the
/// host's cached time.
fn assert_between(d: &Demand, before: u64, after: u64) {
    assert!(
        d.last_needed_ms + 1000 >= before && d.last_needed_ms <= after + 1000,
        "last_needed_ms {} outside [{before}, {after}]",
        d.last_needed_ms
    );
}

/// A rescue toward v2 and a `no-peer` for v3 are listed with their time and a count of 1, in the
/// filter's pool and app; a second rescue counts 2; a request of the server's own version (the
/// happy path) and an empty listing before any need list nothing. `needed.2` and `needed.3`
/// count the same needs. Every need written as it happens (`demand.coalesce_ms` 0).
pub async fn demand_listed_after_a_rescue_and_a_no_peer<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({"demand": {"coalesce_ms": 0}})).await;
    f.register(&v1).await;
    f.register(&v2).await;
    assert!(f.hb.demand().await.unwrap().is_empty());

    let r = request(&f, "1").await;
    assert_eq!(
        (r.status, r.header("x-mixmode")),
        (200, None),
        "{}",
        show(&r)
    );
    let d = f.hb.demand().await.unwrap();
    assert!(d.is_empty(), "the happy path needs nothing: {d:?}");

    let before = now_ms();
    let r = request(&f, "2").await;
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    let r = request(&f, "3").await;
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("no-peer"));
    let after = now_ms();

    let d = f.hb.demand().await.unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    for v in ["2", "3"] {
        let l = line(&d, v);
        assert_eq!((l.pool.as_str(), l.app.as_str()), ("default", "checkout"));
        assert_eq!(l.needed_60s, 1, "{d:?}");
        assert_between(l, before, after);
    }
    let first = line(&d, "2").last_needed_ms;

    let r = request(&f, "2").await;
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    let d = f.hb.demand().await.unwrap();
    assert_eq!(line(&d, "2").needed_60s, 2, "{d:?}");
    assert!(line(&d, "2").last_needed_ms >= first, "{d:?}");
    assert_eq!(line(&d, "3").needed_60s, 1, "{d:?}");

    let m = f.host.metrics().await.unwrap();
    assert_eq!(m.get("mixmode.needed.2"), Some(&2), "{m:?}");
    assert_eq!(m.get("mixmode.needed.3"), Some(&1), "{m:?}");
    assert_eq!(m.get("mixmode.needed.1"), None, "{m:?}");
    f.expect_counters(&[
        ("mismatch_detected", 3),
        ("redispatch_ok", 2),
        ("no_peer", 1),
        ("heartbeat_accepted", 2),
    ])
    .await;
}

/// With `demand.coalesce_ms` (here 1000), a worker writes a version's need once per window and
/// stamps the window's end: after three rescues the listing never shows the version needed
/// earlier than the last of them, nor more than a window after it; the counter `needed.2`
/// counts every need; and when the three fell within one window (the test's own clock, which
/// can only be longer than the filter's, says so) the listing counts one write's worth, the
/// rest folded. Once the window has ended the worker's tick writes the folded needs, with no
/// further need (the listing counts all three); a need after that writes again.
pub async fn demand_coalesced_never_listed_earlier_than_needed<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    // One worker, so that one window holds every need.
    let f =
        Fixture::<H>::start_with(&store, &[&v1], json!({"demand": {"coalesce_ms": 1000}}), 1).await;
    f.register(&v2).await;
    let start = Instant::now();
    let mut last_sent = 0;
    for _ in 0..3 {
        last_sent = now_ms();
        let r = request(&f, "2").await;
        assert_eq!(
            r.header("x-mixmode").as_deref(),
            Some("redispatched"),
            "{}",
            show(&r)
        );
    }
    let after = now_ms();
    let d = f.hb.demand().await.unwrap();
    // Read before the window can have ended (a tick then writes what it folded), with 200 ms to
    // spare for the host's clock against the test's.
    let within_one_window = start.elapsed() < Duration::from_millis(800);
    let l = line(&d, "2");
    assert!(
        l.last_needed_ms + 1000 >= last_sent,
        "{}: listed as needed at {} before the last need (sent at {last_sent})",
        H::NAME,
        l.last_needed_ms
    );
    assert!(
        l.last_needed_ms <= after + 1000 + 1000,
        "{}: {l:?}",
        H::NAME
    );
    assert!((1..=3).contains(&l.needed_60s), "{}: {l:?}", H::NAME);
    if within_one_window {
        assert_eq!(l.needed_60s, 1, "{}: one window, one write: {l:?}", H::NAME);
        // Stamped with the window's end, which is after the last need.
        assert!(
            l.last_needed_ms >= after,
            "{}: {l:?} before {after}",
            H::NAME
        );
    }
    let m = f.host.metrics().await.unwrap();
    assert_eq!(m.get("mixmode.needed.2"), Some(&3), "{m:?}");

    // No further need: once the window has ended, the worker's next tick (at most 1 s apart)
    // writes what it folded, so the listing counts all three without a fourth need.
    let deadline = Instant::now() + Duration::from_secs(15);
    let l = loop {
        let d = f.hb.demand().await.unwrap();
        let l = line(&d, "2").clone();
        if l.needed_60s == 3 || Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        l.needed_60s,
        3,
        "{}: folded needs written by a tick: {l:?}",
        H::NAME
    );
    // Well past the window, whatever the host's clock lags.
    while now_ms() < l.last_needed_ms + 1000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = request(&f, "2").await;
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("redispatched"),
        "{}",
        show(&r)
    );
    let d = f.hb.demand().await.unwrap();
    assert_eq!(
        line(&d, "2").needed_60s,
        4,
        "{}: a new window's need added: {d:?}",
        H::NAME
    );
}

/// A version leaves the listing once it was not needed for `registry.stale_after_ms` × 4 (here
/// 4 s), not before; a new need brings it back with a fresh count.
pub async fn demand_leaves_the_listing_after_its_window<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1],
        json!({"registry": {"stale_after_ms": 1000}}),
    )
    .await;
    let r = request(&f, "3").await;
    assert_eq!(
        r.header("x-mixmode").as_deref(),
        Some("no-peer"),
        "{}",
        show(&r)
    );
    let needed = line(&f.hb.demand().await.unwrap(), "3").last_needed_ms;

    let start = Instant::now();
    let gone_at = loop {
        let d = f.hb.demand().await.unwrap();
        let t = now_ms();
        if d.is_empty() {
            break t;
        }
        assert_eq!(line(&d, "3").needed_60s, 1);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}: still listed after 30 s: {d:?}",
            H::NAME
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        gone_at + 1000 >= needed + 4000,
        "{}: gone {} ms after the need, before the 4 s window",
        H::NAME,
        gone_at.saturating_sub(needed)
    );

    let r = request(&f, "3").await;
    assert_eq!(r.header("x-mixmode").as_deref(), Some("no-peer"));
    let d = f.hb.demand().await.unwrap();
    assert_eq!(
        line(&d, "3").needed_60s,
        2,
        "the 60-s count outlives the window: {d:?}"
    );
    assert!(line(&d, "3").last_needed_ms > needed);
}

/// The listing needs the heartbeat token: without it or with a wrong one, the same `401` JSON
/// refusal heartbeats get (counted `heartbeat_rejected`); with it, `200 {"demand": []}`; it
/// only answers `GET`.
pub async fn demand_listing_needs_the_token<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let f = Fixture::<H>::start(&store, &[&v1], json!({})).await;
    for token in [None, Some("wrong-token")] {
        let r = f.hb.demand_raw(token).await.unwrap();
        assert_eq!(r.status, 401, "{}", show(&r));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let body = r.json().unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("token")),
            "{body}"
        );
        assert!(body.get("demand").is_none(), "{body}");
    }
    let r = f.hb.demand_raw(Some(TOKEN)).await.unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap(), json!({"demand": []}));
    let r = Req::new(Method::POST, format!("{}?demand", f.hb.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 405, "{}", show(&r));
    f.expect_counters(&[("heartbeat_rejected", 3), ("heartbeat_accepted", 0)])
        .await;
}

/// With affinity, a request its cookie routed to a server of its version counts as a need of
/// that version; one whose hinted server is registered but not in the pool (a draining server
/// that left the load balancer) was served by another and does not, or a cookie that outlived
/// its session would keep an old version needed for ever; a cookie with no peer is a miss.
pub async fn demand_counts_an_affinity_routed_request<H: Host>() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let v3 = server(&store, "v3", "3").await;
    let f = Fixture::<H>::start(
        &store,
        &[&v1, &v2],
        json!({"affinity": {"cookie": "mixmode-version"}}),
    )
    .await;
    f.register(&v2).await;
    f.register(&v3).await;
    let before = now_ms();
    for (cookie, served_by) in [
        ("mixmode-version=2", Some("v2")),
        ("mixmode-version=3", None),
        ("mixmode-version=7", None),
    ] {
        let r = Req::get(f.url("/echo"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        // No session: whoever serves it answers 200, no rescue.
        assert_eq!(r.status, 200, "{}", show(&r));
        if let Some(s) = served_by {
            assert_eq!(r.json().unwrap()["server"], s, "{cookie}: {}", show(&r));
        } else {
            assert_ne!(r.json().unwrap()["server"], "v3", "{cookie}: {}", show(&r));
        }
    }
    let after = now_ms();
    let d = f.hb.demand().await.unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(line(&d, "2").needed_60s, 1);
    assert_between(line(&d, "2"), before, after);
    let m = f.host.metrics().await.unwrap();
    assert_eq!(m.get("mixmode.needed.2"), Some(&1), "{m:?}");
    assert_eq!(m.get("mixmode.needed.3"), None, "{m:?}");
    assert_eq!(m.get("mixmode.needed.7"), None, "{m:?}");
    f.expect_counters(&[
        ("affinity_routed", 2),
        ("affinity_miss", 1),
        ("heartbeat_accepted", 2),
    ])
    .await;
}

//! Against a real etcd (Debian's etcd-server 3.4): what a user of the registry would check —
//! the key is there with a lease while the server lives, gone when it stops or dies, and a
//! registration outlives an etcd restart.
#![cfg(test)] // helpers included: see clippy.toml

#[path = "../../tests/src/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::time::{Duration, Instant};

use etcd::Etcd;
use mixmode_register::{Config, Gateway, Registration};

const PREFIX: &str = "/mixmode/";

fn config(etcd: &Etcd, address: &str, ttl: u64) -> Config {
    Config::new(&etcd.url(), PREFIX, "pool-a", "checkout", "2", address, ttl).unwrap()
}

/// Polls until `f` is true; returns the elapsed time, or panics with `what` after `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn present(etcd: &Etcd, key: &str) -> bool {
    etcd.range_prefix(PREFIX)
        .await
        .unwrap()
        .iter()
        .any(|kv| kv.key == key)
}

#[tokio::test]
async fn registered_key_carries_record_and_lease_and_stop_removes_it() {
    let etcd = Etcd::start().await.unwrap();
    let reg = Registration::start(config(&etcd, "127.0.0.1:8081", 5))
        .await
        .unwrap();
    let lease = reg.status().lease;

    let kvs = etcd.range_prefix(PREFIX).await.unwrap();
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    assert_eq!(kvs[0].key, "/mixmode/pool-a/checkout/2/127.0.0.1:8081");
    let record: serde_json::Value = serde_json::from_str(&kvs[0].value).unwrap();
    assert_eq!(
        record,
        serde_json::json!({"pool": "pool-a", "app": "checkout", "version": "2",
                           "address": "127.0.0.1:8081"})
    );
    assert_eq!(kvs[0].lease, lease);
    let ttl = etcd.lease_ttl(lease).await.unwrap().unwrap();
    assert!((1..=5).contains(&ttl), "ttl {ttl}");

    reg.stop().await.unwrap();
    // Revoking deletes at once: no waiting for the TTL.
    assert!(etcd.range_prefix(PREFIX).await.unwrap().is_empty());
    assert_eq!(etcd.lease_ttl(lease).await.unwrap(), None);
}

#[tokio::test]
async fn keepalive_holds_key_beyond_ttl() {
    let etcd = Etcd::start().await.unwrap();
    let reg = Registration::start(config(&etcd, "127.0.0.1:8082", 2))
        .await
        .unwrap();
    let key = reg.key();
    // Three TTLs: without keep-alives the key would be gone after one.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(present(&etcd, &key).await, "key vanished while kept alive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(reg.status().registrations, 1, "lease should never be lost");
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn crashed_server_is_evicted_after_its_ttl() {
    let etcd = Etcd::start().await.unwrap();
    let reg = Registration::start(config(&etcd, "127.0.0.1:8083", 2))
        .await
        .unwrap();
    let key = reg.key();
    // Let a keep-alive or two happen first, so the crash is mid-life, not right after grant.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reg.crash();
    let gone = wait_until(
        Duration::from_secs(20),
        "key evicted after crash",
        || async { !present(&etcd, &key).await },
    )
    .await;
    // The last keep-alive was at most TTL/3 before the crash, so eviction comes after
    // TTL - TTL/3 at the earliest and TTL + etcd's expiry granularity at the latest.
    eprintln!("crash -> eviction: {gone:?} (TTL 2 s, keep-alive every 666 ms)");
    assert!(
        gone >= Duration::from_millis(1200),
        "evicted too early: {gone:?}"
    );
    // No upper bound beyond the wait's: when etcd expires a lease is etcd's timing, and on a
    // loaded machine it slipped past TTL + 2 s (seen: 4.2 s for a 2 s TTL).
}

/// The delay from the last keep-alive to the key's disappearance, for several TTLs.
#[tokio::test]
async fn ttl_to_eviction_delay() {
    let etcd = Etcd::start().await.unwrap();
    let ep = mixmode_register::Endpoint::parse(&etcd.url()).unwrap();
    let gw = Gateway::new(ep, Duration::from_secs(2));
    let mut report = Vec::new();
    for ttl in [2u64, 3, 5] {
        for round in 0..2 {
            let key = format!("{PREFIX}delay/app/1/127.0.0.1:{}", 9000 + ttl * 10 + round);
            let lease = gw.grant(ttl).await.unwrap();
            gw.put(&key, "{}", lease).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(gw.keepalive(lease).await.unwrap(), ttl as i64);
            let last = Instant::now();
            // A measurement: the upper bound is etcd's timing, which a loaded machine stretches
            // (seen: 4.2 s for a 2 s TTL), so only the wait bounds it.
            wait_until(Duration::from_secs(ttl + 20), "lease expiry", || async {
                !present(&etcd, &key).await
            })
            .await;
            let delay = last.elapsed();
            report.push(format!("ttl {ttl}s: {delay:?}"));
            assert!(
                delay >= Duration::from_secs(ttl),
                "gone before TTL: {delay:?}"
            );
        }
    }
    eprintln!("last keep-alive -> key gone: {}", report.join(", "));
}

#[tokio::test]
async fn lost_lease_is_replaced_by_a_new_registration() {
    let etcd = Etcd::start().await.unwrap();
    let reg = Registration::start(config(&etcd, "127.0.0.1:8084", 3))
        .await
        .unwrap();
    let key = reg.key();
    let first = reg.status().lease;
    // Someone (an operator, a compaction of a dead member's state) revokes the lease.
    let ep = mixmode_register::Endpoint::parse(&etcd.url()).unwrap();
    Gateway::new(ep, Duration::from_secs(2))
        .revoke(first)
        .await
        .unwrap();
    assert!(!present(&etcd, &key).await);
    // The next keep-alive (within TTL/3 = 1 s) finds the lease gone and registers again.
    let back = wait_until(Duration::from_secs(3), "re-registration", || async {
        present(&etcd, &key).await
    })
    .await;
    let status = reg.status();
    eprintln!("revoked -> registered again: {back:?}");
    assert_eq!(status.registrations, 2);
    assert_ne!(status.lease, first);
    let kvs = etcd.range_prefix(PREFIX).await.unwrap();
    assert_eq!(kvs[0].lease, status.lease);
    reg.stop().await.unwrap();
    assert!(!present(&etcd, &key).await);
}

#[tokio::test]
async fn registration_survives_etcd_restart() {
    let mut etcd = Etcd::start().await.unwrap();
    let reg = Registration::start(config(&etcd, "127.0.0.1:8085", 3))
        .await
        .unwrap();
    let key = reg.key();
    let first = reg.status().lease;
    let mut changes = reg.watch();

    etcd.stop().await.unwrap();
    // Down for longer than the TTL: several keep-alives fail.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!reg.status().etcd_reachable, "{:?}", reg.status());
    etcd.restart().await.unwrap();

    tokio::time::timeout(Duration::from_secs(5), async {
        while !changes.borrow_and_update().etcd_reachable {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("keep-alive recovers after etcd restart");
    assert!(present(&etcd, &key).await);
    let status = reg.status();
    eprintln!(
        "after restart: lease kept = {}, registrations = {}",
        status.lease == first,
        status.registrations
    );
    // Held for two more TTLs: the keep-alives work against the restarted etcd.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(present(&etcd, &key).await, "key vanished after restart");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    reg.stop().await.unwrap();
    assert!(!present(&etcd, &key).await);
}

#[tokio::test]
async fn key_deleted_during_outage_is_put_back() {
    let mut etcd = Etcd::start().await.unwrap();
    // TTL 10: keep-alives every 3.3 s leave room to delete the key between restart and the
    // next keep-alive.
    let reg = Registration::start(config(&etcd, "127.0.0.1:8086", 10))
        .await
        .unwrap();
    let key = reg.key();
    etcd.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!reg.status().etcd_reachable);
    etcd.restart().await.unwrap();
    assert_eq!(etcd.delete(&key).await.unwrap(), 1);
    wait_until(Duration::from_secs(5), "key put back", || async {
        present(&etcd, &key).await
    })
    .await;
    assert_eq!(reg.status().registrations, 1, "lease was alive: no new one");
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn start_fails_clearly_when_etcd_is_down() {
    let mut etcd = Etcd::start().await.unwrap();
    let cfg = config(&etcd, "127.0.0.1:8087", 3);
    etcd.stop().await.unwrap();
    let e = Registration::start(cfg).await.err().expect("no etcd");
    assert!(e.to_string().contains("unreachable"), "{e}");
}

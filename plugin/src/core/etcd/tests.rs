use super::*;
use crate::core::registry::{self, list, upsert, Ident, Scope};
use crate::core::store::MemoryStore;

fn cfg(extra: &str) -> Config {
    Config::parse(
        format!(
            r#"{{"app":"checkout","pool":"pa","registry":{{"stale_after_ms":3000,
             "etcd":{{"poll_interval_ms":1000}}{extra}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

pub(crate) fn kv(pool: &str, app: &str, version: &str, address: &str, rev: i64) -> String {
    let key = format!("/mixmode/{pool}/{app}/{version}/{address}");
    let value =
        format!(r#"{{"address":"{address}","app":"{app}","pool":"{pool}","version":"{version}"}}"#);
    raw_kv(&key, &value, rev)
}

pub(crate) fn raw_kv(key: &str, value: &str, rev: i64) -> String {
    format!(
        r#"{{"key":"{}","create_revision":"{rev}","mod_revision":"{rev}","version":"1","value":"{}","lease":"7587883015538218244"}}"#,
        b64_encode(key.as_bytes()),
        b64_encode(value.as_bytes())
    )
}

pub(crate) fn answer(revision: i64, kvs: &[String]) -> Vec<u8> {
    let header = format!(
        r#""header":{{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"{revision}","raft_term":"2"}}"#
    );
    if kvs.is_empty() {
        format!("{{{header}}}").into_bytes()
    } else {
        format!(
            r#"{{{header},"kvs":[{}],"count":"{}"}}"#,
            kvs.join(","),
            kvs.len()
        )
        .into_bytes()
    }
}

fn listed(s: &mut MemoryStore, c: &Config, now: u64) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list(s, &Scope::of(c), now)
        .unwrap()
        .into_iter()
        .map(|r| (r.address, r.version))
        .collect();
    v.sort();
    v
}

const ID_8081: Ident = Ident {
    pool: "pa",
    app: "checkout",
    version: "1",
    address: "127.0.0.1:8081",
};

fn e(c: &Config) -> Etcd {
    c.registry.etcd.clone().unwrap()
}

#[test]
fn request_covers_the_pool_or_every_pool() {
    let c = cfg("");
    let body: serde_json::Value = serde_json::from_str(&request_body(&c, &e(&c))).unwrap();
    assert_eq!(
        b64_decode(body["key"].as_str().unwrap()).unwrap(),
        b"/mixmode/pa/"
    );
    assert_eq!(
        b64_decode(body["range_end"].as_str().unwrap()).unwrap(),
        b"/mixmode/pa0"
    );
    let c = cfg(r#","cross_pool":true"#);
    let body: serde_json::Value = serde_json::from_str(&request_body(&c, &e(&c))).unwrap();
    assert_eq!(
        b64_decode(body["range_end"].as_str().unwrap()).unwrap(),
        b"/mixmode0"
    );
    assert!(request_headers(&e(&c)).contains(&(":path", "/v3/kv/range".to_string())));
}

#[test]
fn base64_round_trip() {
    for s in ["", "a", "ab", "abc", "/mixmode/p/a/1/[::1]:80"] {
        assert_eq!(b64_decode(&b64_encode(s.as_bytes())).unwrap(), s.as_bytes());
    }
    assert_eq!(b64_encode(b"a"), "YQ==");
    assert!(b64_decode("a b").is_none());
}

#[test]
fn snapshots_are_mirrored_and_keys_gone_are_removed_at_the_next_poll() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let a1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    let a2 = kv("pa", "checkout", "2", "127.0.0.1:8082", 6);
    let r = apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(6, &[a1.clone(), a2]),
        1000,
    )
    .unwrap();
    assert_eq!((r.full, r.records, r.added, r.removed), (true, 2, 2, 0));
    assert_eq!(
        listed(&mut s, &c, 1000),
        vec![
            ("127.0.0.1:8081".into(), "1".into()),
            ("127.0.0.1:8082".into(), "2".into())
        ]
    );
    // Same revision: nothing decoded, the records stay fresh with the mirror.
    s.writes = 0;
    let r = apply(&mut s, &c, &e(&c), Some(200), &answer(6, &[]), 2000).unwrap();
    assert!(!r.full);
    assert_eq!(s.writes, 1);
    assert_eq!(listed(&mut s, &c, 4500).len(), 2);
    // 8082's lease expired.
    let r = apply(&mut s, &c, &e(&c), Some(200), &answer(7, &[a1]), 3000).unwrap();
    assert_eq!((r.full, r.removed), (true, 1));
    assert_eq!(
        listed(&mut s, &c, 3000),
        vec![("127.0.0.1:8081".into(), "1".into())]
    );
    // Everything deregistered: an empty range has no kvs and is a valid snapshot.
    let r = apply(&mut s, &c, &e(&c), Some(200), &answer(8, &[]), 4000).unwrap();
    assert_eq!(r.removed, 1);
    assert!(listed(&mut s, &c, 4000).is_empty());
    assert_eq!(registry::count(&mut s, &Scope::of(&c)).unwrap(), 0);
}

#[test]
fn failed_polls_keep_the_snapshot_until_it_goes_stale() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let a1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(5, std::slice::from_ref(&a1)),
        1000,
    )
    .unwrap();
    let before = s.map.clone();
    for (status, body) in [
        (None, &b""[..]),
        (Some(503), &b"upstream connect error"[..]),
        (Some(200), &b"<html>"[..]),
        (
            Some(200),
            &br#"{"error":"etcdserver: too many requests","code":14}"#[..],
        ),
        (Some(200), &br#"{"header":{"revision":"x"}}"#[..]),
    ] {
        assert!(apply(&mut s, &c, &e(&c), status, body, 2000).is_err());
    }
    assert_eq!(s.map, before, "a failed poll changes nothing");
    assert_eq!(listed(&mut s, &c, 3999).len(), 1, "kept until stale");
    assert!(
        listed(&mut s, &c, 4000).is_empty(),
        "stale by its own last_seen"
    );
    // Back: the next poll restores freshness.
    apply(&mut s, &c, &e(&c), Some(200), &answer(5, &[a1]), 9000).unwrap();
    assert_eq!(listed(&mut s, &c, 9000).len(), 1);
}

#[test]
fn records_pruned_during_an_outage_come_back_with_an_unchanged_revision() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let a1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(5, std::slice::from_ref(&a1)),
        1000,
    )
    .unwrap();
    let sc = Scope::of(&c);
    let mut cursor = registry::PruneCursor::default();
    while !registry::prune(&mut s, &sc, 9000, &mut cursor)
        .unwrap()
        .wrapped
    {}
    assert_eq!(registry::count(&mut s, &Scope::of(&c)).unwrap(), 0);
    let r = apply(&mut s, &c, &e(&c), Some(200), &answer(5, &[a1]), 9000).unwrap();
    assert!(r.full);
    assert_eq!(listed(&mut s, &c, 9000).len(), 1);
}

#[test]
fn disagreeing_or_foreign_keys_are_skipped() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let good = kv("pa", "checkout", "1", "127.0.0.1:8081", 2);
    let lying = raw_kv(
        "/mixmode/pa/checkout/2/127.0.0.1:8082",
        r#"{"pool":"pa","app":"checkout","version":"1","address":"127.0.0.1:8082"}"#,
        3,
    );
    let not_json = raw_kv("/mixmode/pa/checkout/2/127.0.0.1:8083", "garbage", 4);
    let public = kv("pa", "checkout", "2", "8.8.8.8:80", 5);
    let other_pool = kv("pb", "checkout", "2", "127.0.0.1:8084", 6);
    let r = apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(6, &[good, lying, not_json, public, other_pool]),
        1000,
    )
    .unwrap();
    assert_eq!(r.records, 1);
    assert_eq!(r.skipped.len(), 4, "{:?}", r.skipped);
    assert_eq!(
        listed(&mut s, &c, 1000),
        vec![("127.0.0.1:8081".into(), "1".into())]
    );
}

#[test]
fn cross_pool_mirrors_every_pool() {
    let c = cfg(r#","cross_pool":true"#);
    let mut s = MemoryStore::default();
    let other_pool = kv("pb", "checkout", "2", "127.0.0.1:8084", 6);
    let r = apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(6, &[other_pool]),
        1000,
    )
    .unwrap();
    assert_eq!(r.records, 1);
}

#[test]
fn push_and_etcd_are_one_record_and_the_latest_write_wins() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let a1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    let b1 = kv("pa", "checkout", "1", "127.0.0.1:8082", 5);
    upsert(&mut s, &Scope::of(&c), &ID_8081, 500).unwrap();
    apply(&mut s, &c, &e(&c), Some(200), &answer(5, &[a1, b1]), 1000).unwrap();
    assert_eq!(registry::count(&mut s, &Scope::of(&c)).unwrap(), 2);
    // 8081 pushes after the poll; then both keys go: 8081 stays (a later write), 8082 goes.
    upsert(&mut s, &Scope::of(&c), &ID_8081, 1500).unwrap();
    apply(&mut s, &c, &e(&c), Some(200), &answer(6, &[]), 2000).unwrap();
    assert_eq!(
        listed(&mut s, &c, 2000),
        vec![("127.0.0.1:8081".into(), "1".into())]
    );
    assert!(
        listed(&mut s, &c, 4500).is_empty(),
        "then stale by its push"
    );
}

#[test]
fn a_server_registered_twice_takes_its_latest_version() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let old = kv("pa", "checkout", "1", "127.0.0.1:8081", 9);
    let new = kv("pa", "checkout", "2", "127.0.0.1:8081", 12);
    apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(12, &[old, new]),
        1000,
    )
    .unwrap();
    assert_eq!(
        listed(&mut s, &c, 1000),
        vec![("127.0.0.1:8081".into(), "2".into())]
    );
}

#[test]
fn a_version_change_in_etcd_moves_the_record_and_the_cap_holds() {
    let c = cfg(r#","max_records":2"#);
    let mut s = MemoryStore::default();
    let v1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    let b = kv("pa", "checkout", "1", "127.0.0.1:8082", 5);
    let extra = kv("pa", "checkout", "1", "127.0.0.1:8083", 5);
    let r = apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(5, &[v1, b.clone(), extra]),
        1000,
    )
    .unwrap();
    assert_eq!((r.records, r.refused), (3, 1));
    let v2 = kv("pa", "checkout", "2", "127.0.0.1:8081", 9);
    apply(&mut s, &c, &e(&c), Some(200), &answer(9, &[v2, b]), 2000).unwrap();
    assert_eq!(
        listed(&mut s, &c, 2000),
        vec![
            ("127.0.0.1:8081".into(), "2".into()),
            ("127.0.0.1:8082".into(), "1".into())
        ]
    );
    let sc = Scope::of(&c);
    let m: Vec<String> = registry::read_members(&mut s, &sc, sc.members_bucket("checkout"))
        .unwrap()
        .iter()
        .filter(|m| m.version == "1")
        .flat_map(|m| m.list().to_vec())
        .collect();
    assert_eq!(m, vec!["127.0.0.1:8082"]);
    assert_eq!(registry::count(&mut s, &Scope::of(&c)).unwrap(), 2);
}

#[test]
fn numbers_may_be_numbers() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let r = apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        br#"{"header":{"revision":3}}"#,
        1000,
    )
    .unwrap();
    assert_eq!(r.revision, 3);
}

/// Issue 11: a body that starts with the known revision and is then cut off is a failed poll,
/// and the mirror's freshness does not move.
#[test]
fn a_cut_off_answer_with_the_known_revision_is_a_failure() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let body = answer(5, &[kv("pa", "checkout", "1", "127.0.0.1:8081", 5)]);
    apply(&mut s, &c, &e(&c), Some(200), &body, 1000).unwrap();
    apply(&mut s, &c, &e(&c), Some(200), &body, 2000).unwrap();
    let before = s.map.clone();
    let cut = &body[..body.len() - 30];
    assert!(matches!(
        apply(&mut s, &c, &e(&c), Some(200), cut, 3000),
        Err(SyncError::Garbage(_))
    ));
    assert_eq!(s.map, before, "a failed poll changes nothing");
    assert!(
        listed(&mut s, &c, 5000).is_empty(),
        "stale by the last good poll"
    );
}

/// Issue 11: a late answer of an older revision is dropped; it does not bring back a key the
/// newer revision removed.
#[test]
fn an_older_revision_is_dropped() {
    let c = cfg("");
    let mut s = MemoryStore::default();
    let a1 = kv("pa", "checkout", "1", "127.0.0.1:8081", 5);
    let a2 = kv("pa", "checkout", "1", "127.0.0.1:8082", 6);
    apply(
        &mut s,
        &c,
        &e(&c),
        Some(200),
        &answer(7, std::slice::from_ref(&a2)),
        1000,
    )
    .unwrap();
    let r = apply(&mut s, &c, &e(&c), Some(200), &answer(6, &[a1, a2]), 1100).unwrap();
    assert!(r.dropped);
    assert_eq!(
        listed(&mut s, &c, 1100),
        vec![("127.0.0.1:8082".into(), "1".into())]
    );
}

/// Issue 11 defect 1: two configurations (pools pa, pb) mirror one etcd, whose revision is
/// cluster-wide: each keeps its own record through the polls and the periodic full check.
#[test]
fn two_pools_mirror_one_etcd_apart() {
    let a = cfg("");
    let b = Config::parse(
        br#"{"app":"checkout","pool":"pb","registry":{"stale_after_ms":3000,
             "etcd":{"poll_interval_ms":1000}}}"#,
    )
    .unwrap();
    let mut s = MemoryStore::default();
    let ka = answer(5, &[kv("pa", "checkout", "1", "127.0.0.1:8081", 5)]);
    let kb = answer(5, &[kv("pb", "checkout", "1", "127.0.0.1:8082", 4)]);
    for t in [1000, 1100, 2100, 3100, 4100, 5100] {
        apply(&mut s, &a, &e(&a), Some(200), &ka, t).unwrap();
        apply(&mut s, &b, &e(&b), Some(200), &kb, t).unwrap();
        assert_eq!(
            listed(&mut s, &a, t),
            vec![("127.0.0.1:8081".into(), "1".into())]
        );
        assert_eq!(
            listed(&mut s, &b, t),
            vec![("127.0.0.1:8082".into(), "1".into())]
        );
    }
}

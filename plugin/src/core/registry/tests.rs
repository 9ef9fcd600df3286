use super::*;
use crate::core::config::Selection;
use crate::core::lookup::{pick, LookupCache, Query};
use crate::core::store;

fn scope(max_records: u32) -> Scope {
    Scope::new(
        &["test"],
        Limits {
            stale_after_ms: 1000,
            max_records,
        },
    )
}

fn id<'a>(pool: &'a str, version: &'a str, address: &'a str) -> Ident<'a> {
    Ident {
        pool,
        app: "app",
        version,
        address,
    }
}

fn up<S: SharedStore + ?Sized>(
    s: &mut S,
    sc: &Scope,
    version: &str,
    address: &str,
    now: u64,
) -> Result<Upserted, RegistryError> {
    upsert(s, sc, &id("p", version, address), now)
}

/// Every address a lookup can return for `version`, at `now`.
fn addrs(store: &mut MemoryStore, sc: &Scope, version: &str, now: u64) -> Vec<String> {
    let mut cache = LookupCache::default();
    let mut out: Vec<String> = Vec::new();
    loop {
        let q = Query {
            pool: "p",
            app: "app",
            version,
            cross_pool: false,
            selection: Selection::Random,
            now_ms: now,
        };
        match pick(store, sc, &mut cache, &q, &out, 7).unwrap() {
            Some(a) => out.push(a),
            None => break,
        }
    }
    out.sort();
    out
}

fn members(store: &mut MemoryStore, sc: &Scope, version: &str) -> Vec<String> {
    let m = sc.members_bucket("app");
    let mut out: Vec<String> = read_members(store, sc, m)
        .unwrap()
        .iter()
        .filter(|s| s.pool == "p" && s.app == "app" && s.version == version)
        .flat_map(|s| s.list().to_vec())
        .collect();
    out.sort();
    out
}

fn cycle(store: &mut MemoryStore, sc: &Scope, now: u64) -> Pruned {
    let mut c = PruneCursor::default();
    let mut total = Pruned::default();
    loop {
        let p = prune(store, sc, now, &mut c).unwrap();
        total.checked += p.checked;
        total.removed += p.removed;
        total.recounted |= p.recounted;
        if p.wrapped {
            total.wrapped = true;
            return total;
        }
    }
}

/// A store whose writes to keys containing `refuse` fail while it is set.
struct Refusing {
    inner: MemoryStore,
    refuse: Option<&'static str>,
}

impl SharedStore for Refusing {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.refuse.is_some_and(|p| key.contains(p)) {
            return Err(StoreError::Other);
        }
        self.inner.set(key, value, cas)
    }
}

// Fuzz finding H1: the slot was written, its members list refused; the server's next
// heartbeat (an unchanged version) must index it.
#[test]
fn a_record_whose_index_failed_is_indexed_by_its_next_heartbeat() {
    let sc = scope(100);
    let mut st = Refusing {
        inner: MemoryStore::default(),
        refuse: Some("/members/"),
    };
    assert!(up(&mut st, &sc, "1", "10.0.0.1:80", 10).is_err());
    assert!(list(&mut st, &sc, 10).unwrap().is_empty());
    assert_eq!(count(&mut st, &sc).unwrap(), 1, "the record exists");
    st.refuse = None;
    up(&mut st, &sc, "1", "10.0.0.1:80", 20).unwrap();
    assert_eq!(addrs(&mut st.inner, &sc, "1", 20), vec!["10.0.0.1:80"]);
    assert_eq!(list(&mut st, &sc, 20).unwrap().len(), 1);
    // Indexed once: later refreshes write the slot only again.
    let writes = st.inner.writes;
    up(&mut st, &sc, "1", "10.0.0.1:80", 30).unwrap();
    assert_eq!(st.inner.writes, writes + 1);
}

#[test]
fn a_version_change_whose_index_failed_is_indexed_by_the_next_heartbeat() {
    let sc = scope(100);
    let mut st = Refusing {
        inner: MemoryStore::default(),
        refuse: None,
    };
    up(&mut st, &sc, "1", "10.0.0.1:80", 10).unwrap();
    st.refuse = Some("/members/");
    assert!(up(&mut st, &sc, "2", "10.0.0.1:80", 20).is_err());
    st.refuse = None;
    up(&mut st, &sc, "2", "10.0.0.1:80", 30).unwrap();
    assert_eq!(addrs(&mut st.inner, &sc, "2", 30), vec!["10.0.0.1:80"]);
    assert!(addrs(&mut st.inner, &sc, "1", 30).is_empty());
}

/// A record whose heartbeat failed half way is indexed by the prune if no heartbeat follows.
#[test]
fn the_prune_indexes_a_record_its_writer_left_unindexed() {
    let sc = scope(100);
    let mut st = Refusing {
        inner: MemoryStore::default(),
        refuse: Some("/members/"),
    };
    assert!(up(&mut st, &sc, "1", "10.0.0.1:80", 10).is_err());
    cycle(&mut st.inner, &sc, 20);
    assert_eq!(addrs(&mut st.inner, &sc, "1", 20), vec!["10.0.0.1:80"]);
    assert_eq!(list(&mut st.inner, &sc, 20).unwrap().len(), 1);
}

#[test]
fn upsert_creates_then_refreshes() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    let u = up(&mut s, &sc, "2", "10.0.0.1:80", 100).unwrap();
    assert_eq!(
        u,
        Upserted {
            created: true,
            records: Some(1)
        }
    );
    let u = up(&mut s, &sc, "2", "10.0.0.1:80", 500).unwrap();
    assert_eq!(
        u,
        Upserted {
            created: false,
            records: None
        }
    );
    let recs = list(&mut s, &sc, 600).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].first_seen_ms, 100);
    assert_eq!(recs[0].last_seen_ms, 500);
    assert_eq!(recs[0].version, "2");
}

#[test]
fn a_refresh_reads_and_writes_only_its_bucket() {
    let sc = scope(100);
    let mut s = MemoryStore::default();
    for i in 0..50 {
        up(&mut s, &sc, "2", &format!("10.0.0.{i}:80"), 0).unwrap();
    }
    let before = s.map.clone();
    (s.writes, s.reads) = (0, 0);
    up(&mut s, &sc, "2", "10.0.0.7:80", 10).unwrap();
    assert_eq!((s.reads, s.writes), (1, 1));
    let changed: Vec<&String> = s
        .map
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(changed, vec![&sc.slot_key("p", "app", "10.0.0.7:80")]);
}

#[test]
fn version_change_moves_the_record() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    up(&mut s, &sc, "1", "10.0.0.1:80", 100).unwrap();
    let u = up(&mut s, &sc, "2", "10.0.0.1:80", 200).unwrap();
    assert!(!u.created);
    assert!(addrs(&mut s, &sc, "1", 200).is_empty());
    assert!(members(&mut s, &sc, "1").is_empty());
    assert_eq!(addrs(&mut s, &sc, "2", 200), vec!["10.0.0.1:80"]);
    let recs = list(&mut s, &sc, 200).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].version, "2");
    assert_eq!(count(&mut s, &sc).unwrap(), 1);
}

#[test]
fn stale_records_are_never_chosen_and_pruned_by_the_tick() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    up(&mut s, &sc, "2", "10.0.0.2:80", 900).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 1000), vec!["10.0.0.2:80"]);
    assert_eq!(list(&mut s, &sc, 1000).unwrap().len(), 1);
    let p = cycle(&mut s, &sc, 1000);
    assert_eq!((p.checked, p.removed, p.wrapped), (2, 1, true));
    assert_eq!(count(&mut s, &sc).unwrap(), 1);
    assert_eq!(members(&mut s, &sc, "2"), vec!["10.0.0.2:80"]);
    let gone = RecordId {
        pool: "p",
        app: "app",
        address: "10.0.0.1:80",
    };
    assert!(find(&mut s, &sc, &gone).unwrap().is_none());
}

#[test]
fn a_prune_run_walks_only_its_budget_of_buckets() {
    let sc = Scope::new(
        &["big"],
        Limits {
            stale_after_ms: 15_000,
            max_records: 10_000,
        },
    );
    let mut s = MemoryStore::default();
    let mut c = PruneCursor::default();
    s.reads = 0;
    let p = prune(&mut s, &sc, 0, &mut c).unwrap();
    assert!(!p.wrapped);
    // Each slot bucket one read; each members bucket its read and its generation check (two
    // reads); the count read at the cycle's start.
    let per_run = sc.slot_buckets_per_run() + 3 * sc.members_buckets_per_run() + 1;
    assert!(s.reads <= per_run as usize, "{} reads", s.reads);
    let mut runs = 1;
    while !prune(&mut s, &sc, 0, &mut c).unwrap().wrapped {
        runs += 1;
    }
    assert_eq!(
        runs + 1,
        sc.slot_buckets.div_ceil(sc.slot_buckets_per_run())
    );
}

#[test]
fn remove_deletes_whatever_the_version() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    up(&mut s, &sc, "2", "10.0.0.2:80", 0).unwrap();
    let gone = RecordId {
        pool: "p",
        app: "app",
        address: "10.0.0.1:80",
    };
    assert!(remove(&mut s, &sc, &gone, 10).unwrap());
    assert!(!remove(&mut s, &sc, &gone, 10).unwrap());
    assert_eq!(count(&mut s, &sc).unwrap(), 1);
    assert_eq!(addrs(&mut s, &sc, "2", 10), vec!["10.0.0.2:80"]);
    assert_eq!(members(&mut s, &sc, "2"), vec!["10.0.0.2:80"]);
}

#[test]
fn cap_refuses_new_addresses_in_two_reads_but_not_refreshes() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    for i in 1..=3 {
        up(&mut s, &sc, "2", &format!("10.0.0.{i}:80"), 0).unwrap();
    }
    let before = s.map.clone();
    (s.reads, s.writes) = (0, 0);
    assert_eq!(
        up(&mut s, &sc, "2", "10.0.0.9:80", 1).unwrap_err(),
        RegistryError::Full
    );
    assert_eq!((s.reads, s.writes), (2, 0));
    assert_eq!(s.map, before, "a refused heartbeat changes nothing");
    assert!(up(&mut s, &sc, "2", "10.0.0.1:80", 2).is_ok());
    // A version change is not a new record.
    assert!(up(&mut s, &sc, "3", "10.0.0.2:80", 3).is_ok());
}

/// Stale records hold their places until the prune removes them (within about
/// `stale_after_ms`): the request path never scans for them.
#[test]
fn stale_records_make_room_once_pruned() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    for i in 1..=3 {
        up(&mut s, &sc, "2", &format!("10.0.0.{i}:80"), 0).unwrap();
    }
    assert_eq!(
        up(&mut s, &sc, "2", "10.0.0.9:80", 5000).unwrap_err(),
        RegistryError::Full
    );
    cycle(&mut s, &sc, 5000);
    let u = up(&mut s, &sc, "2", "10.0.0.9:80", 5000).unwrap();
    assert_eq!(u.records, Some(1));
    assert_eq!(list(&mut s, &sc, 5000).unwrap().len(), 1);
}

#[test]
fn cas_mismatches_are_retried() {
    let sc = scope(3);
    let mut s = MemoryStore {
        inject_mismatches: 5,
        ..Default::default()
    };
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 0), vec!["10.0.0.1:80"]);
    s.inject_mismatches = 1000;
    assert_eq!(
        up(&mut s, &sc, "2", "10.0.0.2:80", 0).unwrap_err(),
        RegistryError::Busy
    );
    assert_eq!(count(&mut s, &sc).unwrap(), 1);
}

/// A count left high by a VM that died between its two writes is corrected by the first
/// quiet prune cycle, and never while writers are counting.
#[test]
fn the_prune_corrects_a_drifted_count_only_when_quiet() {
    let sc = Scope::new(
        &["drift"],
        Limits {
            stale_after_ms: 60_000,
            max_records: 10,
        },
    );
    let mut s = MemoryStore::default();
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    store::write(
        &mut s,
        &sc.count_key(),
        &Count {
            n: 4,
            changed_ms: 100,
        },
    )
    .unwrap();
    assert!(!cycle(&mut s, &sc, 100 + QUIET_MS - 1).recounted);
    assert_eq!(count(&mut s, &sc).unwrap(), 4);
    // A cycle during which a writer counts corrects nothing.
    let mut c = PruneCursor::default();
    let mut p = prune(&mut s, &sc, 2000, &mut c).unwrap();
    up(&mut s, &sc, "2", "10.0.0.2:80", 2000).unwrap();
    while !p.wrapped {
        p = prune(&mut s, &sc, 2000, &mut c).unwrap();
    }
    assert!(!p.recounted);
    assert_eq!(count(&mut s, &sc).unwrap(), 5);
    assert!(cycle(&mut s, &sc, 3500).recounted);
    assert_eq!(count(&mut s, &sc).unwrap(), 2);
}

#[test]
fn keys_cannot_be_forged_by_separators() {
    assert_ne!(
        layout::fnv64(&["a", "b:c", "d"]),
        layout::fnv64(&["a", "b", "c:d"])
    );
    assert_ne!(layout::fnv64(&["a/b", "c"]), layout::fnv64(&["a", "b/c"]));
}

#[test]
fn garbage_in_a_key_reads_as_empty_and_is_overwritten() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    s.set(&sc.slot_key("p", "app", "10.0.0.1:80"), b"\xff\xff\xff", 0)
        .unwrap();
    let m = sc.members_bucket("app");
    s.set(&sc.members_key_at(m), b"\xff\xff", 0).unwrap();
    assert!(addrs(&mut s, &sc, "2", 0).is_empty());
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 0), vec!["10.0.0.1:80"]);
}

#[test]
fn pools_and_apps_are_separate() {
    let sc = scope(100);
    let mut s = MemoryStore::default();
    up(&mut s, &sc, "2", "10.0.0.1:80", 0).unwrap();
    upsert(&mut s, &sc, &id("q", "2", "10.0.0.2:80"), 0).unwrap();
    let other = Ident {
        pool: "p",
        app: "other",
        version: "2",
        address: "10.0.0.3:80",
    };
    upsert(&mut s, &sc, &other, 0).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 0), vec!["10.0.0.1:80"]);
    assert_eq!(list(&mut s, &sc, 0).unwrap().len(), 3);
    // Same address in another pool is another record.
    upsert(&mut s, &sc, &id("q", "3", "10.0.0.1:80"), 0).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 0), vec!["10.0.0.1:80"]);
    assert_eq!(count(&mut s, &sc).unwrap(), 4);
}

#[test]
fn scopes_are_apart() {
    let a = scope(10);
    let b = Scope::new(&["other"], a.limits);
    let mut s = MemoryStore::default();
    up(&mut s, &a, "2", "10.0.0.1:80", 0).unwrap();
    assert!(addrs(&mut s, &b, "2", 0).is_empty());
    assert_eq!(count(&mut s, &b).unwrap(), 0);
    assert_eq!(cycle(&mut s, &b, 10_000).removed, 0);
    assert_eq!(addrs(&mut s, &a, "2", 0), vec!["10.0.0.1:80"]);
}

#[test]
fn etcd_records_are_as_fresh_as_the_mirror() {
    let sc = scope(3);
    let mut s = MemoryStore::default();
    put(&mut s, &sc, &id("p", "2", "10.0.0.1:80"), 0, Source::Etcd).unwrap();
    store::write(&mut s, &sc.mirror_seen_key(), &500u64).unwrap();
    assert_eq!(addrs(&mut s, &sc, "2", 1400), vec!["10.0.0.1:80"]);
    assert!(addrs(&mut s, &sc, "2", 1500).is_empty());
    let recs = list(&mut s, &sc, 1000).unwrap();
    assert_eq!(recs[0].last_seen_ms, 500);
    // A push heartbeat for the same (pool, app, address) is the same record.
    let u = up(&mut s, &sc, "2", "10.0.0.1:80", 1400).unwrap();
    assert!(!u.created);
    assert_eq!(addrs(&mut s, &sc, "2", 2000), vec!["10.0.0.1:80"]);
}

/// docs/design.md#registry-invariants "bounded keys": one address heartbeating 1,000 distinct versions, with the
/// prune running, leaves the keys within the scope's bound, and only one record.
#[test]
fn a_thousand_versions_leave_the_keys_bounded() {
    let sc = Scope::new(
        &["churn"],
        Limits {
            stale_after_ms: 15_000,
            max_records: 10_000,
        },
    );
    let mut s = MemoryStore::default();
    let mut c = PruneCursor::default();
    for v in 0..1000u64 {
        up(&mut s, &sc, &format!("v{v}"), "10.0.0.1:80", v).unwrap();
        if v % 100 == 0 {
            prune(&mut s, &sc, v, &mut c).unwrap();
        }
    }
    let keys = s.map.len();
    println!(
        "keys after 1,000 versions of one address: {keys} (bound {})",
        sc.max_keys()
    );
    assert!(keys <= sc.max_keys());
    // The address's slot bucket, the count, its app's members bucket and generation.
    assert_eq!(keys, 4, "{:?}", s.map.keys().collect::<Vec<_>>());
    assert_eq!(count(&mut s, &sc).unwrap(), 1);
    assert_eq!(list(&mut s, &sc, 1000).unwrap().len(), 1);
}

#[test]
fn a_members_bucket_round_trips_as_bytes() {
    let set = SetMembers {
        pool: "p".into(),
        app: "app".into(),
        version: "2".into(),
        members: vec![1, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'c'],
    };
    let bytes = postcard::to_allocvec(&vec![set.clone()]).unwrap();
    assert_eq!(decode_members(&bytes), vec![set.clone()]);
    // The same bytes as postcard's sequence of u8.
    let as_seq = postcard::to_allocvec(&("p", "app", "2", set.members.clone())).unwrap();
    assert_eq!(&bytes[1..], &as_seq[..]);
}

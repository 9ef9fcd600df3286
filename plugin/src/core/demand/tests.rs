use super::*;
use crate::core::registry::Limits;
use crate::core::store::MemoryStore;

fn scope() -> Scope {
    Scope::new(
        &["pool-a", "checkout"],
        Limits {
            stale_after_ms: 15_000,
            max_records: 100,
        },
    )
}

fn need(version: &str) -> Need<'_> {
    Need {
        pool: "pool-a",
        app: "checkout",
        version,
    }
}

fn listing(s: &mut MemoryStore, now: u64) -> Vec<(String, u64, u64)> {
    list(s, &scope(), now)
        .unwrap()
        .into_iter()
        .map(|d| (d.version, d.last_needed_ms, d.needed_60s))
        .collect()
}

#[test]
fn a_need_is_listed_with_its_time_and_count() {
    let mut s = MemoryStore::default();
    assert!(listing(&mut s, 0).is_empty());
    record(&mut s, &scope(), &need("1"), 1_000, 1).unwrap();
    record(&mut s, &scope(), &need("1"), 2_500, 1).unwrap();
    record(&mut s, &scope(), &need("2"), 3_000, 1).unwrap();
    assert_eq!(
        listing(&mut s, 4_000),
        [("2".to_string(), 3_000, 1), ("1".to_string(), 2_500, 2)]
    );
    let d = &list(&mut s, &scope(), 4_000).unwrap()[0];
    assert_eq!((d.pool.as_str(), d.app.as_str()), ("pool-a", "checkout"));
}

#[test]
fn the_count_covers_the_last_60_seconds_and_decays() {
    let mut s = MemoryStore::default();
    // 3 needs at t = 5 s, 2 at t = 25 s.
    for t in [5_000, 5_100, 5_200, 25_000, 25_500] {
        record(&mut s, &scope(), &need("1"), t, 1).unwrap();
    }
    let count = |s: &mut MemoryStore, now| listing(s, now)[0].2;
    assert_eq!(count(&mut s, 26_000), 5);
    // The period of t = 5 s (0..10 s) leaves the count once six newer periods began (60 s).
    assert_eq!(count(&mut s, 59_999), 5);
    assert_eq!(count(&mut s, 60_000), 2);
    assert_eq!(count(&mut s, 79_999), 2);
    assert_eq!(count(&mut s, 80_000), 0);
    // Still listed until 4 × 15 s = 60 s after the last need (25.5 s), then gone.
    assert_eq!(listing(&mut s, 85_499).len(), 1);
    assert!(listing(&mut s, 85_500).is_empty());
}

#[test]
fn a_write_after_a_long_quiet_starts_a_fresh_count() {
    let mut s = MemoryStore::default();
    record(&mut s, &scope(), &need("1"), 1_000, 7).unwrap();
    record(&mut s, &scope(), &need("1"), 40_000, 1).unwrap();
    assert_eq!(listing(&mut s, 40_000), [("1".to_string(), 40_000, 8)]);
    // 2 minutes later: the ring is cleared, not wrapped onto old periods.
    record(&mut s, &scope(), &need("1"), 161_000, 1).unwrap();
    assert_eq!(listing(&mut s, 161_000), [("1".to_string(), 161_000, 1)]);
    // Every slot of the ring cleared on the way.
    record(&mut s, &scope(), &need("1"), 195_000, 1).unwrap();
    assert_eq!(listing(&mut s, 195_000), [("1".to_string(), 195_000, 2)]);
}

#[test]
fn a_writer_with_an_older_clock_still_counts() {
    let mut e = Entry::new(&need("1"), 70_000);
    e.add(70_000, 1);
    // Another worker's need at 61 s arrives after the one at 70 s.
    e.add(61_000, 1);
    assert_eq!(e.last_needed_ms, 70_000);
    assert_eq!(e.needed_60s(70_000), 2);
    // Older than the ring (it holds 20 s to 80 s): not counted, nothing else touched.
    e.add(11_000, 5);
    assert_eq!(e.needed_60s(70_000), 2);
    assert_eq!(e.last_needed_ms, 70_000);
}

#[test]
fn unregistrable_names_are_not_recorded() {
    let mut s = MemoryStore::default();
    let long = "v".repeat(129);
    for v in ["", "a b", "tab\t", long.as_str(), "é"] {
        record(&mut s, &scope(), &need(v), 1_000, 1).unwrap();
    }
    assert_eq!(s.writes, 0);
}

#[test]
fn one_need_costs_one_read_and_one_write() {
    let mut s = MemoryStore::default();
    for i in 0..50 {
        record(&mut s, &scope(), &need(&format!("v{i}")), 1_000, 1).unwrap();
    }
    let (r, w) = (s.reads, s.writes);
    record(&mut s, &scope(), &need("v7"), 2_000, 1).unwrap();
    assert_eq!((s.reads - r, s.writes - w), (1, 1));
}

#[test]
fn keys_stay_bounded_whatever_the_versions() {
    let mut s = MemoryStore::default();
    let sc = scope();
    for i in 0..2_000u64 {
        record(&mut s, &sc, &need(&format!("v{i}")), 1_000 + i, 1).unwrap();
    }
    assert!(s.map.len() <= DEMAND_KEYS, "{} keys", s.map.len());
    assert!(s.map.keys().all(|k| k.starts_with(&sc.prefix)));
    let l = list(&mut s, &sc, 3_000).unwrap();
    assert!(l.len() <= DEMAND_KEYS * MAX_PER_BUCKET, "{}", l.len());
    // The most recent need always survives: the least recently needed entry gave way.
    assert_eq!(l[0].version, "v1999");
    // Every bucket is within its size.
    for n in 0..sc.demand_buckets() {
        let b: Vec<Entry> = read(&mut s, &sc.demand_key_at(n)).unwrap();
        assert!(b.len() <= MAX_PER_BUCKET);
    }
}

const DEMAND_KEYS: usize = crate::core::registry::layout::DEMAND_BUCKETS as usize;

#[test]
fn entries_past_the_window_make_room() {
    let mut s = MemoryStore::default();
    let sc = scope();
    for i in 0..200u64 {
        record(&mut s, &sc, &need(&format!("old{i}")), 1_000, 1).unwrap();
    }
    // Long after the window, a few new versions: every old entry of their buckets is dropped.
    for v in ["2", "3"] {
        record(&mut s, &sc, &need(v), 1_000_000, 1).unwrap();
    }
    let mut versions: Vec<String> = list(&mut s, &sc, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|d| d.version)
        .collect();
    versions.sort();
    assert_eq!(versions, ["2", "3"]);
}

#[test]
fn cas_mismatches_are_retried_without_losing_a_count() {
    let mut s = MemoryStore {
        inject_mismatches: 5,
        ..Default::default()
    };
    record(&mut s, &scope(), &need("1"), 1_000, 1).unwrap();
    record(&mut s, &scope(), &need("1"), 1_000, 1).unwrap();
    assert_eq!(listing(&mut s, 1_000), [("1".to_string(), 1_000, 2)]);
}

#[test]
fn garbage_in_a_bucket_is_overwritten() {
    let mut s = MemoryStore::default();
    let sc = scope();
    let key = sc.demand_key("pool-a", "checkout", "1");
    s.set(&key, b"\xff\xff\xff garbage", 0).unwrap();
    assert!(listing(&mut s, 0).is_empty());
    record(&mut s, &sc, &need("1"), 1_000, 1).unwrap();
    assert_eq!(listing(&mut s, 1_000), [("1".to_string(), 1_000, 1)]);
}

#[test]
fn only_a_mismatch_with_a_registrable_version_is_a_need() {
    use Counter::*;
    assert_eq!(
        needed_version(&[MismatchDetected, RedispatchOk], Some(b" 2 ")),
        Some("2")
    );
    assert_eq!(
        needed_version(&[MismatchDetected, NoPeer], Some(b"2")),
        Some("2")
    );
    assert_eq!(
        needed_version(&[MismatchDetected, ReplayTooLarge], Some(b"2")),
        Some("2")
    );
    assert_eq!(needed_version(&[NotVersionError], Some(b"2")), None);
    assert_eq!(needed_version(&[], Some(b"2")), None);
    assert_eq!(
        needed_version(&[MismatchDetected, NoPeer], Some(b"a b")),
        None
    );
    assert_eq!(needed_version(&[MismatchDetected, NoPeer], None), None);
}

#[test]
fn the_window_is_four_stale_intervals() {
    assert_eq!(window_ms(&scope()), 60_000);
}

#[test]
fn the_first_32_versions_get_their_own_counter() {
    let mut c = VersionCounters::<u32>::default();
    let mut defined = Vec::new();
    let mut define = |name: &str| {
        defined.push(name.to_string());
        defined.len() as u32
    };
    assert_eq!(c.id("2", &mut define), 1);
    assert_eq!(c.id("2", &mut define), 1);
    for i in 0..40 {
        c.id(&format!("v{i}"), &mut define);
    }
    assert_eq!(c.id("v39", &mut define), c.id("v31", &mut define));
    assert_eq!(c.id("2", &mut define), 1);
    assert_eq!(defined.len(), 33);
    assert_eq!(defined[0], "needed.2");
    assert_eq!(defined[32], "needed.other");
}

#[test]
fn counter_names_keep_only_stat_characters() {
    assert_eq!(counter_name("2"), "needed.2");
    assert_eq!(counter_name("1.4.0-rc_1"), "needed.1.4.0-rc_1");
    assert_eq!(counter_name("a{b}:c/d"), "needed.a_b__c_d");
}

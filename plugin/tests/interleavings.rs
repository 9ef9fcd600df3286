//! docs/design.md#registry-invariants checked over interleavings: each scenario runs two or three writers (heartbeats,
//! an etcd apply, a prune tick, a second configuration) against one shared-data store under
//! every schedule of their store operations (or a seeded sample where there are too many),
//! with a CAS mismatch or a host error injected at each step in turn, and checks the
//! invariants after each schedule. Every scenario prints its counts:
//! `cargo test -p mixmode --test interleavings -- --nocapture`.
#![cfg(test)]

#[path = "interleave/api.rs"]
mod api;
#[path = "interleave/sched.rs"]
mod sched;

use api::*;
use mixmode::core::config::Config;
use mixmode::core::etcd::b64_encode;
use mixmode::core::store::MemoryStore;
use sched::{explore, Explored, Handle, Writer};

fn report(name: &str, e: &Explored) {
    println!(
        "interleavings {name}: {} schedules ({}), {} violations",
        e.schedules,
        if e.exhaustive { "all" } else { "seeded sample" },
        e.violations
    );
    if let Some(f) = &e.first {
        println!("  first violation: {f}");
    }
}

fn assert_clean(name: &str, e: &Explored) {
    report(name, e);
    assert_eq!(e.violations, 0, "{name}: {:?}", e.first);
}

/// The invariants every scenario ends with, once writers are quiet: per configuration, the
/// stored count equals the records its buckets hold and stays within `max_records`; after a
/// prune cycle every fresh record is choosable (nothing left unreachable); keys stay bounded.
fn quiet_invariants(store: &mut MemoryStore, cfgs: &[&Config], now: u64) -> Result<(), String> {
    for cfg in cfgs {
        let held = stored(store, cfg);
        let n = count(store, cfg);
        let max = u64::from(cfg.registry.max_records);
        if held.len() as u64 > max {
            return Err(format!(
                "pool {}: {} records past the cap {max}: {held:?}",
                cfg.pool,
                held.len()
            ));
        }
        if n != held.len() as u64 {
            return Err(format!(
                "pool {}: stored count {n} but {} records: {held:?}",
                cfg.pool,
                held.len()
            ));
        }
    }
    for cfg in cfgs {
        prune_cycle(store, cfg, now);
        let mut by_version: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (pool, version, address) in listed(store, cfg, now) {
            if pool == cfg.pool {
                by_version.entry(version).or_default().push(address);
            }
        }
        for (version, mut want) in by_version {
            want.sort();
            let got = choosable(store, cfg, &version, now);
            if got != want {
                return Err(format!(
                    "pool {}: v{version} listed {want:?}, choosable {got:?}",
                    cfg.pool
                ));
            }
        }
    }
    let bound = key_bound(cfgs);
    if store.map.len() > bound {
        return Err(format!("{} keys, bound {bound}", store.map.len()));
    }
    Ok(())
}

fn kv(pool: &str, version: &str, address: &str, rev: i64) -> String {
    let key = format!("/mixmode/{pool}/checkout/{version}/{address}");
    let value = format!(
        r#"{{"address":"{address}","app":"checkout","pool":"{pool}","version":"{version}"}}"#
    );
    format!(
        r#"{{"key":"{}","create_revision":"{rev}","mod_revision":"{rev}","version":"1","value":"{}"}}"#,
        b64_encode(key.as_bytes()),
        b64_encode(value.as_bytes())
    )
}

fn range(revision: i64, kvs: &[String]) -> Vec<u8> {
    format!(
        r#"{{"header":{{"cluster_id":"1","member_id":"2","revision":"{revision}","raft_term":"2"}},"kvs":[{}],"count":"{}"}}"#,
        kvs.join(","),
        kvs.len()
    )
    .into_bytes()
}

const ETCD: &str = r#""stale_after_ms":3000,"etcd":{"poll_interval_ms":1000}"#;

/// Defect 1: two configurations (pools pa and pb) mirror one etcd into one store. etcd's
/// revision is cluster-wide: both answers carry revision 5. Each pool's record must stay
/// choosable by its own configuration across the polls that follow, including the periodic
/// full check.
#[test]
fn two_configurations_mirror_etcd_independently() {
    let a = config("pa", ETCD);
    let b = config("pb", ETCD);
    let body_a = range(5, &[kv("pa", "1", "127.0.0.1:8081", 5)]);
    let body_b = range(5, &[kv("pb", "1", "127.0.0.1:8082", 4)]);
    let wa = |h: &mut Handle| etcd_answer(h, &a, Some(&body_a), 1000);
    let wb = |h: &mut Handle| etcd_answer(h, &b, Some(&body_b), 1000);
    let writers: [Writer<bool>; 2] = [&wa, &wb];
    let e = explore(&MemoryStore::default, &writers, 1, 0, 200, &|s, _| {
        for t in [1100, 2100, 3100, 4100] {
            etcd_answer(s, &a, Some(&body_a), t);
            etcd_answer(s, &b, Some(&body_b), t);
            if choosable(s, &a, "1", t) != ["127.0.0.1:8081"] {
                return Err(format!(
                    "t={t}: pa's record not choosable by pa: {:?}",
                    listed(s, &a, t)
                ));
            }
            if choosable(s, &b, "1", t) != ["127.0.0.1:8082"] {
                return Err(format!(
                    "t={t}: pb's record not choosable by pb: {:?}",
                    listed(s, &b, t)
                ));
            }
        }
        quiet_invariants(s, &[&a, &b], 4100)
    });
    assert_clean("two_configurations_mirror_etcd_independently", &e);
}

/// Defect 1, the prune: a configuration with `stale_after_ms` 60000 and one with 15000 share the
/// store; both VMs' ticks prune at t = 20 s. The first one's record (heard at t = 0) is fresh
/// by its own limit and must stay.
#[test]
fn each_configuration_prunes_with_its_own_limits() {
    let long = config("pa", r#""stale_after_ms":60000"#);
    let short = config("pb", r#""stale_after_ms":15000"#);
    let setup = || {
        let mut s = MemoryStore::default();
        assert_eq!(beat(&mut s, &long, "1", "10.0.0.1:80", 0), 204);
        assert_eq!(beat(&mut s, &short, "1", "10.0.0.2:80", 0), 204);
        s
    };
    let w1 = |h: &mut Handle| prune_tick(h, &long, 1, &mut Default::default(), 20_000);
    let w2 = |h: &mut Handle| prune_tick(h, &short, 2, &mut Default::default(), 20_000);
    let writers: [Writer<()>; 2] = [&w1, &w2];
    let e = explore(&setup, &writers, 1, 0, 400, &|s, _| {
        if choosable(s, &long, "1", 20_000) != ["10.0.0.1:80"] {
            return Err(format!(
                "pa's fresh record gone: {:?}",
                listed(s, &long, 20_000)
            ));
        }
        if !choosable(s, &short, "1", 20_000).is_empty() {
            return Err("pb's stale record chosen".into());
        }
        quiet_invariants(s, &[&long, &short], 20_000)
    });
    assert_clean("each_configuration_prunes_with_its_own_limits", &e);
}

fn cap_check(
    s: &mut MemoryStore,
    cfg: &Config,
    statuses: &[u16],
    addrs: &[&str],
    now: u64,
) -> Result<(), String> {
    let held = listed(s, cfg, now);
    for (st, a) in statuses.iter().zip(addrs) {
        let there = held.iter().any(|(_, _, x)| x == a);
        if *st == 204 && !there {
            return Err(format!("{a} answered 204 but not listed: {held:?}"));
        }
        if ![204, 429, 503].contains(st) {
            return Err(format!("{a}: status {st}"));
        }
    }
    quiet_invariants(s, &[cfg], now)
}

/// Defect 2: cap 1, two new addresses at once.
#[test]
fn the_cap_holds_for_two_new_addresses() {
    let cfg = config("p", r#""max_records":1"#);
    let w1 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.1:80", 0);
    let w2 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.2:80", 0);
    let writers: [Writer<u16>; 2] = [&w1, &w2];
    let e = explore(&MemoryStore::default, &writers, 1, 20_000, 3000, &|s, r| {
        cap_check(s, &cfg, r, &["10.0.0.1:80", "10.0.0.2:80"], 0)
    });
    assert_clean("the_cap_holds_for_two_new_addresses", &e);
}

/// Defect 2: cap 2 with one stale and one fresh record; two new addresses and the prune at
/// once (the old sweep recounted and wrote the count unconditionally over an increment).
#[test]
fn the_cap_holds_while_the_prune_removes_stale_records() {
    let cfg = config("p", r#""max_records":2,"stale_after_ms":1000"#);
    let setup = || {
        let mut s = MemoryStore::default();
        assert_eq!(beat(&mut s, &cfg, "1", "10.0.0.8:80", 0), 204);
        assert_eq!(beat(&mut s, &cfg, "1", "10.0.0.9:80", 900), 204);
        s
    };
    let w1 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.1:80", 1000);
    let w2 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.2:80", 1000);
    let w3 = |h: &mut Handle| {
        prune_tick(h, &cfg, 3, &mut Default::default(), 1000);
        204
    };
    let writers: [Writer<u16>; 3] = [&w1, &w2, &w3];
    let e = explore(&setup, &writers, 1, 0, 600, &|s, r| {
        cap_check(s, &cfg, &r[..2], &["10.0.0.1:80", "10.0.0.2:80"], 1000)
    });
    assert_clean("the_cap_holds_while_the_prune_removes_stale_records", &e);
}

/// Defect 2: an etcd snapshot of two new keys while a heartbeat brings a new address, cap 2 with
/// one record stored (the old batch checked the cap against a local count).
#[test]
fn the_cap_holds_for_an_etcd_batch_and_a_heartbeat() {
    let cfg = config(
        "p",
        r#""max_records":2,"stale_after_ms":3000,"etcd":{"poll_interval_ms":1000}"#,
    );
    let setup = || {
        let mut s = MemoryStore::default();
        assert_eq!(beat(&mut s, &cfg, "1", "10.0.0.9:80", 500), 204);
        s
    };
    let body = range(
        7,
        &[
            kv("p", "1", "10.0.0.1:80", 6),
            kv("p", "1", "10.0.0.2:80", 7),
        ],
    );
    let w1 = |h: &mut Handle| {
        if etcd_answer(h, &cfg, Some(&body), 1000) {
            204
        } else {
            503
        }
    };
    let w2 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.3:80", 1000);
    let writers: [Writer<u16>; 2] = [&w1, &w2];
    let e = explore(&setup, &writers, 1, 0, 400, &|s, r| {
        cap_check(s, &cfg, &r[1..], &["10.0.0.3:80"], 1000)
    });
    assert_clean("the_cap_holds_for_an_etcd_batch_and_a_heartbeat", &e);
}

/// Defect 3: one address heartbeats many distinct versions while the prune runs: the keys stay
/// within the bound of the configuration, and the address is choosable under its last version.
#[test]
fn keys_stay_bounded_under_version_churn() {
    let cfg = config("p", r#""max_records":4,"stale_after_ms":1000"#);
    let w1 = |h: &mut Handle| {
        let mut last = 0;
        for v in 0..24u64 {
            last = beat(h, &cfg, &format!("v{v}"), "10.0.0.1:80", 10 * v);
        }
        last
    };
    let w2 = |h: &mut Handle| {
        let mut c = Default::default();
        for t in 0..3u64 {
            prune_tick(h, &cfg, 2, &mut c, 100 * t);
        }
        204
    };
    let writers: [Writer<u16>; 2] = [&w1, &w2];
    let e = explore(&MemoryStore::default, &writers, 1, 0, 150, &|s, r| {
        if r[0] == 204 && choosable(s, &cfg, "v23", 240) != ["10.0.0.1:80"] {
            return Err(format!(
                "last version not choosable: {:?}",
                listed(s, &cfg, 240)
            ));
        }
        quiet_invariants(s, &[&cfg], 240)
    });
    assert_clean("keys_stay_bounded_under_version_churn", &e);
}

/// Defect 4: a heartbeat refused at the cap costs O(1) store operations while a refresh and the
/// prune run beside it; 64 fresh records fill the cap.
#[test]
fn a_refusal_at_the_cap_does_not_scan() {
    let cfg = config("p", r#""max_records":64"#);
    let setup = || {
        let mut s = MemoryStore::default();
        for i in 0..64 {
            assert_eq!(beat(&mut s, &cfg, "1", &format!("10.0.1.{i}:80"), 0), 204);
        }
        s
    };
    let counted = |h: &mut Handle, f: &dyn Fn(&mut Handle) -> u16| {
        let before = h.ops();
        let st = f(h);
        (st, h.ops() - before)
    };
    let w1 = |h: &mut Handle| counted(h, &|h| beat(h, &cfg, "1", "10.0.2.1:80", 10));
    let w2 = |h: &mut Handle| counted(h, &|h| beat(h, &cfg, "1", "10.0.1.7:80", 10));
    let writers: [Writer<(u16, usize)>; 2] = [&w1, &w2];
    let e = explore(&setup, &writers, 1, 3000, 1000, &|s, r| {
        let (refused, ops) = r[0];
        if refused == 429 && ops > 6 {
            return Err(format!("a refused heartbeat cost {ops} store operations"));
        }
        if refused == 204 {
            return Err("a heartbeat past the cap was accepted".into());
        }
        quiet_invariants(s, &[&cfg], 10)
    });
    assert_clean("a_refusal_at_the_cap_does_not_scan", &e);
}

/// Defect 5: an etcd answer with the known revision whose body is cut off is a failed poll:
/// it must not refresh the mirror (its records go stale by the last good poll).
#[test]
fn a_cut_off_etcd_answer_is_a_failed_poll() {
    let cfg = config("p", ETCD);
    let full = range(5, &[kv("p", "1", "127.0.0.1:8081", 5)]);
    let cut: Vec<u8> = full[..full.len() - 20].to_vec();
    let setup = || {
        let mut s = MemoryStore::default();
        assert!(etcd_answer(&mut s, &cfg, Some(&full), 1000));
        assert!(etcd_answer(&mut s, &cfg, Some(&full), 2000));
        s
    };
    let w1 = |h: &mut Handle| etcd_answer(h, &cfg, Some(&cut), 3000);
    let w2 = |h: &mut Handle| beat(h, &cfg, "1", "10.0.0.5:80", 3000) == 204;
    let writers: [Writer<bool>; 2] = [&w1, &w2];
    let e = explore(&setup, &writers, 1, 3000, 1000, &|s, r| {
        if r[0] {
            return Err("a cut-off answer counted as a successful poll".into());
        }
        // Fresh until 2000 + 3000 by the last good poll, not by the cut-off one.
        if !choosable(s, &cfg, "1", 5000)
            .iter()
            .all(|a| a != "127.0.0.1:8081")
        {
            return Err("the cut-off answer refreshed the mirror".into());
        }
        quiet_invariants(s, &[&cfg], 3000)
    });
    assert_clean("a_cut_off_etcd_answer_is_a_failed_poll", &e);
}

/// Defect 5: a late answer of revision 5 lands with the answer of revision 6, in which key 8081
/// is deleted: whatever the order, 8081 does not come back.
#[test]
fn a_late_etcd_answer_does_not_bring_deleted_keys_back() {
    let cfg = config("p", ETCD);
    let k1 = kv("p", "1", "127.0.0.1:8081", 3);
    let k2 = kv("p", "1", "127.0.0.1:8082", 4);
    let k2b = kv("p", "2", "127.0.0.1:8082", 5);
    let rev4 = range(4, &[k1.clone(), k2]);
    let rev5 = range(5, &[k1, k2b.clone()]);
    let rev6 = range(6, &[k2b]);
    let setup = || {
        let mut s = MemoryStore::default();
        assert!(etcd_answer(&mut s, &cfg, Some(&rev4), 1000));
        s
    };
    let w1 = |h: &mut Handle| etcd_answer(h, &cfg, Some(&rev6), 2000);
    let w2 = |h: &mut Handle| etcd_answer(h, &cfg, Some(&rev5), 2000);
    let writers: [Writer<bool>; 2] = [&w1, &w2];
    let e = explore(&setup, &writers, 1, 0, 600, &|s, r| {
        // Once revision 6 was applied, 8081 is gone for good, whatever came after it.
        if r[0] && !choosable(s, &cfg, "1", 2000).is_empty() {
            return Err(format!(
                "a deleted key came back: {:?}",
                listed(s, &cfg, 2000)
            ));
        }
        if r[0] && choosable(s, &cfg, "2", 2000) != ["127.0.0.1:8082"] {
            return Err(format!(
                "8082 not at version 2: {:?}",
                listed(s, &cfg, 2000)
            ));
        }
        quiet_invariants(s, &[&cfg], 2000)
    });
    assert_clean("a_late_etcd_answer_does_not_bring_deleted_keys_back", &e);
}

/// Defect 5: a lookup of an unchanged members list does not copy the list again (the cache
/// keeps it decoded; only a small generation is read).
#[test]
fn an_unchanged_members_list_is_not_copied_at_every_lookup() {
    let cfg = config("p", r#""max_records":1000"#);
    let mut s = MemoryStore::default();
    for i in 0..500 {
        assert_eq!(
            beat(
                &mut s,
                &cfg,
                "1",
                &format!("10.0.{}.{}:80", i / 200, i % 200),
                0
            ),
            204
        );
    }
    let bytes = lookup_bytes(&mut s, &cfg, "1", 10);
    println!("interleavings lookup: {bytes} bytes copied by a repeated lookup of 500 members");
    // One slot bucket (a few records) and a generation, not 500 addresses (~7 kB).
    assert!(bytes < 1500, "{bytes} bytes copied");
}

/// §10's "no lost record" with a DELETE and a version change racing a refresh of the same
/// address and the prune.
#[test]
fn no_record_is_lost_between_a_move_a_delete_and_the_prune() {
    let cfg = config("p", r#""max_records":8,"stale_after_ms":1000"#);
    let setup = || {
        let mut s = MemoryStore::default();
        assert_eq!(beat(&mut s, &cfg, "1", "10.0.0.1:80", 0), 204);
        assert_eq!(beat(&mut s, &cfg, "1", "10.0.0.2:80", 0), 204);
        s
    };
    let w1 = |h: &mut Handle| beat(h, &cfg, "2", "10.0.0.1:80", 500);
    let w2 = |h: &mut Handle| delete(h, &cfg, "10.0.0.2:80", 500);
    let w3 = |h: &mut Handle| {
        prune_tick(h, &cfg, 3, &mut Default::default(), 500);
        204
    };
    let writers: [Writer<u16>; 3] = [&w1, &w2, &w3];
    let e = explore(&setup, &writers, 1, 0, 600, &|s, r| {
        if r[0] == 204 && choosable(s, &cfg, "2", 500) != ["10.0.0.1:80"] {
            return Err(format!(
                "moved record not choosable: {:?}",
                listed(s, &cfg, 500)
            ));
        }
        if r[1] == 204 && choosable(s, &cfg, "1", 500).contains(&"10.0.0.2:80".to_string()) {
            return Err(format!(
                "deleted record choosable: {:?}",
                listed(s, &cfg, 500)
            ));
        }
        quiet_invariants(s, &[&cfg], 500)
    });
    assert_clean(
        "no_record_is_lost_between_a_move_a_delete_and_the_prune",
        &e,
    );
}

/// docs/design.md#draining-by-demand: two workers record needs of the same version at once (and
/// one of another version hashed anywhere): every need that was stored is counted, none twice,
/// `last_needed_ms` is the latest stored need, and the keys stay within the bound.
#[test]
fn concurrent_needs_lose_no_count() {
    // A small cap keeps the final checks' prune cycle short.
    let cfg = config("p", r#""max_records":8"#);
    let w1 = |h: &mut Handle| {
        [1000, 1500, 2000]
            .iter()
            .map(|t| (need(h, &cfg, "1", *t), *t))
            .collect::<Vec<_>>()
    };
    let w2 = |h: &mut Handle| {
        vec![
            (need(h, &cfg, "1", 1200), 1200),
            (need(h, &cfg, "2", 1300), 1300),
            (need(h, &cfg, "1", 2500), 2500),
        ]
    };
    let writers: [Writer<Vec<(bool, u64)>>; 2] = [&w1, &w2];
    let e = explore(&MemoryStore::default, &writers, 1, 4000, 1000, &|s, r| {
        let stored_v1: Vec<u64> = r[0]
            .iter()
            .chain([&r[1][0], &r[1][2]])
            .filter(|(ok, _)| *ok)
            .map(|(_, t)| *t)
            .collect();
        let stored_v2 = r[1][1].0;
        let listed = demand_listed(s, &cfg, 3000);
        let mut want = Vec::new();
        if let Some(last) = stored_v1.iter().max() {
            want.push(("1".to_string(), *last, stored_v1.len() as u64));
        }
        if stored_v2 {
            want.push(("2".to_string(), 1300, 1));
        }
        if listed != want {
            return Err(format!("listed {listed:?}, stored needs say {want:?}"));
        }
        quiet_invariants(s, &[&cfg], 3000)
    });
    assert_clean("concurrent_needs_lose_no_count", &e);
}

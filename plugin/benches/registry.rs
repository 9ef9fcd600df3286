//! The registry's cost at fleet scale (targets: lookup < 50 µs and heartbeat ingest
//! ≥ 10,000/s on one worker at 10,000 records; lookup independent of other apps' and versions'
//! records) and one etcd mirror refresh (docs/design.md#etcd-mirror), over the in-memory store, whose `get` copies
//! the value out as Envoy's shared data does. Figures: bench/registry.md.
// A bench (harness = false) is not compiled with cfg(test), so clippy.toml's test exemptions
// do not reach it; it panics on a broken setup like a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{BenchmarkId, Criterion};
    use mixmode::core::config::{Config, Selection};
    use mixmode::core::etcd::{self, b64_encode};
    use mixmode::core::heartbeat::{self, Request};
    use mixmode::core::lookup::{pick, LookupCache, Query};
    use mixmode::core::registry::{self, Ident, MemoryStore, Scope};
    use mixmode::core::select::mix;
    use std::hint::black_box;

    const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
    const NOW: u64 = 1_000_000;

    /// The scope of `cfg()` (the heartbeat benchmarks go through its configuration).
    fn scope() -> Scope {
        Scope::of(&cfg())
    }

    fn put(s: &mut MemoryStore, sc: &Scope, app: &str, version: &str, address: &str) {
        let r = Ident {
            pool: "default",
            app,
            version,
            address,
        };
        registry::upsert(s, sc, &r, NOW).unwrap();
    }

    fn addr(app: usize, i: usize) -> String {
        format!("10.{}.{}.{}:8080", app, i / 250, i % 250 + 1)
    }

    /// `n` records of app "checkout" over versions "1" and "2", plus `others` of other apps.
    fn store(n: usize, others: usize) -> MemoryStore {
        let sc = scope();
        let mut s = MemoryStore::default();
        for i in 0..n {
            let v = if i % 2 == 0 { "1" } else { "2" };
            put(&mut s, &sc, "checkout", v, &addr(0, i));
        }
        for i in 0..others {
            let app = format!("app{}", i % 10);
            let v = if i % 2 == 0 { "1" } else { "2" };
            put(&mut s, &sc, &app, v, &addr(1 + i % 10, i));
        }
        s
    }

    fn query(now_ms: u64) -> Query<'static> {
        Query {
            pool: "default",
            app: "checkout",
            version: "2",
            cross_pool: false,
            selection: Selection::Random,
            now_ms,
        }
    }

    pub fn lookup(c: &mut Criterion) {
        let mut g = c.benchmark_group("lookup");
        let excluded = vec![addr(0, 0)];
        let cases: Vec<(String, usize, usize)> = SIZES
            .iter()
            .map(|n| (format!("{n}"), *n, 0))
            .chain([("10+10000_other_apps".to_string(), 10, 10_000)])
            .chain([("10000+10000_other_apps".to_string(), 10_000, 10_000)])
            .collect();
        let sc = scope();
        for (name, n, others) in cases {
            let mut s = store(n, others);
            let mut cache = LookupCache::default();
            let mut r = 0u64;
            g.bench_function(BenchmarkId::new("random", &name), |b| {
                b.iter(|| {
                    r = r.wrapping_add(1);
                    black_box(
                        pick(&mut s, &sc, &mut cache, &query(NOW), &excluded, mix(r)).unwrap(),
                    )
                })
            });
            // The first lookup after the members bucket changed copies and decodes it again.
            g.bench_function(BenchmarkId::new("random_cold_cache", &name), |b| {
                b.iter(|| {
                    let mut cache = LookupCache::default();
                    r = r.wrapping_add(1);
                    black_box(
                        pick(&mut s, &sc, &mut cache, &query(NOW), &excluded, mix(r)).unwrap(),
                    )
                })
            });
            if n <= 1_000 {
                let mut q = query(NOW);
                q.selection = Selection::Freshest;
                g.bench_function(BenchmarkId::new("freshest", &name), |b| {
                    b.iter(|| black_box(pick(&mut s, &sc, &mut cache, &q, &excluded, 0).unwrap()))
                });
            }
        }
        g.finish();
    }

    fn cfg() -> Config {
        Config::parse(
            br#"{"app":"checkout","heartbeat":{"token":"t0k3n"},
                 "registry":{"max_records":40000,"etcd":{}}}"#,
        )
        .unwrap()
    }

    pub fn heartbeat(c: &mut Criterion) {
        let mut g = c.benchmark_group("heartbeat");
        let cfg = cfg();
        let cases: Vec<(String, usize, usize)> = SIZES
            .iter()
            .map(|n| (format!("{n}"), *n, 0))
            .chain([("10+10000_other_apps".to_string(), 10, 10_000)])
            .collect();
        for (name, n, others) in cases {
            let mut s = store(n, others);
            let bodies: Vec<String> = (0..n)
                .map(|i| {
                    let v = if i % 2 == 0 { "1" } else { "2" };
                    format!(
                        r#"{{"app":"checkout","version":"{v}","address":"{}"}}"#,
                        addr(0, i)
                    )
                })
                .collect();
            let mut i = 0usize;
            let mut now = NOW;
            // A refresh: the steady state of a fleet, every server every few seconds.
            g.bench_function(BenchmarkId::new("refresh", &name), |b| {
                b.iter(|| {
                    i = (i + 7919) % n;
                    now += 1;
                    let req = Request {
                        method: "POST",
                        authorization: Some(b"Bearer t0k3n"),
                        body: bodies[i].as_bytes(),
                        body_too_large: false,
                    };
                    let a = heartbeat::handle(&cfg, &req, &mut s, now);
                    assert_eq!(a.status, 204);
                })
            });
            // A join and a leave: the members list of the version is rewritten twice.
            let newcomer = r#"{"app":"checkout","version":"2","address":"10.99.0.1:8080"}"#;
            g.bench_function(BenchmarkId::new("join_and_leave", &name), |b| {
                b.iter(|| {
                    now += 1;
                    for method in ["POST", "DELETE"] {
                        let req = Request {
                            method,
                            authorization: Some(b"Bearer t0k3n"),
                            body: newcomer.as_bytes(),
                            body_too_large: false,
                        };
                        assert_eq!(heartbeat::handle(&cfg, &req, &mut s, now).status, 204);
                    }
                })
            });
        }
        g.finish();
    }

    fn post(cfg: &Config, s: &mut MemoryStore, body: &str, now: u64) -> u16 {
        let req = Request {
            method: "POST",
            authorization: Some(b"Bearer t0k3n"),
            body: body.as_bytes(),
            body_too_large: false,
        };
        heartbeat::handle(cfg, &req, s, now).status
    }

    /// docs/design.md#registry-invariants: a heartbeat refused at the cap costs O(1) shared-data operations, like a
    /// refresh, whatever the number of records (it used to scan the registry).
    pub fn refusal(c: &mut Criterion) {
        let mut g = c.benchmark_group("at_the_cap");
        let cfg = Config::parse(
            br#"{"app":"checkout","heartbeat":{"token":"t0k3n"},"registry":{"max_records":10000}}"#,
        )
        .unwrap();
        let mut s = MemoryStore::default();
        let bodies: Vec<String> = (0..10_000)
            .map(|i| {
                format!(
                    r#"{{"app":"checkout","version":"2","address":"{}"}}"#,
                    addr(0, i)
                )
            })
            .collect();
        for b in &bodies {
            assert_eq!(post(&cfg, &mut s, b, NOW), 204);
        }
        let newcomer = r#"{"app":"checkout","version":"2","address":"10.99.0.1:8080"}"#;
        // The shared-data operations of each, counted once.
        for (what, body) in [("refused", newcomer), ("refresh", bodies[4321].as_str())] {
            let (r, w) = (s.reads, s.writes);
            let status = post(&cfg, &mut s, body, NOW + 1);
            eprintln!(
                "at_the_cap/{what} at 10,000 records: status {status}, {} reads, {} writes",
                s.reads - r,
                s.writes - w
            );
        }
        let mut now = NOW + 1;
        let mut i = 0usize;
        g.bench_function("refused_at_10000", |b| {
            b.iter(|| assert_eq!(post(&cfg, &mut s, newcomer, now), 429))
        });
        g.bench_function("refresh_at_10000", |b| {
            b.iter(|| {
                i = (i + 7919) % bodies.len();
                now += 1;
                assert_eq!(post(&cfg, &mut s, &bodies[i], now), 204)
            })
        });
        g.finish();
    }

    fn range_answer(n: usize, revision: i64) -> Vec<u8> {
        let kvs: Vec<String> = (0..n)
            .map(|i| {
                let v = if i % 2 == 0 { "1" } else { "2" };
                let a = addr(0, i);
                let key = format!("/mixmode/default/checkout/{v}/{a}");
                let value = format!(
                    r#"{{"address":"{a}","app":"checkout","pool":"default","version":"{v}"}}"#
                );
                format!(
                    r#"{{"key":"{}","create_revision":"{}","mod_revision":"{}","version":"1","value":"{}","lease":"7587883015538218244"}}"#,
                    b64_encode(key.as_bytes()),
                    i + 2,
                    i + 2,
                    b64_encode(value.as_bytes())
                )
            })
            .collect();
        format!(
            r#"{{"header":{{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"{revision}","raft_term":"2"}},"kvs":[{}],"count":"{n}"}}"#,
            kvs.join(",")
        )
        .into_bytes()
    }

    pub fn mirror(c: &mut Criterion) {
        let mut g = c.benchmark_group("etcd_mirror");
        g.sample_size(20);
        let cfg = cfg();
        let e = cfg.registry.etcd.clone().unwrap();
        for n in SIZES {
            let body = range_answer(n, 100);
            let changed = range_answer(n, 101);
            // The first snapshot into an empty registry: every record created and indexed.
            g.bench_function(BenchmarkId::new("first_snapshot", n), |b| {
                b.iter_with_setup(MemoryStore::default, |mut s| {
                    let a = etcd::apply(&mut s, &cfg, &e, Some(200), &body, NOW).unwrap();
                    assert_eq!(a.records, n);
                })
            });
            // A new revision over the same keys: decoded, checked and diffed, nothing rewritten.
            let mut s = MemoryStore::default();
            etcd::apply(&mut s, &cfg, &e, Some(200), &body, NOW).unwrap();
            let mut flip = false;
            let mut now = NOW;
            g.bench_function(BenchmarkId::new("changed_revision", n), |b| {
                b.iter(|| {
                    flip = !flip;
                    now += 1;
                    let which = if flip { &changed } else { &body };
                    let a = etcd::apply(&mut s, &cfg, &e, Some(200), which, now).unwrap();
                    assert!(a.full);
                })
            });
            // The same revision: the body is checked whole (not decoded) and one key written.
            g.bench_function(BenchmarkId::new("same_revision", n), |b| {
                b.iter(|| {
                    now += 1;
                    let a = etcd::apply(&mut s, &cfg, &e, Some(200), &body, now).unwrap();
                    black_box(a);
                })
            });
        }
        g.finish();
    }
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_group!(
    benches,
    native::lookup,
    native::heartbeat,
    native::refusal,
    native::mirror
);
#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(benches);

#[cfg(target_arch = "wasm32")]
fn main() {}

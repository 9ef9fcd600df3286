//! The scenarios' adapter for the registry API as it was before the registry rework (main at abb2f7f): swapped
//! in for `api.rs` (and `MemoryStore::bytes_read` added) to count the violations of the code
//! before the fix. Not compiled against today's code.
//! The registry as the scenarios use it: through the same entry points the filter calls
//! (heartbeat requests, etcd answers, the prune tick, lookups). Only this file knows the
//! registry's Rust API, so the scenarios read the same before and after a change of it.

use mixmode::core::config::{Config, Selection};
use mixmode::core::heartbeat::{self, Request};
use mixmode::core::lookup::{pick, LookupCache, Query};
use mixmode::core::registry::{self, Limits, PruneCursor, Slot};
use mixmode::core::lease;
use mixmode::core::store::{MemoryStore, SharedStore};
use mixmode::core::etcd;

pub const TOKEN: &str = "s3cret-token";

/// A configuration of app "checkout" in `pool`; `registry` is the inside of its registry object.
pub fn config(pool: &str, registry: &str) -> Config {
    let text = format!(
        r#"{{"app":"checkout","pool":"{pool}","heartbeat":{{"token":"{TOKEN}"}},
            "registry":{{{registry}}}}}"#
    );
    match Config::parse(text.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}"),
    }
}

fn request<S: SharedStore>(
    store: &mut S,
    cfg: &Config,
    method: &str,
    body: &str,
    now: u64,
) -> heartbeat::Answer {
    let auth = format!("Bearer {TOKEN}");
    let req = Request {
        method,
        authorization: Some(auth.as_bytes()),
        body: body.as_bytes(),
        body_too_large: false,
    };
    heartbeat::handle(cfg, &req, store, now)
}

/// A push heartbeat (POST) of `address` as `version` in the configuration's pool: its status.
pub fn beat<S: SharedStore>(
    store: &mut S,
    cfg: &Config,
    version: &str,
    address: &str,
    now: u64,
) -> u16 {
    let body = format!(r#"{{"app":"checkout","version":"{version}","address":"{address}"}}"#);
    request(store, cfg, "POST", &body, now).status
}

/// A DELETE of `address`: its status.
pub fn delete<S: SharedStore>(store: &mut S, cfg: &Config, address: &str, now: u64) -> u16 {
    let body = format!(r#"{{"app":"checkout","address":"{address}"}}"#);
    request(store, cfg, "DELETE", &body, now).status
}

/// The operators' listing (GET): (pool, version, address) of every fresh record.
pub fn listed(store: &mut MemoryStore, cfg: &Config, now: u64) -> Vec<(String, String, String)> {
    let a = request(store, cfg, "GET", "", now);
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    let mut out: Vec<(String, String, String)> = v["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["pool"].as_str().unwrap_or("").to_string(),
                r["version"].as_str().unwrap_or("").to_string(),
                r["address"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn limits(cfg: &Config) -> Limits {
    Limits { stale_after_ms: cfg.registry.stale_after_ms, max_records: cfg.registry.max_records }
}

/// Every address a lookup of the configuration can choose for `version` at `now`.
pub fn choosable<S: SharedStore>(store: &mut S, cfg: &Config, version: &str, now: u64) -> Vec<String> {
    let mut cache = LookupCache::default();
    let mut out: Vec<String> = Vec::new();
    loop {
        let q = Query {
            pool: &cfg.pool,
            app: &cfg.app,
            version,
            cross_pool: cfg.registry.cross_pool,
            selection: Selection::Random,
            now_ms: now,
            stale_after_ms: cfg.registry.stale_after_ms,
        };
        match pick(store, &mut cache, &q, &out, 7) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => break,
            Err(e) => panic!("lookup failed: {e:?}"),
        }
    }
    out.sort();
    out
}

pub fn lookup_bytes(store: &mut MemoryStore, cfg: &Config, version: &str, now: u64) -> usize {
    let mut cache = LookupCache::default();
    let q = Query {
        pool: &cfg.pool,
        app: &cfg.app,
        version,
        cross_pool: false,
        selection: Selection::Random,
        now_ms: now,
        stale_after_ms: cfg.registry.stale_after_ms,
    };
    let _ = pick(store, &mut cache, &q, &[], 3);
    let before = store.bytes_read;
    let _ = pick(store, &mut cache, &q, &[], 5);
    store.bytes_read - before
}

pub fn etcd_answer<S: SharedStore>(store: &mut S, cfg: &Config, body: Option<&[u8]>, now: u64) -> bool {
    let Some(e) = &cfg.registry.etcd else {
        panic!("no etcd in the config")
    };
    match body {
        Some(b) => etcd::apply(store, cfg, e, Some(200), b, now).is_ok(),
        None => etcd::apply(store, cfg, e, None, b"", now).is_ok(),
    }
}

/// As filter/poller.rs did it: one lease named "prune", then a prune with budget 2000.
pub fn prune_tick<S: SharedStore>(store: &mut S, cfg: &Config, vm: u32, cursor: &mut PruneCursor, now: u64) {
    let interval = (cfg.registry.stale_after_ms / 2).clamp(500, 5000);
    if lease::claim(store, "prune", vm, now, interval).unwrap_or(false) {
        let _ = registry::prune(store, &limits(cfg), now, cursor, 2000);
    }
}

pub fn prune_cycle(store: &mut MemoryStore, cfg: &Config, now: u64) {
    let mut c = PruneCursor::default();
    for _ in 0..(registry::BUCKETS / registry::BUCKETS_PER_PRUNE) {
        registry::prune(store, &limits(cfg), now, &mut c, usize::MAX).unwrap();
    }
}

pub fn count(store: &mut MemoryStore, _cfg: &Config) -> u64 {
    registry::count(store).unwrap()
}

pub fn stored(store: &mut MemoryStore, _cfg: &Config) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (k, (v, _)) in &store.map {
        if k.starts_with("mixmode/v2/slot/") {
            let b: Vec<Slot> = mixmode::core::store::decode(v);
            out.extend(b.into_iter().map(|s| (s.pool, s.version, s.address)));
        }
    }
    out.sort();
    out
}

/// The bound the fixed layout states: per configuration, its slot buckets (8 for up to 16
/// records), twice its members buckets, 8 well-known keys; plus the VM id counter.
pub fn key_bound(cfgs: &[&Config]) -> usize {
    cfgs.iter()
        .map(|c| {
            let b = (c.registry.max_records.next_power_of_two() as usize / 2).clamp(8, 4096);
            b + 2 * (b / 16).clamp(2, 256) + 8
        })
        .sum::<usize>()
        + 1
}

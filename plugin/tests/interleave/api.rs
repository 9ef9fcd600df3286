//! The registry as the scenarios use it: through the same entry points the filter calls
//! (heartbeat requests, etcd answers, the prune tick, lookups). Only this file knows the
//! registry's Rust API, so the scenarios read the same before and after a change of it.

use mixmode::core::config::{Config, Selection};
use mixmode::core::heartbeat::{self, Request};
use mixmode::core::lookup::{pick, LookupCache, Query};
use mixmode::core::registry::{self, PruneCursor, Scope};
use mixmode::core::store::{MemoryStore, SharedStore};
use mixmode::core::{demand, etcd, jobs};

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

/// Every address a lookup of the configuration can choose for `version` at `now`.
pub fn choosable<S: SharedStore>(
    store: &mut S,
    cfg: &Config,
    version: &str,
    now: u64,
) -> Vec<String> {
    let scope = Scope::of(cfg);
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
        };
        match pick(store, &scope, &mut cache, &q, &out, 7) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => break,
            Err(e) => panic!("lookup failed: {e:?}"),
        }
    }
    out.sort();
    out
}

/// The bytes a lookup of `version` copies out of the store, the second time one VM asks.
pub fn lookup_bytes(store: &mut MemoryStore, cfg: &Config, version: &str, now: u64) -> usize {
    let scope = Scope::of(cfg);
    let mut cache = LookupCache::default();
    let q = Query {
        pool: &cfg.pool,
        app: &cfg.app,
        version,
        cross_pool: false,
        selection: Selection::Random,
        now_ms: now,
    };
    let _ = pick(store, &scope, &mut cache, &q, &[], 3);
    let before = store.bytes_read;
    let _ = pick(store, &scope, &mut cache, &q, &[], 5);
    store.bytes_read - before
}

/// One etcd answer (200 with `body`, or no answer) as the poller hands it over: whether it was
/// applied (an answer dropped as late or concurrent was not).
pub fn etcd_answer<S: SharedStore>(
    store: &mut S,
    cfg: &Config,
    body: Option<&[u8]>,
    now: u64,
) -> bool {
    let Some(e) = &cfg.registry.etcd else {
        panic!("no etcd in the config")
    };
    match body {
        Some(b) => etcd::apply(store, cfg, e, Some(200), b, now).is_ok_and(|a| !a.dropped),
        None => etcd::apply(store, cfg, e, None, b"", now).is_ok(),
    }
}

/// The prune job as a VM's tick runs it (lease claim, then a bounded prune).
pub fn prune_tick<S: SharedStore>(
    store: &mut S,
    cfg: &Config,
    vm: u32,
    cursor: &mut PruneCursor,
    now: u64,
) {
    let _ = jobs::prune_tick(store, &Scope::of(cfg), vm, cursor, now);
}

/// Prunes until a whole cycle ran (what the ticks do over `stale_after_ms`).
pub fn prune_cycle(store: &mut MemoryStore, cfg: &Config, now: u64) {
    let scope = Scope::of(cfg);
    let mut cursor = PruneCursor::default();
    for _ in 0..100_000 {
        match registry::prune(store, &scope, now, &mut cursor) {
            Ok(p) if p.wrapped => return,
            Ok(_) => {}
            Err(e) => panic!("prune failed: {e:?}"),
        }
    }
    panic!("the prune never wrapped");
}

/// The stored record count of the configuration's scope.
pub fn count(store: &mut MemoryStore, cfg: &Config) -> u64 {
    match registry::count(store, &Scope::of(cfg)) {
        Ok(n) => n,
        Err(e) => panic!("count failed: {e:?}"),
    }
}

/// Every record the configuration's buckets hold, fresh or not, indexed or not:
/// (pool, version, address).
pub fn stored(store: &mut MemoryStore, cfg: &Config) -> Vec<(String, String, String)> {
    let scope = Scope::of(cfg);
    let mut out: Vec<(String, String, String)> = registry::stored(store, &scope)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.pool, s.version, s.address))
        .collect();
    out.sort();
    out
}

/// The most shared-data keys the configurations may use together (docs/design.md#registry-invariants).
pub fn key_bound(cfgs: &[&Config]) -> usize {
    cfgs.iter().map(|c| Scope::of(c).max_keys()).sum::<usize>() + registry::GLOBAL_KEYS
}

/// One need of `version` in the configuration's pool (what the filter records on a rescue, a
/// `no-peer` or an affinity-routed request): whether it was stored.
pub fn need<S: SharedStore>(store: &mut S, cfg: &Config, version: &str, now: u64) -> bool {
    let n = demand::Need {
        pool: &cfg.pool,
        app: &cfg.app,
        version,
    };
    demand::record(store, &Scope::of(cfg), &n, now, 1).is_ok()
}

/// The demand listing (`GET ?demand`): (version, last_needed_ms, needed_60s).
pub fn demand_listed(store: &mut MemoryStore, cfg: &Config, now: u64) -> Vec<(String, u64, u64)> {
    let auth = format!("Bearer {TOKEN}");
    let req = Request {
        method: "GET",
        authorization: Some(auth.as_bytes()),
        body: b"",
        body_too_large: false,
    };
    let a = heartbeat::handle_query(cfg, &req, Some(b"demand"), store, now);
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    let mut out: Vec<(String, u64, u64)> = v["demand"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["version"].as_str().unwrap_or("").to_string(),
                d["last_needed_ms"].as_u64().unwrap_or(0),
                d["needed_60s"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

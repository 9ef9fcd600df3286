//! The push heartbeat API (docs/design.md#heartbeat-api) over an in-memory store with Envoy's CAS rules: sequences
//! of requests with any method, authorization and body, and shared-data calls that may fail.
//! Never panics; a 4xx answer other than 429 leaves the store byte-for-byte unchanged; a 429 and a
//! 5xx change nothing a reader sees except what the core guarantees (see `check_failed`); an
//! answer's body is JSON when it is not empty (an error names its reason); an accepted POST is
//! listed and choosable afterwards.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mixmode::core::config::{Config, Selection};
use mixmode::core::heartbeat::{handle, Outcome, Request, MAX_BODY};
use mixmode::core::lookup::{pick, LookupCache, Query};
use mixmode::core::registry::{self, MemoryStore, RecordId, Scope, SharedStore, StoreError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const TOKEN: &str = "s3cret";

/// `MIXMODE_FUZZ_TOLERATE_KNOWN=1` (run.sh --tolerate-known) stops reporting the open finding H2
/// of fuzz/README.md (a 503 at the count write leaves the count low: the cap can be exceeded), so
/// a long run can look for anything else.
fn tolerate_known() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MIXMODE_FUZZ_TOLERATE_KNOWN").is_some_and(|v| v == "1"))
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_records: u8,
    stale_after_ms: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Op {
    method: Method,
    auth: Auth,
    body: Body,
    body_too_large: bool,
    advance_ms: u8,
    fault: Option<Fault>,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Delete,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    Missing,
    Good,
    /// The scheme in another case, with spaces around: still the right token.
    Loose,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Name {
    A,
    B,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Addr {
    /// 10.0.0.x:port — allowed by the default allow-list.
    Private(u8, u16),
    /// 8.8.x.8:port — outside it.
    Public(u8, u16),
    V6Loopback(u16),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Fields {
        app: Name,
        version: Option<Name>,
        address: Addr,
        pool: Option<Name>,
    },
    Raw(Vec<u8>),
}

/// A failure of the shared-data host calls, starting at the n-th call of this request.
#[derive(Arbitrary, Debug)]
struct Fault {
    after_calls: u8,
    kind: FaultKind,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FaultKind {
    /// Other workers keep winning the CAS race: more mismatches than the registry retries.
    CasStorm,
    /// One CAS mismatch (a single lost race, retried).
    OneMismatch,
    /// The host refuses one `set`.
    SetFails,
    /// The host refuses one `get`.
    GetFails,
}

struct FaultyStore {
    inner: MemoryStore,
    calls: usize,
    fault_at: Option<(usize, FaultKind)>,
    storm_left: usize,
}

impl FaultyStore {
    fn fault_now(&mut self) -> Option<FaultKind> {
        let n = self.calls;
        self.calls += 1;
        match self.fault_at {
            Some((at, kind)) if n >= at => Some(kind),
            _ => None,
        }
    }
}

impl SharedStore for FaultyStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        if let Some(FaultKind::GetFails) = self.fault_now() {
            self.fault_at = None;
            return Err(StoreError::Other);
        }
        self.inner.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match self.fault_now() {
            Some(FaultKind::CasStorm) => {
                if self.storm_left == 0 {
                    self.fault_at = None;
                } else {
                    self.storm_left -= 1;
                    return Err(StoreError::CasMismatch);
                }
            }
            Some(FaultKind::OneMismatch) => {
                self.fault_at = None;
                return Err(StoreError::CasMismatch);
            }
            Some(FaultKind::SetFails) => {
                self.fault_at = None;
                return Err(StoreError::Other);
            }
            Some(FaultKind::GetFails) | None => {}
        }
        self.inner.set(key, value, cas)
    }
}

fn name(n: &Name, a: &str, b: &str) -> String {
    match n {
        Name::A => a.into(),
        Name::B => b.into(),
        Name::Any(s) => s.clone(),
    }
}

fn body_bytes(b: &Body) -> Vec<u8> {
    match b {
        Body::Raw(r) => r.clone(),
        Body::Fields {
            app,
            version,
            address,
            pool,
        } => {
            let address = match address {
                Addr::Private(x, port) => format!("10.0.0.{}:{port}", x % 4),
                Addr::Public(x, port) => format!("8.8.{x}.8:{port}"),
                Addr::V6Loopback(port) => format!("[::1]:{port}"),
                Addr::Any(s) => s.clone(),
            };
            let mut v = json!({"app": name(app, "checkout", "billing"), "address": address});
            if let Some(ver) = version {
                v["version"] = json!(name(ver, "1", "2"));
            }
            if let Some(p) = pool {
                v["pool"] = json!(name(p, "pool-a", "pool-b"));
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
    }
}

fn config(max_records: u8, stale_after_ms: u8) -> Config {
    let text = json!({
        "app": "checkout",
        "pool": "pool-a",
        "heartbeat": {"token": TOKEN},
        "registry": {
            "max_records": u32::from(max_records % 4) + 1,
            "stale_after_ms": u64::from(stale_after_ms % 64) + 1,
        },
    });
    match Config::parse(text.to_string().as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz configuration is refused: {e}"),
    }
}

type Id = (String, String, String);

/// What a reader sees: the GET listing, identity -> (version, last_seen), and who a lookup can
/// choose, (pool, app, version, address), for every set the listing or `extra` names.
#[derive(Debug, PartialEq)]
struct View {
    listed: BTreeMap<Id, (String, u64)>,
    choosable: BTreeSet<(String, String, String, String)>,
}

fn view(
    store: &mut MemoryStore,
    scope: &Scope,
    now: u64,
    extra: &[(String, String, String)],
) -> View {
    let records =
        registry::list(store, scope, now).unwrap_or_else(|e| panic!("listing failed: {e:?}"));
    let mut sets: BTreeSet<(String, String, String)> = extra.iter().cloned().collect();
    let mut listed = BTreeMap::new();
    for r in records {
        sets.insert((r.pool.clone(), r.app.clone(), r.version.clone()));
        listed.insert((r.pool, r.app, r.address), (r.version, r.last_seen_ms));
    }
    let mut choosable = BTreeSet::new();
    for (pool, app, version) in sets {
        let mut cache = LookupCache::default();
        let mut found: Vec<String> = Vec::new();
        let q = Query {
            pool: &pool,
            app: &app,
            version: &version,
            cross_pool: false,
            selection: Selection::Random,
            now_ms: now,
        };
        // Excluding each found peer in turn enumerates every choosable one.
        while let Ok(Some(a)) = pick(store, scope, &mut cache, &q, &found, found.len() as u64) {
            assert!(!found.contains(&a), "a lookup chose an excluded peer");
            found.push(a);
            if found.len() > 64 {
                break;
            }
        }
        for a in found {
            choosable.insert((pool.clone(), app.clone(), version.clone(), a));
        }
    }
    View { listed, choosable }
}

/// The identity and version a POST/DELETE body names, as the registry stores them.
fn target(cfg: &Config, body: &[u8]) -> Option<(Id, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let app = v.get("app")?.as_str()?.to_string();
    let pool = v
        .get("pool")
        .and_then(Value::as_str)
        .map_or(cfg.pool.clone(), str::to_string);
    let addr: std::net::SocketAddr = v.get("address")?.as_str()?.parse().ok()?;
    let version = v.get("version").and_then(Value::as_str).map(str::to_string);
    Some(((pool, app, addr.to_string()), version))
}

/// A 429 or 5xx. The core guarantees (fuzz findings H1, fixed at f56d0ad):
/// - every other server is seen as before, except that a record whose indexing an earlier
///   failure left pending may be listed and choosable now (the cap's sweep and the prune heal
///   it); such a record existed in the store before, under the version now shown;
/// - the server the request names is seen as before, or (POST) as announced: its version, seen
///   now; or not at all if the POST created it or changed its version (a record is never shown
///   or chosen under a version its server no longer announces); (DELETE) as before or gone.
/// That the next accepted heartbeat lists it and makes it choosable is checked at the 204.
fn check_failed(
    method: &str,
    me: Option<&(Id, Option<String>)>,
    old_store: &mut MemoryStore,
    before: &View,
    after: &View,
    now: u64,
    scope: &Scope,
) {
    let limits = &scope.limits;
    let is_me = |id: &Id| me.is_some_and(|(m, _)| m == id);
    let healed = |old_store: &mut MemoryStore, id: &Id, version: &str| {
        let rid = RecordId {
            pool: &id.0,
            app: &id.1,
            address: &id.2,
        };
        let slot = registry::find(old_store, scope, &rid).ok().flatten();
        slot.is_some_and(|s| {
            s.version == version && now.saturating_sub(s.last_seen_ms) < limits.stale_after_ms
        })
    };
    for (id, was) in &before.listed {
        if !is_me(id) {
            assert_eq!(
                after.listed.get(id),
                Some(was),
                "a failed request changed another record"
            );
        }
    }
    for (id, (version, _)) in &after.listed {
        if !is_me(id) && !before.listed.contains_key(id) {
            assert!(
                healed(old_store, id, version),
                "a failed request listed a record that was not stored: {id:?}"
            );
        }
    }
    for c in &before.choosable {
        let id = (c.0.clone(), c.1.clone(), c.3.clone());
        if !is_me(&id) {
            assert!(
                after.choosable.contains(c),
                "a failed request made {c:?} unchoosable"
            );
        }
    }
    for c in &after.choosable {
        let id = (c.0.clone(), c.1.clone(), c.3.clone());
        if !is_me(&id) && !before.choosable.contains(c) {
            assert!(
                healed(old_store, &id, &c.2),
                "a failed request made {c:?} choosable"
            );
        }
    }
    let Some((id, announced)) = me else {
        assert_eq!(
            before, after,
            "a failed request without a valid body changed the view"
        );
        return;
    };
    let was = before.listed.get(id);
    let now_seen = after.listed.get(id);
    let mine = |v: &View| -> BTreeSet<String> {
        v.choosable
            .iter()
            .filter(|c| c.0 == id.0 && c.1 == id.1 && c.3 == id.2)
            .map(|c| c.2.clone())
            .collect()
    };
    if method == "POST" {
        let announced = announced.clone().unwrap_or_default();
        let as_announced = now_seen.is_some_and(|(v, seen)| *v == announced && *seen == now);
        let same_version = was.is_some_and(|(v, _)| *v == announced);
        assert!(
            now_seen == was || as_announced || (now_seen.is_none() && !same_version),
            "a failed POST showed {id:?} as {now_seen:?} (was {was:?}, announced {announced})"
        );
        let old = mine(before);
        for v in mine(after) {
            assert!(
                old.contains(&v) || v == announced,
                "a failed POST made {id:?} choosable as {v}"
            );
        }
        if same_version {
            assert!(now_seen.is_some(), "a failed refresh hid {id:?}");
        }
    } else {
        assert!(
            now_seen.is_none() || now_seen == was,
            "a failed DELETE showed {id:?} as {now_seen:?}"
        );
        assert!(
            mine(after).is_subset(&mine(before)),
            "a failed DELETE made {id:?} choosable"
        );
    }
}

fn check_answer_shape(status: u16, body: &str, outcome: Outcome) {
    let ok = (200..300).contains(&status);
    assert_eq!(outcome == Outcome::Rejected, !ok, "{status} {outcome:?}");
    if status == 204 {
        assert!(body.is_empty());
    }
    if !body.is_empty() {
        let v: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => panic!("answer body is not JSON ({e}): {body:?}"),
        };
        if !ok {
            let reason = v.get("error").and_then(Value::as_str).unwrap_or_default();
            assert!(!reason.is_empty(), "{body}");
        }
    }
}

fuzz_target!(|input: Input| {
    let cfg = config(input.max_records, input.stale_after_ms);
    let scope = Scope::of(&cfg);
    let limits = scope.limits;
    let mut store = FaultyStore {
        inner: MemoryStore::default(),
        calls: 0,
        fault_at: None,
        storm_left: 0,
    };
    let mut now: u64 = 1_000;
    for op in input.ops.iter().take(12) {
        now += u64::from(op.advance_ms);
        let method = match &op.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other(m) => m.as_str(),
        };
        let auth: Option<Vec<u8>> = match &op.auth {
            Auth::Missing => None,
            Auth::Good => Some(format!("Bearer {TOKEN}").into_bytes()),
            Auth::Loose => Some(format!(" bEaReR   {TOKEN} \t").into_bytes()),
            Auth::Raw(r) => Some(r.clone()),
        };
        let body = body_bytes(&op.body);
        store.calls = 0;
        store.fault_at = op
            .fault
            .as_ref()
            .map(|f| (usize::from(f.after_calls % 24), f.kind));
        store.storm_left = 40;

        let before = store.inner.map.clone();
        let req = Request {
            method,
            authorization: auth.as_deref(),
            body: &body,
            body_too_large: op.body_too_large,
        };
        let a = handle(&cfg, &req, &mut store, now);
        store.fault_at = None;

        check_answer_shape(a.status, &a.body, a.outcome);
        if auth.is_none() {
            assert_eq!(a.status, 401);
        }
        if op.body_too_large || body.len() > MAX_BODY {
            assert_ne!(a.status, 204);
        }
        if !(200..300).contains(&a.status) {
            if a.status == 429 || a.status >= 500 {
                // At the cap the registry first drops stale records (docs/design.md#the-registry: "dropped at
                // the next write"); a 503 is a host-side failure part-way (fuzz finding H1).
                let me = target(&cfg, &body).filter(|_| method == "POST" || method == "DELETE");
                let extra: Vec<_> = me
                    .iter()
                    .filter_map(|((p, ap, _), v)| v.clone().map(|v| (p.clone(), ap.clone(), v)))
                    .collect();
                let mut old = MemoryStore::default();
                old.map = before;
                let was = view(&mut old, &scope, now, &extra);
                let is = view(&mut store.inner, &scope, now, &extra);
                if a.status == 429 {
                    // The request's record is new (that is why it was refused): never shown.
                    if let Some((id, _)) = &me {
                        assert!(!is.listed.contains_key(id), "a 429 listed its record");
                    }
                }
                check_failed(method, me.as_ref(), &mut old, &was, &is, now, &scope);
                continue;
            }
            assert!(
                store.inner.map == before,
                "a {} answer changed the store: {}",
                a.status,
                a.body
            );
            continue;
        }
        match a.status {
            200 => {
                assert_eq!(method, "GET");
                let v: Value = serde_json::from_str(&a.body).unwrap_or_default();
                let records = v.get("records").and_then(Value::as_array);
                assert!(records.is_some(), "{}", a.body);
                // docs/design.md#the-registry: the store holds at most max_records records.
                assert!(
                    tolerate_known() || records.map_or(0, Vec::len) <= limits.max_records as usize,
                    "more records listed than max_records: {}",
                    a.body
                );
                for r in records.into_iter().flatten() {
                    let last = r.get("last_seen_ms").and_then(Value::as_u64).unwrap_or(0);
                    assert!(
                        now.saturating_sub(last) < limits.stale_after_ms,
                        "stale listed"
                    );
                }
            }
            204 => {
                assert!(method == "POST" || method == "DELETE");
                // The change is visible to the next reader.
                let Body::Fields {
                    app,
                    address,
                    pool,
                    version,
                } = &op.body
                else {
                    continue;
                };
                let Ok(listed) = registry::list(&mut store.inner, &scope, now) else {
                    panic!("listing after an accepted heartbeat failed");
                };
                let app = name(app, "checkout", "billing");
                let pool = pool
                    .as_ref()
                    .map_or("pool-a".to_string(), |p| name(p, "pool-a", "pool-b"));
                let addr: std::net::SocketAddr = match address {
                    Addr::Private(x, port) => format!("10.0.0.{}:{port}", x % 4),
                    Addr::V6Loopback(port) => format!("[::1]:{port}"),
                    Addr::Public(..) => panic!("a public address was accepted"),
                    Addr::Any(s) => s.clone(),
                }
                .parse()
                .unwrap_or_else(|_| panic!("a bad address was accepted"));
                let addr = addr.to_string();
                let mine: Vec<_> = listed
                    .iter()
                    .filter(|r| r.pool == pool && r.app == app && r.address == addr)
                    .collect();
                assert!(
                    tolerate_known() || listed.len() <= limits.max_records as usize,
                    "more records listed than max_records: {listed:?}"
                );
                if method == "POST" {
                    let version = version
                        .as_ref()
                        .map(|v| name(v, "1", "2"))
                        .unwrap_or_default();
                    assert_eq!(mine.len(), 1, "{listed:?}");
                    assert_eq!(
                        mine.first().map(|r| r.version.as_str()),
                        Some(version.as_str())
                    );
                    assert_eq!(mine.first().map(|r| r.last_seen_ms), Some(now));
                    // And a lookup can choose it (after a 503 too: H1).
                    let set = [(pool.clone(), app.clone(), version.clone())];
                    let v = view(&mut store.inner, &scope, now, &set);
                    assert!(
                        v.choosable.contains(&(
                            pool.clone(),
                            app.clone(),
                            version.clone(),
                            addr.clone()
                        )),
                        "an accepted POST is not choosable: {v:?}"
                    );
                } else {
                    assert!(mine.is_empty(), "{listed:?}");
                }
            }
            s => panic!("unexpected success status {s}"),
        }
    }
});

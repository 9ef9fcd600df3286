//! The etcd mirror (docs/design.md#etcd-mirror): one poller per Envoy process reads the keys
//! `<prefix><pool>/<app>/<version>/<ip:port>` through etcd's JSON gateway (`POST /v3/kv/range`)
//! and mirrors them into the shared-data registry, where lookups stay local.
//!
//! - A mirrored record is fresh as long as the mirror is: its `last_seen` is the time of the last
//!   successful poll (`MIRROR_SEEN_KEY`), so a poll of an unchanged snapshot (same
//!   `header.revision`) writes one key, not one per record.
//! - A changed snapshot is diffed against the previous one (kept in shared data: the VM that
//!   polls can change): new keys are put, keys gone are removed at once.
//! - A failed poll changes nothing: the records keep their `last_seen` and go stale by
//!   themselves after `stale_after_ms`; no mass eviction on one failure. An answer that does
//!   not parse whole is a failed poll, even if it starts with the known revision.
//! - Revisions only go forward: an answer older than the applied one (a late answer of a call
//!   another VM made before) is dropped, and one apply at a time writes (a claim in the state
//!   key), so a late snapshot never brings back keys a newer one removed. (If etcd itself went
//!   back, e.g. restored from a backup, the older revision is taken once the applied one is
//!   `stale_after_ms` old.)
//! - Every key is the configuration's (`registry::Scope`): two configurations mirroring one
//!   etcd (the revision is cluster-wide) each keep their own snapshot, state and freshness.
//! - Push and etcd records of one `(pool, app, address)` are one record; when etcd drops the key
//!   the record stays only if a heartbeat refreshed it after the last poll that saw the key
//!   (the latest write wins).

use crate::core::config::{is_token_text, Config, Etcd};
use crate::core::registry::{self, Change, Ident, RecordId, RegistryError, Scope};
use crate::core::store::{self, modify, read, write, SharedStore, StoreError, CREATE_CAS};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;

/// The lease job name of the etcd poller (one per scope).
pub const JOB: &str = "etcd";
const SNAPSHOT: &str = "etcd/snapshot";
/// The snapshot's revision, check time and apply claim, apart from its records: an unchanged
/// poll reads only this.
const STATE: &str = "etcd/state";

/// The key range the mirror reads: its pool's keys, or every pool's with `cross_pool`.
pub fn range_prefix(cfg: &Config, etcd: &Etcd) -> String {
    if cfg.registry.cross_pool {
        etcd.prefix.clone()
    } else {
        format!("{}{}/", etcd.prefix, cfg.pool)
    }
}

pub fn request_headers(etcd: &Etcd) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".to_string()),
        (":path", "/v3/kv/range".to_string()),
        // etcd does not route on it; the cluster name tells operators what the call was.
        (":authority", etcd.cluster.clone()),
        ("content-type", "application/json".to_string()),
    ]
}

pub fn request_body(cfg: &Config, etcd: &Etcd) -> String {
    let prefix = range_prefix(cfg, etcd);
    format!(
        r#"{{"key":"{}","range_end":"{}"}}"#,
        b64_encode(prefix.as_bytes()),
        b64_encode(&prefix_end(prefix.as_bytes()))
    )
}

/// etcd's range end for a prefix: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    vec![0]
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(B64.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity((text.len() / 4).saturating_mul(3));
    let mut acc = 0u32;
    // Bits waiting in `acc`: always below 8 between characters, so never more than 14.
    let mut bits = 0u32;
    for c in text.bytes().take_while(|c| *c != b'=') {
        let v = match B64.iter().position(|b| *b == c) {
            Some(v) => u32::try_from(v).unwrap_or(0),
            None => return None,
        };
        acc = (acc << 6) | v;
        bits = bits.saturating_add(6);
        if let Some(rest) = bits.checked_sub(8) {
            bits = rest;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
            acc &= (1u32 << bits).saturating_sub(1);
        }
    }
    Some(out)
}

/// etcd's gateway writes 64-bit numbers as strings; accept both.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(de::Error::custom),
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct Head {
    header: Header,
}

#[derive(Deserialize)]
struct Range {
    header: Header,
    /// Absent in an empty range: a valid empty snapshot.
    #[serde(default)]
    kvs: Vec<KvJson>,
}

#[derive(Deserialize)]
struct KvJson {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
}

#[derive(Deserialize)]
struct Value {
    pool: String,
    app: String,
    version: String,
    address: String,
}

/// A record etcd lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirrored {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: String,
}

/// The records of the last snapshot applied, in shared data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub records: Vec<Mirrored>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub revision: i64,
    /// When every record was last checked against the registry (0: never).
    pub verified_ms: u64,
    /// An apply in progress: its revision and start. Another answer meanwhile is dropped.
    pub applying: Option<Claim>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub revision: i64,
    pub since_ms: u64,
}

/// `header.revision` of an answer that parses whole (the rest is checked for syntax, not
/// decoded: an unchanged snapshot of 10,000 keys allocates nothing). A body cut off after its
/// header is garbage, never the known revision.
fn revision(body: &[u8]) -> Result<i64, SyncError> {
    serde_json::from_slice::<Head>(body)
        .map(|h| h.header.revision)
        .map_err(|e| SyncError::Garbage(e.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// No answer: etcd unreachable, reset, or timed out.
    NoAnswer,
    Status(u16),
    Garbage(String),
    Store(RegistryError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::NoAnswer => f.write_str("no answer"),
            SyncError::Status(s) => write!(f, "status {s}"),
            SyncError::Garbage(e) => write!(f, "not a range answer: {e}"),
            SyncError::Store(e) => write!(f, "registry: {e:?}"),
        }
    }
}

/// What one successful poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub revision: i64,
    /// The snapshot was decoded and diffed (false: same revision, only `last_seen` moved).
    pub full: bool,
    pub records: usize,
    pub added: usize,
    pub removed: usize,
    /// Keys that were not taken, with why (logged by the glue).
    pub skipped: Vec<String>,
    /// Keys refused by `max_records`.
    pub refused: usize,
    /// Nothing written: the answer was older than the applied revision, or another VM was
    /// applying one.
    pub dropped: bool,
}

/// The records of a range answer; keys whose value does not agree are skipped with a reason.
pub fn decode(
    cfg: &Config,
    etcd: &Etcd,
    body: &[u8],
) -> Result<(i64, Vec<Mirrored>, Vec<String>), SyncError> {
    let range: Range =
        serde_json::from_slice(body).map_err(|e| SyncError::Garbage(e.to_string()))?;
    let mut skipped = Vec::new();
    let mut chosen: Vec<(i64, Mirrored)> = Vec::with_capacity(range.kvs.len());
    let mut at: std::collections::HashMap<(String, String, String), usize> =
        std::collections::HashMap::with_capacity(range.kvs.len());
    for kv in &range.kvs {
        let key = b64_decode(&kv.key).map(|k| String::from_utf8_lossy(&k).into_owned());
        let key_text = key.clone().unwrap_or_else(|| kv.key.clone());
        match check(cfg, etcd, key.as_deref(), &kv.value) {
            Ok(m) => {
                let id = (m.pool.clone(), m.app.clone(), m.address.clone());
                match at.get(&id).and_then(|i| chosen.get_mut(*i)) {
                    // Two keys for one server (it re-registered as another version before its
                    // old lease expired): the latest write wins.
                    Some(prev) => {
                        if kv.mod_revision >= prev.0 {
                            *prev = (kv.mod_revision, m);
                        }
                    }
                    None => {
                        at.insert(id, chosen.len());
                        chosen.push((kv.mod_revision, m));
                    }
                }
            }
            Err(why) => skipped.push(format!("{key_text:?}: {why}")),
        }
    }
    Ok((
        range.header.revision,
        chosen.into_iter().map(|(_, m)| m).collect(),
        skipped,
    ))
}

fn check(
    cfg: &Config,
    etcd: &Etcd,
    key: Option<&str>,
    value_b64: &str,
) -> Result<Mirrored, String> {
    let key = key.ok_or("key is not base64")?;
    let value = b64_decode(value_b64).ok_or("value is not base64")?;
    let v: Value =
        serde_json::from_slice(&value).map_err(|e| format!("value is not a record: {e}"))?;
    for (name, text) in [("pool", &v.pool), ("app", &v.app), ("version", &v.version)] {
        if !is_token_text(text) {
            return Err(format!("bad {name} {text:?}"));
        }
    }
    let expected = format!(
        "{}{}/{}/{}/{}",
        etcd.prefix, v.pool, v.app, v.version, v.address
    );
    if key != expected {
        return Err(format!(
            "value disagrees with the key (value says {expected:?})"
        ));
    }
    if !cfg.registry.cross_pool && v.pool != cfg.pool {
        return Err("another pool".into());
    }
    let addr: SocketAddr = v.address.parse().map_err(|_| "address is not ip:port")?;
    if addr.port() == 0 {
        return Err("address has port 0".into());
    }
    // A registered address receives users' requests: the same rule as push heartbeats.
    if !cfg
        .registry
        .allowed_cidrs
        .iter()
        .any(|n| n.contains(&addr.ip()))
    {
        return Err("address outside registry.allowed_cidrs".into());
    }
    Ok(Mirrored {
        pool: v.pool,
        app: v.app,
        version: v.version,
        address: addr.to_string(),
    })
}

/// What the state says about an answer.
enum Decision {
    /// Same revision, no recheck due: only freshness moves.
    Unchanged,
    Drop,
    /// This VM applies it (the claim is written).
    Apply(State),
}

/// Reads the state and, if the answer is to be applied, claims the apply under CAS.
fn decide<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    etcd: &Etcd,
    rev: i64,
    now_ms: u64,
) -> Result<Decision, RegistryError> {
    let key = scope.key(STATE);
    let stale = scope.limits.stale_after_ms;
    for _ in 0..32 {
        let (state, cas) = match store.get(&key) {
            Ok(Some((bytes, cas))) => (store::decode::<State>(&bytes), cas),
            Ok(None) => (State::default(), CREATE_CAS),
            Err(_) => return Err(RegistryError::Store),
        };
        let prev_seen: u64 = read(store, &scope.mirror_seen_key())?;
        let old = now_ms.saturating_sub(state.verified_ms) >= stale;
        if rev < state.revision && !old {
            return Ok(Decision::Drop);
        }
        // The claim outlives a VM that died applying by one poll interval.
        let hold = etcd.poll_interval_ms.max(1);
        if state
            .applying
            .is_some_and(|c| now_ms.saturating_sub(c.since_ms) < hold)
        {
            return Ok(Decision::Drop);
        }
        // After a gap as long as the stale interval, records may have been pruned; and every
        // stale interval the registry is checked against the snapshot anyway.
        let recheck = state.verified_ms == 0 || old || now_ms.saturating_sub(prev_seen) >= stale;
        if rev == state.revision && !recheck {
            return Ok(Decision::Unchanged);
        }
        let claimed = State {
            applying: Some(Claim {
                revision: rev,
                since_ms: now_ms,
            }),
            ..state
        };
        let bytes = postcard::to_allocvec(&claimed).map_err(|_| RegistryError::Store)?;
        match store.set(&key, &bytes, cas) {
            Ok(()) => return Ok(Decision::Apply(claimed)),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(RegistryError::Store),
        }
    }
    Err(RegistryError::Busy)
}

/// Ends this VM's claim: records the revision applied (or, on failure, only frees the claim).
fn finish<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    ours: Claim,
    applied: Option<u64>,
) -> Result<(), RegistryError> {
    modify(store, &scope.key(STATE), |s: &mut State| {
        if s.applying != Some(ours) {
            // Taken over after our claim expired: the newer claim decides.
            return (false, ());
        }
        s.applying = None;
        if let Some(now_ms) = applied {
            s.revision = ours.revision;
            s.verified_ms = now_ms;
        }
        (true, ())
    })
}

/// Moves the mirror's freshness forward (never back: a late writer must not age the records).
fn seen<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
) -> Result<(), RegistryError> {
    modify(store, &scope.mirror_seen_key(), |t: &mut u64| {
        if *t >= now_ms {
            (false, ())
        } else {
            *t = now_ms;
            (true, ())
        }
    })
}

/// Applies one poll's answer (`status` None: no answer at all). On any error nothing is
/// written but what a partial apply wrote (records, all re-checked at the next poll); the
/// mirror's freshness does not move.
pub fn apply<S: SharedStore + ?Sized>(
    store: &mut S,
    cfg: &Config,
    etcd: &Etcd,
    status: Option<u16>,
    body: &[u8],
    now_ms: u64,
) -> Result<Applied, SyncError> {
    match status {
        None => return Err(SyncError::NoAnswer),
        Some(200) => {}
        Some(s) => return Err(SyncError::Status(s)),
    }
    let rev = revision(body)?;
    let st = SyncError::Store;
    let scope = Scope::of(cfg);
    let claim = match decide(store, &scope, etcd, rev, now_ms).map_err(st)? {
        Decision::Drop => {
            return Ok(Applied {
                revision: rev,
                dropped: true,
                ..Applied::default()
            })
        }
        Decision::Unchanged => {
            seen(store, &scope, now_ms).map_err(st)?;
            return Ok(Applied {
                revision: rev,
                ..Applied::default()
            });
        }
        Decision::Apply(state) => state,
    };
    let Some(ours) = claim.applying else {
        return Err(SyncError::Store(RegistryError::Store));
    };
    let result = apply_snapshot(store, cfg, etcd, &scope, body, now_ms);
    let done = result.as_ref().ok().map(|_| now_ms);
    let finished = finish(store, &scope, ours, done).map_err(st);
    let out = result?;
    finished?;
    seen(store, &scope, now_ms).map_err(st)?;
    Ok(out)
}

/// The diff of a changed snapshot against the previous one, written by the claim's holder.
fn apply_snapshot<S: SharedStore + ?Sized>(
    store: &mut S,
    cfg: &Config,
    etcd: &Etcd,
    scope: &Scope,
    body: &[u8],
    now_ms: u64,
) -> Result<Applied, SyncError> {
    let st = SyncError::Store;
    let prev_seen: u64 = read(store, &scope.mirror_seen_key()).map_err(st)?;
    let (revision, records, skipped) = decode(cfg, etcd, body)?;
    let snap: Snapshot = read(store, &scope.key(SNAPSHOT)).map_err(st)?;
    let mut out = Applied {
        revision,
        full: true,
        records: records.len(),
        skipped,
        ..Applied::default()
    };
    let idents: Vec<Ident> = records
        .iter()
        .map(|r| Ident {
            pool: &r.pool,
            app: &r.app,
            version: &r.version,
            address: &r.address,
        })
        .collect();
    let before = registry::count(store, scope).map_err(st)?;
    let refused = registry::put_many(store, scope, &idents, now_ms).map_err(st)?;
    out.refused = refused.iter().filter(|r| **r).count();
    let kept: Vec<Mirrored> = records
        .into_iter()
        .zip(refused)
        .filter(|(_, no)| !no)
        .map(|(r, _)| r)
        .collect();
    let ids: HashSet<RecordId> = kept
        .iter()
        .map(|r| RecordId {
            pool: &r.pool,
            app: &r.app,
            address: &r.address,
        })
        .collect();
    let gone: Vec<RecordId> = snap
        .records
        .iter()
        .map(|r| RecordId {
            pool: &r.pool,
            app: &r.app,
            address: &r.address,
        })
        .filter(|id| !ids.contains(id))
        .collect();
    out.removed = registry::change_many(store, scope, &gone, now_ms, |e| {
        if !e.etcd {
            Change::Keep
        } else if e.last_seen_ms > prev_seen {
            // A heartbeat came after the last poll that saw the key: it is the latest write.
            e.etcd = false;
            Change::Update
        } else {
            Change::Remove
        }
    })
    .map_err(st)?;
    let after = registry::count(store, scope).map_err(st)?;
    out.added = usize::try_from(
        after
            .saturating_add(u64::try_from(out.removed).unwrap_or(u64::MAX))
            .saturating_sub(before),
    )
    .unwrap_or(0);
    write(store, &scope.key(SNAPSHOT), &Snapshot { records: kept }).map_err(st)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::{list, upsert};
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

    fn kv(pool: &str, app: &str, version: &str, address: &str, rev: i64) -> String {
        let key = format!("/mixmode/{pool}/{app}/{version}/{address}");
        let value = format!(
            r#"{{"address":"{address}","app":"{app}","pool":"{pool}","version":"{version}"}}"#
        );
        raw_kv(&key, &value, rev)
    }

    fn raw_kv(key: &str, value: &str, rev: i64) -> String {
        format!(
            r#"{{"key":"{}","create_revision":"{rev}","mod_revision":"{rev}","version":"1","value":"{}","lease":"7587883015538218244"}}"#,
            b64_encode(key.as_bytes()),
            b64_encode(value.as_bytes())
        )
    }

    fn answer(revision: i64, kvs: &[String]) -> Vec<u8> {
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
}

//! The registry of peers in proxy-wasm shared data (design.md §4).
//!
//! Key layout (one store per `vm_id`; the ABI has no delete, so the number of keys must stay
//! bounded by what exists, never by how often it changes):
//! - `mixmode/v1/apps`: every `(pool, app)` ever registered (for the operators' listing);
//! - `mixmode/v1/versions/<pool><app>`: the versions of that `(pool, app)` that have records, so a
//!   server changing version is removed from its old set and DELETE finds it;
//! - `mixmode/v1/set/<pool><app><version>`: the records of one set: the only key a lookup reads,
//!   and the key a heartbeat rewrites;
//! - `mixmode/v1/count`: how many records are stored (the `max_records` cap, the gauge).
//!
//! Each part is length-prefixed (`7:pool-a`), so no value can forge another key.
//! Every write is a compare-and-swap read-modify-write, retried on a CAS mismatch.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The store: proxy-wasm shared data in the filter, a map in tests.
pub trait SharedStore {
    /// The value and CAS of `key`, None when the key was never written.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's CAS is still `cas` (see `CREATE_CAS`).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Other,
}

/// The CAS used to create a key that was absent. Envoy writes unconditionally with CAS 0, and
/// writes with any non-zero CAS to an absent key; to an existing key only when the CAS matches.
/// A non-zero CAS no live key carries thus means "create only if still absent": two workers
/// creating the same key cannot overwrite each other.
pub const CREATE_CAS: u32 = u32::MAX;

/// How often a read-modify-write is retried on CAS mismatches before giving up.
const MAX_TRIES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub address: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

impl Entry {
    pub fn is_fresh(&self, now_ms: u64, stale_after_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) < stale_after_ms
    }
}

/// A record as the operators' listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryError {
    /// `max_records` reached and the address is new.
    Full,
    /// Too many CAS mismatches in a row.
    Busy,
    /// The host refused a shared-data call.
    Store,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stale_after_ms: u64,
    pub max_records: u32,
}

fn part(out: &mut String, s: &str) {
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
}

pub const APPS_KEY: &str = "mixmode/v1/apps";
pub const COUNT_KEY: &str = "mixmode/v1/count";

pub fn versions_key(pool: &str, app: &str) -> String {
    let mut k = String::from("mixmode/v1/versions/");
    part(&mut k, pool);
    part(&mut k, app);
    k
}

pub fn set_key(pool: &str, app: &str, version: &str) -> String {
    let mut k = String::from("mixmode/v1/set/");
    part(&mut k, pool);
    part(&mut k, app);
    part(&mut k, version);
    k
}

fn decode<T: DeserializeOwned + Default>(bytes: &[u8]) -> T {
    // An empty value is a key emptied by a writer; garbage is treated the same way and gets
    // overwritten at the next write instead of wedging the registry.
    if bytes.is_empty() {
        return T::default();
    }
    postcard::from_bytes(bytes).unwrap_or_default()
}

fn read<T: DeserializeOwned + Default, S: SharedStore>(
    store: &mut S,
    key: &str,
) -> Result<T, RegistryError> {
    match store.get(key) {
        Ok(Some((bytes, _))) => Ok(decode(&bytes)),
        Ok(None) => Ok(T::default()),
        Err(_) => Err(RegistryError::Store),
    }
}

/// Compare-and-swap read-modify-write. `f` may run several times (once per try) and must depend
/// only on the value it is given; it returns whether it changed the value, and a result.
fn modify<T, R, S, F>(store: &mut S, key: &str, mut f: F) -> Result<R, RegistryError>
where
    T: Serialize + DeserializeOwned + Default,
    S: SharedStore,
    F: FnMut(&mut T) -> (bool, R),
{
    for _ in 0..MAX_TRIES {
        let (mut value, cas) = match store.get(key) {
            Ok(Some((bytes, cas))) => (decode::<T>(&bytes), cas),
            Ok(None) => (T::default(), CREATE_CAS),
            Err(_) => return Err(RegistryError::Store),
        };
        let (changed, result) = f(&mut value);
        if !changed {
            return Ok(result);
        }
        let bytes = postcard::to_allocvec(&value).map_err(|_| RegistryError::Store)?;
        match store.set(key, &bytes, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(RegistryError::Store),
        }
    }
    Err(RegistryError::Busy)
}

fn add_count<S: SharedStore>(store: &mut S, delta: i64) -> Result<u64, RegistryError> {
    if delta == 0 {
        return read::<u64, S>(store, COUNT_KEY);
    }
    modify(store, COUNT_KEY, |n: &mut u64| {
        *n = n.saturating_add_signed(delta);
        (true, *n)
    })
}

/// Drops stale entries and `address`; returns (address was there, entries removed).
fn drop_from(
    set: &mut Vec<Entry>,
    address: Option<&str>,
    now_ms: u64,
    limits: &Limits,
) -> (bool, usize) {
    let before = set.len();
    let mut had = false;
    set.retain(|e| {
        if Some(e.address.as_str()) == address {
            had = true;
            false
        } else {
            e.is_fresh(now_ms, limits.stale_after_ms)
        }
    });
    (had, before - set.len())
}

/// Removes `address` from the `(pool, app)` sets other than `keep_version`; returns whether it
/// was found anywhere, and the change in the record count.
fn remove_elsewhere<S: SharedStore>(
    store: &mut S,
    limits: &Limits,
    pool: &str,
    app: &str,
    address: &str,
    keep_version: Option<&str>,
    now_ms: u64,
) -> Result<(bool, i64), RegistryError> {
    let vkey = versions_key(pool, app);
    let versions: Vec<String> = read(store, &vkey)?;
    let mut found = false;
    let mut delta = 0i64;
    for v in versions.iter().filter(|v| Some(v.as_str()) != keep_version) {
        let (had, removed, now_empty) =
            modify(store, &set_key(pool, app, v), |set: &mut Vec<Entry>| {
                // Only sets holding the address are rewritten: a heartbeat must not rewrite every set.
                if !set.iter().any(|e| e.address == address) {
                    return (false, (false, 0, set.is_empty()));
                }
                let (had, removed) = drop_from(set, Some(address), now_ms, limits);
                (true, (had, removed, set.is_empty()))
            })?;
        found |= had;
        delta -= i64::try_from(removed).unwrap_or(0);
        if now_empty {
            unindex_version(store, pool, app, v)?;
        }
    }
    Ok((found, delta))
}

/// Takes an emptied set out of the indexes, so that they only list what has records. A writer
/// racing this re-adds its version (and app) at its next heartbeat; lookups never use the
/// indexes, so they are not affected meanwhile.
fn unindex_version<S: SharedStore>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
) -> Result<(), RegistryError> {
    let no_versions_left = modify(store, &versions_key(pool, app), |vs: &mut Vec<String>| {
        let before = vs.len();
        vs.retain(|x| x != version);
        (vs.len() != before, vs.is_empty())
    })?;
    if no_versions_left {
        modify(store, APPS_KEY, |apps: &mut Vec<(String, String)>| {
            let before = apps.len();
            apps.retain(|(p, a)| !(p == pool && a == app));
            (apps.len() != before, ())
        })?;
    }
    Ok(())
}

/// What a heartbeat POST did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    pub created: bool,
    pub records: u64,
}

/// Creates or refreshes the record of `(pool, app, address)` in `version`'s set.
pub fn upsert<S: SharedStore>(
    store: &mut S,
    limits: &Limits,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
    now_ms: u64,
) -> Result<Upserted, RegistryError> {
    let skey = set_key(pool, app, version);
    // The cap is checked before anything is written, so a refused heartbeat changes nothing.
    let present_here = read::<Vec<Entry>, S>(store, &skey)?
        .iter()
        .any(|e| e.address == address);
    if !present_here && !present_in_other_version(store, pool, app, version, address)? {
        let mut count = read::<u64, S>(store, COUNT_KEY)?;
        if count >= u64::from(limits.max_records) {
            count = sweep(store, limits, now_ms)?;
        }
        if count >= u64::from(limits.max_records) {
            return Err(RegistryError::Full);
        }
    }

    modify(store, APPS_KEY, |apps: &mut Vec<(String, String)>| {
        if apps.iter().any(|(p, a)| p == pool && a == app) {
            (false, ())
        } else {
            apps.push((pool.to_string(), app.to_string()));
            (true, ())
        }
    })?;
    modify(store, &versions_key(pool, app), |vs: &mut Vec<String>| {
        if vs.iter().any(|v| v == version) {
            (false, ())
        } else {
            vs.push(version.to_string());
            (true, ())
        }
    })?;
    let (_, mut delta) =
        remove_elsewhere(store, limits, pool, app, address, Some(version), now_ms)?;
    let (created, set_delta) = modify(store, &skey, |set: &mut Vec<Entry>| {
        let before = set.len();
        set.retain(|e| e.address == address || e.is_fresh(now_ms, limits.stale_after_ms));
        let created = match set.iter_mut().find(|e| e.address == address) {
            Some(e) => {
                e.last_seen_ms = now_ms.max(e.last_seen_ms);
                false
            }
            None => {
                set.push(Entry {
                    address: address.to_string(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                });
                true
            }
        };
        let d = i64::try_from(set.len()).unwrap_or(0) - i64::try_from(before).unwrap_or(0);
        (true, (created, d))
    })?;
    delta += set_delta;
    let records = add_count(store, delta)?;
    Ok(Upserted { created, records })
}

fn present_in_other_version<S: SharedStore>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
) -> Result<bool, RegistryError> {
    let versions: Vec<String> = read(store, &versions_key(pool, app))?;
    for v in versions.iter().filter(|v| v.as_str() != version) {
        let set: Vec<Entry> = read(store, &set_key(pool, app, v))?;
        if set.iter().any(|e| e.address == address) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the record of `(pool, app, address)` whatever its version; returns whether it existed
/// and the record count after.
pub fn remove<S: SharedStore>(
    store: &mut S,
    limits: &Limits,
    pool: &str,
    app: &str,
    address: &str,
    now_ms: u64,
) -> Result<(bool, u64), RegistryError> {
    let (found, delta) = remove_elsewhere(store, limits, pool, app, address, None, now_ms)?;
    let records = add_count(store, delta)?;
    Ok((found, records))
}

/// Rewrites every set without its stale entries and recounts; used only when the cap is reached.
fn sweep<S: SharedStore>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
) -> Result<u64, RegistryError> {
    let apps: Vec<(String, String)> = read(store, APPS_KEY)?;
    let mut delta = 0i64;
    for (pool, app) in &apps {
        let versions: Vec<String> = read(store, &versions_key(pool, app))?;
        for v in &versions {
            let (removed, empty) =
                modify(store, &set_key(pool, app, v), |set: &mut Vec<Entry>| {
                    let (_, removed) = drop_from(set, None, now_ms, limits);
                    (removed > 0, (removed, set.is_empty()))
                })?;
            delta -= i64::try_from(removed).unwrap_or(0);
            if empty {
                unindex_version(store, pool, app, v)?;
            }
        }
    }
    add_count(store, delta)
}

/// The stored record count (fresh or not yet dropped).
pub fn count<S: SharedStore>(store: &mut S) -> Result<u64, RegistryError> {
    read::<u64, S>(store, COUNT_KEY)
}

/// Every fresh record, for the operators' GET.
pub fn list<S: SharedStore>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
) -> Result<Vec<Record>, RegistryError> {
    let apps: Vec<(String, String)> = read(store, APPS_KEY)?;
    let mut out = Vec::new();
    for (pool, app) in &apps {
        let versions: Vec<String> = read(store, &versions_key(pool, app))?;
        for version in &versions {
            let set: Vec<Entry> = read(store, &set_key(pool, app, version))?;
            out.extend(
                set.into_iter()
                    .filter(|e| e.is_fresh(now_ms, limits.stale_after_ms))
                    .map(|e| Record {
                        pool: pool.clone(),
                        app: app.clone(),
                        version: version.clone(),
                        address: e.address,
                        first_seen_ms: e.first_seen_ms,
                        last_seen_ms: e.last_seen_ms,
                    }),
            );
        }
    }
    Ok(out)
}

/// Per-VM decoded sets keyed by their CAS: a lookup of an unchanged set does not re-decode.
#[derive(Default)]
pub struct LookupCache {
    sets: HashMap<String, (u32, Vec<Entry>)>,
}

/// Sets a VM keeps decoded; past this the cache starts over (keys are per version, so this is
/// only reached when many versions are looked up).
const CACHE_LIMIT: usize = 64;

impl LookupCache {
    /// The entries of one `(pool, app, version)` set, stale ones included (select filters).
    pub fn entries<S: SharedStore>(
        &mut self,
        store: &mut S,
        pool: &str,
        app: &str,
        version: &str,
    ) -> Result<&[Entry], RegistryError> {
        let key = set_key(pool, app, version);
        let (bytes, cas) = match store.get(&key) {
            Ok(Some(v)) => v,
            Ok(None) => (Vec::new(), 0),
            Err(_) => return Err(RegistryError::Store),
        };
        let fresh_decode = match self.sets.get(&key) {
            Some((c, _)) => *c != cas || cas == 0,
            None => true,
        };
        if fresh_decode {
            if self.sets.len() >= CACHE_LIMIT && !self.sets.contains_key(&key) {
                self.sets.clear();
            }
            self.sets.insert(key.clone(), (cas, decode(&bytes)));
        }
        Ok(self
            .sets
            .get(&key)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[]))
    }
}

/// An in-memory store with Envoy's CAS rules, for tests.
#[derive(Default, Debug)]
pub struct MemoryStore {
    pub map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// Fail the next N `set` calls with a CAS mismatch (simulates another worker writing).
    pub inject_mismatches: usize,
    pub writes: usize,
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.inject_mismatches > 0 {
            self.inject_mismatches -= 1;
            return Err(StoreError::CasMismatch);
        }
        if let Some((_, current)) = self.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.writes += 1;
        self.map
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;

    const L: Limits = Limits {
        stale_after_ms: 1000,
        max_records: 3,
    };

    const BIG: Limits = Limits {
        stale_after_ms: 1000,
        max_records: 100,
    };

    fn addrs(store: &mut MemoryStore, version: &str, now: u64) -> Vec<String> {
        let mut cache = LookupCache::default();
        let mut v: Vec<String> = cache
            .entries(store, "p", "app", version)
            .unwrap()
            .iter()
            .filter(|e| e.is_fresh(now, L.stale_after_ms))
            .map(|e| e.address.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn upsert_creates_then_refreshes() {
        let mut s = MemoryStore::default();
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 100).unwrap();
        assert_eq!(
            u,
            Upserted {
                created: true,
                records: 1
            }
        );
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 500).unwrap();
        assert_eq!(
            u,
            Upserted {
                created: false,
                records: 1
            }
        );
        let recs = list(&mut s, &L, 600).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].first_seen_ms, 100);
        assert_eq!(recs[0].last_seen_ms, 500);
        assert_eq!(recs[0].version, "2");
    }

    #[test]
    fn version_change_moves_the_record() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "1", "10.0.0.1:80", 100).unwrap();
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 200).unwrap();
        assert_eq!(u.records, 1);
        assert!(addrs(&mut s, "1", 200).is_empty());
        assert_eq!(addrs(&mut s, "2", 200), vec!["10.0.0.1:80"]);
        let recs = list(&mut s, &L, 200).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].version, "2");
        // The emptied version is no longer indexed.
        let vs: Vec<String> = read(&mut s, &versions_key("p", "app")).unwrap();
        assert_eq!(vs, vec!["2"]);
    }

    #[test]
    fn stale_records_are_filtered_and_dropped_at_next_write() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 900).unwrap();
        assert_eq!(addrs(&mut s, "2", 1000), vec!["10.0.0.2:80"]);
        assert_eq!(list(&mut s, &L, 1000).unwrap().len(), 1);
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 1001).unwrap();
        assert_eq!(u.records, 1);
        let set: Vec<Entry> = read(&mut s, &set_key("p", "app", "2")).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn remove_deletes_whatever_the_version() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 0).unwrap();
        assert_eq!(
            remove(&mut s, &L, "p", "app", "10.0.0.1:80", 10).unwrap(),
            (true, 1)
        );
        assert_eq!(
            remove(&mut s, &L, "p", "app", "10.0.0.1:80", 10).unwrap(),
            (false, 1)
        );
        assert_eq!(addrs(&mut s, "2", 10), vec!["10.0.0.2:80"]);
    }

    #[test]
    fn cap_refuses_new_addresses_but_not_refreshes() {
        let mut s = MemoryStore::default();
        for i in 1..=3 {
            upsert(&mut s, &L, "p", "app", "2", &format!("10.0.0.{i}:80"), 0).unwrap();
        }
        let before = s.map.clone();
        assert_eq!(
            upsert(&mut s, &L, "p", "app", "2", "10.0.0.9:80", 1).unwrap_err(),
            RegistryError::Full
        );
        assert_eq!(s.map, before, "a refused heartbeat changes nothing");
        assert!(upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 2).is_ok());
        // A version change is not a new record.
        assert!(upsert(&mut s, &L, "p", "app", "3", "10.0.0.2:80", 3).is_ok());
    }

    #[test]
    fn emptied_sets_leave_the_indexes() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "1", "10.0.0.1:80", 0).unwrap();
        remove(&mut s, &L, "p", "app", "10.0.0.1:80", 0).unwrap();
        let vs: Vec<String> = read(&mut s, &versions_key("p", "app")).unwrap();
        let apps: Vec<(String, String)> = read(&mut s, APPS_KEY).unwrap();
        assert!(vs.is_empty() && apps.is_empty());
        // A sweep (at the cap) prunes sets whose records all went stale.
        for i in 1..=3 {
            upsert(&mut s, &L, "p", &format!("a{i}"), "1", "10.0.0.1:80", 0).unwrap();
        }
        upsert(&mut s, &L, "p", "b", "1", "10.0.0.1:80", 5000).unwrap();
        let apps: Vec<(String, String)> = read(&mut s, APPS_KEY).unwrap();
        assert_eq!(apps, vec![("p".to_string(), "b".to_string())]);
        assert_eq!(count(&mut s).unwrap(), 1);
    }

    #[test]
    fn cap_counts_only_fresh_records() {
        let mut s = MemoryStore::default();
        for i in 1..=3 {
            upsert(&mut s, &L, "p", "app", "2", &format!("10.0.0.{i}:80"), 0).unwrap();
        }
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.9:80", 5000).unwrap();
        assert_eq!(
            u,
            Upserted {
                created: true,
                records: 1
            }
        );
    }

    #[test]
    fn cas_mismatches_are_retried() {
        let mut s = MemoryStore {
            inject_mismatches: 5,
            ..Default::default()
        };
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        assert_eq!(addrs(&mut s, "2", 0), vec!["10.0.0.1:80"]);
        s.inject_mismatches = 1000;
        assert_eq!(
            upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 0).unwrap_err(),
            RegistryError::Busy
        );
    }

    /// Two writers that read the same version of a key: the second write fails its CAS, re-reads
    /// and keeps the first writer's record.
    #[test]
    fn concurrent_writers_do_not_lose_updates() {
        struct Racing {
            inner: MemoryStore,
            raced: bool,
        }
        impl SharedStore for Racing {
            fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.inner.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                if !self.raced && key.starts_with("mixmode/v1/set/") {
                    // Another worker slips its record in between our read and our write.
                    self.raced = true;
                    upsert(&mut self.inner, &L, "p", "app", "2", "10.0.0.7:80", 0).unwrap();
                }
                self.inner.set(key, value, cas)
            }
        }
        let mut r = Racing {
            inner: MemoryStore::default(),
            raced: false,
        };
        upsert(&mut r, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        assert_eq!(
            addrs(&mut r.inner, "2", 0),
            vec!["10.0.0.1:80", "10.0.0.7:80"]
        );
        assert_eq!(count(&mut r.inner).unwrap(), 2);
    }

    #[test]
    fn create_does_not_overwrite_a_key_created_meanwhile() {
        let mut s = MemoryStore::default();
        s.set("k", b"other", 0).unwrap();
        assert_eq!(
            s.set("k", b"mine", CREATE_CAS),
            Err(StoreError::CasMismatch)
        );
        assert!(s.set("fresh", b"mine", CREATE_CAS).is_ok());
    }

    #[test]
    fn keys_cannot_be_forged_by_separators() {
        assert_ne!(set_key("a", "b:c", "d"), set_key("a", "b", "c:d"));
        assert_ne!(set_key("a/b", "c", "d"), set_key("a", "b/c", "d"));
    }

    #[test]
    fn garbage_in_a_key_reads_as_empty_and_is_overwritten() {
        let mut s = MemoryStore::default();
        s.set(&set_key("p", "app", "2"), b"\xff\xff\xff", 0)
            .unwrap();
        assert!(addrs(&mut s, "2", 0).is_empty());
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        assert_eq!(addrs(&mut s, "2", 0), vec!["10.0.0.1:80"]);
    }

    #[test]
    fn lookup_cache_reuses_unchanged_sets() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        let mut cache = LookupCache::default();
        assert_eq!(cache.entries(&mut s, "p", "app", "2").unwrap().len(), 1);
        let cas = cache.sets.values().next().unwrap().0;
        assert_eq!(cache.entries(&mut s, "p", "app", "2").unwrap().len(), 1);
        assert_eq!(cache.sets.values().next().unwrap().0, cas);
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 0).unwrap();
        assert_eq!(cache.entries(&mut s, "p", "app", "2").unwrap().len(), 2);
        assert!(cache.entries(&mut s, "p", "app", "9").unwrap().is_empty());
    }

    #[test]
    fn pools_and_apps_are_separate() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &BIG, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        upsert(&mut s, &BIG, "q", "app", "2", "10.0.0.2:80", 0).unwrap();
        upsert(&mut s, &BIG, "p", "other", "2", "10.0.0.3:80", 0).unwrap();
        assert_eq!(addrs(&mut s, "2", 0), vec!["10.0.0.1:80"]);
        assert_eq!(list(&mut s, &BIG, 0).unwrap().len(), 3);
        // Same address in another pool is another record.
        upsert(&mut s, &BIG, "q", "app", "3", "10.0.0.1:80", 0).unwrap();
        assert_eq!(addrs(&mut s, "2", 0), vec!["10.0.0.1:80"]);
    }
}

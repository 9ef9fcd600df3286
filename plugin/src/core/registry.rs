//! The registry of peers in proxy-wasm shared data (docs/design.md#the-registry), laid out for a fleet:
//! a lookup reads one `(pool, app, version)`, a heartbeat writes its own slot.
//!
//! Key layout (one store per `vm_id`; the ABI has no delete, so the number of keys is bounded by
//! what exists, never by how often it changes):
//! - `mixmode/v2/slot/<n>`: the records themselves, in `BUCKETS` buckets by a hash of
//!   `(pool, app, address)`. A refresh rewrites only its bucket (≈ records / 4096 entries), and
//!   the bucket count bounds the keys however addresses churn. The slot is the truth: version and
//!   freshness are read there.
//! - `mixmode/v2/members/<pool><app><version>`: the addresses of one version, an index that
//!   changes only when a record joins, leaves or changes version. A lookup reads it (decoded once
//!   per VM while its CAS is unchanged) and then only the slots of the candidates it tries.
//! - `mixmode/v2/versions/<pool><app>` and `mixmode/v2/apps`: what has members, for the
//!   operators' listing, cross-pool lookups and pruning.
//! - `mixmode/v2/count`: how many records are stored (the `max_records` cap, the gauge).
//! - `mixmode/v2/etcd/seen`: when the etcd mirror last polled successfully; a record listed in
//!   etcd is as fresh as that (see `core::etcd`), so an unchanged snapshot costs one write.
//!
//! Indexes are kept by write-then-check: whoever takes an address out of a members list re-reads
//! its slot afterwards and puts it back if a concurrent writer made it belong there again, so a
//! record is never left unreachable. Lookups verify every candidate against its slot, so a stale
//! index entry costs a read, never a wrong choice. Stale records are pruned by the tick
//! (`prune`), never on the request path.
//!
//! Parts are length-prefixed (`7:pool-a`), so no value can forge another key.

use crate::core::members;
use crate::core::store::{self, modify, read};
use serde::{Deserialize, Serialize};

pub use crate::core::store::{MemoryStore, RegistryError, SharedStore, StoreError, CREATE_CAS};

/// Slot buckets. Past ~4 records a bucket a refresh pays for its neighbours' bytes; 4096 keeps
/// the default cap of 10,000 records at ~2.4 a bucket.
pub const BUCKETS: u32 = 4096;

pub const APPS_KEY: &str = "mixmode/v2/apps";
pub const COUNT_KEY: &str = "mixmode/v2/count";
pub const MIRROR_SEEN_KEY: &str = "mixmode/v2/etcd/seen";

/// One record (docs/design.md#the-registry), identified by `(pool, app, address)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub pool: String,
    pub app: String,
    pub address: String,
    pub version: String,
    pub first_seen_ms: u64,
    /// Last push heartbeat or pull answer; 0 when only etcd lists the record.
    pub last_seen_ms: u64,
    /// Listed in the current etcd snapshot: fresh as long as the mirror is.
    pub etcd: bool,
    /// Written before its indexes, cleared once they list it: a heartbeat that failed between
    /// the two (503) leaves it set, and the server's next heartbeat indexes it (fuzz finding H1).
    pub index_pending: bool,
}

impl Slot {
    fn is(&self, pool: &str, app: &str, address: &str) -> bool {
        self.address == address && self.app == app && self.pool == pool
    }

    /// The record's `last_seen`: its own, or the mirror's last successful poll if etcd lists it.
    pub fn seen_ms(&self, mirror_seen_ms: u64) -> u64 {
        if self.etcd {
            self.last_seen_ms.max(mirror_seen_ms)
        } else {
            self.last_seen_ms
        }
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

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stale_after_ms: u64,
    pub max_records: u32,
}

/// Who writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A push heartbeat or a pull answer: `last_seen` is now.
    Heartbeat,
    /// The etcd mirror: fresh while the mirror is.
    Etcd,
}

/// Freshness at one instant; reads the mirror's time at most once, and only if a record needs it.
pub struct Clock {
    pub now_ms: u64,
    pub stale_after_ms: u64,
    mirror_seen_ms: Option<u64>,
}

impl Clock {
    pub fn new(now_ms: u64, stale_after_ms: u64) -> Self {
        Clock {
            now_ms,
            stale_after_ms,
            mirror_seen_ms: None,
        }
    }

    /// When the etcd mirror last polled successfully (0: never).
    pub fn mirror_ms<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
    ) -> Result<u64, RegistryError> {
        match self.mirror_seen_ms {
            Some(m) => Ok(m),
            None => {
                let m = read::<u64, S>(store, MIRROR_SEEN_KEY)?;
                self.mirror_seen_ms = Some(m);
                Ok(m)
            }
        }
    }

    pub fn seen_ms<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
        slot: &Slot,
    ) -> Result<u64, RegistryError> {
        if !slot.etcd {
            return Ok(slot.last_seen_ms);
        }
        Ok(slot.seen_ms(self.mirror_ms(store)?))
    }

    pub fn is_fresh<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
        slot: &Slot,
    ) -> Result<bool, RegistryError> {
        let seen = self.seen_ms(store, slot)?;
        Ok(self.now_ms.saturating_sub(seen) < self.stale_after_ms)
    }
}

fn part(out: &mut String, s: &str) {
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
}

/// FNV-1a over the length-prefixed identity: the same bucket in every VM (no per-process seed).
fn bucket_of(pool: &str, app: &str, address: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for s in [pool, app, address] {
        for b in s.len().to_le_bytes().iter().chain(s.as_bytes()) {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h % BUCKETS
}

pub fn slot_key(pool: &str, app: &str, address: &str) -> String {
    format!("mixmode/v2/slot/{}", bucket_of(pool, app, address))
}

pub fn members_key(pool: &str, app: &str, version: &str) -> String {
    let mut k = String::from("mixmode/v2/members/");
    part(&mut k, pool);
    part(&mut k, app);
    part(&mut k, version);
    k
}

pub fn versions_key(pool: &str, app: &str) -> String {
    let mut k = String::from("mixmode/v2/versions/");
    part(&mut k, pool);
    part(&mut k, app);
    k
}

/// The record of `(pool, app, address)`, if any.
pub fn find<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    address: &str,
) -> Result<Option<Slot>, RegistryError> {
    let bucket: Vec<Slot> = read(store, &slot_key(pool, app, address))?;
    Ok(bucket.into_iter().find(|e| e.is(pool, app, address)))
}

fn add_count<S: SharedStore + ?Sized>(store: &mut S, delta: i64) -> Result<u64, RegistryError> {
    if delta == 0 {
        return count(store);
    }
    modify(store, COUNT_KEY, |n: &mut u64| {
        *n = n.saturating_add_signed(delta);
        (true, *n)
    })
}

/// The stored record count (fresh or not yet pruned).
pub fn count<S: SharedStore + ?Sized>(store: &mut S) -> Result<u64, RegistryError> {
    read::<u64, S>(store, COUNT_KEY)
}

fn add_to<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    item: &str,
) -> Result<(), RegistryError> {
    modify(store, key, |list: &mut Vec<String>| {
        if list.iter().any(|x| x == item) {
            (false, ())
        } else {
            list.push(item.to_string());
            (true, ())
        }
    })
}

fn remove_from<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    item: &str,
) -> Result<bool, RegistryError> {
    modify(store, key, |list: &mut Vec<String>| {
        let before = list.len();
        list.retain(|x| x != item);
        (list.len() != before, list.is_empty())
    })
}

/// Lists `address` under `version`, and the version and app in their indexes.
fn index<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
) -> Result<(), RegistryError> {
    index_many(store, pool, app, version, &[address])
}

/// Takes `address` out of `version`'s members, then re-reads its slot: a writer that made it
/// belong there meanwhile (it checked the list before our removal) gets it back.
fn unindex<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
) -> Result<(), RegistryError> {
    unindex_many(store, pool, app, version, &[address])
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    pub created: bool,
    pub records: u64,
}

/// A push heartbeat: creates or refreshes the record of `(pool, app, address)` as `version`.
pub fn upsert<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
    now_ms: u64,
) -> Result<Upserted, RegistryError> {
    put(
        store,
        limits,
        pool,
        app,
        version,
        address,
        now_ms,
        Source::Heartbeat,
    )
}

/// Creates or refreshes a record. A refresh of an unchanged version writes its bucket only; a
/// version change moves it between members lists at once (docs/design.md#the-registry).
#[allow(clippy::too_many_arguments)]
pub fn put<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    pool: &str,
    app: &str,
    version: &str,
    address: &str,
    now_ms: u64,
    source: Source,
) -> Result<Upserted, RegistryError> {
    let skey = slot_key(pool, app, address);
    // The cap is checked before anything is written, so a refused record changes nothing.
    let bucket: Vec<Slot> = read(store, &skey)?;
    let mut reserved = false;
    if !bucket.iter().any(|e| e.is(pool, app, address)) {
        let mut n = count(store)?;
        if n >= u64::from(limits.max_records) {
            n = sweep(store, limits, now_ms)?;
        }
        if n >= u64::from(limits.max_records) {
            return Err(RegistryError::Full);
        }
        // Count a new record before its slot exists: a count one too high is corrected by the
        // sweep at the cap, one too low never is (fuzz finding H2: a failed count write after
        // the slot write let every retry past the cap).
        add_count(store, 1)?;
        reserved = true;
    }
    let written = modify(store, &skey, |b: &mut Vec<Slot>| {
        match b.iter_mut().find(|e| e.is(pool, app, address)) {
            Some(e) => {
                let same = e.version == version;
                if source == Source::Etcd && same && e.etcd && !e.index_pending {
                    return (false, (false, None, false));
                }
                let old = std::mem::replace(&mut e.version, version.to_string());
                match source {
                    Source::Heartbeat => e.last_seen_ms = e.last_seen_ms.max(now_ms),
                    Source::Etcd => e.etcd = true,
                }
                e.index_pending |= !same;
                (true, (false, (!same).then_some(old), e.index_pending))
            }
            None => {
                b.push(Slot {
                    pool: pool.to_string(),
                    app: app.to_string(),
                    address: address.to_string(),
                    version: version.to_string(),
                    first_seen_ms: now_ms,
                    last_seen_ms: if source == Source::Heartbeat {
                        now_ms
                    } else {
                        0
                    },
                    etcd: source == Source::Etcd,
                    index_pending: true,
                });
                (true, (true, None, true))
            }
        }
    });
    let (created, old_version, pending) = match written {
        Ok(w) => w,
        Err(e) => {
            if reserved {
                // Best effort: if this fails too, the count is one high until the next sweep.
                let _ = add_count(store, -1);
            }
            return Err(e);
        }
    };
    let records = match (created, reserved) {
        (true, true) => count(store)?,
        (true, false) => add_count(store, 1)?,
        // Another writer created it between our read and our write: give the reservation back.
        (false, true) => add_count(store, -1)?,
        (false, false) => count(store)?,
    };
    if pending {
        index(store, pool, app, version, address)?;
        if let Some(old) = old_version {
            unindex(store, pool, app, &old, address)?;
        }
        indexed(store, &skey, pool, app, address, version)?;
    }
    Ok(Upserted { created, records })
}

/// Clears `index_pending` once the indexes list the record under `version`.
fn indexed<S: SharedStore + ?Sized>(
    store: &mut S,
    skey: &str,
    pool: &str,
    app: &str,
    address: &str,
    version: &str,
) -> Result<(), RegistryError> {
    modify(store, skey, |b: &mut Vec<Slot>| {
        match b
            .iter_mut()
            .find(|e| e.is(pool, app, address) && e.version == version && e.index_pending)
        {
            Some(e) => {
                e.index_pending = false;
                (true, ())
            }
            None => (false, ()),
        }
    })
}

/// What `change` decides for an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Keep,
    Update,
    Remove,
}

/// Applies `f` to the record of `(pool, app, address)` under CAS; returns the record as it was
/// and what was done. A removal updates the count and the members list.
pub fn change<S, F>(
    store: &mut S,
    pool: &str,
    app: &str,
    address: &str,
    mut f: F,
) -> Result<Option<(Slot, Change)>, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Slot) -> Change,
{
    let result = modify(store, &slot_key(pool, app, address), |b: &mut Vec<Slot>| {
        let Some(i) = b.iter().position(|e| e.is(pool, app, address)) else {
            return (false, None);
        };
        let Some(e) = b.get_mut(i) else {
            return (false, None);
        };
        let before = e.clone();
        match f(e) {
            Change::Keep => (false, Some((before, Change::Keep))),
            Change::Update => (true, Some((before, Change::Update))),
            Change::Remove => {
                b.remove(i);
                (true, Some((before, Change::Remove)))
            }
        }
    })?;
    if let Some((old, Change::Remove)) = &result {
        add_count(store, -1)?;
        unindex(store, pool, app, &old.version, address)?;
    }
    Ok(result)
}

/// One record of a batch (the etcd mirror's snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident<'a> {
    pub pool: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    pub address: &'a str,
}

type SetId<'a> = (&'a str, &'a str, &'a str);

/// `put` for many records at once, as the etcd mirror writes them: one slot write per record
/// that changed, but one write per members list, one per index and one of the count for the
/// whole batch (one at a time, a snapshot of 10,000 records rewrote a 5,000-address list 10,000
/// times). Returns which records `max_records` refused.
pub fn put_many<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    records: &[Ident],
    now_ms: u64,
) -> Result<Vec<bool>, RegistryError> {
    let mut n = count(store)?;
    if n >= u64::from(limits.max_records) {
        n = sweep(store, limits, now_ms)?;
    }
    let mut refused = vec![false; records.len()];
    let mut joined: Vec<(SetId, &str)> = Vec::new();
    let mut left: Vec<(SetId, String, &str)> = Vec::new();
    for (r, no) in records.iter().zip(refused.iter_mut()) {
        let room = n < u64::from(limits.max_records);
        let outcome = modify(
            store,
            &slot_key(r.pool, r.app, r.address),
            |b: &mut Vec<Slot>| match b.iter_mut().find(|e| e.is(r.pool, r.app, r.address)) {
                Some(e) if e.etcd && e.version == r.version => (false, (false, None, false)),
                Some(e) => {
                    let old = std::mem::replace(&mut e.version, r.version.to_string());
                    e.etcd = true;
                    let moved = (old != r.version).then_some(old);
                    (true, (false, moved, false))
                }
                None if !room => (false, (false, None, true)),
                None => {
                    b.push(Slot {
                        pool: r.pool.to_string(),
                        app: r.app.to_string(),
                        address: r.address.to_string(),
                        version: r.version.to_string(),
                        first_seen_ms: now_ms,
                        last_seen_ms: 0,
                        etcd: true,
                        // A batch indexes once for all; a failure there is healed by the prune's
                        // bucket walk.
                        index_pending: false,
                    });
                    (true, (true, None, false))
                }
            },
        )?;
        let set = (r.pool, r.app, r.version);
        match outcome {
            (true, _, _) => {
                n = n.saturating_add(1);
                joined.push((set, r.address));
            }
            (false, Some(old), _) => {
                joined.push((set, r.address));
                left.push(((r.pool, r.app, ""), old, r.address));
            }
            (false, None, full) => *no = full,
        }
    }
    let created = joined.len().saturating_sub(left.len());
    if created > 0 {
        add_count(store, i64::try_from(created).unwrap_or(i64::MAX))?;
    }
    joined.sort();
    for group in joined.chunk_by(|a, b| a.0 == b.0) {
        if let Some(((pool, app, version), _)) = group.first() {
            let addresses: Vec<&str> = group.iter().map(|(_, a)| *a).collect();
            index_many(store, pool, app, version, &addresses)?;
        }
    }
    left.sort();
    for group in left.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        if let Some(((pool, app, _), old, _)) = group.first() {
            let addresses: Vec<&str> = group.iter().map(|(_, _, a)| *a).collect();
            unindex_many(store, pool, app, old, &addresses)?;
        }
    }
    Ok(refused)
}

/// `change` for many records at once (the mirror dropping keys gone from etcd); returns how
/// many were removed.
pub fn change_many<S, F>(
    store: &mut S,
    ids: &[(&str, &str, &str)],
    mut f: F,
) -> Result<usize, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Slot) -> Change,
{
    let mut removed: Vec<(String, String, String, &str)> = Vec::new();
    for (pool, app, address) in ids {
        let result = modify(store, &slot_key(pool, app, address), |b: &mut Vec<Slot>| {
            let Some(i) = b.iter().position(|e| e.is(pool, app, address)) else {
                return (false, None);
            };
            let Some(e) = b.get_mut(i) else {
                return (false, None);
            };
            match f(e) {
                Change::Keep => (false, None),
                Change::Update => (true, None),
                Change::Remove => {
                    let old = b.remove(i);
                    (true, Some(old.version))
                }
            }
        })?;
        if let Some(version) = result {
            removed.push((pool.to_string(), app.to_string(), version, address));
        }
    }
    if !removed.is_empty() {
        add_count(
            store,
            i64::try_from(removed.len()).map_or(i64::MIN, i64::wrapping_neg),
        )?;
    }
    removed.sort();
    for group in removed.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2) {
        if let Some((pool, app, version, _)) = group.first() {
            let addresses: Vec<&str> = group.iter().map(|(_, _, _, a)| *a).collect();
            unindex_many(store, pool, app, version, &addresses)?;
        }
    }
    Ok(removed.len())
}

fn index_many<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
    addresses: &[&str],
) -> Result<(), RegistryError> {
    members::add(store, &members_key(pool, app, version), addresses)?;
    add_to(store, &versions_key(pool, app), version)?;
    ensure_app(store, pool, app)
}

fn ensure_app<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
) -> Result<(), RegistryError> {
    modify(store, APPS_KEY, |apps: &mut Vec<(String, String)>| {
        if apps.iter().any(|(p, a)| p == pool && a == app) {
            (false, ())
        } else {
            apps.push((pool.to_string(), app.to_string()));
            (true, ())
        }
    })
}

/// `unindex` for many addresses of one list: one removal, then the same check per address.
fn unindex_many<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
    addresses: &[&str],
) -> Result<(), RegistryError> {
    let key = members_key(pool, app, version);
    members::remove(store, &key, addresses)?;
    let mut back = Vec::new();
    for a in addresses {
        if find(store, pool, app, a)?.is_some_and(|s| s.version == version) {
            back.push(*a);
        }
    }
    if !back.is_empty() {
        members::add(store, &key, &back)?;
    }
    Ok(())
}

/// DELETE: removes the record of `(pool, app, address)` whatever its version; returns whether it
/// existed and the record count after.
pub fn remove<S: SharedStore + ?Sized>(
    store: &mut S,
    _limits: &Limits,
    pool: &str,
    app: &str,
    address: &str,
    _now_ms: u64,
) -> Result<(bool, u64), RegistryError> {
    let found = change(store, pool, app, address, |_| Change::Remove)?.is_some();
    Ok((found, count(store)?))
}

/// Every `(pool, app, version)` that has a members list.
pub fn sets<S: SharedStore + ?Sized>(
    store: &mut S,
) -> Result<Vec<(String, String, String)>, RegistryError> {
    let apps: Vec<(String, String)> = read(store, APPS_KEY)?;
    let mut out = Vec::new();
    for (pool, app) in apps {
        let versions: Vec<String> = read(store, &versions_key(&pool, &app))?;
        for v in versions {
            out.push((pool.clone(), app.clone(), v));
        }
    }
    Ok(out)
}

/// Where a bounded prune stopped: the last set it walked (sets are walked in sorted order, so
/// sets emptied and dropped meanwhile do not shift the walk), and the next slot bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCursor(pub Option<(String, String, String)>, pub u32);

/// Slot buckets a prune run walks: all 4,096 in 16 runs.
pub const BUCKETS_PER_PRUNE: u32 = 256;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub checked: usize,
    pub removed: usize,
    /// The walk reached the last set (the cursor starts over).
    pub wrapped: bool,
}

/// Drops stale records and repairs the indexes, walking members lists from `cursor` until about
/// `budget` addresses were checked. Run from the tick (one VM per process), never per request.
pub fn prune<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
    cursor: &mut PruneCursor,
    budget: usize,
) -> Result<Pruned, RegistryError> {
    let mut all = sets(store)?;
    all.sort();
    let mut out = Pruned::default();
    let mut next = match &cursor.0 {
        Some(last) => all.partition_point(|s| s <= last),
        None => 0,
    };
    let mut clock = Clock::new(now_ms, limits.stale_after_ms);
    while let Some((pool, app, version)) = all.get(next) {
        let mkey = members_key(pool, app, version);
        let listed = members::read(store, &mkey)?.to_vec();
        for address in &listed {
            out.checked = out.checked.saturating_add(1);
            match find(store, pool, app, address)? {
                Some(s) if s.version == *version => {
                    if clock.is_fresh(store, &s)? {
                        continue;
                    }
                    // Re-checked under CAS: a heartbeat that refreshed it meanwhile wins.
                    let mirror = clock.mirror_ms(store)?;
                    let gone = change(store, pool, app, address, |e| {
                        if now_ms.saturating_sub(e.seen_ms(mirror)) < limits.stale_after_ms {
                            Change::Keep
                        } else {
                            Change::Remove
                        }
                    })?;
                    if matches!(gone, Some((_, Change::Remove))) {
                        out.removed = out.removed.saturating_add(1);
                    }
                }
                // Moved to another version or removed: a leftover of this list.
                _ => unindex(store, pool, app, version, address)?,
            }
        }
        drop_empty_set(store, pool, app, version)?;
        cursor.0 = Some((pool.clone(), app.clone(), version.clone()));
        next = next.saturating_add(1);
        if out.checked >= budget {
            break;
        }
    }
    if next >= all.len() {
        cursor.0 = None;
        out.wrapped = true;
    }
    let end = cursor.1.saturating_add(BUCKETS_PER_PRUNE).min(BUCKETS);
    out.removed = out
        .removed
        .saturating_add(walk_buckets(store, limits, now_ms, cursor.1..end)?);
    cursor.1 = if end >= BUCKETS { 0 } else { end };
    Ok(out)
}

/// The other way round: from the records to the lists. A record no list reaches (its VM died
/// between writing the slot and the list, or the list write gave up on CAS) is put back in its
/// list if fresh and dropped if stale, so no failure leaves a record unreachable for good.
fn walk_buckets<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
    buckets: std::ops::Range<u32>,
) -> Result<usize, RegistryError> {
    let mut clock = Clock::new(now_ms, limits.stale_after_ms);
    let mut lists: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    let mut removed = 0usize;
    for b in buckets {
        let bucket: Vec<Slot> = read(store, &format!("mixmode/v2/slot/{b}"))?;
        for e in bucket {
            if !clock.is_fresh(store, &e)? {
                let mirror = clock.mirror_ms(store)?;
                let gone = change(store, &e.pool, &e.app, &e.address, |x| {
                    if now_ms.saturating_sub(x.seen_ms(mirror)) < limits.stale_after_ms {
                        Change::Keep
                    } else {
                        Change::Remove
                    }
                })?;
                removed =
                    removed.saturating_add(usize::from(matches!(gone, Some((_, Change::Remove)))));
                continue;
            }
            let key = members_key(&e.pool, &e.app, &e.version);
            if !lists.contains_key(&key) {
                // A set listed nowhere is never walked by the list side of the prune nor shown
                // by GET: a torn or foreign write of an index must not hide it for good (fuzz
                // finding C1). Both checks are reads unless something is missing.
                add_to(store, &versions_key(&e.pool, &e.app), &e.version)?;
                ensure_app(store, &e.pool, &e.app)?;
                let set = members::read(store, &key)?
                    .iter()
                    .map(str::to_string)
                    .collect();
                lists.insert(key.clone(), set);
            }
            if lists.get(&key).is_some_and(|l| !l.contains(&e.address)) {
                index(store, &e.pool, &e.app, &e.version, &e.address)?;
            }
        }
    }
    Ok(removed)
}

/// Takes an emptied version (and app) out of the indexes, write-then-check like `unindex`.
fn drop_empty_set<S: SharedStore + ?Sized>(
    store: &mut S,
    pool: &str,
    app: &str,
    version: &str,
) -> Result<(), RegistryError> {
    let mkey = members_key(pool, app, version);
    if !members::read(store, &mkey)?.is_empty() {
        return Ok(());
    }
    let vkey = versions_key(pool, app);
    let no_versions = remove_from(store, &vkey, version)?;
    if !members::read(store, &mkey)?.is_empty() {
        add_to(store, &vkey, version)?;
        return Ok(());
    }
    if no_versions {
        modify(store, APPS_KEY, |apps: &mut Vec<(String, String)>| {
            let before = apps.len();
            apps.retain(|(p, a)| !(p == pool && a == app));
            (apps.len() != before, ())
        })?;
        if !read::<Vec<String>, S>(store, &vkey)?.is_empty() {
            modify(store, APPS_KEY, |apps: &mut Vec<(String, String)>| {
                if apps.iter().any(|(p, a)| p == pool && a == app) {
                    (false, ())
                } else {
                    apps.push((pool.to_string(), app.to_string()));
                    (true, ())
                }
            })?;
        }
    }
    Ok(())
}

/// At the cap: prunes everything, then recounts from the buckets themselves (a count that
/// drifted, e.g. after a VM died between two writes, is corrected here).
pub fn sweep<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
) -> Result<u64, RegistryError> {
    prune(
        store,
        limits,
        now_ms,
        &mut PruneCursor::default(),
        usize::MAX,
    )?;
    let mut clock = Clock::new(now_ms, limits.stale_after_ms);
    let mut n = 0u64;
    for b in 0..BUCKETS {
        let key = format!("mixmode/v2/slot/{b}");
        let bucket: Vec<Slot> = read(store, &key)?;
        let mut stale = false;
        for e in &bucket {
            if clock.is_fresh(store, e)? {
                n = n.saturating_add(1);
            } else {
                stale = true;
            }
        }
        // Records no index reaches (lost by a VM that died mid-write) go here.
        if stale {
            let mirror = clock.mirror_ms(store)?;
            modify(store, &key, |b: &mut Vec<Slot>| {
                let before = b.len();
                b.retain(|e| now_ms.saturating_sub(e.seen_ms(mirror)) < limits.stale_after_ms);
                (b.len() != before, ())
            })?;
        }
    }
    if count(store)? != n {
        store::write(store, COUNT_KEY, &n)?;
    }
    Ok(n)
}

/// Every fresh record, for the operators' GET.
pub fn list<S: SharedStore + ?Sized>(
    store: &mut S,
    limits: &Limits,
    now_ms: u64,
) -> Result<Vec<Record>, RegistryError> {
    let mut clock = Clock::new(now_ms, limits.stale_after_ms);
    let mut out = Vec::new();
    for (pool, app, version) in sets(store)? {
        let listed = members::read(store, &members_key(&pool, &app, &version))?.to_vec();
        for address in listed {
            let Some(s) = find(store, &pool, &app, &address)? else {
                continue;
            };
            // A leftover in another version's list is listed once, under its own version.
            if s.version != version || !clock.is_fresh(store, &s)? {
                continue;
            }
            let seen = clock.seen_ms(store, &s)?;
            out.push(Record {
                pool: s.pool,
                app: s.app,
                version: s.version,
                address: s.address,
                first_seen_ms: s.first_seen_ms,
                last_seen_ms: seen,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Selection;
    use crate::core::lookup::{pick, LookupCache, Query};

    const L: Limits = Limits {
        stale_after_ms: 1000,
        max_records: 3,
    };

    const BIG: Limits = Limits {
        stale_after_ms: 1000,
        max_records: 100,
    };

    /// Every address a lookup can return for `version`, at `now`.
    fn addrs(store: &mut MemoryStore, version: &str, now: u64) -> Vec<String> {
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
                stale_after_ms: L.stale_after_ms,
            };
            match pick(store, &mut cache, &q, &out, 7).unwrap() {
                Some(a) => out.push(a),
                None => break,
            }
        }
        out.sort();
        out
    }

    /// A store whose writes to keys starting with `refuse` fail while it is set.
    struct Refusing {
        inner: MemoryStore,
        refuse: Option<&'static str>,
    }

    impl SharedStore for Refusing {
        fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.refuse.is_some_and(|p| key.starts_with(p)) {
                return Err(StoreError::Other);
            }
            self.inner.set(key, value, cas)
        }
    }

    // Fuzz finding H1: the slot was written, its members list refused; the server's next
    // heartbeat (an unchanged version) must index it.
    #[test]
    fn a_record_whose_index_failed_is_indexed_by_its_next_heartbeat() {
        let mut st = Refusing {
            inner: MemoryStore::default(),
            refuse: Some("mixmode/v2/members/"),
        };
        assert!(upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 10).is_err());
        assert!(list(&mut st, &BIG, 10).unwrap().is_empty());
        st.refuse = None;
        upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 20).unwrap();
        assert_eq!(addrs(&mut st.inner, "1", 20), vec!["10.0.0.1:80"]);
        assert_eq!(list(&mut st, &BIG, 20).unwrap().len(), 1);
        // Indexed once: later refreshes write the slot only again.
        let writes = st.inner.writes;
        upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 30).unwrap();
        assert_eq!(st.inner.writes, writes + 1);
    }

    // The same for a version change whose new members list refused the write.
    #[test]
    fn a_version_change_whose_index_failed_is_indexed_by_the_next_heartbeat() {
        let mut st = Refusing {
            inner: MemoryStore::default(),
            refuse: None,
        };
        upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 10).unwrap();
        st.refuse = Some("mixmode/v2/members/");
        assert!(upsert(&mut st, &BIG, "p", "app", "2", "10.0.0.1:80", 20).is_err());
        st.refuse = None;
        upsert(&mut st, &BIG, "p", "app", "2", "10.0.0.1:80", 30).unwrap();
        assert_eq!(addrs(&mut st.inner, "2", 30), vec!["10.0.0.1:80"]);
        assert!(addrs(&mut st.inner, "1", 30).is_empty());
    }

    // Fuzz finding C1: an apps index emptied by a torn or foreign write is rebuilt by the
    // prune's bucket walk while the servers keep heartbeating.
    #[test]
    fn an_emptied_apps_index_is_rebuilt_by_the_prune() {
        let mut st = MemoryStore::default();
        upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 10).unwrap();
        st.set(APPS_KEY, &[], 0).unwrap();
        assert!(list(&mut st, &BIG, 10).unwrap().is_empty());
        let mut cursor = PruneCursor::default();
        for _ in 0..BUCKETS / BUCKETS_PER_PRUNE {
            upsert(&mut st, &BIG, "p", "app", "1", "10.0.0.1:80", 20).unwrap();
            prune(&mut st, &BIG, 20, &mut cursor, usize::MAX).unwrap();
        }
        assert_eq!(list(&mut st, &BIG, 20).unwrap().len(), 1);
    }

    fn members(store: &mut MemoryStore, version: &str) -> Vec<String> {
        let mut m = members::read(store, &members_key("p", "app", version))
            .unwrap()
            .to_vec();
        m.sort();
        m
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
    fn a_refresh_writes_only_its_bucket() {
        let mut s = MemoryStore::default();
        for i in 0..50 {
            upsert(&mut s, &BIG, "p", "app", "2", &format!("10.0.0.{i}:80"), 0).unwrap();
        }
        let before = s.map.clone();
        s.writes = 0;
        upsert(&mut s, &BIG, "p", "app", "2", "10.0.0.7:80", 10).unwrap();
        assert_eq!(s.writes, 1);
        let changed: Vec<&String> = s
            .map
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(changed, vec![&slot_key("p", "app", "10.0.0.7:80")]);
    }

    #[test]
    fn version_change_moves_the_record() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "1", "10.0.0.1:80", 100).unwrap();
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 200).unwrap();
        assert_eq!(u.records, 1);
        assert!(addrs(&mut s, "1", 200).is_empty());
        assert!(members(&mut s, "1").is_empty());
        assert_eq!(addrs(&mut s, "2", 200), vec!["10.0.0.1:80"]);
        let recs = list(&mut s, &L, 200).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].version, "2");
    }

    #[test]
    fn stale_records_are_never_chosen_and_pruned_by_the_tick() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.2:80", 900).unwrap();
        assert_eq!(addrs(&mut s, "2", 1000), vec!["10.0.0.2:80"]);
        assert_eq!(list(&mut s, &L, 1000).unwrap().len(), 1);
        let p = prune(&mut s, &L, 1000, &mut PruneCursor::default(), 100).unwrap();
        assert_eq!((p.checked, p.removed, p.wrapped), (2, 1, true));
        assert_eq!(count(&mut s).unwrap(), 1);
        assert_eq!(members(&mut s, "2"), vec!["10.0.0.2:80"]);
        assert!(find(&mut s, "p", "app", "10.0.0.1:80").unwrap().is_none());
    }

    #[test]
    fn prune_puts_back_a_record_its_list_lost_and_drops_an_unreachable_stale_one() {
        let mut s = MemoryStore::default();
        upsert(&mut s, &BIG, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        upsert(&mut s, &BIG, "p", "app", "2", "10.0.0.2:80", 900).unwrap();
        // Both lost from the list (a VM died between its two writes).
        members::remove(
            &mut s,
            &members_key("p", "app", "2"),
            &["10.0.0.1:80", "10.0.0.2:80"],
        )
        .unwrap();
        assert!(addrs(&mut s, "2", 1000).is_empty());
        let mut c = PruneCursor::default();
        let mut removed = 0;
        for _ in 0..(BUCKETS / BUCKETS_PER_PRUNE) {
            removed += prune(&mut s, &BIG, 1000, &mut c, 100).unwrap().removed;
        }
        assert_eq!(removed, 1);
        assert_eq!(addrs(&mut s, "2", 1000), vec!["10.0.0.2:80"]);
        assert_eq!(count(&mut s).unwrap(), 1);
    }

    #[test]
    fn prune_is_bounded_and_resumes() {
        let mut s = MemoryStore::default();
        for v in 0..5 {
            upsert(
                &mut s,
                &BIG,
                "p",
                "app",
                &v.to_string(),
                &format!("10.0.0.{v}:80"),
                0,
            )
            .unwrap();
        }
        let mut c = PruneCursor::default();
        let p = prune(&mut s, &BIG, 5000, &mut c, 2).unwrap();
        assert_eq!((p.checked, p.removed, p.wrapped), (2, 2, false));
        let p = prune(&mut s, &BIG, 5000, &mut c, 2).unwrap();
        assert_eq!(p.removed, 2);
        let p = prune(&mut s, &BIG, 5000, &mut c, 2).unwrap();
        assert!(p.wrapped);
        assert_eq!(count(&mut s).unwrap(), 0);
        assert!(
            sets(&mut s).unwrap().is_empty(),
            "emptied sets leave the indexes"
        );
        assert!(read::<Vec<(String, String)>, _>(&mut s, APPS_KEY)
            .unwrap()
            .is_empty());
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
        assert_eq!(members(&mut s, "2"), vec!["10.0.0.2:80"]);
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
        assert_eq!(list(&mut s, &L, 5000).unwrap().len(), 1);
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

    /// Another worker writes between our read and our write of every key we touch: CAS makes us
    /// re-read, and nobody's record is lost.
    #[test]
    fn concurrent_writers_do_not_lose_updates() {
        struct Racing {
            inner: MemoryStore,
            next: u32,
        }
        impl SharedStore for Racing {
            fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.inner.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                if self.next < 20 {
                    self.next += 1;
                    let addr = format!("10.0.1.{}:80", self.next);
                    upsert(&mut self.inner, &BIG, "p", "app", "2", &addr, 0).unwrap();
                }
                self.inner.set(key, value, cas)
            }
        }
        let mut r = Racing {
            inner: MemoryStore::default(),
            next: 0,
        };
        upsert(&mut r, &BIG, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        let got = addrs(&mut r.inner, "2", 0);
        assert_eq!(got.len(), 1 + r.next as usize, "{got:?}");
        assert!(got.contains(&"10.0.0.1:80".to_string()));
        assert_eq!(count(&mut r.inner).unwrap(), got.len() as u64);
    }

    /// A record taken out of its members list while a writer puts it back under that version
    /// ends up listed: the remover re-reads the slot after removing.
    #[test]
    fn unindex_races_leave_the_record_reachable() {
        struct Racing {
            inner: MemoryStore,
            fired: bool,
        }
        impl SharedStore for Racing {
            fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.inner.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                let r = self.inner.set(key, value, cas);
                // Right after the move 1 -> 2 took it out of "1"'s list... no: after the slot
                // write of the move, another worker moves it back to "1".
                if !self.fired && key.starts_with("mixmode/v2/slot/") {
                    self.fired = true;
                    upsert(&mut self.inner, &BIG, "p", "app", "1", "10.0.0.1:80", 5).unwrap();
                }
                r
            }
        }
        let mut r = Racing {
            inner: MemoryStore::default(),
            fired: true,
        };
        upsert(&mut r, &BIG, "p", "app", "1", "10.0.0.1:80", 0).unwrap();
        r.fired = false;
        upsert(&mut r, &BIG, "p", "app", "2", "10.0.0.1:80", 1).unwrap();
        let s = find(&mut r.inner, "p", "app", "10.0.0.1:80")
            .unwrap()
            .unwrap();
        let listed = addrs(&mut r.inner, &s.version.clone(), 5);
        assert_eq!(listed, vec!["10.0.0.1:80"], "version {}", s.version);
    }

    #[test]
    fn keys_cannot_be_forged_by_separators() {
        assert_ne!(members_key("a", "b:c", "d"), members_key("a", "b", "c:d"));
        assert_ne!(members_key("a/b", "c", "d"), members_key("a", "b/c", "d"));
    }

    #[test]
    fn garbage_in_a_key_reads_as_empty_and_is_overwritten() {
        let mut s = MemoryStore::default();
        s.set(&slot_key("p", "app", "10.0.0.1:80"), b"\xff\xff\xff", 0)
            .unwrap();
        s.set(&members_key("p", "app", "2"), b"\xff\xff", 0)
            .unwrap();
        assert!(addrs(&mut s, "2", 0).is_empty());
        upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        assert_eq!(addrs(&mut s, "2", 0), vec!["10.0.0.1:80"]);
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
        assert_eq!(count(&mut s).unwrap(), 4);
    }

    #[test]
    fn etcd_records_are_as_fresh_as_the_mirror() {
        let mut s = MemoryStore::default();
        put(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 0, Source::Etcd).unwrap();
        store::write(&mut s, MIRROR_SEEN_KEY, &500u64).unwrap();
        assert_eq!(addrs(&mut s, "2", 1400), vec!["10.0.0.1:80"]);
        assert!(addrs(&mut s, "2", 1500).is_empty());
        let recs = list(&mut s, &L, 1000).unwrap();
        assert_eq!(recs[0].last_seen_ms, 500);
        // A push heartbeat for the same (pool, app, address) is the same record.
        let u = upsert(&mut s, &L, "p", "app", "2", "10.0.0.1:80", 1400).unwrap();
        assert!(!u.created);
        assert_eq!(addrs(&mut s, "2", 2000), vec!["10.0.0.1:80"]);
    }
}

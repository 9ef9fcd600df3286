//! The request path's only registry access: one fresh peer of `(pool, app, version)`. It reads the
//! version's members list (decoded once per VM while its CAS is unchanged) and the slots of the
//! candidates it tries, nothing of other apps or versions.

use crate::core::config::Selection;
use crate::core::members::Members;
use crate::core::registry::{decode_members, find, Clock, RecordId, Scope};
use crate::core::select::mix;
use crate::core::store::{RegistryError, SharedStore};
use std::net::SocketAddr;
use std::rc::Rc;

/// Members buckets a VM keeps decoded; past this the cache starts over.
const CACHE_LIMIT: usize = 64;

/// A members bucket as decoded: each set's addresses, by `(pool, app, version)`.
type Bucket = Rc<Vec<(String, String, String, Rc<Members>)>>;

/// Per-VM decoded members buckets, keyed by the bucket's CAS. A lookup reads the bucket's
/// generation (a few bytes) and copies the bucket itself only when it changed.
#[derive(Default)]
pub struct LookupCache {
    /// By members key: at most `CACHE_LIMIT`, so a list (a HashMap cost the .wasm a copy of
    /// hashbrown, docs/module-size.md).
    buckets: Vec<(String, u32, Bucket)>,
}

impl LookupCache {
    fn bucket<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
        scope: &Scope,
        m: u32,
    ) -> Result<Bucket, RegistryError> {
        let key = scope.members_key_at(m);
        let gen = crate::core::store::read::<u32, S>(store, &scope.members_gen_key_at(m))?;
        let cached = self.buckets.iter().position(|(k, _, _)| *k == key);
        if let Some((_, cas, b)) = cached.and_then(|i| self.buckets.get(i)) {
            if *cas == gen && gen != 0 {
                return Ok(b.clone());
            }
        }
        let Some((bytes, cas)) = store.get(&key).map_err(|_| RegistryError::Store)? else {
            return Ok(Rc::default());
        };
        if self.buckets.len() >= CACHE_LIMIT && cached.is_none() {
            self.buckets.clear();
        }
        let b: Bucket = Rc::new(
            decode_members(&bytes)
                .into_iter()
                .map(|s| {
                    let list = Rc::new(s.list());
                    (s.pool, s.app, s.version, list)
                })
                .collect(),
        );
        match cached.and_then(|i| self.buckets.get_mut(i)) {
            Some(entry) => *entry = (key, cas, b.clone()),
            None => self.buckets.push((key, cas, b.clone())),
        }
        Ok(b)
    }
}

/// What a lookup asks for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub pool: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    /// Look in other pools when the own pool has no candidate (the patent's replicated store).
    pub cross_pool: bool,
    pub selection: Selection,
    pub now_ms: u64,
}

/// One fresh peer of the query not in `exclude` (the server that failed, peers already tried).
/// `random` is a fresh random number from the caller.
pub fn pick<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    cache: &mut LookupCache,
    q: &Query,
    exclude: &[String],
    random: u64,
) -> Result<Option<String>, RegistryError> {
    // Members are stored in canonical form; so is what we compare them with.
    let exclude: Vec<String> = exclude
        .iter()
        .map(|x| {
            x.parse::<SocketAddr>()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| x.clone())
        })
        .collect();
    let mut clock = Clock::new(scope, q.now_ms);
    let bucket = cache.bucket(store, scope, scope.members_bucket(q.app))?;
    let set = |pool: &str| {
        bucket
            .iter()
            .find(|(p, a, v, _)| p == pool && a == q.app && v == q.version)
            .map(|(_, _, _, m)| m.clone())
    };
    if let Some(members) = set(q.pool) {
        if let Some(a) = pick_in(
            store, scope, &members, q, q.pool, &exclude, random, &mut clock,
        )? {
            return Ok(Some(a));
        }
    }
    if !q.cross_pool {
        return Ok(None);
    }
    for (pool, app, version, members) in bucket.iter() {
        if app != q.app || version != q.version || pool == q.pool {
            continue;
        }
        if let Some(a) = pick_in(store, scope, members, q, pool, &exclude, random, &mut clock)? {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn pick_in<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    members: &Members,
    q: &Query,
    pool: &str,
    exclude: &[String],
    random: u64,
    clock: &mut Clock,
) -> Result<Option<String>, RegistryError> {
    let mut usable = |store: &mut S, address: &str| -> Result<Option<u64>, RegistryError> {
        if exclude.iter().any(|x| x == address) {
            return Ok(None);
        }
        let id = RecordId {
            pool,
            app: q.app,
            address,
        };
        let Some(slot) = find(store, scope, &id)? else {
            return Ok(None);
        };
        // The members list is an index: the slot says what the record is now.
        if slot.version != q.version || !clock.is_fresh(store, &slot)? {
            return Ok(None);
        }
        clock.seen_ms(store, &slot).map(Some)
    };
    match q.selection {
        Selection::Random => {
            // A lazy Fisher-Yates walk: usually the first candidate is fresh, so a lookup reads
            // one slot, whatever the set's size.
            let mut order: Vec<u32> =
                (0..u32::try_from(members.len()).unwrap_or(u32::MAX)).collect();
            let mut r = random;
            let mut left = order.len();
            while left > 0 {
                r = mix(r);
                let j =
                    usize::try_from(r.checked_rem(u64::try_from(left).unwrap_or(1)).unwrap_or(0))
                        .unwrap_or(0);
                left = left.saturating_sub(1);
                order.swap(j, left);
                let Some(i) = order.get(left).and_then(|i| usize::try_from(*i).ok()) else {
                    continue;
                };
                let Some(address) = members.get(i) else {
                    continue;
                };
                if usable(store, address)?.is_some() {
                    return Ok(Some(address.to_string()));
                }
            }
            Ok(None)
        }
        Selection::Freshest => {
            // Ties (heartbeats in the same millisecond) go to the latest to join the list: a
            // server that just came back is preferred over one that was there before it.
            let mut best: Option<(u64, &str)> = None;
            for address in members.iter() {
                if let Some(seen) = usable(store, address)? {
                    if best.is_none_or(|(b, _)| seen >= b) {
                        best = Some((seen, address));
                    }
                }
            }
            Ok(best.map(|(_, a)| a.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::{upsert, Ident, Limits};
    use crate::core::store::MemoryStore;
    use std::collections::HashSet;

    const L: Limits = Limits {
        stale_after_ms: 1000,
        max_records: 1000,
    };

    fn sc() -> Scope {
        Scope::new(&["lookup"], L)
    }

    fn up(
        s: &mut MemoryStore,
        pool: &str,
        app: &str,
        version: &str,
        address: &str,
        now: u64,
    ) -> Result<crate::core::registry::Upserted, RegistryError> {
        let r = Ident {
            pool,
            app,
            version,
            address,
        };
        upsert(s, &sc(), &r, now)
    }

    fn q<'a>(pool: &'a str, version: &'a str, selection: Selection, now: u64) -> Query<'a> {
        Query {
            pool,
            app: "app",
            version,
            cross_pool: false,
            selection,
            now_ms: now,
        }
    }

    #[test]
    fn freshest_takes_the_latest_heartbeat() {
        let mut s = MemoryStore::default();
        for (a, t) in [("10.0.0.1:80", 5), ("10.0.0.2:80", 9), ("10.0.0.3:80", 7)] {
            up(&mut s, "p", "app", "2", a, t).unwrap();
        }
        let mut c = LookupCache::default();
        let got = pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Freshest, 10),
            &[],
            0,
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("10.0.0.2:80"));
    }

    #[test]
    fn freshest_ties_go_to_the_latest_to_join() {
        let mut s = MemoryStore::default();
        up(&mut s, "p", "app", "2", "10.0.0.9:80", 7).unwrap();
        up(&mut s, "p", "app", "2", "10.0.0.1:80", 7).unwrap();
        let mut c = LookupCache::default();
        let got = pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Freshest, 8),
            &[],
            0,
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("10.0.0.1:80"));
    }

    #[test]
    fn random_reaches_every_candidate_and_skips_excluded_and_stale() {
        let mut s = MemoryStore::default();
        for (a, t) in [
            ("10.0.0.1:80", 500),
            ("10.0.0.2:80", 500),
            ("10.0.0.3:80", 500),
            ("10.0.0.4:80", 0),
        ] {
            up(&mut s, "p", "app", "2", a, t).unwrap();
        }
        let mut c = LookupCache::default();
        let ex = vec!["10.0.0.3:80".to_string()];
        let seen: HashSet<String> = (0..64)
            .map(|i| {
                pick(
                    &mut s,
                    &sc(),
                    &mut c,
                    &q("p", "2", Selection::Random, 1200),
                    &ex,
                    mix(i),
                )
                .unwrap()
                .unwrap()
            })
            .collect();
        assert_eq!(
            seen,
            HashSet::from(["10.0.0.1:80".to_string(), "10.0.0.2:80".to_string()])
        );
    }

    #[test]
    fn exclusion_compares_addresses_not_spellings() {
        let mut s = MemoryStore::default();
        up(&mut s, "p", "app", "2", "[::1]:80", 5).unwrap();
        let mut c = LookupCache::default();
        let ex = vec!["[0:0:0:0:0:0:0:1]:80".to_string()];
        assert!(pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 5),
            &ex,
            1
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn a_lookup_reads_only_its_own_set() {
        let mut s = MemoryStore::default();
        up(&mut s, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        for i in 0..200 {
            up(&mut s, "p", "other", "2", &format!("10.1.0.{i}:80"), 0).unwrap();
            up(&mut s, "p", "app", "1", &format!("10.2.0.{i}:80"), 0).unwrap();
        }
        let mut c = LookupCache::default();
        pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 0),
            &[],
            3,
        )
        .unwrap();
        s.reads = 0;
        let got = pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 0),
            &[],
            4,
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(s.reads, 2, "the members generation + one slot");
    }

    #[test]
    fn cross_pool_prefers_the_own_pool() {
        let mut s = MemoryStore::default();
        up(&mut s, "q", "app", "2", "10.0.0.9:80", 0).unwrap();
        let mut c = LookupCache::default();
        let mut query = q("p", "2", Selection::Random, 0);
        assert!(pick(&mut s, &sc(), &mut c, &query, &[], 0)
            .unwrap()
            .is_none());
        query.cross_pool = true;
        assert_eq!(
            pick(&mut s, &sc(), &mut c, &query, &[], 0)
                .unwrap()
                .as_deref(),
            Some("10.0.0.9:80")
        );
        up(&mut s, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        for r in 0..10 {
            assert_eq!(
                pick(&mut s, &sc(), &mut c, &query, &[], r)
                    .unwrap()
                    .as_deref(),
                Some("10.0.0.1:80")
            );
        }
    }

    #[test]
    fn cache_follows_changes() {
        let mut s = MemoryStore::default();
        let mut c = LookupCache::default();
        assert!(pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 0),
            &[],
            0
        )
        .unwrap()
        .is_none());
        up(&mut s, "p", "app", "2", "10.0.0.1:80", 0).unwrap();
        assert!(pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 0),
            &[],
            0
        )
        .unwrap()
        .is_some());
        up(&mut s, "p", "app", "3", "10.0.0.1:80", 1).unwrap();
        assert!(pick(
            &mut s,
            &sc(),
            &mut c,
            &q("p", "2", Selection::Random, 1),
            &[],
            0
        )
        .unwrap()
        .is_none());
    }
}

//! Reading records: one by its identity (a slot bucket), or all of them (every slot bucket: the
//! operators' GET and tests, never a heartbeat or a lookup).

use crate::core::registry::{Clock, Record, RecordId, Scope, Slot};
use crate::core::store::{read, RegistryError, SharedStore};

/// The record of `id`, if any.
pub fn find<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    id: &RecordId,
) -> Result<Option<Slot>, RegistryError> {
    let bucket: Vec<Slot> = read(store, &scope.slot_key(id.pool, id.app, id.address))?;
    Ok(bucket.into_iter().find(|e| e.is(id)))
}

/// Every record the scope stores, fresh or not, indexed or not.
pub fn stored<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
) -> Result<Vec<Slot>, RegistryError> {
    let mut out = Vec::new();
    for n in 0..scope.slot_buckets {
        let bucket: Vec<Slot> = read(store, &scope.slot_key_at(n))?;
        out.extend(bucket);
    }
    Ok(out)
}

/// Every fresh record a lookup can reach, for the operators' GET.
pub fn list<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
) -> Result<Vec<Record>, RegistryError> {
    let mut clock = Clock::new(scope, now_ms);
    let mut out = Vec::new();
    for s in stored(store, scope)? {
        // Not yet in its index (its heartbeat failed half way): no lookup can choose it.
        if s.index_pending || !clock.is_fresh(store, &s)? {
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
    Ok(out)
}

//! Writing records: one (a heartbeat, a pull answer), many (an etcd snapshot), removals.
//! A new record takes its place under the cap before it is written (`count::reserve`); a
//! removal is counted after the record is gone.

use crate::core::registry::count::{release, reserve};
use crate::core::registry::index::{self, SetId};
use crate::core::registry::{Ident, RecordId, RegistryError, Scope, SharedStore, Slot, Source};
use crate::core::store::modify;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    pub created: bool,
    /// The record count after a creation (None for a refresh: the count was not read).
    pub records: Option<u64>,
}

/// What the slot write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written {
    Created,
    Updated {
        moved_from: Option<String>,
        index_pending: bool,
    },
    Unchanged,
    /// Absent, and this writer holds no place under the cap for it.
    NeedsPlace,
}

fn new_slot(r: &Ident, now_ms: u64, source: Source, index_pending: bool) -> Slot {
    Slot {
        pool: r.pool.to_string(),
        app: r.app.to_string(),
        address: r.address.to_string(),
        version: r.version.to_string(),
        first_seen_ms: now_ms,
        last_seen_ms: if source == Source::Heartbeat {
            now_ms
        } else {
            0
        },
        etcd: source == Source::Etcd,
        index_pending,
    }
}

/// The slot write of `put`: refreshes or moves the record, or creates it if `placed`.
pub(super) fn write_slot<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    r: &Ident,
    now_ms: u64,
    source: Source,
    placed: bool,
) -> Result<Written, RegistryError> {
    let id = r.id();
    modify(
        store,
        &scope.slot_key(r.pool, r.app, r.address),
        |b: &mut Vec<Slot>| match b.iter_mut().find(|e| e.is(&id)) {
            Some(e) => {
                let same = e.version == r.version;
                if source == Source::Etcd && same && e.etcd && !e.index_pending {
                    return (false, Written::Unchanged);
                }
                let old = std::mem::replace(&mut e.version, r.version.to_string());
                match source {
                    Source::Heartbeat => e.last_seen_ms = e.last_seen_ms.max(now_ms),
                    Source::Etcd => e.etcd = true,
                }
                e.index_pending |= !same;
                let w = Written::Updated {
                    moved_from: (!same).then_some(old),
                    index_pending: e.index_pending,
                };
                (true, w)
            }
            None if !placed => (false, Written::NeedsPlace),
            None => {
                b.push(new_slot(r, now_ms, source, true));
                (true, Written::Created)
            }
        },
    )
}

/// A push heartbeat: creates or refreshes the record of `r` as `r.version`.
pub fn upsert<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    r: &Ident,
    now_ms: u64,
) -> Result<Upserted, RegistryError> {
    put(store, scope, r, now_ms, Source::Heartbeat)
}

/// Creates or refreshes a record. A refresh of an unchanged version reads and writes its bucket
/// only; a new record first takes a place under the cap (refused at the cap: 2 reads, no
/// write); a version change moves it between members sets at once (docs/design.md#the-registry).
pub fn put<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    r: &Ident,
    now_ms: u64,
    source: Source,
) -> Result<Upserted, RegistryError> {
    let mut placed = false;
    let mut records = None;
    // Twice at most: a refresh whose record was removed meanwhile becomes a creation.
    let mut written = write_slot(store, scope, r, now_ms, source, placed);
    if written == Ok(Written::NeedsPlace) {
        let (got, n) = reserve(store, scope, 1, now_ms)?;
        if got == 0 {
            return Err(RegistryError::Full);
        }
        placed = true;
        records = Some(n);
        written = write_slot(store, scope, r, now_ms, source, placed);
    }
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            if placed {
                // Best effort (retried): a place not given back costs one until the recount.
                let _ = release(store, scope, 1, now_ms);
            }
            return Err(e);
        }
    };
    if placed && written != Written::Created {
        // Another writer created the same record meanwhile.
        records = Some(release(store, scope, 1, now_ms)?);
    }
    let set = SetId {
        pool: r.pool,
        app: r.app,
        version: r.version,
    };
    let created = written == Written::Created;
    match written {
        Written::Created => {
            index::add(store, scope, &set, &[r.address])?;
            clear_pending(store, scope, r)?;
        }
        Written::Updated {
            moved_from,
            index_pending: true,
        } => {
            index::add(store, scope, &set, &[r.address])?;
            if let Some(old) = &moved_from {
                let old_set = SetId {
                    version: old,
                    ..set
                };
                index::remove(store, scope, &old_set, &[r.address])?;
            }
            clear_pending(store, scope, r)?;
        }
        _ => {}
    }
    Ok(Upserted { created, records })
}

/// Clears `index_pending` once the index lists the record under `r.version`.
pub(super) fn clear_pending<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    r: &Ident,
) -> Result<(), RegistryError> {
    let id = r.id();
    modify(
        store,
        &scope.slot_key(r.pool, r.app, r.address),
        |b: &mut Vec<Slot>| match b
            .iter_mut()
            .find(|e| e.is(&id) && e.version == r.version && e.index_pending)
        {
            Some(e) => {
                e.index_pending = false;
                (true, ())
            }
            None => (false, ()),
        },
    )
}

/// What `change` decides for an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Keep,
    Update,
    Remove,
}

/// Applies `f` to the record of `id` under CAS; returns the record as it was and what was done.
/// A removal updates the count and the index.
pub fn change<S, F>(
    store: &mut S,
    scope: &Scope,
    id: &RecordId,
    now_ms: u64,
    f: F,
) -> Result<Option<(Slot, Change)>, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Slot) -> Change,
{
    let result = change_slot(store, scope, id, f)?;
    if let Some((old, Change::Remove)) = &result {
        release(store, scope, 1, now_ms)?;
        let set = SetId {
            pool: id.pool,
            app: id.app,
            version: &old.version,
        };
        index::remove(store, scope, &set, &[id.address])?;
    }
    Ok(result)
}

pub(super) fn change_slot<S, F>(
    store: &mut S,
    scope: &Scope,
    id: &RecordId,
    mut f: F,
) -> Result<Option<(Slot, Change)>, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Slot) -> Change,
{
    modify(
        store,
        &scope.slot_key(id.pool, id.app, id.address),
        |b: &mut Vec<Slot>| {
            let Some(i) = b.iter().position(|e| e.is(id)) else {
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
        },
    )
}

/// DELETE: removes the record of `id` whatever its version; returns whether it existed.
pub fn remove<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    id: &RecordId,
    now_ms: u64,
) -> Result<bool, RegistryError> {
    Ok(change(store, scope, id, now_ms, |_| Change::Remove)?.is_some())
}

//! The prune: the only code that walks buckets. Run from the tick by one VM per scope
//! (`core::jobs`), a budget of buckets per run, a whole cycle in about `stale_after_ms`:
//! - slot buckets: drops stale records (re-checked under CAS: a heartbeat that refreshed one
//!   meanwhile wins), indexes a record no members set lists (a writer that failed or died
//!   between its two writes), and counts what it found for the cycle's recount;
//! - members buckets: takes out addresses whose slot is gone or moved to another version,
//!   drops emptied sets, and brings a generation left behind by a dead writer up to date.

use crate::core::registry::count::{finish_recount, start_recount, Recount};
use crate::core::registry::index::{self, SetId, SetMembers};
use crate::core::registry::listing::find;
use crate::core::registry::write::{change, clear_pending};
use crate::core::registry::{Change, Clock, Ident, Scope, Slot};
use crate::core::store::{read, RegistryError, SharedStore};

/// Where the prune stopped: the next slot and members buckets, and the cycle's recount (None
/// when this cycle did not start at bucket 0 or a run failed: it corrects nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCursor {
    pub slot_bucket: u32,
    pub members_bucket: u32,
    pub recount: Option<Recount>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Records looked at.
    pub checked: usize,
    pub removed: usize,
    /// The walk passed the last slot bucket (the cursor starts over).
    pub wrapped: bool,
    /// The cycle's recount corrected a drifted count.
    pub recounted: bool,
}

/// One run of the prune from `cursor`.
pub fn prune<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
    cursor: &mut PruneCursor,
) -> Result<Pruned, RegistryError> {
    if cursor.slot_bucket == 0 {
        cursor.recount = Some(start_recount(store, scope, now_ms)?);
    }
    let start = cursor.slot_bucket.min(scope.slot_buckets);
    let end = start
        .saturating_add(scope.slot_buckets_per_run())
        .min(scope.slot_buckets);
    let mut out = Pruned::default();
    let held = match walk_slots(store, scope, now_ms, start..end, &mut out) {
        Ok(h) => h,
        Err(e) => {
            cursor.recount = None;
            return Err(e);
        }
    };
    if let Some(r) = &mut cursor.recount {
        r.held = r.held.saturating_add(held);
    }
    cursor.slot_bucket = end;
    let mstart = cursor.members_bucket.min(scope.members_buckets);
    let mend = mstart
        .saturating_add(scope.members_buckets_per_run())
        .min(scope.members_buckets);
    for m in mstart..mend {
        walk_members(store, scope, m)?;
    }
    cursor.members_bucket = if mend >= scope.members_buckets {
        0
    } else {
        mend
    };
    if end >= scope.slot_buckets {
        out.wrapped = true;
        cursor.slot_bucket = 0;
        if let Some(r) = cursor.recount.take() {
            out.recounted = finish_recount(store, scope, &r)?;
        }
    }
    Ok(out)
}

/// Walks slot buckets; returns how many records they hold after pruning.
fn walk_slots<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
    buckets: std::ops::Range<u32>,
    out: &mut Pruned,
) -> Result<u64, RegistryError> {
    let mut clock = Clock::new(scope, now_ms);
    // Members buckets read so far, by number (at most 256 of them: a list indexed by `m`).
    let mut sets: Vec<Option<Vec<SetMembers>>> = Vec::new();
    sets.resize_with(usize::try_from(scope.members_buckets).unwrap_or(0), || None);
    let mut held = 0u64;
    let stale = scope.limits.stale_after_ms;
    for n in buckets {
        let bucket: Vec<Slot> = read(store, &scope.slot_key_at(n))?;
        for e in bucket {
            out.checked = out.checked.saturating_add(1);
            if !clock.is_fresh(store, &e)? {
                let mirror = clock.mirror_ms(store)?;
                let gone = change(store, scope, &e.id(), now_ms, |x| {
                    if now_ms.saturating_sub(x.seen_ms(mirror)) < stale {
                        Change::Keep
                    } else {
                        Change::Remove
                    }
                })?;
                if matches!(gone, Some((_, Change::Remove))) {
                    out.removed = out.removed.saturating_add(1);
                } else if gone.is_some() {
                    held = held.saturating_add(1);
                }
                continue;
            }
            held = held.saturating_add(1);
            let m = scope.members_bucket(&e.app);
            // `members_bucket` is below `members_buckets`: `at` is always in the list.
            let at = usize::try_from(m).unwrap_or(usize::MAX);
            if let Some(slot @ None) = sets.get_mut(at) {
                *slot = Some(index::read_members(store, scope, m)?);
            }
            let set = SetId {
                pool: &e.pool,
                app: &e.app,
                version: &e.version,
            };
            let listed = sets
                .get(at)
                .and_then(Option::as_ref)
                .and_then(|b| b.iter().find(|s| s.is(&set)))
                .is_some_and(|s| s.list().contains(&e.address));
            if !listed {
                index::add(store, scope, &set, &[e.address.as_str()])?;
                if let Some(slot) = sets.get_mut(at) {
                    *slot = None;
                }
            }
            if e.index_pending {
                let r = Ident {
                    pool: &e.pool,
                    app: &e.app,
                    version: &e.version,
                    address: &e.address,
                };
                clear_pending(store, scope, &r)?;
            }
        }
    }
    Ok(held)
}

/// Takes out of members bucket `m` every address whose record is gone or moved.
fn walk_members<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    m: u32,
) -> Result<(), RegistryError> {
    let sets = index::read_members(store, scope, m)?;
    for s in &sets {
        let set = SetId {
            pool: &s.pool,
            app: &s.app,
            version: &s.version,
        };
        let list = s.list();
        let mut leftovers = Vec::new();
        for address in list.iter() {
            let id = crate::core::registry::RecordId {
                pool: &s.pool,
                app: &s.app,
                address,
            };
            if find(store, scope, &id)?.is_none_or(|r| r.version != s.version) {
                leftovers.push(address);
            }
        }
        if !leftovers.is_empty() || list.is_empty() {
            index::remove(store, scope, &set, &leftovers)?;
        }
    }
    index::note_change(store, scope, m)
}

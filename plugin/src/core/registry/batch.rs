//! Writing many records at once, as the etcd mirror does: one slot write per record that
//! changed, one members write per set, each new record placed under the cap as `put` does.

use crate::core::registry::count::{release, reserve};
use crate::core::registry::index::{self, SetId};
use crate::core::registry::write::{change_slot, clear_pending, write_slot, Change, Written};
use crate::core::registry::{Ident, RecordId, RegistryError, Scope, SharedStore, Slot, Source};

/// An address that joined or left a set in a batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Moved<'a> {
    pool: &'a str,
    app: &'a str,
    version: String,
    address: &'a str,
}

/// Indexes or unindexes a batch: one members write per set.
fn index_batch<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    mut moved: Vec<Moved>,
    join: bool,
) -> Result<(), RegistryError> {
    moved.sort();
    for group in moved.chunk_by(|a, b| (a.pool, a.app, &a.version) == (b.pool, b.app, &b.version)) {
        let Some(first) = group.first() else {
            continue;
        };
        let set = SetId {
            pool: first.pool,
            app: first.app,
            version: &first.version,
        };
        let addresses: Vec<&str> = group.iter().map(|m| m.address).collect();
        if join {
            index::add(store, scope, &set, &addresses)?;
        } else {
            index::remove(store, scope, &set, &addresses)?;
        }
    }
    Ok(())
}

/// `put` for many records at once, as the etcd mirror writes them: one slot write per record
/// that changed, one members write per set. Each new record takes its place under the cap as
/// `put` does. Returns which records the cap refused.
pub fn put_many<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    records: &[Ident],
    now_ms: u64,
) -> Result<Vec<bool>, RegistryError> {
    let mut refused = vec![false; records.len()];
    let mut joined: Vec<Moved> = Vec::new();
    let mut left: Vec<Moved> = Vec::new();
    for (r, no) in records.iter().zip(refused.iter_mut()) {
        let mut written = write_slot(store, scope, r, now_ms, Source::Etcd, false)?;
        if written == Written::NeedsPlace {
            let (got, _) = reserve(store, scope, 1, now_ms)?;
            if got == 0 {
                *no = true;
                continue;
            }
            written = match write_slot(store, scope, r, now_ms, Source::Etcd, true) {
                Ok(w) => w,
                Err(e) => {
                    let _ = release(store, scope, 1, now_ms);
                    return Err(e);
                }
            };
            if written != Written::Created {
                release(store, scope, 1, now_ms)?;
            }
        }
        let moved = |version: &str| Moved {
            pool: r.pool,
            app: r.app,
            version: version.to_string(),
            address: r.address,
        };
        match written {
            Written::Created => joined.push(moved(r.version)),
            Written::Updated {
                moved_from,
                index_pending,
            } => {
                if index_pending {
                    joined.push(moved(r.version));
                }
                if let Some(old) = moved_from {
                    left.push(moved(&old));
                }
            }
            Written::Unchanged | Written::NeedsPlace => {}
        }
    }
    let pending = joined.clone();
    index_batch(store, scope, joined, true)?;
    index_batch(store, scope, left, false)?;
    for m in &pending {
        let r = Ident {
            pool: m.pool,
            app: m.app,
            version: &m.version,
            address: m.address,
        };
        clear_pending(store, scope, &r)?;
    }
    Ok(refused)
}

/// `change` for many records at once (the mirror dropping keys gone from etcd); returns how
/// many were removed.
pub fn change_many<S, F>(
    store: &mut S,
    scope: &Scope,
    ids: &[RecordId],
    now_ms: u64,
    mut f: F,
) -> Result<usize, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Slot) -> Change,
{
    let mut removed: Vec<Moved> = Vec::new();
    for id in ids {
        if let Some((old, Change::Remove)) = change_slot(store, scope, id, &mut f)? {
            removed.push(Moved {
                pool: id.pool,
                app: id.app,
                version: old.version,
                address: id.address,
            });
        }
    }
    let n = removed.len();
    if n > 0 {
        release(store, scope, u64::try_from(n).unwrap_or(u64::MAX), now_ms)?;
    }
    index_batch(store, scope, removed, false)?;
    Ok(n)
}

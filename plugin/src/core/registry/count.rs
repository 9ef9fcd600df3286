//! The record count of a scope: the `max_records` cap is checked and counted in one CAS on this
//! key, before the record is written (a reservation), and a removal is counted after the record
//! is gone. So the records stored never outnumber the count, and the count never passes the cap:
//! two writers cannot both take the last place. A reservation that was not used (the write
//! failed, or another writer created the same record) is given back.
//!
//! A count can only drift if a VM dies between a record's write and its count's (a trap): then
//! the prune's cycle recount corrects it, but only after a cycle in which nobody changed the
//! count and which started `QUIET_MS` after its last change, so no write in flight is missed.

use crate::core::codec::{encode, stored_struct};
use crate::core::registry::Scope;
use crate::core::store::{modify, read, RegistryError, SharedStore};

/// How long after the count's last change a recount may correct it: far longer than the two
/// writes of one operation take inside one callback.
pub const QUIET_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Count {
    pub n: u64,
    /// When a writer last changed `n` (the recount's quiet check).
    pub changed_ms: u64,
}

stored_struct!(Count { n, changed_ms });

/// The stored record count (fresh or not yet pruned).
pub fn count<S: SharedStore + ?Sized>(store: &mut S, scope: &Scope) -> Result<u64, RegistryError> {
    Ok(read::<Count, S>(store, &scope.count_key())?.n)
}

/// Takes up to `want` places under the cap in one CAS; returns how many it got and the count
/// after. None left: nothing is written.
pub(super) fn reserve<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    want: u64,
    now_ms: u64,
) -> Result<(u64, u64), RegistryError> {
    let max = u64::from(scope.limits.max_records);
    modify(store, &scope.count_key(), |c: &mut Count| {
        let got = want.min(max.saturating_sub(c.n));
        if got == 0 {
            return (false, (0, c.n));
        }
        c.n = c.n.saturating_add(got);
        c.changed_ms = now_ms;
        (true, (got, c.n))
    })
}

/// Counts `k` records gone (or gives back `k` unused places); returns the count after. A host
/// error is retried: giving up would leave the count high, which only costs a place until the
/// prune's recount.
pub(super) fn release<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    k: u64,
    now_ms: u64,
) -> Result<u64, RegistryError> {
    let mut last = Err(RegistryError::Store);
    for _ in 0..3 {
        last = modify(store, &scope.count_key(), |c: &mut Count| {
            c.n = c.n.saturating_sub(k);
            c.changed_ms = now_ms;
            (k > 0, c.n)
        });
        if last.is_ok() {
            break;
        }
    }
    last
}

/// The count as read at the start of a prune cycle, and the records its walk found so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recount {
    pub cas: Option<u32>,
    pub started_ms: u64,
    pub held: u64,
}

pub(super) fn start_recount<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
) -> Result<Recount, RegistryError> {
    let cas = match store.get(&scope.count_key()) {
        Ok(v) => v.map(|(_, cas)| cas),
        Err(_) => return Err(RegistryError::Store),
    };
    Ok(Recount {
        cas,
        started_ms: now_ms,
        held: 0,
    })
}

/// At the end of a cycle: corrects the count to what the walk found if nobody changed it during
/// the cycle and its last change was long enough before the cycle began. Returns whether it did.
pub(super) fn finish_recount<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    r: &Recount,
) -> Result<bool, RegistryError> {
    let key = scope.count_key();
    let (current, cas) = match store.get(&key) {
        Ok(Some((bytes, cas))) => (crate::core::store::decode::<Count>(&bytes), Some(cas)),
        Ok(None) => (Count::default(), None),
        Err(_) => return Err(RegistryError::Store),
    };
    let quiet = cas == r.cas && current.changed_ms.saturating_add(QUIET_MS) <= r.started_ms;
    if !quiet || current.n == r.held {
        return Ok(false);
    }
    let fixed = Count {
        n: r.held,
        changed_ms: current.changed_ms,
    };
    let bytes = encode(&fixed);
    match store.set(&key, &bytes, cas.unwrap_or(crate::core::store::CREATE_CAS)) {
        Ok(()) => Ok(true),
        // Someone counted meanwhile: the next quiet cycle decides.
        Err(crate::core::store::StoreError::CasMismatch) => Ok(false),
        Err(_) => Err(RegistryError::Store),
    }
}

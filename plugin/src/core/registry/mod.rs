//! The registry of peers in proxy-wasm shared data (docs/design.md#the-registry, docs/design.md#registry-invariants).
//!
//! Every key belongs to a configuration's **scope** (`layout::Scope`): `mixmode/v3/<hash>/…`,
//! the hash of the configuration's identity (its pool and `cross_pool`, app, etcd range and
//! limits). Two configurations sharing a `vm_id` never read, count, prune or mirror into each
//! other's keys; the same configuration on several listeners (the public and the heartbeat
//! listener) shares one scope.
//!
//! Key layout of a scope, with B slot buckets (`max_records` rounded up to a power of two,
//! halved, between 8 and 4,096) and M members buckets (B / 16, between 2 and 256):
//! - `slot/<n>`, n < B: the records, by a hash of `(pool, app, address)`. The slot is the
//!   truth: version and freshness are read there. A refresh rewrites only its bucket.
//! - `members/<m>`, m < M: for each `(pool, app, version)` whose app hashes there, its
//!   addresses (an index). A lookup reads one bucket, and only the slots of the candidates it
//!   tries; a cross-pool lookup finds the other pools in the same bucket; a new version reuses
//!   its app's bucket.
//! - `members-gen/<m>`: the CAS `members/<m>` had at its last change, so a VM that holds the
//!   bucket decoded reads these few bytes instead of copying the bucket at every lookup.
//! - `count` (the `max_records` cap, checked and counted in one CAS), `etcd/snapshot`,
//!   `etcd/state`, `etcd/seen` (the mirror, `core::etcd`), `lease/{prune,etcd,poll}`,
//!   `outage/…` (the jobs, `core::jobs`).
//! - `demand/<d>`, d < 16: when each version was last needed (`core::demand`, its own bound).
//!
//! **Bound**: a scope writes at most B + 2M + 8 + 16 keys (+ one outage flag per pull target),
//! and the store has one more (`mixmode/v2/vm_seq`): 4,632 for the default cap of 10,000, whatever
//! versions, apps, pools or addresses come and go (the ABI has no delete; an emptied bucket is
//! reused by the next record or set hashed there). `Scope::max_keys` computes it. One address
//! heartbeating 1,000 versions leaves 4 keys: its slot bucket, the count, its app's members
//! bucket and that bucket's generation.
//!
//! **Work**: a heartbeat reads its slot bucket and, when it is new, the count: a refusal at the
//! cap costs 2 reads; a refresh 1 read and 1 write. A lookup reads a members generation and the
//! slots it tries. Only the prune (`prune`, one VM per scope, a budget of buckets per run)
//! walks buckets; a whole cycle takes about `stale_after_ms`.
//!
//! Indexes are kept by write-then-check: whoever takes an address out of a members list re-reads
//! its slot afterwards and puts it back if a concurrent writer made it belong there again; the
//! prune puts back what a failed or interrupted write left out. Lookups verify every candidate
//! against its slot, so a stale index entry costs a read, never a wrong choice.

mod batch;
mod count;
mod index;
pub mod layout;
mod listing;
mod prune;
mod write;

pub use crate::core::store::{MemoryStore, RegistryError, SharedStore, StoreError, CREATE_CAS};
pub use batch::{change_many, put_many};
pub use count::{count, Count, QUIET_MS};
pub use index::{decode_members, read_members, SetMembers};
pub use layout::{Scope, GLOBAL_KEYS};
pub use listing::{find, list, stored};
pub use prune::{prune, PruneCursor, Pruned};
pub use write::{change, put, remove, upsert, Change, Upserted};

use crate::core::codec::stored_struct;
use crate::core::store::read;

/// One record (docs/design.md#the-registry), identified by `(pool, app, address)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
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
    /// Written before its index, cleared once the index lists it: a heartbeat that failed
    /// between the two (503) leaves it set, and the next heartbeat or the prune indexes it.
    pub index_pending: bool,
}

stored_struct!(Slot {
    pool,
    app,
    address,
    version,
    first_seen_ms,
    last_seen_ms,
    etcd,
    index_pending
});

impl Slot {
    pub fn is(&self, id: &RecordId) -> bool {
        self.address == id.address && self.app == id.app && self.pool == id.pool
    }

    pub fn id(&self) -> RecordId<'_> {
        RecordId {
            pool: &self.pool,
            app: &self.app,
            address: &self.address,
        }
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

/// What identifies a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId<'a> {
    pub pool: &'a str,
    pub app: &'a str,
    pub address: &'a str,
}

/// A record as a writer names it: its identity and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident<'a> {
    pub pool: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    pub address: &'a str,
}

impl<'a> Ident<'a> {
    pub fn id(&self) -> RecordId<'a> {
        RecordId {
            pool: self.pool,
            app: self.app,
            address: self.address,
        }
    }
}

/// A record as the operators' listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub struct Clock<'s> {
    pub scope: &'s Scope,
    pub now_ms: u64,
    mirror_seen_ms: Option<u64>,
}

impl<'s> Clock<'s> {
    pub fn new(scope: &'s Scope, now_ms: u64) -> Self {
        Clock {
            scope,
            now_ms,
            mirror_seen_ms: None,
        }
    }

    /// When the scope's etcd mirror last polled successfully (0: never).
    pub fn mirror_ms<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
    ) -> Result<u64, RegistryError> {
        match self.mirror_seen_ms {
            Some(m) => Ok(m),
            None => {
                let m = read::<u64, S>(store, &self.scope.mirror_seen_key())?;
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
        Ok(self.now_ms.saturating_sub(seen) < self.scope.limits.stale_after_ms)
    }
}

#[cfg(test)]
mod tests;

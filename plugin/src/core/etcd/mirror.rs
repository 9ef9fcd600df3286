//! Applying an answer to the configuration's registry: the revision check and claim, the diff
//! against the previous snapshot, the mirror's freshness.

use crate::core::codec::{encode, stored_struct};
use crate::core::config::{Config, Etcd};
use crate::core::etcd::answer::{decode, revision, Mirrored, SyncError};
use crate::core::positions::Positions;
use crate::core::registry::{self, Change, Ident, RecordId, RegistryError, Scope};
use crate::core::store::{self, modify, read, write, SharedStore, StoreError, CREATE_CAS};

const SNAPSHOT: &str = "etcd/snapshot";
/// The snapshot's revision, check time and apply claim, apart from its records: an unchanged
/// poll reads only this.
const STATE: &str = "etcd/state";

/// The records of the last snapshot applied, in shared data.
#[derive(Debug, Clone, Default)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    pub records: Vec<Mirrored>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct State {
    pub revision: i64,
    /// When every record was last checked against the registry (0: never).
    pub verified_ms: u64,
    /// An apply in progress: its revision and start. Another answer meanwhile is dropped.
    pub applying: Option<Claim>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Claim {
    pub revision: i64,
    pub since_ms: u64,
}

stored_struct!(Snapshot { records });
stored_struct!(State {
    revision,
    verified_ms,
    applying
});
stored_struct!(Claim { revision, since_ms });

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
        let bytes = encode(&claimed);
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
    let mut ids = Positions::with_capacity(kept.len());
    for (i, r) in kept.iter().enumerate() {
        ids.add(ids.hash(&record_key(r)), i);
    }
    let gone: Vec<RecordId> = snap
        .records
        .iter()
        .filter(|r| {
            let mut kept_too = |i: usize| {
                kept.get(i)
                    .is_some_and(|k| k.address == r.address && k.app == r.app && k.pool == r.pool)
            };
            ids.find(ids.hash(&record_key(r)), &mut kept_too).is_none()
        })
        .map(|r| RecordId {
            pool: &r.pool,
            app: &r.app,
            address: &r.address,
        })
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

/// What identifies a mirrored record, as `Positions` hashes it.
fn record_key(r: &Mirrored) -> [&[u8]; 3] {
    [r.pool.as_bytes(), r.app.as_bytes(), r.address.as_bytes()]
}

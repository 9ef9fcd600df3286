//! Demand (docs/design.md#draining-by-demand): when each `(pool, app, version)` was last needed
//! and how often in the last 60 s, so that a server of an old version can leave once no session
//! needs it (`mixmode-register --drain-while-needed` reads the listing).
//!
//! A **need** is a mismatch whose session version is one a server can register (a rescue toward
//! it, a `no-peer` for it, a mismatch that could not be replayed), or, with affinity, a request
//! routed by its cookie (`affinity_routed`). A request that needs no rescue records nothing: the
//! glue calls `record` only for a need, so the happy path makes no extra host call.
//!
//! **Keys.** `DEMAND_BUCKETS` (16) keys per configuration scope, `<scope>demand/<n>`, n hashed
//! from `(pool, app, version)`; each holds at most `MAX_PER_BUCKET` (8) entries. An entry not
//! needed within the listing window is dropped at the bucket's next write; when a bucket is full
//! of live entries, a new version takes the place of the least recently needed one. So demand
//! adds 16 keys per scope (`Scope::max_keys` counts them) and at most 128 entries (~40 kB at the
//! longest names), however many versions are ever needed: a version past that is forgotten
//! first where it collides, never the store's bound.
//!
//! **Work.** One write is one read-modify-write of one bucket (`store::modify`, CAS retried): 1
//! read and 1 write without contention; a VM writes a version at most once per
//! `demand.coalesce_ms` (`ledger`), and once more at its tick after a window that folded needs.
//! The listing reads the 16 buckets (operators, never a request).
//!
//! **The 60 s count** is a ring of `PERIODS` (6) periods of `PERIOD_MS` (10 s): `needed_60s`
//! is the needs of the current period and the five before it, so a need leaves the count 50 to
//! 60 s after it happened. Time is a parameter everywhere (tests move it; the glue passes the
//! host's clock).

use crate::core::codec::stored_struct;
use crate::core::config::is_token_text;
use crate::core::counter::Counter;
use crate::core::registry::Scope;
use crate::core::signal::version_text;
use crate::core::store::{modify, read, RegistryError, SharedStore};

/// Length of one counting period.
pub const PERIOD_MS: u64 = 10_000;
/// Periods the count covers: 6 × 10 s = 60 s.
pub const PERIODS: usize = 6;
const PERIODS_U64: u64 = PERIODS as u64;
/// Entries one bucket keeps at most.
pub const MAX_PER_BUCKET: usize = 8;
/// Versions listed are those needed within `stale_after_ms` × this.
pub const WINDOW_STALE_FACTOR: u64 = 4;

/// One `(pool, app, version)`'s demand, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Entry {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub last_needed_ms: u64,
    /// The newest period (`now_ms / PERIOD_MS`) `counts` holds.
    pub period: u64,
    /// Needs per period; period p is at `p % PERIODS`, for p in `period - 5 ..= period`.
    pub counts: [u32; PERIODS],
}

stored_struct!(Entry {
    pool,
    app,
    version,
    last_needed_ms,
    period,
    counts
});

/// What was needed: the names a server registers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'a> {
    pub pool: &'a str,
    pub app: &'a str,
    pub version: &'a str,
}

/// One line of the listing (`GET <heartbeat.path>?demand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub last_needed_ms: u64,
    pub needed_60s: u64,
}

fn slot(period: u64) -> usize {
    // PERIODS is small: the remainder always fits.
    usize::try_from(period.checked_rem(PERIODS_U64).unwrap_or(0)).unwrap_or(0)
}

impl Entry {
    fn new(need: &Need, now_ms: u64) -> Entry {
        Entry {
            pool: need.pool.to_string(),
            app: need.app.to_string(),
            version: need.version.to_string(),
            last_needed_ms: now_ms,
            period: now_ms / PERIOD_MS,
            counts: [0; PERIODS],
        }
    }

    fn is(&self, need: &Need) -> bool {
        self.version == need.version && self.app == need.app && self.pool == need.pool
    }

    /// Counts `n` needs at `now_ms`. A writer whose clock is behind the entry's newest period
    /// (another worker wrote later) still counts into its own period while the ring holds it.
    /// `last_needed_ms` is the writer's (`record_until`): a tick writes needs after the fact.
    pub fn add(&mut self, now_ms: u64, n: u32) {
        let p = now_ms / PERIOD_MS;
        if p > self.period {
            let gap = p.saturating_sub(self.period);
            if gap >= PERIODS_U64 {
                self.counts = [0; PERIODS];
            } else {
                let mut q = self.period;
                while q < p {
                    q = q.saturating_add(1);
                    if let Some(c) = self.counts.get_mut(slot(q)) {
                        *c = 0;
                    }
                }
            }
            self.period = p;
        }
        if p.saturating_add(PERIODS_U64) > self.period {
            if let Some(c) = self.counts.get_mut(slot(p)) {
                *c = c.saturating_add(n);
            }
        }
    }

    /// Needs in the period of `now_ms` and the five before it.
    pub fn needed_60s(&self, now_ms: u64) -> u64 {
        let now_p = now_ms / PERIOD_MS;
        let oldest = now_p.saturating_sub(PERIODS_U64.saturating_sub(1));
        let mut sum: u64 = 0;
        let mut q = oldest;
        while q <= now_p {
            // Held by the ring: not newer than its newest period, not older than its oldest.
            if q <= self.period && q.saturating_add(PERIODS_U64) > self.period {
                let c = self.counts.get(slot(q)).copied().unwrap_or(0);
                sum = sum.saturating_add(u64::from(c));
            }
            q = q.saturating_add(1);
        }
        sum
    }

    fn listed(&self, now_ms: u64, window_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_needed_ms) < window_ms
    }
}

/// How far back the listing goes: `registry.stale_after_ms` × 4.
pub fn window_ms(scope: &Scope) -> u64 {
    scope
        .limits
        .stale_after_ms
        .saturating_mul(WINDOW_STALE_FACTOR)
}

/// The version a response's counters say was needed: a mismatch (`MismatchDetected`) whose
/// session version (`session_version`, the raw header) a server could register. The glue reads
/// the header only for a mismatch, so a happy-path response never gets here.
pub fn needed_version<'a>(
    counters: &[Counter],
    session_version: Option<&'a [u8]>,
) -> Option<&'a str> {
    if !counters.contains(&Counter::MismatchDetected) {
        return None;
    }
    session_version.and_then(version_text)
}

/// Records `n` needs of `need` at `now_ms`: one CAS read-modify-write of its bucket. A need
/// whose names a server could not register (empty, over 128 bytes, spaces, control characters)
/// is not recorded.
pub fn record<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    need: &Need,
    now_ms: u64,
    n: u32,
) -> Result<(), RegistryError> {
    record_until(store, scope, need, now_ms, n, now_ms)
}

/// `record`, with `last_needed_ms` raised to `until_ms` (a coalescing window's end, `ledger`):
/// the needs count in the period of `now_ms`, when they are written, never in a period the
/// listing has not reached yet.
pub fn record_until<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    need: &Need,
    now_ms: u64,
    n: u32,
    until_ms: u64,
) -> Result<(), RegistryError> {
    if n == 0
        || ![need.pool, need.app, need.version]
            .iter()
            .all(|s| is_token_text(s))
    {
        return Ok(());
    }
    let window = window_ms(scope);
    let key = scope.demand_key(need.pool, need.app, need.version);
    modify(store, &key, |bucket: &mut Vec<Entry>| {
        bucket.retain(|e| e.listed(now_ms, window) || e.is(need));
        match bucket.iter_mut().find(|e| e.is(need)) {
            Some(e) => {
                e.add(now_ms, n);
                e.last_needed_ms = e.last_needed_ms.max(until_ms);
            }
            None => {
                if bucket.len() >= MAX_PER_BUCKET {
                    // Full of live entries: the least recently needed one goes.
                    if let Some(i) = bucket
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_needed_ms)
                        .map(|(i, _)| i)
                    {
                        bucket.swap_remove(i);
                    }
                }
                let mut e = Entry::new(need, now_ms);
                e.add(now_ms, n);
                // A tick writes needs after the fact: their time, not the tick's.
                e.last_needed_ms = until_ms;
                bucket.push(e);
            }
        }
        (true, ())
    })
}

/// The versions needed within the window (`window_ms`), most recently needed first.
pub fn list<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    now_ms: u64,
) -> Result<Vec<Demand>, RegistryError> {
    let window = window_ms(scope);
    let mut out = Vec::new();
    for n in 0..scope.demand_buckets() {
        let bucket: Vec<Entry> = read(store, &scope.demand_key_at(n))?;
        for e in bucket {
            if !e.listed(now_ms, window) {
                continue;
            }
            // Inserted in place: at most 128 lines, and a library sort of this type would add
            // about 4 kB to the .wasm.
            let at = out
                .iter()
                .position(|d: &Demand| d.last_needed_ms < e.last_needed_ms)
                .unwrap_or(out.len());
            out.insert(
                at,
                Demand {
                    needed_60s: e.needed_60s(now_ms),
                    pool: e.pool,
                    app: e.app,
                    version: e.version,
                    last_needed_ms: e.last_needed_ms,
                },
            );
        }
    }
    Ok(out)
}

/// Versions one VM counts under their own `needed.<version>` counter; later ones share
/// `needed.other` (a counter is a host object that lives as long as the VM).
pub const MAX_VERSION_COUNTERS: usize = 32;

/// The metric name (after `mixmode.`) of a version's counter: `needed.<version>`, every byte
/// but ASCII letters, digits, `-`, `_` and `.` written `_` (a stat name, then a Prometheus
/// name, is made of those).
pub fn counter_name(version: &str) -> String {
    let clean: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("needed.{clean}")
}

pub const OTHER_COUNTER: &str = "needed.other";

/// One VM's per-version counters: the first `MAX_VERSION_COUNTERS` versions needed get their
/// own, defined on their first need (`define` gets the name after `mixmode.`); the rest share
/// `needed.other`. `T` is the host's metric id.
#[derive(Debug, Default)]
pub struct VersionCounters<T> {
    known: Vec<(String, T)>,
    other: Option<T>,
}

impl<T: Copy> VersionCounters<T> {
    pub fn id(&mut self, version: &str, define: impl FnOnce(&str) -> T) -> T {
        if let Some((_, id)) = self.known.iter().find(|(v, _)| v == version) {
            return *id;
        }
        if self.known.len() < MAX_VERSION_COUNTERS {
            let id = define(&counter_name(version));
            self.known.push((version.to_string(), id));
            return id;
        }
        match self.other {
            Some(id) => id,
            None => {
                let id = define(OTHER_COUNTER);
                self.other = Some(id);
                id
            }
        }
    }
}

pub mod ledger;

#[cfg(test)]
mod tests;

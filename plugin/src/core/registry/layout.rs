//! Where a configuration's registry lives in shared data: its scope (identity, limits, bucket
//! counts) and every key name. See the module docs of `registry` for the layout and its bound.

use crate::core::config::Config;
use crate::core::registry::Limits;

/// Keys outside every scope: the VM id counter (`core::lease`).
pub const GLOBAL_KEYS: usize = 1;

/// Keys of a scope besides its buckets: the count; the etcd snapshot, state and seen time; the
/// prune, etcd and poll leases; the etcd outage flag. (Poll outage flags: one per target.)
pub const FIXED_KEYS: usize = 8;

/// Demand buckets of a scope (`core::demand`): a fixed number, whatever versions are needed.
pub const DEMAND_BUCKETS: u32 = 16;

/// Most slot buckets a scope has: past ~4 records a bucket a refresh pays for its neighbours'
/// bytes; 4096 keeps the default cap of 10,000 records at ~2.4 a bucket.
pub const MAX_SLOT_BUCKETS: u32 = 4096;
const MIN_SLOT_BUCKETS: u32 = 8;
/// Members buckets: one per 16 slot buckets, between 2 and 256.
const SLOTS_PER_MEMBERS_BUCKET: u32 = 16;
const MAX_MEMBERS_BUCKETS: u32 = 256;
const MIN_MEMBERS_BUCKETS: u32 = 2;

/// One configuration's part of the store. Two configurations with the same identity (the same
/// filter configuration on several listeners, or on the heartbeat listener) share a scope;
/// any other pair is apart: own records, count, indexes, etcd mirror state and prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `mixmode/v3/<identity hash>/`: every key of the scope starts with it.
    pub prefix: String,
    pub limits: Limits,
    pub slot_buckets: u32,
    pub members_buckets: u32,
    /// Keys of per-target outage flags (pull poll targets).
    pub extra_keys: usize,
}

/// FNV-1a (64 bit) over length-prefixed parts: the same value in every VM and build.
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.len().to_le_bytes().iter().chain(p.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn bucket(h: u64, n: u32) -> u32 {
    u32::try_from(h.checked_rem(u64::from(n.max(1))).unwrap_or(0)).unwrap_or(0)
}

impl Scope {
    /// The scope of a configuration: its pool set (pool and `cross_pool`), app, etcd range and
    /// limits are its identity.
    pub fn of(cfg: &Config) -> Scope {
        let r = &cfg.registry;
        let (etcd_cluster, etcd_range) = match &r.etcd {
            Some(e) => (e.cluster.clone(), crate::core::etcd::range_prefix(cfg, e)),
            None => (String::new(), String::new()),
        };
        let stale = r.stale_after_ms.to_string();
        let max = r.max_records.to_string();
        let parts = [
            cfg.pool.as_str(),
            if r.cross_pool { "cross" } else { "own" },
            cfg.app.as_str(),
            etcd_cluster.as_str(),
            etcd_range.as_str(),
            stale.as_str(),
            max.as_str(),
        ];
        let mut s = Scope::new(
            &parts,
            Limits {
                stale_after_ms: r.stale_after_ms,
                max_records: r.max_records,
            },
        );
        s.extra_keys = r.poll.as_ref().map_or(0, |p| p.targets.len());
        s
    }

    /// A scope of the given identity parts (tests and benchmarks name their own).
    pub fn new(identity: &[&str], limits: Limits) -> Scope {
        let slot_buckets = limits
            .max_records
            .checked_next_power_of_two()
            .map_or(MAX_SLOT_BUCKETS, |p| p / 2)
            .clamp(MIN_SLOT_BUCKETS, MAX_SLOT_BUCKETS);
        let members_buckets = (slot_buckets / SLOTS_PER_MEMBERS_BUCKET)
            .clamp(MIN_MEMBERS_BUCKETS, MAX_MEMBERS_BUCKETS);
        Scope {
            prefix: format!("mixmode/v3/{:016x}/", fnv64(identity)),
            limits,
            slot_buckets,
            members_buckets,
            extra_keys: 0,
        }
    }

    /// The most keys this scope can ever write (docs/design.md#registry-invariants "bounded keys").
    pub fn max_keys(&self) -> usize {
        let b = usize::try_from(self.slot_buckets).unwrap_or(usize::MAX);
        let m = usize::try_from(self.members_buckets).unwrap_or(usize::MAX);
        b.saturating_add(m.saturating_mul(2))
            .saturating_add(FIXED_KEYS)
            .saturating_add(usize::try_from(DEMAND_BUCKETS).unwrap_or(usize::MAX))
            .saturating_add(self.extra_keys)
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn slot_bucket(&self, pool: &str, app: &str, address: &str) -> u32 {
        bucket(fnv64(&[pool, app, address]), self.slot_buckets)
    }

    pub fn slot_key_at(&self, n: u32) -> String {
        format!("{}slot/{n}", self.prefix)
    }

    pub fn slot_key(&self, pool: &str, app: &str, address: &str) -> String {
        self.slot_key_at(self.slot_bucket(pool, app, address))
    }

    /// The members bucket of an app, whatever the pool and version: a version that comes and
    /// goes reuses its app's bucket (no key per version), and a cross-pool lookup finds the
    /// other pools' addresses in the bucket it already read.
    pub fn members_bucket(&self, app: &str) -> u32 {
        bucket(fnv64(&[app]), self.members_buckets)
    }

    pub fn members_key_at(&self, m: u32) -> String {
        format!("{}members/{m}", self.prefix)
    }

    /// The CAS the members bucket had at its last change (see `index`).
    pub fn members_gen_key_at(&self, m: u32) -> String {
        format!("{}members-gen/{m}", self.prefix)
    }

    pub fn demand_buckets(&self) -> u32 {
        DEMAND_BUCKETS
    }

    /// The demand bucket of a `(pool, app, version)` (`core::demand`).
    pub fn demand_key(&self, pool: &str, app: &str, version: &str) -> String {
        self.demand_key_at(bucket(fnv64(&[pool, app, version]), DEMAND_BUCKETS))
    }

    pub fn demand_key_at(&self, n: u32) -> String {
        format!("{}demand/{n}", self.prefix)
    }

    pub fn count_key(&self) -> String {
        self.key("count")
    }

    pub fn mirror_seen_key(&self) -> String {
        self.key("etcd/seen")
    }

    pub fn lease_key(&self, job: &str) -> String {
        self.key(&format!("lease/{job}"))
    }

    pub fn outage_key(&self, job: &str) -> String {
        self.key(&format!("outage/{job}"))
    }

    /// How often the prune job runs: often enough that a stale record leaves the count soon
    /// after it stops being chosen.
    pub fn prune_interval_ms(&self) -> u64 {
        (self.limits.stale_after_ms / 2).clamp(500, 5000)
    }

    /// Prune runs in which a whole cycle over the buckets completes: within `stale_after_ms`,
    /// so a stale record holds its place under the cap for at most about twice that.
    fn runs_per_cycle(&self) -> u32 {
        let runs = self
            .limits
            .stale_after_ms
            .checked_div(self.prune_interval_ms())
            .unwrap_or(1);
        u32::try_from(runs).unwrap_or(u32::MAX).max(1)
    }

    /// Slot buckets one prune run walks (its budget).
    pub fn slot_buckets_per_run(&self) -> u32 {
        self.slot_buckets.div_ceil(self.runs_per_cycle()).max(1)
    }

    /// Members buckets one prune run walks.
    pub fn members_buckets_per_run(&self) -> u32 {
        self.members_buckets.div_ceil(self.runs_per_cycle()).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_records: u32) -> Limits {
        Limits {
            stale_after_ms: 15_000,
            max_records,
        }
    }

    #[test]
    fn buckets_follow_the_cap() {
        let s = Scope::new(&["a"], limits(10_000));
        assert_eq!((s.slot_buckets, s.members_buckets), (4096, 256));
        assert_eq!(s.max_keys(), 4096 + 512 + FIXED_KEYS + 16);
        let s = Scope::new(&["a"], limits(3));
        assert_eq!((s.slot_buckets, s.members_buckets), (8, 2));
        let s = Scope::new(&["a"], limits(u32::MAX));
        assert_eq!(s.slot_buckets, 4096);
    }

    #[test]
    fn identities_are_apart() {
        let a = Scope::new(&["pa", "app"], limits(10));
        let b = Scope::new(&["pb", "app"], limits(10));
        assert_ne!(a.prefix, b.prefix);
        assert_ne!(
            Scope::new(&["a", "bc"], limits(1)).prefix,
            Scope::new(&["ab", "c"], limits(1)).prefix
        );
        assert!(a.slot_key("p", "app", "10.0.0.1:80").starts_with(&a.prefix));
    }

    #[test]
    fn a_prune_cycle_fits_in_the_stale_interval() {
        for stale in [1_000u64, 15_000, 60_000] {
            let s = Scope::new(
                &["a"],
                Limits {
                    stale_after_ms: stale,
                    max_records: 10_000,
                },
            );
            let runs = s.slot_buckets.div_ceil(s.slot_buckets_per_run());
            assert!(u64::from(runs) * s.prune_interval_ms() <= stale, "{stale}");
        }
    }
}

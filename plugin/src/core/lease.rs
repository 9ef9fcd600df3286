//! One poller per Envoy process, whatever the number of workers (docs/envoy-facts.md#shared-data-ticks-metrics: `on_tick` fires
//! on the main thread and on every worker, each in its own VM, all sharing one shared data).
//!
//! Each periodic job has a lease in shared data: `{owner, expires, next_due}`. A VM's tick runs
//! the job only when the job is due and the lease is its own or has expired, and claims the run
//! with a CAS write, so of the VMs that see the job due at once exactly one wins. The owner keeps
//! the lease by running the job; if its VM stops ticking, another takes over after the lease
//! expires. Runs are scheduled from the previous due time, not from when a tick noticed, so the
//! rate stays one per interval even though ticks jitter.
//!
//! A VM's id comes from a CAS counter in shared data: ids drawn from a clock-seeded RNG collided
//! between two workers (docs/envoy-facts.md#shared-data-ticks-metrics).

use crate::core::codec::{encode, stored_struct};
use crate::core::store::{decode, modify, RegistryError, SharedStore, StoreError, CREATE_CAS};

pub const VM_SEQ_KEY: &str = "mixmode/v2/vm_seq";

/// A lease outlives this many intervals without a run before another VM may take it.
pub const HOLD_INTERVALS: u64 = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Lease {
    pub owner: u32,
    pub expires_ms: u64,
    pub next_due_ms: u64,
}

stored_struct!(Lease {
    owner,
    expires_ms,
    next_due_ms
});

/// A job's name from what it does: two plugin configurations sharing a `vm_id` (say, two
/// listeners polling different targets) get two leases; the same configuration on every
/// listener and worker gets one.
pub fn job_name(kind: &str, parts: &[&str]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.len().to_le_bytes().iter().chain(p.as_bytes()) {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{kind}/{h:08x}")
}

/// A fresh id for this VM, unique among the VMs sharing the store (never 0).
pub fn next_vm_id<S: SharedStore + ?Sized>(store: &mut S) -> Result<u32, RegistryError> {
    modify(store, VM_SEQ_KEY, |n: &mut u32| {
        *n = n.wrapping_add(1).max(1);
        (true, *n)
    })
}

/// Whether VM `me` runs the job of lease `key` (`Scope::lease_key`) now; if so the run is
/// claimed (one VM per due time).
pub fn claim<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    me: u32,
    now_ms: u64,
    interval_ms: u64,
) -> Result<bool, RegistryError> {
    let (lease, cas) = match store.get(key) {
        Ok(Some((bytes, cas))) => (decode::<Lease>(&bytes), cas),
        Ok(None) => (Lease::default(), CREATE_CAS),
        Err(_) => return Err(RegistryError::Store),
    };
    let held_by_other = lease.owner != me && lease.owner != 0 && now_ms < lease.expires_ms;
    if held_by_other || now_ms < lease.next_due_ms {
        return Ok(false);
    }
    // Late by more than an interval (a stall, a new owner): start the schedule again from now.
    let next_due_ms =
        if lease.next_due_ms == 0 || now_ms >= lease.next_due_ms.saturating_add(interval_ms) {
            now_ms.saturating_add(interval_ms)
        } else {
            lease.next_due_ms.saturating_add(interval_ms)
        };
    let new = Lease {
        owner: me,
        expires_ms: now_ms.saturating_add(interval_ms.saturating_mul(HOLD_INTERVALS)),
        next_due_ms,
    };
    let bytes = encode(&new);
    match store.set(key, &bytes, cas) {
        Ok(()) => Ok(true),
        // Another VM claimed this run between our read and our write.
        Err(StoreError::CasMismatch) => Ok(false),
        Err(StoreError::Other) => Err(RegistryError::Store),
    }
}

/// How often a VM should tick to run jobs of these intervals on time: a quarter of the shortest,
/// so a run starts at most a quarter interval late.
pub fn tick_period_ms(intervals: &[u64]) -> u64 {
    intervals
        .iter()
        .copied()
        .filter(|i| *i > 0)
        .min()
        .map(|i| (i / 4).clamp(20, 1000))
        .unwrap_or(1000)
}

/// "Log once per outage": whether the job is failing, kept in shared data because the VM that
/// polls can change between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    Started,
    Continues,
    Ended,
    None,
}

/// `key`: `Scope::outage_key` of the job.
pub fn note_outcome<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    ok: bool,
) -> Result<Outage, RegistryError> {
    modify(store, key, |failing: &mut bool| {
        let was = *failing;
        *failing = !ok;
        let outage = match (was, ok) {
            (false, false) => Outage::Started,
            (true, false) => Outage::Continues,
            (true, true) => Outage::Ended,
            (false, true) => Outage::None,
        };
        (was != *failing, outage)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::MemoryStore;

    #[test]
    fn vm_ids_are_unique() {
        let mut s = MemoryStore::default();
        let ids: Vec<u32> = (0..5).map(|_| next_vm_id(&mut s).unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }

    /// Three VMs tick every 250 ms with their own phases for 10 s: the job runs once per
    /// second, by one VM.
    #[test]
    fn three_ticking_vms_run_a_job_once_per_interval() {
        let mut s = MemoryStore::default();
        let vms: Vec<u32> = (0..3).map(|_| next_vm_id(&mut s).unwrap()).collect();
        let mut runs = Vec::new();
        for t in (0..10_000u64).step_by(10) {
            for (k, vm) in vms.iter().enumerate() {
                if (t + 83 * k as u64).is_multiple_of(250)
                    && claim(&mut s, "poll", *vm, t, 1000).unwrap()
                {
                    runs.push((t, *vm));
                }
            }
        }
        assert!((10..=11).contains(&runs.len()), "{runs:?}");
        assert!(runs.iter().all(|(_, vm)| *vm == runs[0].1), "{runs:?}");
        for w in runs.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!((750..=1250).contains(&gap), "{runs:?}");
        }
    }

    #[test]
    fn another_vm_takes_over_when_the_owner_stops() {
        let mut s = MemoryStore::default();
        assert!(claim(&mut s, "j", 1, 0, 1000).unwrap());
        assert!(!claim(&mut s, "j", 2, 1000, 1000).unwrap(), "held by 1");
        assert!(!claim(&mut s, "j", 2, 2999, 1000).unwrap());
        assert!(claim(&mut s, "j", 2, 3000, 1000).unwrap(), "expired");
        assert!(!claim(&mut s, "j", 1, 4000, 1000).unwrap(), "now held by 2");
    }

    #[test]
    fn a_concurrent_claim_loses() {
        let mut s = MemoryStore {
            inject_mismatches: 1,
            ..Default::default()
        };
        assert!(!claim(&mut s, "j", 1, 0, 1000).unwrap());
        assert!(claim(&mut s, "j", 1, 0, 1000).unwrap());
    }

    #[test]
    fn outages_are_reported_once() {
        let mut s = MemoryStore::default();
        let seq: Vec<Outage> = [true, false, false, false, true, true]
            .iter()
            .map(|ok| note_outcome(&mut s, "etcd", *ok).unwrap())
            .collect();
        assert_eq!(
            seq,
            vec![
                Outage::None,
                Outage::Started,
                Outage::Continues,
                Outage::Continues,
                Outage::Ended,
                Outage::None
            ]
        );
    }

    #[test]
    fn job_names_follow_what_the_job_does() {
        assert_eq!(job_name("poll", &["a", "b"]), job_name("poll", &["a", "b"]));
        assert_ne!(job_name("poll", &["a", "b"]), job_name("poll", &["ab", ""]));
        assert!(job_name("etcd", &["x"]).starts_with("etcd/"));
    }

    #[test]
    fn tick_period_is_a_quarter_of_the_shortest_interval() {
        assert_eq!(tick_period_ms(&[1000, 5000]), 250);
        assert_eq!(tick_period_ms(&[]), 1000);
        assert_eq!(tick_period_ms(&[40]), 20);
    }
}

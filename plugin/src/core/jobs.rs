//! The registry's periodic jobs as one VM's tick decides them (the glue in `filter::poller`
//! only carries out the calls): each job has a lease per scope (`core::lease`), so every
//! configuration prunes and mirrors its own records with its own limits, once per interval,
//! whatever the number of VMs and listeners.

use crate::core::config::Config;
use crate::core::lease;
use crate::core::registry::{self, PruneCursor, Pruned, RegistryError, Scope, SharedStore};
use crate::core::{etcd, poll};

pub const PRUNE_JOB: &str = "prune";

/// The prune job at `now_ms`: Some(what it did) when this VM held the run.
pub fn prune_tick<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    vm: u32,
    cursor: &mut PruneCursor,
    now_ms: u64,
) -> Result<Option<Pruned>, RegistryError> {
    let key = scope.lease_key(PRUNE_JOB);
    if !lease::claim(store, &key, vm, now_ms, scope.prune_interval_ms())? {
        return Ok(None);
    }
    registry::prune(store, scope, now_ms, cursor).map(Some)
}

/// The lease key of the pull poll of `cfg`: named by its targets too, so two listeners of one
/// scope polling different targets both poll.
pub fn poll_lease_key(scope: &Scope, cfg: &Config) -> Option<String> {
    let p = cfg.registry.poll.as_ref()?;
    let mut parts: Vec<&str> = vec![&p.cluster, &p.path];
    parts.extend(p.targets.iter().map(String::as_str));
    Some(scope.lease_key(&lease::job_name(poll::JOB, &parts)))
}

pub fn etcd_lease_key(scope: &Scope) -> String {
    scope.lease_key(etcd::JOB)
}

/// Every job interval of `cfg` (the tick period follows the shortest).
pub fn intervals(scope: &Scope, cfg: &Config) -> Vec<u64> {
    let mut out = vec![scope.prune_interval_ms()];
    if let Some(p) = &cfg.registry.poll {
        out.push(p.interval_ms);
    }
    if let Some(e) = &cfg.registry.etcd {
        out.push(e.poll_interval_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::registry::{Ident, Limits, MemoryStore};

    fn scope(id: &str, stale: u64) -> Scope {
        Scope::new(
            &[id],
            Limits {
                stale_after_ms: stale,
                max_records: 100,
            },
        )
    }

    /// Two scopes in one store: each prunes on its own lease, with its own limits.
    #[test]
    fn scopes_prune_apart() {
        let mut s = MemoryStore::default();
        let long = scope("a", 60_000);
        let short = scope("b", 15_000);
        let r = |pool| Ident {
            pool,
            app: "app",
            version: "1",
            address: "10.0.0.1:80",
        };
        registry::upsert(&mut s, &long, &r("pa"), 0).unwrap();
        registry::upsert(&mut s, &short, &r("pb"), 0).unwrap();
        let (mut c1, mut c2) = (PruneCursor::default(), PruneCursor::default());
        for t in (0..=20_000u64).step_by(500) {
            prune_tick(&mut s, &long, 1, &mut c1, t).unwrap();
            prune_tick(&mut s, &short, 2, &mut c2, t).unwrap();
        }
        assert_eq!(registry::count(&mut s, &long).unwrap(), 1);
        assert_eq!(registry::count(&mut s, &short).unwrap(), 0);
    }
}

//! The demand listing's writes (docs/design.md#draining-by-demand): a need counted and, unless
//! this VM wrote its version within `demand.coalesce_ms`, written to the version's bucket; at a
//! tick, the needs folded into windows that have ended (`core::demand::ledger`). Never on the
//! happy path: needs come from rescues and hinted requests only.

use crate::core::demand::ledger::Write;
use crate::core::demand::{self, Need};
use crate::filter::abi;
use crate::filter::shared::Shared;
use crate::filter::store::HostStore;

/// A request needed `version`: its counter, and the bucket's CAS write when the ledger says so.
pub fn record(shared: &Shared, version: &str, now_ms: u64) {
    shared.metrics.count_need(version);
    // One callback at a time per VM: the borrow is never held; if it were, write through.
    let write = match shared.needs.try_borrow_mut() {
        Ok(mut l) => l.on_need(version, now_ms, shared.config.demand.coalesce_ms),
        Err(_) => Some(Write {
            n: 1,
            at_ms: now_ms,
        }),
    };
    if let Some(w) = write {
        write_or_give_back(shared, version, now_ms, w);
    }
}

/// At the root's tick: a version this VM stopped seeing still gets the count it folded.
pub fn flush(shared: &Shared, now_ms: u64) {
    let due = match shared.needs.try_borrow_mut() {
        Ok(mut l) => l.due(now_ms),
        Err(_) => return,
    };
    for (version, w) in due {
        write_or_give_back(shared, &version, now_ms, w);
    }
}

fn write_or_give_back(shared: &Shared, version: &str, now_ms: u64, w: Write) {
    let cfg = &shared.config;
    let need = Need {
        pool: &cfg.pool,
        app: &cfg.app,
        version,
    };
    if let Err(e) = demand::record_until(&mut HostStore, &shared.scope, &need, now_ms, w.n, w.at_ms)
    {
        if let Ok(mut l) = shared.needs.try_borrow_mut() {
            l.unwritten(version, w);
        }
        abi::log(
            abi::level::DEBUG,
            &format!("mixmode: demand for version {version} not recorded yet: {e:?}"),
        );
    }
}

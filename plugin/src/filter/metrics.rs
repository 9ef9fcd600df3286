//! The metrics of docs/design.md#metrics, defined once per VM in the root context (names:
//! `metric_names.rs`). The core names counters by `core::counter::Counter`; this maps each to
//! the id the host gave its metric.

use crate::core::counter::Counter;
use crate::core::demand::VersionCounters;
use crate::filter::abi;
use crate::filter::metric_names::*;
use std::cell::RefCell;

#[derive(Default)]
pub struct Metrics {
    /// By `Counter::index`; None where the host would not define one.
    counters: [Option<u32>; Counter::ALL.len()],
    registry_records: Option<u32>,
    /// `needed.<version>`, defined on a version's first need (docs/design.md#draining-by-demand).
    needed: RefCell<VersionCounters<Option<u32>>>,
}

/// The metric name of each counter (a match, so a new counter cannot go without one).
fn name(c: Counter) -> &'static str {
    match c {
        Counter::MismatchDetected => MISMATCH_DETECTED,
        Counter::RedispatchOk => REDISPATCH_OK,
        Counter::AttemptFailed => ATTEMPT_FAILED,
        Counter::Exhausted => EXHAUSTED,
        Counter::NoPeer => NO_PEER,
        Counter::NotVersionError => NOT_VERSION_ERROR,
        Counter::ReplayTooLarge => REPLAY_TOO_LARGE,
        Counter::ReplayUnsupported => REPLAY_UNSUPPORTED,
        Counter::HeartbeatAccepted => HEARTBEAT_ACCEPTED,
        Counter::HeartbeatRejected => HEARTBEAT_REJECTED,
        Counter::RegistrySyncFailed => REGISTRY_SYNC_FAILED,
        Counter::AffinityRouted => AFFINITY_ROUTED,
        Counter::AffinityMiss => AFFINITY_MISS,
    }
}

fn counter(name: &str) -> Option<u32> {
    abi::define_metric(abi::METRIC_COUNTER, &format!("{PREFIX}{name}"))
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        abi::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            counters: Counter::ALL.map(|c| counter(name(c))),
            registry_records: abi::define_metric(
                abi::METRIC_GAUGE,
                &format!("{PREFIX}{REGISTRY_RECORDS}"),
            ),
            needed: RefCell::default(),
        }
    }

    pub fn count(&self, c: Counter) {
        bump(self.counters.get(c.index()).copied().flatten());
    }

    /// One need of `version`: its `needed.<version>` counter (or `needed.other`).
    pub fn count_need(&self, version: &str) {
        // Not reachable (one callback at a time per VM), but never worth a panic.
        if let Ok(mut needed) = self.needed.try_borrow_mut() {
            bump(needed.id(version, counter));
        }
    }

    pub fn set_records(&self, n: u64) {
        if let Some(id) = self.registry_records {
            abi::record_metric(id, n);
        }
    }
}

//! The metrics of docs/design.md#metrics, defined once per VM in the root context (names:
//! `metric_names.rs`).

use crate::core::affinity::Counter as AffinityCounter;
use crate::core::demand::VersionCounters;
use crate::core::redispatch::Counter;
use crate::filter::abi;
use crate::filter::metric_names::*;
use std::cell::RefCell;

#[derive(Default)]
pub struct Metrics {
    mismatch_detected: Option<u32>,
    redispatch_ok: Option<u32>,
    attempt_failed: Option<u32>,
    exhausted: Option<u32>,
    no_peer: Option<u32>,
    not_version_error: Option<u32>,
    replay_too_large: Option<u32>,
    replay_unsupported: Option<u32>,
    pub heartbeat_accepted: Option<u32>,
    pub heartbeat_rejected: Option<u32>,
    /// A pull target or etcd poll that failed (no answer, non-200, garbage).
    pub registry_sync_failed: Option<u32>,
    registry_records: Option<u32>,
    affinity_routed: Option<u32>,
    affinity_miss: Option<u32>,
    /// `needed.<version>`, defined on a version's first need (docs/design.md#draining-by-demand).
    needed: RefCell<VersionCounters<Option<u32>>>,
}

fn counter(name: &str) -> Option<u32> {
    abi::define_metric(abi::METRIC_COUNTER, &format!("{PREFIX}{name}"))
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            mismatch_detected: counter(MISMATCH_DETECTED),
            redispatch_ok: counter(REDISPATCH_OK),
            attempt_failed: counter(ATTEMPT_FAILED),
            exhausted: counter(EXHAUSTED),
            no_peer: counter(NO_PEER),
            not_version_error: counter(NOT_VERSION_ERROR),
            replay_too_large: counter(REPLAY_TOO_LARGE),
            replay_unsupported: counter(REPLAY_UNSUPPORTED),
            heartbeat_accepted: counter(HEARTBEAT_ACCEPTED),
            heartbeat_rejected: counter(HEARTBEAT_REJECTED),
            registry_sync_failed: counter(REGISTRY_SYNC_FAILED),
            registry_records: abi::define_metric(
                abi::METRIC_GAUGE,
                &format!("{PREFIX}{REGISTRY_RECORDS}"),
            ),
            affinity_routed: counter(AFFINITY_ROUTED),
            affinity_miss: counter(AFFINITY_MISS),
            needed: RefCell::default(),
        }
    }

    pub fn bump(id: Option<u32>) {
        if let Some(id) = id {
            abi::increment_metric(id, 1);
        }
    }

    pub fn count(&self, c: Counter) {
        Self::bump(match c {
            Counter::MismatchDetected => self.mismatch_detected,
            Counter::RedispatchOk => self.redispatch_ok,
            Counter::AttemptFailed => self.attempt_failed,
            Counter::Exhausted => self.exhausted,
            Counter::NoPeer => self.no_peer,
            Counter::NotVersionError => self.not_version_error,
            Counter::ReplayTooLarge => self.replay_too_large,
            Counter::ReplayUnsupported => self.replay_unsupported,
        });
    }

    pub fn count_affinity(&self, c: AffinityCounter) {
        Self::bump(match c {
            AffinityCounter::Routed => self.affinity_routed,
            AffinityCounter::Miss => self.affinity_miss,
        });
    }

    /// One need of `version`: its `needed.<version>` counter (or `needed.other`).
    pub fn count_need(&self, version: &str) {
        // Not reachable (one callback at a time per VM), but never worth a panic.
        if let Ok(mut needed) = self.needed.try_borrow_mut() {
            Self::bump(needed.id(version, counter));
        }
    }

    pub fn set_records(&self, n: u64) {
        if let Some(id) = self.registry_records {
            abi::record_metric(id, n);
        }
    }
}

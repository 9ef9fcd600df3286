//! The metrics of design.md §6, defined once per VM in the root context.

use crate::core::redispatch::Counter;
use crate::filter::abi;

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
}

fn counter(name: &str) -> Option<u32> {
    abi::define_metric(abi::METRIC_COUNTER, name)
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            mismatch_detected: counter("mixmode.mismatch_detected"),
            redispatch_ok: counter("mixmode.redispatch_ok"),
            attempt_failed: counter("mixmode.attempt_failed"),
            exhausted: counter("mixmode.exhausted"),
            no_peer: counter("mixmode.no_peer"),
            not_version_error: counter("mixmode.not_version_error"),
            replay_too_large: counter("mixmode.replay_too_large"),
            replay_unsupported: counter("mixmode.replay_unsupported"),
            heartbeat_accepted: counter("mixmode.heartbeat_accepted"),
            heartbeat_rejected: counter("mixmode.heartbeat_rejected"),
            registry_sync_failed: counter("mixmode.registry_sync_failed"),
            registry_records: abi::define_metric(abi::METRIC_GAUGE, "mixmode.registry_records"),
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

    pub fn set_records(&self, n: u64) {
        if let Some(id) = self.registry_records {
            abi::record_metric(id, n);
        }
    }
}

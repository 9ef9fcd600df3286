//! Every counter the filter has, named by the core: the request path (`redispatch::Step`),
//! affinity (`affinity::RequestPlan`), heartbeats and the jobs (`jobs::JobAction::Count`) all
//! return these, and the glue (`filter/metrics.rs`) maps each to the metric it defined (the
//! names: `filter/metric_names.rs`). The per-version `needed.<version>` counters are apart:
//! their names depend on the traffic (`core::demand`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    MismatchDetected,
    RedispatchOk,
    AttemptFailed,
    Exhausted,
    NoPeer,
    NotVersionError,
    ReplayTooLarge,
    ReplayUnsupported,
    HeartbeatAccepted,
    HeartbeatRejected,
    /// A pull target or etcd poll that failed (no answer, non-200, garbage, refused dispatch).
    RegistrySyncFailed,
    /// A request carried the affinity cookie and got a hint.
    AffinityRouted,
    /// A request carried the affinity cookie but no fresh peer of its version exists.
    AffinityMiss,
}

impl Counter {
    /// Every counter, in the order the glue defines them.
    pub const ALL: [Counter; 13] = [
        Counter::MismatchDetected,
        Counter::RedispatchOk,
        Counter::AttemptFailed,
        Counter::Exhausted,
        Counter::NoPeer,
        Counter::NotVersionError,
        Counter::ReplayTooLarge,
        Counter::ReplayUnsupported,
        Counter::HeartbeatAccepted,
        Counter::HeartbeatRejected,
        Counter::RegistrySyncFailed,
        Counter::AffinityRouted,
        Counter::AffinityMiss,
    ];

    /// Its position in [`Counter::ALL`]: the glue's table of metric ids is indexed by it.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_at_its_index() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
    }
}

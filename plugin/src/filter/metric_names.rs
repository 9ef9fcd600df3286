//! The filter's metric names: the one list. `filter/metrics.rs` defines them in the host as
//! `mixmode.<name>`; the test kit includes this file by path (`mixmode_tests::metric_names`) to
//! check counters by name and that the README and docs/design.md list exactly these.

pub const PREFIX: &str = "mixmode.";

pub const MISMATCH_DETECTED: &str = "mismatch_detected";
pub const REDISPATCH_OK: &str = "redispatch_ok";
pub const ATTEMPT_FAILED: &str = "attempt_failed";
pub const EXHAUSTED: &str = "exhausted";
pub const NO_PEER: &str = "no_peer";
pub const NOT_VERSION_ERROR: &str = "not_version_error";
pub const REPLAY_TOO_LARGE: &str = "replay_too_large";
pub const REPLAY_UNSUPPORTED: &str = "replay_unsupported";
pub const HEARTBEAT_ACCEPTED: &str = "heartbeat_accepted";
pub const HEARTBEAT_REJECTED: &str = "heartbeat_rejected";
pub const REGISTRY_SYNC_FAILED: &str = "registry_sync_failed";
pub const AFFINITY_ROUTED: &str = "affinity_routed";
pub const AFFINITY_MISS: &str = "affinity_miss";

pub const REGISTRY_RECORDS: &str = "registry_records";

/// Per-version counters, defined on a version's first need (`core::demand::counter_name`):
/// `needed.<version>` for a VM's first 32 versions, `needed.other` past them. Not in the lists
/// below: their names depend on the traffic.
#[allow(dead_code)]
pub const NEEDED_PREFIX: &str = "needed.";
#[allow(dead_code)]
pub const NEEDED_OTHER: &str = "needed.other";

// The lists are read by the test kit; the filter defines each metric by its name.
#[allow(dead_code)]
pub const COUNTERS: [&str; 13] = [
    MISMATCH_DETECTED,
    REDISPATCH_OK,
    ATTEMPT_FAILED,
    EXHAUSTED,
    NO_PEER,
    NOT_VERSION_ERROR,
    REPLAY_TOO_LARGE,
    REPLAY_UNSUPPORTED,
    HEARTBEAT_ACCEPTED,
    HEARTBEAT_REJECTED,
    REGISTRY_SYNC_FAILED,
    AFFINITY_ROUTED,
    AFFINITY_MISS,
];

#[allow(dead_code)]
pub const GAUGES: [&str; 1] = [REGISTRY_RECORDS];

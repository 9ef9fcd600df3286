#!/usr/bin/env bash
# Envoy's memory (RSS) with the mixmode filter, with the no-op wasm filter, and without wasm, at
# --concurrency 1, 2 and 4: after start-up and after traffic. The increment per worker is what
# one more worker's wasm VM costs (docs/module-size.md#vm-memory-per-worker).
#   bench/memory.sh [seconds of traffic, default 5]   (SETUPS="noop mixmode" to run only those)
# Needs envoy and wrk (scripts/setup.sh bench). Prints a Markdown table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRAFFIC_S="${1:-5}"
MIXMODE_WASM="${MIXMODE_WASM:-$ROOT/target/wasm32-wasip1/release/mixmode.wasm}"
ENVOY="${ENVOY_BIN:-envoy}"
TARGET="$ROOT/target/bench"
[ -f "$MIXMODE_WASM" ] || { echo "memory: $MIXMODE_WASM missing: just build" >&2; exit 2; }
cargo build -q --release --target wasm32-wasip1 --manifest-path "$ROOT/bench/noop-filter/Cargo.toml" --target-dir "$TARGET"
NOOP_WASM="$TARGET/wasm32-wasip1/release/noop_filter.wasm"

WORK="$(mktemp -d /tmp/mixmode-memory-XXXXXX)"
ENVOY_PID=""
cleanup() {
  # Only what this script started, by PID.
  [ -n "$ENVOY_PID" ] && { kill "$ENVOY_PID" 2>/dev/null || true; wait "$ENVOY_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

filter_yaml() { # name wasm config-json
  cat <<EOF
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: $1
                        root_id: $1
                        allow_on_headers_stop_iteration: true
                        vm_config:
                          vm_id: $1
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: "$2" } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '$3'
EOF
}

# The route answers itself (direct_response): every request still passes the filters, and no
# upstream's memory or timing enters the numbers.
envoy_yaml() { # setup
  cat <<EOF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
    - name: memory
      address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: memory
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [ { match: { prefix: "/" }, direct_response: { status: 200, body: { inline_string: "ok" } } } ]
                http_filters:
EOF
  case "$1" in
    noop) filter_yaml noop "$NOOP_WASM" '{}' ;;
    mixmode) filter_yaml mixmode "$MIXMODE_WASM" '{"app": "checkout", "heartbeat": {"token": "memory-token"}}' ;;
  esac
  cat <<EOF
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: mixmode_peers
      type: ORIGINAL_DST
      lb_policy: CLUSTER_PROVIDED
      connect_timeout: 1s
      original_dst_lb_config: { use_http_header: true }
EOF
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

measure() { # setup concurrency ; sets AT_START AT_END (KiB)
  local dir="$WORK/$1-$2"
  mkdir -p "$dir"
  envoy_yaml "$1" >"$dir/envoy.yaml"
  "$ENVOY" -c "$dir/envoy.yaml" --concurrency "$2" --disable-hot-restart --base-id "$((RANDOM + 20000))" \
    --admin-address-path "$dir/admin" -l warning >"$dir/log" 2>&1 &
  ENVOY_PID=$!
  local admin="" listen=""
  for _ in $(seq 600); do
    [ -s "$dir/admin" ] && admin="$(cat "$dir/admin")"
    if [ -n "$admin" ] && curl -sf "http://$admin/ready" >/dev/null 2>&1; then
      listen="$(curl -s "http://$admin/listeners?format=json" | python3 -c '
import json, sys
for l in json.load(sys.stdin)["listener_statuses"]:
    sa = l["local_address"]["socket_address"]
    print("%s:%s" % (sa["address"], sa["port_value"]))' | head -1)"
      [ -n "$listen" ] && break
    fi
    kill -0 "$ENVOY_PID" 2>/dev/null || { echo "memory: Envoy ($1) exited:" >&2; tail -5 "$dir/log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$listen" ] || { echo "memory: Envoy ($1) never became ready" >&2; exit 1; }
  sleep 2 # the workers' VMs are created as the workers start; let them settle
  AT_START="$(rss_kib "$ENVOY_PID")"
  # Enough connections that every worker takes some.
  wrk -t 2 -c $((8 * $2)) -d "${TRAFFIC_S}s" "http://$listen/" >"$dir/wrk" 2>&1
  sleep 1
  AT_END="$(rss_kib "$ENVOY_PID")"
  kill "$ENVOY_PID"; wait "$ENVOY_PID" 2>/dev/null || true; ENVOY_PID=""
}

declare -A START AFTER
for setup in ${SETUPS:-plain noop mixmode}; do
  for c in 1 2 4; do
    measure "$setup" "$c"
    s=$AT_START; a=$AT_END
    START[$setup-$c]=$s; AFTER[$setup-$c]=$a
    echo "memory: $setup --concurrency $c: $s KiB after start-up, $a KiB after ${TRAFFIC_S} s of traffic" >&2
  done
done

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Per worker: the least-squares slope over 1, 2, 4 workers.
slope() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { mx = 7/3; my = (a+b+c)/3; n = (1-mx)*(a-my) + (2-mx)*(b-my) + (4-mx)*(c-my); d = (1-mx)^2 + (2-mx)^2 + (4-mx)^2; printf "%.1f", n / d / 1024 }'; }

echo "mixmode.wasm: $(stat -c %s "$MIXMODE_WASM") bytes; noop_filter.wasm: $(stat -c %s "$NOOP_WASM") bytes; $("$ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
echo
echo "| setup | when | RSS, 1 worker (MiB) | 2 workers | 4 workers | per worker (MiB, slope) |"
echo "|---|---|---:|---:|---:|---:|"
for setup in ${SETUPS:-plain noop mixmode}; do
  for when in start traffic; do
    if [ "$when" = start ]; then
      v1=${START[$setup-1]}; v2=${START[$setup-2]}; v4=${START[$setup-4]}; label="after start-up"
    else
      v1=${AFTER[$setup-1]}; v2=${AFTER[$setup-2]}; v4=${AFTER[$setup-4]}; label="after ${TRAFFIC_S} s of traffic"
    fi
    echo "| $setup | $label | $(mib "$v1") | $(mib "$v2") | $(mib "$v4") | $(slope "$v1" "$v2" "$v4") |"
  done
done

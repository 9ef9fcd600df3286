#!/usr/bin/env bash
# The cost of mixmode, side by side in one run: plain Envoy, Envoy + a no-op
# wasm filter, Envoy + the "floor" filter (only the copy any replaying filter must take), Envoy +
# mixmode, Envoy + mixmode with version affinity configured; GET and POST with 1 KiB and 64 KiB
# bodies, and a GET with the affinity cookie (hinted with affinity, a plain request without);
# then a rescued request against a direct one; then Envoy's other wasm runtimes. Writes
# bench/results/<date>.md.
#
# The five setups run as five Envoys at once (each --concurrency 1, all pinned to core 0; only
# the one being measured gets traffic); wrk and the upstream share core 1. Many short rounds:
# in each round every case measures every setup once, in a shuffled order (ABCD, CADB, ...), so
# the ratios are taken within a round under the same machine load, and the rounds give a median
# and a bootstrap interval (bench/stats.py). Rounds go on until every target ratio is known
# within ±3% (after BENCH_MIN_ROUNDS), or BENCH_MAX_ROUNDS / BENCH_MAX_MINUTES run out.
# Knobs (environment): BENCH_DURATION (s per wrk run, default 2), BENCH_MIN_ROUNDS (default 12),
# BENCH_MAX_ROUNDS (default 60), BENCH_MAX_MINUTES (default 30), BENCH_CONNECTIONS (default 16),
# MIXMODE_WASM, ENVOY_BIN, CARGO_TARGET_DIR, BENCH_OUT (result file), BENCH_AFFINITY_CONFIG,
# BENCH_NICE (e.g. -10, needs root: run Envoy, wrk and the upstream at that priority on a
# machine other work shares).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DUR="${BENCH_DURATION:-2}"
MIN_ROUNDS="${BENCH_MIN_ROUNDS:-12}"
MAX_ROUNDS="${BENCH_MAX_ROUNDS:-60}"
MAX_MINUTES="${BENCH_MAX_MINUTES:-30}"
CONNS="${BENCH_CONNECTIONS:-16}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
MIXMODE_WASM="${MIXMODE_WASM:-$ROOT/target/wasm32-wasip1/release/mixmode.wasm}"
ENVOY="${ENVOY_BIN:-envoy}"
STAMP="$(date -u +%Y-%m-%d-%H%M)"
PRIO=()
[ -n "${BENCH_NICE:-}" ] && PRIO=(nice -n "$BENCH_NICE")
OUT="${BENCH_OUT:-$ROOT/bench/results/$STAMP.md}"

for tool in wrk taskset curl python3 "$ENVOY"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (just setup / scripts/setup.sh bench)" >&2; exit 2; }
done
[ -f "$MIXMODE_WASM" ] || { echo "bench: $MIXMODE_WASM missing: cargo build -p mixmode --release --target wasm32-wasip1" >&2; exit 2; }

echo "bench: building the no-op filter and the upstream" >&2
cargo build -q --release --target wasm32-wasip1 --manifest-path "$ROOT/bench/noop-filter/Cargo.toml" --target-dir "$TARGET"
cargo build -q --profile demo -p mixmode-demo --bin bench-upstream --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET"
NOOP_WASM="$TARGET/wasm32-wasip1/release/noop_filter.wasm"
UPSTREAM_BIN="$TARGET/demo/bench-upstream"

WORK="$(mktemp -d /tmp/mixmode-bench-XXXXXX)"
PIDS=()
cleanup() {
  # Only what this script started, by PID.
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_upstream() { # version -> sets ADDR (not in a subshell: PIDS must keep the PID)
  local v="$1" f="$WORK/upstream-$1.addr"
  "${PRIO[@]}" taskset -c 1 "$UPSTREAM_BIN" --version "$v" >"$f" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.05; done
  ADDR="$(head -1 "$f")"
}
start_upstream 1; UP="$ADDR"   # the pool: answers /mismatch with the version signal
start_upstream 2; PEER="$ADDR" # the v2 peer mixmode re-dispatches to
UP_PORT="${UP##*:}"

filter_yaml() { # name wasm runtime config-json
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
                          runtime: envoy.wasm.runtime.$3
                          code: { local: { filename: "$2" } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '$4'
EOF
}

# Records never go stale during a run (the affinity setup's hint needs a fresh record of the
# upstream; no heartbeat loop disturbs the measurements). The two mixmode setups differ only in
# the `affinity` block.
MIXMODE_CONFIG='{"app": "checkout", "heartbeat": {"token": "bench-token"}, "registry": {"stale_after_ms": 86400000}}'
AFFINITY_CONFIG_DEFAULT='{"app": "checkout", "heartbeat": {"token": "bench-token"}, "registry": {"stale_after_ms": 86400000}, "affinity": {"cookie": "mixmode-version", "host_header": "x-mixmode-host"}}'
# BENCH_AFFINITY_CONFIG replaces it: with MIXMODE_CONFIG's text the two slots run the same filter
# (an A/A check of what the slot itself adds, bench/results/2026-12-03-aa.md).
AFFINITY_CONFIG="${BENCH_AFFINITY_CONFIG:-$AFFINITY_CONFIG_DEFAULT}"

envoy_yaml() { # setup [runtime]
  local rt="${2:-v8}"
  cat <<EOF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  virtual_hosts:
                    - { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: app } } ] }
                http_filters:
EOF
  case "$1" in
    noop) filter_yaml noop "$NOOP_WASM" "$rt" '{}' ;;
    floor) filter_yaml floor "$NOOP_WASM" "$rt" 'floor' ;;
    mixmode) filter_yaml mixmode "$MIXMODE_WASM" "$rt" "$MIXMODE_CONFIG" ;;
    # Without envoy.yaml's stateful session and header_mutation filters: with one upstream the
    # hint cannot change the route, and what is measured is the filter's own work (cookie, one
    # registry lookup, one header added), not Envoy's.
    affinity) filter_yaml mixmode "$MIXMODE_WASM" "$rt" "$AFFINITY_CONFIG" ;;
  esac
  cat <<EOF
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: app
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: app
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } } } ] } ]
    - name: mixmode_peers
      type: ORIGINAL_DST
      lb_policy: CLUSTER_PROVIDED
      connect_timeout: 1s
      original_dst_lb_config: { use_http_header: true }
EOF
}

ENVOY_PID=""
ADMIN=""
LISTEN=""
start_envoy() { # setup [runtime] ; sets ENVOY_PID ADMIN LISTEN; returns 1 if Envoy exits
  local dir="$WORK/envoy-$1-${2:-v8}"
  mkdir -p "$dir"
  envoy_yaml "$1" "${2:-v8}" >"$dir/envoy.yaml"
  "${PRIO[@]}" taskset -c 0 "$ENVOY" -c "$dir/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --base-id "$((RANDOM + 20000))" -l warning --admin-address-path "$dir/admin" >"$dir/log" 2>&1 &
  ENVOY_PID=$!
  PIDS+=("$ENVOY_PID")
  LAST_LOG="$dir/log"
  for _ in $(seq 300); do
    if ! kill -0 "$ENVOY_PID" 2>/dev/null; then wait "$ENVOY_PID" 2>/dev/null; ENVOY_EXIT=$?; return 1; fi
    if [ -s "$dir/admin" ] && [ "$(curl -s "http://$(cat "$dir/admin")/ready" 2>/dev/null)" = "LIVE" ]; then
      ADMIN="$(cat "$dir/admin")"
      LISTEN="$(curl -s "http://$ADMIN/listeners?format=json" | python3 -c '
import json, sys
for l in json.load(sys.stdin)["listener_statuses"]:
    sa = l["local_address"]["socket_address"]
    print("%s:%s" % (sa["address"], sa["port_value"]))')"
      return 0
    fi
    sleep 0.05
  done
  echo "bench: Envoy not ready; log:" >&2; tail -20 "$dir/log" >&2; exit 1
}
stop_envoy() { kill "$ENVOY_PID" 2>/dev/null || true; wait "$ENVOY_PID" 2>/dev/null || true; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK="$(getconf CLK_TCK)"

printf 'wrk.method = "POST"\nwrk.body = string.rep("a", 1024)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' >"$WORK/post1k.lua"
printf 'wrk.method = "POST"\nwrk.body = string.rep("a", 65536)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' >"$WORK/post64k.lua"
printf 'wrk.headers["Cookie"] = "session=bench; mixmode-version=1"\n' >"$WORK/cookie.lua"

RAW="$WORK/raw.tsv"
: >"$RAW"
# One wrk run; appends: setup case round rps p50_us p99_us cpu_us_per_rq requests non2xx
measure() { # setup case round conns duration path
  local setup="$1" case="$2" round="$3" conns="$4" dur="$5" path="$6" script=()
  case "$case" in
    post1k) script=(-s "$WORK/post1k.lua") ;;
    post64k) script=(-s "$WORK/post64k.lua") ;;
    cookie) script=(-s "$WORK/cookie.lua") ;;
  esac
  local t0 t1 out
  t0="$(cpu_ticks "$ENVOY_PID")"
  out="$("${PRIO[@]}" taskset -c 1 wrk -t1 -c"$conns" -d"${dur}s" --latency "${script[@]}" "http://$LISTEN$path")"
  t1="$(cpu_ticks "$ENVOY_PID")"
  echo "$out" | python3 -c '
import re, sys
setup, case, rnd, ticks, tck = sys.argv[1:6]
text = sys.stdin.read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
n = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
cpu = int(ticks) * 1e6 / int(tck) / max(n, 1)
print("\t".join([setup, case, rnd, "%.0f" % rps, "%.0f" % p50, "%.0f" % p99, "%.1f" % cpu, str(n), bad.group(1) if bad else "0"]))
' "$setup" "$case" "$round" "$((t1 - t0))" "$CLK_TCK" >>"$RAW"
  tail -1 "$RAW" | awk -F'\t' '{printf "  %-8s %-8s round %s: %8s rq/s  p50 %6s us  p99 %6s us  Envoy CPU %6s us/rq  (non-2xx %s)\n", $1, $2, $3, $4, $5, $6, $7, $9}' >&2
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -A SETUP_PID SETUP_LISTEN SETUP_ADMIN
SETUPS=(plain noop floor mixmode affinity)
for setup in "${SETUPS[@]}"; do
  start_envoy "$setup" || { echo "bench: Envoy ($setup) exited:" >&2; tail -5 "$LAST_LOG" >&2; exit 1; }
  SETUP_PID[$setup]="$ENVOY_PID"
  SETUP_LISTEN[$setup]="$LISTEN"
  SETUP_ADMIN[$setup]="$ADMIN"
  "${PRIO[@]}" taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://$LISTEN/" >/dev/null # warm-up
done
# The affinity setup's hint: the upstream registered as version 1, which the cookie names. The
# mixmode setup gets the same record, so that the two differ only in the `affinity` block (its
# prune job then walks one record too).
reg="{\"app\": \"checkout\", \"version\": \"1\", \"address\": \"$UP\"}"
for setup in mixmode affinity; do
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'authorization: Bearer bench-token' \
    -H 'content-type: application/json' --data "$reg" "http://${SETUP_LISTEN[$setup]}/.well-known/mixmode/heartbeat")"
  [ "$code" = 204 ] || { echo "bench: upstream registration ($setup) answered $code" >&2; exit 1; }
done
case_setups() { # case -> the setups it measures
  if [ "$1" = cookie ]; then echo mixmode affinity; else echo "${SETUPS[@]}"; fi
}
echo "bench: throughput, rounds of 5 setups x 3 cases + 2 setups x the cookie case, ${DUR}s each (shuffled" \
  "within a round), $CONNS connections, until ±3% ($MIN_ROUNDS to $MAX_ROUNDS rounds, at most $MAX_MINUTES min)" >&2
ROUNDS=0
STOP_REASON="round limit ($MAX_ROUNDS)"
started=$SECONDS
while [ "$ROUNDS" -lt "$MAX_ROUNDS" ]; do
  ROUNDS=$((ROUNDS + 1))
  for case in get post1k post64k cookie; do
    for setup in $(printf '%s\n' $(case_setups "$case") | shuf --random-source=<(yes "$ROUNDS$case")); do
      ENVOY_PID="${SETUP_PID[$setup]}"
      LISTEN="${SETUP_LISTEN[$setup]}"
      measure "$setup" "$case" "$ROUNDS" "$CONNS" "$DUR" /
    done
  done
  if [ "$ROUNDS" -ge "$MIN_ROUNDS" ]; then
    echo "bench: after round $ROUNDS:" >&2
    if python3 "$ROOT/bench/stats.py" check "$RAW"; then STOP_REASON="every target ratio within ±3%"; break; fi
  fi
  if [ $((SECONDS - started)) -ge $((MAX_MINUTES * 60)) ]; then STOP_REASON="time limit ($MAX_MINUTES min)"; break; fi
done
echo "bench: $ROUNDS rounds; stopped on: $STOP_REASON" >&2
AFFINITY_METRICS="$(curl -s "http://${SETUP_ADMIN[affinity]}/stats?filter=wasmcustom.mixmode.(affinity|mismatch|redispatch)" | tr '\n' ' ')"
for setup in "${SETUPS[@]}"; do ENVOY_PID="${SETUP_PID[$setup]}"; stop_envoy; done

echo "bench: rescue vs direct (one connection, requests back to back)" >&2
start_envoy plain
measure plain direct 1 1 5 /
stop_envoy
start_envoy mixmode
reg="{\"app\": \"checkout\", \"version\": \"2\", \"address\": \"$PEER\"}"
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'authorization: Bearer bench-token' \
  -H 'content-type: application/json' --data "$reg" "http://$LISTEN/.well-known/mixmode/heartbeat")"
[ "$code" = 204 ] || { echo "bench: peer registration answered $code" >&2; exit 1; }
check="$(curl -s -D - -o /dev/null "http://$LISTEN/mismatch" | tr -d '\r' | grep -i -E '^(HTTP|x-mixmode)' | tr '\n' ' ')"
echo "  a /mismatch request through mixmode: $check" >&2
measure mixmode direct 1 1 5 /
measure mixmode rescued 1 1 5 /mismatch
METRICS="$(curl -s "http://$ADMIN/stats?filter=wasmcustom.mixmode" | tr '\n' ' ')"
stop_envoy

echo "bench: other wasm runtimes" >&2
RUNTIMES=""
for rt in wasmtime wamr; do
  if start_envoy mixmode "$rt"; then
    RUNTIMES+="- \`envoy.wasm.runtime.$rt\`: started (unexpected for this build)"$'\n'
    stop_envoy
  else
    why="$(grep -m1 -E 'without support|Failed to create Wasm VM' "$LAST_LOG" | sed 's/^.*\] //' | cut -c1-200)"
    last="$(grep -m1 'critical\]\[main\]' "$LAST_LOG" | sed 's/^.*\] //' | cut -c1-120)"
    RUNTIMES+="- \`envoy.wasm.runtime.$rt\`: Envoy exits with code $ENVOY_EXIT at start-up. Log: \`$why\`, then \`$last\`"$'\n'
  fi
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$(dirname "$OUT")"
export RAW OUT STAMP DUR ROUNDS MIN_ROUNDS MAX_ROUNDS STOP_REASON CONNS LOAD_BEFORE LOAD_AFTER RUNTIMES METRICS check AFFINITY_METRICS
export MACHINE="$( (lscpu | grep -E '^(Model name|Architecture|CPU\(s\)|Thread|Core|Socket|CPU max MHz|L2|L3)' ; echo "kernel: $(uname -srm)"; echo "memory: $(free -h | awk '/Mem:/{print $2}')"; echo "envoy: $("$ENVOY" --version 2>/dev/null | grep -o 'version: .*' | head -1)"; echo "wrk: $(wrk --version 2>&1 | head -1 | cut -c1-40)"; echo "rustc: $(rustc --version)"; echo "repo: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; echo "mixmode.wasm: $(stat -c %s "$MIXMODE_WASM") bytes, noop_filter.wasm: $(stat -c %s "$NOOP_WASM") bytes") 2>/dev/null)"
python3 "$ROOT/bench/report.py"
echo "bench: results in $OUT" >&2

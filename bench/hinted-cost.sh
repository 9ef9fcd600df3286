#!/usr/bin/env bash
# Where a hinted request's cost goes: the bench's cookie case only (GET with
# `cookie: session=bench; mixmode-version=1`), on plain mixmode and on one or more affinity
# builds, interleaved in shuffled rounds; Envoy CPU per request per round. Each Envoy is
# `--concurrency 1` pinned to core 0, wrk and the upstream on core 1 (as bench/run.sh).
#
#   bench/hinted-cost.sh OUT ROUNDS NAME=WASM[+filters] [NAME=WASM[+filters] ...]
#
# Every NAME=WASM runs with the affinity block; `mixmode` (MIXMODE_WASM, default the built
# filter) runs without it. `+filters` adds envoy.yaml's two affinity filters after mixmode
# (header_mutation removing x-mixmode-host from responses, the header-based stateful session).
# CASE=plain measures a GET without the cookie instead (the cost every request pays). Writes OUT/raw.tsv (setup, round, rq/s, p50 us, p99 us, CPU us/rq,
# requests) and prints each setup's CPU ratio to plain mixmode: median [95% interval].
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: bench/hinted-cost.sh OUT ROUNDS NAME=WASM ...}"
ROUNDS="${2:?rounds}"
shift 2
DUR="${BENCH_DURATION:-1}"
CONNS="${BENCH_CONNECTIONS:-16}"
MIXMODE_WASM="${MIXMODE_WASM:-$ROOT/target/wasm32-wasip1/release/mixmode.wasm}"
UPSTREAM_BIN="${UPSTREAM_BIN:-$ROOT/target/demo/bench-upstream}"
ENVOY="${ENVOY_BIN:-envoy}"
[ -x "$UPSTREAM_BIN" ] || cargo build -q --profile demo -p mixmode-demo --bin bench-upstream
mkdir -p "$OUT"
RAW="$OUT/raw.tsv"
: >"$RAW"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

taskset -c 1 "$UPSTREAM_BIN" --version 1 >"$OUT/upstream.addr" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$OUT/upstream.addr" ] && break; sleep 0.05; done
UP="$(head -1 "$OUT/upstream.addr")"
UP_PORT="${UP##*:}"

MIXMODE_CONFIG='{"app": "checkout", "heartbeat": {"token": "bench-token"}, "registry": {"stale_after_ms": 86400000}}'
AFFINITY_CONFIG='{"app": "checkout", "heartbeat": {"token": "bench-token"}, "registry": {"stale_after_ms": 86400000}, "affinity": {"cookie": "mixmode-version", "host_header": "x-mixmode-host"}}'

HM='                  - name: envoy.filters.http.header_mutation
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
                      mutations: { response_mutations: [ { remove: x-mixmode-host } ] }'
SS='                  - name: envoy.filters.http.stateful_session
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession
                      session_state:
                        name: envoy.http.stateful_session.header
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState
                          name: x-mixmode-host'
yaml() { # wasm config filters (none, filters, ss, hm, or the name of a file with filter YAML)
  local extra=""
  case "$3" in
    filters) extra="$HM
$SS" ;;
    ss) extra="$SS" ;;
    hm) extra="$HM" ;;
    none) ;;
    *) extra="$(cat "$3")" ;;
  esac
  cat <<YAML
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
                  - name: mixmode
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: mixmode
                        root_id: mixmode
                        allow_on_headers_stop_iteration: true
                        vm_config:
                          vm_id: mixmode
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: "$1" } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '$2'
$extra
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
YAML
}

declare -A PID LISTEN
start() { # name wasm config [filters]
  local dir="$OUT/envoy-$1"
  mkdir -p "$dir"
  yaml "$2" "$3" "${4:-none}" | grep -v '^$' >"$dir/envoy.yaml"
  taskset -c 0 "$ENVOY" -c "$dir/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --base-id "$((RANDOM + 20000))" -l warning --admin-address-path "$dir/admin" >"$dir/log" 2>&1 &
  PID[$1]=$!
  PIDS+=($!)
  for _ in $(seq 300); do
    if [ -s "$dir/admin" ] && [ "$(curl -s "http://$(cat "$dir/admin")/ready")" = LIVE ]; then
      LISTEN[$1]="$(curl -s "http://$(cat "$dir/admin")/listeners?format=json" | python3 -c '
import json, sys
sa = json.load(sys.stdin)["listener_statuses"][0]["local_address"]["socket_address"]
print("%s:%s" % (sa["address"], sa["port_value"]))')"
      return 0
    fi
    sleep 0.05
  done
  echo "Envoy $1 not ready:" >&2; tail -5 "$dir/log" >&2; exit 1
}

if [ "${CASE:-cookie}" = plain ]; then
  printf 'wrk.headers["Cookie"] = "session=bench"\n' >"$OUT/cookie.lua"
else
  printf 'wrk.headers["Cookie"] = "session=bench; mixmode-version=1"\n' >"$OUT/cookie.lua"
fi
NAMES=(mixmode)
start mixmode "$MIXMODE_WASM" "$MIXMODE_CONFIG"
for v in "$@"; do
  name="${v%%=*}"
  wasm="${v#*=}"
  filters=none
  case "$wasm" in *+*) filters="${wasm#*+}"; wasm="${wasm%%+*}" ;; esac
  start "$name" "$wasm" "$AFFINITY_CONFIG" "$filters"
  NAMES+=("$name")
  reg="{\"app\": \"checkout\", \"version\": \"1\", \"address\": \"$UP\"}"
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'authorization: Bearer bench-token' \
    -H 'content-type: application/json' --data "$reg" "http://${LISTEN[$name]}/.well-known/mixmode/heartbeat")"
  [ "$code" = 204 ] || { echo "registration on $name answered $code" >&2; exit 1; }
done
for n in "${NAMES[@]}"; do taskset -c 1 wrk -t1 -c"$CONNS" -d1s -s "$OUT/cookie.lua" "http://${LISTEN[$n]}/" >/dev/null; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK="$(getconf CLK_TCK)"
for r in $(seq "$ROUNDS"); do
  for n in $(printf '%s\n' "${NAMES[@]}" | shuf); do
    t0="$(ticks "${PID[$n]}")"
    out="$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$OUT/cookie.lua" "http://${LISTEN[$n]}/")"
    t1="$(ticks "${PID[$n]}")"
    echo "$out" | python3 -c '
import re, sys
name, r, ticks, tck = sys.argv[1:]
t = sys.stdin.read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
n = int(re.search(r"(\d+) requests in", t).group(1))
print("\t".join([name, r, re.search(r"Requests/sec:\s+([\d.]+)", t).group(1),
    "%.0f" % us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)),
    "%.0f" % us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1)),
    "%.1f" % (int(ticks) * 1e6 / int(tck) / max(n, 1)), str(n)]))
' "$n" "$r" "$((t1 - t0))" "$TCK" >>"$RAW"
  done
done
for n in "${NAMES[@]}"; do
  echo "$n: $(curl -s "http://$(cat "$OUT/envoy-$n/admin")/stats?filter=wasmcustom.mixmode.(affinity|needed)" | tr '\n' ' ')"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
BENCH_DIR="$ROOT/bench" python3 - "$RAW" "${NAMES[@]}" <<'PY'
import sys, os, statistics
sys.path.insert(0, os.environ.get("BENCH_DIR", "bench"))
from stats import median_ci
raw, names = sys.argv[1], sys.argv[2:]
cpu = {}
for line in open(raw):
    n, r, rps, p50, p99, c, cnt = line.split("\t")
    cpu.setdefault(n, {})[int(r)] = float(c)
base = cpu["mixmode"]
print(f"mixmode (no affinity, same cookie): CPU {statistics.median(base.values()):.1f} us/rq median")
for n in names[1:]:
    ratios = [base[r] / cpu[n][r] for r in sorted(set(base) & set(cpu[n]))]
    deltas = [cpu[n][r] - base[r] for r in sorted(set(base) & set(cpu[n]))]
    med, lo, hi = median_ci(ratios)
    dm, dlo, dhi = median_ci(deltas)
    print(f"{n}: throughput ratio to mixmode {med:.3f} [{lo:.3f}, {hi:.3f}]; "
          f"CPU +{dm:.1f} [{dlo:.1f}, {dhi:.1f}] us/rq ({len(ratios)} rounds)")
PY

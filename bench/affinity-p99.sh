#!/usr/bin/env bash
# The demo's two mixmode setups, interleaved: ROUNDS rounds, each running `mixmode` and
# `mixmode+affinity` back to back with the same seed (order alternating between rounds, so
# neither setup always runs first), both draining with the fixed drain so that the two runs
# have the same length. Writes each run's summary.json under OUT/r<N>/ and one TSV line per
# run to OUT/raw.tsv (round, seed, order, setup, p50, p99, steps, rescued, transfers, load
# average), and each run's step latencies by kind (plain, cookie, rescued, cookie+rescued) to
# OUT/kinds.tsv; bench/affinity_p99.py computes the paired ratios.
#
#   bench/affinity-p99.sh OUT [ROUNDS] [extra demo flags...]
set -euo pipefail
out=${1:?usage: bench/affinity-p99.sh OUT [ROUNDS] [demo flags...]}
rounds=${2:-10}
shift $(( $# >= 2 ? 2 : 1 ))
demo=${DEMO_BIN:-target/demo/demo}
seeds=(42 7 1234 99 5 2026 314 8 77 1001 13 600 21 4242 3 17)
mkdir -p "$out"
: > "$out/raw.tsv"
: > "$out/kinds.tsv"
for ((r = 0; r < rounds; r++)); do
  seed=${seeds[$(( r % ${#seeds[@]} ))]}
  if (( r % 2 == 0 )); then order=mixmode,mixmode+affinity; else order=mixmode+affinity,mixmode; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  "$demo" --no-walkthrough --drain-by fixed --setups "$order" --seed "$seed" \
    --out "$out/r$r" "$@" > "$out/r$r.log" 2>&1
  python3 - "$out/r$r/summary.json" "$r" "$seed" "$order" "$load" >> "$out/raw.tsv" <<'PY'
import json, sys
path, r, seed, order, load = sys.argv[1:]
for s in json.load(open(path)):
    print("\t".join(str(x) for x in [r, seed, order, s["setup"], s["p50_step_ms"], s["p99_step_ms"],
          s["steps_sent"], s["rescued_steps"], s["completed"] + s["failed"], s["failed"], load]))
PY
  python3 - "$out/r$r/summary.json" "$r" >> "$out/kinds.tsv" <<'PY'
import json, sys
path, r = sys.argv[1:]
for s in json.load(open(path)):
    for kind, k in s.get("step_kinds", {}).items():
        print("\t".join(str(x) for x in [r, s["setup"], kind, k["steps"], k["p50_ms"], k["p90_ms"],
              k["p99_ms"], k["in_top_1pct"]]))
PY
  tail -n 2 "$out/raw.tsv"
done

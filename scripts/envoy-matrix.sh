#!/usr/bin/env bash
# Runs the real-Envoy suites on every supported Envoy minor (or the versions given), one after
# the other, and prints one line per version: tests passed / failed and the wall time.
#   scripts/envoy-matrix.sh                  # every version of scripts/envoy-versions.sh
#   scripts/envoy-matrix.sh 1.36.4 1.40.0    # only these
# Each version's Envoy comes from its own venv (scripts/envoy-versions.sh installs it) and is
# handed to the tests through ENVOY_BIN. MIXMODE_MATRIX_TESTS overrides the test targets
# (default: envoy envoy_h2 envoy_reconfig faults). Full logs: target/envoy-matrix/<version>.log.
# Exit status: non-zero when any version failed a test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Packages built without the V8 runtime (docs/envoy-versions.md): mixmode cannot load there.
NO_V8=(1.38.3)
read -r -a TESTS <<<"${MIXMODE_MATRIX_TESTS:-envoy envoy_h2 envoy_reconfig faults}"
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done

export MIXMODE_WASM="${MIXMODE_WASM:-$PWD/target/wasm32-wasip1/release/mixmode.wasm}"
[ -f "$MIXMODE_WASM" ] || { echo "envoy-matrix: $MIXMODE_WASM missing: just build" >&2; exit 2; }
logs="${CARGO_TARGET_DIR:-target}/envoy-matrix"
mkdir -p "$logs"

mapfile -t installed < <(scripts/envoy-versions.sh "$@")
echo "envoy-matrix: building the test binaries once" >&2
cargo test -q -p mixmode-tests "${test_args[@]}" --no-run

summary=()
failed=0
for line in "${installed[@]}"; do
  version="${line%% *}"
  bin="${line#* }"
  log="$logs/$version.log"
  start=$SECONDS
  status=ok
  if [[ " ${NO_V8[*]} " == *" $version "* ]]; then
    # Nothing can load: only the test that pins this (Envoy refuses, naming the runtime).
    echo "envoy-matrix: Envoy $version ($bin) has no V8: only the test that checks its refusal" >&2
    ENVOY_BIN="$bin" cargo test -q -p mixmode-tests --test envoy v8_runtime_present -- --color never >"$log" 2>&1 || status=FAILED
    [ "$status" = ok ] && status="no-V8"
  else
    echo "envoy-matrix: Envoy $version ($bin): ${TESTS[*]}" >&2
    ENVOY_BIN="$bin" cargo test -q -p mixmode-tests "${test_args[@]}" -- --color never >"$log" 2>&1 || status=FAILED
  fi
  secs=$((SECONDS - start))
  passed="$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')"
  nfail="$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')"
  line="$(printf '%-8s %-6s %4s passed %3s failed %5ss' "$version" "$status" "$passed" "$nfail" "$secs")"
  if [ "$status" = FAILED ]; then
    failed=1
    names="$(grep -E '^    [a-z_0-9]+$' "$log" | sort -u | tr -d ' ' | paste -sd, - || true)"
    line+="  (${names:-see $log})"
  fi
  summary+=("$line")
  echo "  $line" >&2
done

echo
echo "Envoy scenario matrix (${TESTS[*]}), mixmode.wasm $(stat -c %s "$MIXMODE_WASM") bytes:"
printf '%s\n' "${summary[@]}"
exit "$failed"

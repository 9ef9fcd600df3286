#!/usr/bin/env bash
# Runs mixmode's fuzz targets (cargo-fuzz / libFuzzer) and prints, per target, the inputs executed,
# exec/s and the crashes found. Exits non-zero when any target crashed or could not run.
#
#   fuzz/run.sh                      every target, 10,000,000 inputs each (the issue's bar)
#   fuzz/run.sh --seconds 20         every target for 20 s (the bounded CI run)
#   fuzz/run.sh --runs 100000 signal config
# Options: --runs N, --seconds S (both may be given: whichever comes first),
#   --sanitizer none|address (default none: the core has no `unsafe`, and ASan halves the speed),
#   --tolerate-known (do not stop on the open findings listed in fuzz/README.md),
#   --fresh (start from the committed seeds only, forgetting the corpus grown by earlier runs),
#   --replay (run each target once over fuzz/regressions/<target>/ instead of fuzzing).
# Only stable Rust is needed: RUSTC_BOOTSTRAP=1 lets it accept cargo-fuzz's -Z flags.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS_ALL=(config heartbeat signal registry)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-fuzz}"
export RUSTC_BOOTSTRAP=1

runs=""
seconds=""
sanitizer=none
fresh=0
replay=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        --tolerate-known) export MIXMODE_FUZZ_TOLERATE_KNOWN=1; shift ;;
        --fresh) fresh=1; shift ;;
        --replay) replay=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${TARGETS_ALL[@]}")
if [ -z "$runs" ] && [ -z "$seconds" ]; then
    runs=10000000
fi

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    nice -n 19 cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2
fi

cd "$here"
echo "run.sh: building ${targets[*]} (sanitizer $sanitizer)" >&2
nice -n 19 cargo fuzz build -s "$sanitizer" --target-dir "$CARGO_TARGET_DIR" >&2

logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"
failed=0
summary=()
for t in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$t.rs" ]; then
        echo "run.sh: no target $t" >&2
        failed=1
        continue
    fi
    work="$CARGO_TARGET_DIR/corpus/$t"
    [ "$fresh" = 1 ] && rm -rf "$work"
    mkdir -p "$work" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    # A fixed seed, a bounded input size and a per-input timeout keep runs repeatable and bounded;
    # new inputs go to the work corpus (first directory), never into the committed seeds.
    args=(-seed=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [ -n "$runs" ] && args+=("-runs=$runs")
    [ -n "$seconds" ] && args+=("-max_total_time=$seconds")
    [ -f "$t.dict" ] && args+=("-dict=$t.dict")
    log="$logs/$t.log"
    rc=0
    started=$(date +%s)
    if [ "$replay" = 1 ]; then
        inputs=(regressions/"$t"/*)
        if [ ! -e "${inputs[0]}" ]; then
            continue
        fi
        nice -n 19 cargo fuzz run -s "$sanitizer" --target-dir "$CARGO_TARGET_DIR" "$t" \
            "${inputs[@]}" >"$log" 2>&1 || rc=$?
    else
        nice -n 19 cargo fuzz run -s "$sanitizer" --target-dir "$CARGO_TARGET_DIR" "$t" \
            "$work" $([ -d "corpus/$t" ] && echo "corpus/$t") -- "${args[@]}" >"$log" 2>&1 || rc=$?
    fi
    wall=$(($(date +%s) - started))
    units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
    if [ -z "$units" ]; then
        units=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1 || true)
    fi
    if [ -z "$units" ]; then
        units=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d "#" || true)
    fi
    [ "$replay" = 1 ] && units=${#inputs[@]}
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1 || true)
    secs=${secs:-$wall}
    if [ -z "$speed" ] || [ "$speed" = 0 ]; then
        if [ -n "$units" ] && [ "$secs" -gt 0 ]; then
            speed=$((units / secs))
        fi
    fi
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi
    if [ "$crashes" -ne 0 ] || [ "$rc" -ne 0 ]; then
        failed=1
        echo "run.sh: $t FAILED (exit $rc); log $log; artifacts in fuzz/artifacts/$t/" >&2
        grep -m1 -A2 'panicked at\|ERROR: libFuzzer\|SUMMARY:' "$log" >&2 || true
    fi
    summary+=("$(printf '%-10s inputs %12s   exec/s %8s   seconds %6s   crashes %d' \
        "$t" "${units:-?}" "${speed:-?}" "${secs:-?}" "$crashes")")
done

echo "fuzz summary (sanitizer $sanitizer${MIXMODE_FUZZ_TOLERATE_KNOWN:+, known findings tolerated}):"
for line in "${summary[@]}"; do
    echo "  $line"
done
exit "$failed"

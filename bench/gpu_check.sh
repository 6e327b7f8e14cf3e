#!/usr/bin/env bash
# The gpu image variant checked inside itself (bench/gpu_check.py): does it find CUDA, the
# GPU, and say so; on a host with an NVIDIA GPU and its container toolkit, also the GPU
# against the CPU for training and serving. Not part of `make test`: the image is ~8 GB.
#
#   KERASOP_VARIANT=gpu scripts/images.sh build runtime     # once
#   bench/gpu_check.sh [--quick] [IMAGE]                     # default: that image
#
# Runs as the image's user with a read-only root, like a trainer pod; results land in
# bench/results/gpu_check.json.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
args=()
[ "${1:-}" = --quick ] && { args+=(--quick); shift; }
image=${1:-$(KERASOP_VARIANT=gpu bash "$ROOT/scripts/images.sh" tag runtime)}
gpus=()
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    gpus=(--gpus all)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
chmod 777 "$out" # the image's user (1000) writes the results
echo "gpu_check: $image, ${gpus[*]:-no GPU on this host}" >&2
docker run --rm --read-only --tmpfs /tmp:exec,size=8g -e HOME=/tmp -w /tmp \
    -v "$ROOT/bench:/bench:ro" -v "$out:/out" "${gpus[@]}" \
    "$image" python /bench/gpu_check.py "${args[@]}" --out /out
mkdir -p "$ROOT/bench/results"
cp "$out/gpu_check.json" "$ROOT/bench/results/gpu_check.json"

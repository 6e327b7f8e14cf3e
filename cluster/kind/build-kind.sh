#!/usr/bin/env bash
# Build the kind CLI from its Go module (sigs.k8s.io/kind, via the Go module proxy), cached under
# $KERASOP_CACHE by version: a second run prints the path at once.
#
# Usage: cluster/kind/build-kind.sh        Prints the kind binary's path on the last line.
# Environment: KERASOP_CACHE, KERASOP_KIND_VERSION (default below), GO.
set -euo pipefail

VERSION="${KERASOP_KIND_VERSION:-v0.33.0}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
BIN="$CACHE/kind/$VERSION/bin"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

mkdir -p "$BIN"
exec 9>"$BIN/.lock"
flock 9
if [[ ! -x "$BIN/kind" ]]; then
  echo "[build-kind $(date +%H:%M:%S)] go install sigs.k8s.io/kind@$VERSION" >&2
  GOBIN="$BIN" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0 \
    GOPROXY="${GOPROXY:-https://proxy.golang.org}" "$GO" install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$VERSION"
fi
echo "$BIN/kind"

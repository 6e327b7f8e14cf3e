#!/usr/bin/env bash
# Build ghz (the gRPC load generator of bench/serving_peers.py's `grpc` cells) from its Go
# module github.com/bojand/ghz via the Go module proxy, cached by version under
# ${KERASOP_CACHE:-~/.cache/kerasop}/tools/bin: a second run prints the path at once.
#
# Usage: bash bench/build_ghz.sh
# Environment:
#   KERASOP_CACHE       cache root (default ~/.cache/kerasop)
#   KERASOP_GHZ_VERSION module version (default below: the proxy's @latest when written)
#   GO                  go binary (default: go on PATH, else /usr/local/go/bin/go)
#
# Prints the path of the binary (ghz-<version>, with a `ghz` link beside it) on the last line.
set -euo pipefail

VERSION="${KERASOP_GHZ_VERSION:-v0.120.0}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
BIN="$CACHE/tools/bin"
TARGET="$BIN/ghz-$VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

mkdir -p "$BIN"
if [[ ! -x "$TARGET" ]]; then
  exec 9>"$BIN/.ghz.lock"
  flock 9
  if [[ ! -x "$TARGET" ]]; then
    echo "[build-ghz] go install github.com/bojand/ghz/cmd/ghz@$VERSION" >&2
    gobin=$(mktemp -d "$BIN/.ghz-build.XXXXXX")
    trap 'rm -rf "$gobin"' EXIT
    GOBIN="$gobin" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" \
      GOPROXY="${GOPROXY:-https://proxy.golang.org}" \
      "$GO" install -ldflags "-s -w" "github.com/bojand/ghz/cmd/ghz@$VERSION"
    mv "$gobin/ghz" "$TARGET"
  fi
fi
ln -sfn "ghz-$VERSION" "$BIN/ghz"
echo "$TARGET"

#!/usr/bin/env bash
# Build SeaweedFS's `weed` (the S3-compatible store of the object-storage tests, docs/model-store.md)
# from the Go module github.com/seaweedfs/seaweedfs (via the Go module proxy), cached under
# $KERASOP_CACHE/tools/bin by version: a second run prints the path at once.
#
# Technique: `go install module@version` refuses SeaweedFS (its go.mod has replace directives),
# and a throw-away main module that requires it would drop those replaces. So the module's own
# source is downloaded (`go mod download -json` into a GOMODCACHE under the cache) and built as
# the main module: `go build ./weed` inside a writable copy of it. About 3 minutes on 2 cores.
#
# Usage: cluster/build-seaweedfs.sh
# Environment:
#   KERASOP_CACHE               cache root (default ~/.cache/kerasop)
#   KERASOP_SEAWEEDFS_VERSION   module version to build (default below)
#   GO                          go binary (default: go on PATH, else /usr/local/go/bin/go)
#   KERASOP_SEAWEEDFS_FORCE=1   rebuild even if the binary exists
#
# Prints the path of the bin directory (weed-<version>, and weed linked to it) on the last line.
set -euo pipefail

VERSION="${KERASOP_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
BIN="$CACHE/tools/bin"
WORK="$CACHE/seaweedfs/$VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
MODULE=github.com/seaweedfs/seaweedfs
TARGET="$BIN/weed-$VERSION"

log() { echo "[build-seaweedfs $(date +%H:%M:%S)] $*" >&2; }

mkdir -p "$BIN" "$WORK"
done_() { [[ -x "$TARGET" && "${KERASOP_SEAWEEDFS_FORCE:-0}" != 1 ]]; }
link() { ln -sfn "weed-$VERSION" "$BIN/weed"; echo "$BIN"; }
if done_; then link; exit 0; fi

# Serialise concurrent invocations (make tools vs. a test fixture).
exec 9>"$WORK/.lock"
flock 9
if done_; then link; exit 0; fi

export GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export GOMODCACHE="$WORK/gomodcache"
export CGO_ENABLED=0

t_all=$(date +%s)
src=$(cd "$WORK" && GOFLAGS= "$GO" mod download -json "$MODULE@$VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$src/go.mod" ]] || { echo "could not download $MODULE@$VERSION" >&2; exit 1; }
# The module cache is read-only; the build writes go.sum updates, so it runs in a copy.
if [[ ! -f "$WORK/src/go.mod" ]]; then
  rm -rf "$WORK/src.tmp"
  cp -r "$src" "$WORK/src.tmp"
  chmod -R u+w "$WORK/src.tmp"
  mv "$WORK/src.tmp" "$WORK/src"
fi
log "module source ready in $(( $(date +%s) - t_all ))s; building ./weed ..."
t0=$(date +%s)
(cd "$WORK/src" && "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/.weed.tmp" ./weed)
mv "$BIN/.weed.tmp" "$TARGET"
log "built weed in $(( $(date +%s) - t0 ))s ($(du -h "$TARGET" | cut -f1))"
# The downloaded dependencies are only needed to build; keep the binary.
chmod -R u+w "$GOMODCACHE" && rm -rf "$GOMODCACHE" "$WORK/src"
link

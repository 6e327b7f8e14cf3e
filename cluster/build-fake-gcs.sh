#!/usr/bin/env bash
# Build fake-gcs-server (the GCS server of the gs:// object-storage tests, docs/model-store.md)
# from the Go module github.com/fsouza/fake-gcs-server (via the Go module proxy), cached under
# $KERASOP_CACHE/tools/bin by version: a second run prints the path at once. Its go.mod has no
# replace directives, so a plain `go install module@version` builds it.
#
# Usage: cluster/build-fake-gcs.sh
# Environment:
#   KERASOP_CACHE              cache root (default ~/.cache/kerasop)
#   KERASOP_FAKE_GCS_VERSION   module version to build (default below)
#   GO                         go binary (default: go on PATH, else /usr/local/go/bin/go)
#
# Prints the path of the bin directory (fake-gcs-server-<version>, and fake-gcs-server linked
# to it) on the last line.
set -euo pipefail

VERSION="${KERASOP_FAKE_GCS_VERSION:-v1.56.1}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
BIN="$CACHE/tools/bin"
WORK="$CACHE/fake-gcs-server/$VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
TARGET="$BIN/fake-gcs-server-$VERSION"

link() { ln -sfn "fake-gcs-server-$VERSION" "$BIN/fake-gcs-server"; echo "$BIN"; }
mkdir -p "$BIN" "$WORK"
if [[ -x "$TARGET" ]]; then link; exit 0; fi

# Serialise concurrent invocations (make tools vs. a test fixture).
exec 9>"$WORK/.lock"
flock 9
if [[ -x "$TARGET" ]]; then link; exit 0; fi

t0=$(date +%s)
GOTOOLCHAIN=local GOPROXY="${GOPROXY:-https://proxy.golang.org}" GOFLAGS="${GOFLAGS:-} -modcacherw -buildvcs=false" \
  GOPATH="$WORK/gopath" GOMODCACHE="$WORK/gopath/pkg/mod" GOBIN="$WORK/bin" CGO_ENABLED=0 \
  "$GO" install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$VERSION"
mv "$WORK/bin/fake-gcs-server" "$TARGET"
echo "[build-fake-gcs] built in $(( $(date +%s) - t0 ))s ($(du -h "$TARGET" | cut -f1))" >&2
# The downloaded dependencies are only needed to build; keep the binary.
rm -rf "$WORK/gopath" "$WORK/bin"
link

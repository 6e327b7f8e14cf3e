#!/usr/bin/env bash
# The S3 server of the object-storage tests and of docker compose's `s3` profile: SeaweedFS's
# `weed` (cluster/build-seaweedfs.sh) alone in a one-layer image made by addons/mkimage.py, no
# registry and no Dockerfile. Runs as 1000:1000; /data (its store) is owned by that user, so a
# fresh named volume mounted there is writable.
#
# Usage: cluster/seaweedfs-image.sh [--docker]
#   prints "<tar> <image>": the docker-archive tar in $KERASOP_CACHE/images (built once per
#   weed version and recipe) and its name, kerasop/seaweedfs:<key>. With --docker it is also
#   loaded into the local Docker engine and tagged kerasop/seaweedfs:local (docker-compose.yml).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
weed=$(bash "$HERE/build-seaweedfs.sh" | tail -n1)/weed
weed=$(readlink -f "$weed")
key=$( (basename "$weed"; cat "$0" "$HERE/addons/mkimage.py") | sha256sum | cut -c1-12)
image="kerasop/seaweedfs:$key"
tar="$CACHE/images/seaweedfs-$key.tar"
if [[ ! -s "$tar" ]]; then
    mkdir -p "$CACHE/images"
    rm -f "$CACHE"/images/seaweedfs-*.tar # an older recipe's: load-images.sh would load it too
    python3 "$HERE/addons/mkimage.py" "$tar" "$image" --add "$weed:/usr/bin/weed:755" \
        --entrypoint /usr/bin/weed --user 1000:1000 --volume /data --port 8333/tcp >&2
fi
if [[ "${1:-}" == --docker ]]; then
    if ! docker image inspect "$image" >/dev/null 2>&1; then docker load -i "$tar" >&2; fi
    docker tag "$image" kerasop/seaweedfs:local
fi
echo "$tar $image"

#!/usr/bin/env bash
# Build keras-operator's container images with no container registry at all.
#
#   scripts/images.sh build [runtime|operator|serving ...]   base image if missing, then the images
#   scripts/images.sh base                           only kerasop-base:bookworm
#   scripts/images.sh wheelhouse [runtime|operator|serving]  only download the wheelhouse(s) on the host
#   scripts/images.sh save [runtime|operator|serving ...]    build, then docker-archive tars in the cache
#   scripts/images.sh sizes                          sizes of the built images
#   scripts/images.sh tag [runtime|operator|serving ...]     the tags a build gives (KERASOP_VARIANT too)
#   scripts/images.sh prune                          delete old and cached build stages (frees
#                                                    disk; the next build reinstalls dependencies)
#
# Everything is cached and idempotent: a second `build` with nothing changed
# takes seconds. See docs/docker.md.
#
# Environment:
#   KERASOP_CACHE            cache dir (default ~/.cache/kerasop): rootfs, wheelhouses, tars
#   KERASOP_PIP_SOURCE       wheelhouse (default: `pip download` on the host, then build with
#                            --network none) | index (pip inside the build, --network host,
#                            trusting KERASOP_CA_BUNDLE)
#   KERASOP_CA_BUNDLE        CA bundle for the TLS-inspecting proxy (default: the system one)
#   KERASOP_VARIANT          cpu (default) | gpu: the CUDA builds of TensorFlow, JAX and ONNX
#                            Runtime in the runtime and serving images (images/requirements.py),
#                            tag suffix -gpu
#   KERASOP_RUNTIME_EXTRAS   extras of the runtime image (default: runtime)
#   KERASOP_DEBIAN_MIRROR    Debian mirror (default: the host's apt source for bookworm)
#   KERASOP_REFRESH=1        re-resolve the wheelhouse and rebuild without the layer cache
set -euo pipefail
shopt -s inherit_errexit # errors inside $(...) stop the script too

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${KERASOP_CACHE:-$HOME/.cache/kerasop}
SUITE=bookworm
BASE_IMAGE=kerasop-base:$SUITE
BUILD_IMAGE=kerasop-build:$SUITE # base + binutils, for the build stages only
BASE_PACKAGES=python3,python3-venv,tini
PIP_SOURCE=${KERASOP_PIP_SOURCE:-wheelhouse}
VARIANT=${KERASOP_VARIANT:-cpu}
CA_BUNDLE=${KERASOP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
RUNTIME_EXTRAS=${KERASOP_RUNTIME_EXTRAS:-runtime}
REFRESH=${KERASOP_REFRESH:-0}
PY=${PYTHON:-python3}
VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml")

export DOCKER_BUILDKIT=0 # Debian's dockerd 20.10 and no buildx: the classic builder

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The Debian mirror the host's apt uses for $SUITE (deb822 or one-line format).
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v s="$SUITE" 'BEGIN{RS=""} $0 ~ "Suites:[^\n]*(^| )"s"( |\n|$)" {
                  for (i = 1; i <= NF; i++) if ($i == "URIs:") { print $(i+1); exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    uri=$(awk -v s="$SUITE" '$1 == "deb" && $3 == s {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${KERASOP_DEBIAN_MIRROR:-$(host_mirror)}
SECURITY_MIRROR=${KERASOP_DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

image_tag() { # runtime|operator|serving -> repository:tag
    case $1 in
        runtime) echo "kerasop-runtime:$VERSION$([ "$VARIANT" = gpu ] && echo -gpu)" ;;
        operator) echo "kerasop-operator:$VERSION" ;;
        serving) echo "kerasop-serving:$VERSION$([ "$VARIANT" = gpu ] && echo -gpu)" ;;
        *) die "unknown image '$1' (runtime|operator|serving)" ;;
    esac
}
image_extras() { case $1 in runtime) echo "$RUNTIME_EXTRAS" ;; *) echo "$1" ;; esac; }
image_variant() { case $1 in runtime | serving) echo "$VARIANT" ;; *) echo cpu ;; esac; }
# Distributions an image must never contain (checked inside the build).
image_forbid() {
    case $1 in
        runtime) echo kopf ;;
        operator) echo "tensorflow tensorflow-cpu keras jax" ;;
        serving) echo "tensorflow tensorflow-cpu keras jax jaxlib tf2onnx kopf" ;;
    esac
}

ensure_docker() {
    # 9>&-: the engine must not inherit (and hold forever) the build lock.
    docker info >/dev/null 2>&1 || "$ROOT/scripts/start-dockerd.sh" >&2 9>&- ||
        die "no Docker engine (scripts/start-dockerd.sh failed)"
}

# --------------------------------------------------------------------------
# Base image: debootstrap a Debian root into the cache, then `docker import`.
# --------------------------------------------------------------------------

base_recipe() { # changes whenever what goes into the base changes
    printf '%s\n' base-v1 "$SUITE" "$MIRROR" "$SECURITY_MIRROR" "$BASE_PACKAGES" | sha256sum | cut -c1-16
}

label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

customize_rootfs() { # $1 = a fresh debootstrap root; runs apt in a chroot
    local r=$1
    # Only what the images need: no docs/man pages/translations, now or on later installs.
    cat >"$r/etc/dpkg/dpkg.cfg.d/kerasop-slim" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$r/etc/apt/apt.conf.d/90kerasop"
    rm -f "$r/etc/apt/sources.list"
    cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Security and point-release updates (debootstrap only knows the release itself).
    cp /etc/resolv.conf "$r/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod +x "$r/usr/sbin/policy-rc.d"
    mount -t proc proc "$r/proc"
    # shellcheck disable=SC2064
    trap "umount '$r/proc' 2>/dev/null || true" EXIT
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -ec 'apt-get update -qq
                apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade
                apt-get clean' >>"$CACHE/debootstrap.log" 2>&1 || die "apt-get upgrade in the rootfs failed; see $CACHE/debootstrap.log"
    umount "$r/proc"
    trap - EXIT
    rm -f "$r/usr/sbin/policy-rc.d" "$r/etc/resolv.conf"
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/debconf/*-old \
        "$r"/var/log/apt/* "$r"/var/log/dpkg.log "$r"/var/log/bootstrap.log "$r"/tmp/* \
        "$r"/usr/share/man/* "$r"/usr/share/info/*
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    # The unprivileged user of every image (uid/gid 1000); no passwd package needed.
    echo 'kerasop:x:1000:1000:keras-operator:/home/kerasop:/usr/sbin/nologin' >>"$r/etc/passwd"
    echo 'kerasop:x:1000:' >>"$r/etc/group"
    echo 'kerasop:!:19000::::::' >>"$r/etc/shadow"
    install -d -o 1000 -g 1000 -m 0755 "$r/home/kerasop"
}

build_base() {
    local recipe
    recipe=$(base_recipe)
    if [ "$REFRESH" != 1 ] && [ "$(label_of "$BASE_IMAGE" io.kerasop.base-recipe)" = "$recipe" ]; then
        log "$BASE_IMAGE is up to date"
    else
        import_base "$recipe"
    fi
    if [ "$REFRESH" != 1 ] && [ "$(label_of "$BUILD_IMAGE" io.kerasop.base-id)" = "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" ]; then
        log "$BUILD_IMAGE is up to date"
    else
        local ctx=$CACHE/build/context-build t0=$SECONDS
        rm -rf "$ctx" && mkdir -p "$ctx"
        if [[ $MIRROR == https:* ]]; then cp "$CA_BUNDLE" "$ctx/proxy-ca.pem"; else : >"$ctx/proxy-ca.pem"; fi
        docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            --label "io.kerasop.base-id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" \
            -f "$ROOT/images/build/Dockerfile" -t "$BUILD_IMAGE" "$ctx" >"$CACHE/build/build-image.log" 2>&1 ||
            { tail -n 20 "$CACHE/build/build-image.log" >&2; die "docker build $BUILD_IMAGE failed"; }
        log "built $BUILD_IMAGE in $((SECONDS - t0)) s"
    fi
}

import_base() { # $1 = recipe: debootstrap (or reuse) the rootfs, then docker import it
    local recipe=$1 rootfs tmp t0
    rootfs=$CACHE/rootfs-$SUITE
    if [ "$(cat "$rootfs/.kerasop-recipe" 2>/dev/null)" != "$recipe" ]; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        [ "$(id -u)" = 0 ] || die "debootstrap and chroot need root"
        tmp=$rootfs.tmp
        # An interrupted run can leave proc/sys mounted inside: unmount before deleting.
        awk -v t="$tmp/" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
        rm -rf --one-file-system "$tmp"
        mkdir -p "$CACHE/debootstrap-debs"
        t0=$SECONDS
        log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" \
            --cache-dir="$CACHE/debootstrap-debs" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
            die "debootstrap failed; see $CACHE/debootstrap.log"
        customize_rootfs "$tmp"
        echo "$recipe" >"$tmp/.kerasop-recipe"
        rm -rf "$rootfs"
        mv "$tmp" "$rootfs"
        log "rootfs ready in $((SECONDS - t0)) s: $rootfs ($(du -sh "$rootfs" | cut -f1))"
    else
        log "reusing $rootfs"
    fi
    t0=$SECONDS
    tar -C "$rootfs" --numeric-owner --exclude=./.kerasop-recipe \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -cf - . |
        docker import \
            --change "LABEL io.kerasop.base-recipe=$recipe" \
            --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase, python3, tini (keras-operator base)\"" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            - "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE in $((SECONDS - t0)) s"
}

# --------------------------------------------------------------------------
# Build contexts: the project wheel, the requirements, a wheelhouse, the CA.
# --------------------------------------------------------------------------

# The project as a wheel, built from a copy of exactly what the wheel contains
# (so nothing is written into the checkout), and reused while that copy is unchanged.
build_project_wheel() { # $1 = output dir
    local src=$CACHE/build/src out=$1 key
    rm -rf "$src" && mkdir -p "$src" "$out"
    "$PY" - "$ROOT" "$src" <<'EOF2'
import shutil, sys, tomllib
from pathlib import Path
root, dst = Path(sys.argv[1]), Path(sys.argv[2])
conf = tomllib.load(open(root / "pyproject.toml", "rb"))
dirs = set(conf.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values())
ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
for name in ["pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE", "README.md"]:
    if (root / name).exists():
        shutil.copy2(root / name, dst / name)
for d in sorted(dirs):
    shutil.copytree(root / d, dst / d, ignore=ignore)
readme = conf["project"].get("readme")
if isinstance(readme, str) and not (dst / readme).exists():
    print(f"warning: {readme} is missing; the wheel gets a placeholder", file=sys.stderr)
    (dst / readme).write_text("keras-operator\n")
EOF2
    key=$(cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
    if ! ls "$CACHE/build/wheel-$key"/*.whl >/dev/null 2>&1; then
        rm -rf "$CACHE"/build/wheel-*
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$CACHE/build/wheel-$key" "$src" >&2 ||
            die "building the project wheel failed"
    fi
    cp "$CACHE/build/wheel-$key"/*.whl "$out/"
}

requirements_for() { # image -> requirements on stdout
    "$PY" "$ROOT/images/requirements.py" "$ROOT/pyproject.toml" \
        --extras "$(image_extras "$1")" --variant "$(image_variant "$1")"
}

# A wheelhouse for Debian bookworm's python3.11 on x86_64, resolved once and reused
# until the requirements change (KERASOP_REFRESH=1 re-resolves).
wheelhouse_for() { # image -> path of the wheelhouse
    local reqs key dir platforms=() v
    reqs=$(requirements_for "$1")
    key=$(printf '%s\n' wheelhouse-v1 "$reqs" | sha256sum | cut -c1-16)
    dir=$CACHE/wheelhouse/$1-$(image_variant "$1")-$key
    if [ "$REFRESH" = 1 ] || [ ! -f "$dir/.complete" ]; then
        for v in $(seq 17 36); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
        platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
            --platform manylinux1_x86_64 --platform linux_x86_64)
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        printf '%s\n' "$reqs" >"$dir.tmp/requirements.txt"
        log "pip download: wheelhouse for $1 ($(image_variant "$1"))"
        local t0=$SECONDS
        PIP_FIND_LINKS='' "$PY" -m pip download --quiet --disable-pip-version-check \
            --dest "$dir.tmp" --only-binary=:all: --implementation cp --python-version 3.11 \
            --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
            -r "$dir.tmp/requirements.txt" >&2 || die "pip download for $1 failed"
        touch "$dir.tmp/.complete"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        log "wheelhouse $dir: $(du -sh "$dir" | cut -f1) in $((SECONDS - t0)) s"
    fi
    echo "$dir"
}

stage_context() { # image -> build context dir on stdout
    local ctx
    ctx=$CACHE/build/context-$1-$(image_variant "$1")
    rm -rf "$ctx" && mkdir -p "$ctx/wheels"
    cp "$ROOT/images/requirements.py" "$ROOT/images/install.sh" "$ctx/"
    # Only the dependency tables of pyproject.toml: other edits keep the big layer cached.
    "$PY" - "$ROOT/pyproject.toml" >"$ctx/pyproject.toml" <<'EOF2'
import json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("[project]\ndependencies = " + json.dumps(project.get("dependencies", [])))
print("[project.optional-dependencies]")
for extra, reqs in sorted(project.get("optional-dependencies", {}).items()):
    print(f"{json.dumps(extra)} = {json.dumps(reqs)}")
EOF2
    if [ "$PIP_SOURCE" = index ]; then
        [ -s "$CA_BUNDLE" ] || die "KERASOP_CA_BUNDLE=$CA_BUNDLE is missing"
        cp "$CA_BUNDLE" "$ctx/proxy-ca.pem"
    else
        : >"$ctx/proxy-ca.pem" # unused: the wheelhouse build has no network
        local wheels
        wheels=$(wheelhouse_for "$1")
        cp -al "$wheels"/*.whl "$ctx/wheels/"
    fi
    build_project_wheel "$ctx/dist"
    echo "$ctx"
}

build_image() { # runtime|operator
    local name=$1 tag ctx network t0 inputs args nocache=()
    tag=$(image_tag "$name")
    ctx=$(stage_context "$name")
    network=none
    [ "$PIP_SOURCE" = index ] && network=host
    args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "BUILD_IMAGE=$BUILD_IMAGE"
        --build-arg "EXTRAS=$(image_extras "$name")"
        --build-arg "VARIANT=$(image_variant "$name")"
        --build-arg "PIP_SOURCE=$PIP_SOURCE"
        --build-arg "FORBID=$(image_forbid "$name")"
        --label "org.opencontainers.image.version=$VERSION"
        --label "io.kerasop.source-revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)")
    # Everything the image is made from; equal to the image's label = nothing to do
    # (saves sending the context, ~0.3 GB for the runtime, to the engine again).
    inputs=$( {
        (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        sha256sum <"$ROOT/images/$name/Dockerfile"
        printf '%s\n' "${args[@]}" "$network"
        docker image inspect -f '{{.Id}}' "$BASE_IMAGE" "$BUILD_IMAGE"
    } | sha256sum | cut -c1-16)
    if [ "$REFRESH" != 1 ] && [ "$(label_of "$tag" io.kerasop.inputs)" = "$inputs" ]; then
        log "$tag is up to date"
    else
        t0=$SECONDS
        log "docker build $tag (pip source: $PIP_SOURCE, network: $network)"
        [ "$REFRESH" = 1 ] && nocache=(--no-cache)
        docker build --network "$network" "${nocache[@]}" "${args[@]}" \
            --label "io.kerasop.inputs=$inputs" \
            -f "$ROOT/images/$name/Dockerfile" -t "$tag" "$ctx" >"$CACHE/build/$name.log" 2>&1 ||
            { tail -n 40 "$CACHE/build/$name.log" >&2; die "docker build $tag failed; full log: $CACHE/build/$name.log"; }
        log "built $tag in $((SECONDS - t0)) s ($(size_of "$tag"))"
        # Earlier builds of this image, now untagged, and their build stages: all but the
        # newest stage image (this build's layer cache) of this image/variant/pip source.
        docker image prune -f --filter "label=org.opencontainers.image.title=${tag%%:*}" >/dev/null
        docker images --filter dangling=true --format '{{.CreatedAt}}\t{{.ID}}' \
            --filter "label=io.kerasop.stage=$name-$(image_variant "$name")-$PIP_SOURCE" |
            sort -r | tail -n +2 | cut -f2 | xargs -r docker rmi >/dev/null 2>&1 ||
            log "kept an old stage image still used by a stopped container (docker container prune)"
    fi
    verify_image "$name" "$tag"
}

verify_image() { # smoke checks: entry points import, user, no forbidden packages
    local name=$1 tag=$2 uid id stamp=$CACHE/build/verified-$1
    id=$(docker image inspect -f '{{.Id}}' "$tag")
    [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && return 0
    uid=$(docker run --rm --entrypoint id "$tag" -u)
    [ "$uid" = 1000 ] || die "$tag runs as uid $uid, not 1000"
    local module
    case $name in runtime) module=kerasop_trainer ;; serving) module=kerasop_server.app ;; *) module=kerasop_operator ;; esac
    docker run --rm --read-only "$tag" python -c "import kerasop, $module" ||
        die "$tag: the project does not import"
    case $name in
        serving)
            if docker run --rm "$tag" python -c 'import tensorflow' >/dev/null 2>&1; then
                die "$tag can import tensorflow: the serving image must not contain it"
            fi
            docker run --rm --read-only "$tag" python -c 'import onnxruntime, orjson, PIL' ||
                die "$tag: the server's engine or codecs do not import" ;;
        operator)
            if docker run --rm "$tag" python -c 'import tensorflow' >/dev/null 2>&1; then
                die "$tag can import tensorflow: the operator image must not contain it"
            fi ;;
        runtime)
            if docker run --rm "$tag" python -c 'import kopf' >/dev/null 2>&1; then
                die "$tag can import kopf: the runtime image must not contain it"
            fi
            # The backends really work (their libraries were stripped): fit, and export on TF.
            local backend
            for backend in tensorflow $(docker run --rm "$tag" python -c 'import jax; print("jax")' 2>/dev/null); do
                docker run --rm --read-only --tmpfs /tmp -e KERAS_BACKEND="$backend" "$tag" python -c '
import os, numpy as np, keras
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
m.compile("adam", "mse")
m.fit(np.zeros((8, 4)), np.zeros((8, 1)), verbose=0)
if os.environ["KERAS_BACKEND"] == "tensorflow":
    m.export("/tmp/sm", verbose=False)' >/dev/null 2>&1 || die "$tag: keras fit on $backend does not work"
            done ;;
    esac
    echo "$id" >"$stamp"
    log "verified $tag (uid 1000, imports, no forbidden packages)"
}

size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

save_image() { # docker-archive tar in $CACHE/images, rewritten only when the image changed
    local tag=$1 out id
    out=$CACHE/images/${tag//[:\/]/_}.tar
    id=$(docker image inspect -f '{{.Id}}' "$tag")
    mkdir -p "$CACHE/images"
    if [ -f "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then
        log "$out is up to date"
    else
        docker save -o "$out.tmp" "$tag" && mv "$out.tmp" "$out" && echo "$id" >"$out.id"
        log "saved $tag -> $out ($(du -h "$out" | cut -f1))"
    fi
    echo "$out"
}

main() {
    local cmd=${1:-build}
    shift || true
    local images=("$@")
    [ ${#images[@]} -gt 0 ] || images=(runtime operator)
    mkdir -p "$CACHE/build"
    # One build at a time per cache (CI and a developer may share a machine).
    exec 9>"$CACHE/images.lock"
    flock 9
    case $cmd in
        base) ensure_docker; build_base ;;
        wheelhouse) for i in "${images[@]}"; do wheelhouse_for "$i"; done ;;
        build) ensure_docker; build_base; for i in "${images[@]}"; do build_image "$i"; done ;;
        save)
            ensure_docker; build_base
            for i in "${images[@]}"; do build_image "$i"; save_image "$(image_tag "$i")"; done ;;
        tag) for i in "${images[@]}"; do image_tag "$i"; done ;;
        sizes)
            ensure_docker
            for t in "$BASE_IMAGE" $(for i in "${images[@]}"; do image_tag "$i"; done); do
                printf '%-32s %s\n' "$t" "$(size_of "$t" 2>/dev/null || echo 'not built')"
            done ;;
        prune)
            ensure_docker
            docker image prune -f --filter label=io.kerasop.stage
            docker image prune -f --filter label=org.opencontainers.image.title=kerasop-runtime
            docker image prune -f --filter label=org.opencontainers.image.title=kerasop-operator
            docker image prune -f --filter label=org.opencontainers.image.title=kerasop-serving ;;
        -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d' ;;
        *) die "unknown command '$cmd' (build|base|wheelhouse|save|tag|sizes|prune)" ;;
    esac
}

main "$@"

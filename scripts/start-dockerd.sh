#!/usr/bin/env bash
# Start a Docker engine if none answers, and wait until it does. Idempotent:
# with a running engine it only checks it. Used by `make test` and scripts/images.sh.
#
# Debian's docker.io (dockerd 20.10) on this VM type works with cgroup v1 and its
# default bridge network. If the bridge/iptables setup fails (some sandboxes), it
# retries with --iptables=false --bridge=none; everything in this project uses
# host networking, so that fallback loses nothing we need.
#
# Where this machine's capability bounding set is short of the full list (this VM lacks
# CAP_SYS_RESOURCE), privileged containers (kind's nodes) fail in runc; the engine then runs them
# through cluster/kind/runc-within-bounds, which drops the capabilities the host cannot grant.
#
# Environment: DOCKER_HOST (default unix:///var/run/docker.sock),
#              KERASOP_DOCKERD_LOG (default /var/log/kerasop-dockerd.log),
#              KERASOP_DOCKERD_ARGS (extra dockerd flags).
set -euo pipefail

SOCK=${DOCKER_HOST:-unix:///var/run/docker.sock}
LOG=${KERASOP_DOCKERD_LOG:-/var/log/kerasop-dockerd.log}

ready() { docker -H "$SOCK" info >/dev/null 2>&1; }

# Docker flags for a bounding set short of every capability the kernel knows (none otherwise).
bounded_runtime_args() {
    local last mask
    last=$(cat /proc/sys/kernel/cap_last_cap)
    mask=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
    if (( mask != (1 << (last + 1)) - 1 )); then
        # A copy outside the checkout: the engine outlives it.
        install -D -m 0755 "$(dirname "$0")/../cluster/kind/runc-within-bounds" /usr/local/libexec/kerasop-runc
        echo "--add-runtime kerasop-runc=/usr/local/libexec/kerasop-runc --default-runtime kerasop-runc"
    fi
}

wait_ready() { # $1 = pid of the dockerd we started
    for _ in $(seq 1 60); do
        ready && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

start() { # extra dockerd flags...
    local path=${SOCK#unix://}
    # A socket or pid file left by a dead engine blocks a new one.
    if [ -S "$path" ] && ! ready; then rm -f "$path"; fi
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    echo "start-dockerd: dockerd --host=$SOCK $* (log: $LOG)" >&2
    # setsid: the engine outlives the shell (or CI step) that started it.
    # shellcheck disable=SC2086
    setsid dockerd --host="$SOCK" "$@" $(bounded_runtime_args) ${KERASOP_DOCKERD_ARGS:-} >>"$LOG" 2>&1 </dev/null &
    wait_ready $!
}

if ready; then
    echo "start-dockerd: engine already running ($(docker -H "$SOCK" version -f '{{.Server.Version}}'))" >&2
    exit 0
fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd not installed (apt-get install docker.io)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "start-dockerd: needs root" >&2; exit 1; }
mkdir -p "$(dirname "$LOG")"

if start; then
    :
else
    echo "start-dockerd: the default network setup failed; retrying with --iptables=false --bridge=none" >&2
    tail -n 20 "$LOG" >&2 || true
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; sleep 3; fi
    start --iptables=false --bridge=none || { tail -n 40 "$LOG" >&2; exit 1; }
fi
echo "start-dockerd: engine ready ($(docker -H "$SOCK" version -f '{{.Server.Version}}'))" >&2

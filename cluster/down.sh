#!/usr/bin/env bash
# Tear down the local cluster made by cluster/up.sh, also after a half-failed up:
# stops pods (CNI DEL through containerd's CRI), every component, leftover shims and container
# processes; removes kube-proxy/kubelet iptables rules, the KERASOP-FORWARD chain, the bridge and
# the service route; unmounts everything under the state dir; removes the /kerasop cgroups;
# restores the sysctls kubelet changed; deletes the state dir.
#
# Usage: sudo cluster/down.sh          KERASOP_CLUSTER_DIR as for up.sh
# Only processes this cluster started are signalled: each is found by pid file or by being an
# etcd/kube-*/containerd/shim process whose command line names the state dir, or a process in
# the cluster's own cgroup (/kerasop).
set -uo pipefail

# shellcheck source=node/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/lib.sh"

[[ $EUID -eq 0 ]] || { echo "down.sh must run as root" >&2; exit 1; }
T0=$SECONDS
if [[ -d "$DIR" && ! -f "$MARKER" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
  echo "$DIR was not made by cluster/up.sh (no $MARKER); not touching it" >&2
  exit 1
fi

ipt() { iptables -w "$@" 2>/dev/null; }

# 1. Controllers first, so nothing recreates or reschedules pods while they are stopped.
for c in hostpath-provisioner kube-scheduler kube-controller-manager kubelet; do
  [[ -f "$DIR/run/$c.pid" ]] && log "stopping $c"
  stop_proc "$c" 20
done

# 2. Pods: through CRI, so the CNI plugins release addresses, veths and hostport rules.
CRICTL="$CACHE/node/bin/crictl"
if [[ -S "$CONTAINERD_SOCK" ]] && is_running containerd; then
  if [[ -x "$CRICTL" ]]; then
    log "removing pods (crictl rmp)"
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\n' "$CONTAINERD_SOCK" "$CONTAINERD_SOCK" \
      >"$DIR/run/crictl-down.yaml"
    timeout 120 "$CRICTL" --config "$DIR/run/crictl-down.yaml" --timeout 60s rmp --all --force >/dev/null 2>&1 \
      || log "crictl rmp did not finish cleanly; continuing"
  else
    log "no crictl ($CRICTL): killing tasks with ctr (CNI state is cleaned up by hand below)"
    for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
fi

# 3. kube-router (NetworkPolicy, optional: its chains and ipsets go in step 8), kube-proxy, then
#    kube-proxy's rules.
[[ -f "$DIR/run/kube-router.pid" ]] && log "stopping kube-router"
stop_proc kube-router 10
[[ -f "$DIR/run/kube-proxy.pid" ]] && log "stopping kube-proxy"
stop_proc kube-proxy 10
KPROXY="$CACHE/k8s/$K8S_VERSION/bin/kube-proxy"
if [[ -x "$KPROXY" ]] && [[ "$(iptables-save 2>/dev/null)" == *$'\n:KUBE-'* ]]; then
  log "removing kube-proxy rules (kube-proxy --cleanup)"
  cleanup_log="$DIR/logs/kube-proxy.log"; [[ -d "$DIR/logs" ]] || cleanup_log=/dev/null
  "$KPROXY" --cleanup >>"$cleanup_log" 2>&1 || true
fi

# 4. The runtime, then whatever it left behind: shims (a crashed containerd leaves them running)
#    and every process still in the cluster's cgroup (containers of a crashed runtime).
[[ -f "$DIR/run/containerd.pid" ]] && log "stopping containerd"
stop_proc containerd 20

# Processes of this cluster: BINARIES (names) whose command line names the state dir.
procs_of() {
  local p exe cmd names=" $* "
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$p" == "$$" ]] && continue
    exe="$(readlink "/proc/$p/exe" 2>/dev/null)" || continue
    [[ "$names" == *" ${exe##*/} "* ]] || continue
    cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" || continue
    [[ "$cmd" == *"$DIR/"* ]] && echo "$p"
  done
}
cgroup_pids() {
  local d
  for d in /sys/fs/cgroup/pids/kerasop /sys/fs/cgroup/memory/kerasop /sys/fs/cgroup/freezer/kerasop; do
    [[ -d "$d" ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}
kill_all() { # kill_all WHAT PID...: SIGTERM, then SIGKILL what is left
  local what="$1" sig p alive; shift
  (($#)) || return 0
  log "stopping $what: $*"
  for sig in TERM KILL; do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    ((${#alive[@]})) || return 0
    kill -"$sig" "${alive[@]}" 2>/dev/null || true
    sleep 2
  done
}
# shellcheck disable=SC2046
kill_all "leftover containers" $(cgroup_pids)
# shellcheck disable=SC2046
kill_all "leftover shims" $(procs_of containerd-shim-runc-v2)

# 5. The control plane; then any component of this cluster whose pid file was lost.
# (Short grace: the API server drains requests for up to a minute, and its data is about to go.)
for c in kube-apiserver etcd; do
  [[ -f "$DIR/run/$c.pid" ]] && log "stopping $c"
  stop_proc "$c" 10
done
# shellcheck disable=SC2046
kill_all "leftover components" $(procs_of etcd kube-apiserver kube-controller-manager kube-scheduler \
  kubelet kube-proxy kube-router containerd containerd-shim-runc-v2 kerasop-hostpath-provisioner)
# shellcheck disable=SC2046
kill_all "leftover containers" $(cgroup_pids)

# 6. Mounts under the state dir (kubelet volumes, container rootfs, network namespaces).
if [[ -d "$DIR" ]]; then
  for pass in 1 2 3; do
    mapfile -t mnts < <(mounts_under "$DIR")
    ((${#mnts[@]})) || break
    for m in "${mnts[@]}"; do
      umount "$m" 2>/dev/null || { ((pass == 3)) && umount -l "$m" 2>/dev/null; } || true
    done
  done
  left="$(mounts_under "$DIR" | wc -l)"
  ((left == 0)) || log "warning: $left mounts under $DIR could not be unmounted"
fi

# 7. cgroups (deepest first; empty ones only, which they now are).
while read -r d; do
  [[ -d "$d/kerasop" ]] && find "$d/kerasop" -depth -type d -exec rmdir {} + 2>/dev/null
  [[ -d "$d/kerasop" ]] && log "warning: $d/kerasop not removed (processes left?)"
done < <(cgroup_dirs)

# 8. Network: bridge (its address and routes go with it), our FORWARD chain, any KUBE-* chains
#    kubelet/kube-proxy left, portmap chains for our pods.
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  log "deleting bridge $BRIDGE"
  for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
fi
ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
while ipt -D FORWARD -j "$FW_CHAIN"; do :; done
ipt -F "$FW_CHAIN" && ipt -X "$FW_CHAIN"

# Remove jumps into chains matching a prefix from every chain of a table, then the chains.
drop_chains() {
  local table="$1" pattern="$2" rule chain
  mapfile -t chains < <(iptables -w -t "$table" -S 2>/dev/null | awk -v pat="$pattern" '$1 == "-N" && $2 ~ pat {print $2}')
  ((${#chains[@]})) || return 0
  for chain in "${chains[@]}"; do
    iptables -w -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" | grep '^-A ' | while read -r rule; do
      # shellcheck disable=SC2086
      eval "iptables -w -t $table -D ${rule#-A }" 2>/dev/null || true
    done
  done
  for chain in "${chains[@]}"; do ipt -t "$table" -F "$chain"; done
  for chain in "${chains[@]}"; do ipt -t "$table" -X "$chain"; done
}
for table in filter nat mangle; do drop_chains "$table" '^KUBE-'; done
# kube-router's ipsets (KUBE-SRC-*, KUBE-DST-*, ...), unused once its chains are gone.
if command -v ipset >/dev/null; then
  for set in $(ipset list -n 2>/dev/null | grep '^KUBE-'); do ipset destroy "$set" 2>/dev/null || true; done
fi
# portmap: per-pod CNI-DN-* chains that point at our pod subnet, then the shared CNI-HOSTPORT-*
# chains once no pod of any CNI network uses them any more.
prefix="${NODE_POD_CIDR%.*}."
for chain in $(iptables -w -t nat -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-DN-/ {print $2}'); do
  [[ "$(iptables -w -t nat -S "$chain" 2>/dev/null)" == *"$prefix"* ]] && drop_chains nat "^$chain\$"
done
if [[ "$(iptables -w -t nat -S 2>/dev/null)" != *"-N CNI-DN-"* ]]; then
  drop_chains nat '^CNI-HOSTPORT-'
fi

# 9. sysctls kubelet changed.
if [[ -f "$DIR/run/sysctl.orig" ]]; then
  while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$DIR/run/sysctl.orig"
fi

# 10. The state dir (volumes included).
if [[ -d "$DIR" ]]; then
  if [[ -n "$(mounts_under "$DIR")" ]]; then
    log "not deleting $DIR: mounts remain"; exit 1
  fi
  rm -rf --one-file-system "$DIR"
fi
log "cluster down in $((SECONDS - T0))s"

#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the test tiers need (`make test` calls this first).
#
#   etcd-server                          component tier (real kube-apiserver + etcd)
#   docker.io docker-compose debootstrap docker tier (images from a local Debian root)
#   iptables iproute2 gcc libc6-dev      e2e tier (kind's nodes run in Docker: the host's routes into
#                                        the cluster; the static pause binary of the node image)
#   python3-venv make openssl lua5.1     set-up, certificates, Argo CD health check test
#
# Idempotent: packages already installed are skipped, and with all of them present
# nothing runs (no apt-get update). As root with apt-get it installs the missing ones;
# otherwise it prints the one command that does, and fails.
set -euo pipefail

PACKAGES=(
  python3-venv make openssl lua5.1
  etcd-server
  docker.io docker-compose debootstrap
  iptables iproute2 gcc libc6-dev
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all ${#PACKAGES[@]} system packages present" >&2
  exit 0
fi

command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-system-deps: missing system packages: ${missing[*]}" >&2
  echo "install-system-deps: install them with (as root, Debian/Ubuntu):" >&2
  echo "  $command" >&2
  exit 1
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system-deps: done" >&2

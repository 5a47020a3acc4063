#!/usr/bin/env bash
# Install what the local cluster's node mode needs on a Debian machine: containerd, runc,
# the CNI plugins (bridge, host-local, loopback), iptables, iproute2 and util-linux
# (unshare, nsenter).
#
# Idempotent: a second run finds everything and installs nothing. Needs root (apt-get); runs
# `apt-get update` only when something is missing.
#
# Only the binaries are used: the node runs its own containerd with a private configuration,
# root, state and socket (controller/devcluster/node.py), never the package's service. Where
# the package manager would start that service (a machine booted with systemd), it is stopped
# and disabled again, so nothing of ours keeps running after the tests.
set -euo pipefail

# file that must exist -> Debian package
declare -A PKG=(
  [/usr/bin/containerd]=containerd
  [/usr/bin/containerd-shim-runc-v2]=containerd
  [/usr/bin/ctr]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/lib/cni/host-local]=containernetworking-plugins
  [/usr/lib/cni/loopback]=containernetworking-plugins
  [/usr/sbin/iptables]=iptables
  [/usr/sbin/ip]=iproute2
  [/usr/bin/nsenter]=util-linux
  [/usr/bin/unshare]=util-linux
)

missing=()
for f in "${!PKG[@]}"; do
  [ -x "$f" ] || missing+=("${PKG[$f]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ]; then
  echo "node-tools: missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "node-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
if [ -d /run/systemd/system ] && systemctl is-enabled containerd >/dev/null 2>&1; then
  systemctl disable --now containerd >&2 || true
fi
for f in "${!PKG[@]}"; do
  [ -x "$f" ] || { echo "node-tools: $f still missing after apt-get install" >&2; exit 1; }
done

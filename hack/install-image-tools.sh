#!/usr/bin/env bash
# Install what `make image` needs on a Debian machine: podman (with runc), debootstrap.
#
# Idempotent: a second run finds every command and installs nothing. Needs root (apt-get);
# run `apt-get update` first only when something is missing.
#
# Why these: there is no Docker daemon on the build machines. Debian's podman builds and runs
# images daemonless as root; we run containers with runc (crun fails on the hybrid cgroup
# layout of these machines). No image registry is reachable, so the test base image is made
# from Debian packages with debootstrap (hack/build-base-image.sh).
set -euo pipefail

# command -> Debian package
declare -A PKG=([podman]=podman [runc]=runc [debootstrap]=debootstrap)

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
# gpgv and the archive keyring let debootstrap verify what it downloads.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
command -v gpgv >/dev/null 2>&1 || missing+=(gpgv)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "image-tools: missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "image-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "image-tools: $cmd still missing after apt-get install" >&2; exit 1; }
done

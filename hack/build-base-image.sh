#!/usr/bin/env bash
# The test base image: Debian bookworm + Debian's python3 (3.11), made with debootstrap and
# `podman import`, because no image registry is reachable from the build machines (so
# python:3.11-slim, the Dockerfile's production base, cannot be pulled here).
#
# It stands in for python:3.11-slim where the Dockerfile relies on it: `python3` with venv
# and ensurepip, CA certificates, coreutils (`sleep` for the chart's preStop hook),
# groupadd/useradd. The same Debian release, a different Python build (Debian's 3.11.x in /usr,
# not python.org's in /usr/local): the Dockerfile installs into a venv, so it does not care.
#
# Cached twice, keyed by this script's content: the image in podman's store, and its rootfs
# archive in ~/.cache/changegate/image/ (re-imported in seconds if the store was wiped).
# A second run builds nothing and prints the same reference.
#
# Usage: hack/build-base-image.sh      prints the image reference on stdout; progress on stderr
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), REBUILD_BASE=1 to rebuild
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEY=$(sha256sum "$0" | cut -c1-12)
REF=localhost/changegate-base:${SUITE}-python3-${KEY}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/changegate/image
ARCHIVE=$CACHE/base-${SUITE}-${KEY}.tar

step() { echo "base-image: $*" >&2; }
fail() { echo "base-image: FAILED at step '$1'; see the output above" >&2; exit 1; }

mkdir -p "$CACHE"
# Two builds at once (two engineers, or a test and a human) must not debootstrap twice.
exec 9>"$CACHE/.base.lock"
flock 9

if [ -z "${REBUILD_BASE:-}" ] && podman image exists "$REF"; then
  echo "$REF"; exit 0
fi

import_archive() {
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    "$ARCHIVE" "$REF" >/dev/null || fail "podman import $ARCHIVE"
}

if [ -z "${REBUILD_BASE:-}" ] && [ -s "$ARCHIVE" ]; then
  step "importing the cached $ARCHIVE"
  import_archive
  echo "$REF"; exit 0
fi

WORK=$(mktemp -d "$CACHE/base-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/rootfs
step "debootstrap $SUITE ($PACKAGES) from $MIRROR (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; fail debootstrap; }
version=$(chroot "$R" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') || fail "run python3"
[ "$version" = 3.11 ] || fail "expected Debian's python 3.11, got $version"
chroot "$R" python3 -c 'import ensurepip, venv' || fail "python3-venv"

# As the official slim images: no docs or man pages, now or from later apt-get installs.
cat > "$R/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
find "$R/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* \
       "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
       "$R"/var/cache/debconf/*-old "$R"/var/log/* "$R"/tmp/* "$R"/dev/*
: > "$R/etc/resolv.conf"; : > "$R/etc/hostname"   # the runtime provides both

step "archiving the rootfs"
tar --numeric-owner --xattrs -C "$R" -cf "$ARCHIVE.tmp" . || fail "tar the rootfs"
mv "$ARCHIVE.tmp" "$ARCHIVE"
# Older archives (a previous version of this script) are dead weight.
find "$CACHE" -maxdepth 1 -name "base-*.tar" ! -name "$(basename "$ARCHIVE")" -delete
import_archive
step "done: $REF ($(du -m "$ARCHIVE" | cut -f1) MB rootfs)"
echo "$REF"

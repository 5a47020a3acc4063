#!/usr/bin/env bash
# Build changegate's image from the Dockerfile with podman (no Docker daemon needed), tagged
# as the Helm chart's default image: <values.yaml image.repository>:<pyproject version>.
#
# Installs what it needs first (hack/install-image-tools.sh). With no image registry
# reachable, the base is made from Debian packages (hack/build-base-image.sh) and passed as
# the Dockerfile's PYTHON_IMAGE; set PYTHON_IMAGE=python:3.11-slim where a registry is
# reachable. podman's layer cache makes a rebuild after a code change take seconds: the
# locked dependencies are a layer of their own.
#
# Usage: hack/build-image.sh          prints the image reference on stdout; progress on stderr
# Env:   PYTHON_IMAGE, IMAGE_REPOSITORY, IMAGE_TAG (defaults above)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "image: $*" >&2; }
fail() { echo "image: FAILED at step '$1'; see the output above" >&2; exit 1; }

bash hack/install-image-tools.sh || fail "install podman, runc, debootstrap"

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
CHART_REPOSITORY=$(awk '/^image:/ {f=1; next} f && /^[^ #]/ {f=0} f && $1 == "repository:" {print $2; exit}' charts/changegate/values.yaml)
REPOSITORY=${IMAGE_REPOSITORY:-$CHART_REPOSITORY}
TAG=${IMAGE_TAG:-$VERSION}
[ -n "$REPOSITORY" ] || fail "read image.repository from charts/changegate/values.yaml"
REF=$REPOSITORY:$TAG

BASE=${PYTHON_IMAGE:-}
if [ -z "$BASE" ]; then
  BASE=$(bash hack/build-base-image.sh) || fail "build the base image"
fi

# As the tests run containers: runc (crun fails on this machine's hybrid cgroups), cgroupfs,
# and explicit rlimits (without them runc fails on setrlimit).
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
args=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
      --build-arg "PYTHON_IMAGE=$BASE" --build-arg "VERSION=$VERSION" --tag "$REF" --file Dockerfile)
# Egress from these machines may pass a TLS-inspecting proxy whose CA only the host's bundle
# holds: lend that bundle to the build steps (mounted, never copied into a layer).
HOST_CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$HOST_CA" ] && args+=(--volume "$HOST_CA:$HOST_CA:ro")

old=$(podman image inspect --format '{{.Id}}' "$REF" 2>/dev/null || true)
step "building $REF on $BASE"
"${PODMAN[@]}" build "${args[@]}" . >&2 || fail "podman build"
new=$(podman image inspect --format '{{.Id}}' "$REF")
# The image this tag named before is garbage now (unless a container still uses it).
if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
size=$(podman image inspect --format '{{.Size}}' "$REF")
step "done: $REF ($(( size / 1000000 )) MB)"
echo "$REF"

#!/usr/bin/env bash
# Build the helm v3 CLI from the Go module proxy at a pinned version and cache it.
#
# There is no helm package on the build machines and no network access besides the Go
# module proxy, so we build helm the same way we build the control plane: with
# `go install`, at a pinned version, into a cache outside the repository. A second run
# reuses the cached binary and builds nothing.
#
# Usage: hack/build-helm.sh [OUTDIR]
#   OUTDIR defaults to ${XDG_CACHE_HOME:-~/.cache}/changegate/helm/${HELM_VERSION}
#   Prints the path of the helm binary on stdout; progress goes to stderr.
# Env:   HELM_VERSION (default v3.22.0 — the newest v3 on the module proxy when pinned)
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
OUT=${1:-$CACHE/changegate/helm/$HELM_VERSION}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}

step() { echo "helm: $*" >&2; }
fail() { echo "helm: FAILED at step '$1' (helm ${HELM_VERSION}); see the output above, or put a helm ${HELM_VERSION} binary at $OUT/helm" >&2; exit 1; }

if [ -x "$OUT/helm" ]; then
  echo "$OUT/helm"
  exit 0
fi

command -v go >/dev/null || { echo "helm: Go is not installed; install Go >= 1.24 or put a helm ${HELM_VERSION} binary at $OUT/helm" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ld="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
step "building helm ${HELM_VERSION} (a few minutes on a cold cache)"
GOBIN="$WORK/bin" go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2 || fail "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"$WORK/bin/helm" version --short >&2 || fail "run the built helm"
# Move into place last so an interrupted build never leaves a half-written binary cached.
mv "$WORK/bin/helm" "$OUT/helm.tmp" && mv "$OUT/helm.tmp" "$OUT/helm" || fail "install into $OUT"
step "done: $OUT/helm"
echo "$OUT/helm"

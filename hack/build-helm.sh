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

# helm's own Makefile stamps the version and, from the client-go it is built with, the default
# Kubernetes version that `helm template` and `helm lint` assume. Without the latter helm
# defaults to v1.20 and refuses charts with a newer kubeVersion constraint.
step "resolving helm.sh/helm/v3@${HELM_VERSION}"
modfile=$(cd "$WORK" && go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') || fail "download helm.sh/helm/v3@${HELM_VERSION}"
[ -f "$modfile" ] || fail "download helm.sh/helm/v3@${HELM_VERSION}"
clientgo=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$modfile")
[ -n "$clientgo" ] || fail "find the k8s.io/client-go version helm ${HELM_VERSION} uses"
k8s_minor=${clientgo#v0.}; k8s_minor=${k8s_minor%%.*}
ld="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ld+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${k8s_minor}"
done
step "building helm ${HELM_VERSION} (a few minutes on a cold cache)"
GOBIN="$WORK/bin" go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2 || fail "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"$WORK/bin/helm" version --short >&2 && echo "helm: default Kubernetes version v1.${k8s_minor} (client-go ${clientgo})" >&2 || fail "run the built helm"
# Move into place last so an interrupted build never leaves a half-written binary cached.
mv "$WORK/bin/helm" "$OUT/helm.tmp" && mv "$OUT/helm.tmp" "$OUT/helm" || fail "install into $OUT"
step "done: $OUT/helm"
echo "$OUT/helm"

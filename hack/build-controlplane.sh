#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd from the Go module proxy at pinned versions.
#
# Through a consumer module of k8s.io/kubernetes (hack/kube-module.sh says why).
#
# Usage: hack/build-controlplane.sh OUTDIR
# Env:   KUBE_VERSION (default v1.37.2), ETCD_VERSION (default v3.6.16)
set -euo pipefail

OUT=${1:?usage: build-controlplane.sh OUTDIR}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}

step() { echo "controlplane: $*" >&2; }
fail() { echo "controlplane: FAILED at step '$1' (kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}); see the output above" >&2; exit 1; }

command -v go >/dev/null || { echo "controlplane: Go is not installed; install Go >= 1.26 or set KUBEBUILDER_ASSETS to a directory with etcd, kube-apiserver and kubectl" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/kube-module.sh"
cd "$WORK"
kube_consumer_module controlplane kube-apiserver kubectl

step "downloading modules"
go mod tidy >&2 || fail "go mod tidy"

ld=$(kube_ldflags)

step "building kube-apiserver (several minutes on a cold cache)"
go build -tags tools -ldflags "$ld" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver || fail "build kube-apiserver"
step "building kubectl"
go build -ldflags "$ld" -o "$OUT/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl || fail "build kubectl"

step "building etcd ${ETCD_VERSION}"
# etcd's server module also replaces its sibling modules with relative paths; same trick.
EWORK="$WORK/etcd"; mkdir -p "$EWORK"; cd "$EWORK"
go mod init changegate.local/etcd >/dev/null 2>&1 || fail "go mod init (etcd)"
emod=$(go mod download -json "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') || fail "download etcd"
[ -f "$emod" ] || fail "download etcd"
sed -i "s/^go .*/$(grep -E '^go [0-9]' "$emod")/" go.mod
{
  echo "require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
  grep -E '^\s+go.etcd.io/etcd/[a-z/0-9]+ => \.\./' "$emod" | awk -v v="$ETCD_VERSION" '{print "replace " $1 " => " $1 " " v}'
} >> go.mod
printf '//go:build tools\npackage tools\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
go mod tidy >&2 || fail "go mod tidy (etcd)"
go build -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3 || fail "build etcd"

for b in kube-apiserver kubectl etcd; do mv "$OUT/$b.tmp" "$OUT/$b"; done
step "done: $(ls "$OUT" | tr '\n' ' ')in $OUT"

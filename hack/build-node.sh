#!/usr/bin/env bash
# Build what a node of the local cluster runs besides containerd: kubelet,
# kube-controller-manager and kube-scheduler from the Go module proxy at the pinned Kubernetes
# version (through a consumer module: hack/kube-module.sh), and `pause`, the pod
# sandbox process (a few lines of Go below: no image registry is reachable, so no
# registry.k8s.io/pause).
#
# Usage: hack/build-node.sh OUTDIR
# Env:   KUBE_VERSION (default v1.37.2)
set -euo pipefail

OUT=${1:?usage: build-node.sh OUTDIR}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}
BINARIES=(kubelet kube-controller-manager kube-scheduler)

step() { echo "node: $*" >&2; }
fail() { echo "node: FAILED at step '$1' (kubernetes ${KUBE_VERSION}); see the output above" >&2; exit 1; }

command -v go >/dev/null || { echo "node: Go is not installed; install Go >= 1.26" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/kube-module.sh"
cd "$WORK"
kube_consumer_module node "${BINARIES[@]}"

# The pod sandbox: holds the pod's namespaces, reaps zombies, exits on SIGTERM/SIGINT.
mkdir pause
cat > pause/main.go <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
step "downloading modules"
go mod tidy >&2 || fail "go mod tidy"

ld=$(kube_ldflags)

for b in "${BINARIES[@]}"; do
  s=$(date +%s)
  step "building $b"
  go build -ldflags "$ld" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b" || fail "build $b"
  step "built $b in $(( $(date +%s) - s ))s"
done
go build -ldflags "-s -w" -o "$OUT/pause.tmp" ./pause || fail "build pause"

# Move into place last, so an interrupted build never leaves a half-written set cached.
for b in "${BINARIES[@]}" pause; do mv "$OUT/$b.tmp" "$OUT/$b"; done
step "done: $(ls "$OUT" | tr '\n' ' ')in $OUT"

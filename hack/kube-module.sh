# Sourced by hack/build-controlplane.sh and hack/build-node.sh: how to build commands of
# k8s.io/kubernetes at a pinned version from the Go module proxy.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module
# with ./staging/..., which Go ignores for dependencies. So we build through a tiny
# consumer module that pins each staging module to its published v0.X.Y tag.
#
# Needs KUBE_VERSION and the caller's step/fail functions.

kube_minor=${KUBE_VERSION#v1.}; kube_minor=${kube_minor%%.*}

# kube_consumer_module NAME CMD...: in the current (empty) directory, a module NAME that
# requires k8s.io/kubernetes at KUBE_VERSION and imports k8s.io/kubernetes/cmd/CMD for each.
kube_consumer_module() {
  local name=$1; shift
  local patch=${KUBE_VERSION##*.} modfile cmd
  local staging="v0.${kube_minor}.${patch}"
  step "resolving k8s.io/kubernetes ${KUBE_VERSION}"
  go mod init "changegate.local/${name}" >/dev/null 2>&1 || fail "go mod init"
  modfile=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') || fail "download k8s.io/kubernetes"
  [ -f "$modfile" ] || fail "download k8s.io/kubernetes"
  sed -i "s/^go .*/$(grep -E '^go [0-9]' "$modfile")/" go.mod
  {
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    grep -E '^\s+k8s.io/[a-z-]+ => ./staging/' "$modfile" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  {
    echo '//go:build tools'; echo 'package tools'; echo 'import ('
    for cmd in "$@"; do echo "	_ \"k8s.io/kubernetes/cmd/${cmd}\""; done
    echo ')'
  } > tools.go
}

# kube_ldflags: the -ldflags that stamp KUBE_VERSION into the binaries, as a release does.
kube_ldflags() {
  local p ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X ${p}.gitVersion=${KUBE_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${kube_minor}"
    ld+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  echo "$ld"
}

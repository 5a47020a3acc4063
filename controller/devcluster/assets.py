"""Where the control-plane binaries come from: ``KUBEBUILDER_ASSETS``, the cache, or a build.

The binaries are built from the Go module proxy at pinned versions by
``hack/build-controlplane.sh`` and cached outside the repository, so a second run builds
nothing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

KUBE_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
BINARIES = ("etcd", "kube-apiserver", "kubectl")
#: What the node mode runs besides containerd (hack/build-node.sh, same pinned version).
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "pause")


class AssetsError(RuntimeError):
    """The control-plane binaries are missing and could not be built."""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "changegate" / "controlplane" / f"{KUBE_VERSION}-etcd-{ETCD_VERSION}"


def node_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "changegate" / "node" / KUBE_VERSION


def _complete(d: Path, binaries: tuple[str, ...] = BINARIES) -> bool:
    return all(os.access(d / b, os.X_OK) for b in binaries)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def ensure_binaries(*, build: bool = True) -> Path:
    """The directory holding etcd, kube-apiserver and kubectl; builds them when needed."""
    env_dir = os.environ.get("KUBEBUILDER_ASSETS")
    if env_dir:
        d = Path(env_dir)
        if not _complete(d):
            raise AssetsError(
                f"KUBEBUILDER_ASSETS={env_dir} does not hold executable {', '.join(BINARIES)}"
            )
        return d
    d = cache_dir()
    if _complete(d):
        return d
    if not build:
        raise AssetsError(f"control-plane binaries not built yet in {d}; run `make controlplane`")
    # Concurrent test sessions (or a human and a test) must not build twice into one folder:
    # the first takes the lock and builds, the others wait and then find the binaries.
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(d):
            return d
        script = repo_root() / "hack" / "build-controlplane.sh"
        env = dict(os.environ, KUBE_VERSION=KUBE_VERSION, ETCD_VERSION=ETCD_VERSION)
        result = subprocess.run(["bash", str(script), str(d)], env=env, check=False)
    if result.returncode != 0 or not _complete(d):
        raise AssetsError(
            f"building the control plane failed (exit {result.returncode}); "
            "see the step named above, or set KUBEBUILDER_ASSETS to prebuilt binaries"
        )
    return d


def ensure_node_binaries(*, build: bool = True) -> Path:
    """The directory holding kubelet, kube-controller-manager, kube-scheduler and pause."""
    d = node_cache_dir()
    if _complete(d, NODE_BINARIES):
        return d
    if not build:
        raise AssetsError(f"node binaries not built yet in {d}; run `make node`")
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, as for the control plane
        if _complete(d, NODE_BINARIES):
            return d
        script = repo_root() / "hack" / "build-node.sh"
        env = dict(os.environ, KUBE_VERSION=KUBE_VERSION)
        result = subprocess.run(["nice", "bash", str(script), str(d)], env=env, check=False)
    if result.returncode != 0 or not _complete(d, NODE_BINARIES):
        raise AssetsError(f"building the node binaries failed (exit {result.returncode})")
    return d


def ensure_node_tools() -> None:
    """containerd, runc, the CNI plugins, iptables: installed by hack/install-node-tools.sh."""
    script = repo_root() / "hack" / "install-node-tools.sh"
    result = subprocess.run(["bash", str(script)], check=False)
    if result.returncode != 0:
        raise AssetsError(f"installing the node's tools failed (exit {result.returncode})")

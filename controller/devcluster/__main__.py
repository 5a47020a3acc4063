"""``python -m controller.devcluster``: a local control plane for humans.

python -m controller.devcluster up        # start, print how to use it, wait for Ctrl-C
python -m controller.devcluster up --node --image ghcr.io/changegate/changegate:0.1.0
                                          # ... with a node that runs pods (root; see node.py)
python -m controller.devcluster build     # only build/locate the binaries
python -m controller.devcluster build --node   # ... and the node's
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from controller.devcluster import assets, cluster, node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="changegate-devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build or locate etcd, kube-apiserver and kubectl")
    build.add_argument(
        "--node", action="store_true", help="also kubelet, the controllers, containerd (root)"
    )
    up = sub.add_parser("up", help="start etcd + kube-apiserver and wait for Ctrl-C")
    up.add_argument(
        "--node",
        action="store_true",
        help="add a node: controllers, scheduler, containerd, kubelet (needs root)",
    )
    up.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="with --node: import this image from podman's store into the node (repeatable)",
    )
    up.add_argument(
        "--workdir",
        type=Path,
        default=Path(".changegate-cluster"),
        help="where the kubeconfig, certificates and logs go",
    )
    args = parser.parse_args(argv)

    try:
        bin_dir = assets.ensure_binaries()
        if args.node:
            node_bin_dir = assets.ensure_node_binaries()
            assets.ensure_node_tools()
    except assets.AssetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.cmd == "build":
        print(bin_dir)
        if args.node:
            print(node_bin_dir)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cp: cluster.ControlPlane
    try:
        if args.node:
            images = [node.podman_image_archive(ref) for ref in args.image]
            cp = node.NodeCluster(
                workdir=args.workdir.resolve(),
                bin_dir=bin_dir,
                node_bin_dir=node_bin_dir,
                images=images,
            )
        else:
            cp = cluster.ControlPlane(workdir=args.workdir.resolve(), bin_dir=bin_dir)
        cp.start()
    except cluster.ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"kube-apiserver {assets.KUBE_VERSION} ready at {cp.server}")
    if isinstance(cp, node.NodeCluster):
        print(f"node {node.NODE_NAME} Ready at {cp.node_ip} ({cp.timings['ready']}s)")
        print(f"  images: {' '.join(cp.images_present())}")
        print(
            f"  run inside the node: nsenter --target={cp.sandbox.pid if cp.sandbox else '?'} --net --mount"
        )
    print(f"  export KUBECONFIG={cp.kubeconfig}")
    print(f"  export PATH={bin_dir}:$PATH")
    print(f"API server audit log: {cp.audit_log} (kubectl changegate report --audit-log FILE)")
    print("Ctrl-C stops it.", flush=True)
    try:
        stop.wait()
    finally:
        try:
            cp.stop()
        except cluster.ControlPlaneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

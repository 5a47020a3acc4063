"""``python -m controller.devcluster``: a local control plane for humans.

python -m controller.devcluster up        # start, print how to use it, wait for Ctrl-C
python -m controller.devcluster build     # only build/locate the binaries
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from controller.devcluster import assets, cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="changegate-devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or locate etcd, kube-apiserver and kubectl")
    up = sub.add_parser("up", help="start etcd + kube-apiserver and wait for Ctrl-C")
    up.add_argument(
        "--workdir",
        type=Path,
        default=Path(".changegate-cluster"),
        help="where the kubeconfig, certificates and logs go",
    )
    args = parser.parse_args(argv)

    try:
        bin_dir = assets.ensure_binaries()
    except assets.AssetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.cmd == "build":
        print(bin_dir)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cp = cluster.ControlPlane(workdir=args.workdir.resolve(), bin_dir=bin_dir)
    try:
        cp.start()
    except cluster.ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"kube-apiserver {assets.KUBE_VERSION} ready at {cp.server}")
    print(f"  export KUBECONFIG={cp.kubeconfig}")
    print(f"  export PATH={bin_dir}:$PATH")
    print(f"API server audit log: {cp.audit_log} (kubectl changegate report --audit-log FILE)")
    print("Ctrl-C stops it.", flush=True)
    try:
        stop.wait()
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

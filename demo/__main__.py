"""``python -m demo`` (``make demo``): start a local control plane and changegate, play the story.

From a terminal it then waits for Ctrl-C and stops changegate, the API server and etcd in
order; ``--wait no`` (the test) stops at once. The exit code says whether every step turned out
as the story tells it.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from controller.devcluster import assets, cluster, local
from controller.model import crds
from demo import play, story

ROOT = assets.repo_root()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".changegate-cluster")
    parser.add_argument(
        "--wait",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep the cluster running at the end until Ctrl-C (auto: when run from a terminal)",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)

    print("Building or reusing the control-plane binaries ...", flush=True)
    try:
        bin_dir = assets.ensure_binaries()
    except assets.AssetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cp = cluster.ControlPlane(workdir=workdir / "cluster", bin_dir=bin_dir)
    print(f"Starting etcd + kube-apiserver {assets.KUBE_VERSION} on 127.0.0.1 ...", flush=True)
    cp.start()
    ok = False
    try:
        with local.running(cp, workdir=workdir / "changegate") as cg:
            print(f"changegate is serving at {cg.url} (logs: {cg.log})", flush=True)
            now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            player = play.Player(
                cp=cp,
                values=play.values_for(
                    cp,
                    now_rfc3339=crds.rfc3339(now),
                    start=crds.rfc3339(now - datetime.timedelta(minutes=1)),
                    end=crds.rfc3339(now + datetime.timedelta(hours=2)),
                ),
            )
            player.play()
            ok = not player.failures
            print(
                "\n"
                + (
                    "The story played as expected."
                    if ok
                    else "Some steps did not turn out as expected:\n  "
                    + "\n  ".join(player.failures)
                )
            )
            wait = args.wait == "yes" or (args.wait == "auto" and sys.stdin.isatty())
            print(
                textwrap.dedent(f"""
                Keep exploring:
                  export KUBECONFIG={cp.kubeconfig}
                  export PATH={bin_dir}:$PATH
                  kubectl get changewindows
                  kubectl changegate list --kubeconfig {cp.identity(*story.ALICE).kubeconfig}   # as alice
                  (kubectl-changegate is in .venv/bin: export PATH=$PWD/.venv/bin:$PATH)
                changegate's decision log: {cg.log}""")
            )
            if wait:
                print("Press Ctrl-C to stop changegate and the control plane.", flush=True)
                stop = threading.Event()
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                stop.wait()
                print("\nStopping changegate, then the control plane ...", flush=True)
            else:
                print("Stopping (run `make demo` from a terminal to keep it running).")
    finally:
        cp.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The node mode leaves the host as it found it -- even when its harness is killed.

``python -m controller.devcluster up --node`` runs a node with one pod, and is killed with
SIGKILL, as a CI job that times out would be. Its own children die with it, but not all it
started: containerd's shims and the pod's containers are nobody's children, and they hold the
node's namespaces (with its veth) open. The next start must find the record of the crashed
node and undo it before it does anything else; then stopping the new node must leave nothing.

(Another node, if one is running, keeps its own slot: both run side by side.)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_helpers import eventually

from controller.devcluster import assets, hostenv, node

pytestmark = [pytest.mark.integration, pytest.mark.node]

PAUSE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {
        "containers": [{"name": "sleeper", "image": node.PAUSE_IMAGE, "imagePullPolicy": "Never"}],
        "automountServiceAccountToken": False,
    },
}


def wait_for_line(proc: subprocess.Popen[bytes], text: str, *, timeout: float) -> str:
    """What ``proc`` printed, up to the line with ``text`` (read unbuffered: a buffered
    reader would keep lines that already arrived away from ``select``)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        select.select([fd], [], [], 1.0)
        with contextlib.suppress(BlockingIOError):
            seen += os.read(fd, 65536)
        if text.encode() in seen:
            return seen.decode(errors="replace")
    pytest.fail(
        f"`up --node` did not print {text!r}:\n{seen.decode(errors='replace')}", pytrace=False
    )


def slot_of(workdir: Path) -> hostenv.Slot:
    for record in hostenv.STATE_DIR.glob("slot-*.json"):
        data = json.loads(record.read_text())
        if data["workdir"] == str(workdir):
            return hostenv.Slot(int(data["slot"]))
    raise AssertionError(f"no record for {workdir} in {hostenv.STATE_DIR}")


def test_a_node_whose_harness_was_killed_is_undone_by_the_next_start(tmp_path: Path) -> None:
    workdir = tmp_path / "crashed"
    up = subprocess.Popen(
        [sys.executable, "-m", "controller.devcluster", "up", "--node", f"--workdir={workdir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=assets.repo_root(),
        start_new_session=True,
    )
    try:
        wait_for_line(up, "Ctrl-C stops it.", timeout=240)
        slot = slot_of(workdir)
        kubectl = [
            str(assets.ensure_binaries() / "kubectl"),
            f"--kubeconfig={workdir}/admin.kubeconfig",
        ]
        out = subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=json.dumps(PAUSE_POD),
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        out = subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=30)

        # What outlives the harness: the pod's container and its shim, in the node's cgroup; the
        # namespaces they hold, with the node's end of the veth; the kubelet's sysctls; the record.
        def survivors() -> set[int]:
            pids = hostenv.cgroup_pids(slot)
            assert pids, "nothing survived the harness: the test would prove nothing"
            return pids

        survivors_before = eventually(survivors, timeout=10)
        assert hostenv.link_exists(slot.host_link)
        assert (hostenv.STATE_DIR / f"slot-{slot.index}.json").exists()

        nc = node.NodeCluster()
        nc.start()
        try:
            assert nc.claim is not None and slot.index in nc.claim.undone_stale
            for pid in survivors_before:
                assert not Path(f"/proc/{pid}").exists() or pid in hostenv.cgroup_pids(nc.slot)
        finally:
            nc.stop()  # raises if it left anything behind
        assert hostenv.leftovers(slot, workdir) == []
        assert not (hostenv.STATE_DIR / f"slot-{slot.index}.json").exists()
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGKILL)
            up.wait(timeout=30)
        # Whatever failed above, the crashed node must not outlive the test: a claim undoes
        # every crashed node first, as a start would.
        if any(
            json.loads(r.read_text()).get("workdir") == str(workdir)
            for r in hostenv.STATE_DIR.glob("slot-*.json")
        ):
            claim = hostenv.Claim(workdir=workdir, remove_workdir=False)
            claim.acquire()
            claim.release()

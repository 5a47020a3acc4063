"""The test harness itself: a real kube-apiserver at the pinned version, real identities, RBAC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from controller.devcluster import assets, cluster

pytestmark = pytest.mark.integration


def test_server_version_is_the_pinned_one(controlplane: cluster.ControlPlane) -> None:
    out = controlplane.kubectl("version", "-o", "json", check=True)
    version = json.loads(out.stdout)
    assert version["serverVersion"]["gitVersion"] == assets.KUBE_VERSION
    assert version["clientVersion"]["gitVersion"] == assets.KUBE_VERSION


def test_admin_creates_namespace_and_deployment(controlplane: cluster.ControlPlane) -> None:
    controlplane.kubectl("create", "namespace", "smoke-admin", check=True)
    controlplane.kubectl(
        "-n", "smoke-admin", "create", "deployment", "web", "--image=nginx:1.27", check=True
    )
    got = controlplane.kubectl("-n", "smoke-admin", "get", "deployment", "web", "-o", "json")
    assert json.loads(got.stdout)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "nginx:1.27"
    )


def test_user_without_rbac_is_forbidden_then_allowed_after_grant(
    controlplane: cluster.ControlPlane,
) -> None:
    cp = controlplane
    cp.kubectl("create", "namespace", "smoke-rbac", check=True)

    denied = cp.kubectl(
        "-n", "smoke-rbac", "create", "configmap", "c1", "--from-literal=a=b", as_user="dana"
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert 'User "dana"' in denied.stderr

    # The same through the Python client, authenticated by client certificate.
    core = kubernetes.client.CoreV1Api(cluster.api_client(cp, user="dana", groups=["devs"]))
    body = {"metadata": {"name": "c2"}, "data": {"a": "b"}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("smoke-rbac", body)
    assert err.value.status == 403

    cp.kubectl(
        "-n",
        "smoke-rbac",
        "create",
        "role",
        "cm-writer",
        "--verb=create,get,list",
        "--resource=configmaps",
        check=True,
    )
    cp.kubectl(
        "-n",
        "smoke-rbac",
        "create",
        "rolebinding",
        "devs-cm-writer",
        "--role=cm-writer",
        "--group=devs",
        "--user=dana",
        check=True,
    )
    allowed = cp.kubectl(
        "-n", "smoke-rbac", "create", "configmap", "c1", "--from-literal=a=b", as_user="dana"
    )
    assert allowed.returncode == 0, allowed.stderr
    created = core.create_namespaced_config_map("smoke-rbac", body)
    assert created.metadata.name == "c2"
    # Impersonating a group grants the group's rights too.
    imp = kubernetes.client.CoreV1Api(cluster.impersonating_client(cp, user="erin", group="devs"))
    assert imp.read_namespaced_config_map("c1", "smoke-rbac").data == {"a": "b"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_control_plane_dies_with_a_killed_parent() -> None:
    """Interrupted runs leave nothing behind: children get SIGTERM when their parent dies."""
    script = textwrap.dedent(
        """
        import json, sys
        from controller.devcluster import cluster
        cp = cluster.ControlPlane()
        cp.start()
        print(json.dumps([p.pid for p in cp._procs]), flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids = json.loads(proc.stdout.readline())
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def test_stop_terminates_processes() -> None:
    cp = cluster.ControlPlane()
    cp.start()
    pids = [p.pid for p in cp._procs]
    cp.stop()
    assert not any(_alive(p) for p in pids)
    cp.stop()  # idempotent

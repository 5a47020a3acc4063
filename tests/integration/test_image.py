"""The container image, run the way the chart runs it, against the real API server.

``make image`` builds the image (podman, tagged as the chart's default image); this module
builds it again if needed (a cached no-op after ``make image``) and starts one container for
the module, on the host network, in local mode against the session's kube-apiserver: the API
server calls the webhook in the container at https://127.0.0.1:<port>/validate.

The container gets what the chart's Deployment gives the pod, read from the rendered chart:
its uid/gid, a read-only root filesystem (and nothing else writable: no tmpfs on /run),
no capabilities, no privilege escalation, and a writable directory only where the chart
mounts an emptyDir (/tmp, and the certificate directory, which the test bind-mounts so it can
read the dev CA). The chart's service-account credentials are replaced by a kubeconfig file.

Tests run in file order; the last one stops the container with SIGTERM.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import e2e_helpers
import image_helpers
import pytest

from controller.devcluster import cluster, local
from controller.model import crds

pytestmark = pytest.mark.integration


ALICE = ("alice@example.com", ("developers",))  # requester, designated
BOB = ("bob@example.com", ("developers", "change-approvers"))  # approver
USERS_ROLE = "image-test-users"
KUBECONFIG_IN_CONTAINER = "/etc/changegate/kubeconfig"
CONTROLLED = [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}]


# -- the chart's view of the pod ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChartPod:
    """What the chart's default rendering says about the changegate container."""

    container: Mapping[str, Any]
    pod_security: Mapping[str, Any]
    grace_seconds: int
    pre_stop_sleep_seconds: int

    @property
    def security(self) -> Mapping[str, Any]:
        sc: Mapping[str, Any] = self.container["securityContext"]
        return sc

    @property
    def cert_dir(self) -> str:
        value = image_helpers.flag_values(self.container["args"])["--cert-dir"]
        assert value, self.container["args"]
        return value

    def podman_security_flags(self) -> list[str]:
        uid, gid = self.pod_security["runAsUser"], self.pod_security["runAsGroup"]
        flags = [f"--user={uid}:{gid}"]
        if self.security.get("readOnlyRootFilesystem"):
            # podman would otherwise put tmpfs on /run, /tmp and /var/tmp; the kubelet does not.
            flags += ["--read-only", "--read-only-tmpfs=false"]
        if "ALL" in (self.security.get("capabilities") or {}).get("drop", []):
            flags.append("--cap-drop=ALL")
        if self.security.get("allowPrivilegeEscalation") is False:
            flags.append("--security-opt=no-new-privileges")
        return flags


@pytest.fixture(scope="module")
def chart() -> ChartPod:
    deployment = image_helpers.render_deployment()
    pod = deployment["spec"]["template"]["spec"]
    container = image_helpers.changegate_container(deployment)
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep", sleep
    return ChartPod(
        container=container,
        pod_security=pod["securityContext"],
        grace_seconds=int(pod["terminationGracePeriodSeconds"]),
        pre_stop_sleep_seconds=int(sleep[1]),
    )


@pytest.fixture(scope="module")
def image() -> str:
    return image_helpers.build_image()


# -- the container -----------------------------------------------------------------------------


@dataclasses.dataclass
class Container:
    name: str
    port: int
    cert_dir: Path  # on the host, bind-mounted where the chart mounts the certificates
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def get(self, path: str) -> int:
        ctx = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        with urllib.request.urlopen(f"{self.url}{path}", context=ctx, timeout=5) as r:
            status: int = r.status
            return status

    def exec(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        flags = [f"--user={user}"] if user else []
        return image_helpers.podman("exec", *flags, self.name, *args)


def self_contained_kubeconfig(cp: cluster.ControlPlane, dest: Path, *, uid: int, gid: int) -> None:
    """The admin kubeconfig with its files inlined, readable by the container's user only."""
    config = json.loads(cp.kubeconfig.read_text())
    for entry in config["clusters"]:
        path = entry["cluster"].pop("certificate-authority")
        entry["cluster"]["certificate-authority-data"] = base64.b64encode(
            Path(path).read_bytes()
        ).decode()
    for entry in config["users"]:
        for key in ("client-certificate", "client-key"):
            path = entry["user"].pop(key)
            entry["user"][f"{key}-data"] = base64.b64encode(Path(path).read_bytes()).decode()
    dest.write_text(json.dumps(config))
    os.chown(dest, uid, gid)
    dest.chmod(0o600)


def users_rbac() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": USERS_ROLE},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get"]},
                {
                    "apiGroups": ["changegate.io"],
                    "resources": ["changewindows"],
                    "verbs": ["get", "list", "create", "update", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": USERS_ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": USERS_ROLE,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"}
            ],
        },
    ]


@pytest.fixture(scope="module")
def container(
    controlplane: cluster.ControlPlane,
    image: str,
    chart: ChartPod,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    cp = controlplane
    local.install_crds(cp)
    cp.kubectl("create", "namespace", local.NAMESPACE)  # may exist already: fine
    for obj in users_rbac():
        out = cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
        assert out.returncode == 0, out.stderr

    uid, gid = int(chart.pod_security["runAsUser"]), int(chart.pod_security["runAsGroup"])
    work = tmp_path_factory.mktemp("image")
    kubeconfig = work / "kubeconfig"
    self_contained_kubeconfig(cp, kubeconfig, uid=uid, gid=gid)
    certs = work / "certs"
    certs.mkdir()
    os.chown(certs, uid, gid)
    certs.chmod(0o700)

    mounts = [f"--volume={kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro"]
    for mount in chart.container["volumeMounts"]:
        if mount["mountPath"] == chart.cert_dir:
            mounts.append(f"--volume={certs}:{chart.cert_dir}:rw")
        else:  # the chart's other volumes are emptyDirs
            mounts.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777,size=64m")

    port = cluster.free_port()
    name = f"changegate-image-test-{uuid.uuid4().hex[:8]}"
    args = [
        "run",
        "--local",
        f"--kubeconfig={KUBECONFIG_IN_CONTAINER}",
        "--listen-host=127.0.0.1",
        f"--port={port}",
        f"--cert-dir={chart.cert_dir}",
        f"--namespace={local.NAMESPACE}",
        "--log-level=info",
    ]
    log = work / "container.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *image_helpers.PODMAN,
                "run",
                "--rm",
                f"--name={name}",
                *image_helpers.RUN_FLAGS,
                *chart.podman_security_flags(),
                *mounts,
                image,
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    cg = Container(name=name, port=port, cert_dir=certs, log=log, proc=proc)
    try:
        wait_ready(cg, cp, timeout=120)
        yield cg
    finally:
        image_helpers.podman("rm", "--force", "--time=0", name)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        cp.kubectl("delete", "validatingwebhookconfiguration", "changegate", "--ignore-not-found")
        for obj in users_rbac():
            cp.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")


def wait_ready(cg: Container, cp: cluster.ControlPlane, *, timeout: float) -> None:
    """Until /readyz answers 200 and the API server's webhook configuration points here."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cg.proc.poll() is not None:
            pytest.fail(
                f"the container exited with {cg.proc.returncode}:\n{cg.log_text()[-4000:]}",
                pytrace=False,
            )
        try:
            ready = cg.get("/readyz") == 200
        except Exception:
            ready = False
        if ready:
            out = cp.kubectl("get", "validatingwebhookconfiguration", "changegate", "-o", "json")
            hooks = json.loads(out.stdout).get("webhooks") or [] if out.returncode == 0 else []
            if hooks and all(h["clientConfig"].get("url") == f"{cg.url}/validate" for h in hooks):
                return
        time.sleep(0.5)
    pytest.fail(
        f"the container was not ready after {timeout:.0f}s:\n{cg.log_text()[-4000:]}",
        pytrace=False,
    )


# -- the tests ---------------------------------------------------------------------------------


def test_runs_as_the_charts_user_with_a_read_only_root_filesystem(
    container: Container, chart: ChartPod
) -> None:
    uid, gid = chart.pod_security["runAsUser"], chart.pod_security["runAsGroup"]
    assert (uid, gid) == (65532, 65532)  # what the Dockerfile creates and the docs promise
    status = container.exec("cat", "/proc/1/status")
    assert status.returncode == 0, status.stderr
    ids = dict(line.split(":", 1) for line in status.stdout.splitlines() if ":" in line)
    # real, effective, saved and filesystem ids of the server process (PID 1)
    assert ids["Uid"].split() == [str(uid)] * 4, ids["Uid"]
    assert ids["Gid"].split() == [str(gid)] * 4, ids["Gid"]
    assert ids["CapEff"].strip() == "0" * 16, ids["CapEff"]
    cmdline = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert "changegate" in cmdline[1], cmdline  # /opt/changegate/bin/python .../changegate run
    # Not even root inside the container can write the root filesystem...
    root_write = container.exec("touch", "/written-by-root", user="0")
    assert root_write.returncode != 0
    assert "Read-only file system" in root_write.stderr, root_write.stderr
    # ...and changegate's user can write only where the chart mounts a volume.
    assert container.exec("touch", "/var/tmp/probe").returncode != 0
    assert container.exec("touch", "/tmp/probe").returncode == 0
    assert (container.cert_dir / "tls.crt").exists()  # changegate wrote its certificates


def test_serves_the_charts_probes_over_https(container: Container, chart: ChartPod) -> None:
    for kind in ("readinessProbe", "livenessProbe"):
        probe = chart.container[kind]["httpGet"]
        assert probe["scheme"] == "HTTPS", probe
        assert container.get(probe["path"]) == 200, (kind, probe)


def test_denies_a_controlled_change_without_a_window_and_admits_it_once_approved(
    container: Container, controlplane: cluster.ControlPlane
) -> None:
    cp = controlplane
    ns = f"img-{uuid.uuid4().hex[:8]}"
    policy, identity, window = f"{ns}-policy", f"{ns}-oncall", f"{ns}-window"

    def kubectl(
        *args: str, who: tuple[str, tuple[str, ...]] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if who is None:
            return cp.kubectl(*args, input=input)
        return cp.kubectl(*args, as_user=who[0], as_groups=who[1], input=input)

    def apply(obj: dict[str, Any], who: tuple[str, tuple[str, ...]] | None = None) -> None:
        out = kubectl("create" if who else "apply", "-f", "-", who=who, input=json.dumps(obj))
        assert out.returncode == 0, out.stderr

    def configmap(
        name: str, *, who: tuple[str, tuple[str, ...]] | None, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "configmap", name, "-n", ns, "--from-literal=k=v"]
        return kubectl(*args, *(["--dry-run=server"] if dry_run else []), who=who)

    assert kubectl("create", "namespace", ns).returncode == 0
    apply(
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "AuthorizedIdentity",
            "metadata": {"name": identity},
            "spec": {"subjects": [{"kind": "User", "name": ALICE[0]}]},
        }
    )
    apply(
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangePolicy",
            "metadata": {"name": policy},
            "spec": {
                "match": {"resources": CONTROLLED, "namespaces": [ns]},
                "enforcement": "Enforce",
                "approval": {"required": 1, "approverGroups": [BOB[1][1]]},
                "message": {"contact": "#change-management"},
            },
        }
    )

    def controlled() -> None:  # the admin has no window either
        out = configmap("probe", who=None, dry_run=True)
        assert "changegate denied" in out.stderr, out.stderr

    e2e_helpers.eventually(controlled, timeout=30.0)

    denied = configmap("settings", who=ALICE)
    assert denied.returncode != 0, denied.stdout
    assert "changegate denied" in denied.stderr, denied.stderr
    assert "no approved change window" in denied.stderr, denied.stderr

    now = datetime.datetime.now(datetime.UTC)
    apply(
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": window},
            "spec": {
                "ticket": "CHG-10",
                "description": "image test",
                "requester": ALICE[0],
                "identities": [identity],
                "targets": [{"namespaces": [ns], "resources": CONTROLLED}],
                "schedule": {
                    "start": crds.rfc3339(now - datetime.timedelta(hours=1)),
                    "end": crds.rfc3339(now + datetime.timedelta(hours=1)),
                },
            },
        },
        who=ALICE,
    )

    def published_hash() -> str:
        body = json.loads(kubectl("get", "changewindow", window, "-o", "json").stdout)
        status = body.get("status") or {}
        assert status.get("specHash"), status
        assert status.get("observedGeneration") == body["metadata"]["generation"], status
        return str(status["specHash"])

    approval = {
        "approver": BOB[0],
        "specHash": e2e_helpers.eventually(published_hash, timeout=30.0),
        "approvedAt": crds.rfc3339(datetime.datetime.now(datetime.UTC)),
        "policies": [policy],
    }
    patch = json.dumps({"spec": {"approvals": [approval]}})
    out = kubectl("patch", "changewindow", window, "--type=merge", "-p", patch, who=BOB)
    assert out.returncode == 0, out.stderr

    def admitted() -> None:
        out = configmap("settings", who=ALICE)
        assert out.returncode == 0, out.stderr

    e2e_helpers.eventually(admitted, timeout=30.0)


def test_stops_cleanly_on_sigterm_within_the_charts_grace_period(
    container: Container, chart: ChartPod
) -> None:
    # The kubelet runs the preStop sleep, then sends SIGTERM, and kills the container when
    # terminationGracePeriodSeconds (counted from the start of preStop) run out.
    budget = chart.grace_seconds - chart.pre_stop_sleep_seconds
    assert budget > 0, (chart.grace_seconds, chart.pre_stop_sleep_seconds)
    out = image_helpers.podman("kill", "--signal=TERM", container.name)
    assert out.returncode == 0, out.stderr
    try:
        code = container.proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"still running {budget}s after SIGTERM: the kubelet would kill it\n"
            + container.log_text()[-4000:],
            pytrace=False,
        )
    log = container.log_text()
    assert code == 0, log[-4000:]
    assert '"msg":"stopped"' in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]

"""changegate defends its own ValidatingWebhookConfiguration, against the real API server.

Configuration objects are never sent to webhooks, so anyone whom RBAC lets write the object
can switch changegate off: add an objectSelector that labelled objects escape through, set
failurePolicy Ignore, drop a rule, delete it. changegate watches the object and restores it;
these tests make each change as the cluster admin and measure how long the tampered state
lasts (printed; run with ``-s`` to see the figures). Nothing here asserts a duration: each
test waits up to ``RESTORE_TIMEOUT`` and fails if the configuration is not back by then.

The last test rotates the CA and the serving certificate in the cert dir (``--cert-mode
files``, as cert-manager would write them) under a steady trickle of controlled requests, and
counts how each was answered: none may be admitted (no window covers them), and the caBundle
must follow the new CA.

One changegate process (``--local``, files mode) for the module, with one policy controlling
ConfigMaps and exec in one namespace, so both webhooks exist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import e2e_helpers
import kubernetes
import pytest
from cryptography import x509

from controller import pki
from controller.admission import tls
from controller.devcluster import cluster
from controller.operator import webhook

pytestmark = pytest.mark.integration

NAME = "changegate"
RESTORE_TIMEOUT = 15.0
BYPASS = {"matchLabels": {"bypass": "please"}}  # an objectSelector labelled objects escape by
# Polled often: the figures these tests print are restore times.
eventually = functools.partial(e2e_helpers.eventually, timeout=RESTORE_TIMEOUT, every=0.05)


@dataclass
class Setup:
    cp: cluster.ControlPlane
    cg: e2e_helpers.Changegate
    api: Any  # AdmissionregistrationV1Api, as the admin
    core: Any  # CoreV1Api, as the admin
    namespace: str
    cert_dir: Path
    measured: dict[str, float] = field(default_factory=dict)

    def live(self) -> dict[str, Any] | None:
        try:
            response = self.api.read_validating_webhook_configuration(NAME, _preload_content=False)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(response.data)
        return body

    def patch(self, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Apply a JSON patch; the object as stored right after it."""
        response = self.api.patch_validating_webhook_configuration(
            NAME, ops, _preload_content=False
        )
        body: dict[str, Any] = json.loads(response.data)
        return body

    def delete(self) -> dict[str, Any] | None:
        self.api.delete_validating_webhook_configuration(NAME)
        return None


@pytest.fixture(scope="module")
def setup(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    cp = controlplane
    workdir = tmp_path_factory.mktemp("selfheal")
    cert_dir = workdir / "certs"
    tls.ensure_dev_certs(cert_dir)  # what cert-manager would have mounted
    client = cluster.api_client(cp)
    core = kubernetes.client.CoreV1Api(client)
    namespace = f"selfheal-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    policy = {
        "apiVersion": "changegate.io/v1alpha1",
        "kind": "ChangePolicy",
        "metadata": {"name": f"{namespace}-policy"},
        "spec": {
            "match": {
                "resources": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                    },
                    {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]},
                ],
                "namespaces": [namespace],
            },
        },
    }
    with e2e_helpers.running_changegate(cp, workdir=workdir, args=["--cert-mode=files"]) as cg:
        out = cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
        assert out.returncode == 0, out.stderr
        s = Setup(
            cp=cp,
            cg=cg,
            api=kubernetes.client.AdmissionregistrationV1Api(client),
            core=core,
            namespace=namespace,
            cert_dir=cert_dir,
        )
        eventually(lambda: _answered_by_changegate(s), timeout=60)  # the policy is in force
        yield s
        print("\nmeasured:", json.dumps(s.measured, indent=1))
    cp.kubectl("delete", "-f", "-", "--ignore-not-found", input=json.dumps(policy))
    core.delete_namespace(namespace)


def _try_change(s: Setup) -> str:
    """One controlled request (a dry-run ConfigMap create as the admin, who has no window).

    Returns how it ended: "denied" (changegate answered), "failed" (the API server could not
    get an answer: failurePolicy Fail denied it) or "admitted".
    """
    body = {"metadata": {"generateName": "trickle-"}, "data": {"k": "v"}}
    try:
        s.core.create_namespaced_config_map(s.namespace, body, dry_run="All")
    except kubernetes.client.exceptions.ApiException as e:
        text = str(e.body)
        if "changegate denied" in text:
            return "denied"
        if "failed calling webhook" in text:
            return "failed"
        raise
    return "admitted"


def _answered_by_changegate(s: Setup) -> None:
    assert _try_change(s) == "denied"


def _owned(config: dict[str, Any] | None) -> Any:
    """What changegate owns, as the API server stores it: our label and the webhooks."""
    if config is None:
        return None
    labels = config["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by"), config["webhooks"]


def _restored_after(s: Setup, what: str, tamper: Callable[[], dict[str, Any] | None]) -> float:
    """Tamper as the admin; the seconds until the configuration is back as it was.

    ``tamper`` returns the object as the API server stored it (None: deleted), which shows
    the change took: a read afterwards may already see the repair.
    """
    before = _owned(s.live())
    assert before is not None and before[0] == "changegate"
    tampered = tamper()
    tampered_at = time.monotonic()
    assert _owned(tampered) != before, "the change did not take"

    def back() -> None:
        assert _owned(s.live()) == before

    eventually(back)
    took = time.monotonic() - tampered_at
    s.measured[what] = round(took, 3)
    print(f"\n{what}: restored after {took:.2f}s")
    # Our own write comes back through the watch: it must find nothing to change (no loop).
    config = s.live()
    assert config is not None
    version = config["metadata"]["resourceVersion"]
    time.sleep(3)
    again = s.live()
    assert again is not None and again["metadata"]["resourceVersion"] == version
    # What changegate wrote is, as stored, what it wants (server defaults are not drift).
    assert "differently than written" not in s.cg.log_text()
    return took


def _controlled_index(s: Setup) -> int:
    config = s.live()
    assert config is not None
    names = [w["name"] for w in config["webhooks"]]
    return names.index("controlled.changegate.io")


def test_an_added_object_selector_is_removed(setup: Setup) -> None:
    i = _controlled_index(setup)
    _restored_after(
        setup,
        "objectSelector added",
        lambda: setup.patch(
            [{"op": "add", "path": f"/webhooks/{i}/objectSelector", "value": BYPASS}]
        ),
    )


def test_failure_policy_ignore_is_reverted(setup: Setup) -> None:
    config = setup.live()
    assert config is not None
    ops = [
        {"op": "replace", "path": f"/webhooks/{i}/failurePolicy", "value": "Ignore"}
        for i in range(len(config["webhooks"]))
    ]
    _restored_after(setup, "failurePolicy Ignore", lambda: setup.patch(ops))


def test_a_deleted_configuration_is_recreated(setup: Setup) -> None:
    _restored_after(
        setup,
        "configuration deleted",
        setup.delete,
    )
    _answered_by_changegate(setup)


def test_a_removed_rule_is_put_back(setup: Setup) -> None:
    i = _controlled_index(setup)
    _restored_after(
        setup,
        "rule removed",
        lambda: setup.patch([{"op": "remove", "path": f"/webhooks/{i}/rules/0"}]),
    )


# -- only the leader writes; the operator's own RBAC is enough to watch -----------------------


class Standby(e2e_helpers.Changegate):
    """A second replica: ready once its index has synced; it never points the webhook at itself."""

    def _webhook_points_here(self) -> bool:
        return True


def test_a_standby_replica_does_not_fight_the_leader(setup: Setup, tmp_path: Path) -> None:
    # Its own port and its own dev CA: any write of its own would show in the configuration.
    standby = Standby(
        cp=setup.cp, workdir=tmp_path, port=cluster.free_port(), args=("--cert-mode=files",)
    )
    tls.ensure_dev_certs(tmp_path / "certs")
    standby.start()
    try:
        config = setup.live()
        assert config is not None
        ops = [
            {"op": "replace", "path": f"/webhooks/{i}/failurePolicy", "value": "Ignore"}
            for i in range(len(config["webhooks"]))
        ]
        _restored_after(setup, "failurePolicy Ignore, with a standby", lambda: setup.patch(ops))
        assert all(
            w["clientConfig"]["url"] == f"{setup.cg.url}/validate"
            for w in (setup.live() or {})["webhooks"]
        )
    finally:
        standby.stop()
    assert "ValidatingWebhookConfiguration" not in standby.log_text()


def test_the_charts_rbac_lets_the_operator_watch_its_configuration_and_no_other(
    setup: Setup, tmp_path: Path
) -> None:
    """The watch's request shape (list+watch selecting the name) under the chart's ClusterRole.

    RBAC honours resourceNames for list/watch only when the request selects metadata.name, so
    this is what lets the ClusterRole stay pinned to the one configuration.
    """
    helm = Path.home() / ".cache" / "changegate" / "helm" / "v3.22.0" / "helm"
    if not os.access(helm, os.X_OK):  # built by `make helm` (hack/build-helm.sh)
        pytest.fail(f"helm not built at {helm}: run `make helm`", pytrace=False)
    namespace = f"cg-rbac-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, KUBECONFIG=str(setup.cp.kubeconfig), HELM_CACHE_HOME=str(tmp_path))
    chart = Path(__file__).resolve().parents[2] / "charts" / "changegate"

    def helm_run(*args: str) -> None:
        result = subprocess.run(
            [str(helm), *args], env=env, capture_output=True, text=True, check=False, timeout=180
        )
        assert result.returncode == 0, result.stderr

    helm_run(
        "install", "changegate", str(chart), "--create-namespace", "--skip-crds", "-n", namespace
    )
    try:
        me = setup.cp.identity(
            f"system:serviceaccount:{namespace}:changegate",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
        )
        as_operator = kubernetes.client.AdmissionregistrationV1Api(
            kubernetes.config.new_client_from_config(config_file=str(me.kubeconfig))
        )
        with pytest.raises(kubernetes.client.exceptions.ApiException) as refused:
            as_operator.list_validating_webhook_configuration()  # every configuration: no
        assert refused.value.status == 403

        seen: list[dict[str, Any] | None] = []
        watch = webhook.ConfigurationWatch(api=as_operator, on_event=seen.append)

        async def watch_while_tampering() -> None:
            task = asyncio.create_task(watch.run())
            try:
                for _ in range(200):
                    if seen:
                        break
                    await asyncio.sleep(0.05)
                assert seen and seen[0] is not None, "the initial list did not arrive"
                i = _controlled_index(setup)
                op = {"op": "add", "path": f"/webhooks/{i}/objectSelector", "value": BYPASS}
                await asyncio.to_thread(setup.patch, [op])
                for _ in range(300):  # the change and changegate's repair, both seen
                    if any(_has_bypass(c) for c in seen) and not _has_bypass(seen[-1]):
                        break
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(watch_while_tampering())
        assert any(_has_bypass(c) for c in seen), "the watch did not report the change"
        assert not _has_bypass(seen[-1]), "the watch did not report the repair"
    finally:
        helm_run("uninstall", "changegate", "--no-hooks", "-n", namespace)
        setup.core.delete_namespace(namespace)


def _has_bypass(config: dict[str, Any] | None) -> bool:
    return config is not None and any(w.get("objectSelector") == BYPASS for w in config["webhooks"])


# -- CA rotation -----------------------------------------------------------------------------


def _served_serial(port: int) -> int:
    """The serial of the certificate changegate presents on a new connection."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _bundle_serials(config: dict[str, Any] | None) -> list[set[int]]:
    if config is None:
        return []
    return [
        {c.serial_number for c in pki.load_certs(base64.b64decode(w["clientConfig"]["caBundle"]))}
        for w in config["webhooks"]
    ]


@contextlib.contextmanager
def _trickle(s: Setup, *, every: float = 0.1) -> Iterator[list[tuple[float, str]]]:
    """Controlled requests, one every ``every`` seconds, in a thread; their outcomes."""
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                outcomes.append((started, _try_change(s)))
            except Exception as e:  # anything else is an outcome too, and must be seen
                outcomes.append((started, f"error: {e}"))
            stop.wait(max(0.0, every - (time.monotonic() - started)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join(timeout=30)


def _install_new_ca(cert_dir: Path, scratch: Path) -> tuple[int, int]:
    """Replace ca.crt, tls.key and tls.crt with a new CA and a certificate it issued.

    Each file atomically, as a Secret volume update or cert-manager would leave them; returns
    the new CA's and the new certificate's serial numbers.
    """
    tls.ensure_dev_certs(scratch)
    for name in ("ca.crt", "tls.key", "tls.crt"):
        tmp = cert_dir / f".{name}.new"
        shutil.copyfile(scratch / name, tmp)
        os.replace(tmp, cert_dir / name)
    ca = x509.load_pem_x509_certificate((scratch / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((scratch / "tls.crt").read_bytes())
    return ca.serial_number, leaf.serial_number


def test_a_new_ca_reaches_the_ca_bundle_before_the_server_serves_from_it(
    setup: Setup, tmp_path: Path
) -> None:
    old_ca = x509.load_pem_x509_certificate((setup.cert_dir / "ca.crt").read_bytes())
    assert all(b == {old_ca.serial_number} for b in _bundle_serials(setup.live()))
    with _trickle(setup) as outcomes:
        time.sleep(2)  # a steady state first
        new_ca, new_leaf = _install_new_ca(setup.cert_dir, tmp_path / "new")
        rotated_at = time.monotonic()

        def bundle_follows() -> None:
            bundles = _bundle_serials(setup.live())
            assert bundles and all(new_ca in b for b in bundles), bundles

        eventually(bundle_follows)
        bundle_after = time.monotonic() - rotated_at
        eventually(lambda: _assert_equal(_served_serial(setup.cg.port), new_leaf))
        served_after = time.monotonic() - rotated_at
        time.sleep(3)  # and a while on the new certificate
    counts: dict[str, int] = {}
    for _, outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    during = [o for t, o in outcomes if t >= rotated_at]
    setup.measured |= {
        "caBundle has the new CA": round(bundle_after, 3),
        "new certificate served": round(served_after, 3),
        "requests": len(outcomes),
        "requests after the rotation": len(during),
        "failed": counts.get("failed", 0),
        "admitted": counts.get("admitted", 0),
    }
    bundles = _bundle_serials(setup.live())
    print(
        f"\nCA rotation: caBundle had the new CA after {bundle_after:.2f}s, the new certificate"
        f" was served after {served_after:.2f}s; outcomes {counts} of {len(outcomes)} requests"
        f" ({len(during)} after the rotation); old CA still in the bundle (grace):"
        f" {all(old_ca.serial_number in b for b in bundles)}"
    )
    assert counts.get("admitted", 0) == 0, counts
    assert not [o for o in counts if o.startswith("error")], counts
    # The bundle was published before the server switched, and kept the old CA meanwhile:
    # no review failed for want of trust in either direction.
    assert counts.get("failed", 0) == 0, counts


def _assert_equal(a: object, b: object) -> None:
    assert a == b, (a, b)

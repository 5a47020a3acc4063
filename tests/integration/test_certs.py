"""Self-managed certificates against the real API server: replicas share one Secret.

Each "replica" is a ``certs.SecretCertificates`` with its own cert dir, talking to the test
control plane as admin. The leader's rotation and the followers' refresh are called directly
(the background loop only calls them on a timer), except in the last test, which runs the
loop itself with a short interval.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography import x509

from controller import pki
from controller.admission import tls
from controller.devcluster import cluster
from controller.operator import certs

pytestmark = pytest.mark.integration

SECRET = "changegate-tls"


@pytest.fixture
def core(controlplane: cluster.ControlPlane) -> Any:
    api = kubernetes.config.new_client_from_config(config_file=str(controlplane.kubeconfig))
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    name = f"certs-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def replica(core: Any, namespace: str, cert_dir: Path) -> certs.SecretCertificates:
    return certs.SecretCertificates(
        core_api=core,
        namespace=namespace,
        name=SECRET,
        hosts=certs.service_hosts(service="changegate", namespace=namespace),
        cert_dir=cert_dir,
        clock=lambda: datetime.datetime.now(datetime.UTC),
    )


def secret_data(core: Any, namespace: str) -> dict[str, bytes]:
    secret = core.read_namespaced_secret(SECRET, namespace)
    assert secret.type == "kubernetes.io/tls"
    return {k: base64.b64decode(v) for k, v in secret.data.items()}


def files(cert_dir: Path) -> dict[str, bytes]:
    return {name: (cert_dir / name).read_bytes() for name in certs.FILES}


def expire_serving_cert(core: Any, namespace: str) -> bytes:
    """Replace the serving cert in the Secret by one of the same CA living a single day."""
    data = secret_data(core, namespace)
    ca = pki.KeyPair(cert_pem=data[certs.CA_CRT], key_pem=data[certs.CA_KEY])
    hosts = certs.service_hosts(service="changegate", namespace=namespace)
    short = pki.make_serving_cert(ca=ca, hosts=list(hosts), days=1)
    data |= {certs.TLS_CRT: short.cert_pem, certs.TLS_KEY: short.key_pem}
    core.patch_namespaced_secret(
        SECRET,
        namespace,
        {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}},
    )
    return short.cert_pem


def test_replicas_starting_together_converge_on_one_secret(
    core: Any, namespace: str, tmp_path: Path
) -> None:
    replicas = [replica(core, namespace, tmp_path / name) for name in ("a", "b", "c")]
    # Started at once, so they race to create the Secret: one wins, the others re-read.
    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(lambda r: r.start(), replicas))
    stored = secret_data(core, namespace)
    for r in replicas:
        assert files(r.cert_dir) == {name: stored[name] for name in certs.FILES}
        assert r.ca_bundle() == stored[certs.CA_CRT]
    # A later replica adopts what is there.
    late = replica(core, namespace, tmp_path / "late")
    late.start()
    assert secret_data(core, namespace) == stored
    assert files(late.cert_dir) == files(replicas[0].cert_dir)
    leaf = x509.load_pem_x509_certificate(stored[certs.TLS_CRT])
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(stored[certs.CA_CRT]))


def test_unusable_secret_is_replaced_at_start(core: Any, namespace: str, tmp_path: Path) -> None:
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": SECRET},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(b"garbage").decode(),
                "tls.key": base64.b64encode(b"garbage").decode(),
            },
        },
    )
    r = replica(core, namespace, tmp_path / "a")
    r.start()
    stored = secret_data(core, namespace)
    assert certs.plan(stored, hosts=r.hosts, now=datetime.datetime.now(datetime.UTC)).action == (
        certs.Action.KEEP
    )
    assert files(r.cert_dir)[certs.TLS_CRT] == stored[certs.TLS_CRT]


def test_leader_renews_an_expiring_serving_cert_and_the_follower_reloads_it(
    core: Any, namespace: str, tmp_path: Path
) -> None:
    leader, follower = (
        replica(core, namespace, tmp_path / "l"),
        replica(core, namespace, tmp_path / "f"),
    )
    leader.start()
    follower.start()
    ca_before = secret_data(core, namespace)[certs.CA_CRT]
    short = expire_serving_cert(core, namespace)
    assert follower.refresh() is True
    assert files(follower.cert_dir)[certs.TLS_CRT] == short
    # The server's reloader, as the admission server runs it, over the follower's files.
    reloader = tls.CertReloader(
        context=tls.server_context(
            cert_file=follower.cert_dir / certs.TLS_CRT, key_file=follower.cert_dir / certs.TLS_KEY
        ),
        cert_file=follower.cert_dir / certs.TLS_CRT,
        key_file=follower.cert_dir / certs.TLS_KEY,
    )

    assert follower.rotate() is certs.Action.RENEW_SERVING  # the follower is the leader now
    assert leader.rotate() is certs.Action.KEEP  # nothing left to do for the next one

    renewed = secret_data(core, namespace)
    assert renewed[certs.TLS_CRT] != short
    assert renewed[certs.CA_CRT] == ca_before
    assert x509.load_pem_x509_certificate(
        renewed[certs.TLS_CRT]
    ).not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    assert follower.refresh() is True
    assert files(follower.cert_dir) == {name: renewed[name] for name in certs.FILES}
    assert reloader.check() is True
    assert leader.refresh() is True
    assert files(leader.cert_dir) == files(follower.cert_dir)


async def test_background_loop_rotates_on_the_leader_and_refreshes_the_follower(
    core: Any, namespace: str, tmp_path: Path
) -> None:
    leader, follower = (
        replica(core, namespace, tmp_path / "l"),
        replica(core, namespace, tmp_path / "f"),
    )
    await asyncio.to_thread(leader.start)
    await asyncio.to_thread(follower.start)
    original = files(follower.cert_dir)[certs.TLS_CRT]
    short = await asyncio.to_thread(expire_serving_cert, core, namespace)
    bundle_changes: list[str] = []
    tasks = [
        asyncio.create_task(leader.run(leading=lambda: True, interval=0.05)),
        asyncio.create_task(
            follower.run(
                leading=lambda: False,
                on_change=lambda: bundle_changes.append("follower"),
                interval=0.05,
            )
        ),
    ]
    try:
        for _ in range(400):  # at most ~20 s; ends as soon as the follower has the renewal
            if (follower.cert_dir / certs.TLS_CRT).read_bytes() not in (original, short):
                break
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    renewed = await asyncio.to_thread(secret_data, core, namespace)
    assert renewed[certs.TLS_CRT] != short
    assert files(follower.cert_dir)[certs.TLS_CRT] == renewed[certs.TLS_CRT]
    assert bundle_changes == []  # same CA, so the webhook's caBundle need not change

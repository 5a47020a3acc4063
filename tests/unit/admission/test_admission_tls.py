"""TLS of the admission server: real handshakes, certificate rotation in place, dev certificates."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from controller import pki
from controller import store as stores
from controller.admission import server, tls


def _serial(pem_or_der: bytes) -> int:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def _client_context(*ca_files: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for ca_file in ca_files:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


async def _handshake(port: int, *ca_files: Path) -> tuple[int, bytes]:
    """Open a new verified TLS connection, GET /healthz; return (peer cert serial, response)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_client_context(*ca_files), server_hostname="127.0.0.1"
    )
    try:
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return _serial(peer), await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def _install(src: Path, dst: Path) -> None:
    """Put src's serving pair at dst the way a Secret volume update does: atomically, key first."""
    for name in ("tls.key", "tls.crt"):
        tmp = dst / f".{name}.new"
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, dst / name)


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    first = tmp_path / "first"
    tls.ensure_dev_certs(first)
    served = tmp_path / "served"
    served.mkdir()
    _install(first, served)
    return served


def _health_app() -> web.Application:
    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


@pytest.fixture
async def running(served_dir: Path) -> AsyncIterator[server.Server]:
    srv = await server.serve(
        app=_health_app(),
        host="127.0.0.1",
        port=0,
        cert_file=served_dir / "tls.crt",
        key_file=served_dir / "tls.key",
        reload_interval=0.05,
    )
    try:
        yield srv
    finally:
        await srv.stop()


async def test_server_speaks_tls_with_the_configured_certificate(
    running: server.Server, tmp_path: Path
) -> None:
    serial, response = await _handshake(running.port, tmp_path / "first" / "ca.crt")
    assert serial == _serial((tmp_path / "first" / "tls.crt").read_bytes())
    assert response.startswith(b"HTTP/1.1 200")
    assert running.url == f"https://127.0.0.1:{running.port}"


async def test_swapped_certificate_is_served_on_the_next_connection_without_restart(
    running: server.Server, tmp_path: Path, served_dir: Path
) -> None:
    old_ca = tmp_path / "first" / "ca.crt"
    second = tmp_path / "second"
    tls.ensure_dev_certs(second)  # a different CA and serving cert
    new_serial = _serial((second / "tls.crt").read_bytes())

    # An idle keep-alive connection opened before the swap must survive it.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running.port, ssl=_client_context(old_ca), server_hostname="127.0.0.1"
    )
    _install(second, served_dir)

    # The periodic check (every 0.05 s here) picks it up; poll new connections until it does.
    serial = None
    for _ in range(200):
        serial, response = await _handshake(running.port, old_ca, second / "ca.crt")
        if serial == new_serial:
            break
        await asyncio.sleep(0.05)
    assert serial == new_serial
    assert response.startswith(b"HTTP/1.1 200")
    assert running.reloader.reloads == 1
    serial, _ = await _handshake(running.port, second / "ca.crt")  # verifies against the new CA
    assert serial == new_serial

    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()

    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(running.port, old_ca)


async def test_half_written_pair_keeps_the_old_certificate_until_it_loads(
    running: server.Server, tmp_path: Path, served_dir: Path
) -> None:
    second = tmp_path / "second"
    tls.ensure_dev_certs(second)
    # Certificate already new, key still old: does not load; the old chain keeps serving.
    shutil.copyfile(second / "tls.crt", served_dir / "tls.crt")
    assert running.reload_certs() is False
    serial, _ = await _handshake(running.port, tmp_path / "first" / "ca.crt")
    assert serial == _serial((tmp_path / "first" / "tls.crt").read_bytes())

    shutil.copyfile(second / "tls.key", served_dir / "tls.key")
    running.reloader.check()  # the next check completes the rotation (if the loop did not yet)
    serial, _ = await _handshake(running.port, second / "ca.crt")
    assert serial == _serial((second / "tls.crt").read_bytes())


def test_dev_certs_are_created_then_reused(tmp_path: Path) -> None:
    ca, cert, key = tls.ensure_dev_certs(tmp_path / "dev")
    assert ca.name == "ca.crt" and cert.name == "tls.crt" and key.name == "tls.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = (ca.read_bytes(), cert.read_bytes(), key.read_bytes())
    again = tls.ensure_dev_certs(tmp_path / "dev")
    assert (again[0].read_bytes(), again[1].read_bytes(), again[2].read_bytes()) == first


def test_dev_cert_covers_the_requested_hosts_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca, cert, _ = tls.ensure_dev_certs(tmp_path, hosts=["127.0.0.1", "localhost", "::1"])
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_dev_cert_is_reissued_for_new_hosts_under_the_same_ca(tmp_path: Path) -> None:
    ca, cert, _ = tls.ensure_dev_certs(tmp_path)
    ca_pem, cert_pem = ca.read_bytes(), cert.read_bytes()
    tls.ensure_dev_certs(tmp_path, hosts=["127.0.0.1", "changegate.changegate.svc"])
    assert ca.read_bytes() == ca_pem
    assert cert.read_bytes() != cert_pem


def test_dev_cert_near_expiry_is_renewed(tmp_path: Path) -> None:
    ca, cert, key = tls.ensure_dev_certs(tmp_path)
    authority = pki.KeyPair(cert_pem=ca.read_bytes(), key_pem=(tmp_path / "ca.key").read_bytes())
    short = pki.make_serving_cert(ca=authority, hosts=["127.0.0.1", "localhost"], days=2)
    cert.write_bytes(short.cert_pem)
    key.write_bytes(short.key_pem)
    tls.ensure_dev_certs(tmp_path)
    remaining = pki.not_after(cert.read_bytes()) - datetime.datetime.now(datetime.UTC)
    assert remaining > datetime.timedelta(days=30)
    assert ca.read_bytes() == authority.cert_pem


async def test_review_is_decided_over_a_real_tls_connection(tmp_path: Path) -> None:
    ca, cert, key = tls.ensure_dev_certs(tmp_path)
    store = stores.Store()
    srv = await server.serve(
        app=server.build_app(store=store), host="127.0.0.1", port=0, cert_file=cert, key_file=key
    )
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": "default",
            "name": "settings",
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.com"},
            "object": {"metadata": {"name": "settings"}},
        },
    }
    try:
        connector = aiohttp.TCPConnector(ssl=_client_context(ca))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"{srv.url}/validate", json=review) as resp:
                starting = await resp.json()
            for kind in stores.KINDS:
                store.mark_synced(kind)
            async with session.post(f"{srv.url}/validate", json=review) as resp:
                decided = await resp.json()
            async with session.get(f"{srv.url}/nowhere") as resp:
                missing = resp.status
    finally:
        await srv.stop()
    assert starting["response"]["allowed"] is False
    assert starting["response"]["status"]["code"] == 503
    assert decided["response"] == {
        "uid": "u-1",
        "allowed": True,
        "auditAnnotations": {"decision": "allow", "reason": "NotControlled"},
    }
    assert missing == 404


# -- a CA rotation, in order: bundle first, certificate second ----------------------------------


def _reloader(directory: Path, *, clock: Callable[[], float] = time.monotonic) -> tls.CertReloader:
    cert, key = directory / "tls.crt", directory / "tls.key"
    return tls.CertReloader(
        context=tls.server_context(cert_file=cert, key_file=key),
        cert_file=cert,
        key_file=key,
        clock=clock,
    )


def _rotate_to_new_ca(directory: Path, elsewhere: Path) -> Path:
    """Replace CA, key and certificate in ``directory`` at once, as cert-manager would."""
    tls.ensure_dev_certs(elsewhere)  # a different CA and a serving cert it issued
    for name in ("ca.crt", "tls.key", "tls.crt"):
        tmp = directory / f".{name}.new"
        shutil.copyfile(elsewhere / name, tmp)
        os.replace(tmp, directory / name)
    return elsewhere


def test_a_changed_ca_file_is_reported_on_the_next_check(tmp_path: Path) -> None:
    tls.ensure_dev_certs(tmp_path / "certs")
    reloader = _reloader(tmp_path / "certs")
    changes: list[str] = []
    reloader.follow_ca(ca_file=tmp_path / "certs" / "ca.crt", on_change=lambda: changes.append("x"))
    assert reloader.check() is False and changes == []
    _rotate_to_new_ca(tmp_path / "certs", tmp_path / "new")
    reloader.check()
    assert changes  # the CA, and (no trust gate here) the new pair too
    count = len(changes)
    reloader.check()
    assert len(changes) == count  # reported once


async def test_a_certificate_from_a_new_ca_is_held_until_the_webhook_trusts_it(
    running: server.Server, tmp_path: Path, served_dir: Path
) -> None:
    first = tmp_path / "first"
    shutil.copyfile(first / "ca.crt", served_dir / "ca.crt")
    trusted = [False]
    running.reloader.follow_ca(ca_file=served_dir / "ca.crt", trusted=lambda _: trusted[0])
    second = _rotate_to_new_ca(served_dir, tmp_path / "second")

    for _ in range(5):  # the periodic check runs every 0.05 s here: it keeps holding
        assert running.reload_certs() is False
        serial, _ = await _handshake(running.port, first / "ca.crt")
        assert serial == _serial((first / "tls.crt").read_bytes())
        await asyncio.sleep(0.05)

    trusted[0] = True  # the live caBundle now carries the new CA
    running.reload_certs()
    serial, _ = await _handshake(running.port, second / "ca.crt")
    assert serial == _serial((second / "tls.crt").read_bytes())


def test_the_bundle_carries_the_served_ca_through_a_rotation(tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs"
    tls.ensure_dev_certs(certs_dir)
    old_ca = (certs_dir / "ca.crt").read_bytes()
    now = [1000.0]
    reloader = _reloader(certs_dir, clock=lambda: now[0])
    trusted = [False]
    reloader.follow_ca(ca_file=certs_dir / "ca.crt", trusted=lambda _: trusted[0])
    assert reloader.bundle(old_ca) == old_ca  # nothing under way: the file, byte for byte

    _rotate_to_new_ca(certs_dir, tmp_path / "new")
    new_ca = (certs_dir / "ca.crt").read_bytes()
    assert reloader.check() is False  # held: the API server does not trust it yet

    def cas(bundle: bytes) -> set[int]:
        return {c.serial_number for c in pki.load_certs(bundle)}

    both = cas(old_ca) | cas(new_ca)
    # 1. The new CA goes out together with the one that issued what is still served.
    assert cas(reloader.bundle(new_ca)) == both
    # 2. Trusted: the new certificate is served; the old CA stays for the other replicas.
    trusted[0] = True
    assert reloader.check() is True
    assert cas(reloader.bundle(new_ca)) == both
    now[0] += tls.RETIRED_CA_GRACE_SECONDS - 1
    assert cas(reloader.bundle(new_ca)) == both
    # 3. After the grace, only the new CA.
    now[0] += 2
    assert reloader.bundle(new_ca) == new_ca


def test_a_held_certificate_is_served_anyway_when_the_current_one_expires(
    tmp_path: Path,
) -> None:
    certs_dir = tmp_path / "certs"
    tls.ensure_dev_certs(certs_dir)
    authority = pki.KeyPair(
        cert_pem=(certs_dir / "ca.crt").read_bytes(),
        key_pem=(certs_dir / "ca.key").read_bytes(),
    )
    # Issued a day ago for one day: 30 seconds left.
    now = datetime.datetime.now(datetime.UTC)
    dying = pki.make_serving_cert(
        ca=authority,
        hosts=["127.0.0.1"],
        days=1,
        now=now - datetime.timedelta(days=1) + datetime.timedelta(seconds=30),
    )
    (certs_dir / "tls.key").write_bytes(dying.key_pem)
    (certs_dir / "tls.crt").write_bytes(dying.cert_pem)
    reloader = _reloader(certs_dir)
    reloader.follow_ca(ca_file=certs_dir / "ca.crt", trusted=lambda _: False)
    _rotate_to_new_ca(certs_dir, tmp_path / "new")
    assert reloader.check() is True  # failing after expiry is no worse than failing now

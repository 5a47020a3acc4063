"""TLS for the admission server: a context from cert/key files, reloaded in place, and dev certs.

The API server only talks HTTPS to webhooks. Serving certificates rotate (cert-manager, a
re-issued Secret); restarting the listener would drop in-flight reviews, and with
failurePolicy Fail a dropped review is a denied change. So the certificate chain is loaded
again into the *same* ``ssl.SSLContext`` when the files change: OpenSSL copies the context's
certificate into each new connection at handshake time, so new connections get the new chain
and open ones keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import exceptions, x509

from controller import pki

logger = logging.getLogger("changegate.admission.tls")

#: How often the files are checked; the rotation tools we know of renew days ahead of expiry.
RELOAD_INTERVAL_SECONDS = 10.0


def server_context(*, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) holding the chain in ``cert_file``/``key_file``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return ctx


class CertReloader:
    """Watches a cert/key pair and loads a changed pair into a live ``SSLContext``.

    ``load_cert_chain`` is not atomic: it installs the certificate before it checks the key,
    so loading a half-rotated pair (new cert, old key) straight into the live context would
    leave it unable to complete any handshake. The pair is therefore read once, checked on a
    scratch context, and only then loaded -- from that same snapshot of the bytes -- into the
    live one. A pair that does not load is logged and retried on the next check while the
    previous chain keeps serving.
    """

    def __init__(self, *, context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._loaded = _read_pair(cert_file, key_file)
        self.reloads = 0

    def check(self) -> bool:
        """Reload if the files changed since the last successful load; True if it reloaded."""
        try:
            pair = _read_pair(self.cert_file, self.key_file)
        except OSError as e:
            logger.warning("cannot read TLS files, keeping the current certificate: %s", e)
            return False
        # Content, not mtime: a Secret volume swaps a symlink (the files' mtimes may not move),
        # and two writes within one mtime tick must still count. The files are a few KiB.
        if pair == self._loaded:
            return False
        try:
            with tempfile.TemporaryDirectory(prefix="changegate-tls-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                cert.write_bytes(pair[0])
                key.write_bytes(pair[1])
                scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                scratch.load_cert_chain(certfile=str(cert), keyfile=str(key))
                self.context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (OSError, ssl.SSLError) as e:
            logger.warning("new TLS files do not load yet, keeping the current certificate: %s", e)
            return False
        self._loaded = pair
        self.reloads += 1
        logger.info("reloaded the serving certificate from %s", self.cert_file)
        return True

    async def run(self, interval: float = RELOAD_INTERVAL_SECONDS) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


def _read_pair(cert_file: Path, key_file: Path) -> tuple[bytes, bytes]:
    return cert_file.read_bytes(), key_file.read_bytes()


# -- dev mode ------------------------------------------------------------------------------------


#: Renew a dev serving cert this long before it expires, the CA a bit earlier.
_CERT_MARGIN = datetime.timedelta(days=7)
_CA_MARGIN = datetime.timedelta(days=30)


def ensure_dev_certs(
    directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path, Path]:
    """Create (or reuse) a dev CA and a serving certificate for ``hosts`` in ``directory``.

    Returns ``(ca_pem_path, cert_file, key_file)``. Existing files are reused while they are
    readable, not near expiry, chained to the CA and cover ``hosts``; otherwise what is stale
    is made again (a new CA also means a new serving certificate). The CA goes into the
    webhook configuration's ``caBundle``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    now = datetime.datetime.now(datetime.UTC)

    ca = _load_pair(ca_cert, ca_key)
    if ca is None or pki.not_after(ca.cert_pem) - now < _CA_MARGIN:
        ca = pki.make_ca(common_name="changegate dev CA")
        _write(ca_cert, ca.cert_pem, mode=0o644)
        _write(ca_key, ca.key_pem, mode=0o600)
        with contextlib.suppress(FileNotFoundError):
            cert_file.unlink()

    leaf = _load_pair(cert_file, key_file)
    if leaf is None or not _leaf_is_usable(leaf, ca=ca, hosts=hosts, now=now):
        leaf = pki.make_serving_cert(ca=ca, hosts=list(hosts))
        # Key first: a reloader that sees the new cert with the old key retries next time.
        _write(key_file, leaf.key_pem, mode=0o600)
        _write(cert_file, leaf.cert_pem, mode=0o644)
    return ca_cert, cert_file, key_file


def _load_pair(cert_file: Path, key_file: Path) -> pki.KeyPair | None:
    try:
        pair = pki.KeyPair(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())
        x509.load_pem_x509_certificate(pair.cert_pem)
    except (OSError, ValueError):
        return None
    return pair


def _leaf_is_usable(
    leaf: pki.KeyPair, *, ca: pki.KeyPair, hosts: Sequence[str], now: datetime.datetime
) -> bool:
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem)
    if cert.not_valid_after_utc - now < _CERT_MARGIN:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, exceptions.InvalidSignature, x509.ExtensionNotFound):
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    have |= set(sans.get_values_for_type(x509.DNSName))
    return all(_normal_host(h) in have for h in hosts)


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _write(path: Path, data: bytes, *, mode: int) -> None:
    # Write then rename, so a reader (or the reloader) never sees half a PEM file.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)

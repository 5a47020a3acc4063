"""TLS for the admission server: a context from cert/key files, reloaded in place, and dev certs.

The API server only talks HTTPS to webhooks. Serving certificates rotate (cert-manager, a
re-issued Secret); restarting the listener would drop in-flight reviews, and with
failurePolicy Fail a dropped review is a denied change. So the certificate chain is loaded
again into the *same* ``ssl.SSLContext`` when the files change: OpenSSL copies the context's
certificate into each new connection at handshake time, so new connections get the new chain
and open ones keep theirs.

A new CA has to reach two places: the webhook configuration's ``caBundle`` (what the API server
trusts) and the certificate this server presents. Whichever comes second, every review in
between fails -- denied under failurePolicy Fail. So the order is fixed, and they overlap:

1. ``ca.crt`` changes: the reloader reports it at once (``on_change``), and the leader publishes
   a bundle that carries the new CA *and* the CA that issued the certificate still being
   served (``CertReloader.bundle``).
2. A serving certificate from the new CA is held back (the old one keeps serving) until the
   live webhook configuration trusts it, for ``TRUST_SETTLE_SECONDS``; then it is loaded.
3. The old CA stays in the bundle ``RETIRED_CA_GRACE_SECONDS`` longer, for the other replicas,
   whose Secret volumes may update a minute later; then it is dropped.

A held certificate is loaded anyway when the one being served is about to expire: failing
then is no worse than keeping an expired certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from controller import pki

logger = logging.getLogger("changegate.admission.tls")

#: How often the files are checked: a few small reads, and a new CA must reach the webhook's
#: caBundle within seconds (a Secret volume or cert-manager gives no other signal).
RELOAD_INTERVAL_SECONDS = 1.0
#: How long the live caBundle must have trusted a new certificate before it is served.
TRUST_SETTLE_SECONDS = 1.0
#: How long a CA that issued a certificate we served stays in the published bundle afterwards.
RETIRED_CA_GRACE_SECONDS = 300.0
#: A certificate held back for the bundle is loaded anyway once the served one expires this soon.
HOLD_LIMIT = datetime.timedelta(minutes=1)


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

    def __init__(
        self,
        *,
        context: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._clock = clock
        self._loaded = _read_pair(cert_file, key_file)
        self.reloads = 0
        # Set by follow_ca; without it the reloader only reloads the pair, as soon as it loads.
        self.ca_file: Path | None = None
        self._ca = b""
        self._trusted: Callable[[bytes], bool] | None = None
        self._on_change: Callable[[], None] = lambda: None
        self._serving_cas: list[bytes] = []  # the CAs that issued what is served now
        self._retired: list[tuple[float, list[bytes]]] = []  # (since, CAs) served before
        self._held: bytes | None = None

    def follow_ca(
        self,
        *,
        ca_file: Path,
        trusted: Callable[[bytes], bool] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """Also watch ``ca_file`` and order a CA rotation against the webhook's caBundle.

        ``trusted(chain_pem)`` says whether the API server trusts a certificate yet; a new
        pair is held back until it does. ``on_change`` is called when ``ca_file`` changes and
        when a new pair is served: both change what ``bundle`` returns.
        """
        self.ca_file, self._trusted, self._on_change = ca_file, trusted, on_change
        self._ca = _read_optional(ca_file)
        self._serving_cas = pki.issuers(self._loaded[0], self._ca)

    def bundle(self, ca_pem: bytes) -> bytes:
        """The caBundle to publish: ``ca_pem`` plus the CAs of what is or was just served.

        ``ca_pem`` is the CA file's (or the Secret's) bundle. A CA missing from it stays in
        while this replica serves a certificate it issued, and ``RETIRED_CA_GRACE_SECONDS``
        after, so the API server never stops trusting a certificate a replica still serves.
        """
        now = self._clock()
        self._retired = [
            (since, cas) for since, cas in self._retired if now - since < RETIRED_CA_GRACE_SECONDS
        ]
        have = pki.issuers(ca_pem, ca_pem)  # every CA in it, in canonical PEM
        extra: list[bytes] = []
        for ca in [*self._serving_cas, *(ca for _, cas in self._retired for ca in cas)]:
            if ca not in have and ca not in extra:
                extra.append(ca)
        if not extra:
            return ca_pem
        head = ca_pem.rstrip(b"\n") + b"\n" if ca_pem.strip() else b""
        return head + b"".join(extra)

    def check(self) -> bool:
        """Reload if the files changed since the last successful load; True if it reloaded."""
        self._check_ca()
        try:
            pair = _read_pair(self.cert_file, self.key_file)
        except OSError as e:
            logger.warning("cannot read TLS files, keeping the current certificate: %s", e)
            return False
        # Content, not mtime: a Secret volume swaps a symlink (the files' mtimes may not move),
        # and two writes within one mtime tick must still count. The files are a few KiB.
        if pair == self._loaded or not self._may_serve(pair[0]):
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
        self._held = None
        self.reloads += 1
        logger.info("reloaded the serving certificate from %s", self.cert_file)
        if self.ca_file is not None:
            serving = pki.issuers(pair[0], self._ca)
            retired = [ca for ca in self._serving_cas if ca not in serving]
            if retired:
                self._retired.append((self._clock(), retired))
            self._serving_cas = serving
            self._on_change()
        return True

    def _check_ca(self) -> None:
        if self.ca_file is None:
            return
        ca = _read_optional(self.ca_file)
        if ca and ca != self._ca:
            self._ca = ca
            logger.info("the CA bundle in %s changed", self.ca_file)
            self._on_change()

    def _may_serve(self, cert_pem: bytes) -> bool:
        """Whether a new certificate may be loaded now (trusted, or the old one is expiring)."""
        if self._trusted is None or self._trusted(cert_pem):
            return True
        try:
            left = pki.not_after(self._loaded[0]) - datetime.datetime.now(datetime.UTC)
        except ValueError:
            left = datetime.timedelta(0)
        if left < HOLD_LIMIT:
            logger.warning("serving a certificate the webhook's caBundle does not trust yet")
            return True
        if self._held != cert_pem:
            self._held = cert_pem
            logger.info("new serving certificate held until the webhook's caBundle trusts it")
        return False

    async def run(self, interval: float = RELOAD_INTERVAL_SECONDS) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


def _read_pair(cert_file: Path, key_file: Path) -> tuple[bytes, bytes]:
    return cert_file.read_bytes(), key_file.read_bytes()


def _read_optional(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


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
        pki.write_atomic(ca_cert, ca.cert_pem, mode=0o644)
        pki.write_atomic(ca_key, ca.key_pem, mode=0o600)
        with contextlib.suppress(FileNotFoundError):
            cert_file.unlink()

    leaf = _load_pair(cert_file, key_file)
    if leaf is None or not _leaf_is_usable(leaf, ca=ca, hosts=hosts, now=now):
        leaf = pki.make_serving_cert(ca=ca, hosts=list(hosts))
        # Key first: a reloader that sees the new cert with the old key retries next time.
        pki.write_atomic(key_file, leaf.key_pem, mode=0o600)
        pki.write_atomic(cert_file, leaf.cert_pem, mode=0o644)
    return ca_cert, cert_file, key_file


def _load_pair(cert_file: Path, key_file: Path) -> pki.KeyPair | None:
    try:
        pair = pki.KeyPair(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())
        pki.load_cert(pair.cert_pem)
    except (OSError, ValueError):
        return None
    return pair


def _leaf_is_usable(
    leaf: pki.KeyPair, *, ca: pki.KeyPair, hosts: Sequence[str], now: datetime.datetime
) -> bool:
    cert = pki.load_cert(leaf.cert_pem)
    if cert.not_valid_after_utc - now < _CERT_MARGIN:
        return False
    if not pki.issued_by(cert, pki.load_cert(ca.cert_pem)):
        return False
    try:
        have = pki.names(cert)
    except ValueError:  # a malformed extension: make a new one
        return False
    return bool(have) and all(pki.normal_host(h) in have for h in hosts)

"""Self-managed certificates: changegate issues, stores and rotates its own serving certificate.

The CA and the serving certificate live in one Secret (type ``kubernetes.io/tls``) in
changegate's namespace, which every replica reads and which only the Lease holder rewrites:

``tls.crt``, ``tls.key``
    The serving certificate for ``<service>.<namespace>.svc`` (and ``.svc.cluster.local``),
    signed by the current CA.
``ca.crt``
    The CA bundle the API server trusts -- what goes into the webhook's ``caBundle``. Usually
    one certificate; two while a CA rotation overlaps (see below).
``ca.key``
    The current CA's private key. It signs nothing but this webhook's serving certificate,
    and only this webhook's ``caBundle`` trusts the CA.

``plan()`` is the pure decision: given the Secret's data and ``now``, keep it, create it all,
renew the serving certificate, rotate the CA, or drop an expired CA from the bundle.

CA rotation keeps every replica reachable, in three steps over time:

1. The CA expires within ``renew_before``: a new CA is made and the bundle carries **both**
   (new first). The serving certificate stays the one the old CA signed, which the API server
   still trusts -- the leader writes the two-CA bundle into the webhook configuration as
   soon as the files change (the TLS reloader reports a new ca.crt), and every replica picks
   up the files within ``REFRESH_SECONDS``.
2. After ``ca_overlap`` (one hour by default, far longer than any refresh period) the serving
   certificate is re-issued by the new CA; the bundle already trusts it everywhere.
3. Once the old CA has expired it is dropped from the bundle.

The I/O shell (``SecretCertificates``) uses the official synchronous client in worker threads,
like the rest of the operator: every replica gets (or, on first start, creates) the Secret and
writes ``tls.crt``, ``tls.key`` and ``ca.crt`` atomically into its cert dir before the server
starts; afterwards it re-reads the Secret every ``REFRESH_SECONDS`` and rewrites the files
when they changed -- the admission server's TLS reloader picks them up without dropping the
listener. Writes carry the read ``resourceVersion``: two replicas racing get one winner and a
409 for the other, which simply re-reads.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controller import pki
from controller.operator import kubeapi

logger = logging.getLogger(__name__)

TLS_CRT, TLS_KEY, CA_CRT, CA_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"
#: The files written into the cert dir (the CA key stays in the Secret).
FILES = (TLS_KEY, TLS_CRT, CA_CRT)

RENEW_BEFORE = datetime.timedelta(days=30)
CA_OVERLAP = datetime.timedelta(hours=1)
CA_DAYS = 3650
SERVING_DAYS = 365
CA_COMMON_NAME = "changegate webhook CA"
#: How often every replica re-reads the Secret (one small GET): a CA someone else put into it
#: must reach the files, and so the webhook's caBundle, within seconds.
REFRESH_SECONDS = 5.0


class Action(enum.StrEnum):
    """What ``plan`` decided to do with the Secret."""

    KEEP = "keep"
    CREATE = "create"  # nothing usable: a new CA and a new serving certificate
    RENEW_SERVING = "renew-serving"  # a new serving certificate from the current CA
    ROTATE_CA = "rotate-ca"  # a new CA joins the bundle; the serving certificate stays
    PRUNE_BUNDLE = "prune-bundle"  # an expired CA leaves the bundle


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The decision and the Secret data it leads to (``data`` is the input when keeping)."""

    action: Action
    reason: str
    data: Mapping[str, bytes]

    @property
    def changes(self) -> bool:
        return self.action is not Action.KEEP


def service_hosts(*, service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server may call a webhook Service by."""
    return (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


def plan(
    secret_data: Mapping[str, bytes] | None,
    *,
    hosts: Sequence[str],
    now: datetime.datetime,
    renew_before: datetime.timedelta = RENEW_BEFORE,
    ca_overlap: datetime.timedelta = CA_OVERLAP,
    ca_days: int = CA_DAYS,
    serving_days: int = SERVING_DAYS,
) -> Plan:
    """Decide what the certificate Secret should hold at ``now``.

    New key material is generated here (that is the point of the plan), but nothing is read
    or written: the same inputs always lead to the same decision.
    """

    def serving(ca: pki.KeyPair) -> pki.KeyPair:
        return pki.make_serving_cert(ca=ca, hosts=list(hosts), days=serving_days, now=now)

    def create(reason: str) -> Plan:
        ca = pki.make_ca(common_name=CA_COMMON_NAME, days=ca_days, now=now)
        return Plan(Action.CREATE, reason, _data(ca=ca, bundle=[ca.cert_pem], leaf=serving(ca)))

    if not secret_data:
        return create("no certificate Secret yet")
    try:
        current = _parse(secret_data)
    except _Unusable as e:
        return create(str(e))
    if current.signing_cert.not_valid_after_utc <= now:
        return create("the CA has expired")

    bundle = [c for c in current.bundle if c.not_valid_after_utc > now]
    bundle_pem = [pki.pem(c) for c in bundle]

    if current.signing_cert.not_valid_after_utc - now < renew_before:
        new_ca = pki.make_ca(common_name=CA_COMMON_NAME, days=ca_days, now=now)
        leaf = current.leaf
        if _leaf_problem(current, hosts=hosts, now=now, renew_before=renew_before) not in (
            "",
            _PENDING_SWITCH,
        ):
            # Still signed by the old CA: the bundle must trust the new one everywhere first.
            leaf = serving(current.signing)
        return Plan(
            Action.ROTATE_CA,
            "the CA expires within the renewal margin; the bundle carries the old and new CA",
            _data(ca=new_ca, bundle=[new_ca.cert_pem, *bundle_pem], leaf=leaf),
        )

    problem = _leaf_problem(current, hosts=hosts, now=now, renew_before=renew_before)
    if problem == _PENDING_SWITCH:
        ca_age = now - current.signing_cert.not_valid_before_utc
        problem = "the serving certificate moves to the new CA" if ca_age >= ca_overlap else ""
    if problem:
        return Plan(
            Action.RENEW_SERVING,
            problem,
            _data(ca=current.signing, bundle=bundle_pem, leaf=serving(current.signing)),
        )
    if len(bundle) != len(current.bundle):
        return Plan(
            Action.PRUNE_BUNDLE,
            "an expired CA leaves the bundle",
            _data(ca=current.signing, bundle=bundle_pem, leaf=current.leaf),
        )
    return Plan(Action.KEEP, "valid", secret_data)


# -- parsing and checks ----------------------------------------------------------------------

_PENDING_SWITCH = "pending-switch"


class _Unusable(ValueError):
    """The Secret's data cannot be used at all (missing keys, garbage PEM, no CA key)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Current:
    signing: pki.KeyPair  # the CA that ca.key belongs to
    signing_cert: pki.Certificate
    bundle: tuple[pki.Certificate, ...]
    leaf: pki.KeyPair


def _parse(data: Mapping[str, bytes]) -> _Current:
    missing = [k for k in (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY) if not data.get(k)]
    if missing:
        raise _Unusable(f"the Secret lacks {', '.join(missing)}")
    try:
        bundle = tuple(pki.load_certs(data[CA_CRT]))
        pki.load_cert(data[TLS_CRT])
        pki.load_key(data[TLS_KEY])
        pki.load_key(data[CA_KEY])
    except (ValueError, TypeError) as e:
        raise _Unusable(f"the Secret holds unreadable PEM: {e}") from e
    signing = next((c for c in bundle if pki.same_public_key(c, data[CA_KEY])), None)
    if signing is None:
        raise _Unusable("no CA in ca.crt belongs to ca.key")
    return _Current(
        signing=pki.KeyPair(cert_pem=pki.pem(signing), key_pem=data[CA_KEY]),
        signing_cert=signing,
        bundle=bundle,
        leaf=pki.KeyPair(cert_pem=data[TLS_CRT], key_pem=data[TLS_KEY]),
    )


def _leaf_problem(
    current: _Current,
    *,
    hosts: Sequence[str],
    now: datetime.datetime,
    renew_before: datetime.timedelta,
) -> str:
    """Why the serving certificate must be re-issued ("" if it is fine)."""
    cert = pki.load_cert(current.leaf.cert_pem)
    if not pki.same_public_key(cert, current.leaf.key_pem):
        return "tls.key does not belong to tls.crt"
    if cert.not_valid_after_utc - now < renew_before:
        return "the serving certificate expires within the renewal margin"
    if pki.names(cert) != {pki.normal_host(h) for h in hosts}:
        return "the serving certificate's names differ from the Service's"
    if pki.issued_by(cert, current.signing_cert):
        return ""
    if any(pki.issued_by(cert, ca) and ca.not_valid_after_utc > now for ca in current.bundle):
        return _PENDING_SWITCH
    return "the serving certificate was not issued by a CA in the bundle"


def _data(*, ca: pki.KeyPair, bundle: Sequence[bytes], leaf: pki.KeyPair) -> dict[str, bytes]:
    return {
        TLS_CRT: leaf.cert_pem,
        TLS_KEY: leaf.key_pem,
        CA_CRT: b"".join(bundle),
        CA_KEY: ca.key_pem,
    }


# -- files -------------------------------------------------------------------------------------


def write_files(cert_dir: Path, data: Mapping[str, bytes]) -> bool:
    """Write tls.key, tls.crt and ca.crt into ``cert_dir`` if they differ; True if any did.

    Each file is written then renamed, so a reader never sees half a PEM file; the key goes
    first, and the TLS reloader checks a pair before loading it, so a reader between the two
    renames keeps the old pair one more round.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    changed = False
    for name in FILES:
        path = cert_dir / name
        try:
            if path.read_bytes() == data[name]:
                continue
        except OSError:
            pass
        pki.write_atomic(path, data[name], mode=0o600 if name == TLS_KEY else 0o644)
        changed = True
    return changed


# -- the Secret --------------------------------------------------------------------------------


def _decode(secret: Any) -> tuple[dict[str, bytes], str | None]:
    raw: Mapping[str, str] = secret.data or {}
    data = {k: base64.b64decode(v) for k, v in raw.items()}
    return data, secret.metadata.resource_version


def _body(
    *, name: str, namespace: str, data: Mapping[str, bytes], resource_version: str | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "changegate"},
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": metadata,
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }


class SecretCertificates:
    """One replica's view of the certificate Secret, and the files it keeps in ``cert_dir``.

    ``start()`` runs once before the server starts; ``run()`` is the background task.
    ``ca_bundle()`` is the bundle last read, for the webhook configuration.
    """

    def __init__(
        self,
        *,
        core_api: kubeapi.Secrets,
        namespace: str,
        name: str,
        hosts: Sequence[str],
        cert_dir: Path,
        clock: Callable[[], datetime.datetime],
        renew_before: datetime.timedelta = RENEW_BEFORE,
        ca_overlap: datetime.timedelta = CA_OVERLAP,
    ) -> None:
        self._api = core_api
        self.namespace = namespace
        self.name = name
        self.hosts = tuple(hosts)
        self.cert_dir = cert_dir
        self._clock = clock
        self._renew_before = renew_before
        self._ca_overlap = ca_overlap
        self._data: Mapping[str, bytes] = {}

    def ca_bundle(self) -> bytes:
        return self._data.get(CA_CRT, b"")

    def _plan(self, data: Mapping[str, bytes] | None) -> Plan:
        return plan(
            data,
            hosts=self.hosts,
            now=self._clock(),
            renew_before=self._renew_before,
            ca_overlap=self._ca_overlap,
        )

    def _read(self) -> tuple[dict[str, bytes], str | None] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return _decode(self._api.read_namespaced_secret(self.name, self.namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _write(self, data: Mapping[str, bytes], resource_version: str | None) -> bool:
        """Create (no version) or replace (with the read version); False if someone raced us."""
        from kubernetes.client.exceptions import ApiException

        body = _body(
            name=self.name, namespace=self.namespace, data=data, resource_version=resource_version
        )
        try:
            if resource_version is None:
                self._api.create_namespaced_secret(self.namespace, body)
            else:
                self._api.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:  # AlreadyExists on create, Conflict on replace
                return False
            raise
        return True

    def _adopt(self, data: Mapping[str, bytes]) -> bool:
        changed = write_files(self.cert_dir, data)
        self._data = dict(data)
        return changed

    def start(self, *, attempts: int = 5) -> None:
        """Make sure a usable Secret exists, and write its files. Blocking; run in a thread.

        Any replica creates the Secret when it is absent, and replaces it when nothing in it
        is usable (no replica could serve otherwise). Renewals are left to the leader.
        """
        for _ in range(attempts):
            read = self._read()
            data, version = read if read is not None else (None, None)
            decided = self._plan(data)
            if decided.action is not Action.CREATE and data is not None:
                self._adopt(data)
                return
            logger.info("certificate Secret %s/%s: %s", self.namespace, self.name, decided.reason)
            if self._write(decided.data, version):
                self._adopt(decided.data)
                return
            # Another replica won the race: read what it wrote.
        raise RuntimeError(f"could not settle the certificate Secret {self.namespace}/{self.name}")

    def rotate(self) -> Action:
        """The leader's pass: renew or rotate if the plan says so. Blocking; run in a thread.

        On a conflict nothing is written; the next round reads the Secret again.
        """
        read = self._read()
        data, version = read if read is not None else (None, None)
        decided = self._plan(data)
        if not decided.changes:
            return Action.KEEP
        if not self._write(decided.data, version):
            logger.info("certificate Secret changed under us; retrying next round")
            return Action.KEEP
        logger.info(
            "certificate Secret %s/%s: %s (%s)",
            self.namespace,
            self.name,
            decided.action,
            decided.reason,
        )
        return decided.action

    def refresh(self) -> bool:
        """Re-read the Secret and rewrite changed files; True if any file changed."""
        read = self._read()
        if read is None:
            logger.warning("certificate Secret %s/%s is gone", self.namespace, self.name)
            return False
        data = read[0]
        if any(not data.get(k) for k in FILES):
            logger.warning("certificate Secret %s/%s is incomplete", self.namespace, self.name)
            return False
        return self._adopt(data)

    async def run(
        self,
        *,
        leading: Callable[[], bool],
        on_change: Callable[[], None] = lambda: None,
        interval: float = REFRESH_SECONDS,
    ) -> None:
        """Every ``interval``: the leader rotates if due, then every replica refreshes."""
        while True:
            await asyncio.sleep(interval)
            try:
                if leading():
                    await asyncio.to_thread(self.rotate)
                bundle = self.ca_bundle()
                if await asyncio.to_thread(self.refresh) and self.ca_bundle() != bundle:
                    on_change()
            except Exception as e:  # the current files keep serving; try again next round
                logger.warning("certificate refresh failed: %s", e)

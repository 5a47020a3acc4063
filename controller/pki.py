"""The certificate toolbox, on ``cryptography``: make, read and check certificates; write PEM files.

The one place changegate handles X.509: the admission server's TLS (its reloader and dev mode),
the operator's certificate Secret, and the local control plane (its CA, the admin and per-user
client certificates) all make, parse and check certificates here, so a check -- "issued by",
"names cover the hosts", "the key belongs to the certificate" -- means the same everywhere.
The rules built from these checks (when to renew, what to hold back) stay with their callers.
Nothing here talks to a cluster; the only I/O is ``write_atomic``.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Certificate: TypeAlias = x509.Certificate
"""A parsed certificate (callers name the type without importing ``cryptography``)."""


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate (tests make many), accepted by Go's TLS and by OpenSSL 3.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(*, common_name: str, days: int = 365, now: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA certificate allowed to sign leaf certificates.

    ``now`` (default: the wall clock) anchors the validity, so callers that plan with an
    injected clock issue certificates consistent with it.
    """
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now or _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _sign_leaf(
    *,
    ca: KeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
    days: int,
    now: datetime.datetime | None = None,
) -> KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("CA key must be EC or RSA")
    key = _key()
    now = now or _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_serving_cert(
    *, ca: KeyPair, hosts: Sequence[str], days: int = 90, now: datetime.datetime | None = None
) -> KeyPair:
    """A TLS server certificate for DNS names and IP addresses in ``hosts``."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return _sign_leaf(
        ca=ca,
        subject=subject,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
        days=days,
        now=now,
    )


def make_client_cert(
    *, ca: KeyPair, user: str, groups: Sequence[str] = (), days: int = 30
) -> KeyPair:
    """A client certificate that kube-apiserver authenticates as ``user`` in ``groups``.

    Kubernetes maps the subject's CN to the username and each O to a group.
    """
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return _sign_leaf(
        ca=ca, subject=x509.Name(attrs), usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days
    )


def make_rsa_key_pem(bits: int = 2048) -> bytes:
    """An RSA private key (service-account token signing key of the local API server)."""
    return _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def not_after(cert_pem: bytes) -> datetime.datetime:
    """When a PEM certificate expires (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (e.g. a caBundle carrying an old and a new CA)."""
    return x509.load_pem_x509_certificates(pem)


def load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A PEM private key of a kind pki makes; ValueError for anything else."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported private key type")
    return key


def same_public_key(cert: x509.Certificate, key_pem: bytes) -> bool:
    """Whether ``key_pem`` is the private key of ``cert`` (False when it does not load)."""
    try:
        return cert.public_key() == load_key(key_pem).public_key()
    except (ValueError, TypeError):
        return False


def load_cert(cert_pem: bytes) -> Certificate:
    """The first certificate in ``cert_pem``; ValueError when there is none."""
    return x509.load_pem_x509_certificate(cert_pem)


def pem(cert: Certificate) -> bytes:
    """``cert`` as PEM, canonical: the same certificate always gives the same bytes."""
    return cert.public_bytes(serialization.Encoding.PEM)


def issued_by(cert: Certificate, ca: Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (its issuer name and signature check out)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


def issuers(chain_pem: bytes, cas_pem: bytes) -> list[bytes]:
    """The CAs in ``cas_pem`` (PEM, canonical) that issued or are part of ``chain_pem``.

    Empty when ``cas_pem`` would not let a client verify the chain; unreadable PEM counts as
    no CA at all.
    """
    try:
        chain = load_certs(chain_pem)
        cas = load_certs(cas_pem)
    except ValueError:
        return []
    found: list[bytes] = []
    for ca in cas:
        if any(cert == ca or issued_by(cert, ca) for cert in chain):
            ca_pem = pem(ca)
            if ca_pem not in found:
                found.append(ca_pem)
    return found


def names(cert: Certificate) -> set[str]:
    """The DNS names and IP addresses (as ``normal_host`` writes them) ``cert`` is valid for."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return found | set(sans.get_values_for_type(x509.DNSName))


def normal_host(host: str) -> str:
    """``host`` as ``names`` reports it: IP addresses in canonical form, DNS names as given."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, so that no reader sees half a file.

    Written to a temporary file beside it, then renamed over it: the TLS reloader or a
    client reading the PEM sees the old file or the new one. The mode is set explicitly: a
    temporary file left by a crash keeps its old mode, and the umask would decide the rest.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)

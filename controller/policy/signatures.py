"""Approvals signed by a task-tracking system (ServiceNow, Jira, an in-house tracker).

Organisations approve work plans in a tracker. A ChangePolicy may trust such a tracker as an
*approval issuer*: a name and one or more public keys (Ed25519 or ECDSA P-256, PEM, each with
a key id, so keys can be rotated). The tracker's automation signs the approval it recorded --
the window's name, its specHash, its ticket, the human approver and the time -- and appends
the entry with the signature. changegate verifies it with ``cryptography``:

- when the entry is appended (``validation``), naming the check that failed: unknown issuer or
  key id, a signature for another window (replayed), another ticket, another spec, or one that
  does not verify;
- at every decision too (``approvals``): the entry counts under a policy only while that
  policy still trusts the key, so removing a compromised key withdraws what it signed.

A signed approval counts under the policies it lists, each of which must trust its issuer --
never under another policy. Four-eyes still holds: the approver it names is a human who must
not be the requester.

What is signed (``payload``)::

    b"changegate.io/approval/v1\\n" + canonical JSON of
    {"approvedAt": "2026-12-01T09:00:00Z", "approver": "bob@example.com",
     "specHash": "sha256:...", "ticket": "CHG-1234", "window": "chg-1234"}

``approvedAt`` in UTC to the second, so a value re-serialised by the API server or a client
signs the same bytes. The domain prefix keeps these signatures from meaning anything else.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from controller.model import crds

DOMAIN = b"changegate.io/approval/v1\n"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


timestamp = crds.rfc3339
"""The canonical form of a time in what is signed: UTC, whole seconds, ``Z``."""


def payload(
    *, window: str, spec_hash: str, ticket: str, approver: str, approved_at: datetime.datetime
) -> bytes:
    claims = {
        "approvedAt": timestamp(approved_at),
        "approver": approver,
        "specHash": spec_hash,
        "ticket": ticket,
        "window": window,
    }
    return DOMAIN + json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=256)
def load_public_key(pem: str) -> crds.PublicKey:
    """A trusted issuer's public key (parsed once per PEM)."""
    return crds.approval_public_key(pem)


def new_key_pair(algorithm: Literal["ed25519", "p256"] = "ed25519") -> tuple[bytes, str]:
    """A fresh issuer key pair: (private key PEM for the tracker, public key PEM for the
    policy's ``trustedIssuers``). ``openssl genpkey -algorithm ed25519`` does the same."""
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("use an Ed25519 or ECDSA P-256 private key (PEM, unencrypted)")


def sign(key: PrivateKey, data: bytes) -> str:
    """Base64 of the signature (ECDSA: DER, over SHA-256)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(data)
    else:
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


def verifies(key: crds.PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, data)
        else:
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def problem(
    entry: crds.WindowApproval, *, policy: crds.ChangePolicy, window: str, ticket: str
) -> str | None:
    """Why a signed ``entry`` of ``window`` does not count under ``policy``; None if it does.

    Each check has its own sentence, so whoever integrates a tracker learns which one failed.
    """
    sig = entry.signature
    if sig is None:
        return "the approval carries no signature"
    name = policy.metadata.name
    issuer = next((i for i in policy.spec.approval.trusted_issuers if i.name == sig.issuer), None)
    if issuer is None:
        trusted = ", ".join(i.name for i in policy.spec.approval.trusted_issuers) or "none"
        return f"policy {name} does not trust approval issuer {sig.issuer!r} (it trusts: {trusted})"
    key = next((k for k in issuer.keys if k.key_id == sig.key_id), None)
    if key is None:
        known = ", ".join(k.key_id for k in issuer.keys)
        return f"issuer {sig.issuer} has no key {sig.key_id!r} in policy {name} (its keys: {known})"
    if sig.window != window:
        return (
            f"the signature is for window {sig.window!r}, not {window!r}: a signature cannot be"
            " replayed for another window"
        )
    if sig.ticket != ticket:
        return f"the signature is for ticket {sig.ticket!r}, but the window's ticket is {ticket!r}"
    if entry.approved_at is None:
        return "approvedAt is required with a signature (it is part of what is signed)"
    data = payload(
        window=window,
        spec_hash=entry.spec_hash,
        ticket=ticket,
        approver=entry.approver,
        approved_at=entry.approved_at,
    )
    if not verifies(load_public_key(key.public_key), data, sig.value):
        return (
            f"the signature does not verify with key {sig.key_id} of issuer {sig.issuer}: it was"
            " made over another specHash, approver or approvedAt, or not with this key"
        )
    return None


def sign_approval(
    *,
    private_key_pem: bytes,
    issuer: str,
    key_id: str,
    window: str,
    spec_hash: str,
    ticket: str,
    approver: str,
    policies: list[str],
    approved_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The approval entry a tracker appends to ``spec.approvals`` of ``window``.

    For integrations: call it where the tracker records the approval, then append the result
    (``kubectl patch changewindow NAME --type=json -p '[{"op": "add", "path":
    "/spec/approvals/-", "value": ENTRY}]'``, or the API client of your choice). ``spec_hash``
    is the window's ``status.specHash`` the approver reviewed; ``policies`` the ChangePolicies
    that trust ``issuer`` and under which the approval should count.
    """
    at = approved_at or datetime.datetime.now(datetime.UTC)
    data = payload(
        window=window, spec_hash=spec_hash, ticket=ticket, approver=approver, approved_at=at
    )
    return {
        "approver": approver,
        "specHash": spec_hash,
        "approvedAt": timestamp(at),
        "policies": list(policies),
        "signature": {
            "issuer": issuer,
            "keyId": key_id,
            "window": window,
            "ticket": ticket,
            "value": sign(load_private_key(private_key_pem), data),
        },
    }

"""Approvals signed by a task-tracking system (issue 9, part 4): every check, by its message."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from controller.model import crds
from controller.policy import approvals, decide, index, signatures

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}


ED_PRIVATE, ED_PUBLIC = signatures.new_key_pair("ed25519")
EC_PRIVATE, EC_PUBLIC = signatures.new_key_pair("p256")
OTHER_PRIVATE, _ = signatures.new_key_pair("ed25519")


def policy(
    name: str = "payments-prod", *, issuers: list[dict[str, Any]] | None = None
) -> crds.ChangePolicy:
    trusted = (
        issuers
        if issuers is not None
        else [
            {
                "name": "tracker",
                "keys": [
                    {"keyId": "ed-2026", "publicKey": ED_PUBLIC},
                    {"keyId": "p256-2027", "publicKey": EC_PUBLIC},
                ],
            }
        ]
    )
    return crds.ChangePolicy.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "match": {"resources": [RULE], "namespaces": ["payments"]},
                "approval": {
                    "required": 1,
                    "approverGroups": ["change-approvers"],
                    "trustedIssuers": trusted,
                },
            },
        }
    )


SPEC: dict[str, Any] = {
    "ticket": "CHG-1234",
    "requester": "alice",
    "identities": ["oncall"],
    "targets": [{"namespaces": ["payments"], "resources": [RULE]}],
    "schedule": {"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T15:00:00Z"},
}
H = approvals.spec_hash(SPEC)


def signed(
    *,
    key: bytes = ED_PRIVATE,
    key_id: str = "ed-2026",
    issuer: str = "tracker",
    window: str = "chg-1234",
    spec_hash: str = H,
    ticket: str = "CHG-1234",
    approver: str = "bob",
    policies: tuple[str, ...] = ("payments-prod",),
) -> dict[str, Any]:
    return signatures.sign_approval(
        private_key_pem=key,
        issuer=issuer,
        key_id=key_id,
        window=window,
        spec_hash=spec_hash,
        ticket=ticket,
        approver=approver,
        policies=list(policies),
        approved_at=NOW - dt.timedelta(hours=2),  # approved in the tracker a while ago
    )


def body(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": crds.API_VERSION,
        "kind": "ChangeWindow",
        "metadata": {"name": "chg-1234"},
        "spec": {**copy.deepcopy(SPEC), "approvals": entries},
    }


def append(entry: dict[str, Any], *, snap: index.Snapshot | None = None) -> decide.Decision:
    """The tracker's automation (a service account, not an approver) appends ``entry``."""
    old = body([])
    req = decide.Request(
        uid="u",
        user="system:serviceaccount:tracker:bot",
        groups=("system:serviceaccounts",),
        operation="UPDATE",
        api_group=crds.GROUP,
        api_version=crds.VERSION,
        resource="changewindows",
        subresource="",
        kind="ChangeWindow",
        namespace="",
        name="chg-1234",
        dry_run=False,
        object=body([entry]),
        old_object=old,
    )
    snap = snap or index.Snapshot.build(
        policies=[policy()], identities=[], windows=[], namespaces={"payments": {}}
    )
    return decide.decide(req, snapshot=snap, now=NOW)


@pytest.mark.parametrize(
    ("key", "key_id"),
    [(ED_PRIVATE, "ed-2026"), (EC_PRIVATE, "p256-2027")],
    ids=["ed25519", "ecdsa-p256"],
)
def test_a_tracker_signed_approval_is_admitted_from_the_trackers_automation(
    key: bytes, key_id: str
) -> None:
    d = append(signed(key=key, key_id=key_id))
    assert (d.allowed, d.field_errors) == (True, ())


@pytest.mark.parametrize(
    ("entry", "path", "says"),
    [
        pytest.param(
            {
                **signed(),
                "signature": {
                    **signed()["signature"],
                    "value": signed(key=OTHER_PRIVATE)["signature"]["value"],
                },
            },
            "spec.approvals[0].signature",
            "does not verify with key ed-2026 of issuer tracker",
            id="bad-signature",
        ),
        pytest.param(
            signed(key_id="ed-2020"),
            "spec.approvals[0].signature",
            "issuer tracker has no key 'ed-2020' in policy payments-prod (its keys: ed-2026, p256-2027)",
            id="unknown-key-id",
        ),
        pytest.param(
            signed(issuer="jira"),
            "spec.approvals[0].signature",
            "policy payments-prod does not trust approval issuer 'jira' (it trusts: tracker)",
            id="untrusted-issuer",
        ),
        pytest.param(
            {**signed(spec_hash="sha256:" + "0" * 64), "specHash": H},
            "spec.approvals[0].signature",
            "made over another specHash",
            id="signed-another-hash",
        ),
        pytest.param(
            signed(spec_hash="sha256:" + "0" * 64),
            "spec.approvals[0].specHash",
            "the tracker approved another version of the spec",
            id="approval-of-another-version",
        ),
        pytest.param(
            signed(window="chg-9999"),
            "spec.approvals[0].signature",
            "the signature is for window 'chg-9999', not 'chg-1234': a signature cannot be replayed",
            id="replayed-for-another-window",
        ),
        pytest.param(
            signed(ticket="CHG-9"),
            "spec.approvals[0].signature",
            "the signature is for ticket 'CHG-9'",
            id="another-ticket",
        ),
        pytest.param(
            signed(approver="alice"),
            "spec.approvals[0].approver",
            "the requester cannot approve their own window, signed by a tracker or not",
            id="four-eyes",
        ),
        pytest.param(
            signed(policies=()),
            "spec.approvals[0].policies",
            "required",
            id="no-policies",
        ),
    ],
)
def test_each_signature_check_is_refused_with_its_own_message(
    entry: dict[str, Any], path: str, says: str
) -> None:
    d = append(entry)
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)
    assert path in [p for p, _ in d.field_errors], d.field_errors
    assert says in d.message, d.message


def test_a_tampered_approver_does_not_verify() -> None:
    entry = signed()
    entry["approver"] = "mallory"
    d = append(entry)
    assert "does not verify" in d.message


def test_a_signed_approval_counts_only_under_policies_that_trust_its_issuer() -> None:
    trusting, other = policy("payments-prod"), policy("ledger-prod", issuers=[])
    w = crds.ChangeWindow.model_validate(body([signed(policies=("payments-prod", "ledger-prod"))]))
    assert approvals.approval_state(w, current_hash=H, policy=trusting).approved
    assert not approvals.approval_state(w, current_hash=H, policy=other).approved
    # And the webhook refuses to record a policy that does not trust the issuer at all.
    snap = index.Snapshot.build(
        policies=[trusting, other], identities=[], windows=[], namespaces={"payments": {}}
    )
    d = append(signed(policies=("payments-prod", "ledger-prod")), snap=snap)
    assert "policy ledger-prod does not trust approval issuer 'tracker'" in d.message


def test_removing_a_key_from_the_policy_withdraws_what_it_signed() -> None:
    w = crds.ChangeWindow.model_validate(body([signed()]))
    assert approvals.approval_state(w, current_hash=H, policy=policy()).approved
    rotated = policy(
        issuers=[{"name": "tracker", "keys": [{"keyId": "p256-2027", "publicKey": EC_PUBLIC}]}]
    )
    assert not approvals.approval_state(w, current_hash=H, policy=rotated).approved


def test_a_policy_refuses_keys_that_are_not_ed25519_or_p256() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for pem, says in (
        (rsa_public, "Ed25519 or ECDSA P-256"),
        ("not a key", "not a PEM public key"),
    ):
        with pytest.raises(ValueError, match=says):
            policy(issuers=[{"name": "t", "keys": [{"keyId": "k", "publicKey": pem}]}])


def test_what_is_signed_is_canonical_and_domain_separated() -> None:
    at = dt.datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    data = signatures.payload(
        window="w", spec_hash="sha256:x", ticket="T", approver="bob", approved_at=at
    )
    assert data == (
        b"changegate.io/approval/v1\n"
        b'{"approvedAt":"2026-12-01T09:00:00Z","approver":"bob","specHash":"sha256:x",'
        b'"ticket":"T","window":"w"}'
    )

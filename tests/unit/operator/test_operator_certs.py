"""Self-managed certificates: what ``certs.plan`` decides for each state of the Secret."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from cryptography import x509

from controller import pki
from controller.operator import certs

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
HOSTS = certs.service_hosts(service="changegate", namespace="changegate")


def fresh() -> dict[str, bytes]:
    return dict(certs.plan(None, hosts=HOSTS, now=NOW).data)


def with_serving(
    data: Mapping[str, bytes], *, days: int = 365, hosts: tuple[str, ...] = HOSTS
) -> dict[str, bytes]:
    ca = pki.KeyPair(cert_pem=data[certs.CA_CRT], key_pem=data[certs.CA_KEY])
    leaf = pki.make_serving_cert(ca=ca, hosts=list(hosts), days=days, now=NOW)
    return {**data, certs.TLS_CRT: leaf.cert_pem, certs.TLS_KEY: leaf.key_pem}


def with_ca(days: int) -> dict[str, bytes]:
    ca = pki.make_ca(common_name="old CA", days=days, now=NOW - datetime.timedelta(days=3000))
    data = {certs.CA_CRT: ca.cert_pem, certs.CA_KEY: ca.key_pem}
    return with_serving(data, days=365)


def ca_lifetime(days_left: int) -> dict[str, bytes]:
    # A CA issued long ago, with ``days_left`` days to go at NOW.
    return with_ca(3000 + days_left)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    secret: Callable[[], Mapping[str, bytes] | None]
    action: certs.Action


CASES = (
    Case("no-secret-creates-everything", lambda: None, certs.Action.CREATE),
    Case("empty-secret-creates-everything", dict, certs.Action.CREATE),
    Case("valid-secret-is-kept", fresh, certs.Action.KEEP),
    Case(
        "serving-cert-expiring-in-10-days-is-renewed",
        lambda: with_serving(fresh(), days=10),
        certs.Action.RENEW_SERVING,
    ),
    Case(
        "serving-cert-for-another-service-is-renewed",
        lambda: with_serving(fresh(), hosts=("old-name.changegate.svc",)),
        certs.Action.RENEW_SERVING,
    ),
    Case(
        "serving-key-of-another-cert-is-renewed",
        lambda: {**fresh(), certs.TLS_KEY: fresh()[certs.TLS_KEY]},
        certs.Action.RENEW_SERVING,
    ),
    Case(
        "garbage-pem-is-recreated",
        lambda: {**fresh(), certs.TLS_CRT: b"-----BEGIN CERTIFICATE-----\nnope\n"},
        certs.Action.CREATE,
    ),
    Case(
        "ca-key-of-another-ca-is-recreated",
        lambda: {**fresh(), certs.CA_KEY: fresh()[certs.CA_KEY]},
        certs.Action.CREATE,
    ),
    Case(
        "missing-ca-key-is-recreated", lambda: {**fresh(), certs.CA_KEY: b""}, certs.Action.CREATE
    ),
    Case("ca-expiring-in-10-days-is-rotated", lambda: ca_lifetime(10), certs.Action.ROTATE_CA),
    Case("expired-ca-is-recreated", lambda: ca_lifetime(-1), certs.Action.CREATE),
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_decides_by_what_the_secret_holds(case: Case) -> None:
    assert certs.plan(case.secret(), hosts=HOSTS, now=NOW).action is case.action


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def names(c: x509.Certificate) -> set[str]:
    sans = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName))


def assert_serving_is_usable(data: Mapping[str, bytes], *, signed_by: bytes) -> None:
    leaf = cert(data[certs.TLS_CRT])
    leaf.verify_directly_issued_by(cert(signed_by))  # raises if not
    assert names(leaf) == set(HOSTS)
    assert pki.same_public_key(leaf, data[certs.TLS_KEY])
    assert leaf.not_valid_after_utc - NOW > certs.RENEW_BEFORE


def test_created_secret_holds_a_ca_and_a_serving_cert_for_the_service_names() -> None:
    data = certs.plan(None, hosts=HOSTS, now=NOW).data
    (ca,) = pki.load_certs(data[certs.CA_CRT])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert pki.same_public_key(ca, data[certs.CA_KEY])
    assert ca.not_valid_after_utc - NOW > datetime.timedelta(days=3600)
    assert_serving_is_usable(data, signed_by=data[certs.CA_CRT])


def test_kept_secret_is_returned_unchanged() -> None:
    data = fresh()
    assert certs.plan(data, hosts=HOSTS, now=NOW).data == data


@pytest.mark.parametrize(
    "secret",
    [lambda: with_serving(fresh(), days=10), lambda: with_serving(fresh(), hosts=("x.y.svc",))],
    ids=["expiring", "hosts-changed"],
)
def test_renewing_the_serving_cert_keeps_the_ca(
    secret: Callable[[], dict[str, bytes]],
) -> None:
    before = secret()
    after = certs.plan(before, hosts=HOSTS, now=NOW).data
    assert (after[certs.CA_CRT], after[certs.CA_KEY]) == (
        before[certs.CA_CRT],
        before[certs.CA_KEY],
    )
    assert after[certs.TLS_CRT] != before[certs.TLS_CRT]
    assert_serving_is_usable(after, signed_by=before[certs.CA_CRT])


def test_expiring_ca_is_rotated_with_both_cas_in_the_bundle_and_the_serving_cert_kept() -> None:
    before = ca_lifetime(10)
    rotated = certs.plan(before, hosts=HOSTS, now=NOW)
    bundle = pki.load_certs(rotated.data[certs.CA_CRT])
    old = cert(before[certs.CA_CRT])
    assert len(bundle) == 2 and old in bundle
    (new,) = [c for c in bundle if c != old]
    assert pki.same_public_key(new, rotated.data[certs.CA_KEY])
    # The API server trusts the old CA's serving cert until every replica has the new bundle.
    assert rotated.data[certs.TLS_CRT] == before[certs.TLS_CRT]


def test_serving_cert_moves_to_the_new_ca_only_after_the_overlap() -> None:
    rotated = certs.plan(ca_lifetime(10), hosts=HOSTS, now=NOW).data
    soon = certs.plan(rotated, hosts=HOSTS, now=NOW + datetime.timedelta(minutes=10))
    assert soon.action is certs.Action.KEEP
    later = certs.plan(rotated, hosts=HOSTS, now=NOW + certs.CA_OVERLAP + DAY)
    assert later.action is certs.Action.RENEW_SERVING
    new_ca = next(
        c
        for c in pki.load_certs(rotated[certs.CA_CRT])
        if pki.same_public_key(c, rotated[certs.CA_KEY])
    )
    cert(later.data[certs.TLS_CRT]).verify_directly_issued_by(new_ca)
    assert later.data[certs.CA_CRT] == rotated[certs.CA_CRT]  # the old CA stays until it expires


def test_expired_old_ca_leaves_the_bundle() -> None:
    rotated = certs.plan(ca_lifetime(10), hosts=HOSTS, now=NOW).data
    moved = certs.plan(rotated, hosts=HOSTS, now=NOW + DAY).data
    pruned = certs.plan(moved, hosts=HOSTS, now=NOW + 11 * DAY)
    assert pruned.action is certs.Action.PRUNE_BUNDLE
    (only,) = pki.load_certs(pruned.data[certs.CA_CRT])
    assert pki.same_public_key(only, moved[certs.CA_KEY])
    assert pruned.data[certs.TLS_CRT] == moved[certs.TLS_CRT]
    assert certs.plan(pruned.data, hosts=HOSTS, now=NOW + 11 * DAY).action is certs.Action.KEEP


def test_files_are_written_once_and_the_key_is_private(tmp_path: Path) -> None:
    data = fresh()
    assert certs.write_files(tmp_path / "certs", data) is True
    assert certs.write_files(tmp_path / "certs", data) is False
    for name in certs.FILES:
        assert (tmp_path / "certs" / name).read_bytes() == data[name]
    assert not (tmp_path / "certs" / certs.CA_KEY).exists()
    assert os.stat(tmp_path / "certs" / certs.TLS_KEY).st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("argv", "env", "mode"),
    [
        ([], {}, "files"),
        (["--local"], {}, "local"),
        (["--cert-mode=secret"], {}, "secret"),
        ([], {"CHANGEGATE_CERT_MODE": "secret"}, "secret"),
        (["--cert-mode=files"], {"CHANGEGATE_CERT_MODE": "secret"}, "files"),
    ],
    ids=["default-files", "local-makes-dev-certs", "flag", "environment", "flag-wins"],
)
def test_cert_mode_defaults_to_files_unless_local(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], mode: str
) -> None:
    from controller import __main__ as entry

    for name in ("CERT_MODE", "LOCAL", "CERT_SECRET"):
        monkeypatch.delenv(f"CHANGEGATE_{name}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = entry.config_from_args(entry.parser().parse_args(["run", *argv]))
    assert config.certificates == mode
    assert config.cert_secret == "changegate-tls"

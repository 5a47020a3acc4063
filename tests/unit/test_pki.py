"""The certificate toolbox: the checks every caller shares, and the atomic write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller import pki


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca(common_name="test CA")


def test_names_are_the_dns_names_and_canonical_ip_addresses(ca: pki.KeyPair) -> None:
    leaf = pki.make_serving_cert(ca=ca, hosts=["svc.ns.svc", "127.0.0.1", "::0001"])
    assert pki.names(pki.load_cert(leaf.cert_pem)) == {"svc.ns.svc", "127.0.0.1", "::1"}
    assert {pki.normal_host(h) for h in ("svc.ns.svc", "0:0::1")} == {"svc.ns.svc", "::1"}


def test_issued_by_holds_for_the_signing_ca_only(ca: pki.KeyPair) -> None:
    other = pki.make_ca(common_name="test CA")  # same name, other key
    leaf = pki.load_cert(pki.make_serving_cert(ca=ca, hosts=["a"]).cert_pem)
    assert pki.issued_by(leaf, pki.load_cert(ca.cert_pem))
    assert not pki.issued_by(leaf, pki.load_cert(other.cert_pem))


def test_issuers_lists_the_cas_of_a_bundle_that_verify_a_chain(ca: pki.KeyPair) -> None:
    other = pki.make_ca(common_name="other CA")
    leaf = pki.make_serving_cert(ca=ca, hosts=["a"])
    bundle = other.cert_pem + ca.cert_pem
    assert pki.issuers(leaf.cert_pem, bundle) == [pki.pem(pki.load_cert(ca.cert_pem))]
    assert pki.issuers(leaf.cert_pem, other.cert_pem) == []
    assert pki.issuers(b"not PEM", bundle) == []


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_write_atomic_sets_the_mode_even_over_a_leftover_temporary_file(
    tmp_path: Path, mode: int
) -> None:
    leftover = tmp_path / ".tls.key.tmp"
    leftover.write_bytes(b"half a key")
    leftover.chmod(0o666)
    pki.write_atomic(tmp_path / "tls.key", b"key", mode=mode)
    assert (tmp_path / "tls.key").read_bytes() == b"key"
    assert os.stat(tmp_path / "tls.key").st_mode & 0o777 == mode
    assert not leftover.exists()

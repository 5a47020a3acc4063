"""Shared fixtures. The control plane is real: etcd + kube-apiserver started per test session.

A control plane that cannot start fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.devcluster import cluster


@pytest.fixture(scope="session")
def controlplane() -> Iterator[cluster.ControlPlane]:
    cp = cluster.ControlPlane()
    try:
        cp.start()
    except Exception as e:  # a failed start is a test failure, never a skip
        pytest.fail(f"the local control plane did not start: {e}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()

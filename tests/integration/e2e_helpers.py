"""Run changegate for real against the local control plane, for end-to-end tests.

The launcher lives in ``controller.devcluster.local`` so that ``make demo`` and the tests
start changegate the same way; these names are what the tests use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from controller.devcluster import local

T = TypeVar("T")

CRDS_DIR = local.CRDS_DIR
NAMESPACE = local.NAMESPACE
Changegate = local.Changegate
install_crds = local.install_crds
running_changegate = local.running

__all__ = [
    "CRDS_DIR",
    "NAMESPACE",
    "Changegate",
    "eventually",
    "install_crds",
    "running_changegate",
]


def eventually(check: Callable[[], T], *, timeout: float = 20.0, every: float = 0.25) -> T:
    """Retry ``check`` until it returns without AssertionError: what a test waits for reaches
    changegate through a watch, a moment after the write. The last AssertionError is raised
    once ``timeout`` seconds have passed (a timeout is a failure, never a skip)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(every)

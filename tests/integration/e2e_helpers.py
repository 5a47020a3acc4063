"""Run changegate for real against the local control plane, for end-to-end tests.

The launcher lives in ``controller.devcluster.local`` so that ``make demo`` and the tests
start changegate the same way; these names are what the tests use.
"""

from __future__ import annotations

from controller.devcluster import local

CRDS_DIR = local.CRDS_DIR
NAMESPACE = local.NAMESPACE
Changegate = local.Changegate
install_crds = local.install_crds
running_changegate = local.running

__all__ = ["CRDS_DIR", "NAMESPACE", "Changegate", "install_crds", "running_changegate"]

"""`make demo` cannot rot: run the whole story and check it played as told."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_plays_to_its_end(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "demo", "--wait", "no", "--workdir", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],  # the demo lives beside controller/, not in it
        capture_output=True,
        text=True,
        timeout=540,
        stdin=subprocess.DEVNULL,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "The story played as expected." in out
    # The story's turning points, as the requester sees them.
    assert "changegate denied UPDATE deployments.apps shop/web for alice@example.com" in out
    assert "approved by bob@example.com" in out
    assert "deployment.apps/web image updated" in out
    assert "changegate denied CONNECT pods/exec shop/debug for alice@example.com" in out
    assert "export KUBECONFIG=" in out

"""The container image and the Helm chart, as the image tests see them.

The image is built by ``hack/build-image.sh`` (what ``make image`` runs; cached, so a warm
call takes seconds) and run with podman the way this machine allows: runc, cgroupfs and
explicit rlimits. helm comes from ``hack/build-helm.sh`` (cached). Anything that cannot be
built or run fails the test that needs it; nothing is skipped.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "changegate"

# runc: crun fails on this machine's hybrid cgroups; without explicit rlimits runc fails on
# setrlimit. --pull=never: the image is local, and no registry is reachable anyway.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
RUN_FLAGS = (
    "--pull=never",
    "--network=host",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
)


def _must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}", pytrace=False
        )
    return result.stdout


def build_image() -> str:
    """The image reference ``make image`` produces, built now if needed."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-image.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    ref = _must(result, "building the image (hack/build-image.sh)").strip().splitlines()
    if not ref:
        pytest.fail("hack/build-image.sh printed no image reference", pytrace=False)
    return ref[-1]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def image_config(ref: str) -> Mapping[str, Any]:
    """The image's OCI config (User, Entrypoint, Cmd, ExposedPorts, Labels, ...)."""
    out = _must(podman("image", "inspect", "--format", "{{json .Config}}", ref), "podman inspect")
    config: Mapping[str, Any] = json.loads(out)
    return config


def run_in_image(ref: str, *args: str, flags: Sequence[str] = ()) -> str:
    """Run the image's entrypoint with ``args`` (a one-off container) and return stdout."""
    result = podman("run", "--rm", *RUN_FLAGS, *flags, ref, *args)
    return _must(result, f"running {ref} {' '.join(args)}")


def project_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def chart_values() -> Mapping[str, Any]:
    values: Mapping[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def chart_metadata() -> Mapping[str, Any]:
    meta: Mapping[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def helm() -> Path:
    """The pinned helm binary (hack/build-helm.sh builds it once and caches it)."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    return Path(_must(result, "building helm (hack/build-helm.sh)").strip().splitlines()[-1])


def render(*set_values: str, namespace: str = "changegate") -> list[Mapping[str, Any]]:
    """Every object the chart renders with its defaults plus ``set_values``."""
    args = [str(helm()), "template", "changegate", str(CHART), f"--namespace={namespace}"]
    for value in set_values:
        args += ["--set", value]
    out = _must(
        subprocess.run(args, capture_output=True, text=True, check=False, timeout=120),
        "helm template",
    )
    return [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]


def render_deployment(*set_values: str) -> Mapping[str, Any]:
    """The chart's Deployment, rendered with its defaults plus ``set_values``."""
    deployments = [d for d in render(*set_values) if d.get("kind") == "Deployment"]
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    return deployments[0]


def changegate_container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "changegate")
    result: Mapping[str, Any] = container
    return result


def flag_values(args: Sequence[str]) -> dict[str, str | None]:
    """``["run", "--port=8443", "--local"]`` -> ``{"--port": "8443", "--local": None}``."""
    flags: dict[str, str | None] = {}
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            flags[name] = value if eq else None
    return flags
